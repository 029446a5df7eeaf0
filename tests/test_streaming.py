"""The rolling KV cache with attention sinks (StreamingLLM), for posenc_lib's attention and a Llama model.

Every step of a rolling cache is compared with a recomputation from scratch on the kept tokens: for one
attention layer, the layer itself on the kept tokens' inputs at positions ``0 .. n-1`` (or their original
positions); for a deeper model, each layer recomputed on the kept tokens' inputs to that layer (a token's
deeper inputs depend on the window it saw when it arrived, so recomputing the whole model on the kept token
ids is a different computation; the test shows it); for a Llama model, transformers' own model and decoder
layers.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from transformers import LlamaConfig, LlamaForCausalLM

from posenc_lib.alibi import ALiBi, alibi_bias
from posenc_lib.base import PositionalEncoding
from posenc_lib.nope import NoPE
from posenc_lib.relative import ShawRelativeEncoding
from posenc_lib.rope import RotaryEmbedding, apply_rope
from posenc_lib.streaming import (
    SinkKVCache,
    StreamingResult,
    kept_token_indices,
    streaming_nll,
)
from posenc_lib.t5 import T5RelativeBias
from posenc_lib.transformer import KVCache, MultiHeadAttention, TinyDecoder
from posenc_lib.transformer_xl import TransformerXLRelativeEncoding
from posenc_lib.xpos import XPos

DIM, HEADS, VOCAB = 16, 2, 11
HEAD_DIM = DIM // HEADS
ENCODINGS: dict[str, Callable[[], PositionalEncoding]] = {
    "nope": NoPE,
    "rope-half": lambda: RotaryEmbedding(HEAD_DIM),
    "rope-interleaved": lambda: RotaryEmbedding(HEAD_DIM, layout="interleaved"),
    "alibi": lambda: ALiBi(HEADS),
    "t5": lambda: T5RelativeBias(HEADS, model_dim=DIM),
    "shaw": lambda: ShawRelativeEncoding(HEAD_DIM, 3),
    "transformer_xl": lambda: TransformerXLRelativeEncoding(HEADS, HEAD_DIM),
    "xpos": lambda: XPos(HEAD_DIM),
}


def _attention(name: str, seed: int = 0) -> MultiHeadAttention:
    torch.manual_seed(seed)
    attention = MultiHeadAttention(DIM, HEADS, positional=ENCODINGS[name]()).double()
    for parameter in attention.positional.parameters():  # learned tables start at zero in some encodings
        torch.nn.init.normal_(parameter, std=0.5)
    return attention


def _inputs(seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, seq_len, DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _kept_positions(
    step: int, num_sinks: int, window: int, mode: str, original: torch.Tensor
) -> torch.Tensor:
    kept = kept_token_indices(step, num_sinks=num_sinks, window=window)
    return torch.arange(len(kept)) if mode == "cache" else original[kept]


# --- posenc_lib's attention -------------------------------------------------------------------------------


def test_kept_token_indices_are_the_sinks_and_the_window() -> None:
    assert kept_token_indices(0, num_sinks=2, window=3).tolist() == [0]
    assert kept_token_indices(4, num_sinks=2, window=3).tolist() == [0, 1, 2, 3, 4]  # 5 = S + W: all
    assert kept_token_indices(5, num_sinks=2, window=3).tolist() == [0, 1, 3, 4, 5]
    assert kept_token_indices(9, num_sinks=0, window=3).tolist() == [7, 8, 9]
    assert kept_token_indices(9, num_sinks=4, window=None).tolist() == list(range(10))


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(list(ENCODINGS)),
    num_sinks=st.integers(0, 3),
    window=st.integers(1, 5),
    seq_len=st.integers(1, 13),
    cuts=st.sets(st.integers(1, 12), max_size=3),
    mode=st.sampled_from(["cache", "original"]),
    first=st.integers(-20, 20),
)
def test_each_step_equals_recomputation_on_the_kept_tokens(
    name: str, num_sinks: int, window: int, seq_len: int, cuts: set[int], mode: str, first: int
) -> None:
    """Output and attention row of token i: the layer's last row on x[K_i] at positions 0..n-1 or original."""
    attention = _attention(name)
    x = _inputs(seq_len)
    original = torch.arange(first, first + seq_len)
    cache = SinkKVCache(num_sinks, window, position_mode=mode)
    outputs, rows = [], []
    bounds = [0, *sorted(cut for cut in cuts if cut < seq_len), seq_len]
    for a, b in itertools.pairwise(bounds):
        out, probs = attention(x[:, a:b], original[a:b], cache=cache, return_attention=True)
        assert probs.shape[:3] == (2, HEADS, b - a) and probs.shape[3] == len(cache) <= cache.capacity
        outputs.append(out)
        rows.extend(probs.unbind(2))
    for step in range(seq_len):
        kept = kept_token_indices(step, num_sinks=num_sinks, window=window)
        positions = _kept_positions(step, num_sinks, window, mode, original)
        expected, expected_probs = attention(x[:, kept], positions, return_attention=True)
        assert_close(torch.cat(outputs, dim=1)[:, step], expected[:, -1])
        assert_close(rows[step][..., : len(kept)], expected_probs[:, :, -1])
        assert not rows[step][..., len(kept) :].any()  # zeros after the slots of a cache still filling
    assert cache.tokens_seen == seq_len


