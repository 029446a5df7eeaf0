"""Choosing the device the course's code runs on."""

from __future__ import annotations

import os

import torch

DEVICE_ENV_VAR = "POSENC_DEVICE"
_ACCEPTED = ("cpu", "cuda")


def get_device() -> torch.device:
    """Return the device to run on.

    The environment variable ``POSENC_DEVICE`` decides when it is set: ``"cpu"`` or ``"cuda"`` (also
    ``"cuda:N"``). Asking for CUDA on a machine without it raises a ``RuntimeError`` instead of falling back
    to the CPU, so a GPU test run can never pass on the CPU by accident. Unset, the result is CUDA when it is
    available and the CPU otherwise.
    """
    requested = os.environ.get(DEVICE_ENV_VAR, "").strip().lower()
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind = requested.split(":", 1)[0]
    if kind not in _ACCEPTED:
        raise ValueError(
            f"{DEVICE_ENV_VAR} must be one of {', '.join(repr(a) for a in _ACCEPTED)} (or 'cuda:N'); "
            f"got {requested!r}"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"{DEVICE_ENV_VAR}={requested!r} asks for CUDA, but torch.cuda.is_available() is False on this "
            "machine (no GPU, or a CPU-only build of torch)"
        )
    return torch.device(requested)
