r"""T5's bucketed relative position bias (Raffel et al. 2020).

Raffel, Shazeer, Roberts, Lee, Narang, Matena, Zhou, Li and Liu (2020), "Exploring the Limits of Transfer
Learning with a Unified Text-to-Text Transformer", section 2.1. Each relative position (key minus query) falls
into one of ``num_buckets`` buckets, exact for short distances and logarithmically wider up to
``max_distance``; each head learns one scalar per bucket, added to the attention logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc_lib._validation import (
    check_attention_inputs,
    check_integer_tensor,
    check_positive_float,
    check_positive_int,
)
from posenc_lib.base import PositionalEncoding
from posenc_lib.relative import pairwise_relative_positions


def _check_bucket_settings(
    bidirectional: object, num_buckets: object, max_distance: object
) -> tuple[int, int]:
    """Check T5's bucket settings; return ``(max_exact, num_buckets)``, the numbers per sign."""
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional must be True or False, got {bidirectional!r}")
    num_buckets = check_positive_int("num_buckets", num_buckets)
    max_distance = check_positive_int("max_distance", max_distance)
    if bidirectional and num_buckets % 2:
        raise ValueError(
            f"num_buckets must be even when bidirectional=True (half the buckets for each sign), "
            f"got {num_buckets}"
        )
    buckets_per_sign = num_buckets // 2 if bidirectional else num_buckets
    max_exact = buckets_per_sign // 2
    if max_exact < 1:
        minimum = 4 if bidirectional else 2
        raise ValueError(
            f"num_buckets must be >= {minimum} when bidirectional={bidirectional} (at least one exact bucket "
            f"per sign), got {num_buckets}"
        )
    if max_distance <= max_exact:
        raise ValueError(
            f"max_distance must be larger than the {max_exact} distances that get exact buckets "
            f"(num_buckets={num_buckets}, bidirectional={bidirectional}), got {max_distance}"
        )
    return max_exact, buckets_per_sign


