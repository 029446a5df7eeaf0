"""Argument checks shared by the modules: each raises an error that names the argument and what it accepts."""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral, Real

import torch
from torch._subclasses.fake_tensor import is_fake

FLOATING_DTYPES = "torch.float32, torch.float64, torch.bfloat16 or torch.float16"
"""The floating dtypes named in error messages."""


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is an integer >= 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r} of type {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value}")
    return int(value)


def check_non_negative_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is an integer >= 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(
            f"{name} must be a non-negative integer, got {value!r} of type {type(value).__name__}"
        )
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer (>= 0), got {value}")
    return int(value)


def check_even_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is an even integer >= 2, else raise naming ``name``."""
    value = check_positive_int(name, value)
    if value % 2:
        raise ValueError(f"{name} must be an even positive integer (dimensions come in pairs), got {value}")
    return value


def check_rotary_dim(rotary_dim: object, dim: int) -> int:
    """Return the rotated width: ``dim`` when ``rotary_dim`` is ``None``, else an even int in ``[2, dim]``."""
    if rotary_dim is None:
        return dim
    rotary_dim = check_even_positive_int("rotary_dim", rotary_dim)
    if rotary_dim > dim:
        raise ValueError(f"rotary_dim must be an even integer in [2, D] = [2, {dim}], got {rotary_dim}")
    return rotary_dim


def check_positive_float(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite real number > 0, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a positive number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise naming ``name`` and listing the choices."""
    choices = tuple(choices)
    if value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {accepted}; got {value!r}")
    return value  # type: ignore[return-value]


def check_tensor(name: str, value: object) -> torch.Tensor:
    """Raise a TypeError naming ``name`` unless ``value`` is a torch tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is ``True`` or ``False``, else raise a TypeError naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} of type {type(value).__name__}")
    return value


def check_position_tensor(name: str, value: object) -> torch.Tensor:
    """Raise unless ``value`` is a tensor of an integer or floating dtype (fractional positions allowed)."""
    value = check_tensor(name, value)
    if value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(
            f"{name} must be an integer or floating-point tensor (torch.int64, torch.float32, ...), "
            f"got dtype {value.dtype}"
        )
    return value


def check_integer_tensor(name: str, value: object) -> torch.Tensor:
    """Raise unless ``value`` is a tensor of an integer dtype (positions are integers)."""
    value = check_tensor(name, value)
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(
            f"{name} must be an integer tensor (torch.int64, int32, ...), got dtype {value.dtype}"
        )
    return value


def check_floating_tensor(name: str, value: object) -> torch.Tensor:
    """Raise unless ``value`` is a tensor of a floating dtype."""
    value = check_tensor(name, value)
    if not value.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be a floating-point tensor ({FLOATING_DTYPES}), got dtype {value.dtype}"
        )
    return value


def check_floating_dtype(name: str, value: object) -> torch.dtype:
    """Return ``value`` if it is a floating ``torch.dtype``, else raise a TypeError naming ``name``."""
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise TypeError(f"{name} must be a floating torch.dtype ({FLOATING_DTYPES}), got {value!r}")
    return value


def values_readable(*tensors: torch.Tensor) -> bool:
    """Whether the values of ``tensors`` can be read on the host at all.

    They cannot on the meta device, for fake tensors (``torch.export``, shape propagation), under
    ``torch.compile`` (a branch on a value breaks the graph) and inside ``torch.func`` transforms (``vmap``,
    ``grad``): value checks are skipped there.
    """
    if torch.compiler.is_compiling():
        return False
    return not any(
        tensor.device.type == "meta"
        or is_fake(tensor)
        or torch._C._functorch.is_functorch_wrapped_tensor(tensor)
        for tensor in tensors
    )


def values_on_host(*tensors: torch.Tensor) -> bool:
    """Whether reading the values of ``tensors`` costs no host-device synchronisation: readable, on the CPU.

    The hooks of :class:`posenc_lib.base.PositionalEncoding` run in every layer on every forward pass; they
    read values (for a check or to choose a faster path) only where this is true.
    """
    return values_readable(*tensors) and all(tensor.device.type == "cpu" for tensor in tensors)


def check_finite_tensor(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise a ValueError naming ``name`` if the floating tensor ``value`` holds NaN or infinity.

    A value check, for the functions users call directly (frequencies, slopes, scales given as tensors);
    skipped where :func:`values_readable` is false. On an accelerator it synchronises once.
    """
    if value.dtype.is_floating_point and values_readable(value) and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} must hold finite numbers, got NaN or infinity")
    return value


def check_positions_in_range(name: str, positions: torch.Tensor, stop: int, stop_name: str) -> torch.Tensor:
    """Raise a ValueError unless every entry of the integer tensor ``positions`` lies in ``[0, stop)``.

    A value check, skipped where :func:`values_readable` is false; the message names ``stop_name``, the
    setting that limits the range (for example ``max_positions`` of a learned table).
    """
    if positions.numel() and values_readable(positions):
        smallest, largest = (int(value) for value in torch.aminmax(positions))
        if smallest < 0 or largest >= stop:
            raise ValueError(
                f"{name} must lie in [0, {stop - 1}] ({stop_name}={stop}), but the largest position asked "
                f"is {largest} and the smallest {smallest}"
            )
    return positions