def test_the_cache_evicts_the_oldest_tokens_after_the_sinks_and_stores_keys_before_rotation() -> None:
    attention = _attention("rope-half")
    x = _inputs(12)
    original = torch.arange(100, 112)
    cache = SinkKVCache(2, 3)
    assert len(cache) == 0 and cache.attention_positions is None and cache.capacity == 5
    with torch.no_grad():
        _, k, v = attention.qkv(x).view(2, 12, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
        for step in range(12):
            attention(x[:, step : step + 1], original[step : step + 1], cache=cache)
            kept = kept_token_indices(step, num_sinks=2, window=3)
            assert cache.positions.tolist() == original[kept].tolist()
            assert cache.attention_positions.tolist() == list(range(len(kept)))
            assert_close(cache.keys, k[:, :, kept])  # as projected: rotated only at attention time
            assert_close(cache.values, v[:, :, kept])
    assert cache.positions.tolist() == [100, 101, 109, 110, 111] and cache.tokens_seen == 12
    assert repr(cache) == (
        "SinkKVCache(num_sinks=2, window=3, position_mode='cache', tokens=5, tokens_seen=12)"
    )
    original_cache = SinkKVCache(2, 3, position_mode="original")
    attention(x, original, cache=original_cache)  # one call, the same eviction
    assert torch.equal(original_cache.attention_positions, original_cache.positions)
    assert original_cache.positions.tolist() == [100, 101, 109, 110, 111]


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_without_sinks_the_two_position_modes_agree(name: str) -> None:
    """Window attention shifts every kept position by the same amount: no relative method sees it."""
    attention, x = _attention(name), _inputs(14)
    with torch.no_grad():
        by_place = attention(x, torch.arange(50, 64), cache=SinkKVCache(0, 4))
        by_text = attention(x, torch.arange(50, 64), cache=SinkKVCache(0, 4, position_mode="original"))
    assert_close(by_place, by_text)


def _masked_attention(
    attention: MultiHeadAttention, x: torch.Tensor, allowed: torch.Tensor, encoding: str
) -> torch.Tensor:
    """Full-sequence attention at positions 0..T-1 with a boolean mask [T, T], written out here."""
    seq_len = x.shape[1]
    q, k, v = attention.qkv(x).view(2, seq_len, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
    positions = torch.arange(seq_len)
    logits = q @ k.transpose(-1, -2) / HEAD_DIM**0.5
    if encoding == "rope-half":
        logits = apply_rope(q, positions) @ apply_rope(k, positions).transpose(-1, -2) / HEAD_DIM**0.5
    else:
        logits = logits + alibi_bias(HEADS, positions, positions).double()
    weights = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)
    return attention.out((weights @ v).transpose(1, 2).reshape(2, seq_len, DIM))


@pytest.mark.parametrize("encoding", ["rope-half", "alibi"])
@pytest.mark.parametrize(("num_sinks", "mode"), [(0, "cache"), (0, "original"), (3, "original")])
def test_window_and_original_positions_equal_banded_attention_over_the_whole_sequence(
    encoding: str, num_sinks: int, mode: str
) -> None:
    """Window attention (any mode) and sinks at original positions: a banded mask over positions 0..T-1."""
    attention = _attention(encoding)
    x, window = _inputs(16), 4
    query, key = torch.arange(16)[:, None], torch.arange(16)
    allowed = (key <= query) & ((key < num_sinks) | (key > query - window))
    with torch.no_grad():
        streamed = attention(x, cache=SinkKVCache(num_sinks, window, position_mode=mode))
        assert_close(streamed, _masked_attention(attention, x, allowed, encoding))
        # control: re-indexed sinks see the sinks at offsets capped at S + W - 1, not the banded ones
        if num_sinks:
            reindexed = attention(x, cache=SinkKVCache(num_sinks, window))
            assert_close(reindexed[:, : num_sinks + window], streamed[:, : num_sinks + window])
            after_eviction = reindexed[:, num_sinks + window :] - streamed[:, num_sinks + window :]
            assert (after_eviction.abs().amax(dim=(0, 2)) > 1e-4).all()  # at every token after an eviction


def _layerwise_reference(
    model: TinyDecoder, tokens: torch.Tensor, rules: list[tuple[int, int | None, str]]
) -> torch.Tensor:
    """Decode token by token, recomputing each layer on its kept tokens' inputs to that layer.

    ``rules[l] = (num_sinks, window, mode)``, ``window=None``: every token kept at its original position.
    """
    layer_inputs: list[list[torch.Tensor]] = [[] for _ in model.blocks]
    logits = []
    for step in range(tokens.shape[1]):
        x = model.input_encoding.embed(
            model.token_embedding(tokens[:, step : step + 1]), torch.tensor([step])
        )
        for block, inputs, (num_sinks, window, mode) in zip(model.blocks, layer_inputs, rules, strict=True):
            inputs.append(x)
            kept = kept_token_indices(step, num_sinks=num_sinks, window=window)
            positions = torch.arange(len(kept)) if mode == "cache" else kept
            x = block(torch.cat([inputs[j] for j in kept.tolist()], dim=1), positions)[:, -1:]
        logits.append(model.head(model.final_norm(x)))
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize(
    ("encoding", "mode"),
    [("rope", "cache"), ("alibi", "cache"), ("t5", "original"), ("sinusoidal", "original")],
)
def test_tiny_decoder_with_sink_caches_matches_layerwise_recomputation(encoding: str, mode: str) -> None:
    torch.manual_seed(0)
    model = TinyDecoder(VOCAB, DIM, HEADS, 2, encoding=encoding).double().eval()
    tokens = torch.randint(0, VOCAB, (1, 14), generator=torch.Generator().manual_seed(1))
    cache = [SinkKVCache(2, 3, position_mode=mode) for _ in model.blocks]
    with torch.no_grad():
        streamed = torch.cat([model(tokens[:, :5], cache=cache), model(tokens[:, 5:], cache=cache)], dim=1)
        expected = _layerwise_reference(model, tokens, [(2, 3, mode)] * 2)
        assert_close(streamed, expected)
        if encoding == "rope":
            # the whole model recomputed on the kept token ids is another computation: deeper layers'
            # cached keys come from inputs computed when their tokens arrived, with their own windows
            last_kept = kept_token_indices(13, num_sinks=2, window=3)
            recomputed = model(tokens[:, last_kept])[:, -1]
            assert (recomputed - streamed[:, -1]).abs().max() > 1e-3


def test_tiny_decoder_mixes_a_full_cache_and_a_window_per_layer() -> None:
    """A global layer (KVCache) below a local one (window 3); default positions continue from tokens_seen."""
    torch.manual_seed(0)
    model = TinyDecoder(VOCAB, DIM, HEADS, 2, encoding="rope").double().eval()
    tokens = torch.randint(0, VOCAB, (1, 10), generator=torch.Generator().manual_seed(2))
    cache = [KVCache(), SinkKVCache(0, 3, position_mode="original")]
    with torch.no_grad():
        streamed = torch.cat([model(tokens[:, t : t + 1], cache=cache) for t in range(10)], dim=1)
        expected = _layerwise_reference(model, tokens, [(0, None, "original"), (0, 3, "original")])
    assert_close(streamed, expected)
    assert [c.tokens_seen for c in cache] == [10, 10] and [len(c) for c in cache] == [10, 3]


def test_bad_sink_cache_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"num_sinks must be a non-negative integer \(>= 0\), got -1"):
        SinkKVCache(-1, 3)
    with pytest.raises(TypeError, match="num_sinks must be a non-negative integer, got True"):
        SinkKVCache(True, 3)
    with pytest.raises(ValueError, match=r"window must be a positive integer \(>= 1\), got 0"):
        SinkKVCache(4, 0)
    with pytest.raises(TypeError, match=r"window must be a positive integer, got 2\.0"):
        SinkKVCache(4, 2.0)
    with pytest.raises(ValueError, match="position_mode must be one of 'cache', 'original'; got 'text'"):
        SinkKVCache(4, 8, position_mode="text")
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        kept_token_indices(-1, num_sinks=0, window=2)
    with pytest.raises(ValueError, match="window must be a positive integer"):
        kept_token_indices(3, num_sinks=0, window=0)
    with pytest.raises(ValueError, match=r"cache needs causal attention \(causal=True\)"):
        MultiHeadAttention(DIM, HEADS, causal=False)(_inputs(1).float(), cache=SinkKVCache(1, 2))
    tokens = torch.zeros(1, 3, dtype=torch.int64)
    for encoding in ("learned", "sinusoidal"):
        model = TinyDecoder(VOCAB, DIM, HEADS, 2, encoding=encoding, max_positions=8)
        with pytest.raises(
            ValueError, match=f"cannot serve a TinyDecoder with the input encoding '{encoding}'"
        ):
            model(tokens, cache=[SinkKVCache(1, 2) for _ in model.blocks])
        model(tokens, cache=[SinkKVCache(1, 2, position_mode="original") for _ in model.blocks])
    model = TinyDecoder(VOCAB, DIM, HEADS, 2, encoding="learned", max_positions=4)
    cache = [SinkKVCache(1, 2, position_mode="original") for _ in model.blocks]
    model(tokens, cache=cache)
    with pytest.raises(ValueError, match="max_positions"):  # original positions run past the table
        model(tokens[:, :2], cache=cache)


