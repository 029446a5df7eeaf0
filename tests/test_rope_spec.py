"""Tests for posenc_lib.rope_spec: RopeSpec.from_config on published configs, against transformers 5.18."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import pickle

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from transformers import AutoConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.deepseek_v3.modeling_deepseek_v3 import apply_rotary_pos_emb_interleave
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_apply
from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_apply

from posenc_lib.rope import apply_rope, rope_permutation
from posenc_lib.rope_scaling import rope_inverse_frequencies
from posenc_lib.rope_spec import (
    RopeSpec,
    RopeSummary,
    RopeTableRow,
    load_rope_configs,
    rope_layer_types,
    rope_summary,
    rope_table,
)

# transformers computes the frequencies in float32 (base ** (arange / dim) rounds the exponent to ~6e-8, i.e.
# ~ln(base) * 6e-8 ~ 1e-6 relative); ours are float64, compared after casting to float32.
HF_RTOL = 5e-6
MODELS = load_rope_configs()

# What each published config means, written out by hand: (head_dim, rotary_dim, base, layout, rope_type).
EXPECTED = {
    "Llama-2-7b": (128, 128, 10000.0, "half", "default"),
    "Llama-3.1-8B": (128, 128, 500000.0, "half", "llama3"),
    "Llama-3.2-1B": (64, 64, 500000.0, "half", "llama3"),
    "Mistral-7B-v0.1": (128, 128, 10000.0, "half", "default"),
    "Mistral-7B-v0.3": (128, 128, 1e6, "half", "default"),
    "Qwen2-7B-Instruct": (128, 128, 1e6, "half", "default"),
    "Qwen2.5-7B-Instruct-YaRN": (128, 128, 1e6, "half", "yarn"),
    "Phi-3-mini-128k-instruct": (96, 96, 10000.0, "half", "longrope"),
    "phi-2": (80, 32, 10000.0, "half", "default"),
    "stablelm-2-1_6b": (64, 16, 10000.0, "half", "default"),
    "gpt-neox-20b": (96, 24, 10000.0, "half", "default"),
    "pythia-160m": (64, 16, 10000.0, "half", "default"),
    "gemma-7b": (256, 256, 10000.0, "half", "default"),
    "gemma-2-9b": (256, 256, 10000.0, "half", "default"),
    "gemma-3-1b-pt": (256, 256, 1e6, "half", "default"),  # full_attention; sliding_attention: base 10000
    "gemma-3-12b-it": (256, 256, 1e6, "half", "linear"),  # full_attention; sliding_attention: default
    "DeepSeek-V3": (64, 64, 10000.0, "interleaved", "yarn"),
    "gpt-oss-20b": (64, 64, 150000.0, "half", "yarn"),
    "glm-4-9b-chat-hf": (128, 64, 10000.0, "interleaved", "default"),  # partial_rotary_factor 0.5 by default
    "SmolLM2-135M": (64, 64, 100000.0, "half", "default"),
    "gpt-j-6b": (256, 64, 10000.0, "interleaved", "default"),
}


pytestmark = pytest.mark.usefixtures("quiet_transformers")


def hf_config(entry: dict) -> transformers.PretrainedConfig:
    """The transformers config object of a config.json dict (the data file's extra keys left out)."""
    arguments = {key: value for key, value in copy.deepcopy(entry).items() if key not in ("source", "note")}
    return AutoConfig.for_model(arguments.pop("model_type"), **arguments)


def hf_rotary_module(config: transformers.PretrainedConfig) -> torch.nn.Module:
    """The model's own rotary embedding module (``LlamaRotaryEmbedding``, ``Phi3RotaryEmbedding``, ...)."""
    name = config.model_type.removesuffix("_text")
    modeling = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
    classes = [
        getattr(modeling, attribute) for attribute in dir(modeling) if attribute.endswith("RotaryEmbedding")
    ]
    (rotary_class,) = [cls for cls in classes if cls.__module__ == modeling.__name__]
    return rotary_class(config)


def spec_layer_types(entry: dict) -> tuple[str | None, ...]:
    return rope_layer_types(entry) or (None,)


# --- published configs ------------------------------------------------------------------------------------


def test_data_file_has_every_model_of_the_issue_with_its_source() -> None:
    assert set(MODELS) == set(EXPECTED)
    for name, entry in MODELS.items():
        assert " config.json" in entry["source"] and "/" in entry["source"].split()[0], name
        assert isinstance(entry["model_type"], str), name


@pytest.mark.parametrize("name", EXPECTED)
def test_spec_reads_the_published_config(name: str) -> None:
    entry = MODELS[name]
    rotary_dim = EXPECTED[name][1]
    spec = RopeSpec.from_config(entry, layer_type=spec_layer_types(entry)[0])
    assert (spec.head_dim, spec.rotary_dim, spec.base, spec.layout, spec.rope_type) == EXPECTED[name]
    assert spec.max_position_embeddings == entry.get(
        "max_position_embeddings",
        entry.get("n_positions", entry.get("text_config", {}).get("max_position_embeddings")),
    )
    inv_freq, attention_factor = spec.frequencies()
    assert inv_freq.dtype == torch.float64 and inv_freq.shape == (rotary_dim // 2,)
    assert isinstance(attention_factor, float) and attention_factor >= 1.0


@pytest.mark.parametrize("name", [name for name, entry in MODELS.items() if entry["model_type"] != "gptj"])
def test_frequencies_equal_those_of_the_models_own_rotary_module(name: str) -> None:
    """Dict and config object give the same spec, whose frequencies are the model's rotary module's."""
    entry = MODELS[name]
    config = hf_config(entry)
    module = hf_rotary_module(config.get_text_config())
    for layer_type in spec_layer_types(entry):
        from_dict = RopeSpec.from_config(entry, layer_type=layer_type)
        assert from_dict == RopeSpec.from_config(config, layer_type=layer_type)
        prefix = f"{layer_type}_" if layer_type else ""
        inv_freq, attention_factor = from_dict.frequencies()
        assert_close(inv_freq.float(), getattr(module, f"{prefix}inv_freq"), rtol=HF_RTOL, atol=0.0)
        assert math.isclose(attention_factor, getattr(module, f"{prefix}attention_scaling"), rel_tol=1e-12)


def test_gemma3_has_one_rope_per_layer_type() -> None:
    entry = MODELS["gemma-3-12b-it"]
    assert rope_layer_types(entry) == ("full_attention", "sliding_attention")
    full = RopeSpec.from_config(entry, layer_type="full_attention")
    local = RopeSpec.from_config(entry, layer_type="sliding_attention")
    assert dict(full.scaling) == {"rope_type": "linear", "factor": 8.0} and full.base == 1e6
    assert local.scaling is None and local.base == 10000.0
    assert rope_layer_types(MODELS["Llama-3.1-8B"]) == ()


@pytest.mark.parametrize("seq_len", [None, 1, 4096, 4097, 131072])
def test_phi3_longrope_without_factor_switches_like_transformers(seq_len: int | None) -> None:
    """Phi-3's config.json has no 'factor': s = 131072 / 4096 = 32 sets the attention factor."""
    entry = MODELS["Phi-3-mini-128k-instruct"]
    assert "factor" not in entry["rope_scaling"]
    spec = RopeSpec.from_config(entry)
    assert spec.scaling["factor"] == 32.0 and spec.scaling["original_max_position_embeddings"] == 4096
    theirs = ROPE_INIT_FUNCTIONS["longrope"](hf_config(entry), None, seq_len=seq_len)
    ours = spec.frequencies(seq_len)
    assert_close(ours[0].float(), theirs[0], rtol=HF_RTOL, atol=0.0)
    assert math.isclose(ours[1], math.sqrt(1 + math.log(32) / math.log(4096)), rel_tol=1e-12)
    assert math.isclose(ours[1], theirs[1], rel_tol=1e-12)
    long = seq_len is not None and seq_len > 4096
    factors = torch.tensor(
        entry["rope_scaling"]["long_factor" if long else "short_factor"], dtype=torch.float64
    )
    assert_close(ours[0] * factors, rope_inverse_frequencies(96), rtol=1e-13, atol=0.0)


@pytest.mark.parametrize("seq_len", [None, 100, 4096, 4097, 20000])
def test_dynamic_ntk_uses_max_position_embeddings_as_original_length(seq_len: int | None) -> None:
    """transformers' dynamic NTK takes L0 = max_position_embeddings, whatever the dict says."""
    entry = {**MODELS["Llama-2-7b"], "rope_scaling": {"type": "dynamic", "factor": 2.0}}
    spec = RopeSpec.from_config(entry)
    assert spec.scaling["original_max_position_embeddings"] == 4096
    theirs = ROPE_INIT_FUNCTIONS["dynamic"](hf_config(entry), None, seq_len=seq_len)
    assert_close(spec.frequencies(seq_len)[0].float(), theirs[0], rtol=HF_RTOL, atol=0.0)


def test_rotary_embedding_rotates_like_the_model() -> None:
    """Phi-2 (partial, half layout) against its transformers rotation, at positions 0 .. T-1."""
    entry = MODELS["phi-2"]
    spec = RopeSpec.from_config(entry)
    config = hf_config(entry)
    x = torch.randn(2, 3, 50, spec.head_dim, generator=torch.Generator().manual_seed(0))
    cos, sin = hf_rotary_module(config)(x, torch.arange(50)[None])
    rotated, _ = llama_apply(x[..., : spec.rotary_dim], x[..., : spec.rotary_dim], cos, sin)
    expected = torch.cat([rotated, x[..., spec.rotary_dim :]], dim=-1)
    assert_close(spec.rotary_embedding()(x), expected, atol=1e-5, rtol=1e-5)


def test_deepseek_v3_rotates_adjacent_pairs_as_transformers_does() -> None:
    """HF's interleaved rotation returns the pairs de-interleaved: ours, permuted by rope_permutation."""
    spec = RopeSpec.from_config(MODELS["DeepSeek-V3"])
    module = hf_rotary_module(hf_config(MODELS["DeepSeek-V3"]))
    q = torch.randn(1, 2, 40, spec.head_dim, generator=torch.Generator().manual_seed(1))
    cos, sin = module(q, torch.arange(40)[None])
    theirs, _ = apply_rotary_pos_emb_interleave(q, q, cos, sin)
    inv_freq, attention_factor = spec.frequencies()
    ours = apply_rope(
        q, torch.arange(40), layout=spec.layout, inv_freq=inv_freq, attention_factor=attention_factor
    )
    assert_close(ours[..., rope_permutation(spec.head_dim)], theirs, atol=1e-5, rtol=1e-5)
    half = apply_rope(
        q, torch.arange(40), layout="half", inv_freq=inv_freq
    )  # the other layout does not match
    assert (half[..., rope_permutation(spec.head_dim)] - theirs).abs().max() > 0.1


def test_gptj_rotates_the_first_rotary_dim_dimensions_in_adjacent_pairs() -> None:
    spec = RopeSpec.from_config(MODELS["gpt-j-6b"])
    seq_len, heads = 30, 2
    x = torch.randn(
        1, seq_len, heads, spec.head_dim, generator=torch.Generator().manual_seed(2)
    )  # GPT-J's order
    sincos = create_sinusoidal_positions(MODELS["gpt-j-6b"]["n_positions"], spec.rotary_dim)[:seq_len][None]
    sin, cos = torch.split(sincos, spec.rotary_dim // 2, dim=-1)
    rotated = gptj_apply(x[..., : spec.rotary_dim], sin, cos)
    expected = torch.cat([rotated, x[..., spec.rotary_dim :]], dim=-1).transpose(1, 2)
    assert_close(spec.rotary_embedding()(x.transpose(1, 2)), expected, atol=1e-5, rtol=1e-5)


# --- transformers' defaults and precedence ---------------------------------------------------------------

SIZES = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 1, "vocab_size": 8}


@pytest.mark.parametrize(
    "entry",
    [
        {"model_type": "llama", "max_position_embeddings": 2048},
        {
            "model_type": "gpt_oss",
            "max_position_embeddings": 4096,
            "head_dim": 16,
            "rope_scaling": None,
        },  # YaRN
        {"model_type": "phi", "max_position_embeddings": 2048},
        {"model_type": "stablelm", "max_position_embeddings": 2048},
        {"model_type": "gpt_neox", "max_position_embeddings": 2048},
        {"model_type": "gemma", "max_position_embeddings": 2048, "head_dim": 16},
        # GLM: partial_rotary_factor 0.5 and head_dim 128 (not hidden_size / num_attention_heads = 16)
        {"model_type": "glm", "max_position_embeddings": 2048},
        {"model_type": "glm4", "max_position_embeddings": 2048, "rope_theta": 5e6},
        {
            "model_type": "qwen2",
            "max_position_embeddings": 2048,
            "partial_rotary_factor": 0.5,
            "rope_theta": 5e5,
        },
        {  # partial_rotary_factor inside the dict wins over the top-level one
            "model_type": "phi",
            "max_position_embeddings": 2048,
            "partial_rotary_factor": 0.25,
            "rope_parameters": {"rope_type": "default", "rope_theta": 20000.0, "partial_rotary_factor": 0.5},
        },
        {  # rope_scaling, when set, is used instead of rope_parameters
            "model_type": "llama",
            "max_position_embeddings": 8192,
            "rope_scaling": {"rope_type": "linear", "factor": 2.0},
            "rope_parameters": {"rope_type": "linear", "factor": 4.0},
        },
        {  # Phi-3's LongRoPE: factor and original length (4096) from the config class's defaults
            "model_type": "phi3",
            "max_position_embeddings": 16384,
            "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8},
        },
        {  # YaRN: a null factor is max_position_embeddings / original; zero betas and mscales are defaults
            "model_type": "qwen2",
            "max_position_embeddings": 32768,
            "rope_scaling": {
                "rope_type": "yarn",
                "factor": None,
                "original_max_position_embeddings": 4096,
                "beta_fast": 0,
                "mscale": 0,
                "mscale_all_dim": 0.5,
            },
        },
    ],
    ids=lambda entry: entry["model_type"],
)
def test_defaults_and_precedence_are_those_of_transformers(entry: dict) -> None:
    entry = {**SIZES, **entry}
    config = hf_config(entry)
    spec = RopeSpec.from_config(entry)
    assert spec == RopeSpec.from_config(config)
    assert spec.base == config.rope_parameters["rope_theta"]
    if (
        spec.rope_type == "default"
    ):  # GPT-NeoX's default path applies partial_rotary_factor (Llama's ignores it)
        expected = GPTNeoXRotaryEmbedding.compute_default_rope_parameters(config)
    else:
        expected = ROPE_INIT_FUNCTIONS[spec.rope_type](config, None)
    assert_close(spec.frequencies()[0].float(), expected[0], rtol=HF_RTOL, atol=0.0)
    assert math.isclose(spec.frequencies()[1], expected[1], rel_tol=1e-12)


def test_phi3_legacy_type_names_mean_longrope() -> None:
    """Phi3Config renames 'su' and 'yarn' to 'longrope' (transformers 5.18 renames too late for 'su' configs
    to load at all; they are read here as Phi3Config intends)."""
    entry = MODELS["Phi-3-mini-128k-instruct"]
    longrope = RopeSpec.from_config(entry)
    for legacy in ("su", "yarn"):
        assert (
            RopeSpec.from_config({**entry, "rope_scaling": {**entry["rope_scaling"], "type": legacy}})
            == longrope
        )
    with pytest.raises(ValueError, match="rope_type"):  # only Phi-3 has these names
        RopeSpec.from_config({**MODELS["Llama-2-7b"], "rope_scaling": {"type": "su", "factor": 2.0}})


# Random Llama-style configs, in the legacy (rope_scaling + top-level rope_theta) or the transformers 5.x
# (rope_parameters) layout; float32 drifts further from the exact values on some random configurations than on
# the real ones (see tests/test_rope_scaling.py), hence the looser tolerance.
HF_RANDOM_RTOL = 1e-4


@st.composite
def llama_style_configs(draw: st.DrawFn) -> tuple[dict, int | None]:
    head_dim = draw(st.sampled_from([8, 16, 32, 64, 96, 128]))
    heads = draw(st.integers(1, 4))
    partial = draw(
        st.sampled_from([None, 0.25, 0.5, 0.75, 1.0]).filter(
            lambda p: p is None or (int(head_dim * p) % 2 == 0 and int(head_dim * p) >= 2)
        )
    )
    half = int(head_dim * (partial or 1.0)) // 2
    max_positions = draw(st.integers(256, 1 << 17))
    original = draw(st.integers(64, max_positions))
    factor = draw(st.floats(1.0, 64.0))
    # transformers' dynamic NTK raises ZeroDivisionError for r = 2 (its exponent r / (r - 2)); ours returns
    # theta_0 = 1, the only frequency there is. Compare with it only where it computes.
    rope_type = draw(
        st.sampled_from(["default", "linear", "dynamic", "yarn", "llama3", "longrope"]).filter(
            lambda name: name != "dynamic" or half > 1
        )
    )
    parameters: dict = {"rope_type": rope_type}
    if rope_type in ("linear", "dynamic", "yarn", "llama3"):
        parameters["factor"] = factor
    if rope_type in ("yarn", "llama3", "longrope") and draw(st.booleans()):
        parameters["original_max_position_embeddings"] = original
    if rope_type == "yarn":
        parameters.update(beta_fast=draw(st.floats(8.0, 64.0)), beta_slow=draw(st.floats(0.5, 4.0)))
    if rope_type == "llama3":
        low = draw(st.floats(0.5, 4.0))
        parameters.update(low_freq_factor=low, high_freq_factor=low + draw(st.floats(0.5, 8.0)))
    if rope_type == "longrope":
        per_pair = st.lists(st.floats(0.5, 100.0), min_size=half, max_size=half)
        parameters.update(short_factor=draw(per_pair), long_factor=draw(per_pair))
    base = draw(st.floats(1e3, 1e7))
    entry = {
        "model_type": "llama",
        "hidden_size": head_dim * heads,
        "num_attention_heads": heads,
        "num_hidden_layers": 1,
        "vocab_size": 8,
        "max_position_embeddings": max_positions,
    }
    if head_dim != 64 or draw(st.booleans()):
        entry["head_dim"] = head_dim
    if draw(st.booleans()):  # config.json as transformers 4.x wrote it
        entry.update(rope_scaling=parameters, rope_theta=base)
        if partial is not None:
            entry["partial_rotary_factor"] = partial
    else:
        entry["rope_parameters"] = {**parameters, "rope_theta": base}
        if partial is not None:
            entry["rope_parameters"]["partial_rotary_factor"] = partial
    seq_len = draw(st.one_of(st.none(), st.integers(1, 4 * max_positions)))
    return entry, seq_len


@settings(max_examples=30, deadline=None)
@given(case=llama_style_configs())
def test_random_configs_match_transformers(case: tuple[dict, int | None]) -> None:
    entry, seq_len = case
    spec = RopeSpec.from_config(entry)
    config = hf_config(entry)
    assert spec == RopeSpec.from_config(config)
    if (
        spec.rope_type == "default"
    ):  # GPT-NeoX's default path applies partial_rotary_factor (Llama's ignores it)
        theirs = GPTNeoXRotaryEmbedding.compute_default_rope_parameters(config)
    else:
        theirs = ROPE_INIT_FUNCTIONS[spec.rope_type](config, None, seq_len=seq_len)
    ours = spec.frequencies(seq_len)
    assert ours[0].shape == (spec.rotary_dim // 2,)
    assert_close(ours[0].float(), theirs[0], rtol=HF_RANDOM_RTOL, atol=0.0)
    assert math.isclose(ours[1], theirs[1], rel_tol=1e-12)


# --- bad input ---------------------------------------------------------------------------------------------

LLAMA = {**SIZES, "model_type": "llama", "max_position_embeddings": 4096}


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        (42, TypeError, "config must be a transformers config object"),
        ([("model_type", "llama")], TypeError, "config must be"),
        ({**LLAMA, "rope_scaling": "yarn"}, TypeError, r"config\['rope_scaling'\] must be a dict"),
        ({"model_type": "gemma3", "text_config": "gemma"}, TypeError, r"config\['text_config'\]"),
        (
            {"model_type": "llama", "hidden_size": 64, "max_position_embeddings": 64},
            ValueError,
            "num_attention_heads",
        ),
        ({**SIZES, "model_type": "llama"}, ValueError, "max_position_embeddings"),
        ({**LLAMA, "head_dim": 0}, ValueError, "head_dim"),
        ({**LLAMA, "head_dim": 8.0}, TypeError, "head_dim"),
        ({**LLAMA, "partial_rotary_factor": 0.0}, ValueError, "partial_rotary_factor"),
        ({**LLAMA, "partial_rotary_factor": 1.5}, ValueError, "partial_rotary_factor"),
        ({**LLAMA, "partial_rotary_factor": "0.5"}, TypeError, "partial_rotary_factor"),
        ({**LLAMA, "partial_rotary_factor": 0.2}, ValueError, r"partial_rotary_factor.*= 3 .*even"),
        ({**LLAMA, "model_type": "gpt_neox", "rotary_pct": 2}, ValueError, "rotary_pct"),
        ({**SIZES, "model_type": "my_model", "max_position_embeddings": 64}, ValueError, "no 'rope_theta'"),
        ({**LLAMA, "rope_theta": 1.0}, ValueError, r"config\['rope_theta'\] must be a finite number > 1"),
        ({**LLAMA, "rope_theta": "1e4"}, TypeError, "rope_theta"),
        ({**LLAMA, "rope_scaling": {"rope_type": "ntk", "factor": 2.0}}, ValueError, "'default', 'linear'"),
        (
            {**LLAMA, "rope_scaling": {"rope_type": "linear", "type": "yarn", "factor": 2.0}},
            ValueError,
            "disagree",
        ),
        (
            {**LLAMA, "rope_scaling": {"rope_type": "linear"}},
            ValueError,
            r"config\['rope_scaling'\]: scaling is missing the key 'factor'",
        ),
        (
            {**LLAMA, "rope_parameters": {"rope_type": "yarn", "factor": 2.0, "foo": 1}},
            ValueError,
            r"config\['rope_parameters'\]: scaling has the key 'foo'",
        ),
        (
            {**LLAMA, "rope_scaling": {"rope_type": "dynamic", "factor": 0.5}},
            ValueError,
            "factor must be a number >= 1",
        ),
        (
            {
                **MODELS["Phi-3-mini-128k-instruct"],
                "rope_scaling": {
                    **MODELS["Phi-3-mini-128k-instruct"]["rope_scaling"],
                    "long_factor": [2.0] * 47,
                },
            },
            ValueError,
            "long_factor must have one entry per rotated pair",
        ),
        ({**MODELS["gpt-j-6b"], "rotary_dim": None}, TypeError, "rotary_dim"),
        ({**MODELS["gpt-j-6b"], "rotary_dim": 512}, ValueError, "rotary_dim"),
    ],
)
def test_bad_configs_raise_errors_naming_the_key(config: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        RopeSpec.from_config(config)


def test_layer_type_must_fit_the_config() -> None:
    with pytest.raises(ValueError, match="layer_type must be None"):
        RopeSpec.from_config(LLAMA, layer_type="full_attention")
    with pytest.raises(ValueError, match="pass layer_type, one of 'full_attention', 'sliding_attention'"):
        RopeSpec.from_config(MODELS["gemma-3-1b-pt"])
    with pytest.raises(ValueError, match="layer_type must be one of"):
        RopeSpec.from_config(MODELS["gemma-3-1b-pt"], layer_type="global")
    no_rope = {**LLAMA, "layer_types": ["full_attention"], "rope_parameters": {"full_attention": None}}
    with pytest.raises(ValueError, match="have no RoPE"):
        RopeSpec.from_config(no_rope, layer_type="full_attention")


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"rotary_dim": 256}, ValueError, "rotary_dim must be at most head_dim"),
        ({"rotary_dim": 63}, ValueError, "rotary_dim"),
        ({"layout": "neox"}, ValueError, "layout must be one of 'half', 'interleaved'"),
        ({"base": 0.5}, ValueError, "base"),
        ({"scaling": {"factor": 2.0}}, ValueError, "rope_type"),
        ({"scaling": [("rope_type", "linear")]}, TypeError, "scaling must be None or a dict"),
        ({"scaling": {"rope_type": "linear"}}, ValueError, "missing the key 'factor'"),
        ({"max_position_embeddings": 0}, ValueError, "max_position_embeddings"),
    ],
)
def test_bad_fields_are_rejected(fields: dict, error: type[Exception], match: str) -> None:
    valid = {"head_dim": 128, "rotary_dim": 128, "base": 1e4, "layout": "half", "scaling": None}
    with pytest.raises(error, match=match):
        RopeSpec(**{**valid, "max_position_embeddings": 4096, **fields})


