r"""A small multi-head attention layer, Transformer block and decoder with a pluggable positional encoding.

The attention layer computes, per head,

.. math::

    \text{logits}_{ij} = \frac{q_i \cdot k_j}{\sqrt{d_h}} + \beta_{ij}, \qquad
    z_i = \sum_j \operatorname{softmax}_j(\text{logits}_{i\cdot})\, v_j + t_i,

where the queries and keys may first be transformed by their positions (``rotate``), :math:`\beta` is the
encoding's ``logit_bias`` and :math:`t` its ``value_term`` (see :mod:`posenc_lib.base`). With a causal mask,
:math:`\text{logits}_{ij} = -\infty` for :math:`j > i`: the causal order is the order of the tokens in the
sequence (and, with a cache, the order in which they enter it); positions only label the tokens for the
encoding. Any :class:`~posenc_lib.base.PositionalEncoding` plugs in, so the same model can be trained with
each method (the course's length-extrapolation lab).

The block is pre-norm (Xiong et al. 2020; as in GPT-2 and Llama): ``x + attn(norm(x))`` then
``x + mlp(norm(x))``.

**Decoding with a KV cache** (Pope et al. 2023, "Efficiently Scaling Transformer Inference"). Generating one
token at a time, a decoder would recompute the keys and values of every earlier token at every step. A
:class:`KVCache` keeps them instead: each call of a layer computes queries, keys and values for the
:math:`T_q` new tokens only, passes queries and keys through the encoding's ``rotate`` hook at the new
positions, appends the keys and values to the cache with their positions, and lets the new queries attend
to all :math:`T_c + T_q` cached keys; new query :math:`i` sees the :math:`T_c` earlier keys and new keys
:math:`0 \dots i`. ``logit_bias`` and ``value_term`` get the new queries' positions and the positions of all
cached keys. Keys are stored *after* ``rotate``: RoPE's key at position :math:`n` is rotated once, as
:math:`R_n k`, and scores every later query correctly because
:math:`\langle R_m q, R_n k \rangle = \langle q, R_{n-m} k \rangle` depends on :math:`n - m` only.

Cached decoding gives the logits of full recomputation (up to rounding) for every encoding:

==================  =========================================================================================
encoding            cached decoding
==================  =========================================================================================
``nope``            equal: no positional term.
``sinusoidal``      equal: each new token's input gets :math:`\mathrm{PE}(p)` at its own position.
``learned``         equal within the table; a position outside :math:`[0, L)` is a ``ValueError`` naming
                    ``max_positions`` (GPT-2 has no vector past its last row either).
``shaw``            equal: the logit term needs the new queries and the positions, the value term the
                    probabilities over the cached keys and the positions.
``t5``, ``alibi``   equal: the bias depends on the query and key positions only.
``transformer_xl``  equal: terms (b)-(d) need the new queries, the cached keys (term (c), :math:`u \cdot k_j`)
                    and the query and key positions (:math:`\mathrm{PE}(i - j) W_R`), all of which the cache
                    has. A cache that keeps every key is Transformer-XL's "memory" with no length limit; the
                    paper's segment recurrence (a memory of fixed length, with the gradient stopped, for
                    training) is a training scheme this module does not implement.
``rope``            equal: each key is rotated once, at its own position.
``xpos``            equal: the cache fixes xPos's centre :math:`p_0` at its first call (the middle of those
                    positions, :attr:`KVCache.xpos_centre`), because a cached key keeps the scale
                    :math:`\zeta^{-(n - p_0)/\gamma}` it was stored with and :math:`p_0` cancels only when
                    queries and keys share it. Every later position must then lie within
                    :func:`~posenc_lib.xpos.xpos_max_offset` of :math:`p_0` (35 694 in float32), where the
                    scales are normal numbers; past it the hook raises a ``ValueError`` if the positions are
                    on the CPU (on an accelerator it reads no values). Full recomputation re-centres every
                    call and allows a window of twice that.
==================  =========================================================================================

**Rolling caches.** A cache decides how it stores keys and how the new queries attend over it (its
``_attend``): :class:`KVCache` keeps every token, as above; :class:`posenc_lib.streaming.SinkKVCache` (Xiao
et al. 2023, StreamingLLM) keeps the first tokens and a window of recent ones, stores keys before ``rotate``
and transforms them at every step at their places in the cache. Any subclass of :class:`KVCache` plugs into
:class:`MultiHeadAttention`, :class:`TransformerBlock` and :class:`TinyDecoder` where a :class:`KVCache`
does; the default positions of new tokens continue from :attr:`KVCache.tokens_seen`.

Arguments are checked once, where they enter (:meth:`MultiHeadAttention.forward`,
:meth:`TransformerBlock.forward`, :meth:`TinyDecoder.forward`, :meth:`TinyDecoder.generate`); the layers
below run unchecked, and the hooks read no tensor values (:mod:`posenc_lib.base`). The checks that read
values, and so wait for an accelerator, run once per model call: :class:`TinyDecoder`'s token ids, and a
learned table's positions (in its ``embed``, before the first layer). xPos with a cache reads the positions
once per layer, when the cache is empty, to fix its centre. Values are not read where they cannot be (the
meta device, ``torch.compile``, ``torch.func``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from posenc_lib._validation import (
    check_bool,
    check_choice,
    check_floating_tensor,
    check_integer_tensor,
    check_non_negative_int,
    check_positive_float,
    check_positive_int,
    values_readable,
)
from posenc_lib.alibi import ALiBi
from posenc_lib.base import PositionalEncoding
from posenc_lib.learned import LearnedPositionalEmbedding
from posenc_lib.nope import NoPE
from posenc_lib.relative import ShawRelativeEncoding
from posenc_lib.rope import RotaryEmbedding
from posenc_lib.sinusoidal import SinusoidalPositionalEncoding
from posenc_lib.t5 import T5RelativeBias
from posenc_lib.transformer_xl import TransformerXLRelativeEncoding
from posenc_lib.xpos import XPos


@dataclass(frozen=True)
class _EncodingSizes:
    """The sizes each builder in ``_ENCODING_BUILDERS`` reads (checked by ``build_positional_encoding``)."""

    dim: int
    num_heads: int
    max_positions: int | None
    shaw_max_distance: int
    causal: bool

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads


def _build_learned(sizes: _EncodingSizes) -> LearnedPositionalEmbedding:
    if sizes.max_positions is None:
        raise ValueError("max_positions must be given (a positive integer) for name='learned'")
    return LearnedPositionalEmbedding(sizes.max_positions, sizes.dim)


_ENCODING_BUILDERS: dict[str, Callable[[_EncodingSizes], PositionalEncoding]] = {
    "nope": lambda sizes: NoPE(),
    "sinusoidal": lambda sizes: SinusoidalPositionalEncoding(sizes.dim),
    "learned": _build_learned,
    "shaw": lambda sizes: ShawRelativeEncoding(sizes.head_dim, sizes.shaw_max_distance),
    "transformer_xl": lambda sizes: TransformerXLRelativeEncoding(sizes.num_heads, sizes.head_dim),
    "t5": lambda sizes: T5RelativeBias(sizes.num_heads, model_dim=sizes.dim, bidirectional=not sizes.causal),
    "alibi": lambda sizes: ALiBi(sizes.num_heads, causal=sizes.causal),
    "rope": lambda sizes: RotaryEmbedding(sizes.head_dim),
    "xpos": lambda sizes: XPos(sizes.head_dim),
}

ENCODING_NAMES = tuple(_ENCODING_BUILDERS)
"""Names accepted by :func:`build_positional_encoding` and :class:`TinyDecoder`."""

INPUT_ENCODINGS = ("sinusoidal", "learned")
"""Encodings added to the token embeddings once, before the first layer."""

PER_LAYER_ENCODINGS = ("shaw", "transformer_xl")
"""Encodings whose parameters belong to one layer, so that a :class:`TinyDecoder` builds one per layer.

