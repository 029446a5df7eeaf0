r"""Transformer-XL's relative attention (Dai et al. 2019) and its ``rel_shift`` trick.

Dai, Yang, Yang, Carbonell, Le and Salakhutdinov (2019), "Transformer-XL: Attentive Language Models Beyond a
Fixed-Length Context". The logit between query :math:`i` and key :math:`j` is split into four terms,

.. math::

    a_{ij} + \beta_{ij} = \frac{1}{\sqrt{d_h}} \Big( \underbrace{q_i \cdot k_j}_{(a)}
    + \underbrace{q_i \cdot \mathrm{PE}(i-j)\,W_R}_{(b)}
    + \underbrace{u \cdot k_j}_{(c)} + \underbrace{v \cdot \mathrm{PE}(i-j)\,W_R}_{(d)} \Big),

in the book's notation, where :math:`\mathrm{PE}(i-j)` is the fixed sinusoid of the distance :math:`i - j`
(query minus key: the opposite sign to :func:`posenc_lib.relative.relative_positions`; the paper writes
:math:`R_{i-j}`), :math:`W_R` a learned projection, and :math:`u, v` learned vectors per head that replace
the query in the position-free terms.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc_lib._validation import (
    check_attention_inputs,
    check_even_positive_int,
    check_positions_1d,
    check_positive_float,
    check_positive_int,
    check_tensor,
    values_on_host,
)
from posenc_lib.base import PositionalEncoding
from posenc_lib.sinusoidal import sinusoidal_encoding_at


def rel_shift(scores: torch.Tensor) -> torch.Tensor:
    r"""Re-index a table of query-by-distance scores into a query-by-key table (Dai et al. 2019, appendix B).

    Transformer-XL computes :math:`(q_i + v) \cdot \mathrm{PE}(\Delta)\,W_R` for every query :math:`i` and
    every distance :math:`\Delta` in descending order, column :math:`\ell` holding distance
    :math:`T_k - 1 - \ell`. Row :math:`i` needs the
    same numbers shifted by one column per row, which this function does without any gather:

    1. pad one column of zeros on the left: ``[..., q_len, k_len + 1]``;
    2. view the same memory as ``[..., k_len + 1, q_len]`` and drop its first row, which drops the first
       ``q_len`` entries of the padded table in row-major order;
    3. view the remaining ``q_len * k_len`` entries as ``[..., q_len, k_len]``. Row :math:`i` now starts
       :math:`T_q - i` entries into padded row :math:`i`, that is at column :math:`T_q - 1 - i` of the
       original row: each row is shifted left by one column more than the row below it.

    The result is ``out[..., i, j] = scores[..., i, j + q_len - 1 - i]`` wherever
    :math:`j \le i + m_{\text{len}}`, with :math:`m_{\text{len}} = T_k - T_q` the memory length
    (:math:`T_q` = ``q_len``, :math:`T_k` = ``k_len``); with the column convention above that is the score
    for distance :math:`(i + m_{\text{len}}) - j`. The entries with :math:`j > i + m_{\text{len}}` (future
    keys) hold zeros and values from the next row: Transformer-XL masks them. This matches ``_rel_shift`` in
    the authors' ``mem_transformer.py``.

    Args:
        scores: a tensor ``[..., q_len, k_len]`` with ``k_len >= q_len``.

    Returns:
        A tensor of the same shape and dtype.

    Raises:
        TypeError: if ``scores`` is not a tensor.
        ValueError: if it has fewer than 2 dimensions or ``k_len < q_len``.
    """
    scores = check_tensor("scores", scores)
    if scores.dim() < 2:
        raise ValueError(
            f"scores must have at least 2 dimensions [..., q_len, k_len], got shape {tuple(scores.shape)}"
        )
    *batch_shape, q_len, k_len = scores.shape
    if k_len < q_len:
        raise ValueError(
            f"scores must have k_len >= q_len (keys are the queries' own positions plus a memory), got "
            f"q_len={q_len}, k_len={k_len}"
        )
    padded = nn.functional.pad(scores, (1, 0))
    skewed = padded.reshape(*batch_shape, k_len + 1, q_len)
    return skewed[..., 1:, :].reshape(*batch_shape, q_len, k_len)


def _is_consecutive(positions: torch.Tensor) -> bool:
    """Whether ``positions`` is ``p, p + 1, …, p + n - 1`` for some ``p`` (reads the values)."""
    return bool(torch.all(positions.diff() == 1))


class TransformerXLRelativeEncoding(PositionalEncoding):
    r"""The position terms (b), (c) and (d) of Transformer-XL's attention logits (Dai et al. 2019).

    Paper: "Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context", section 3.3. For query
    :math:`q_i` and key :math:`k_j` of one head, :meth:`logit_bias` returns

    .. math::

        \beta_{ij} = \frac{u \cdot k_j + (q_i + v) \cdot \mathrm{PE}(p^q_i - p^k_j)\,W_R}{\sqrt{d_h}},

    the terms (b) + (c) + (d) of the paper's decomposition, for query and key positions :math:`p^q_i` and
    :math:`p^k_j`; the attention layer adds term (a), :math:`q_i \cdot k_j / \sqrt{d_h}`. Here
    :math:`u, v \in \mathbb{R}^{H \times d_h}` are learned (``u`` and ``v``; ``r_w_bias`` and ``r_r_bias`` in
    the authors' code), :math:`W_R` is the learned bias-free projection ``relative_projection`` from
    ``encoding_dim`` to :math:`H \cdot d_h` (``r_net``), and :math:`\mathrm{PE}(\Delta)` is the
    concat-layout sinusoid
    :math:`[\sin(\Delta \theta_0), …, \sin(\Delta \theta_{d/2-1}), \cos(\Delta \theta_0), …]` with
    :math:`\theta_c = b^{-2c/d}` over its width :math:`d` (``encoding_dim``; the frequencies of Vaswani et
    al. 2017, :func:`posenc_lib.sinusoidal.sinusoidal_frequencies`), computed in float64 (the paper writes
    :math:`R_{i-j}` for it).

    Consecutive query and key positions (the usual case, with or without a memory) take the paper's fast
    path: one product of the queries with :math:`\mathrm{PE}\,W_R` for every distance, re-indexed by
    :func:`rel_shift`.
    Transformer-XL only needs distances :math:`\ge 0` (it masks future keys); this module also computes the
    negative distances, down to :math:`-(T_k - 1)` past the queries' offset, so the bias is right for every
    pair and the module also serves bidirectional attention (XLNet does the same).

    Other positions take a general path that is exact for any integer positions and reads none of their
    values. The angle-addition formulas split the sinusoid of a difference into the sinusoids of the two
    positions, :math:`\sin((m - n)\theta_c) = \sin m\theta_c \cos n\theta_c - \cos m\theta_c \sin n\theta_c`
    and :math:`\cos((m - n)\theta_c) = \cos m\theta_c \cos n\theta_c + \sin m\theta_c \sin n\theta_c`,
    so with :math:`[A_i | B_i] = (q_i + v)\,W_R` (sine and cosine halves, per head) the position term is

    .. math::

        (q_i + v) \cdot \mathrm{PE}(m_i - n_j)\,W_R = \sum_c
        (A_{ic} \sin m_i\theta_c + B_{ic} \cos m_i\theta_c) \cos n_j\theta_c
        + (B_{ic} \sin m_i\theta_c - A_{ic} \cos m_i\theta_c) \sin n_j\theta_c,

    one product of a ``[T_q, d]`` and a ``[d, T_k]`` matrix per head and sequence, where the fast path
    multiplies ``[T_q, d_h]`` by ``[d_h, T_q + T_k - 1]``: up to :math:`d / d_h` (the number of heads, by
    default) times the multiplications there, and memory proportional to the number of queries and keys,
    never to their positions. Telling consecutive positions apart reads their
    values, which on an accelerator would make the host wait for the device in every layer; so the fast path
    is taken only where the positions sit on the CPU (``values_on_host`` in ``posenc_lib._validation``), and
    the general path runs on accelerators, on the meta device, under ``torch.compile`` and ``torch.func``
    transforms. Both give the same bias up to rounding, and an empty query or key set gives an empty bias.

    The tests compare this module against a direct loop over :math:`(i, j)` (the transformers library
    removed its Transformer-XL model in version 5).

    Args:
        num_heads: number of heads :math:`H`, ``>= 1``.
        head_dim: size :math:`d_h` of each head's queries and keys, ``>= 1``.
        encoding_dim: width of the sinusoid :math:`\mathrm{PE}`, even; defaults to ``num_heads * head_dim``
            (the model width :math:`d`, as in the paper).
        base: base :math:`b` of the sinusoid's frequencies, ``> 0``.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if an argument is out of range.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        *,
        encoding_dim: int | None = None,
        base: float = 10000.0,
    ) -> None:
        super().__init__()
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.encoding_dim = check_even_positive_int(
            "encoding_dim", self.num_heads * self.head_dim if encoding_dim is None else encoding_dim
        )
        self.base = check_positive_float("base", base)
        self.u = nn.Parameter(torch.empty(self.num_heads, self.head_dim))
        self.v = nn.Parameter(torch.empty(self.num_heads, self.head_dim))
        nn.init.normal_(self.u, std=0.02)
        nn.init.normal_(self.v, std=0.02)
        self.relative_projection = nn.Linear(self.encoding_dim, self.num_heads * self.head_dim, bias=False)

    def extra_repr(self) -> str:
        """Describe the module's settings in its repr."""
        return (
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, encoding_dim={self.encoding_dim}, "
            f"base={self.base}"
        )

    def relative_encodings(self, distances: torch.Tensor) -> torch.Tensor:
        r"""Return the sinusoids :math:`\mathrm{PE}(\Delta)` of the distances :math:`\Delta = p^q - p^k`.

        Computed in float64 and returned in the dtype of the projection's weight (float32 unless the module
        was cast). For :math:`\Delta \ge 0` this equals the concat-layout table of Hugging Face's
        ``MarianSinusoidalPositionalEmbedding`` and Transformer-XL's ``PositionalEmbedding``.

        Args:
            distances: 1-D integer tensor of distances (any sign).

        Returns:
            A tensor ``[len(distances), encoding_dim]``.

        Raises:
            TypeError: if ``distances`` is not an integer tensor.
            ValueError: if ``distances`` is not 1-D.
        """
        distances = check_positions_1d("distances", distances)
        return self._sinusoid(distances).to(self.relative_projection.weight.dtype)

    def _sinusoid(self, positions: torch.Tensor) -> torch.Tensor:
        """Return the concat-layout sinusoid of integer ``positions`` in float64, ``[len, encoding_dim]``."""
        return sinusoidal_encoding_at(
            positions, self.encoding_dim, base=self.base, layout="concat", dtype=torch.float64
        )

    def logit_bias(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> torch.Tensor:
        r"""Terms (b) + (c) + (d) over :math:`\sqrt{d_h}`, ``[B, H, T_q, T_k]``."""
        q, k, q_positions, k_positions = check_attention_inputs(
            q, k, q_positions, k_positions, num_heads=self.num_heads, head_dim=self.head_dim
        )
        compute_dtype = torch.promote_types(q.dtype, self.u.dtype)
        consecutive = (
            q.shape[2] > 0
            and k.shape[2] > 0
            and values_on_host(q_positions, k_positions)
            and _is_consecutive(q_positions)
            and _is_consecutive(k_positions)
        )
        q_positions = q_positions.to(device=q.device, dtype=torch.int64)
        k_positions = k_positions.to(device=q.device, dtype=torch.int64)
        content_term = torch.einsum("hd,bhjd->bhj", self.u.to(compute_dtype), k.to(compute_dtype))
        q_plus_v = q.to(compute_dtype) + self.v.to(compute_dtype)[None, :, None, :]
        if consecutive:
            position_term = self._position_term_by_rel_shift(q_plus_v, q_positions, k_positions)
        else:
            position_term = self._position_term_by_angle_addition(q_plus_v, q_positions, k_positions)
        bias = (content_term[:, :, None, :] + position_term) / math.sqrt(self.head_dim)
        return bias.to(q.dtype)

    def _position_term_by_rel_shift(
        self, q_plus_v: torch.Tensor, q_positions: torch.Tensor, k_positions: torch.Tensor
    ) -> torch.Tensor:
        """The paper's fast path for consecutive positions: one product per distance, then rel_shift."""
        q_len, k_len = q_positions.shape[0], k_positions.shape[0]
        # Column c holds distance (offset + q_len - 1) - c; rel_shift puts offset + i - j at [i, j].
        offset = q_positions[0] - k_positions[0]
        distances = offset + q_len - 1 - torch.arange(q_len + k_len - 1, device=q_plus_v.device)
        encodings = self._sinusoid(distances).to(q_plus_v.dtype)
        projected = encodings @ self.relative_projection.weight.to(q_plus_v.dtype).T
        per_distance = torch.einsum(
            "bhid,rhd->bhir", q_plus_v, projected.view(-1, self.num_heads, self.head_dim)
        )
        return rel_shift(per_distance)[..., :k_len]

    def _position_term_by_angle_addition(
        self, q_plus_v: torch.Tensor, q_positions: torch.Tensor, k_positions: torch.Tensor
    ) -> torch.Tensor:
        """The general path, exact for any positions and free of value reads (see the class docstring)."""
        dtype, half = q_plus_v.dtype, self.encoding_dim // 2
        weight = self.relative_projection.weight.to(dtype).view(self.num_heads, self.head_dim, -1)
        projected = torch.einsum("bhid,hde->bhie", q_plus_v, weight)  # [A | B]: [B, H, T_q, d]
        sine_half, cosine_half = projected[..., :half], projected[..., half:]
        query_sinusoid = self._sinusoid(q_positions).to(dtype)
        sin_m, cos_m = query_sinusoid[:, :half], query_sinusoid[:, half:]
        times_sin_n = cosine_half * sin_m - sine_half * cos_m
        times_cos_n = sine_half * sin_m + cosine_half * cos_m
        # [sin n | cos n] is the keys' concat-layout sinusoid: one product per head and sequence.
        key_sinusoid = self._sinusoid(k_positions).to(dtype)
        return torch.cat((times_sin_n, times_cos_n), dim=-1) @ key_sinusoid.T