# --- a Llama model from transformers ----------------------------------------------------------------------

# 4 query heads sharing 2 key-value heads, as SmolLM2's 9 share 3; a large initialisation makes the
# attention depend strongly on the positions (a wrong position shows in the NLL).
TINY_LLAMA = {
    "vocab_size": 40,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "initializer_range": 0.3,
    "rope_parameters": {"rope_type": "default", "rope_theta": 100.0},
    "attn_implementation": "eager",
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": None,
}


def _llama(num_layers: int, **overrides: object) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(num_hidden_layers=num_layers, **{**TINY_LLAMA, **overrides})).eval()


def _stream(length: int) -> torch.Tensor:
    return torch.randint(0, TINY_LLAMA["vocab_size"], (length,), generator=torch.Generator().manual_seed(3))


def _next_token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -torch.log_softmax(logits.double(), dim=-1).gather(-1, targets[:, None])[:, 0]


@pytest.mark.parametrize(
    ("window", "num_sinks", "mode", "chunk_size"),
    [(None, 0, "cache", 128), (None, 4, "original", 1), (24, 0, "cache", 5), (20, 4, "cache", 7)],
)
def test_a_window_that_covers_the_stream_gives_the_dense_model(
    window: int | None, num_sinks: int, mode: str, chunk_size: int
) -> None:
    model, ids = _llama(2), _stream(24)
    with torch.no_grad():
        output = model(ids[None], output_attentions=True)
        logits, attentions = output.logits, output.attentions
    result = streaming_nll(
        model, ids, window=window, num_sinks=num_sinks, position_mode=mode, chunk_size=chunk_size
    )
    assert isinstance(result, StreamingResult) and result.nll.dtype == torch.float64
    assert_close(result.nll, _next_token_nll(logits[0, :-1], ids[1:]), rtol=0, atol=2e-5)
    assert result.perplexity == pytest.approx(float(result.nll.mean().exp()))
    expected_mass = torch.stack([layer[0, :, :, :num_sinks].sum(-1) for layer in attentions])
    assert result.sink_attention.shape == (2, 4, 24)
    assert_close(result.sink_attention, expected_mass.double(), rtol=0, atol=2e-6)


