"""Multi-head latent attention: checked against transformers' DeepSeek-V3 attention, and by its properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from transformers import DeepseekV3Config
from transformers.cache_utils import DynamicCache
from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
    DeepseekV3Attention,
    DeepseekV3RotaryEmbedding,
    yarn_apply_mscale,
)

from posenc_lib.mla import (
    LatentKVCache,
    MultiHeadLatentAttention,
    absorbed_rope_matrix,
    fixed_absorption_error,
    mla_softmax_scale,
)
from posenc_lib.rope import RotaryEmbedding, apply_rope, rope_permutation
from posenc_lib.rope_spec import load_rope_configs

pytestmark = pytest.mark.usefixtures("quiet_transformers")

# Tiny DeepSeek-V3 attentions: 4 heads, latent 12, no-rope key width 8, rotary width 6, value width 6.
TINY = {
    "hidden_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "kv_lora_rank": 12,
    "qk_nope_head_dim": 8,
    "qk_rope_head_dim": 6,
    "v_head_dim": 6,
    "max_position_embeddings": 64,
    "vocab_size": 64,
    "num_hidden_layers": 1,
    "intermediate_size": 32,
}
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}
# name -> config entries over TINY
CONFIGS = {
    "no-q-latent-interleaved": {"q_lora_rank": None, "rope_interleave": True},
    "q-latent-half": {"q_lora_rank": 16, "rope_interleave": False},
    "q-latent-interleaved-bias": {"q_lora_rank": 16, "attention_bias": True},
    # DeepSeek-V3's own choice mscale = mscale_all_dim = 1: cos/sin unscaled, the softmax scale multiplied.
    "yarn-like-deepseek-v3": {
        "q_lora_rank": 16,
        "rope_parameters": {**YARN, "mscale": 1.0, "mscale_all_dim": 1.0},
    },
    "yarn-mscale-differs": {
        "q_lora_rank": 16,
        "rope_parameters": {**YARN, "mscale": 1.0, "mscale_all_dim": 0.7},
    },
    "yarn-mscale-all-dim-only": {"q_lora_rank": None, "rope_parameters": {**YARN, "mscale_all_dim": 0.7}},
}
# Two rows of position ids: consecutive, and with gaps up to the end of the context.
POSITIONS = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [3, 9, 20, 21, 40, 41, 63]])


def _hf_attention(name: str, *, seed: int = 0) -> tuple[DeepseekV3Config, DeepseekV3Attention]:
    config = DeepseekV3Config(**{**TINY, **CONFIGS[name]})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    attention = DeepseekV3Attention(config, layer_idx=0).eval()
    with torch.no_grad():
        for parameter in attention.parameters():  # larger than the default init: positions matter more
            parameter.normal_(0.0, 0.3)
    return config, attention


def _hf_forward(
    config: DeepseekV3Config,
    attention: DeepseekV3Attention,
    x: torch.Tensor,
    cache: DynamicCache | None = None,
) -> torch.Tensor:
    cos_sin = DeepseekV3RotaryEmbedding(config)(x, POSITIONS)
    causal = torch.full((x.shape[1], x.shape[1]), float("-inf")).triu(1)[None, None]
    with torch.no_grad():
        return attention(x, cos_sin, causal, past_key_values=cache)[0]


def _mla(seed: int = 0, dtype: torch.dtype = torch.float64, **sizes: int | None) -> MultiHeadLatentAttention:
    torch.manual_seed(seed)
    module = MultiHeadLatentAttention(**sizes).to(dtype)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.4)
    return module


SMALL = {
    "hidden_size": 16,
    "num_heads": 3,
    "kv_lora_rank": 5,
    "qk_nope_head_dim": 4,
    "qk_rope_head_dim": 4,
    "v_head_dim": 3,
}


# --- against transformers' DeepseekV3Attention ------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_matches_transformers_deepseek_v3_attention(name: str) -> None:
    config, hf = _hf_attention(name)
    mla = MultiHeadLatentAttention.from_config(config)
    mla.load_state_dict(hf.state_dict())
    x = torch.randn(2, 7, TINY["hidden_size"], generator=torch.Generator().manual_seed(1))
    expected = _hf_forward(config, hf, x)
    with torch.no_grad():
        for absorbed in (False, True):
            assert_close(mla(x, POSITIONS, absorbed=absorbed), expected, atol=2e-5, rtol=1e-5)
    assert mla.softmax_scale == pytest.approx(hf.scaling, rel=1e-15)


def test_cache_holds_what_transformers_caches() -> None:
    """The latent and the one rotary key per token; transformers returns the interleaved pairs de-interleaved
    (evens then odds), a permutation of both q and k that leaves every score unchanged."""
    for name, interleaved in (("no-q-latent-interleaved", True), ("q-latent-half", False)):
        config, hf = _hf_attention(name)
        mla = MultiHeadLatentAttention.from_config(config)
        mla.load_state_dict(hf.state_dict())
        x = torch.randn(2, 7, TINY["hidden_size"])
        hf_cache, cache = DynamicCache(), LatentKVCache()
        _hf_forward(config, hf, x, hf_cache)
        with torch.no_grad():
            mla(x, POSITIONS, cache=cache, absorbed=True)
        hf_latents, hf_rotary_keys = hf_cache.layers[0].keys[:, 0], hf_cache.layers[0].values[:, 0]
        assert_close(cache.latents, hf_latents)
        order = rope_permutation(TINY["qk_rope_head_dim"]) if interleaved else slice(None)
        assert_close(cache.rotary_keys[..., order], hf_rotary_keys, atol=1e-5, rtol=1e-5)
        if interleaved:  # control: the raw layouts differ
            assert not torch.allclose(cache.rotary_keys, hf_rotary_keys, atol=1e-3)
        assert cache.latents.shape[-1] + cache.rotary_keys.shape[-1] == mla.cache_width == 12 + 6


def test_controls_wrong_layout_or_missing_mscale_change_the_output() -> None:
    """The comparison above detects a wrong layout and a softmax scale without DeepSeek's YaRN factor."""
    config, hf = _hf_attention("yarn-like-deepseek-v3")
    x = torch.randn(2, 7, TINY["hidden_size"])
    expected = _hf_forward(config, hf, x)
    right = MultiHeadLatentAttention.from_config(config)
    wrong_layout = MultiHeadLatentAttention.from_config(config)
    wrong_layout.rotary = RotaryEmbedding(6, layout="half", inv_freq=right.rotary.inv_freq)
    no_mscale = MultiHeadLatentAttention.from_config(config)
    no_mscale.softmax_scale = (8 + 6) ** -0.5
    for module in (right, wrong_layout, no_mscale):
        module.load_state_dict(hf.state_dict())
    with torch.no_grad():
        assert_close(right(x, POSITIONS), expected, atol=2e-5, rtol=1e-5)
        for module in (wrong_layout, no_mscale):
            assert (module(x, POSITIONS) - expected).abs().max() > 1e-2


