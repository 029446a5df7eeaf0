"""Llama 4's layers on posenc_lib's attention (proposed additions to tests/test_layer_patterns.py).

LocalRotaryEmbedding and TemperatureNoPE inside posenc_lib's MultiHeadAttention are compared, layer for
layer, with transformers 5.18's Llama4TextAttention on a tiny random config, with the mask transformers
builds for that layer (chunked for a RoPE layer, causal for a NoPE layer).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from transformers import Llama4TextConfig
from transformers.masking_utils import causal_mask_function, chunked_causal_mask_function, eager_mask
from transformers.models.llama4 import modeling_llama4

from posenc_lib import TinyDecoder
from posenc_lib.alibi import ALiBi
from posenc_lib.layer_patterns import (
    LayerPositioning,
    LocalRotaryEmbedding,
    TemperatureNoPE,
    llama4_attention_temperature,
    with_llama4_attention,
)
from posenc_lib.nope import NoPE
from posenc_lib.rope import RotaryEmbedding
from posenc_lib.transformer import MultiHeadAttention

pytestmark = pytest.mark.usefixtures("quiet_transformers")

HEADS, HEAD_DIM, LENGTH, CHUNK = 4, 8, 11, 4
CONFIG = {
    "hidden_size": HEADS * HEAD_DIM,
    "intermediate_size": 32,
    "intermediate_size_mlp": 32,
    "num_attention_heads": HEADS,
    "num_key_value_heads": HEADS,  # posenc_lib's attention has one key head per query head
    "head_dim": HEAD_DIM,
    "vocab_size": 64,
    "num_hidden_layers": 2,
    "no_rope_layers": [1, 0],  # layer 0 rotates, layer 1 is a NoPE layer
    "use_qk_norm": False,  # posenc_lib's attention has no query-key norm
    "attention_chunk_size": CHUNK,
    "floor_scale": 3,
    "attn_scale": 0.5,
    "rope_theta": 500.0,
    "attn_implementation": "eager",
}


def _pair(layer: int, positional) -> tuple[MultiHeadAttention, modeling_llama4.Llama4TextAttention, object]:
    """transformers' attention layer with random weights and ours with the same weights."""
    config = Llama4TextConfig(**CONFIG)
    torch.manual_seed(layer)
    theirs = modeling_llama4.Llama4TextAttention(config, layer).eval()
    for weight in theirs.parameters():
        torch.nn.init.normal_(weight, std=0.3)  # large enough for positions to change the attention
    ours = MultiHeadAttention(HEADS * HEAD_DIM, HEADS, positional=positional).eval()
    with torch.no_grad():
        ours.qkv.weight.copy_(torch.cat([theirs.q_proj.weight, theirs.k_proj.weight, theirs.v_proj.weight]))
        ours.out.weight.copy_(theirs.o_proj.weight)
    return ours, theirs, config


def _their_output(theirs, config, x: torch.Tensor, chunked: bool) -> torch.Tensor:
    function = (
        chunked_causal_mask_function(CHUNK, torch.zeros(x.shape[0], dtype=torch.int64))
        if chunked
        else causal_mask_function
    )
    mask = eager_mask(batch_size=x.shape[0], q_length=LENGTH, kv_length=LENGTH, mask_function=function)
    positions = torch.arange(LENGTH)[None]
    freqs_cis = modeling_llama4.Llama4TextRotaryEmbedding(config)(x, positions)
    return theirs(x, freqs_cis, mask)[0]


def test_a_chunked_rope_layer_is_llama4s_rope_layer() -> None:
    ours, theirs, config = _pair(
        0, LocalRotaryEmbedding(HEAD_DIM, chunk_size=CHUNK, layout="interleaved", base=500.0)
    )
    x = torch.randn(2, LENGTH, HEADS * HEAD_DIM)
    with torch.no_grad():
        expected = _their_output(theirs, config, x, chunked=True)
        assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
        full = MultiHeadAttention(
            HEADS * HEAD_DIM, HEADS, positional=RotaryEmbedding(HEAD_DIM, layout="interleaved", base=500.0)
        )
        full.load_state_dict(ours.state_dict())
        assert (full(x) - expected).abs().max() > 0.1  # control: without the chunks, another layer


def test_a_temperature_nope_layer_is_llama4s_nope_layer() -> None:
    ours, theirs, config = _pair(1, TemperatureNoPE(floor_scale=3, attn_scale=0.5))
    x = torch.randn(2, LENGTH, HEADS * HEAD_DIM)
    with torch.no_grad():
        expected = _their_output(theirs, config, x, chunked=False)
        assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)
        ours.positional = NoPE()
        assert (ours(x) - expected).abs().max() > 0.1  # control: without the temperature, another layer
        assert_close(ours(x)[:, :2], expected[:, :2], atol=1e-5, rtol=1e-5)  # tau = 1 before F - 1 = 2


@settings(deadline=None, max_examples=40)
@given(length=st.integers(1, 24), size=st.integers(1, 9), kind=st.sampled_from(["chunked", "sliding"]))
def test_the_mask_is_the_layers_mask(length: int, size: int, kind: str) -> None:
    """With the causal mask, exactly LayerPositioning.attention_mask (itself checked against transformers)."""
    if kind == "chunked":
        rope, layer = (
            LocalRotaryEmbedding(8, chunk_size=size),
            LayerPositioning("chunked_attention", None, chunk_size=size),
        )
    else:
        rope = LocalRotaryEmbedding(8, sliding_window=size)
        layer = LayerPositioning("sliding_attention", None, sliding_window=size)
    positions = torch.arange(length)
    q = torch.zeros(1, 1, length, 8)
    bias = rope.logit_bias(q, q, positions, positions)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    assert bias.dtype == q.dtype and set(bias.unique().tolist()) <= {0.0, float("-inf")}
    assert torch.equal((bias == 0) & causal, layer.attention_mask(length))


