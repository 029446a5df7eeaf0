r"""Streaming past the context: a rolling KV cache with attention sinks (StreamingLLM).

Xiao, Tian, Chen, Han, Lewis (2023), *Efficient Streaming Language Models with Attention Sinks*,
arXiv:2309.17453 (ICLR 2024).

A decoder that keeps every key and value grows its cache, and its cost per token, without end. *Window
attention* keeps only the :math:`W` most recent tokens; Xiao et al. find that its perplexity explodes as
soon as the first tokens leave the window, because trained models send a large share of every query's
attention to the first few tokens, whatever they say (the *attention sinks*: the softmax must put its mass
somewhere). StreamingLLM keeps the first :math:`S` tokens (4 in the paper) as well as the window.

**Which tokens are kept.** Counting the tokens of the stream :math:`0, 1, 2, \dots` in their order of
arrival, the query of token :math:`i` attends to

.. math::

    K_i = \{\, j \le i : j < S \ \text{or}\ j > i - W \,\}, \qquad n_i = |K_i| = \min(i + 1,\ S + W):

the sinks and the :math:`W` most recent tokens, itself included, so at most :math:`S + W` keys (the cache
size of the paper, e.g. :math:`4 + 1020`). Window attention is :math:`S = 0`; to compare it with a cache
of the same size, give it :math:`W + S`. (The authors' perplexity script, ``examples/eval_long_ppl.py``,
trims the cache to :math:`S + W` after each token, so its queries see one key more: :math:`W + 1` here.)

**Positions by place in the cache** (§3.2; misconception 16 of the course). StreamingLLM gives the kept
tokens the positions of their places in the cache, not in the text: the :math:`r`-th token of :math:`K_i`
(in order, from 0) has position :math:`\rho_i(j) = r`, so the sinks keep :math:`0 \dots S-1`, the window
follows at :math:`S, S+1, \dots`, and the query has :math:`n_i - 1`. The paper's example: with tokens
0-3 and 6-8 in the cache and token 9 being decoded (:math:`S = W = 4`), the positions are 0-7, not 0-3
and 6-9. A key's position therefore changes while it stays in the cache: keys are cached *before* the
rotation of RoPE and rotated at every step at their current place (as in the authors' code,
``streaming_llm/pos_shift/modify_llama.py`` of mit-han-lab/streaming-llm). For RoPE the score of query
:math:`i` and kept key :math:`j` is

.. math::

    \langle R_{n_i - 1}\, q_i,\ R_{\rho_i(j)}\, k_j \rangle
    = \langle q_i,\ R_{\rho_i(j) - (n_i - 1)}\, k_j \rangle,
    \qquad \rho_i(j) - (n_i - 1) = \begin{cases} j - i & j \text{ in the window,} \\
    j - (n_i - 1) \ge -(S + W - 1) & j < S \text{ (a sink):} \end{cases}

re-indexing leaves every offset inside the window as in the text and caps the offset to the sinks at
:math:`S + W - 1`, inside the trained context when the cache is; at its original position a sink drifts
to offset :math:`-i`, past the trained context once the stream is long enough. ALiBi's bias
:math:`-m_h\,(\rho_i(i) - \rho_i(j))` and the other relative methods change the same way.

**A long stream without its cost.** Only the offsets to the sinks tell the two position rules apart, and
only once they pass the trained context does keeping original positions go wrong: on SmolLM2 (trained
context 8192) that takes a stream of more than 8192 tokens. For RoPE it can be simulated on a short one:
give every non-sink token :math:`j \ge S` the position :math:`j + \Delta` (the sinks keep
:math:`0 \dots S-1`). Offsets inside the window stay :math:`(j + \Delta) - (i + \Delta) = j - i`; offsets to
the sinks become :math:`s - (i + \Delta)`, as for a query :math:`\Delta` tokens further into the stream
(``position_offset`` of :func:`streaming_nll`; with :class:`SinkKVCache`, pass such positions to the layer).

This module gives the rolling cache twice:

* :class:`SinkKVCache`, a :class:`~posenc_lib.transformer.KVCache` for posenc_lib's own
  :class:`~posenc_lib.transformer.MultiHeadAttention` and :class:`~posenc_lib.transformer.TinyDecoder`,
  with any encoding that acts inside attention: it stores keys before ``rotate`` and, for every query,
  calls the encoding's hooks at the positions of :math:`K_i` (``position_mode="cache"``) or at the tokens'
  original positions (``"original"``, the misconception, for comparison);
* :func:`streaming_nll`, the same rolling cache for a Hugging Face Llama-architecture model (SmolLM2 from
  :func:`posenc_lib.pretrained.load_smollm2`): the per-token negative log-likelihood of a token stream
  under dense attention, window attention, or a window with sinks, and the attention mass on the sinks.
  It runs the model's own modules (embedding, norms, projections, MLPs, head) and does not import
  transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from posenc_lib._validation import (
    check_choice,
    check_integer_tensor,
    check_non_negative_int,
    check_positive_int,
    values_readable,
)
from posenc_lib.nope import NoPE
from posenc_lib.rope import RotaryEmbedding
from posenc_lib.rope_spec import RopeSpec
from posenc_lib.transformer import KVCache, MultiHeadAttention, TinyDecoder

POSITION_MODES = ("cache", "original")
"""``"cache"``: positions by place in the rolling cache (StreamingLLM); ``"original"``: place in the text."""

# RoPE scalings whose frequencies change with the sequence length: a rolling cache has no one length.
_LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def kept_token_indices(step: int, *, num_sinks: int, window: int | None) -> torch.Tensor:
    r"""The tokens that the query of token ``step`` attends to, :math:`K_i`.

    :math:`K_i = \{j \le i : j < S \text{ or } j > i - W\}` for :math:`i` = ``step``.

    Tokens are counted from 0 in their order of arrival; with ``window=None`` every earlier token is kept
    (dense attention). With ``position_mode="cache"`` the kept token ``K_i[r]`` has position ``r``.

    Args:
        step: :math:`i`, the number of tokens before the query's own, ``>= 0``.
        num_sinks: :math:`S`, the first tokens always kept, ``>= 0``.
        window: :math:`W`, the most recent tokens kept (the query's own included), ``>= 1``, or ``None``.

    Returns:
        The int64 indices :math:`K_i` in increasing order, :math:`n_i = \min(i + 1, S + W)` of them.

    Raises:
        TypeError: an argument is not an integer (or ``None`` for ``window``).
        ValueError: a negative ``step`` or ``num_sinks``, or a ``window`` below 1.
    """
    step = check_non_negative_int("step", step)
    num_sinks = check_non_negative_int("num_sinks", num_sinks)
    window = None if window is None else check_positive_int("window", window)
    if window is None or step < num_sinks + window:
        return torch.arange(step + 1)
    return torch.cat([torch.arange(num_sinks), torch.arange(step - window + 1, step + 1)])


class SinkKVCache(KVCache):
    r"""A rolling KV cache that keeps :math:`S` sink tokens and a window of :math:`W` recent tokens.

    StreamingLLM's cache (Xiao et al. 2023, §3.2; see the module docstring) for one layer of
    :class:`~posenc_lib.transformer.MultiHeadAttention`; use one per layer of a
    :class:`~posenc_lib.transformer.TinyDecoder` (``[SinkKVCache(4, 60) for _ in model.blocks]``). The query
    of the :math:`i`-th token (counted from 0 in order of arrival) attends to the first ``num_sinks`` tokens
    and to the ``window`` most recent ones, itself included: at most ``num_sinks + window`` keys, which is
    also the most the cache holds after a call. Tokens arriving together in one call are processed one
    after another, each with its own window, so a call with :math:`T` tokens gives the outputs of
    :math:`T` calls with one token each.

    Keys are stored as projected, *before* the encoding's ``rotate`` hook, and values as computed. For each
    query the cache calls the encoding's hooks (``rotate``, ``logit_bias``, ``value_term``) on the kept keys
    at

    * ``position_mode="cache"`` (StreamingLLM): the places in the cache, :math:`0 \dots n_i - 1`, the query
      at :math:`n_i - 1`;
    * ``position_mode="original"``: the positions the tokens were given (the ``positions`` argument of the
      layer, by default :math:`0, 1, 2, \dots`), the query at its own: what a cache that only evicts would
      compute, the misconception that StreamingLLM keeps original positions. To place the window
      :math:`\Delta` tokens further from the sinks, as after a longer stream, give the layer the positions
      :math:`0 \dots S-1` for the sinks and :math:`j + \Delta` for the later tokens (see
      ``position_offset`` of :func:`streaming_nll`).

    With ``num_sinks=0`` the two agree for every relative encoding (RoPE, ALiBi, T5, Shaw,
    Transformer-XL, NoPE), as all positions shift by the same amount; xPos, whose scales also depend on the
    centre of the positions, agrees up to rounding.

    **Which encodings.** Any encoding that acts inside attention works in both modes, because every
    position is given to the hooks at every step: RoPE in either layout, NoPE, ALiBi, T5, Shaw et al.,
    Transformer-XL, and xPos, whose centre is chosen afresh at every step as in a recomputation (so the
    fixed centre of :attr:`~posenc_lib.transformer.KVCache.xpos_centre` is not needed: it stays ``None``).
    An input encoding (``"sinusoidal"``, ``"learned"`` of :class:`~posenc_lib.transformer.TinyDecoder`) is
    added to each token once, at its position when it enters, and cannot be moved to a new place later:
    :class:`~posenc_lib.transformer.TinyDecoder` refuses such a model with ``position_mode="cache"`` (a
    ``ValueError``); with ``"original"`` it decodes, with a learned table's range check on every position.

    With ``return_attention``, the probabilities of one call are ``[batch, heads, T, n]`` with ``n`` the
    number of cached tokens after the call: row :math:`t` holds the weights of the :math:`t`-th new query
    over its cache slots :math:`0 \dots n_t - 1` (the sinks first) and zeros after them while the cache
    fills.

    Args:
        num_sinks: :math:`S \ge 0`, the first tokens kept for ever (4 in the paper).
        window: :math:`W \ge 1`, the most recent tokens kept, the newest query's own included.
        position_mode: ``"cache"`` or ``"original"`` (see above).

    Attributes:
        keys: ``[batch, heads, n, head_dim]`` *before* ``rotate``, or ``None`` while empty.
        values: ``[batch, heads, n, head_dim]``, or ``None`` while empty.
        positions: the original int64 positions of the kept tokens, ``[n]``, or ``None`` while empty.
    """

    def __init__(self, num_sinks: int, window: int, *, position_mode: str = "cache") -> None:
        super().__init__()
        self.num_sinks = check_non_negative_int("num_sinks", num_sinks)
        self.window = check_positive_int("window", window)
        self.position_mode = check_choice("position_mode", position_mode, POSITION_MODES)
        self._tokens_seen = 0

    @property
    def capacity(self) -> int:
        """``num_sinks + window``: the most tokens held after a call, and the most keys a query sees."""
        return self.num_sinks + self.window

    @property
    def tokens_seen(self) -> int:
        """The number of tokens appended so far, evicted ones included."""
        return self._tokens_seen

    @property
    def attention_positions(self) -> torch.Tensor | None:
        """Positions the encoding gets for the cached keys (``0 … n - 1``, or the original ones)."""
        if self.positions is None:
            return None
        if self.position_mode == "original":
            return self.positions
        return torch.arange(len(self), device=self.positions.device)

    def __repr__(self) -> str:
        return (
            f"SinkKVCache(num_sinks={self.num_sinks}, window={self.window}, "
            f"position_mode={self.position_mode!r}, tokens={len(self)}, tokens_seen={self.tokens_seen})"
        )

    def _append(
        self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Append the new tokens, evict the oldest non-sink ones beyond the capacity, return what is kept."""
        super()._append(keys, values, positions)
        self._tokens_seen += keys.shape[-2]
        size = len(self)
        if size > self.capacity:
            kept = torch.cat([torch.arange(self.num_sinks), torch.arange(size - self.window, size)]).to(
                self.keys.device
            )
            self.keys = self.keys.index_select(-2, kept)
            self.values = self.values.index_select(-2, kept)
            self.positions = self.positions.index_select(0, kept.to(self.positions.device))
        return self.keys, self.values, self.positions

    def _attend(
        self,
        attention: MultiHeadAttention,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One new token at a time: store its key and value, evict, and attend at the kept keys' positions."""
        outputs, rows = [], []
        for t in range(q.shape[2]):
            keys, values, _ = self._append(k[:, :, t : t + 1], v[:, :, t : t + 1], positions[t : t + 1])
            key_positions = self.attention_positions
            query_position = key_positions[-1:]
            rotated_q, rotated_keys = attention.positional.rotate(
                q[:, :, t : t + 1], keys, query_position, key_positions
            )
            z, probs = attention._weigh(rotated_q, rotated_keys, values, query_position, key_positions)
            outputs.append(z)
            rows.append(probs)
        width = len(self)
        probs = torch.cat([torch.nn.functional.pad(row, (0, width - row.shape[-1])) for row in rows], dim=2)
        return torch.cat(outputs, dim=2), probs

    def _check_decoder(self, model: TinyDecoder) -> None:
        if self.position_mode == "cache" and not isinstance(model.input_encoding, NoPE):
            raise ValueError(
                f"SinkKVCache(position_mode='cache') cannot serve a TinyDecoder with the input encoding "
                f"{model.encoding!r}: it is added to each token once, at its position on entry, and cannot "
                "be moved to the token's place in the cache later; use position_mode='original' or an "
                "encoding inside attention"
            )


@dataclass(frozen=True)
class StreamingResult:
    r"""What :func:`streaming_nll` measured on one stream of :math:`N` tokens.

    Attributes:
        nll: float64 ``[N - 1]``: entry :math:`i` is :math:`-\log p(x_{i+1} \mid x_{K_i})`, the negative
            log-likelihood of the next token given the tokens kept at step :math:`i`.
        sink_attention: float64 ``[layers, heads, N]``: for each layer and query head, the attention weight
            the query of token :math:`i` gives the sinks, :math:`\sum_{j < \min(S, i + 1)} a_{ij}` (all zeros
            when ``num_sinks`` is 0). With ``window=None`` and ``num_sinks=S`` it is the mass that dense
            attention gives the first :math:`S` tokens.
        window: :math:`W`, or ``None`` for dense attention.
        num_sinks: :math:`S`.
        position_mode: ``"cache"`` or ``"original"``.
        position_offset: :math:`\Delta`, added to the original positions of the non-sink tokens (0: none).
    """

    nll: torch.Tensor
    sink_attention: torch.Tensor
    window: int | None
    num_sinks: int
    position_mode: str
    position_offset: int = 0

    @property
    def perplexity(self) -> float:
        r"""The perplexity over the whole stream, :math:`\exp(\frac{1}{N-1} \sum_i \mathrm{nll}_i)`."""
        return math.exp(float(self.nll.mean()))


@torch.no_grad()
def streaming_nll(
    model: torch.nn.Module,
    ids: torch.Tensor,
    *,
    window: int | None,
    num_sinks: int = 0,
    position_mode: str = "cache",
    position_offset: int = 0,
    chunk_size: int = 128,
) -> StreamingResult:
    r"""Stream token ids through a Llama-architecture model with a rolling cache; per-token NLL and sink mass.

    The query of token :math:`i` attends to the kept tokens :math:`K_i` (the first ``num_sinks`` and the
    ``window`` most recent, see the module docstring; all earlier tokens with ``window=None``), each
    layer's keys and values being the ones computed when their token arrived, as in a KV cache (Xiao et al.
    2023). ``window=None`` gives the model's own dense causal attention; ``num_sinks=0`` window attention;
    ``num_sinks=4`` StreamingLLM. ``position_mode="cache"`` gives the kept tokens their places in the cache
    as positions (StreamingLLM, §3.2); ``"original"`` keeps their positions in the text.

    The model is run through its modules, in the model's dtype and on its device: ``embed_tokens``, then
    per layer ``x + o_proj(attention(input_layernorm(x)))`` and ``x + mlp(post_attention_layernorm(x))``,
    then ``norm`` and ``lm_head``, with grouped-query attention (query head :math:`h` reads key-value head
    :math:`\lfloor h / g \rfloor`, :math:`g` query heads per key-value head), scores scaled by
    ``self_attn.scaling`` and a float32 softmax, as transformers' ``LlamaForCausalLM`` computes (no
    attention dropout: evaluation). RoPE comes from the config
    (:meth:`posenc_lib.rope_spec.RopeSpec.from_config`, angles in float64).

    **How positions are applied.** Re-rotating every cached key at every step (StreamingLLM's code)
    costs a rotation of :math:`S + W` keys per token and layer. Because a RoPE score depends only on the
    difference of the two positions, this function rotates each key once, at its original position
    :math:`j`, and each query twice: at its original position :math:`i` for the window keys (offset
    :math:`j - i`, as in the cache) and at :math:`n_i - 1` for the sinks (offset :math:`s - (n_i - 1)`,
    as in the cache; at :math:`i` with ``position_mode="original"``, see ``position_offset``). This equals
    re-rotation at the cache positions up to rounding, and lets many queries run in one call, each with its
    own :math:`K_i` by a mask: ``chunk_size`` sets how many (any value gives the same result, up to
    rounding; larger is faster and uses more memory).

    **Original positions after a longer stream** (``position_offset`` :math:`\Delta > 0`, only with
    ``position_mode="original"``, a ``window`` and ``num_sinks >= 1``). The positions become those of a
    cache that keeps original positions, :math:`\Delta` tokens later in the stream: the sinks keep
    :math:`0 \dots S-1` and token :math:`j \ge S` gets :math:`j + \Delta`. With RoPE this is the same
    computation, not an approximation of it, because a score depends on the positions only through their
    difference, :math:`\langle R_m q, R_n k\rangle = \langle q, R_{n-m} k\rangle`, and nothing else in a
    Llama layer (norms, projections, values, MLP) sees a position: scores inside the window keep the
    offsets :math:`j - i`, and scores of query :math:`i \ge S` with sink :math:`s` get the offset
    :math:`s - i - \Delta`, in every layer. So a stream of :math:`N` tokens measures what keeping original
    positions does :math:`\Delta` tokens later, e.g. past the trained context, at the cost of :math:`N`
    tokens. What is not simulated is the text: the window holds the stream's tokens, not those that
    would have come :math:`\Delta` tokens later, and the tokens just after the sinks see no text between
    the sinks and themselves (their window is still filling), which reaches, through :math:`L` layers, the
    next :math:`L\,(W - 1)` tokens at most, at every :math:`\Delta` alike. From token
    :math:`S + L\,(W - 1)` on, the result is that of the same text with :math:`\Delta` tokens more between
    the sinks and token :math:`S` (the tests check it). With ``position_mode="cache"`` positions do not
    grow with the stream (the sinks stay at most :math:`S + W - 1` away), so there is nothing to simulate;
    without sinks (``num_sinks=0``) a shift of every position changes no RoPE score; with ``window=None``
    no token is evicted, so the :math:`\Delta` skipped tokens would be in the cache: each of these is a
    ``ValueError``. Angles are computed in float64 at every position, so a large :math:`\Delta` loses no
    precision (transformers computes them in float32).

    Args:
        model: a transformers Llama-architecture causal LM (``config.model_type == "llama"``, e.g.
            SmolLM2), with ``model.model.embed_tokens``, ``.layers``, ``.norm`` and ``model.lm_head``.
        ids: the stream, a 1-D integer tensor of :math:`N \ge 2` token ids.
        window: :math:`W \ge 1` recent tokens (the query's own included), or ``None`` for dense attention.
        num_sinks: :math:`S \ge 0` first tokens kept.
        position_mode: ``"cache"`` or ``"original"``.
        position_offset: :math:`\Delta \ge 0`, added to the original positions of the tokens after the
            sinks (see above); non-zero only with ``position_mode="original"``, a ``window`` and sinks.
        chunk_size: tokens per call of the layers, ``>= 1``.

    Returns:
        A :class:`StreamingResult` (per-token NLL, sink attention per layer and head), on the CPU.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: ``model`` is not a Llama-architecture causal LM, its RoPE changes with the sequence
            length (``dynamic``, ``longrope``), ``ids`` is not 1-D with at least 2 ids in
            ``[0, vocab_size)``, an integer argument is out of range, or ``position_offset`` is non-zero
            with ``position_mode="cache"``, ``window=None`` or ``num_sinks=0``.
    """
    config = _check_llama(model)
    ids = check_integer_tensor("ids", ids)
    if ids.ndim != 1 or ids.shape[0] < 2:
        raise ValueError(f"ids must be a 1-D tensor of at least 2 token ids, got shape {tuple(ids.shape)}")
    vocab_size = model.lm_head.out_features
    if values_readable(ids):
        smallest, largest = (int(value) for value in torch.aminmax(ids))
        if smallest < 0 or largest >= vocab_size:
            raise ValueError(
                f"ids must be token ids in [0, vocab_size) = [0, {vocab_size}), got ids from {smallest} to "
                f"{largest}"
            )
    window = None if window is None else check_positive_int("window", window)
    num_sinks = check_non_negative_int("num_sinks", num_sinks)
    position_mode = check_choice("position_mode", position_mode, POSITION_MODES)
    position_offset = _check_position_offset(position_offset, position_mode, window, num_sinks)
    chunk_size = check_positive_int("chunk_size", chunk_size)
    spec = RopeSpec.from_config(config)
    if spec.rope_type in _LENGTH_DEPENDENT_ROPE:
        raise ValueError(
            f"the model's RoPE scaling {spec.rope_type!r} changes its frequencies with the sequence length, "
            "which a rolling cache does not have; streaming_nll supports fixed frequencies only"
        )
    rotary = spec.rotary_embedding()

    decoder = model.model
    layers = decoder.layers[: config.num_hidden_layers]
    device = decoder.embed_tokens.weight.device
    ids = ids.to(device)
    length = ids.shape[0]
    layer_keys: list[torch.Tensor | None] = [None] * len(layers)  # rotated at the original positions
    layer_values: list[torch.Tensor | None] = [None] * len(layers)
    kept_positions = torch.zeros(0, dtype=torch.int64, device=device)  # of the cached tokens, increasing
    nll = torch.empty(length - 1, dtype=torch.float64)
    sink_attention = torch.zeros(len(layers), config.num_attention_heads, length, dtype=torch.float64)
    for first in range(0, length, chunk_size):
        last = min(first + chunk_size, length) - 1
        chunk = _Chunk.plan(first, last, kept_positions, num_sinks, window, position_mode, position_offset)
        hidden = decoder.embed_tokens(ids[first : last + 1])[None]
        for index, layer in enumerate(layers):
            hidden, keys, values, probs = _llama_layer(
                layer, hidden, layer_keys[index], layer_values[index], chunk, rotary, config
            )
            sink_mass = probs[..., : chunk.num_sink_keys].sum(-1).flatten(1, 2)[0]
            sink_attention[index, :, first : last + 1] = sink_mass.to(device="cpu", dtype=torch.float64)
            layer_keys[index], layer_values[index] = keys, values
        # keep what the next query, last + 1, attends to: the sinks and j > last + 1 - W
        kept_positions = chunk.key_positions
        if window is not None:
            needed = (kept_positions < num_sinks) | (kept_positions > last + 1 - window)
            kept_positions = kept_positions[needed]
            layer_keys = [keys[:, :, needed] for keys in layer_keys]
            layer_values = [values[:, :, needed] for values in layer_values]
        predicted = min(last, length - 2) - first + 1  # the stream's last token predicts nothing
        logits = model.lm_head(decoder.norm(hidden))[0, :predicted]
        log_probs = torch.log_softmax(logits.to(torch.float64), dim=-1)
        targets = ids[first + 1 : first + 1 + predicted, None]
        nll[first : first + predicted] = -log_probs.gather(-1, targets)[:, 0].cpu()
    return StreamingResult(
        nll=nll,
        sink_attention=sink_attention,
        window=window,
        num_sinks=num_sinks,
        position_mode=position_mode,
        position_offset=position_offset,
    )


def _check_position_offset(offset: object, position_mode: str, window: int | None, num_sinks: int) -> int:
    """Return ``position_offset`` as an int if it is 0, or positive where it means a longer stream."""
    offset = check_non_negative_int("position_offset", offset)
    if offset == 0:
        return offset
    if position_mode != "original":
        raise ValueError(
            f"position_offset={offset} needs position_mode='original': with 'cache' the positions are "
            "places in the cache, which do not grow with the stream"
        )
    if window is None:
        raise ValueError(
            f"position_offset={offset} needs a window: with window=None no token is evicted, so the "
            "skipped tokens would be in the cache"
        )
    if num_sinks == 0:
        raise ValueError(
            f"position_offset={offset} needs num_sinks >= 1: without sinks it shifts every position "
            "alike, which changes no RoPE score"
        )
    return offset


@dataclass(frozen=True)
class _Chunk:
    """The positions and the mask of one call of the layers of :func:`streaming_nll`."""

    query_positions: torch.Tensor  # [T]: the chunk's tokens, in the text
    key_positions: torch.Tensor  # [n]: the cached tokens, then the chunk's, in the text
    sink_query_positions: torch.Tensor  # [T]: where each query is rotated for its scores with the sinks
    visible: torch.Tensor  # [T, n]: key j in K_i
    num_sink_keys: int  # the first keys: every sink stays in the cache

    @classmethod
    def plan(
        cls,
        first: int,
        last: int,
        kept_positions: torch.Tensor,
        num_sinks: int,
        window: int | None,
        position_mode: str,
        position_offset: int,
    ) -> _Chunk:
        query_positions = torch.arange(first, last + 1, device=kept_positions.device)
        key_positions = torch.cat([kept_positions, query_positions])
        visible = key_positions <= query_positions[:, None]
        if window is not None:
            visible &= (key_positions < num_sinks) | (key_positions > query_positions[:, None] - window)
        if window is None or position_mode == "original":
            # i, or i + offset after the sinks: only the offsets to the sinks see the shift (window
            # scores depend on j - i alone, so those queries and keys stay at their positions)
            shift = torch.where(query_positions >= num_sinks, position_offset, 0)
            sink_query_positions = query_positions + shift
        else:  # n_i - 1, the query's place in the cache
            sink_query_positions = query_positions.clamp(max=num_sinks + window - 1)
        return cls(query_positions, key_positions, sink_query_positions, visible, min(num_sinks, last + 1))


def _llama_layer(
    layer: torch.nn.Module,
    hidden: torch.Tensor,
    past_keys: torch.Tensor | None,
    past_values: torch.Tensor | None,
    chunk: _Chunk,
    rotary: RotaryEmbedding,
    config: object,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Llama decoder layer on a chunk: ``(hidden, keys, values, probs)``, keys and values with the
    chunk's appended, probabilities ``[1, kv heads, g, T, n]``."""
    attention = layer.self_attn
    x = layer.input_layernorm(hidden)
    shape = (1, chunk.query_positions.shape[0], -1, attention.head_dim)
    q = attention.q_proj(x).view(shape).transpose(1, 2)
    keys = rotary(attention.k_proj(x).view(shape).transpose(1, 2), chunk.query_positions)
    values = attention.v_proj(x).view(shape).transpose(1, 2)
    if past_keys is not None:
        keys, values = torch.cat([past_keys, keys], dim=2), torch.cat([past_values, values], dim=2)
    # [1, kv heads, g, T, head_dim]: query head h reads key-value head h // g
    num_kv_heads = config.num_key_value_heads
    grouped_q = q.unflatten(1, (num_kv_heads, config.num_attention_heads // num_kv_heads))
    grouped_keys, grouped_values = keys[:, :, None], values[:, :, None]
    sinks = chunk.num_sink_keys
    scores = rotary(grouped_q, chunk.query_positions) @ grouped_keys[..., sinks:, :].transpose(-1, -2)
    if sinks:
        sink_q = rotary(grouped_q, chunk.sink_query_positions)
        scores = torch.cat([sink_q @ grouped_keys[..., :sinks, :].transpose(-1, -2), scores], dim=-1)
    scores = (scores * attention.scaling).masked_fill(~chunk.visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype)
    attended = (probs @ grouped_values).flatten(1, 2).transpose(1, 2).flatten(2)
    hidden = hidden + attention.o_proj(attended)
    hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return hidden, keys, values, probs


def _check_llama(model: object) -> object:
    """Return ``model.config`` if ``model`` is a transformers Llama-architecture causal LM, else raise."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    decoder = getattr(model, "model", None)
    has_parts = (
        isinstance(model, torch.nn.Module)
        and hasattr(model, "lm_head")
        and all(hasattr(decoder, name) for name in ("embed_tokens", "layers", "norm"))
    )
    if model_type != "llama" or not has_parts:
        raise ValueError(
            "model must be a transformers Llama-architecture causal LM (config.model_type 'llama', with "
            "model.embed_tokens, model.layers, model.norm and lm_head), such as the model of "
            f"posenc_lib.pretrained.load_smollm2(); got "
            f"{type(model).__name__} with model_type {model_type!r}"
        )
    return config