@pytest.mark.parametrize(
    ("num_sinks", "window", "mode"), [(2, 3, "cache"), (2, 3, "original"), (0, 4, "cache")]
)
def test_each_step_equals_the_one_layer_model_recomputed_on_the_kept_tokens(
    num_sinks: int, window: int, mode: str
) -> None:
    """transformers' model on ids[K_i] with position_ids 0..n-1 (or original): the NLL of step i."""
    model, ids = _llama(1), _stream(16)
    original = torch.arange(16)
    expected = []
    with torch.no_grad():
        for step in range(15):
            kept = kept_token_indices(step, num_sinks=num_sinks, window=window)
            positions = _kept_positions(step, num_sinks, window, mode, original)
            logits = model(ids[kept][None], position_ids=positions[None]).logits[0, -1:]
            expected.append(_next_token_nll(logits, ids[step + 1 : step + 2]))
    for chunk_size in (1, 6):
        result = streaming_nll(
            model, ids, window=window, num_sinks=num_sinks, position_mode=mode, chunk_size=chunk_size
        )
        assert_close(result.nll, torch.cat(expected), rtol=0, atol=2e-5)


def _reference_by_transformers_layers(
    model: LlamaForCausalLM, ids: torch.Tensor, num_sinks: int, window: int, mode: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token by token: each LlamaDecoderLayer recomputed on the kept tokens' inputs to it (keys and values
    computed afresh, rotated at positions 0..n-1 or the original ones); NLL and sink mass per step."""
    decoder = model.model
    layer_inputs: list[list[torch.Tensor]] = [[] for _ in decoder.layers]
    nll, mass = [], []
    for step in range(ids.shape[0]):
        kept = kept_token_indices(step, num_sinks=num_sinks, window=window)
        positions = torch.arange(len(kept)) if mode == "cache" else kept
        n = len(kept)
        mask = torch.zeros(1, 1, n, n).masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        hidden = decoder.embed_tokens(ids[step : step + 1])[None]
        step_mass = []
        for layer, inputs in zip(decoder.layers, layer_inputs, strict=True):
            inputs.append(hidden)
            kept_inputs = torch.cat([inputs[j] for j in kept.tolist()], dim=1)
            cos_sin = decoder.rotary_emb(kept_inputs, positions[None])
            _, weights = layer.self_attn(
                layer.input_layernorm(kept_inputs), position_embeddings=cos_sin, attention_mask=mask
            )
            step_mass.append(weights[0, :, -1, : min(num_sinks, n)].sum(-1))
            hidden = layer(kept_inputs, attention_mask=mask, position_embeddings=cos_sin)[:, -1:]
        mass.append(torch.stack(step_mass))
        if step + 1 < ids.shape[0]:
            nll.append(_next_token_nll(model.lm_head(decoder.norm(hidden))[0], ids[step + 1 : step + 2]))
    return torch.cat(nll), torch.stack(mass, dim=-1).double()


@pytest.mark.parametrize(
    ("num_sinks", "window", "mode"), [(2, 4, "cache"), (2, 4, "original"), (0, 5, "cache")]
)
def test_each_step_equals_transformers_layers_recomputed_on_the_kept_layer_inputs(
    num_sinks: int, window: int, mode: str
) -> None:
    model, ids = _llama(3), _stream(20)
    with torch.no_grad():
        expected_nll, expected_mass = _reference_by_transformers_layers(model, ids, num_sinks, window, mode)
    for chunk_size in (1, 8):
        result = streaming_nll(
            model, ids, window=window, num_sinks=num_sinks, position_mode=mode, chunk_size=chunk_size
        )
        assert_close(result.nll, expected_nll, rtol=0, atol=2e-5)
        assert_close(result.sink_attention, expected_mass, rtol=0, atol=2e-6)
    if num_sinks and mode == "cache":  # control: the positions matter, and the comparison sees them
        original = streaming_nll(model, ids, window=window, num_sinks=num_sinks, position_mode="original")
        assert (
            original.nll[num_sinks + window - 1 :] - expected_nll[num_sinks + window - 1 :]
        ).abs().max() > 1e-3
        assert_close(
            original.nll[: num_sinks + window - 1], expected_nll[: num_sinks + window - 1], rtol=0, atol=2e-5
        )


@pytest.mark.parametrize("offset", [9, 40])
def test_a_position_offset_equals_the_one_layer_model_at_shifted_positions(offset: int) -> None:
    """transformers' model on ids[K_i] with position_ids 0..S-1 for the sinks and j + offset after them."""
    model, ids = _llama(1), _stream(16)
    num_sinks, window = 2, 3
    shifted = torch.cat([torch.arange(num_sinks), torch.arange(num_sinks, 16) + offset])
    expected = []
    with torch.no_grad():
        for step in range(15):
            kept = kept_token_indices(step, num_sinks=num_sinks, window=window)
            logits = model(ids[kept][None], position_ids=shifted[kept][None]).logits[0, -1:]
            expected.append(_next_token_nll(logits, ids[step + 1 : step + 2]))
    expected_nll = torch.cat(expected)
    for chunk_size in (1, 6):
        result = streaming_nll(
            model,
            ids,
            window=window,
            num_sinks=num_sinks,
            position_mode="original",
            position_offset=offset,
            chunk_size=chunk_size,
        )
        assert_close(result.nll, expected_nll, rtol=0, atol=2e-5)
        assert result.position_offset == offset
    # control: the offset moves every query after the sinks away from them, and the comparison sees it
    unshifted = streaming_nll(model, ids, window=window, num_sinks=num_sinks, position_mode="original")
    assert_close(unshifted.nll[:num_sinks], expected_nll[:num_sinks], rtol=0, atol=2e-5)  # the sinks' own
    assert (unshifted.nll[num_sinks:] - expected_nll[num_sinks:]).abs().max() > 1e-3
    # offset 0 is the default, to the bit
    zero = streaming_nll(
        model, ids, window=window, num_sinks=num_sinks, position_mode="original", position_offset=0
    )
    assert torch.equal(zero.nll, unshifted.nll) and torch.equal(zero.sink_attention, unshifted.sink_attention)
    assert zero.position_offset == 0


