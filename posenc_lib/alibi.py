r"""ALiBi: attention with linear biases (Press, Smith and Lewis 2022).

Press, Smith and Lewis (2022), "Train Short, Test Long: Attention with Linear Biases Enables Input Length
Extrapolation" (ICLR 2022). No position embedding at all: each head :math:`h` adds :math:`-m_h (i - j)` to
the logit of query :math:`i` and key :math:`j \le i`, a penalty that grows linearly with the distance, with
a fixed slope :math:`m_h` per head. Nothing is learned.
"""

from __future__ import annotations

import math

import torch

from posenc_lib._validation import check_attention_inputs, check_positive_int
from posenc_lib.base import PositionalEncoding
from posenc_lib.relative import pairwise_relative_positions


def _alibi_slopes_float64(num_heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Return the slopes ``2 ** e_h`` in float64 (within an ulp of the exact value), computed on ``device``.

    The exponents ``e_h = -8 k / p`` (``p`` a power of two) are exact in float64. Computing the slopes on the
    device, rather than copying a host list there, keeps the attention hook free of host-device copies.
    """
    num_heads = check_positive_int("num_heads", num_heads)
    power_of_two = 2 ** math.floor(math.log2(num_heads))
    first = torch.arange(1, power_of_two + 1, dtype=torch.float64, device=device) * (-8 / power_of_two)
    # The remaining heads take every other slope of 2 * power_of_two heads: k = 1, 3, 5, ...
    odd = 2 * torch.arange(num_heads - power_of_two, dtype=torch.float64, device=device) + 1
    return torch.pow(2.0, torch.cat((first, odd * (-8 / (2 * power_of_two)))))


def alibi_slopes(num_heads: int) -> torch.Tensor:
    r"""Return ALiBi's head slopes :math:`m_1, …, m_n` (Press et al. 2022, section 3), float32 ``[n]``.

    For :math:`n` a power of two, :math:`m_k = 2^{-8k/n}`, :math:`k = 1 … n`: a geometric sequence from
    :math:`2^{-8/n}` to :math:`2^{-8}`. Otherwise, with :math:`p = 2^{\lfloor \log_2 n \rfloor}`, the slopes
    of :math:`p` heads followed by the odd-numbered slopes :math:`2^{-8k/(2p)}`, :math:`k = 1, 3, 5, …`, of
    :math:`2p` heads, :math:`n - p` of them (``get_slopes`` in the authors' repository
    ofirpress/attention_with_linear_biases).

    Each slope is :math:`2` to an exactly known exponent, evaluated in float64 and rounded to float32 once.
    ``get_slopes`` multiplies by the ratio repeatedly in float64 (the same float32 result up to an ulp) and
    Hugging Face's Bloom (``transformers.models.bloom.modeling_bloom.build_alibi_tensor``) raises a float32
    base to integer powers, which puts errors of a few ulps (relative up to about 5e-7) on the later heads.

    Args:
        num_heads: number of heads, ``>= 1``.

    Returns:
        The slopes, largest first.

    Raises:
        TypeError: if ``num_heads`` is not an integer.
        ValueError: if ``num_heads < 1``.
    """
    return _alibi_slopes_float64(num_heads).to(torch.float32)


def _alibi_bias_float64(
    num_heads: int, q_positions: torch.Tensor, k_positions: torch.Tensor, causal: bool
) -> torch.Tensor:
    """Return the bias ``[H, T_q, T_k]`` in float64 (see :func:`alibi_bias`)."""
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be True or False, got {causal!r}")
    key_minus_query = pairwise_relative_positions(q_positions, k_positions).to(torch.float64)
    distance = key_minus_query if causal else -key_minus_query.abs()
    slopes = _alibi_slopes_float64(num_heads, device=distance.device)
    return slopes[:, None, None] * distance[None, :, :]


def alibi_bias(
    num_heads: int,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
    *,
    causal: bool = True,
) -> torch.Tensor:
    r"""Return ALiBi's bias for every head, float32 ``[num_heads, T_q, T_k]`` (Press et al. 2022).

    ``causal=True`` (the paper): :math:`b_{hij} = -m_h (p^q_i - p^k_j)`, which is :math:`\le 0` for keys at or
    before the query. Keys after the query get positive values that mean nothing: the causal mask must remove
    them. Implementations that only add :math:`+m_h p^k_j` (the authors' fairseq code, Hugging Face's Bloom)
    give the same softmax over the unmasked keys, because the two differ by :math:`m_h p^q_i`, a constant in
    each row; only the raw logits differ.

    ``causal=False``: the symmetric :math:`b_{hij} = -m_h |p^q_i - p^k_j|` that x-transformers
    (``AlibiPositionalBias``) uses for encoders; the paper only treats causal language models.

    The products of slopes and distances are computed in float64 and rounded once. Any integer positions are
    accepted (only differences enter). A float32 or bfloat16 bias is finite for every distance that int64
    holds; a float16 one (:class:`ALiBi` with float16 queries) saturates to :math:`\pm\infty` once
    :math:`m_h |p^q_i - p^k_j| > 65504`, beyond the float16 range.

    Args:
        num_heads: number of heads, ``>= 1``.
        q_positions: 1-D integer tensor of query positions, length ``T_q``.
        k_positions: 1-D integer tensor of key positions, length ``T_k``.
        causal: which form of the bias (see above).

    Returns:
        The bias, on the positions' device.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if ``num_heads < 1`` or a position tensor is not 1-D.
    """
    return _alibi_bias_float64(num_heads, q_positions, k_positions, causal).to(torch.float32)


class ALiBi(PositionalEncoding):
    r"""ALiBi as an attention-logit bias (Press, Smith and Lewis 2022).

    Paper: "Train Short, Test Long: Attention with Linear Biases Enables Input Length Extrapolation".
    :meth:`logit_bias` returns :func:`alibi_bias` with a leading batch axis. The bias is added to the
    scaled logits :math:`q \cdot k / \sqrt{d}` as it is, as in the paper. The module has no parameters and no
    buffers: casting it to another dtype or device changes nothing, and the bias is computed in float64 and
    rounded once to the dtype of the queries.

    Args:
        num_heads: number of heads, ``>= 1``.
        causal: ``True`` for :math:`-m (i - j)` (use with a causal mask), ``False`` for the symmetric
            :math:`-m |i - j|`.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if ``num_heads < 1``.
    """

    def __init__(self, num_heads: int, *, causal: bool = True) -> None:
        super().__init__()
        self.num_heads = check_positive_int("num_heads", num_heads)
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be True or False, got {causal!r}")
        self.causal = causal

    def extra_repr(self) -> str:
        """Describe the module's settings in its repr."""
        return f"num_heads={self.num_heads}, causal={self.causal}"

    def logit_bias(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> torch.Tensor:
        """:func:`alibi_bias`, ``[1, H, T_q, T_k]`` (of ``q`` and ``k`` only shape, dtype, device count)."""
        q, k, q_positions, k_positions = check_attention_inputs(
            q, k, q_positions, k_positions, num_heads=self.num_heads
        )
        bias = _alibi_bias_float64(self.num_heads, q_positions, k_positions, self.causal)
        return bias.to(device=q.device, dtype=q.dtype).unsqueeze(0)
