"""The attention layer, block and tiny decoder, with every positional encoding plugged in."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from transformers import DynamicCache, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaAttention, LlamaRotaryEmbedding

from posenc_lib.alibi import ALiBi
from posenc_lib.base import PositionalEncoding
from posenc_lib.learned import LearnedPositionalEmbedding
from posenc_lib.nope import NoPE
from posenc_lib.relative import ShawRelativeEncoding
from posenc_lib.rope import RotaryEmbedding, apply_rope
from posenc_lib.sinusoidal import SinusoidalPositionalEncoding
from posenc_lib.t5 import T5RelativeBias
from posenc_lib.transformer import (
    ENCODING_NAMES,
    INPUT_ENCODINGS,
    PER_LAYER_ENCODINGS,
    KVCache,
    MultiHeadAttention,
    TinyDecoder,
    TransformerBlock,
    build_positional_encoding,
    count_positional_parameters,
)
from posenc_lib.transformer_xl import TransformerXLRelativeEncoding
from posenc_lib.xpos import XPos

DIM, HEADS, VOCAB = 32, 4, 17
HEAD_DIM = DIM // HEADS
ATTENTION_ENCODINGS = tuple(name for name in ENCODING_NAMES if name not in INPUT_ENCODINGS)


def _inputs(batch: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, seq_len, DIM, generator=torch.Generator().manual_seed(seed))


def test_attention_without_positions_is_permutation_equivariant_not_invariant() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(DIM, HEADS, causal=False)
    x = _inputs(2, 7)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    out, out_permuted = attention(x), attention(x[:, perm])
    assert_close(out_permuted, out[:, perm])  # outputs permute with the inputs
    assert not torch.allclose(out_permuted, out, atol=1e-3)  # but they are not unchanged


def test_causal_mask_breaks_permutation_equivariance() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(DIM, HEADS, causal=True)
    x = _inputs(1, 6)
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    assert not torch.allclose(attention(x[:, perm]), attention(x)[:, perm], atol=1e-3)


def test_causal_attention_puts_no_weight_on_future_keys() -> None:
    torch.manual_seed(0)
    _, probs = MultiHeadAttention(DIM, HEADS)(_inputs(1, 5), return_attention=True)
    assert torch.equal(probs[..., torch.ones(5, 5, dtype=torch.bool).triu(1)], torch.zeros(1, HEADS, 10))
    assert_close(probs.sum(-1), torch.ones(1, HEADS, 5))


@pytest.mark.parametrize("name", ["shaw", "transformer_xl", "t5", "alibi", "rope", "xpos"])
def test_relative_methods_give_shift_invariant_attention(name: str) -> None:
    """Relative encodings: attention is unchanged when every position moves by the same amount."""
    torch.manual_seed(0)
    attention = MultiHeadAttention(
        DIM, HEADS, positional=build_positional_encoding(name, dim=DIM, num_heads=HEADS)
    )
    x = _inputs(1, 9).double()
    attention.double()
    _, probs = attention(x, torch.arange(9), return_attention=True)
    _, shifted = attention(x, torch.arange(100, 109), return_attention=True)
    assert_close(probs, shifted)


@pytest.mark.parametrize("name", ["sinusoidal", "learned"])
def test_absolute_methods_are_not_shift_invariant(name: str) -> None:
    torch.manual_seed(0)
    model = TinyDecoder(11, DIM, HEADS, 1, encoding=name, max_positions=200)
    tokens = torch.randint(0, 11, (1, 9), generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(
        model(tokens, torch.arange(9)), model(tokens, torch.arange(100, 109)), atol=1e-4
    )


@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_every_encoding_trains_in_the_tiny_decoder(name: str) -> None:
    torch.manual_seed(0)
    model = TinyDecoder(13, DIM, HEADS, 2, encoding=name, max_positions=64)
    tokens = torch.randint(0, 13, (3, 16), generator=torch.Generator().manual_seed(2))
    logits = model(tokens)
    assert logits.shape == (3, 16, 13)
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 13), tokens[:, 1:].reshape(-1))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_decoder_is_causal() -> None:
    torch.manual_seed(0)
    model = TinyDecoder(13, DIM, HEADS, 2, encoding="rope")
    tokens = torch.randint(0, 13, (1, 10), generator=torch.Generator().manual_seed(3))
    changed = tokens.clone()
    changed[0, 7:] = (changed[0, 7:] + 1) % 13
    assert_close(model(tokens)[:, :7], model(changed)[:, :7])


@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_encodings_are_shared_by_all_layers_except_per_layer_parameters(name: str) -> None:
    model = TinyDecoder(5, DIM, HEADS, 3, encoding=name, max_positions=8)
    layer_encodings = {id(block.attention.positional) for block in model.blocks}
    assert len(layer_encodings) == (3 if name in PER_LAYER_ENCODINGS else 1)
    assert PER_LAYER_ENCODINGS == ("shaw", "transformer_xl")
    expected_input = {"sinusoidal": SinusoidalPositionalEncoding, "learned": LearnedPositionalEmbedding}
    assert type(model.input_encoding) is expected_input.get(name, NoPE)


def test_learned_decoder_fails_clearly_past_its_table() -> None:
    model = TinyDecoder(5, DIM, HEADS, 1, encoding="learned", max_positions=8)
    with pytest.raises(ValueError, match="positions"):
        model(torch.zeros(1, 9, dtype=torch.int64))


def test_block_keeps_shape() -> None:
    block = TransformerBlock(
        DIM, HEADS, positional=build_positional_encoding("alibi", dim=DIM, num_heads=HEADS)
    )
    assert block(_inputs(2, 5)).shape == (2, 5, DIM)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="dim must be divisible by num_heads"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        MultiHeadAttention(32, 0)
    with pytest.raises(TypeError, match="positional must be a PositionalEncoding"):
        MultiHeadAttention(32, 4, positional=torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="encoding must be one of 'nope', 'sinusoidal'"):
        TinyDecoder(5, DIM, HEADS, 1, encoding="rotary")
    with pytest.raises(ValueError, match="max_positions must be given"):
        build_positional_encoding("learned", dim=DIM, num_heads=HEADS)
    with pytest.raises(ValueError, match="positions must be a 1-D tensor of length T = 5"):
        MultiHeadAttention(DIM, HEADS)(_inputs(1, 5), torch.arange(4))
    with pytest.raises(ValueError, match=r"x must have shape \[batch, T, dim=32\]"):
        MultiHeadAttention(DIM, HEADS)(torch.zeros(5, DIM))
    with pytest.raises(TypeError, match="tokens must be an integer tensor"):
        TinyDecoder(5, DIM, HEADS, 1)(torch.zeros(1, 4))
    assert isinstance(build_positional_encoding("nope", dim=DIM, num_heads=HEADS), PositionalEncoding)


def test_scale_option_multiplies_the_content_logits() -> None:
    torch.manual_seed(0)
    default = MultiHeadAttention(DIM, HEADS, causal=False)
    unscaled = MultiHeadAttention(DIM, HEADS, causal=False, scale=1.0)
    unscaled.load_state_dict(default.state_dict())
    x = _inputs(1, 4).double()
    default.double(), unscaled.double()
    _, probs_default = default(x, return_attention=True)
    q, k, _ = unscaled.qkv(x).view(1, 4, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
    assert_close(probs_default, torch.softmax(q @ k.transpose(-1, -2) / (DIM // HEADS) ** 0.5, dim=-1))
    _, probs_unscaled = unscaled(x, return_attention=True)
    assert_close(probs_unscaled, torch.softmax(q @ k.transpose(-1, -2), dim=-1))
    with pytest.raises(ValueError, match="scale"):
        MultiHeadAttention(DIM, HEADS, scale=0.0)


def test_encoder_models_get_the_bidirectional_forms_of_t5_and_alibi() -> None:
    encoder_t5 = build_positional_encoding("t5", dim=DIM, num_heads=HEADS, causal=False)
    decoder_t5 = build_positional_encoding("t5", dim=DIM, num_heads=HEADS)
    assert encoder_t5.bidirectional and not decoder_t5.bidirectional
    encoder = TinyDecoder(5, DIM, HEADS, 1, encoding="alibi", causal=False)
    assert not encoder.blocks[0].attention.positional.causal
    assert TinyDecoder(5, DIM, HEADS, 1, encoding="alibi").blocks[0].attention.positional.causal


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nope", 0),
        ("sinusoidal", 0),
        ("alibi", 0),
        ("rope", 0),
        ("xpos", 0),
        ("learned", 20 * DIM),  # one vector per position, once
        ("t5", 32 * HEADS),  # one table shared by all layers
        ("shaw", 3 * 2 * (2 * 16 + 1) * (DIM // HEADS)),  # per layer: key and value tables
        ("transformer_xl", 3 * (2 * DIM + DIM * DIM)),  # per layer: u, v and W_R
    ],
)
def test_count_positional_parameters(name: str, expected: int) -> None:
    model = TinyDecoder(5, DIM, HEADS, 3, encoding=name, max_positions=20)
    assert count_positional_parameters(model) == expected
    named = sum(
        p.numel()
        for n, p in model.named_parameters()
        if n.startswith("input_encoding.") or ".positional." in n
    )
    assert named == expected  # named_parameters lists a shared parameter once, too


def test_count_positional_parameters_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match="model"):
        count_positional_parameters([torch.zeros(3)])


def test_registry_builds_each_encoding_by_name_with_the_model_sizes() -> None:
    expected = {
        "nope": NoPE,
        "sinusoidal": SinusoidalPositionalEncoding,
        "learned": LearnedPositionalEmbedding,
        "shaw": ShawRelativeEncoding,
        "transformer_xl": TransformerXLRelativeEncoding,
        "t5": T5RelativeBias,
        "alibi": ALiBi,
        "rope": RotaryEmbedding,
        "xpos": XPos,
    }
    assert tuple(expected) == ENCODING_NAMES
    built = {
        name: build_positional_encoding(name, dim=DIM, num_heads=HEADS, max_positions=10, shaw_max_distance=3)
        for name in ENCODING_NAMES
    }
    assert all(type(built[name]) is cls for name, cls in expected.items())
    assert built["sinusoidal"].dim == DIM and built["learned"].weight.shape == (10, DIM)
    assert (built["shaw"].head_dim, built["shaw"].max_distance) == (HEAD_DIM, 3)
    assert (built["transformer_xl"].num_heads, built["transformer_xl"].head_dim) == (HEADS, HEAD_DIM)
    assert (built["t5"].num_heads, built["t5"].model_dim) == (HEADS, DIM)
    assert built["alibi"].num_heads == HEADS and built["rope"].dim == built["xpos"].head_dim == HEAD_DIM
    with pytest.raises(TypeError, match="causal must be True or False"):
        build_positional_encoding("alibi", dim=DIM, num_heads=HEADS, causal=1)


@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_state_dict_keys_are_those_the_chapters_and_experiments_use(name: str) -> None:
    """Sharing parameter-free encodings across layers adds and removes no key."""
    model = TinyDecoder(5, DIM, HEADS, 3, encoding=name, max_positions=8)
    per_layer = {
        "learned": ["input_encoding.weight"],
        "shaw": ["key_table", "value_table"],
        "transformer_xl": ["u", "v", "relative_projection.weight"],
        "t5": ["relative_attention_bias.weight"],
    }.get(name, [])
    expected = (
        per_layer
        if name == "learned"
        else [f"blocks.{i}.attention.positional.{key}" for i in range(3) for key in per_layer]
    )
    keys = [key for key in model.state_dict() if key.startswith("input_encoding.") or ".positional." in key]
    assert keys == expected
    assert len(model.state_dict()) == 1 + 3 * 10 + 4 + len(expected)  # embedding, blocks, final norm, head


# --- decoding with a KV cache ---------------------------------------------------------------------------


def _decoder(name: str, *, dtype: torch.dtype = torch.float32, seed: int = 0, layers: int = 2) -> TinyDecoder:
    torch.manual_seed(seed)
    model = TinyDecoder(VOCAB, DIM, HEADS, layers, encoding=name, max_positions=64)
    return model.to(dtype).eval()


def _tokens(batch: int, seq_len: int, *, seed: int = 1, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("strided", [False, True], ids=["consecutive", "strided"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_cached_decoding_gives_the_logits_of_full_recomputation(
    name: str, dtype: torch.dtype, strided: bool
) -> None:
    model = _decoder(name, dtype=dtype)
    tokens = _tokens(3, 20)
    positions = 5 + 2 * torch.arange(20) if strided else torch.arange(20)
    # a prompt of 7, one token, a chunk of 5, then one token per step
    bounds = [0, 7, 8, 13, *range(14, 21)]
    cache = model.new_cache()
    with torch.no_grad():
        full = model(tokens, positions)
        cached = torch.cat(
            [
                model(tokens[:, a:b], positions[a:b] if strided else None, cache=cache)
                for a, b in itertools.pairwise(bounds)
            ],
            dim=1,
        )
    assert_close(cached, full)
    assert all(len(layer) == 20 and torch.equal(layer.positions, positions) for layer in cache)


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(ATTENTION_ENCODINGS),
    cuts=st.sets(st.integers(1, 11), max_size=4),
    first=st.integers(-50, 50),
)
def test_attention_layer_with_a_cache_matches_one_pass(name: str, cuts: set[int], first: int) -> None:
    """Any split of 12 tokens into calls gives the outputs and attention rows of one pass."""
    torch.manual_seed(0)
    positional = build_positional_encoding(name, dim=DIM, num_heads=HEADS)
    attention = MultiHeadAttention(DIM, HEADS, positional=positional).double()
    x = _inputs(2, 12).double()
    positions = torch.arange(first, first + 12)
    full, full_probs = attention(x, positions, return_attention=True)
    bounds = [0, *sorted(cuts), 12]
    cache, outputs = KVCache(), []
    for a, b in itertools.pairwise(bounds):
        out, probs = attention(x[:, a:b], positions[a:b], cache=cache, return_attention=True)
        assert probs.shape == (2, HEADS, b - a, b)
        assert_close(probs, full_probs[:, :, a:b, :b])
        outputs.append(out)
    assert_close(torch.cat(outputs, dim=1), full)


class _RecordingEncoding(PositionalEncoding):
    """Records the positions and key counts each hook is called with; changes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []

    def rotate(self, q, k, q_positions, k_positions):
        self.calls.append(("rotate", k.shape[2], q_positions.tolist(), k_positions.tolist()))
        return q, k

    def logit_bias(self, q, k, q_positions, k_positions):
        self.calls.append(("logit_bias", k.shape[2], q_positions.tolist(), k_positions.tolist()))

    def value_term(self, probs, q_positions, k_positions):
        self.calls.append(("value_term", probs.shape[3], q_positions.tolist(), k_positions.tolist()))