def test_a_position_offset_equals_a_stream_longer_by_the_offset_after_the_sinks() -> None:
    """Original positions with offset D on a stream = the same stream with D more tokens after the sinks,
    from token S + L (W - 1) on (before it, the inserted tokens reach the window through the layers)."""
    model, ids = _llama(2), _stream(24)
    num_sinks, window, offset = 2, 4, 30
    inserted = torch.randint(
        0, TINY_LLAMA["vocab_size"], (offset,), generator=torch.Generator().manual_seed(4)
    )
    longer_ids = torch.cat([ids[:num_sinks], inserted, ids[num_sinks:]])
    rule = {"window": window, "num_sinks": num_sinks, "position_mode": "original", "chunk_size": 8}
    simulated = streaming_nll(model, ids, position_offset=offset, **rule)
    longer = streaming_nll(model, longer_ids, **rule)
    first = num_sinks + 2 * (window - 1)  # S + L (W - 1)
    assert_close(simulated.nll[first:], longer.nll[offset + first :], rtol=0, atol=2e-5)
    assert_close(
        simulated.sink_attention[..., first:], longer.sink_attention[..., offset + first :], rtol=0, atol=2e-6
    )
    # controls: without the offset the same text differs (the sinks are nearer), and before token
    # S + L (W - 1) the inserted tokens change the result
    unshifted = streaming_nll(model, ids, **rule)
    assert (unshifted.nll[first:] - longer.nll[offset + first :]).abs().max() > 1e-3
    assert (
        simulated.nll[num_sinks:first] - longer.nll[offset + num_sinks : offset + first]
    ).abs().max() > 1e-3


