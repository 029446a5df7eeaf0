r"""Relative positions, and the relative position representations of Shaw et al. (2018).

The convention used everywhere in posenc_lib: the relative position of key ``j`` seen from query ``i`` is
:math:`\mathrm{rel}_{ij} = p^k_j - p^q_i` (key position minus query position), as in Shaw et al.'s reference
code, tensor2tensor and T5. A negative value means the key lies in the query's past.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc_lib._validation import (
    check_attention_inputs,
    check_floating_tensor,
    check_non_negative_int,
    check_positions_1d,
    check_positive_int,
)
from posenc_lib.base import PositionalEncoding


def pairwise_relative_positions(q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
    r"""Return the matrix of relative positions between arbitrary query and key positions.

    Entry ``[i, j]`` is :math:`p^k_j - p^q_i` (key minus query), the convention of Shaw et al. (2018),
    tensor2tensor and T5 (``memory_position - context_position`` in Hugging Face's
    ``T5Attention.compute_bias``).

    Args:
        q_positions: 1-D integer tensor of query positions, length ``T_q``.
        k_positions: 1-D integer tensor of key positions, length ``T_k``, on the same device.

    Returns:
        An int64 tensor of shape ``[T_q, T_k]``.

    Raises:
        TypeError: if a position tensor is not an integer tensor.
        ValueError: if a position tensor is not 1-D, or the two lie on different devices.
    """
    q_positions = check_positions_1d("q_positions", q_positions)
    k_positions = check_positions_1d("k_positions", k_positions)
    if q_positions.device != k_positions.device:
        raise ValueError(
            f"q_positions and k_positions must be on the same device, got {q_positions.device} and "
            f"{k_positions.device}"
        )
    return k_positions.to(torch.int64)[None, :] - q_positions.to(torch.int64)[:, None]


def relative_positions(
    q_len: int, k_len: int | None = None, *, device: torch.device | str | None = None
) -> torch.Tensor:
    r"""Return the matrix of relative positions for queries ``0 … q_len-1`` and keys ``0 … k_len-1``.

    Entry ``[i, j]`` is :math:`j - i`: **key position minus query position**, the convention of Shaw et
    al. (2018, "Self-Attention with Relative Position Representations"), tensor2tensor and T5 (Raffel et
    al. 2020). Many notes write :math:`i - j` instead (Transformer-XL's :math:`R_{i-j}` and ALiBi's
    :math:`-m (i - j)` are written that way); the seed article's code computes :math:`j - i` but the matrix
    it prints is :math:`i - j`. Both describe the same geometry with opposite signs, so always say which
    one is meant.

    Queries and keys both start at position 0 here; with a cache of earlier keys (queries at
    ``k_len - q_len …``) use :func:`pairwise_relative_positions` with the actual positions.

    Args:
        q_len: number of queries, ``>= 1``.
        k_len: number of keys, ``>= 1``; defaults to ``q_len``.
        device: device of the result.

    Returns:
        An int64 tensor of shape ``[q_len, k_len]``.

    Raises:
        TypeError: if ``q_len`` or ``k_len`` is not an integer.
        ValueError: if ``q_len`` or ``k_len`` is smaller than 1.
    """
    q_len = check_positive_int("q_len", q_len)
    k_len = q_len if k_len is None else check_positive_int("k_len", k_len)
    return pairwise_relative_positions(torch.arange(q_len, device=device), torch.arange(k_len, device=device))


class ShawRelativeEncoding(PositionalEncoding):
    r"""Relative position representations of Shaw, Uszkoreit and Vaswani (2018).

    Paper: "Self-Attention with Relative Position Representations" (NAACL 2018). Each attention layer
    learns two tables :math:`w^K, w^V \in \mathbb{R}^{(2k+1) \times d}` (``key_table`` and ``value_table``;
    :math:`d` = ``head_dim``, :math:`k` = ``max_distance``), shared by all heads of the layer. With the
    clipped relative position :math:`c_{ij} = \mathrm{clip}(p^k_j - p^q_i, -k, k)`,

    .. math::

        a^K_{ij} = w^K_{c_{ij} + k}, \qquad a^V_{ij} = w^V_{c_{ij} + k},

        e_{ij} = \frac{q_i \cdot (k_j + a^K_{ij})}{\sqrt{d}}, \qquad
        z_i = \sum_j \alpha_{ij} (v_j + a^V_{ij}).

    The attention layer computes :math:`q_i \cdot k_j / \sqrt{d}` and :math:`\sum_j \alpha_{ij} v_j` itself;
    :meth:`logit_bias` returns :math:`q_i \cdot a^K_{ij} / \sqrt{d}` and :meth:`value_term` returns
    :math:`\sum_j \alpha_{ij} a^V_{ij}`. Distances beyond :math:`k` share the edge rows, so the layer cannot
    tell them apart (the paper's ablation finds little change in BLEU for :math:`k \ge 2`).

    Neither term builds the ``[T_q, T_k, head_dim]`` tensor of representations :math:`a_{ij}`: the logit
    term multiplies the queries by the :math:`2k+1` rows of the table once (``q @ w_K^T``, shape
    ``[B, H, T_q, 2k+1]``) and gathers entry :math:`c_{ij} + k` for each key; the value term adds each
    probability :math:`\alpha_{ij}` into the bin of its clipped distance (``[B, H, T_q, 2k+1]``) and
    multiplies the bins by :math:`w^V`. Both are exact rewritings of the sums above. Memory is proportional to
    the number of queries and keys, never to their positions, and any integer positions are accepted
    (negative or far from 0: only the clipped differences matter).

    It follows the paper and its tensor2tensor implementation (``dot_product_attention_relative``). No
    maintained library keeps both terms today, so the tests check this module against a direct :math:`O(T^2)`
    loop over the formula. The tables start from a Glorot-uniform draw (the paper names no initializer).

    Args:
        head_dim: size :math:`d` of each head's queries, keys and values, ``>= 1``.
        max_distance: clipping distance :math:`k`, ``>= 0``.

    Raises:
        TypeError: if an argument is not an integer.
        ValueError: if ``head_dim < 1`` or ``max_distance < 0``.
    """

    def __init__(self, head_dim: int, max_distance: int) -> None:
        super().__init__()
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.max_distance = check_non_negative_int("max_distance", max_distance)
        num_rows = 2 * self.max_distance + 1
        self.key_table = nn.Parameter(torch.empty(num_rows, self.head_dim))
        self.value_table = nn.Parameter(torch.empty(num_rows, self.head_dim))
        nn.init.xavier_uniform_(self.key_table)
        nn.init.xavier_uniform_(self.value_table)

    def extra_repr(self) -> str:
        """Describe the module's settings in its repr."""
        return f"head_dim={self.head_dim}, max_distance={self.max_distance}"

    def table_index(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        r"""Return the table row of each (query, key) pair, :math:`\mathrm{clip}(p^k_j - p^q_i, -k, k) + k`.

        Args:
            q_positions: 1-D integer tensor of query positions, length ``T_q``.
            k_positions: 1-D integer tensor of key positions, length ``T_k``.

        Returns:
            An int64 tensor of shape ``[T_q, T_k]`` with values in ``0 … 2k``.
        """
        relative = pairwise_relative_positions(q_positions, k_positions)
        return relative.clamp(-self.max_distance, self.max_distance) + self.max_distance

    def logit_bias(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> torch.Tensor:
        r""":math:`q_i \cdot a^K_{ij} / \sqrt{d}`, ``[B, H, T_q, T_k]`` (of ``k`` only its length is used)."""
        q, k, q_positions, k_positions = check_attention_inputs(
            q, k, q_positions, k_positions, head_dim=self.head_dim
        )
        compute_dtype = torch.promote_types(q.dtype, self.key_table.dtype)
        per_distance = q.to(compute_dtype) @ self.key_table.to(compute_dtype).T  # [B, H, T_q, 2k+1]
        index = self.table_index(q_positions, k_positions).to(q.device)
        index = index.expand(*per_distance.shape[:2], *index.shape)
        bias = per_distance.gather(-1, index) / math.sqrt(self.head_dim)
        return bias.to(q.dtype)

    def value_term(
        self,
        probs: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> torch.Tensor:
        r""":math:`\sum_j \alpha_{ij} a^V_{ij}`, ``[B, H, T_q, head_dim]``."""
        probs = check_floating_tensor("probs", probs)
        index = self.table_index(q_positions, k_positions)
        if probs.dim() != 4 or tuple(probs.shape[2:]) != tuple(index.shape):
            raise ValueError(
                f"probs must be 4-D [batch, heads, T_q, T_k] with T_q = len(q_positions) = {index.shape[0]} "
                f"and T_k = len(k_positions) = {index.shape[1]}, got shape {tuple(probs.shape)}"
            )
        compute_dtype = torch.promote_types(probs.dtype, self.value_table.dtype)
        index = index.to(probs.device).expand(probs.shape)
        bins = probs.new_zeros(*probs.shape[:3], self.value_table.shape[0], dtype=compute_dtype)
        bins.scatter_add_(-1, index, probs.to(compute_dtype))  # [B, H, T_q, 2k+1]: probability per distance
        return (bins @ self.value_table.to(compute_dtype)).to(probs.dtype)
