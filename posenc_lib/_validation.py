"""Argument checks shared by the modules: each raises an error that names the argument and what it accepts."""

from __future__ import annotations

from collections.abc import Iterable
from numbers import Integral, Real

import torch


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
        raise TypeError(f"{name} must be a non-negative integer, got {value!r} of type {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer (>= 0), got {value}")
    return int(value)


def check_even_positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int if it is an even integer >= 2, else raise naming ``name``."""
    value = check_positive_int(name, value)
    if value % 2:
        raise ValueError(f"{name} must be an even positive integer (dimensions come in pairs), got {value}")
    return value


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


def check_integer_tensor(name: str, value: object) -> torch.Tensor:
    """Raise unless ``value`` is a tensor of an integer dtype (positions are integers)."""
    value = check_tensor(name, value)
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (torch.int64, int32, ...), got dtype {value.dtype}")
    return value


def check_floating_tensor(name: str, value: object) -> torch.Tensor:
    """Raise unless ``value`` is a tensor of a floating dtype."""
    value = check_tensor(name, value)
    if not value.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    return value