def t5_bucket(
    relative_position: torch.Tensor,
    *,
    bidirectional: bool = True,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> torch.Tensor:
    r"""Map relative positions (key minus query) to T5's buckets (Raffel et al. 2020).

    Bidirectional (encoder): half the buckets for each sign, positive relative positions (keys after the
    query) adding ``num_buckets / 2``, and :math:`r = |\mathrm{rel}|`. Causal (decoder): all buckets for
    the past, :math:`r = \max(-\mathrm{rel}, 0)` (future keys share bucket 0 with distance 0; the causal
    mask hides them). With :math:`n` buckets per sign and :math:`e = n / 2` (integer division) exact ones:

    .. math::

        b(r) = r \text{ if } r < e, \text{ else }
        \min\left(n - 1,\; e + \left\lfloor \frac{\ln(r / e)}{\ln(\mathrm{max\_distance} / e)} (n - e)
        \right\rfloor\right),

    evaluated in float32 exactly as Hugging Face's
    ``transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket`` does (which follows
    Mesh TensorFlow), so the buckets are identical to it. Because of the truncation, distances already share
    the last bucket a little before ``max_distance``. Any integer relative positions are accepted: they are
    differences, so positions far from 0 or negative ones give ordinary buckets.

    Hugging Face accepts settings that this function rejects: an odd ``num_buckets`` with
    ``bidirectional=True`` (it silently leaves the last bucket unused), fewer than one exact bucket
    (a division by zero), and ``max_distance`` at or below the number of exact buckets (NaN or decreasing
    buckets).

    Args:
        relative_position: integer tensor of any shape, key position minus query position.
        bidirectional: ``True`` for an encoder, ``False`` for a causal decoder.
        num_buckets: number of buckets in all (both signs together when bidirectional).
        max_distance: the distance from which all larger distances share the last bucket.

    Returns:
        An int64 tensor of the same shape, values in ``0 … num_buckets - 1``.

    Raises:
        TypeError: if ``relative_position`` is not an integer tensor or a setting has the wrong type.
        ValueError: if a setting is out of range (see above).
    """
    relative_position = check_integer_tensor("relative_position", relative_position).to(torch.int64)
    max_exact, buckets_per_sign = _check_bucket_settings(bidirectional, num_buckets, max_distance)
    if bidirectional:
        sign_offset = (relative_position > 0).to(torch.int64) * buckets_per_sign
        distance = relative_position.abs()
    else:
        sign_offset = torch.zeros_like(relative_position)
        distance = (-relative_position).clamp(min=0)
    # Distances below max_exact take the exact branch; clamping keeps log() finite where its result is unused.
    log_ratio = torch.log(distance.clamp(min=max_exact).to(torch.float32) / max_exact) / math.log(
        max_distance / max_exact
    )
    log_bucket = max_exact + (log_ratio * (buckets_per_sign - max_exact)).to(torch.int64)
    log_bucket = log_bucket.clamp(max=buckets_per_sign - 1)
    return sign_offset + torch.where(distance < max_exact, distance, log_bucket)


class T5RelativeBias(PositionalEncoding):
    r"""T5's learned relative position bias (Raffel et al. 2020): one scalar per (bucket, head).

    Paper: "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer", section 2.1.
    The bias for head :math:`h` is :math:`\beta_{ij} = w[\mathrm{bucket}(p^k_j - p^q_i), h]` with the
    buckets of :func:`t5_bucket`, and the logit is :math:`q_i \cdot k_j + \beta_{ij}`.

    Two facts that differ from the other relative methods:

    * T5 does **not** scale the logits by :math:`1/\sqrt{d}` (its initialization absorbs the factor), so this
      bias is added as it is; in a layer that does scale :math:`q \cdot k`, the bias still enters unscaled.
    * The table is held by the first layer of each stack and **shared by all layers** (each head has its own
      column): build one module and pass it to every layer.

    It matches ``T5Attention.compute_bias`` of Hugging Face transformers: the table
    ``relative_attention_bias`` is an ``nn.Embedding(num_buckets, num_heads)`` with the same name and layout,
    so a T5 checkpoint's weight loads into it directly. It is initialised as transformers'
    ``T5PreTrainedModel`` initialises it: every entry drawn from :math:`\mathcal{N}(0, f^2/d)`, a standard
    deviation of :math:`f / \sqrt{d}` for the model width :math:`d` (``d_model``) and ``initializer_factor``
    :math:`f = 1` (PyTorch's default for an ``nn.Embedding``, :math:`\mathcal{N}(0, 1)`, is :math:`\sqrt{d}`
    times larger).

    Args:
        num_heads: number of heads, ``>= 1``.
        model_dim: the model width :math:`d` (``d_model`` in a T5 config), which sets the initial scale.
        bidirectional: ``True`` for an encoder, ``False`` for a causal decoder.
        num_buckets: number of buckets (see :func:`t5_bucket`).
        max_distance: distance from which all larger distances share a bucket.
        initializer_factor: the factor :math:`f` of transformers' ``T5Config.initializer_factor``.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if an argument is out of range.
    """

    def __init__(
        self,
        num_heads: int,
        *,
        model_dim: int,
        bidirectional: bool = True,
        num_buckets: int = 32,
        max_distance: int = 128,
        initializer_factor: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.model_dim = check_positive_int("model_dim", model_dim)
        initializer_factor = check_positive_float("initializer_factor", initializer_factor)
        _check_bucket_settings(bidirectional, num_buckets, max_distance)
        self.bidirectional = bidirectional
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, self.num_heads)
        nn.init.normal_(
            self.relative_attention_bias.weight, mean=0.0, std=initializer_factor / math.sqrt(model_dim)
        )

    def extra_repr(self) -> str:
        """Describe the module's settings in its repr."""
        return (
            f"num_heads={self.num_heads}, model_dim={self.model_dim}, bidirectional={self.bidirectional}, "
            f"num_buckets={self.num_buckets}, max_distance={self.max_distance}"
        )

    def bias(self, q_positions: torch.Tensor, k_positions: torch.Tensor) -> torch.Tensor:
        r"""Return the bias :math:`\beta_{ij}` for every head, ``[1, H, T_q, T_k]``, in the table's dtype.

        Args:
            q_positions: 1-D integer tensor of query positions, length ``T_q``.
            k_positions: 1-D integer tensor of key positions, length ``T_k``.

        Returns:
            The bias, on the table's device.

        Raises:
            TypeError: if a position tensor is not an integer tensor.
            ValueError: if a position tensor is not 1-D.
        """
        buckets = t5_bucket(
            pairwise_relative_positions(q_positions, k_positions),
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        table = self.relative_attention_bias.weight
        return table[buckets.to(table.device)].permute(2, 0, 1).unsqueeze(0)

    def logit_bias(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`bias`, ``[1, H, T_q, T_k]``, not scaled (of ``q`` and ``k`` only shape and dtype count)."""
        q, k, q_positions, k_positions = check_attention_inputs(
            q, k, q_positions, k_positions, num_heads=self.num_heads
        )
        return self.bias(q_positions, k_positions).to(q.dtype)