Every other encoding inside attention is built once per model and shared by all layers (T5's bias table,
as in Raffel et al. 2020, and the parameter-free RoPE, xPos, ALiBi and NoPE).
"""


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
    and get the head count or head width :math:`d_h` = ``dim // num_heads``. ``"learned"`` needs
    ``max_positions`` (its table size). Each name has one builder in a registry (a dict from name to a
    function of the sizes).

    Args:
        name: one of :data:`ENCODING_NAMES`.
        dim: model width (divisible by ``num_heads``; the head width must be even for RoPE and xPos).
        num_heads: number of attention heads.
        max_positions: table size of the learned absolute embedding.
        shaw_max_distance: clipping distance :math:`k_{\max}` of Shaw et al.'s relative attention.
        causal: the attention the encoding serves: ``True`` (a decoder) gives T5's causal buckets and
            ALiBi's :math:`-m_h (i - j)`; ``False`` (an encoder) gives T5's bidirectional buckets and
            ALiBi's symmetric :math:`-m_h |i - j|`.

    Raises:
        TypeError: if an argument has the wrong type.
        ValueError: if ``name`` is unknown, ``dim`` is not divisible by ``num_heads``, or ``max_positions``
            is missing for ``"learned"``.
    """
    check_choice("name", name, ENCODING_NAMES)
    dim, num_heads = check_positive_int("dim", dim), check_positive_int("num_heads", num_heads)
    if dim % num_heads:
        raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
    sizes = _EncodingSizes(dim, num_heads, max_positions, shaw_max_distance, check_bool("causal", causal))
    return _ENCODING_BUILDERS[name](sizes)


