r"""A small multi-head attention layer, Transformer block and decoder with a pluggable positional encoding.

The attention layer computes, per head,

.. math::

    \text{logits}_{ij} = \frac{q_i \cdot k_j}{\sqrt{d_h}} + \beta_{ij}, \qquad
    z_i = \sum_j \operatorname{softmax}_j(\text{logits}_{i\cdot})\, v_j + t_i,

where the queries and keys may first be transformed by their positions (``rotate``), :math:`\beta` is the
encoding's ``logit_bias`` and :math:`t` its ``value_term`` (see :mod:`posenc_lib.base`). With a causal mask,
:math:`\text{logits}_{ij} = -\infty` for :math:`j > i`. Any :class:`~posenc_lib.base.PositionalEncoding`
plugs in, so the same model can be trained with each method (the course's length-extrapolation lab).

The block is pre-norm (Xiong et al. 2020; as in GPT-2 and Llama): ``x + attn(norm(x))`` then
``x + mlp(norm(x))``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from posenc_lib._validation import (
    check_choice,
    check_integer_tensor,
    check_positive_float,
    check_positive_int,
    check_tensor,
)
from posenc_lib.alibi import ALiBi
from posenc_lib.base import PositionalEncoding
from posenc_lib.learned import LearnedPositionalEmbedding
from posenc_lib.nope import NoPE
from posenc_lib.relative import ShawRelativeAttention
from posenc_lib.rope import RotaryEmbedding
from posenc_lib.sinusoidal import SinusoidalPositionalEncoding
from posenc_lib.t5 import T5RelativeBias
from posenc_lib.transformer_xl import TransformerXLRelativeAttention
from posenc_lib.xpos import XPos

ENCODING_NAMES = ("nope", "sinusoidal", "learned", "shaw", "transformer_xl", "t5", "alibi", "rope", "xpos")
"""Names accepted by :func:`build_positional_encoding` and :class:`TinyDecoder`."""

INPUT_ENCODINGS = ("sinusoidal", "learned")
"""Encodings added to the token embeddings once, before the first layer."""


def build_positional_encoding(
    name: str,
    *,
    dim: int,
    num_heads: int,
    max_positions: int | None = None,
    shaw_max_distance: int = 16,
    causal: bool = True,
) -> PositionalEncoding:
    r"""Return a new positional encoding by name, sized for a model of width ``dim`` and ``num_heads`` heads.

    Input encodings (``"sinusoidal"``, ``"learned"``) get the model width; the others act inside attention
    and get the head count or head width. ``"learned"`` needs ``max_positions`` (its table size).

    Args:
        name: one of :data:`ENCODING_NAMES`.
        dim: model width (divisible by ``num_heads``; the head width must be even for RoPE and xPos).
        num_heads: number of attention heads.
        max_positions: table size of the learned absolute embedding.
        shaw_max_distance: clipping distance :math:`k_{\max}` of Shaw et al.'s relative attention.
        causal: the attention the encoding serves: ``True`` (a decoder) gives T5's causal buckets and
            ALiBi's :math:`-m_h (i - j)`; ``False`` (an encoder) gives T5's bidirectional buckets and
            ALiBi's symmetric :math:`-m_h |i - j|`.
    """
    check_choice("name", name, ENCODING_NAMES)
    dim, num_heads = check_positive_int("dim", dim), check_positive_int("num_heads", num_heads)
    if dim % num_heads:
        raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
    head_dim = dim // num_heads
    if name == "nope":
        return NoPE()
    if name == "sinusoidal":
        return SinusoidalPositionalEncoding(dim)
    if name == "learned":
        if max_positions is None:
            raise ValueError("max_positions must be given (a positive integer) for name='learned'")
        return LearnedPositionalEmbedding(max_positions, dim)
    if name == "shaw":
        return ShawRelativeAttention(head_dim, shaw_max_distance)
    if name == "transformer_xl":
        return TransformerXLRelativeAttention(num_heads, head_dim)
    if name == "t5":
        return T5RelativeBias(num_heads, model_dim=dim, bidirectional=not causal)
    if name == "alibi":
        return ALiBi(num_heads, causal=causal)
    if name == "rope":
        return RotaryEmbedding(head_dim)
    return XPos(head_dim)


class MultiHeadAttention(nn.Module):
    r"""Multi-head self-attention whose positional information comes from a pluggable encoding.

    Args:
        dim: model width.
        num_heads: number of heads; ``dim`` must be divisible by it.
        positional: the encoding whose ``rotate``, ``logit_bias`` and ``value_term`` hooks are used
            (default :class:`~posenc_lib.nope.NoPE`).
        causal: mask out keys after the query (a decoder); ``False`` for an encoder.
        scale: factor on :math:`q \cdot k`, default :math:`1/\sqrt{d_h}`; T5 uses ``1.0`` (its
            initialisation absorbs the scale, Raffel et al. 2020).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        positional: PositionalEncoding | None = None,
        causal: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        self.dim, self.num_heads = check_positive_int("dim", dim), check_positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
        if positional is not None and not isinstance(positional, PositionalEncoding):
            raise TypeError(
                f"positional must be a PositionalEncoding or None, got {type(positional).__name__}"
            )
        self.head_dim = dim // num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim) if scale is None else check_positive_float("scale", scale)
        self.positional = NoPE() if positional is None else positional
        self.causal = causal
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend over ``x`` (``[batch, T, dim]``) at ``positions`` (1-D, length ``T``; default ``0..T-1``).

        Returns the output ``[batch, T, dim]``, and the attention probabilities ``[batch, heads, T, T]`` too
        when ``return_attention`` is true.
        """
        check_tensor("x", x)
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape [batch, T, dim={self.dim}], got {tuple(x.shape)}")
        batch, seq_len, _ = x.shape
        positions = _check_positions(positions, seq_len, x.device)
        q, k, v = self.qkv(x).view(batch, seq_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.positional.rotate(q, k, positions, positions)
        logits = (q @ k.transpose(-1, -2)) * self.scale
        bias = self.positional.logit_bias(q, k, positions, positions)
        if bias is not None:
            logits = logits + bias
        if self.causal:
            future = torch.ones(seq_len, seq_len, dtype=torch.bool, device=x.device).triu(1)
            logits = logits.masked_fill(future, float("-inf"))
        probs = torch.softmax(logits.float(), dim=-1).to(v.dtype)
        z = probs @ v
        value_term = self.positional.value_term(probs, positions, positions)
        if value_term is not None:
            z = z + value_term
        out = self.out(z.transpose(1, 2).reshape(batch, seq_len, self.dim))
        return (out, probs) if return_attention else out


class TransformerBlock(nn.Module):
    """Pre-norm Transformer block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))`` with a 4x GELU MLP."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        positional: PositionalEncoding | None = None,
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = MultiHeadAttention(dim, num_heads, positional=positional, causal=causal)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the block to ``x`` (``[batch, T, dim]``)."""
        x = x + self.attention(self.attention_norm(x), positions)
        return x + self.mlp(self.mlp_norm(x))


class TinyDecoder(nn.Module):
    """A small decoder-only language model with the positional encoding chosen by name.

    Token embedding, then the input encoding (for ``"sinusoidal"`` and ``"learned"``), ``num_layers``
    :class:`TransformerBlock` s, a final LayerNorm and a linear head to vocabulary logits. Encodings that act
    inside attention get one instance per layer, except T5's bias table, which all layers share as in
    Raffel et al. (2020).

    Args:
        vocab_size: number of token ids.
        dim: model width.
        num_heads: attention heads per layer.
        num_layers: number of blocks.
        encoding: one of :data:`ENCODING_NAMES`.
        max_positions: table size for ``"learned"`` (a longer input is a ``ValueError``).
        causal: causal masking (``True`` for a language model).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        num_heads: int,
        num_layers: int,
        *,
        encoding: str = "rope",
        max_positions: int | None = None,
        causal: bool = True,
    ) -> None:
        super().__init__()
        vocab_size = check_positive_int("vocab_size", vocab_size)
        num_layers = check_positive_int("num_layers", num_layers)
        self.encoding = check_choice("encoding", encoding, ENCODING_NAMES)
        sizes = {"dim": dim, "num_heads": num_heads, "max_positions": max_positions, "causal": causal}
        self.token_embedding = nn.Embedding(vocab_size, dim)
        if encoding in INPUT_ENCODINGS:
            self.input_encoding = build_positional_encoding(encoding, **sizes)
            layer_encodings = [NoPE() for _ in range(num_layers)]
        else:
            self.input_encoding = NoPE()
            if encoding == "t5":
                shared = build_positional_encoding(encoding, **sizes)
                layer_encodings = [shared] * num_layers
            else:
                layer_encodings = [build_positional_encoding(encoding, **sizes) for _ in range(num_layers)]
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, positional=pe, causal=causal) for pe in layer_encodings
        )
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Return logits ``[batch, T, vocab_size]`` for integer ``tokens`` ``[batch, T]``."""
        check_integer_tensor("tokens", tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, T], got {tuple(tokens.shape)}")
        positions = _check_positions(positions, tokens.shape[1], tokens.device)
        x = self.input_encoding.embed(self.token_embedding(tokens), positions)
        for block in self.blocks:
            x = block(x, positions)
        return self.head(self.final_norm(x))


def count_positional_parameters(model: nn.Module) -> int:
    """Return the number of parameters that positional encodings add to ``model``.

    Every :class:`~posenc_lib.base.PositionalEncoding` inside ``model`` (the model itself included) is
    found, and each of their parameters is counted once, however many layers share it: T5's bias table,
    which all layers of a :class:`TinyDecoder` share (Raffel et al. 2020), counts once; an encoding built per
    layer (Shaw et al., Transformer-XL) counts once per layer. Fixed encodings (the sinusoid, ALiBi, RoPE,
    xPos, NoPE) have no parameters and add 0.

    Args:
        model: any ``nn.Module``, for example a :class:`TinyDecoder`.

    Returns:
        The number of scalar parameters.

    Raises:
        TypeError: If ``model`` is not an ``nn.Module``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    parameters = {
        id(parameter): parameter
        for module in model.modules()
        if isinstance(module, PositionalEncoding)
        for parameter in module.parameters()
    }
    return sum(parameter.numel() for parameter in parameters.values())


def _check_positions(positions: torch.Tensor | None, seq_len: int, device: torch.device) -> torch.Tensor:
    if positions is None:
        return torch.arange(seq_len, device=device)
    check_integer_tensor("positions", positions)
    if positions.shape != (seq_len,):
        raise ValueError(
            f"positions must be a 1-D tensor of length T = {seq_len}, got shape {tuple(positions.shape)}"
        )
    return positions.to(device)