def test_deepseek_v3_config_sizes_and_scale() -> None:
    """The real config: 576 cached numbers per token and layer, not 40,960; YaRN's 1.874 on the scale."""
    entry = load_rope_configs()["DeepSeek-V3"]
    with torch.device("meta"):
        mla = MultiHeadLatentAttention.from_config(entry)
    assert mla.cache_width == 512 + 64 == 576
    assert mla.expanded_cache_width == 128 * (128 + 64 + 128) == 40960
    assert mla.rotary.layout == "interleaved" and mla.rotary.attention_factor == 1.0
    config = DeepseekV3Config(**{k: v for k, v in entry.items() if k not in ("source", "note")})
    assert mla.softmax_scale == pytest.approx(yarn_apply_mscale(config.rope_parameters, 192**-0.5), rel=1e-15)
    assert mla.softmax_scale * math.sqrt(192) == pytest.approx((0.1 * math.log(40) + 1) ** 2)


# --- the absorbed path ------------------------------------------------------------------------------------


@pytest.mark.parametrize("q_lora_rank", [None, 6])
def test_absorbed_decoding_with_the_latent_cache_equals_full_naive_attention(q_lora_rank: int | None) -> None:
    mla = _mla(**SMALL, q_lora_rank=q_lora_rank)
    x = torch.randn(2, 9, SMALL["hidden_size"], dtype=torch.float64)
    positions = torch.arange(100, 109)
    with torch.no_grad():
        full = mla(x, positions)
        for absorbed in (True, False):
            cache = LatentKVCache()
            steps = [mla(x[:, :4], positions[:4], cache=cache, absorbed=absorbed)]
            steps += [
                mla(x[:, t : t + 1], positions[t : t + 1], cache=cache, absorbed=absorbed)
                for t in range(4, 9)
            ]
            assert_close(torch.cat(steps, dim=1), full, atol=1e-12, rtol=1e-12)
            assert len(cache) == 9
            assert cache.latents.shape == (2, 9, 5) and cache.rotary_keys.shape == (2, 9, 4)


