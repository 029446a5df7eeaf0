"""Per-layer positions: checked against what transformers' Llama 4, Gemma 3 and Gemma 2 do in each layer."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from transformers import Gemma2Config, Gemma3TextConfig, Llama4TextConfig
from transformers.cache_utils import DynamicCache
from transformers.models.gemma2.modeling_gemma2 import Gemma2Model
from transformers.models.gemma3.modeling_gemma3 import Gemma3TextModel
from transformers.models.llama4 import modeling_llama4

from posenc_lib.layer_patterns import (
    LayerPositioning,
    layer_positioning,
    llama4_attention_temperature,
    llama4_rope_layers,
    rotary_bases_and_windows,
)
from posenc_lib.rope import apply_rope
from posenc_lib.rope_spec import RopeSpec, load_rope_configs

pytestmark = pytest.mark.usefixtures("quiet_transformers")

# Tiny random models: 4 heads of width 8, a larger initialisation than transformers' 0.02 so that positions
# visibly change the attention, and eager attention (explicit masks, and a function the tests can wrap).
TINY = {
    "hidden_size": 32,
    "intermediate_size": 32,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "vocab_size": 64,
    "max_position_embeddings": 128,
    "initializer_range": 0.3,
    "attn_implementation": "eager",
}
LLAMA4 = {**TINY, "intermediate_size_mlp": 32, "num_local_experts": 2, "attention_chunk_size": 3}
# name -> Llama4TextConfig entries over LLAMA4
LLAMA4_CONFIGS = {
    "default-interval": {"num_hidden_layers": 8},
    "interval-3-llama3-scaling": {
        "num_hidden_layers": 7,
        "no_rope_layer_interval": 3,
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    },
    "explicit-list-no-qk-norm": {
        "num_hidden_layers": 6,
        "no_rope_layers": [1, 0, 0, 1, 1, 0],
        "use_qk_norm": False,
    },
}
LENGTH = 8


def _llama4(name: str, **extra: object) -> tuple[Llama4TextConfig, modeling_llama4.Llama4TextModel]:
    config = Llama4TextConfig(**{**LLAMA4, **LLAMA4_CONFIGS[name], **extra})
    torch.manual_seed(0)
    return config, modeling_llama4.Llama4TextModel(config).eval()


def _capture_layer_inputs(model: torch.nn.Module) -> dict[int, dict[str, object]]:
    """Record the keyword arguments (mask, position embeddings) each layer's self-attention receives."""
    captured: dict[int, dict[str, object]] = {}
    for index, layer in enumerate(model.layers):
        layer.self_attn.register_forward_pre_hook(
            lambda module, args, kwargs, index=index: captured.__setitem__(index, kwargs), with_kwargs=True
        )
    return captured


def _allowed(mask: torch.Tensor) -> torch.Tensor:
    """transformers' eager mask (0 where attention is allowed, the dtype's minimum elsewhere) as booleans."""
    return mask[0, 0] == 0


# --- Llama 4 ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LLAMA4_CONFIGS)
def test_llama4_rope_layers_are_the_layers_the_model_rotates(name: str) -> None:
    """A layer rotates if its output changes when the position ids change by more than a common shift."""
    config, model = _llama4(name)
    hidden = torch.randn(1, LENGTH, TINY["hidden_size"])
    positions = torch.arange(LENGTH)[None]
    rotates = []
    with torch.no_grad():
        for layer in model.layers:
            outputs = [
                layer.self_attn(hidden, model.rotary_emb(hidden, ids), attention_mask=None)[0]
                for ids in (positions, 7 * positions + 3)
            ]
            rotates.append(not torch.allclose(*outputs, atol=1e-6))
    assert llama4_rope_layers(config) == rotates
    assert [layer.rope is not None for layer in layer_positioning(config)] == rotates
    assert False in rotates and True in rotates  # the check sees both kinds


def test_llama4_default_pattern_is_every_fourth_layer_without_rope() -> None:
    config = Llama4TextConfig(num_hidden_layers=12)
    assert [index for index, rope in enumerate(llama4_rope_layers(config)) if not rope] == [3, 7, 11]
    assert llama4_rope_layers(
        {"model_type": "llama4_text", "num_hidden_layers": 6, "no_rope_layers": []}
    ) == [
        True,
        True,
        True,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize("name", LLAMA4_CONFIGS)
def test_llama4_rope_is_interleaved_with_the_models_frequencies(name: str) -> None:
    config, model = _llama4(name)
    spec = next(layer.rope for layer in layer_positioning(config) if layer.rope is not None)
    inv_freq, attention_factor = spec.frequencies()
    assert_close(inv_freq.float(), model.rotary_emb.inv_freq)
    assert spec.layout == "interleaved" and spec.base == 500000.0
    x = torch.randn(2, LENGTH, 4, 8)  # [B, T, H, d_h], transformers' layout before the transpose
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [5, 9, 30, 31, 32, 60, 61, 63]])
    expected, _ = modeling_llama4.apply_rotary_emb(x, x, model.rotary_emb(x, positions))
    ours = apply_rope(x, positions, inv_freq=inv_freq, layout=spec.layout, seq_dim=-3)
    assert_close(ours * attention_factor, expected, atol=1e-5, rtol=1e-5)
    control = apply_rope(x, positions, inv_freq=inv_freq, layout="half", seq_dim=-3)
    assert (control - expected).abs().max() > 0.1