def check_positions_1d(name: str, positions: object) -> torch.Tensor:
    """Return ``positions`` if it is a 1-D integer tensor, else raise naming ``name``."""
    positions = check_integer_tensor(name, positions)
    if positions.dim() != 1:
        raise ValueError(
            f"{name} must be a 1-D integer tensor of positions, got shape {tuple(positions.shape)}"
        )
    return positions


def check_attention_inputs(
    q: object,
    k: object,
    q_positions: object,
    k_positions: object,
    *,
    num_heads: int | None = None,
    head_dim: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check the arguments of a ``logit_bias`` hook and return them.

    ``q`` must be ``[batch, heads, T_q, head_dim]`` and ``k`` ``[batch, heads, T_k, head_dim]`` floating
    tensors whose lengths match the 1-D integer tensors ``q_positions`` (``T_q``) and ``k_positions``
    (``T_k``); ``num_heads`` and ``head_dim``, when given, must match dimensions 1 and 3 of both.
    """
    q_positions = check_positions_1d("q_positions", q_positions)
    k_positions = check_positions_1d("k_positions", k_positions)
    checked = []
    for name, tensor, positions, positions_name in (
        ("q", q, q_positions, "q_positions"),
        ("k", k, k_positions, "k_positions"),
    ):
        tensor = check_floating_tensor(name, tensor)
        if tensor.dim() != 4:
            raise ValueError(
                f"{name} must be 4-D [batch, heads, T, head_dim], got shape {tuple(tensor.shape)}"
            )
        if tensor.shape[2] != positions.shape[0]:
            raise ValueError(
                f"{name} has {tensor.shape[2]} positions (dimension 2) but {positions_name} has "
                f"{positions.shape[0]}; they must be equal"
            )
        if num_heads is not None and tensor.shape[1] != num_heads:
            raise ValueError(
                f"{name} must have num_heads={num_heads} heads (dimension 1), got {tensor.shape[1]}"
            )
        if head_dim is not None and tensor.shape[3] != head_dim:
            raise ValueError(f"{name} must have head_dim={head_dim} (last dimension), got {tensor.shape[3]}")
        checked.append(tensor)
    return checked[0], checked[1], q_positions, k_positions


def check_embed_inputs(x: object, positions: object, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the arguments of an ``embed`` hook that adds a ``[..., dim]`` vector per position.

    Args:
        x: Must be a floating tensor ``[..., T, dim]``.
        positions: Must be an integer tensor of shape ``[T]`` or ``x.shape[:-1]``.
        dim: The model dimension the encoding was built for.

    Returns:
        ``(x, positions)`` unchanged.

    Raises:
        TypeError: If a dtype is wrong.
        ValueError: If a shape is wrong; the message names the argument and the shape expected.
    """
    x = check_floating_tensor("x", x)
    positions = check_integer_tensor("positions", positions)
    if x.ndim < 2 or x.shape[-1] != dim:
        raise ValueError(f"x must have shape [..., T, dim] with dim={dim}, got shape {list(x.shape)}")
    if positions.shape not in (x.shape[-2:-1], x.shape[:-1]):
        raise ValueError(
            f"positions must have shape [T] = [{x.shape[-2]}] or x.shape[:-1] = {list(x.shape[:-1])}, "
            f"got shape {list(positions.shape)}"
        )
    return x, positions


def check_seq_dim(seq_dim: object, x: torch.Tensor) -> int:
    """``seq_dim`` must be -2 (``[..., T, D]``) or -3 (``[B, T, H, D]``) and fit the dimensions of ``x``."""
    check_choice("seq_dim", seq_dim, (-2, -3))
    if x.ndim < -seq_dim:
        layout = "[..., T, D]" if seq_dim == -2 else "[B, T, H, D]"
        raise ValueError(
            f"x must have shape {layout} (at least {-seq_dim} dimensions) for seq_dim={seq_dim}, "
            f"got shape {tuple(x.shape)}"
        )
    return seq_dim  # type: ignore[return-value]


def check_positions_shape(
    positions: object, x: torch.Tensor, seq_dim: int, name: str = "positions"
) -> torch.Tensor:
    """``positions`` must be ``[T]`` or ``[B, T]`` for the sequence axis of ``x``."""
    positions = check_position_tensor(name, positions)
    seq_len = x.shape[seq_dim]
    has_batch = x.ndim + seq_dim >= 1
    batch_ok = positions.ndim == 1 or (
        positions.ndim == 2 and has_batch and positions.shape[0] in (1, x.shape[0])
    )
    if not batch_ok or positions.shape[-1] != seq_len:
        expected = f"[T] = [{seq_len}]"
        if has_batch:
            expected += f" or [B, T] = [{x.shape[0]}, {seq_len}] (or [1, {seq_len}])"
        raise ValueError(
            f"{name} must have shape {expected}, T being x.shape[{seq_dim}]; "
            f"got shape {tuple(positions.shape)} for x of shape {tuple(x.shape)}"
        )
    return positions