def test_hooks_get_the_new_query_positions_and_the_positions_of_every_cached_key() -> None:
    encoding = _RecordingEncoding()
    attention = MultiHeadAttention(DIM, HEADS, positional=encoding)
    cache = KVCache()
    attention(_inputs(1, 3), cache=cache)
    attention(_inputs(1, 2, seed=1), cache=cache)
    first, second, everything = [0, 1, 2], [3, 4], [0, 1, 2, 3, 4]
    assert encoding.calls == [
        ("rotate", 3, first, first),
        ("logit_bias", 3, first, first),
        ("value_term", 3, first, first),
        ("rotate", 2, second, second),  # only the new keys are rotated
        ("logit_bias", 5, second, everything),
        ("value_term", 5, second, everything),
    ]


def test_the_cache_holds_keys_rotated_once_at_their_positions_and_plain_values() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(DIM, HEADS, positional=RotaryEmbedding(HEAD_DIM))
    x = _inputs(2, 9)
    cache = KVCache()
    assert len(cache) == 0 and cache.keys is None and repr(cache) == "KVCache(tokens=0, keys_shape=None)"
    with torch.no_grad():
        attention(x[:, :6], cache=cache)
        prompt_keys = cache.keys.clone()
        for t in range(6, 9):
            attention(x[:, t : t + 1], cache=cache)
        _, k, v = attention.qkv(x).view(2, 9, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
    assert torch.equal(cache.keys[..., :6, :], prompt_keys)  # never rotated again
    assert_close(cache.keys, apply_rope(k, torch.arange(9)))
    # Plain values: equal up to float32 rounding (one projection of 9 tokens and four of 6, 1, 1 and 1 tokens
    # need not round alike on every CPU); rotated values would differ by O(1).
    assert_close(cache.values, v)
    assert len(cache) == 9 and torch.equal(cache.positions, torch.arange(9))
    assert cache.xpos_centre is None


def test_rope_attention_with_a_cache_matches_hugging_face_llama_attention() -> None:
    """Outputs, attention weights and cached keys and values agree with LlamaAttention and DynamicCache."""
    config = LlamaConfig(
        hidden_size=DIM,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        num_hidden_layers=1,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    llama = LlamaAttention(config, layer_idx=0).eval()
    rotary = LlamaRotaryEmbedding(config)
    ours = MultiHeadAttention(DIM, HEADS, positional=RotaryEmbedding(HEAD_DIM))
    with torch.no_grad():
        ours.qkv.weight.copy_(torch.cat([llama.q_proj.weight, llama.k_proj.weight, llama.v_proj.weight]))
        ours.out.weight.copy_(llama.o_proj.weight)
    x = _inputs(2, 10)
    hf_cache, cache = DynamicCache(config=config), KVCache()
    for a, b in [(0, 6), (6, 7), (7, 10)]:
        future = torch.ones(b - a, b, dtype=torch.bool).triu(a + 1)
        mask = torch.zeros(1, 1, b - a, b).masked_fill(future, float("-inf"))
        with torch.no_grad():
            cos_sin = rotary(x, torch.arange(a, b)[None])
            expected, expected_probs = llama(
                x[:, a:b], position_embeddings=cos_sin, attention_mask=mask, past_key_values=hf_cache
            )
            out, probs = ours(x[:, a:b], cache=cache, return_attention=True)
        assert_close(out, expected)
        assert_close(probs, expected_probs)
    assert_close(cache.keys, hf_cache.layers[0].keys)
    assert_close(cache.values, hf_cache.layers[0].values)


def test_xpos_cache_keeps_the_centre_of_its_first_call() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(DIM, HEADS, positional=XPos(HEAD_DIM)).double()
    x = _inputs(1, 12).double()
    cache = KVCache()
    attention(x[:, :7], torch.arange(100, 107), cache=cache)
    assert cache.xpos_centre == 103  # the middle of the first call's positions
    attention(x[:, 7:], torch.arange(107, 112), cache=cache)
    assert cache.xpos_centre == 103
    fixed = MultiHeadAttention(DIM, HEADS, positional=XPos(HEAD_DIM, centre=0)).double()
    fixed_cache = KVCache()
    fixed(x, cache=fixed_cache)
    assert fixed_cache.xpos_centre is None  # the encoding's own centre serves every call
    with pytest.raises(ValueError, match="centre p0 = 103"):  # float64 scales end 289 519 from the centre
        attention(x[:, :1], torch.tensor([103 + 289_520]), cache=cache)


def _greedy_by_recomputation(model: TinyDecoder, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    tokens = prompt
    with torch.no_grad():
        for _ in range(steps):
            next_token = model(tokens)[:, -1].argmax(-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
    return tokens


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_generate_equals_greedy_decoding_by_full_recomputation(name: str, seed: int) -> None:
    model = _decoder(name, seed=seed)
    prompt = _tokens(2, 5, seed=seed + 10)
    expected = _greedy_by_recomputation(model, prompt, 12)
    generated = model.generate(prompt, 12)
    assert torch.equal(generated, expected)
    assert torch.equal(model.generate(prompt, 12, use_cache=False), expected)
    assert generated[:, 5:].unique().numel() > 1  # the models do not repeat one token: the test can fail
    assert torch.equal(model.generate(prompt, 0), prompt)


@pytest.mark.parametrize("name", [name for name in ENCODING_NAMES if name != "learned"])
def test_generate_far_from_position_zero(name: str) -> None:
    """Memory and results do not depend on how far the positions are from 0 (2^31 - 20 here)."""
    model = _decoder(name)
    prompt = _tokens(2, 5)
    start = 2**31 - 20
    generated = model.generate(prompt, 10, start_position=start)
    assert torch.equal(generated, model.generate(prompt, 10, start_position=start, use_cache=False))
    with torch.no_grad():
        assert torch.isfinite(model(generated[:, :-1], torch.arange(start, start + 14))).all()
    if name != "sinusoidal":  # relative methods see only distances: the same tokens as from position 0
        assert torch.equal(generated, model.generate(prompt, 10))


def test_learned_table_decodes_within_its_length_and_fails_clearly_past_it() -> None:
    torch.manual_seed(0)
    model = TinyDecoder(5, DIM, HEADS, 1, encoding="learned", max_positions=8).eval()
    prompt = _tokens(1, 3, vocab=5)
    assert model.generate(prompt, 6).shape == (1, 9)  # feeds 8 tokens, at positions 0 .. 7
    with pytest.raises(ValueError, match=r"positions 0 to 8, .* max_positions=8"):
        model.generate(prompt, 7)
    with pytest.raises(ValueError, match="max_positions=8"):
        model.generate(prompt, 1, start_position=6)
    with pytest.raises(ValueError, match="max_positions=8"):
        model.generate(prompt, 1, start_position=-1)
    cache = model.new_cache()
    model(_tokens(1, 8, vocab=5), cache=cache)
    with pytest.raises(ValueError, match="max_positions"):
        model(_tokens(1, 1, vocab=5), cache=cache)  # position 8
    assert len(cache[0]) == 8  # the refused call cached nothing


def test_decoder_returns_the_attention_of_every_layer() -> None:
    model = _decoder("alibi", layers=3)
    tokens = _tokens(2, 7)
    with torch.no_grad():
        logits, probs = model(tokens, return_attention=True)
        assert torch.equal(logits, model(tokens))
        x = model.token_embedding(tokens)
        for block, layer_probs in zip(model.blocks, probs, strict=True):
            _, expected = block.attention(block.attention_norm(x), return_attention=True)
            assert_close(layer_probs, expected)
            x = block(x)
        cache = model.new_cache()
        model(tokens[:, :6], cache=cache)
        _, step_probs = model(tokens[:, 6:], cache=cache, return_attention=True)
    assert len(probs) == 3 and all(p.shape == (2, HEADS, 7, 7) for p in probs)
    for step, full in zip(step_probs, probs, strict=True):  # the newest row, over all 7 cached keys
        assert_close(step, full[:, :, 6:])


def test_block_with_a_cache_matches_one_pass() -> None:
    torch.manual_seed(0)
    block = TransformerBlock(DIM, HEADS, positional=build_positional_encoding("t5", dim=DIM, num_heads=HEADS))
    x = _inputs(2, 5)
    cache = KVCache()
    full, probs = block(x, return_attention=True)
    first = block(x[:, :3], cache=cache)
    second, second_probs = block(x[:, 3:], cache=cache, return_attention=True)
    assert_close(torch.cat([first, second], dim=1), full)
    assert_close(second_probs, probs[:, :, 3:])


@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_decoder_runs_on_the_meta_device(name: str) -> None:
    """The meta device has shapes but no values: a host-device synchronisation would fail here."""
    model = TinyDecoder(VOCAB, DIM, HEADS, 2, encoding=name, max_positions=64).to("meta")
    tokens = torch.zeros(2, 6, dtype=torch.int64, device="meta")
    logits = model(tokens)
    assert logits.shape == (2, 6, VOCAB) and logits.device.type == "meta"
    assert model.generate(tokens, 3).shape == (2, 9)


def test_float64_attention_keeps_float64_probabilities() -> None:
    torch.manual_seed(0)
    attention = MultiHeadAttention(DIM, HEADS, causal=False).double()
    x = 10 * _inputs(1, 6).double()
    _, probs = attention(x, return_attention=True)
    q, k, _ = attention.qkv(x).view(1, 6, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM), dim=-1)
    assert_close(probs, expected, rtol=1e-13, atol=1e-15)  # a float32 softmax is off by about 1e-8


def test_bad_cache_and_decoding_input() -> None:
    attention = MultiHeadAttention(DIM, HEADS)
    with pytest.raises(TypeError, match="cache must be a KVCache or None, got list"):
        attention(_inputs(1, 3), cache=[])
    with pytest.raises(ValueError, match=r"cache needs causal attention \(causal=True\)"):
        MultiHeadAttention(DIM, HEADS, causal=False)(_inputs(1, 3), cache=KVCache())
    cache = KVCache()
    attention(_inputs(2, 3), cache=cache)
    with pytest.raises(ValueError, match=r"cache holds keys of shape \(2, 4, 3, 8\)"):
        attention(_inputs(1, 1), cache=cache)
    with pytest.raises(ValueError, match="positions must be a 1-D tensor of length T = 1"):
        attention(_inputs(2, 1), torch.tensor([3, 4]), cache=cache)
    elsewhere = KVCache()
    elsewhere.keys = torch.zeros(2, HEADS, 3, HEAD_DIM, device="meta")
    with pytest.raises(ValueError, match="cache is on meta but the input is on cpu"):
        attention(_inputs(2, 1), cache=elsewhere)

    model = TinyDecoder(5, DIM, HEADS, 2)
    tokens = torch.zeros(1, 3, dtype=torch.int64)
    with pytest.raises(TypeError, match="cache must be None or a list of 2 KVCache objects"):
        model(tokens, cache=KVCache())
    with pytest.raises(TypeError, match="got list of length 1"):
        model(tokens, cache=[KVCache()])
    with pytest.raises(TypeError, match="cache must be a KVCache or None, got str"):
        model(tokens, cache=[KVCache(), "cache"])
    shared = KVCache()
    with pytest.raises(ValueError, match="a different KVCache for each layer"):
        model(tokens, cache=[shared, shared])
    uneven = model.new_cache()
    model.blocks[0](_inputs(1, 2), cache=uneven[0])
    with pytest.raises(ValueError, match=r"different numbers of tokens, \[2, 0\]"):
        model(tokens, cache=uneven)
    with pytest.raises(
        ValueError, match=r"tokens must be ids in \[0, vocab_size\) = \[0, 5\), got ids from 0 to 5"
    ):
        model(torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match="got ids from -1"):
        model.generate(torch.tensor([[-1, 2]]), 2)

    with pytest.raises(ValueError, match=r"tokens must have shape \[batch, T\] with T >= 1"):
        model.generate(torch.zeros(1, 0, dtype=torch.int64), 3)
    with pytest.raises(TypeError, match="tokens must be an integer tensor"):
        model.generate(torch.zeros(1, 3), 2)
    with pytest.raises(ValueError, match="max_new_tokens must be a non-negative integer"):
        model.generate(tokens, -1)
    with pytest.raises(TypeError, match="max_new_tokens must be a non-negative integer"):
        model.generate(tokens, 2.0)
    with pytest.raises(TypeError, match="start_position must be an integer"):
        model.generate(tokens, 2, start_position=1.5)
    with pytest.raises(TypeError, match="use_cache must be True or False"):
        model.generate(tokens, 2, use_cache=1)


def test_one_encoding_per_layer_gives_llama4_style_rope_and_nope_layers() -> None:
    """iRoPE: RoPE in three layers of four, NoPE in the fourth; shared modules are shared per name."""
    torch.manual_seed(0)
    names = ["rope"] * 3 + ["nope"] + ["rope"] * 3 + ["nope"]
    model = TinyDecoder(16, 32, 4, 8, encoding=names).eval()
    encodings = [block.attention.positional for block in model.blocks]
    assert model.encoding == tuple(names)
    assert [type(e).__name__ for e in encodings] == ["RotaryEmbedding"] * 3 + ["NoPE"] + [
        "RotaryEmbedding"
    ] * 3 + ["NoPE"]
    assert encodings[0] is encodings[6] and encodings[3] is encodings[7]
    tokens = torch.randint(0, 16, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cached = model.generate(tokens, max_new_tokens=6)
        uncached = tokens
        for _ in range(6):
            next_token = model(uncached)[:, -1].argmax(-1, keepdim=True)
            uncached = torch.cat([uncached, next_token], dim=1)
    assert torch.equal(cached, uncached)


def test_a_single_name_builds_the_same_model_as_before_per_layer_names() -> None:
    """A list repeating one name is the model of that name: same parameters, same logits."""
    tokens = torch.randint(0, 16, (2, 7), generator=torch.Generator().manual_seed(2))
    for name in ("rope", "t5", "shaw"):
        torch.manual_seed(0)
        single = TinyDecoder(16, 32, 4, 3, encoding=name).eval()
        torch.manual_seed(0)
        listed = TinyDecoder(16, 32, 4, 3, encoding=[name] * 3).eval()
        assert single.state_dict().keys() == listed.state_dict().keys()
        with torch.no_grad():
            torch.testing.assert_close(single(tokens), listed(tokens), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("encoding", "error", "match"),
    [
        (["rope", "nope"], ValueError, "one encoding per layer, num_layers = 3"),
        (["rope", "learned", "nope"], ValueError, "each entry of encoding"),
        (["rope", "rotary", "nope"], ValueError, "each entry of encoding"),
        (3, TypeError, "encoding must be a name or a list of names"),
    ],
)
def test_bad_per_layer_encodings_are_rejected(encoding: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        TinyDecoder(16, 32, 4, 3, encoding=encoding)
