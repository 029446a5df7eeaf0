r"""Timing small operations fairly: wait for the device, take turns, summarise over rounds.

A GPU runs its kernels asynchronously: a Python call returns as soon as the work is queued, so a clock read
right after it measures the queueing, not the work. :func:`synchronize` waits until the device has finished.

:func:`time_calls` times several functions on the same machine in one run. The functions take turns, one
timed sample each per round, so that a slow period of a shared machine (another process, a frequency change)
falls on all of them alike; each is then summarised over the rounds by its fastest sample (the one least
disturbed) or by its median. Only ratios of times measured in the same run are meaningful: the absolute
values depend on the machine, its load and the thread count.

The chapter on RoPE at inference uses it to compare RoPE implementations with ``clone()``, the memory-bound
limit, and ``benchmarks/rope_speed.py`` uses it for the library's speed targets.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch

from posenc_lib._validation import check_choice, check_non_negative_int, check_positive_int

STATISTICS = ("min", "median")


def _as_device(device: torch.device | str | None) -> torch.device | None:
    """Return ``device`` as a ``torch.device`` (or ``None``), else raise naming ``device``."""
    if device is None or isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"device must be a torch.device, a string such as 'cuda' or None, got {type(device).__name__}"
        )
    try:
        return torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"device must name a device such as 'cpu' or 'cuda:0', got {device!r}") from error


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait until every kernel queued on ``device`` has finished.

    On a CUDA device this is ``torch.cuda.synchronize(device)``; on Apple's MPS ``torch.mps.synchronize()``.
    The CPU runs operations synchronously, so there is nothing to wait for. With ``device=None`` the current
    CUDA device is synchronised if CUDA has been initialised in this process, and nothing happens otherwise.

    Args:
        device: The device to wait for: a ``torch.device``, a string such as ``"cuda:0"``, or ``None``.

    Raises:
        TypeError: If ``device`` is neither a ``torch.device``, a string nor ``None``.
        ValueError: If ``device`` is a string that names no device type.
    """
    device = _as_device(device)
    if device is None:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
    elif device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_calls(
    functions: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 20,
    calls: int = 1,
    warmup: int = 1,
    statistic: str = "min",
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Time each function in seconds per call, the functions taking turns over several rounds.

    First every function is called ``warmup`` times (in turn), untimed, to fill caches and trigger any lazy
    initialisation or compilation. Then, in each of ``rounds`` rounds, each function in turn is called
    ``calls`` times in a row between two clock reads (``time.perf_counter``), with :func:`synchronize` before
    the first read and after the last call, and the elapsed time divided by ``calls`` is one sample. Each
    function is called ``warmup + rounds * calls`` times in all.

    Args:
        functions: Name to a function of no arguments, in the order in which they take turns.
        rounds: Number of timed samples per function (at least 1).
        calls: Calls per sample; more calls average out the clock's resolution for very short functions.
        warmup: Untimed calls of each function before the first round (0 for none).
        statistic: ``"min"`` for the fastest sample, ``"median"`` for the median sample.
        device: The device to wait for around each sample (see :func:`synchronize`).

    Returns:
        Name to seconds per call, in the order of ``functions``; every value is positive.

    Raises:
        TypeError: If ``functions`` is not a mapping of string names to callables, or a count is not an
            integer.
        ValueError: If ``functions`` is empty, ``rounds`` or ``calls`` is below 1, ``warmup`` is negative,
            ``statistic`` is not ``"min"`` or ``"median"``, or ``device`` names no device.
    """
    if not isinstance(functions, Mapping):
        raise TypeError(
            "functions must be a mapping of names to functions of no arguments, "
            f"got {type(functions).__name__}"
        )
    if not functions:
        raise ValueError("functions must hold at least one function to time, got an empty mapping")
    for name, function in functions.items():
        if not isinstance(name, str):
            raise TypeError(
                f"functions must have string names, got the key {name!r} of type {type(name).__name__}"
            )
        if not callable(function):
            raise TypeError(f"functions[{name!r}] must be callable, got {type(function).__name__}")
    rounds = check_positive_int("rounds", rounds)
    calls = check_positive_int("calls", calls)
    warmup = check_non_negative_int("warmup", warmup)
    statistic = check_choice("statistic", statistic, STATISTICS)
    device = _as_device(device)

    for _ in range(warmup):
        for function in functions.values():
            function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls):
                function()
            synchronize(device)
            elapsed = time.perf_counter() - start
            # a clock that did not advance (a very coarse timer) would give 0: keep every result positive
            samples[name].append(max(elapsed, 1e-12) / calls)
    summarise = min if statistic == "min" else statistics.median
    return {name: float(summarise(values)) for name, values in samples.items()}