def _record_queries(monkeypatch: pytest.MonkeyPatch) -> dict[int, torch.Tensor]:
    """Wrap transformers' eager attention to record each layer's queries [B, H, T, d_h] at the softmax."""
    queries: dict[int, torch.Tensor] = {}
    original = modeling_llama4.eager_attention_forward

    def recording(module: torch.nn.Module, query: torch.Tensor, *args: object, **kwargs: object) -> object:
        queries[module.layer_idx] = query.detach().clone()
        return original(module, query, *args, **kwargs)

    monkeypatch.setattr(modeling_llama4, "eager_attention_forward", recording)
    return queries


def _query_scale(model: torch.nn.Module, layer: int, inputs: dict, queries: dict) -> torch.Tensor:
    """The factor per token between the query at the softmax and the layer's plain projection q_proj(h)."""
    attention = model.layers[layer].self_attn
    hidden = inputs[layer]["hidden_states"]
    plain = attention.q_proj(hidden).view(*hidden.shape[:2], -1, attention.head_dim).transpose(1, 2)
    scaled = queries[layer]
    return (scaled * plain).sum(dim=(0, 1, 3)) / plain.square().sum(dim=(0, 1, 3))  # least squares


def test_llama4_temperature_and_qk_norm_are_what_the_model_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Queries of NoPE layers scale by tau(index), the index in the sequence, whatever the position ids;
    RoPE layers normalise queries to unit root mean square instead."""
    config, model = _llama4("default-interval", floor_scale=2, attn_scale=0.5)
    layers = layer_positioning(config)
    queries = _record_queries(monkeypatch)
    inputs = _capture_layer_inputs(model)
    with torch.no_grad():
        model(torch.randint(0, 64, (2, LENGTH)), position_ids=torch.arange(100, 100 + LENGTH)[None])
        expected = llama4_attention_temperature(torch.arange(LENGTH), floor_scale=2, attn_scale=0.5)
        assert expected.unique().numel() == 5  # 1 and four larger values over these 8 tokens
        for index, layer in enumerate(layers):
            if layer.rope is None:
                assert layer.temperature == (2.0, 0.5)
                assert_close(_query_scale(model, index, inputs, queries), expected, atol=1e-6, rtol=1e-6)
            else:
                assert layer.temperature is None
            rms = queries[index].square().mean(dim=-1).sqrt()
            assert torch.allclose(rms, torch.ones_like(rms), atol=1e-4) == layer.qk_norm
    assert [layer.qk_norm for layer in layers] == llama4_rope_layers(config)


def test_llama4_temperature_counts_the_cached_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    config, model = _llama4("default-interval", floor_scale=2, attn_scale=0.5)
    queries = _record_queries(monkeypatch)
    inputs = _capture_layer_inputs(model)
    tokens = torch.randint(0, 64, (1, LENGTH))
    cache = DynamicCache(config=config)
    with torch.no_grad():
        model(tokens[:, :5], past_key_values=cache, use_cache=True)
        model(tokens[:, 5:], past_key_values=cache, use_cache=True)
        expected = llama4_attention_temperature(torch.arange(5, LENGTH), floor_scale=2, attn_scale=0.5)
        for index in (3, 7):
            assert_close(_query_scale(model, index, inputs, queries), expected, atol=1e-6, rtol=1e-6)
        restarted = llama4_attention_temperature(torch.arange(3), floor_scale=2, attn_scale=0.5)
        assert (expected - restarted).abs().min() > 0.3  # control: an index that ignored the cache differs


@pytest.mark.parametrize("name", LLAMA4_CONFIGS)
def test_llama4_masks_are_chunked_on_rope_layers_and_full_on_nope_layers(name: str) -> None:
    config, model = _llama4(name)
    captured = _capture_layer_inputs(model)
    with torch.no_grad():
        model(torch.randint(0, 64, (1, LENGTH)))
    for index, layer in enumerate(layer_positioning(config)):
        assert torch.equal(_allowed(captured[index]["attention_mask"]), layer.attention_mask(LENGTH))
        assert layer.layer_type == ("chunked_attention" if layer.rope is not None else "full_attention")
        assert layer.chunk_size == (3 if layer.rope is not None else None)


# --- Gemma 3 and Gemma 2 ----------------------------------------------------------------------------------

GEMMA3_CONFIGS = {
    "default-pattern": {"num_hidden_layers": 7, "sliding_window": 3},
    "explicit-types-linear-global": {
        "num_hidden_layers": 4,
        "sliding_window": 2,
        "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention"],
        "rope_parameters": {
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    },
    # a config.json of the first releases: flat rope keys and an integer pattern
    "legacy-keys-pattern-3": {
        "num_hidden_layers": 6,
        "sliding_window": 4,
        "sliding_window_pattern": 3,
        "rope_theta": 500_000.0,
        "rope_local_base_freq": 20_000.0,
    },
}
POSITIONS = 5 * torch.arange(LENGTH)[None]  # large enough steps for the bases to differ visibly


def _check_layers_against_model(config_values: dict, model: torch.nn.Module) -> set[tuple[float, ...]]:
    """Each layer's cos/sin and mask, as the model passes them to the layer, equal ours; returns the distinct
    cosines of the last token (one per RoPE the layers use)."""
    captured = _capture_layer_inputs(model)
    with torch.no_grad():
        model(torch.randint(0, 64, (1, LENGTH)), position_ids=POSITIONS)
    cosines = set()
    for index, layer in enumerate(layer_positioning(config_values)):
        cos, sin = captured[index]["position_embeddings"]
        half = cos.shape[-1] // 2
        our_cos, our_sin = layer.rope.rotary_embedding().cos_sin(POSITIONS)
        assert_close(our_cos, cos[..., :half], atol=1e-5, rtol=1e-5)
        assert_close(our_sin, sin[..., :half], atol=1e-5, rtol=1e-5)
        assert torch.equal(_allowed(captured[index]["attention_mask"]), layer.attention_mask(LENGTH))
        cosines.add(tuple(cos[0, -1].tolist()))
    return cosines


@pytest.mark.parametrize("name", GEMMA3_CONFIGS)
def test_gemma3_bases_and_windows_are_the_models(name: str) -> None:
    values = {**TINY, **GEMMA3_CONFIGS[name]}
    config = Gemma3TextConfig(**values)
    torch.manual_seed(0)
    model = Gemma3TextModel(config).eval()
    cosines = _check_layers_against_model({"model_type": "gemma3_text", **values}, model)
    assert len(cosines) == 2  # control: the two layer types get different rotations
    # the config object reads as its config.json does
    assert layer_positioning(config) == layer_positioning({"model_type": "gemma3_text", **values})


def test_gemma3_default_bases_and_windows() -> None:
    config = Gemma3TextConfig(num_hidden_layers=12, sliding_window=1024)
    assert rotary_bases_and_windows(config) == 2 * ([(10_000.0, 1024)] * 5 + [(1_000_000.0, None)])


def test_gemma2_alternates_windows_with_one_base() -> None:
    values = {**TINY, "num_hidden_layers": 3, "sliding_window": 3}
    torch.manual_seed(0)
    model = Gemma2Model(Gemma2Config(**values)).eval()
    cosines = _check_layers_against_model({"model_type": "gemma2", **values}, model)
    assert len(cosines) == 1
    expected = [(10_000.0, 3), (10_000.0, None), (10_000.0, 3)]
    assert rotary_bases_and_windows({"model_type": "gemma2", **values}) == expected


def test_real_configs() -> None:
    """Published config.json entries: Gemma 3 1B (window 512), Gemma 3 12B (window 1024, linear 8 on global
    layers only, read through text_config) and Gemma 2 9B (window 4096 on every other layer)."""
    configs = load_rope_configs()
    small = rotary_bases_and_windows(configs["gemma-3-1b-pt"])
    assert small == ([(10_000.0, 512)] * 5 + [(1_000_000.0, None)]) * 4 + [(10_000.0, 512)] * 2
    layers = layer_positioning(configs["gemma-3-12b-it"])
    assert len(layers) == 48 and sum(layer.layer_type == "full_attention" for layer in layers) == 8
    assert {(layer.layer_type, layer.rope.rope_type, layer.sliding_window) for layer in layers} == {
        ("full_attention", "linear", None),
        ("sliding_attention", "default", 1024),
    }
    assert rotary_bases_and_windows(configs["gemma-2-9b"]) == [(10_000.0, 4096), (10_000.0, None)] * 21


# --- properties -------------------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(floor_scale=st.integers(1, 50), attn_scale=st.floats(0.0, 2.0), steps=st.integers(0, 30))
def test_temperature_is_a_staircase_in_log(floor_scale: int, attn_scale: float, steps: int) -> None:
    positions = torch.arange(0, floor_scale * (steps + 1))
    tau = llama4_attention_temperature(
        positions, floor_scale=floor_scale, attn_scale=attn_scale, dtype=torch.float64
    )
    assert (tau[: floor_scale - 1] == 1.0).all()
    assert (tau.diff() >= 0).all()
    at_step = tau[floor_scale * torch.arange(1, steps + 2) - 1]  # p = kF - 1: floor((p+1)/F) = k
    assert_close(at_step, 1.0 + attn_scale * torch.log(torch.arange(2, steps + 3, dtype=torch.float64)))


@settings(max_examples=50, deadline=None)
@given(length=st.integers(0, 20), size=st.integers(1, 8), kind=st.sampled_from(["sliding", "chunked"]))
def test_masks_count_the_keys_each_query_sees(length: int, size: int, kind: str) -> None:
    if kind == "sliding":
        layer = LayerPositioning("sliding_attention", None, sliding_window=size)
        expected = [min(query + 1, size) for query in range(length)]
    else:
        layer = LayerPositioning("chunked_attention", None, chunk_size=size)
        expected = [query % size + 1 for query in range(length)]
    mask = layer.attention_mask(length)
    assert mask.sum(dim=1).tolist() == expected
    assert not mask.triu(1).any()  # causal


# --- bad input --------------------------------------------------------------------------------------------


def test_bad_arguments_are_rejected() -> None:
    llama4 = {"model_type": "llama4_text", "num_hidden_layers": 4, "rope_theta": 500000.0, **TINY}
    with pytest.raises(ValueError, match="config\\['model_type'\\] must be one of 'llama4_text'"):
        llama4_rope_layers({"model_type": "llama", "num_hidden_layers": 2})
    with pytest.raises(ValueError, match="config\\['model_type'\\] must be one of"):
        layer_positioning({"model_type": "llama", "num_hidden_layers": 2})
    with pytest.raises(TypeError, match="config must be a transformers config object"):
        layer_positioning(42)
    with pytest.raises(ValueError, match="config\\['no_rope_layers'\\] must hold 0 or 1 for each"):
        llama4_rope_layers({**llama4, "no_rope_layers": [1, 0]})
    with pytest.raises(ValueError, match="config\\['no_rope_layers'\\] must hold 0 or 1 for each"):
        llama4_rope_layers({**llama4, "no_rope_layers": [1, 2, 1, 1]})
    with pytest.raises(ValueError, match="config\\['no_rope_layer_interval'\\] must be a positive integer"):
        llama4_rope_layers({**llama4, "no_rope_layer_interval": 0})
    with pytest.raises(ValueError, match="config\\['layer_types'\\] must have one entry per layer"):
        layer_positioning({**llama4, "layer_types": ["full_attention"]})
    with pytest.raises(ValueError, match="each entry of config\\['layer_types'\\] must be one of"):
        layer_positioning({**llama4, "layer_types": ["sliding_attention"] * 4})
    with pytest.raises(ValueError, match="config\\['attention_chunk_size'\\] is null"):
        layer_positioning({**llama4, "attention_chunk_size": None})
    with pytest.raises(ValueError, match="use_bidirectional_attention"):
        layer_positioning(
            {"model_type": "gemma3_text", "num_hidden_layers": 2, "use_bidirectional_attention": True}
        )
    with pytest.raises(ValueError, match="positions must be indices >= 0"):
        llama4_attention_temperature(torch.tensor([3, -1]))
    with pytest.raises(TypeError, match="positions must be an integer tensor"):
        llama4_attention_temperature(torch.tensor([3.0]))
    with pytest.raises(ValueError, match="floor_scale must be a finite positive number"):
        llama4_attention_temperature(torch.arange(3), floor_scale=0)
    with pytest.raises(ValueError, match="attn_scale must be a finite number >= 0"):
        llama4_attention_temperature(torch.arange(3), attn_scale=-0.1)
    with pytest.raises(TypeError, match=r"dtype must be a floating torch\.dtype"):
        llama4_attention_temperature(torch.arange(3), dtype=torch.int64)
    with pytest.raises(ValueError, match="sliding_window must be a positive integer"):
        LayerPositioning("sliding_attention", None, sliding_window=0)
    with pytest.raises(ValueError, match="chunk_size must be None for layer_type='full_attention'"):
        LayerPositioning("full_attention", None, chunk_size=4)
    with pytest.raises(TypeError, match="rope must be a RopeSpec or None"):
        LayerPositioning("full_attention", 10000.0)
    with pytest.raises(ValueError, match="layer_type must be one of"):
        LayerPositioning("local", None)
    spec = RopeSpec.from_config({**llama4, "max_position_embeddings": 64})
    assert LayerPositioning("full_attention", spec).base == 500000.0