def test_default_positions_continue_after_the_cache() -> None:
    mla = _mla(**SMALL)
    x = torch.randn(1, 5, SMALL["hidden_size"], dtype=torch.float64)
    with torch.no_grad():
        cache = LatentKVCache()
        first = mla(x[:, :3], cache=cache)
        rest = mla(x[:, 3:], cache=cache, absorbed=True)
        assert_close(torch.cat([first, rest], dim=1), mla(x), atol=1e-12, rtol=1e-12)


def test_only_offsets_matter() -> None:
    """Decoupled RoPE keeps RoPE's property: shifting every position changes no output."""
    mla = _mla(**SMALL)
    x = torch.randn(2, 6, SMALL["hidden_size"], dtype=torch.float64)
    positions = torch.tensor([0, 2, 3, 7, 8, 20])
    with torch.no_grad():
        assert_close(mla(x, positions), mla(x, positions + 12345), atol=1e-10, rtol=1e-10)
        assert (mla(x, positions) - mla(x, positions.flip(0))).abs().max() > 1e-3  # control


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 3),
    nope=st.integers(1, 5),
    rope_pairs=st.integers(1, 3),
    latent=st.integers(1, 6),
    value=st.integers(1, 4),
    q_lora=st.one_of(st.none(), st.integers(1, 5)),
    length=st.integers(1, 5),
    start=st.integers(-50, 50),
    seed=st.integers(0, 2**16),
)
def test_absorbed_equals_naive_for_any_small_sizes(
    heads: int,
    nope: int,
    rope_pairs: int,
    latent: int,
    value: int,
    q_lora: int | None,
    length: int,
    start: int,
    seed: int,
) -> None:
    mla = _mla(
        seed,
        hidden_size=8,
        num_heads=heads,
        kv_lora_rank=latent,
        qk_nope_head_dim=nope,
        qk_rope_head_dim=2 * rope_pairs,
        v_head_dim=value,
        q_lora_rank=q_lora,
    )
    x = torch.randn(2, length, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    positions = start + torch.arange(length) * 3
    with torch.no_grad():
        naive = mla(x, positions)
        assert naive.shape == x.shape and torch.isfinite(naive).all()
        assert_close(mla(x, positions, absorbed=True), naive, atol=1e-11, rtol=1e-11)


def test_low_precision_keeps_its_dtype() -> None:
    mla = _mla(dtype=torch.bfloat16, **SMALL)
    x = torch.randn(1, 4, SMALL["hidden_size"], dtype=torch.bfloat16)
    with torch.no_grad():
        for absorbed in (False, True):
            out = mla(x, absorbed=absorbed)
            assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# --- misconception 18: RoPE between the projections blocks the absorption --------------------------------


def test_absorbed_rope_matrix_is_the_score_between_rotated_query_and_key() -> None:
    generator = torch.Generator().manual_seed(3)
    w_query = torch.randn(8, 10, generator=generator, dtype=torch.float64)
    w_key = torch.randn(8, 5, generator=generator, dtype=torch.float64)
    x = torch.randn(10, generator=generator, dtype=torch.float64)
    c = torch.randn(5, generator=generator, dtype=torch.float64)
    for layout in ("half", "interleaved"):
        for m, n in ((0, 0), (3, 10), (50, 57), (9, 2)):
            q = apply_rope((w_query @ x)[None], torch.tensor([m]), layout=layout)[0]
            k = apply_rope((w_key @ c)[None], torch.tensor([n]), layout=layout)[0]
            matrix = absorbed_rope_matrix(w_query, w_key, torch.tensor([n - m]), layout=layout)[0]
            assert_close(x @ matrix @ c, q @ k, atol=1e-10, rtol=1e-10)
    matrices = absorbed_rope_matrix(w_query, w_key, torch.tensor([0, 7]))
    assert_close(matrices[0], w_query.T @ w_key)  # no rotation at offset 0: the plain product
    assert (matrices[1] - matrices[0]).abs().max() > 0.1  # another offset, another matrix


def test_no_fixed_matrix_serves_all_offsets() -> None:
    generator = torch.Generator().manual_seed(4)
    w_query = torch.randn(8, 10, generator=generator)
    w_key = torch.randn(8, 5, generator=generator)
    offsets = torch.arange(64)
    error = fixed_absorption_error(w_query, w_key, offsets)
    assert 0.5 < error < 1.0
    assert fixed_absorption_error(w_query, w_key, torch.full((5,), 7)) < 1e-12  # one offset: one matrix
    assert fixed_absorption_error(torch.zeros(8, 10), w_key, offsets) == 0.0  # no NaN for zero weights
    # The slow pairs barely turn over 64 offsets; a base that makes every pair fast leaves less in common.
    assert fixed_absorption_error(w_query, w_key, offsets, base=2.0) > error


# --- bad input --------------------------------------------------------------------------------------------


def test_bad_arguments_are_rejected() -> None:
    mla = _mla(**SMALL)
    x = torch.randn(2, 3, SMALL["hidden_size"], dtype=torch.float64)
    with pytest.raises(ValueError, match="hidden_states must have shape"):
        mla(torch.randn(2, 3, 7, dtype=torch.float64))
    with pytest.raises(TypeError, match="hidden_states must be a floating-point tensor"):
        mla(torch.ones(2, 3, SMALL["hidden_size"], dtype=torch.int64))
    with pytest.raises(ValueError, match="positions must have shape"):
        mla(x, torch.arange(4))
    with pytest.raises(TypeError, match="positions must be an integer tensor"):
        mla(x, torch.arange(3.0))
    with pytest.raises(TypeError, match="cache must be a LatentKVCache"):
        mla(x, cache=[])
    with pytest.raises(TypeError, match="absorbed must be True or False"):
        mla(x, absorbed=1)
    cache = LatentKVCache()
    with torch.no_grad():
        mla(x, cache=cache)
    with pytest.raises(ValueError, match="cache holds batch, kv_lora_rank"):
        mla(x[:1], cache=cache)
    with pytest.raises(ValueError, match="qk_rope_head_dim must be even"):
        MultiHeadLatentAttention(**{**SMALL, "qk_rope_head_dim": 3})
    with pytest.raises(ValueError, match="rotary must rotate all qk_rope_head_dim = 4"):
        MultiHeadLatentAttention(**SMALL, rotary=RotaryEmbedding(8))
    with pytest.raises(TypeError, match="rotary must be a RotaryEmbedding"):
        MultiHeadLatentAttention(**SMALL, rotary="rope")
    with pytest.raises(ValueError, match="kv_lora_rank must be a positive integer"):
        MultiHeadLatentAttention(**{**SMALL, "kv_lora_rank": 0})
    with pytest.raises(ValueError, match="config\\['model_type'\\] must be 'deepseek_v3'"):
        MultiHeadLatentAttention.from_config({**TINY, "model_type": "llama"})
    with pytest.raises(ValueError, match="config is missing the key 'kv_lora_rank'"):
        MultiHeadLatentAttention.from_config({**TINY, "model_type": "deepseek_v3", "kv_lora_rank": None})
    with pytest.raises(TypeError, match="config must be a DeepseekV3Config"):
        MultiHeadLatentAttention.from_config(3)
    with pytest.raises(ValueError, match="qk_head_dim must be a positive integer"):
        mla_softmax_scale(0)
    with pytest.raises(ValueError, match="w_query must be \\[d_h, d_in\\] and w_key \\[d_h, d_c\\]"):
        absorbed_rope_matrix(torch.randn(8, 3), torch.randn(6, 3), torch.arange(2))
    with pytest.raises(TypeError, match="offsets must be an integer tensor"):
        absorbed_rope_matrix(torch.randn(8, 3), torch.randn(8, 3), torch.arange(2.0))
    with pytest.raises(ValueError, match="offsets must hold at least one offset"):
        fixed_absorption_error(torch.randn(8, 3), torch.randn(8, 3), torch.arange(0))
    with pytest.raises(ValueError, match="layout must be one of"):
        absorbed_rope_matrix(torch.randn(8, 3), torch.randn(8, 3), torch.arange(2), layout="gptj")
