r"""What a trained model does with positions: attention by distance, attention to one key, rotary pair norms.

Three measurements for reading a real model's heads and weights (used by the chapter on a pretrained LLM):

* :func:`attention_by_distance`: for causal attention probabilities :math:`a_{ij}` (query :math:`i`, key
  :math:`j \le i`), the mean weight a query gives the key :math:`\Delta` tokens back,
  :math:`A(\Delta) = \frac{1}{T - \Delta} \sum_{i \ge \Delta} a_{i, i-\Delta}`. A previous-token head has
  :math:`A(1)` near 1; a head that looks far spreads its weight over large :math:`\Delta`.
* :func:`attention_to_key`: the mean weight queries give one key position, :math:`\frac{1}{T - j}
  \sum_{i \ge j} a_{ij}`; for :math:`j = 0` this is the mass on the first token, which *attention sinks*
  collect (Xiao et al. 2023, "Efficient Streaming Language Models with Attention Sinks").
* :func:`rotary_pair_norms`: the norm :math:`\lVert (x_a, x_b) \rVert` of each rotary pair :math:`c` of
  queries or keys, which RoPE does not change; Barbero et al. (2024, "Round and Round We Go! What makes
  Rotary Positional Encodings useful?", arXiv:2410.06205) read from it which frequencies a trained model
  uses: in Gemma 7B most of the query and key norm sits on the lowest frequencies, and the highest ones
  serve a few positional heads.

All three return float64 and read no tensor values beyond the arithmetic.
"""

from __future__ import annotations

import torch

from posenc_lib._validation import (
    check_choice,
    check_floating_tensor,
    check_non_negative_int,
    check_rotary_dim,
)
from posenc_lib.rope import ROPE_LAYOUTS


def _check_square_probabilities(probs: object) -> torch.Tensor:
    probs = check_floating_tensor("probs", probs)
    if probs.ndim < 2 or probs.shape[-1] != probs.shape[-2] or probs.shape[-1] == 0:
        raise ValueError(
            "probs must have shape [..., T, T] (queries by keys, causal self-attention, T >= 1), "
            f"got {tuple(probs.shape)}"
        )
    return probs


def attention_by_distance(probs: torch.Tensor) -> torch.Tensor:
    r"""Mean attention weight at each distance :math:`\Delta`: :math:`A(\Delta) = \frac{1}{T-\Delta}
    \sum_{i\ge\Delta} a_{i,i-\Delta}`.

    Args:
        probs: causal self-attention probabilities ``[..., T, T]`` (rows are queries, columns keys), for
            example ``[layers, heads, T, T]``.

    Returns:
        float64 ``[..., T]``: entry :math:`\Delta` is the mean over the :math:`T - \Delta` queries that have
        a key :math:`\Delta` tokens back. For causal probabilities the entries, weighted by
        :math:`T - \Delta`, sum to :math:`T` (every row sums to 1).

    Raises:
        TypeError: ``probs`` is not a floating tensor.
        ValueError: ``probs`` is not ``[..., T, T]``.
    """
    probs = _check_square_probabilities(probs).to(torch.float64)
    seq_len = probs.shape[-1]
    query = torch.arange(seq_len, device=probs.device)[:, None]
    distance = torch.arange(seq_len, device=probs.device)[None, :]
    key = query - distance  # [T (query), T (distance)]; negative where the key would precede position 0
    valid = key >= 0
    weights = torch.gather(probs, -1, key.clamp(min=0).expand(*probs.shape[:-2], -1, -1))
    total = (weights * valid).sum(dim=-2)
    return total / valid.sum(dim=0)


def attention_to_key(probs: torch.Tensor, key: int = 0) -> torch.Tensor:
    r"""Mean weight that the queries which can see key position :math:`j` give it: :math:`\frac{1}{T-j}
    \sum_{i\ge j} a_{ij}`.

    Args:
        probs: causal self-attention probabilities ``[..., T, T]``.
        key: the key position :math:`j`, ``0 <= key < T`` (0: the first token, where attention sinks form).

    Returns:
        float64 ``[...]``.

    Raises:
        TypeError: ``probs`` is not a floating tensor or ``key`` not an integer.
        ValueError: ``probs`` is not ``[..., T, T]`` or ``key`` is outside ``[0, T)``.
    """
    probs = _check_square_probabilities(probs)
    key = check_non_negative_int("key", key)
    if key >= probs.shape[-1]:
        raise ValueError(f"key must be a key position in [0, T) = [0, {probs.shape[-1]}), got {key}")
    return probs[..., key:, key].to(torch.float64).mean(dim=-1)


def rotary_pair_norms(
    x: torch.Tensor, *, layout: str = "half", rotary_dim: int | None = None
) -> torch.Tensor:
    r"""The norm of each rotary pair, :math:`\sqrt{x_a^2 + x_b^2}`, of queries or keys ``[..., d_h]``.

    Pair :math:`c` is :math:`(x_c, x_{c + r/2})` in the half layout and :math:`(x_{2c}, x_{2c+1})` in the
    interleaved one (:mod:`posenc_lib.rope`); it turns at frequency :math:`\theta_c = b^{-2c/r}`, so entry
    :math:`c` of the result belongs to the :math:`c`-th highest frequency. Rotation keeps these norms: they
    are the same before and after RoPE.

    Args:
        x: queries or keys, ``[..., d_h]``, floating point.
        layout: ``"half"`` or ``"interleaved"``.
        rotary_dim: the rotated width :math:`r` (default :math:`d_h`).

    Returns:
        float64 ``[..., r/2]``.

    Raises:
        TypeError: ``x`` is not a floating tensor.
        ValueError: an unknown layout, or ``rotary_dim`` odd or larger than ``d_h``.
    """
    x = check_floating_tensor("x", x)
    check_choice("layout", layout, ROPE_LAYOUTS)
    if x.ndim < 1 or x.shape[-1] % 2:
        raise ValueError(f"x must have an even last dimension d_h, got shape {tuple(x.shape)}")
    rotary_dim = check_rotary_dim(rotary_dim, x.shape[-1])
    rotated = x[..., :rotary_dim].to(torch.float64)
    if layout == "half":
        first, second = rotated[..., : rotary_dim // 2], rotated[..., rotary_dim // 2 :]
    else:
        first, second = rotated[..., 0::2], rotated[..., 1::2]
    return torch.hypot(first, second)