def test_spec_is_immutable() -> None:
    spec = RopeSpec.from_config(MODELS["Phi-3-mini-128k-instruct"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.base = 500000.0
    with pytest.raises(TypeError):
        spec.scaling["factor"] = 1.0
    assert isinstance(spec.scaling["long_factor"], tuple)
    assert copy.deepcopy(spec) == spec and pickle.loads(pickle.dumps(spec)) == spec
    assert hash(spec) == hash(RopeSpec.from_config(MODELS["Phi-3-mini-128k-instruct"]))
    assert RopeSpec(**{**dataclasses.asdict(spec), "scaling": {"rope_type": "default"}}).scaling is None


# --- the table of published models (issue 11, item 7): every row against transformers --------------------

TABLE = rope_table()
# Wavelengths 2*pi/theta from transformers' float32 frequencies: within float32 rounding of theta (HF_RTOL).
WAVELENGTH_RTOL = 1e-5


def row_id(row: RopeTableRow) -> str:
    return row.model if row.layer_type is None else f"{row.model}[{row.layer_type}]"


def hf_frequencies(
    entry: dict, layer_type: str | None, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """transformers' float32 ``(unscaled theta_c, theta'_c used at positions < seq_len, attention factor)``.

    The unscaled ones are the rotary module's own ``compute_default_rope_parameters``; the scaled ones are its
    ``inv_freq`` after a forward pass at position ``seq_len - 1`` (which switches LongRoPE to its long
    factors). GPT-J has no rotary module: its frequencies are read back from its sin/cos table at position 1.
    """
    if entry["model_type"] == "gptj":
        sin, cos = create_sinusoidal_positions(2, entry["rotary_dim"])[1].chunk(2)
        inv_freq = torch.atan2(sin, cos)  # the angle at position 1 is theta_c itself (all <= 1 rad)
        return inv_freq, inv_freq, 1.0
    config = hf_config(entry).get_text_config()
    module = hf_rotary_module(config)
    by_layer = {"layer_type": layer_type} if layer_type else {}
    unscaled, _ = type(module).compute_default_rope_parameters(config, **by_layer)
    module(torch.zeros(1, 1, 1, 1), torch.tensor([[seq_len - 1]]), **by_layer)
    prefix = f"{layer_type}_" if layer_type else ""
    return unscaled, getattr(module, f"{prefix}inv_freq"), getattr(module, f"{prefix}attention_scaling")


def hf_rotate(
    entry: dict, layer_type: str | None, q: torch.Tensor, k: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """``q``, ``k`` ``[B, H, T, d_h]`` rotated at positions 0 .. T-1 as the model's attention code does."""
    seq_len = q.shape[-2]
    if entry["model_type"] == "gptj":
        rotary_dim = entry["rotary_dim"]
        sin, cos = create_sinusoidal_positions(seq_len, rotary_dim)[None].chunk(2, dim=-1)

        def rotate(x: torch.Tensor) -> torch.Tensor:  # GPT-J's attention works on [B, T, H, d_h]
            x = x.transpose(1, 2)
            rotated = gptj_apply(x[..., :rotary_dim], sin, cos)
            return torch.cat([rotated, x[..., rotary_dim:]], dim=-1).transpose(1, 2)

        return rotate(q), rotate(k)
    config = hf_config(entry).get_text_config()
    module = hf_rotary_module(config)
    modeling = importlib.import_module(type(module).__module__)
    by_layer = {"layer_type": layer_type} if layer_type else {}
    cos, sin = module(q, torch.arange(seq_len)[None], **by_layer)
    prefix = f"{layer_type}_" if layer_type else ""
    rotary_dim = 2 * getattr(module, f"{prefix}inv_freq").numel()
    # DeepseekV3Attention calls the interleaved variant when config.rope_interleave is set
    apply = (
        modeling.apply_rotary_pos_emb_interleave
        if getattr(config, "rope_interleave", False)
        else modeling.apply_rotary_pos_emb
    )
    q_rot, k_rot = apply(q[..., :rotary_dim], k[..., :rotary_dim], cos, sin)
    return (
        torch.cat([q_rot, q[..., rotary_dim:]], dim=-1),
        torch.cat([k_rot, k[..., rotary_dim:]], dim=-1),
    )


def test_table_covers_the_models_of_the_issue_in_the_files_order() -> None:
    issue_models = {
        "Llama-2-7b",
        "Llama-3.1-8B",
        "Mistral-7B-v0.1",
        "Qwen2.5-7B-Instruct-YaRN",
        "Phi-3-mini-128k-instruct",
        "gemma-2-9b",
        "gemma-3-12b-it",
        "DeepSeek-V3",
        "gpt-oss-20b",
        "pythia-160m",
        "glm-4-9b-chat-hf",
        "SmolLM2-135M",
    }
    assert issue_models <= {row.model for row in TABLE}
    expected = [(name, layer_type) for name in MODELS for layer_type in spec_layer_types(MODELS[name])]
    assert [(row.model, row.layer_type) for row in TABLE] == expected
    for row in TABLE:
        assert row.source == MODELS[row.model]["source"]
        assert row.note == MODELS[row.model].get("note", "")
        assert row.summary == rope_summary(RopeSpec.from_config(MODELS[row.model], layer_type=row.layer_type))


@pytest.mark.parametrize("row", TABLE, ids=row_id)
def test_table_row_equals_what_transformers_computes(row: RopeTableRow) -> None:
    """Widths, base, type, contexts, frequencies, wavelengths and attention factor, from transformers."""
    entry, summary = MODELS[row.model], row.summary
    spec = RopeSpec.from_config(entry, layer_type=row.layer_type)
    config = hf_config(entry).get_text_config()
    factor = (spec.scaling or {}).get("factor")
    if factor is not None and config.max_position_embeddings <= (summary.trained_context or 0):
        # the config adds a scaling but keeps max_position_embeddings at L0 (Qwen2.5's YaRN): s * L0
        assert summary.extended_context == factor * summary.trained_context > config.max_position_embeddings
    else:
        assert summary.extended_context == config.max_position_embeddings
    if (
        entry["model_type"] == "gptj"
    ):  # no rope_parameters: the width is config.rotary_dim, the base in the code
        assert summary.rotary_dim == config.rotary_dim and summary.trained_context == config.n_positions
    else:
        rope = config.rope_parameters[row.layer_type] if row.layer_type else config.rope_parameters
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        assert (summary.head_dim, summary.base, summary.rope_type) == (
            head_dim,
            rope["rope_theta"],
            rope["rope_type"],
        )
        assert summary.rotary_dim == int(head_dim * rope.get("partial_rotary_factor", 1.0))
        trained = rope.get("original_max_position_embeddings", config.max_position_embeddings)
        assert summary.trained_context == (None if rope["rope_type"] == "linear" else trained)
    unscaled, scaled, attention_scaling = hf_frequencies(entry, row.layer_type, summary.extended_context)
    assert unscaled.shape == scaled.shape == (summary.rotary_dim // 2,)
    assert_close(
        rope_inverse_frequencies(summary.rotary_dim, base=summary.base).float(),
        unscaled,
        rtol=HF_RTOL,
        atol=0.0,
    )
    assert_close(spec.frequencies(summary.extended_context)[0].float(), scaled, rtol=HF_RTOL, atol=0.0)
    assert math.isclose(
        summary.longest_wavelength, 2 * math.pi / unscaled.min().item(), rel_tol=WAVELENGTH_RTOL
    )
    assert math.isclose(
        summary.longest_scaled_wavelength, 2 * math.pi / scaled.min().item(), rel_tol=WAVELENGTH_RTOL
    )
    assert math.isclose(summary.attention_factor, attention_scaling, rel_tol=1e-12)
    assert summary.scaled_wavelength_over_extended_context == (
        summary.longest_scaled_wavelength / summary.extended_context
    )
    if summary.trained_context is not None:
        assert summary.wavelength_over_trained_context == summary.longest_wavelength / summary.trained_context


@pytest.mark.parametrize("row", TABLE, ids=row_id)
def test_table_layout_is_that_of_the_models_attention_code(row: RopeTableRow) -> None:
    """The attention logits q_m . k_n after our rotation equal those after the model's own, and differ with
    the other layout. (Logits, not rotated vectors: DeepSeek-V3's code returns the pairs de-interleaved.)"""
    spec = RopeSpec.from_config(MODELS[row.model], layer_type=row.layer_type)
    q, k = torch.randn(2, 1, 2, 24, spec.head_dim, generator=torch.Generator().manual_seed(3))
    theirs = hf_rotate(MODELS[row.model], row.layer_type, q, k)

    def logits(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return queries @ keys.transpose(-1, -2)

    ours = spec.rotary_embedding()
    assert row.summary.layout == spec.layout
    assert_close(logits(ours(q), ours(k)), logits(*theirs), rtol=1e-4, atol=1e-4)
    other = dataclasses.replace(spec, layout="half" if spec.layout == "interleaved" else "interleaved")
    other_rotation = other.rotary_embedding()
    assert (logits(other_rotation(q), other_rotation(k)) - logits(*theirs)).abs().max() > 0.1


def wavelength(base: float, rotary_dim: int, pair: int) -> float:
    """lambda_c = 2 pi / theta_c with theta_c = b^(-2c/r), written out for the expected values below."""
    return 2 * math.pi * base ** (2 * pair / rotary_dim)


LLAMA31_LONGEST = wavelength(500000.0, 128, 63)  # 2 pi 500000^(126/128), about 2.56 million positions
PHI3_LONG_FACTORS = MODELS["Phi-3-mini-128k-instruct"]["rope_scaling"]["long_factor"]
EXPECTED_ROWS = {
    ("Llama-3.1-8B", None): {
        "layout": "half",
        "head_dim": 128,
        "rotary_dim": 128,
        "base": 500000.0,
        "rope_type": "llama3",
        "scaling": "factor=8, high_freq_factor=4, low_freq_factor=1",
        "attention_factor": 1.0,
        "trained_context": 8192,
        "extended_context": 131072,
        "longest_wavelength": LLAMA31_LONGEST,
        # lambda > L0 / low_freq_factor = 8192: the frequency is divided by the factor 8
        "longest_scaled_wavelength": 8 * LLAMA31_LONGEST,
        "wavelength_over_trained_context": LLAMA31_LONGEST / 8192,
        "scaled_wavelength_over_extended_context": 8 * LLAMA31_LONGEST / 131072,
    },
    ("Llama-2-7b", None): {
        "layout": "half",
        "rotary_dim": 128,
        "rope_type": "default",
        "scaling": "",
        "trained_context": 4096,
        "extended_context": 4096,
        "longest_wavelength": wavelength(10000.0, 128, 63),
        "longest_scaled_wavelength": wavelength(10000.0, 128, 63),
        "wavelength_over_trained_context": wavelength(10000.0, 128, 63) / 4096,
    },
    ("glm-4-9b-chat-hf", None): {
        "layout": "interleaved",
        "head_dim": 128,
        "rotary_dim": 64,
        "base": 10000.0,
        "rope_type": "default",
        "trained_context": 131072,
        "extended_context": 131072,
        "longest_wavelength": wavelength(10000.0, 64, 31),
        # the slowest pair turns almost three times within the stated context
        "wavelength_over_trained_context": wavelength(10000.0, 64, 31) / 131072,
    },
    ("Phi-3-mini-128k-instruct", None): {
        "rotary_dim": 96,
        "rope_type": "longrope",
        "scaling": "factor=32, long_factor=1.07..64.76 (48), short_factor=1.1..3.05 (48)",
        "attention_factor": math.sqrt(1 + math.log(32) / math.log(4096)),
        "trained_context": 4096,
        "extended_context": 131072,
        "longest_wavelength": wavelength(10000.0, 96, 47),
        # theta'_c = theta_c / long_factor_c: the slowest pair also has the largest factor
        "longest_scaled_wavelength": wavelength(10000.0, 96, 47) * PHI3_LONG_FACTORS[47],
    },
    ("gemma-3-12b-it", "full_attention"): {
        "rotary_dim": 256,
        "base": 1e6,
        "rope_type": "linear",
        "scaling": "factor=8",
        "trained_context": None,  # linear scaling: the config does not say
        "extended_context": 131072,
        "longest_wavelength": wavelength(1e6, 256, 127),
        "longest_scaled_wavelength": 8 * wavelength(1e6, 256, 127),
        "wavelength_over_trained_context": None,
    },
    ("gemma-3-12b-it", "sliding_attention"): {
        "base": 10000.0,
        "rope_type": "default",
        "trained_context": 131072,
        "longest_wavelength": wavelength(10000.0, 256, 127),
    },
    ("gpt-oss-20b", None): {
        "rotary_dim": 64,
        "base": 150000.0,
        "rope_type": "yarn",
        "scaling": "factor=32, beta_fast=32, beta_slow=1, truncate=False",
        "attention_factor": 0.1 * math.log(32) + 1,  # YaRN's mscale
        "trained_context": 4096,
        "longest_wavelength": wavelength(150000.0, 64, 31),
        # far fewer than beta_slow = 1 turn within L0: the slowest pair is fully interpolated
        "longest_scaled_wavelength": 32 * wavelength(150000.0, 64, 31),
    },
}


@pytest.mark.parametrize(
    "key", EXPECTED_ROWS, ids=lambda key: key[0] if key[1] is None else f"{key[0]}[{key[1]}]"
)
def test_table_rows_of_well_known_models_equal_hand_computed_values(key: tuple[str, str | None]) -> None:
    (row,) = [row for row in rope_table([key[0]]) if row.layer_type == key[1]]
    values = dataclasses.asdict(row.summary)
    for name, expected in EXPECTED_ROWS[key].items():
        if isinstance(expected, float):
            assert math.isclose(values[name], expected, rel_tol=1e-12), name
        else:
            assert values[name] == expected, name


def test_table_rows_are_plain_immutable_data() -> None:
    row = rope_table(["SmolLM2-135M"])[0]
    assert isinstance(row.summary, RopeSummary)
    flat = row.as_dict()
    assert list(flat) == ["model", "layer_type", *dataclasses.asdict(row.summary), "source", "note"]
    assert flat["model"] == "SmolLM2-135M" and flat["base"] == 100000.0 and flat["note"] == ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.summary.base = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.model = "other"
    assert pickle.loads(pickle.dumps(row)) == row


def test_table_keeps_the_files_order_whatever_the_order_of_names() -> None:
    rows = rope_table(["SmolLM2-135M", "Llama-2-7b", "Llama-2-7b"])
    assert [row.model for row in rows] == ["Llama-2-7b", "SmolLM2-135M"]
    assert rope_table(name for name in ["gemma-3-1b-pt"])[1].layer_type == "sliding_attention"
    assert rope_table([]) == []


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.integers(1, 64),
    base=st.floats(1e3, 1e7),  # with L0 >= 256, every YaRN ramp is non-empty (rope_frequencies checks it)
    factor=st.floats(1.0, 64.0),
    rope_type=st.sampled_from(["default", "linear", "yarn", "llama3"]),
    original=st.integers(256, 1 << 15),
    extension=st.integers(1, 8),
)
def test_scaled_wavelength_lies_between_the_unscaled_one_and_factor_times_it(
    pairs: int, base: float, factor: float, rope_type: str, original: int, extension: int
) -> None:
    """Linear, YaRN and Llama 3 move each theta_c into [theta_c / s, theta_c]; linear divides all by s."""
    rotary_dim = 2 * pairs
    scaling = {"rope_type": rope_type, "factor": factor, "original_max_position_embeddings": original}
    if rope_type == "default":
        scaling = None
    elif rope_type == "linear":
        del scaling["original_max_position_embeddings"]
    elif rope_type == "llama3":
        scaling.update(low_freq_factor=1.0, high_freq_factor=4.0)
    spec = RopeSpec(rotary_dim, rotary_dim, base, "half", scaling, original * extension)
    summary = rope_summary(spec)
    longest = summary.longest_wavelength
    assert math.isclose(
        longest, 2 * math.pi / rope_inverse_frequencies(rotary_dim, base=base).min().item(), rel_tol=1e-12
    )
    scale = 1.0 if scaling is None else factor
    assert longest * (1 - 1e-12) <= summary.longest_scaled_wavelength <= scale * longest * (1 + 1e-12)
    if rope_type in ("default", "linear"):
        assert math.isclose(summary.longest_scaled_wavelength, scale * longest, rel_tol=1e-12)
    assert summary.trained_context == (
        None if rope_type == "linear" else original if scaling else original * extension
    )


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: rope_summary(MODELS["Llama-2-7b"]), TypeError, "spec must be a RopeSpec"),
        (lambda: rope_table("Llama-2-7b"), TypeError, r"names must be None or a list of model names"),
        (lambda: rope_table(42), TypeError, "names must be None or a list"),
        (lambda: rope_table([7]), TypeError, "names must hold model names"),
        (lambda: rope_table(["Llama-4"]), ValueError, r"unknown model 'Llama-4'; known models: Llama-2-7b, "),
    ],
)
def test_bad_table_arguments_raise_errors_naming_them(call, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_qwen25_yarn_extends_its_context_four_times_though_max_position_embeddings_stays() -> None:
    """Qwen2.5's README adds YaRN (factor 4, L0 = 32768) and leaves max_position_embeddings at 32768."""
    (row,) = rope_table(["Qwen2.5-7B-Instruct-YaRN"])
    assert MODELS[row.model]["max_position_embeddings"] == 32768
    assert (row.summary.trained_context, row.summary.extended_context) == (32768, 131072)