class KVCache:
    r"""The keys and values that one attention layer has computed so far, with their positions.

    Pass one (empty) cache per layer to :meth:`MultiHeadAttention.forward`, or the list from
    :meth:`TinyDecoder.new_cache` to :meth:`TinyDecoder.forward`; each call appends the new tokens' keys and
    values and attends over everything cached. Keys are stored after the encoding's ``rotate`` hook, so
    RoPE's and xPos's keys are rotated once, at their own positions, and never again; values are stored as
    computed (no encoding transforms them).

    Attributes:
        keys: ``[batch, heads, T, head_dim]`` after ``rotate``, or ``None`` while empty.
        values: ``[batch, heads, T, head_dim]``, or ``None`` while empty.
        positions: the int64 positions of the cached tokens, ``[T]``, or ``None`` while empty.

    :attr:`xpos_centre` gives the centre with which xPos keys were scaled.
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self._xpos_with_centre: XPos | None = None

    @property
    def xpos_centre(self) -> int | None:
        r"""The centre :math:`p_0` of the cached keys' scale :math:`\zeta^{-(n - p_0)/\gamma}`, or ``None``.

        Set when the layer's encoding is an :class:`~posenc_lib.xpos.XPos` built with ``centre=None``: the
        middle of the first call's positions, :math:`\lfloor(\min p + \max p + 1)/2\rfloor`, kept for every
        later call, because the scale of a cached key cannot change. ``None`` for other encodings and while
        the cache is empty.
        """
        return None if self._xpos_with_centre is None else self._xpos_with_centre.centre

    def __len__(self) -> int:
        """Return the number of cached tokens :math:`T`."""
        return 0 if self.keys is None else self.keys.shape[-2]

    @property
    def tokens_seen(self) -> int:
        """How many tokens were appended so far (:math:`T` here, more for a cache that evicts tokens).

        The default positions of a call's new tokens start there.
        """
        return len(self)

    def __repr__(self) -> str:
        shape = None if self.keys is None else tuple(self.keys.shape)
        return f"KVCache(tokens={len(self)}, keys_shape={shape})"

    def _append(
        self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Append the new tokens and return all cached keys, values and positions."""
        positions = positions.to(torch.int64)
        if self.keys is None:
            self.keys, self.values, self.positions = keys, values, positions
        else:
            self.keys = torch.cat([self.keys, keys], dim=-2)
            self.values = torch.cat([self.values, values], dim=-2)
            self.positions = torch.cat([self.positions, positions])
        return self.keys, self.values, self.positions

    def _attend(
        self,
        attention: MultiHeadAttention,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new tokens' keys and values and attend over the cache: ``(z, probs)``, ``z`` per head.

        ``q``, ``k``, ``v`` are the new tokens' projections before the encoding's ``rotate``; a subclass
        that stores keys differently (a rolling cache, :class:`posenc_lib.streaming.SinkKVCache`) overrides
        this method.
        """
        q, k = _rotate_for_cache(attention.positional, q, k, positions, self)
        k, v, k_positions = self._append(k, v, positions)
        return attention._weigh(q, k, v, positions, k_positions)

    def _check_decoder(self, model: TinyDecoder) -> None:
        """Raise a ValueError if ``model`` cannot decode with this cache (every model can use a KVCache)."""


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
        self.causal = check_bool("causal", causal)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from the tokens ``x`` (``[batch, T, dim]``) at ``positions`` to themselves and the cache.

        Args:
            x: the layer input of the new tokens, floating, ``[batch, T, dim]``.
            positions: 1-D integer tensor of length ``T``; default ``t, …, t + T - 1`` with ``t`` the number
                of tokens the cache has seen, :attr:`KVCache.tokens_seen` (``0 … T - 1`` without a cache).
            cache: a :class:`KVCache` of this layer (causal attention only); the new keys and values are
                appended to it and the queries attend to all of it (a rolling
                :class:`~posenc_lib.streaming.SinkKVCache` keeps only some of it). ``None``: attend within
                ``x`` only.
            return_attention: also return the attention probabilities.

        Returns:
            The output ``[batch, T, dim]``, and the attention probabilities ``[batch, heads, T, T_k]``
            (``T_k`` the number of keys: ``T`` plus the tokens cached before; for a
            :class:`~posenc_lib.streaming.SinkKVCache`, see its docstring) too when ``return_attention``.

        Raises:
            TypeError: if ``x``, ``positions`` or ``cache`` has the wrong type.
            ValueError: if a shape does not fit (the message gives the expected one), or a cache is given to
                bidirectional attention.
        """
        x = self._check_input(x)
        _check_cache(cache, self, x.shape[0], x.device)
        past = 0 if cache is None else cache.tokens_seen
        positions = _check_positions(positions, x.shape[1], x.device, first=past)
        out, probs = self._attend(x, positions, cache)
        return (out, probs) if return_attention else out

    def _check_input(self, x: object) -> torch.Tensor:
        check_floating_tensor("x", x)
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape [batch, T, dim={self.dim}], got {tuple(x.shape)}")
        return x

    def _attend(
        self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The unchecked layer: return the output and the attention probabilities."""
        batch, q_len, _ = x.shape
        q, k, v = self.qkv(x).view(batch, q_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if cache is None:
            q, k = self.positional.rotate(q, k, positions, positions)
            z, probs = self._weigh(q, k, v, positions, positions)
        else:
            z, probs = cache._attend(self, q, k, v, positions)
        return self.out(z.transpose(1, 2).reshape(batch, q_len, self.dim)), probs

    def _weigh(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention of the (transformed) queries over the keys: ``(z, probs)``, ``z`` per head.

        The last ``T_q`` keys are the queries' own tokens: query ``i`` sees every key before them and the
        new keys ``0 .. i`` (with a causal mask).
        """
        q_len, k_len = q.shape[2], k.shape[2]
        logits = (q @ k.transpose(-1, -2)) * self.scale
        bias = self.positional.logit_bias(q, k, q_positions, k_positions)
        if bias is not None:
            logits = logits + bias
        if self.causal:
            # new query i sees the k_len - q_len cached keys and new keys 0 .. i
            future = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).triu(k_len - q_len + 1)
            logits = logits.masked_fill(future, float("-inf"))
        softmax_dtype = torch.promote_types(logits.dtype, torch.float32)
        probs = torch.softmax(logits, dim=-1, dtype=softmax_dtype).to(v.dtype)
        z = probs @ v
        value_term = self.positional.value_term(probs, q_positions, k_positions)
        if value_term is not None:
            z = z + value_term
        return z, probs


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

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Apply the block to ``x`` (``[batch, T, dim]``).

        The arguments, checks and return values are those of :meth:`MultiHeadAttention.forward`, with the
        block's output in place of the attention layer's.
        """
        x = self.attention._check_input(x)
        _check_cache(cache, self.attention, x.shape[0], x.device)
        past = 0 if cache is None else cache.tokens_seen
        positions = _check_positions(positions, x.shape[1], x.device, first=past)
        out, probs = self._run(x, positions, cache)
        return (out, probs) if return_attention else out

    def _run(
        self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attended, probs = self.attention._attend(self.attention_norm(x), positions, cache)
        x = x + attended
        return x + self.mlp(self.mlp_norm(x)), probs


class TinyDecoder(nn.Module):
    """A small decoder-only language model with the positional encoding chosen by name.

    Token embedding, then the input encoding (for ``"sinusoidal"`` and ``"learned"``), ``num_layers``
    :class:`TransformerBlock` s, a final LayerNorm and a linear head to vocabulary logits. Shaw et al.'s and
    Transformer-XL's encodings (:data:`PER_LAYER_ENCODINGS`) get one instance, with its own parameters, per
    layer; every other encoding inside attention is one module shared by all layers that use it (T5's bias
    table, as in Raffel et al. 2020, and the parameter-free RoPE, xPos, ALiBi and NoPE), so
    ``model.blocks[i].attention.positional`` is the same object for every such ``i``. Sharing a
    parameter-free module changes neither the parameters nor the ``state_dict`` keys.

    ``encoding`` may also name one encoding per layer, for models whose layers differ: Llama 4's iRoPE
    (Meta 2025) is ``["rope", "rope", "rope", "nope"] * k``, RoPE in three layers of four and no positional
    encoding in the fourth (:func:`posenc_lib.layer_patterns.llama4_rope_layers` gives that pattern).

    :meth:`generate` decodes greedily with a :class:`KVCache` per layer; see the module docstring for what
    a cache stores and for the encodings' support.

    Args:
        vocab_size: number of token ids.
        dim: model width.
        num_heads: attention heads per layer.
        num_layers: number of blocks.
        encoding: one of :data:`ENCODING_NAMES`, or a list of ``num_layers`` of them, one per layer, each an
            encoding that acts inside attention (not one of :data:`INPUT_ENCODINGS`, which act once, on the
            input).
        max_positions: table size for ``"learned"`` (a position outside it is a ``ValueError``).
        causal: causal masking (``True`` for a language model; a cache needs it).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        num_heads: int,
        num_layers: int,
        *,
        encoding: str | Sequence[str] = "rope",
        max_positions: int | None = None,
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        num_layers = check_positive_int("num_layers", num_layers)
        self.encoding = _check_encoding_names(encoding, num_layers)
        names = [self.encoding] * num_layers if isinstance(self.encoding, str) else list(self.encoding)
        sizes = {"dim": dim, "num_heads": num_heads, "max_positions": max_positions, "causal": causal}
        self.token_embedding = nn.Embedding(vocab_size, dim)
        if self.encoding in INPUT_ENCODINGS:
            self.input_encoding = build_positional_encoding(self.encoding, **sizes)
            layer_encodings = [NoPE()] * num_layers
        else:
            self.input_encoding = NoPE()
            shared: dict[str, PositionalEncoding] = {}  # built once each, in the order of first use
            layer_encodings = []
            for name in names:
                if name in PER_LAYER_ENCODINGS:
                    layer_encodings.append(build_positional_encoding(name, **sizes))
                else:
                    if name not in shared:
                        shared[name] = build_positional_encoding(name, **sizes)
                    layer_encodings.append(shared[name])
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, positional=pe, causal=causal) for pe in layer_encodings
        )
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def new_cache(self) -> list[KVCache]:
        """Return an empty cache for this model: one :class:`KVCache` per layer."""
        return [KVCache() for _ in self.blocks]

    def forward(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor | None = None,
        *,
        cache: list[KVCache] | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the logits ``[batch, T, vocab_size]`` for integer ``tokens`` ``[batch, T]``.

        Args:
            tokens: token ids in ``[0, vocab_size)``, ``[batch, T]``.
            positions: 1-D integer tensor of length ``T``; default ``t, …, t + T - 1`` with ``t`` the number
                of tokens the cache has seen, :attr:`KVCache.tokens_seen` (``0 … T - 1`` without a cache).
            cache: the model's cache from :meth:`new_cache` (or one cache per layer built otherwise, for
                example :class:`~posenc_lib.streaming.SinkKVCache` s); the new tokens' keys and values are
                appended to it, layer by layer, and the tokens attend to everything cached before them.
            return_attention: also return the attention probabilities of every layer.

        Returns:
            The logits; with ``return_attention``, ``(logits, probs)`` where ``probs[l]`` is layer ``l``'s
            ``[batch, heads, T, T_k]`` (``T_k``: ``T`` plus the tokens cached before).

        Raises:
            TypeError: if an argument has the wrong type.
            ValueError: if a shape does not fit, a token id is outside ``[0, vocab_size)``, (``"learned"``)
                a position is outside ``[0, max_positions)``, or a cache cannot serve this model (a
                :class:`~posenc_lib.streaming.SinkKVCache` that re-indexes positions, with an input encoding).
        """
        check_integer_tensor("tokens", tokens)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, T], got {tuple(tokens.shape)}")
        self._check_model_cache(cache, tokens)
        past = 0 if cache is None else cache[0].tokens_seen
        positions = _check_positions(positions, tokens.shape[1], tokens.device, first=past)
        self._check_token_ids(tokens)
        logits, probs = self._decode(tokens, positions, cache)
        return (logits, probs) if return_attention else logits

    @torch.no_grad()
    def generate(
        self,
        tokens: torch.Tensor,
        max_new_tokens: int,
        *,
        start_position: int = 0,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Greedy decoding: append ``max_new_tokens`` tokens, each the most likely next one.

        With ``use_cache`` (the default) the prompt runs through the model once, filling one
        :class:`KVCache` per layer, and every later step feeds only the newest token. ``use_cache=False``
        recomputes the whole sequence at every step instead, which gives the same tokens; it is the
        reference the cache is checked against. Gradients are not recorded.

        Args:
            tokens: the prompt, token ids ``[batch, T]`` with ``T >= 1``.
            max_new_tokens: number of tokens to generate, ``>= 0``.
            start_position: position of the first prompt token; the tokens follow at consecutive positions.
            use_cache: decode with a KV cache (``True``) or by full recomputation (``False``).

        Returns:
            ``[batch, T + max_new_tokens]``: the prompt followed by the generated tokens.

        Raises:
            TypeError: if an argument has the wrong type.
            ValueError: if the prompt is empty or has a token id outside ``[0, vocab_size)``, or
                (``"learned"``) a position the model would need lies outside ``[0, max_positions)``.
        """
        check_integer_tensor("tokens", tokens)
        if tokens.ndim != 2 or tokens.shape[1] < 1:
            raise ValueError(f"tokens must have shape [batch, T] with T >= 1, got {tuple(tokens.shape)}")
        max_new_tokens = check_non_negative_int("max_new_tokens", max_new_tokens)
        if isinstance(start_position, bool) or not isinstance(start_position, int):
            raise TypeError(f"start_position must be an integer, got {start_position!r}")
        use_cache = check_bool("use_cache", use_cache)
        self._check_token_ids(tokens)
        if isinstance(self.input_encoding, LearnedPositionalEmbedding):
            # the last generated token is returned, never fed back
            last = start_position + tokens.shape[1] + max(max_new_tokens, 1) - 2
            size = self.input_encoding.max_positions
            if start_position < 0 or last >= size:
                raise ValueError(
                    f"generating {max_new_tokens} tokens after a prompt of {tokens.shape[1]} from "
                    f"start_position={start_position} needs positions {start_position} to {last}, but the "
                    f"learned table has max_positions={size} rows (positions 0 to {size - 1})"
                )
        generated = [tokens]
        cache = self.new_cache() if use_cache else None
        sequence, new_tokens = tokens, tokens
        for _ in range(max_new_tokens):
            if use_cache:
                first = start_position + len(cache[0])
                positions = torch.arange(first, first + new_tokens.shape[1], device=tokens.device)
                logits, _ = self._decode(new_tokens, positions, cache)
            else:
                positions = torch.arange(
                    start_position, start_position + sequence.shape[1], device=tokens.device
                )
                logits, _ = self._decode(sequence, positions, None)
            new_tokens = logits[:, -1].argmax(-1, keepdim=True)
            generated.append(new_tokens)
            sequence = torch.cat([sequence, new_tokens], dim=1)
        return torch.cat(generated, dim=1)

    def _decode(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: list[KVCache] | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The unchecked model: return the logits and every layer's attention probabilities."""
        x = self.input_encoding.embed(self.token_embedding(tokens), positions)
        layer_caches = [None] * len(self.blocks) if cache is None else cache
        probs = []
        for block, layer_cache in zip(self.blocks, layer_caches, strict=True):
            x, layer_probs = block._run(x, positions, layer_cache)
            probs.append(layer_probs)
        return self.head(self.final_norm(x)), probs

    def _check_model_cache(self, cache: object, tokens: torch.Tensor) -> None:
        if cache is None:
            return
        if not isinstance(cache, list) or len(cache) != len(self.blocks):
            raise TypeError(
                f"cache must be None or a list of {len(self.blocks)} KVCache objects, one per layer "
                f"(model.new_cache()), got {type(cache).__name__}"
                + (f" of length {len(cache)}" if isinstance(cache, list) else "")
            )
        if len({id(layer_cache) for layer_cache in cache}) != len(cache):
            raise ValueError("cache must hold a different KVCache for each layer (use model.new_cache())")
        for block, layer_cache in zip(self.blocks, cache, strict=True):
            _check_cache(layer_cache, block.attention, tokens.shape[0], tokens.device)
            layer_cache._check_decoder(self)
        seen = [layer_cache.tokens_seen for layer_cache in cache]
        if len(set(seen)) != 1:
            raise ValueError(
                f"cache's layers have seen different numbers of tokens, {seen}: a cache must be filled by "
                "this model's forward only"
            )

    def _check_token_ids(self, tokens: torch.Tensor) -> None:
        """Check that every token id lies in ``[0, vocab_size)`` (one read of the values)."""
        if tokens.numel() and values_readable(tokens):
            smallest, largest = torch.stack(torch.aminmax(tokens)).tolist()
            if smallest < 0 or largest >= self.vocab_size:
                raise ValueError(
                    f"tokens must be ids in [0, vocab_size) = [0, {self.vocab_size}), got ids from "
                    f"{smallest} to {largest}"
                )


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


def _rotate_for_cache(
    positional: PositionalEncoding, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cache: KVCache
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``rotate`` hook for new tokens whose keys join ``cache``, with xPos's centre fixed per cache."""
    if not isinstance(positional, XPos) or positional.centre is not None:
        return positional.rotate(q, k, positions, positions)
    if cache._xpos_with_centre is None:
        if positions.numel() and values_readable(positions):
            lowest, highest = torch.stack(torch.aminmax(positions)).tolist()
            centre = (lowest + highest + 1) // 2  # the default centre of these positions
        else:  # no values to read (meta device, torch.compile, torch.func): any fixed centre cancels
            centre = 0
        cache._xpos_with_centre = copy.copy(positional)
        cache._xpos_with_centre.centre = centre
    return cache._xpos_with_centre.rotate(q, k, positions, positions)


def _check_positions(
    positions: object, seq_len: int, device: torch.device, *, first: int = 0
) -> torch.Tensor:
    """Return 1-D integer ``positions`` of length ``seq_len`` on ``device``; default ``first, first+1, …``."""
    if positions is None:
        return torch.arange(first, first + seq_len, device=device)
    check_integer_tensor("positions", positions)
    if positions.shape != (seq_len,):
        raise ValueError(
            f"positions must be a 1-D tensor of length T = {seq_len}, got shape {tuple(positions.shape)}"
        )
    return positions.to(device)


def _check_encoding_names(encoding: object, num_layers: int) -> str | tuple[str, ...]:
    """A name of :data:`ENCODING_NAMES`, or a tuple of ``num_layers`` names of encodings inside attention."""
    if isinstance(encoding, str):
        return check_choice("encoding", encoding, ENCODING_NAMES)
    if not isinstance(encoding, Sequence):
        raise TypeError(
            f"encoding must be a name or a list of names, one per layer, got {type(encoding).__name__}"
        )
    if len(encoding) != num_layers:
        raise ValueError(
            f"encoding as a list must name one encoding per layer, num_layers = {num_layers}; "
            f"got {len(encoding)} names"
        )
    inside_attention = tuple(name for name in ENCODING_NAMES if name not in INPUT_ENCODINGS)
    for name in encoding:
        check_choice("each entry of encoding", name, inside_attention)
    return tuple(encoding)


def _check_cache(cache: object, attention: MultiHeadAttention, batch: int, device: torch.device) -> None:
    """Check that ``cache`` is ``None`` or a :class:`KVCache` that ``attention`` can extend by a batch."""
    if cache is None:
        return
    if not isinstance(cache, KVCache):
        raise TypeError(f"cache must be a KVCache or None, got {type(cache).__name__}")
    if not attention.causal:
        raise ValueError(
            "cache needs causal attention (causal=True): with bidirectional attention, earlier tokens would "
            "have to attend to the new ones, so their cached outputs would change"
        )
    if cache.keys is None:
        return
    expected = (batch, attention.num_heads, attention.head_dim)
    found = (cache.keys.shape[0], cache.keys.shape[1], cache.keys.shape[3])
    if found != expected:
        raise ValueError(
            f"cache holds keys of shape {tuple(cache.keys.shape)} [batch, heads, T, head_dim], which do not "
            f"fit this layer and input: expected batch, heads, head_dim = {expected}"
        )
    if cache.keys.device != device:
        raise ValueError(
            f"cache is on {cache.keys.device} but the input is on {device}; they must be on one device"
        )