def test_bad_streaming_arguments_are_rejected() -> None:
    model, ids = _llama(1), _stream(8)
    with pytest.raises(ValueError, match="model must be a transformers Llama-architecture causal LM"):
        streaming_nll(torch.nn.Linear(2, 2), ids, window=4)
    with pytest.raises(ValueError, match=r"model_type 'llama'.*got LlamaModel"):
        streaming_nll(model.model, ids, window=4)
    with pytest.raises(TypeError, match="ids must be an integer tensor"):
        streaming_nll(model, ids.float(), window=4)
    with pytest.raises(
        ValueError, match=r"ids must be a 1-D tensor of at least 2 token ids, got shape \(1, 8\)"
    ):
        streaming_nll(model, ids[None], window=4)
    with pytest.raises(ValueError, match=r"at least 2 token ids, got shape \(1,\)"):
        streaming_nll(model, ids[:1], window=4)
    with pytest.raises(
        ValueError, match=r"ids must be token ids in \[0, vocab_size\) = \[0, 40\), got ids from 0 to 40"
    ):
        streaming_nll(model, torch.tensor([0, 40]), window=4)
    with pytest.raises(ValueError, match="window must be a positive integer"):
        streaming_nll(model, ids, window=0)
    with pytest.raises(TypeError, match="window must be a positive integer"):
        streaming_nll(model, ids, window=4.0)
    with pytest.raises(ValueError, match="num_sinks must be a non-negative integer"):
        streaming_nll(model, ids, window=4, num_sinks=-1)
    with pytest.raises(ValueError, match="position_mode must be one of 'cache', 'original'"):
        streaming_nll(model, ids, window=4, position_mode="text")
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        streaming_nll(model, ids, window=4, chunk_size=0)
    original = {"window": 4, "num_sinks": 2, "position_mode": "original"}
    with pytest.raises(ValueError, match=r"position_offset must be a non-negative integer \(>= 0\), got -1"):
        streaming_nll(model, ids, position_offset=-1, **original)
    with pytest.raises(TypeError, match=r"position_offset must be a non-negative integer, got 8\.0"):
        streaming_nll(model, ids, position_offset=8.0, **original)
    with pytest.raises(TypeError, match="position_offset must be a non-negative integer, got True"):
        streaming_nll(model, ids, position_offset=True, **original)
    with pytest.raises(ValueError, match="position_offset=8 needs position_mode='original'"):
        streaming_nll(model, ids, window=4, num_sinks=2, position_offset=8)
    with pytest.raises(ValueError, match="position_offset=8 needs a window"):
        streaming_nll(model, ids, window=None, num_sinks=2, position_mode="original", position_offset=8)
    with pytest.raises(ValueError, match="position_offset=8 needs num_sinks >= 1"):
        streaming_nll(model, ids, window=4, position_mode="original", position_offset=8)
    for mode in ("cache", "original"):  # 0 is accepted everywhere
        assert (
            streaming_nll(model, ids, window=None, position_mode=mode, position_offset=0).position_offset == 0
        )
    dynamic = _llama(1, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 100.0})
    with pytest.raises(
        ValueError, match="RoPE scaling 'dynamic' changes its frequencies with the sequence length"
    ):
        streaming_nll(dynamic, ids, window=4)


def test_import_of_the_module_does_not_import_transformers() -> None:
    code = "import sys, posenc_lib.streaming; assert 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