@settings(deadline=None, max_examples=30)
@given(length=st.integers(1, 12), chunk=st.integers(1, 6), past=st.integers(1, 11))
def test_cached_decoding_equals_recomputation(length: int, chunk: int, past: int) -> None:
    """With a KVCache each key keeps its position: the chunks and temperature are those of the full run."""
    past = min(past, length)
    torch.manual_seed(0)
    model = with_llama4_attention(
        TinyDecoder(16, 32, 4, 2, encoding=["rope", "nope"]), chunk_size=chunk, attn_scale=1.0
    ).eval()
    tokens = torch.randint(0, 16, (2, length))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache()
        parts = [model(tokens[:, :past], cache=cache)]
        if past < length:
            parts.append(model(tokens[:, past:], cache=cache))
    assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_temperature_nope_scales_queries_only() -> None:
    q, k = torch.randn(2, 3, 7, 8, dtype=torch.float64), torch.randn(2, 3, 7, 8, dtype=torch.float64)
    positions = torch.arange(7) * 5
    scaled, same = TemperatureNoPE(floor_scale=4, attn_scale=0.3).rotate(q, k, positions, positions)
    tau = llama4_attention_temperature(positions, floor_scale=4, attn_scale=0.3, dtype=torch.float64)
    assert torch.equal(same, k) and scaled.dtype == q.dtype
    assert_close(scaled, q * tau[:, None])
    assert tau.unique().numel() > 3  # control: the positions reach several steps of the staircase
    plain, _ = TemperatureNoPE(floor_scale=4, attn_scale=0.0).rotate(q, k, positions, positions)
    assert torch.equal(plain, q)  # alpha = 0: NoPE exactly
    half = q.to(torch.bfloat16)
    assert TemperatureNoPE().rotate(half, half, positions, positions)[0].dtype == torch.bfloat16


def test_with_llama4_attention_copies_and_replaces() -> None:
    torch.manual_seed(0)
    model = TinyDecoder(16, 32, 4, 4, encoding=["rope", "rope", "rope", "nope"])
    layout = with_llama4_attention(model, chunk_size=8, attn_scale=0.1)
    encodings = [block.attention.positional for block in layout.blocks]
    assert [type(e) for e in encodings] == [LocalRotaryEmbedding] * 3 + [TemperatureNoPE]
    assert encodings[0] is encodings[1] is encodings[2]  # still shared
    assert (encodings[0].chunk_size, encodings[3].floor_scale, encodings[3].attn_scale) == (8, 8.0, 0.1)
    assert [type(block.attention.positional) for block in model.blocks] == [RotaryEmbedding] * 3 + [NoPE]
    state, copied = model.state_dict(), layout.state_dict()
    assert state.keys() == copied.keys() and all(torch.equal(state[key], copied[key]) for key in state)
    tokens = torch.randint(0, 16, (2, 24))
    with torch.no_grad():
        short = tokens[:, :7]  # within one chunk and before F - 1: the same model
        assert_close(layout(short), model(short), atol=1e-6, rtol=1e-6)
        assert (layout(tokens) - model(tokens)).abs().max() > 0.1  # control: past the chunk, not the same
        back = with_llama4_attention(layout, chunk_size=None, attn_scale=0.0)
        assert torch.equal(back(tokens), model(tokens))  # and back to full RoPE and plain NoPE


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="exactly one of chunk_size"):
        LocalRotaryEmbedding(8)
    with pytest.raises(ValueError, match="exactly one of chunk_size"):
        LocalRotaryEmbedding(8, chunk_size=2, sliding_window=2)
    with pytest.raises(ValueError, match="chunk_size"):
        LocalRotaryEmbedding(8, chunk_size=0)
    with pytest.raises(TypeError, match="sliding_window"):
        LocalRotaryEmbedding(8, sliding_window=2.5)
    with pytest.raises(ValueError, match="floor_scale"):
        TemperatureNoPE(floor_scale=0)
    with pytest.raises(ValueError, match="attn_scale"):
        TemperatureNoPE(attn_scale=-1.0)
    q = torch.zeros(1, 1, 3, 8)
    with pytest.raises(ValueError, match="q_positions must be >= 0"):
        TemperatureNoPE().rotate(q, q, torch.tensor([-1, 0, 1]), torch.arange(3))
    with pytest.raises(ValueError, match="q_positions must have shape"):
        LocalRotaryEmbedding(8, chunk_size=2).logit_bias(q, q, torch.arange(4), torch.arange(3))
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        with_llama4_attention("model", chunk_size=4)
    with pytest.raises(ValueError, match="floor_scale must be given"):
        with_llama4_attention(TinyDecoder(8, 16, 2, 1), chunk_size=None, attn_scale=0.1)
    with pytest.raises(ValueError, match="no MultiHeadAttention"):
        with_llama4_attention(torch.nn.Linear(2, 2), chunk_size=4)
    alibi = torch.nn.Sequential(MultiHeadAttention(16, 2, positional=ALiBi(2)))
    with pytest.raises(ValueError, match=r"0\.positional is ALiBi"):
        with_llama4_attention(alibi, chunk_size=4)
