"""Tests for posenc_lib.rope_scaling against transformers 5.18's ROPE_INIT_FUNCTIONS and by properties."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LlamaConfig, Phi3Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from posenc_lib.rope_scaling import (
    dynamic_ntk_scaling,
    linear_scaling,
    llama3_scaling,
    longrope_scaling,
    rope_frequencies,
    rope_inverse_frequencies,
    yarn_scaling,
)

# Hugging Face computes base ** (arange / dim) in float32: the exponent alone is rounded to ~6e-8, which
# becomes ~ln(base) * 6e-8 ~ 1e-6 relative error in the frequency. Our float64 result cast to float32 is
# compared with that relative tolerance and no absolute slack (frequencies go down to ~1e-6).
HF_RTOL = 5e-6

# Phi-3.5-mini-instruct (config.json on the Hugging Face Hub, microsoft/Phi-3.5-mini-instruct): head_dim 96,
# original_max_position_embeddings 4096, max_position_embeddings 131072, rope_theta 10000. The 48 + 48
# values were copied from a public reproduction of that config.json, not fetched from the Hub here.
PHI35_LONG_FACTOR = [
    1.0800000429153442, 1.1100000143051147, 1.1399999856948853, 1.340000033378601, 1.5899999141693115,
    1.600000023841858, 1.6200000047683716, 2.620000123977661, 3.2300000190734863, 3.2300000190734863,
    4.789999961853027, 7.400000095367432, 7.700000286102295, 9.09000015258789, 12.199999809265137,
    17.670000076293945, 24.46000099182129, 28.57000160217285, 30.420001983642578, 30.840002059936523,
    32.590003967285156, 32.93000411987305, 42.320003509521484, 44.96000289916992, 50.340003967285156,
    50.45000457763672, 57.55000305175781, 57.93000411987305, 58.21000289916992, 60.1400032043457,
    62.61000442504883, 62.62000274658203, 62.71000289916992, 63.1400032043457, 63.1400032043457,
    63.77000427246094, 63.93000411987305, 63.96000289916992, 63.970001220703125, 64.02999877929688,
    64.06999969482422, 64.08000183105469, 64.12000274658203, 64.41000366210938, 64.4800033569336,
    64.51000213623047, 64.52999877929688, 64.83999633789062,
]  # fmt: skip
PHI35_SHORT_FACTOR = [
    1.0, 1.0199999809265137, 1.0299999713897705, 1.0299999713897705, 1.0499999523162842,
    1.0499999523162842, 1.0499999523162842, 1.0499999523162842, 1.0499999523162842, 1.0699999332427979,
    1.0999999046325684, 1.1099998950958252, 1.1599998474121094, 1.1599998474121094, 1.1699998378753662,
    1.2899998426437378, 1.339999794960022, 1.679999828338623, 1.7899998426437378, 1.8199998140335083,
    1.8499997854232788, 1.8799997568130493, 1.9099997282028198, 1.9399996995925903, 1.9899996519088745,
    2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346,
    2.0199997425079346, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914,
    2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914,
    2.0799996852874756, 2.0899996757507324, 2.189999580383301, 2.2199995517730713, 2.5899994373321533,
    2.729999542236328, 2.749999523162842, 2.8399994373321533,
]  # fmt: skip

LLAMA31 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def hf_frequencies(
    dim: int,
    base: float,
    rope_parameters: dict,
    *,
    max_position_embeddings: int,
    seq_len: int | None = None,
    head_dim: int | None = None,
) -> tuple[torch.Tensor, float]:
    """Hugging Face's (inv_freq, attention_factor) for a LlamaConfig built the transformers 5.x way."""
    head_dim = dim if head_dim is None else head_dim
    config = LlamaConfig(
        hidden_size=2 * head_dim,
        num_attention_heads=2,
        head_dim=head_dim,
        num_hidden_layers=1,
        vocab_size=8,
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_theta": base, **copy.deepcopy(rope_parameters)},
    )
    rope_type = config.rope_parameters["rope_type"]
    if rope_type == "default":
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[rope_type](config, None, seq_len=seq_len)


def assert_matches_hf(ours: tuple[torch.Tensor, float], theirs: tuple[torch.Tensor, float]) -> None:
    inv_freq, attention_factor = ours
    assert inv_freq.dtype == torch.float64
    assert isinstance(attention_factor, float)
    torch.testing.assert_close(inv_freq.float(), theirs[0], rtol=HF_RTOL, atol=0.0)
    assert math.isclose(attention_factor, theirs[1], rel_tol=1e-12)


# (dim, base, scaling dict, max_position_embeddings for the HF config, seq_len)
HF_CASES = {
    "llama2-default": (128, 10000.0, {"rope_type": "default"}, 4096, None),
    "qwen2-default-type-key": (128, 1000000.0, {"type": "default"}, 32768, None),
    "llama3.1-8b": (128, 500000.0, LLAMA31, 131072, None),
    "llama3.2-1b": (64, 500000.0, {**LLAMA31, "factor": 32.0}, 131072, None),
    "linear-factor-4": (128, 10000.0, {"rope_type": "linear", "factor": 4.0}, 16384, None),
    "linear-factor-2.5-dim-64": (64, 10000.0, {"type": "linear", "factor": 2.5}, 10240, None),
    # Qwen2.5 README's suggested "rope_scaling" for 128k contexts, with the legacy "type" key.
    "yarn-qwen2.5": (
        128,
        1000000.0,
        {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"},
        131072,
        None,
    ),
    # DeepSeek-V3 config.json; rotary dim qk_rope_head_dim = 64.
    "yarn-deepseek-v3": (
        64,
        10000.0,
        {
            "type": "yarn",
            "factor": 40,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
        163840,
        None,
    ),
    # Made-up mscale != mscale_all_dim so the ratio is not 1.
    "yarn-mscale-ratio": (
        64,
        10000.0,
        {
            "rope_type": "yarn",
            "factor": 16.0,
            "original_max_position_embeddings": 4096,
            "mscale": 1.0,
            "mscale_all_dim": 0.5,
        },
        65536,
        None,
    ),
    # A lone mscale is ignored by Hugging Face (and by us): attention factor 0.1 ln s + 1.
    "yarn-lone-mscale": (
        128,
        10000.0,
        {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 2048, "mscale": 0.707},
        16384,
        None,
    ),
    # gpt-oss config.json: head_dim 64, rope_theta 150000, truncate false.
    "yarn-gpt-oss-no-truncate": (
        64,
        150000.0,
        {
            "rope_type": "yarn",
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
        },
        131072,
        None,
    ),
    "yarn-explicit-attention-factor-betas": (
        128,
        10000.0,
        {
            "rope_type": "yarn",
            "factor": 8.0,
            "original_max_position_embeddings": 2048,
            "attention_factor": 1.5,
            "beta_fast": 16.0,
            "beta_slow": 2.0,
        },
        16384,
        None,
    ),
    "yarn-none-optionals": (
        128,
        10000.0,
        {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": None,
            "attention_factor": None,
        },
        16384,
        None,
    ),
    "yarn-factor-1": (
        32,
        10000.0,
        {"rope_type": "yarn", "factor": 1.0, "original_max_position_embeddings": 512},
        512,
        None,
    ),
}
# Made up: L0 > 2*pi*base, so the upper ramp bound passes dim/2 - 1 and is clamped at dim - 1 (not dim/2 - 1).
HF_CASES["yarn-ramp-past-last-pair"] = (
    64,
    10000.0,
    {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 131072},
    262144,
    None,
)
# Made up: L0 = 6 < 2*pi puts both ramp bounds at 0; HF's singularity guard turns the ramp into a step.
HF_CASES["yarn-step-when-bounds-meet"] = (
    64,
    10000.0,
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 6},
    24,
    None,
)
PHI35 = {
    "type": "longrope",
    "short_factor": PHI35_SHORT_FACTOR,
    "long_factor": PHI35_LONG_FACTOR,
    "original_max_position_embeddings": 4096,
    "factor": 32.0,
}
for _seq_len in (None, 100, 4096, 4097, 131072):
    HF_CASES[f"longrope-phi3.5-mini-seq{_seq_len}"] = (96, 10000.0, PHI35, 131072, _seq_len)
HF_CASES["longrope-attention-factor"] = (96, 10000.0, {**PHI35, "attention_factor": 1.25}, 131072, 8000)
# Hugging Face's dynamic reads L0 from max_position_embeddings (4096 here) and ignores the dict's
# original_max_position_embeddings, which it only logs as unrecognised.
for _seq_len in (None, 1, 2048, 4096, 4097, 16384, 100000):
    HF_CASES[f"dynamic-seq{_seq_len}"] = (
        128,
        10000.0,
        {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4096},
        4096,
        _seq_len,
    )
HF_CASES["dynamic-dim-64-factor-8"] = (
    64,
    500000.0,
    {"type": "dynamic", "factor": 8.0, "original_max_position_embeddings": 8192},
    8192,
    50000,
)


@pytest.mark.parametrize("case", HF_CASES.values(), ids=HF_CASES.keys())
def test_rope_frequencies_matches_hugging_face(case: tuple) -> None:
    dim, base, scaling, max_position_embeddings, seq_len = case
    ours = rope_frequencies(dim, base=base, scaling=copy.deepcopy(scaling), seq_len=seq_len)
    theirs = hf_frequencies(
        dim, base, scaling, max_position_embeddings=max_position_embeddings, seq_len=seq_len
    )
    assert_matches_hf(ours, theirs)


def test_each_scaling_function_matches_hugging_face() -> None:
    """The per-type functions, called directly with keyword arguments, equal ROPE_INIT_FUNCTIONS too."""
    max_pos = 131072
    assert_matches_hf(
        llama3_scaling(
            128,
            base=500000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=8192,
        ),
        hf_frequencies(128, 500000.0, LLAMA31, max_position_embeddings=max_pos),
    )
    assert_matches_hf(
        linear_scaling(128, factor=4.0),
        hf_frequencies(128, 10000.0, {"rope_type": "linear", "factor": 4.0}, max_position_embeddings=max_pos),
    )
    assert_matches_hf(
        dynamic_ntk_scaling(128, factor=4.0, original_max_position_embeddings=4096, seq_len=10000),
        hf_frequencies(
            128, 10000.0, {"rope_type": "dynamic", "factor": 4.0}, max_position_embeddings=4096, seq_len=10000
        ),
    )
    assert_matches_hf(
        yarn_scaling(64, base=10000.0, factor=40.0, original_max_position_embeddings=4096, mscale=1.0),
        hf_frequencies(
            64,
            10000.0,
            {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096, "mscale": 1.0},
            max_position_embeddings=163840,
        ),
    )
    assert_matches_hf(
        longrope_scaling(
            96,
            short_factor=PHI35_SHORT_FACTOR,
            long_factor=PHI35_LONG_FACTOR,
            original_max_position_embeddings=4096,
            factor=32.0,
            seq_len=5000,
        ),
        hf_frequencies(96, 10000.0, PHI35, max_position_embeddings=max_pos, seq_len=5000),
    )
    assert_matches_hf(
        (rope_inverse_frequencies(128, base=500000.0), 1.0),
        hf_frequencies(128, 500000.0, {"rope_type": "default"}, max_position_embeddings=8192),
    )


# Random configurations, beyond the real models above, against Hugging Face and against naive float64 loops
# written from the formulas. Hugging Face's float32 arithmetic drifts further from the exact values on some
# random configurations than on the real ones: up to ~1e-5 (yarn) and ~3e-5 (llama3, where a narrow band
# b - a and a large factor amplify the float32 error of the wavelength), measured against the float64 loops,
# which our results match to ~1e-15.
HF_RANDOM_RTOL = 1e-4
optional_positive = st.one_of(st.none(), st.floats(0.1, 2.0))


def naive_yarn(
    dim: int, base: float, factor: float, original: int, beta_fast: float, beta_slow: float, truncate: bool
) -> torch.Tensor:
    def pair_with_turns(turns: float) -> float:
        return dim * math.log(original / (2 * math.pi * turns)) / (2 * math.log(base))

    low, high = pair_with_turns(beta_fast), pair_with_turns(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    values = []
    for c in range(dim // 2):
        theta = base ** (-2 * c / dim)
        ramp = min(max((c - low) / (high - low), 0.0), 1.0)
        values.append((1 - ramp) * theta + ramp * theta / factor)
    return torch.tensor(values, dtype=torch.float64)


def naive_llama3(
    dim: int, base: float, factor: float, original: int, low: float, high: float
) -> torch.Tensor:
    values = []
    for c in range(dim // 2):
        theta = base ** (-2 * c / dim)
        wavelength = 2 * math.pi / theta
        if wavelength < original / high:
            values.append(theta)
        elif wavelength > original / low:
            values.append(theta / factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            values.append((1 - smooth) * theta / factor + smooth * theta)
    return torch.tensor(values, dtype=torch.float64)


def assert_matches_hf_loosely(ours: tuple[torch.Tensor, float], theirs: tuple[torch.Tensor, float]) -> None:
    torch.testing.assert_close(ours[0].float(), theirs[0], rtol=HF_RANDOM_RTOL, atol=0.0)
    assert math.isclose(ours[1], theirs[1], rel_tol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(2, 128).map(lambda half: 2 * half),
    base=st.floats(1e3, 1e7),
    factor=st.floats(1.0, 64.0),
    original=st.integers(64, 1 << 20),
    beta_fast=st.one_of(st.none(), st.floats(8.0, 64.0)),
    beta_slow=st.one_of(st.none(), st.floats(0.25, 4.0)),
    mscale=optional_positive,
    mscale_all_dim=optional_positive,
    attention_factor=optional_positive,
    truncate=st.one_of(st.none(), st.booleans()),
)
def test_yarn_matches_hugging_face_on_random_configs(
    dim: int,
    base: float,
    factor: float,
    original: int,
    beta_fast: float | None,
    beta_slow: float | None,
    mscale: float | None,
    mscale_all_dim: float | None,
    attention_factor: float | None,
    truncate: bool | None,
) -> None:
    scaling = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}
    optional = {
        "beta_fast": beta_fast,
        "beta_slow": beta_slow,
        "mscale": mscale,
        "mscale_all_dim": mscale_all_dim,
        "attention_factor": attention_factor,
        "truncate": truncate,
    }
    scaling.update({key: value for key, value in optional.items() if value is not None})
    ours = rope_frequencies(dim, base=base, scaling=scaling)
    theirs = hf_frequencies(dim, base, scaling, max_position_embeddings=64 * original)
    assert_matches_hf_loosely(ours, theirs)
    naive = naive_yarn(
        dim,
        base,
        factor,
        original,
        32.0 if beta_fast is None else beta_fast,
        1.0 if beta_slow is None else beta_slow,
        truncate is not False,
    )
    torch.testing.assert_close(ours[0], naive, rtol=1e-12, atol=0.0)


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(2, 128).map(lambda half: 2 * half),
    base=st.floats(1e3, 1e7),
    factor=st.floats(1.0, 64.0),
    original=st.integers(64, 1 << 20),
    low_freq_factor=st.floats(0.25, 4.0),
    band=st.floats(0.25, 8.0),
)
def test_llama3_matches_hugging_face_on_random_configs(
    dim: int, base: float, factor: float, original: int, low_freq_factor: float, band: float
) -> None:
    scaling = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": low_freq_factor,
        "high_freq_factor": low_freq_factor + band,
        "original_max_position_embeddings": original,
    }
    ours = rope_frequencies(dim, base=base, scaling=scaling)
    assert_matches_hf_loosely(ours, hf_frequencies(dim, base, scaling, max_position_embeddings=64 * original))
    naive = naive_llama3(dim, base, factor, original, low_freq_factor, low_freq_factor + band)
    torch.testing.assert_close(ours[0], naive, rtol=1e-12, atol=0.0)


@settings(max_examples=40, deadline=None)
@given(
    dim=st.integers(2, 128).map(lambda half: 2 * half),  # dim >= 4: HF divides by d - 2
    base=st.floats(1e3, 1e7),
    factor=st.floats(1.0, 64.0),
    original=st.integers(64, 1 << 20),
    data=st.data(),
)
def test_dynamic_and_longrope_match_hugging_face_on_random_configs(
    dim: int, base: float, factor: float, original: int, data: st.DataObject
) -> None:
    seq_len = data.draw(st.one_of(st.none(), st.integers(1, 64 * original)), label="seq_len")
    dynamic = {"rope_type": "dynamic", "factor": factor, "original_max_position_embeddings": original}
    theirs = hf_frequencies(dim, base, dynamic, max_position_embeddings=original, seq_len=seq_len)
    assert_matches_hf_loosely(rope_frequencies(dim, base=base, scaling=dynamic, seq_len=seq_len), theirs)

    per_pair = st.lists(st.floats(0.5, 100.0), min_size=dim // 2, max_size=dim // 2)
    longrope = {
        "rope_type": "longrope",
        "short_factor": data.draw(per_pair, label="short_factor"),
        "long_factor": data.draw(per_pair, label="long_factor"),
        "original_max_position_embeddings": original,
        "factor": factor,
    }
    theirs = hf_frequencies(dim, base, longrope, max_position_embeddings=64 * original, seq_len=seq_len)
    assert_matches_hf_loosely(rope_frequencies(dim, base=base, scaling=longrope, seq_len=seq_len), theirs)


@pytest.mark.parametrize("seq_len", [None, 4096, 4097])
def test_longrope_matches_phi3_config_with_factor_from_max_position_embeddings(seq_len: int | None) -> None:
    """Phi-3's own config.json layout: L0 at the top level, no factor; HF derives s = 131072 / 4096 = 32."""
    config = Phi3Config(
        hidden_size=3072,
        num_attention_heads=32,
        num_hidden_layers=1,
        vocab_size=32064,
        max_position_embeddings=131072,
        original_max_position_embeddings=4096,
        rope_theta=10000.0,
        rope_scaling={
            "type": "longrope",
            "short_factor": PHI35_SHORT_FACTOR,
            "long_factor": PHI35_LONG_FACTOR,
        },
    )
    theirs = ROPE_INIT_FUNCTIONS["longrope"](config, None, seq_len=seq_len)
    scaling = {**PHI35, "factor": 131072 / 4096}
    assert_matches_hf(rope_frequencies(96, scaling=scaling, seq_len=seq_len), theirs)
    assert math.isclose(theirs[1], math.sqrt(1 + math.log(32) / math.log(4096)))


def test_partial_rotary_factor_other_than_1_is_a_value_error_pointing_to_rope_spec() -> None:
    """dim is the rotated width: a factor in the dict cannot say whether it is applied already, so it is
    refused (silently ignoring it was the issue's complaint). HF rotates int(128 * 0.5) = 64 dims; dim=64
    without the key gives its frequencies, and a factor of 1 changes nothing."""
    scaling = {"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}
    with pytest.raises(ValueError, match=r"partial_rotary_factor.*RopeSpec\.from_config"):
        rope_frequencies(64, scaling=scaling)
    theirs = hf_frequencies(64, 10000.0, scaling, max_position_embeddings=4096, head_dim=128)
    without_key = {key: value for key, value in scaling.items() if key != "partial_rotary_factor"}
    assert_matches_hf(rope_frequencies(64, scaling=without_key), theirs)
    assert_matches_hf(rope_frequencies(64, scaling={**without_key, "partial_rotary_factor": 1.0}), theirs)


def test_rope_theta_equal_to_base_is_accepted() -> None:
    scaling = {**LLAMA31, "rope_theta": 500000}
    torch.testing.assert_close(
        rope_frequencies(128, base=500000.0, scaling=scaling)[0],
        rope_frequencies(128, base=500000.0, scaling=LLAMA31)[0],
        rtol=0.0,
        atol=0.0,
    )


def test_rope_theta_is_the_base_when_base_is_not_passed() -> None:
    """A transformers 5.x rope_parameters dict is enough on its own; without rope_theta the base is 10000."""
    parameters = {**LLAMA31, "rope_theta": 500000.0}
    assert_matches_hf(
        rope_frequencies(128, scaling=parameters),
        hf_frequencies(128, 500000.0, LLAMA31, max_position_embeddings=131072),
    )
    torch.testing.assert_close(
        rope_frequencies(128, scaling={"rope_type": "default", "rope_theta": 1e6})[0],
        rope_inverse_frequencies(128, base=1e6),
        rtol=0.0,
        atol=0.0,
    )
    torch.testing.assert_close(
        rope_frequencies(128, scaling=LLAMA31)[0],
        rope_frequencies(128, base=10000.0, scaling=LLAMA31)[0],
        rtol=0.0,
        atol=0.0,
    )
    torch.testing.assert_close(rope_frequencies(64)[0], rope_inverse_frequencies(64), rtol=0.0, atol=0.0)


def test_rope_theta_different_from_a_passed_base_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"rope_theta.*differs from base = 10000"):
        rope_frequencies(64, base=10000.0, scaling={**LLAMA31, "rope_theta": 500000.0})
    with pytest.raises(ValueError, match="base must be a finite number > 1"):
        rope_frequencies(64, scaling={**LLAMA31, "rope_theta": 1.0})


# --- properties -------------------------------------------------------------------------------------------

even_dims = st.integers(1, 128).map(lambda half: 2 * half)
bases = st.floats(1e3, 1e7)
factors = st.floats(1.0, 64.0)
context_lengths = st.integers(256, 131072)
MARGIN = 1e-9  # keeps the strict thresholds of the properties away from rounding ties


@settings(max_examples=50, deadline=None)
@given(dim=even_dims, base=st.floats(1.0001, 1e7))
def test_rope_inverse_frequencies_matches_a_naive_loop(dim: int, base: float) -> None:
    naive = torch.tensor([base ** (-2.0 * c / dim) for c in range(dim // 2)], dtype=torch.float64)
    ours = rope_inverse_frequencies(dim, base=base)
    assert ours.dtype == torch.float64 and ours.shape == (dim // 2,)
    torch.testing.assert_close(ours, naive, rtol=1e-13, atol=0.0)


@settings(max_examples=50, deadline=None)
@given(dim=even_dims, base=bases, factor=factors)
def test_linear_divides_every_frequency_by_the_factor(dim: int, base: float, factor: float) -> None:
    inv_freq, attention_factor = linear_scaling(dim, base=base, factor=factor)
    torch.testing.assert_close(
        inv_freq * factor, rope_inverse_frequencies(dim, base=base), rtol=1e-13, atol=0.0
    )
    assert attention_factor == 1.0


@settings(max_examples=50, deadline=None)
@given(dim=even_dims, base=bases, factor=factors, original=context_lengths, data=st.data())
def test_dynamic_equals_default_up_to_l0_and_divides_the_lowest_by_alpha_beyond(
    dim: int, base: float, factor: float, original: int, data: st.DataObject
) -> None:
    default = rope_inverse_frequencies(dim, base=base)
    short = data.draw(st.integers(1, original), label="seq_len <= L0")
    scaled, attention_factor = dynamic_ntk_scaling(
        dim, base=base, factor=factor, original_max_position_embeddings=original, seq_len=short
    )
    assert torch.equal(scaled, default) and attention_factor == 1.0
    unscaled_at_init, _ = dynamic_ntk_scaling(
        dim, base=base, factor=factor, original_max_position_embeddings=original
    )
    assert torch.equal(unscaled_at_init, default)

    long = data.draw(st.integers(original + 1, 64 * original), label="seq_len > L0")
    scaled, _ = dynamic_ntk_scaling(
        dim, base=base, factor=factor, original_max_position_embeddings=original, seq_len=long
    )
    alpha = factor * long / original - (factor - 1)
    assert scaled[0] == 1.0
    torch.testing.assert_close(
        scaled[-1], default[-1] / alpha if dim > 2 else default[-1], rtol=1e-12, atol=0.0
    )
    assert bool((scaled <= default * (1 + 1e-12)).all())


def assert_ramp_by_turns(
    scaled: torch.Tensor,
    default: torch.Tensor,
    turns: torch.Tensor,
    factor: float,
    keep_above: float,
    scale_below: float,
) -> None:
    """Unchanged where turns > keep_above, divided by factor where turns < scale_below, monotone between."""
    ratio = scaled / default
    keep = turns > keep_above * (1 + MARGIN)
    interpolate = turns < scale_below * (1 - MARGIN)
    torch.testing.assert_close(ratio[keep], torch.ones_like(ratio[keep]), rtol=1e-12, atol=0.0)
    torch.testing.assert_close(
        ratio[interpolate], torch.full_like(ratio[interpolate], 1 / factor), rtol=1e-12, atol=0.0
    )
    # pairs are ordered from many turns to few: the ratio can only go down, and stays in [1/factor, 1]
    assert bool((ratio[1:] <= ratio[:-1] * (1 + 1e-12)).all())
    assert bool((ratio >= (1 / factor) * (1 - 1e-12)).all() and (ratio <= 1 + 1e-12).all())


@settings(max_examples=60, deadline=None)
@given(
    dim=even_dims.filter(lambda d: d >= 4),
    base=bases,
    factor=factors,
    original=context_lengths,
    beta_fast=st.floats(8.0, 64.0),
    beta_slow=st.floats(0.25, 4.0),
    truncate=st.booleans(),
)
def test_yarn_keeps_high_frequencies_and_interpolates_low_ones(
    dim: int, base: float, factor: float, original: int, beta_fast: float, beta_slow: float, truncate: bool
) -> None:
    scaled, attention_factor = yarn_scaling(
        dim,
        base=base,
        factor=factor,
        original_max_position_embeddings=original,
        beta_fast=beta_fast,
        beta_slow=beta_slow,
        truncate=truncate,
    )
    default = rope_inverse_frequencies(dim, base=base)
    turns = original * default / (2 * math.pi)
    assert_ramp_by_turns(scaled, default, turns, factor, keep_above=beta_fast, scale_below=beta_slow)
    assert math.isclose(attention_factor, 0.1 * math.log(factor) + 1.0, rel_tol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    dim=even_dims.filter(lambda d: d >= 4),
    base=bases,
    factor=factors,
    original=context_lengths,
    low_freq_factor=st.floats(0.25, 4.0),
    band=st.floats(0.25, 8.0),
)
def test_llama3_keeps_short_wavelengths_and_interpolates_long_ones(
    dim: int, base: float, factor: float, original: int, low_freq_factor: float, band: float
) -> None:
    high_freq_factor = low_freq_factor + band
    scaled, attention_factor = llama3_scaling(
        dim,
        base=base,
        factor=factor,
        low_freq_factor=low_freq_factor,
        high_freq_factor=high_freq_factor,
        original_max_position_embeddings=original,
    )
    default = rope_inverse_frequencies(dim, base=base)
    turns = original * default / (2 * math.pi)  # L0 / wavelength
    assert_ramp_by_turns(
        scaled, default, turns, factor, keep_above=high_freq_factor, scale_below=low_freq_factor
    )
    assert attention_factor == 1.0


@settings(max_examples=30, deadline=None)
@given(
    factors_and_dim=st.integers(1, 64).flatmap(
        lambda half: st.tuples(
            st.lists(st.floats(0.5, 100.0), min_size=half, max_size=half),
            st.lists(st.floats(0.5, 100.0), min_size=half, max_size=half),
            st.just(2 * half),
        )
    ),
    original=context_lengths,
)
def test_longrope_divides_by_short_factors_up_to_l0_and_long_ones_beyond(
    factors_and_dim: tuple[list[float], list[float], int], original: int
) -> None:
    short, long, dim = factors_and_dim
    default = rope_inverse_frequencies(dim)
    arguments = {"short_factor": short, "long_factor": long, "original_max_position_embeddings": original}
    for seq_len, expected in ((None, short), (1, short), (original, short), (original + 1, long)):
        scaled, _ = longrope_scaling(dim, factor=4.0, seq_len=seq_len, **arguments)
        naive = torch.tensor([default[c].item() / expected[c] for c in range(dim // 2)], dtype=torch.float64)
        torch.testing.assert_close(scaled, naive, rtol=1e-13, atol=0.0)
    _, attention_factor = longrope_scaling(dim, factor=1.0, **arguments)
    assert attention_factor == 1.0


# --- bad input ----------------------------------------------------------------------------------------------

VALID_SCALINGS = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0, "original_max_position_embeddings": 4096},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096},
    "llama3": LLAMA31,
    "longrope": {
        "rope_type": "longrope",
        "short_factor": [1.0] * 32,
        "long_factor": [2.0] * 32,
        "original_max_position_embeddings": 4096,
        "factor": 8.0,
    },
}


def with_entries(rope_type: str, **entries: object) -> dict:
    return {**copy.deepcopy(VALID_SCALINGS[rope_type]), **entries}


@pytest.mark.parametrize(
    ("rope_type", "key"),
    [(rope_type, key) for rope_type, scaling in VALID_SCALINGS.items() for key in scaling if key != "factor"]
    + [("linear", "factor"), ("dynamic", "factor"), ("yarn", "factor"), ("llama3", "factor")],
)
def test_missing_required_key_is_a_value_error_naming_it(rope_type: str, key: str) -> None:
    scaling = copy.deepcopy(VALID_SCALINGS[rope_type])
    del scaling[key]
    match = "rope_type" if key == "rope_type" else f"missing the key '{key}'"
    with pytest.raises(ValueError, match=match):
        rope_frequencies(64, scaling=scaling)


def test_required_key_set_to_none_is_missing() -> None:
    with pytest.raises(ValueError, match="missing the key 'factor'"):
        rope_frequencies(64, scaling=with_entries("linear", factor=None))


@pytest.mark.parametrize("rope_type", ["proportional", "su", "ntk", "", None, 3])
def test_unknown_rope_type_is_a_value_error_listing_the_types(rope_type: object) -> None:
    with pytest.raises(
        ValueError, match=r"rope_type.*'default', 'linear', 'dynamic', 'yarn', 'llama3', 'longrope'"
    ):
        rope_frequencies(64, scaling={"rope_type": rope_type, "factor": 2.0})


@pytest.mark.parametrize(
    ("scaling", "match"),
    [
        ({"rope_type": "linear", "type": "dynamic", "factor": 2.0}, "disagree"),
        (with_entries("linear", foo=1), "'foo'.*accepted: 'factor'"),
        (with_entries("longrope", short_mscale=1.2), "'short_mscale'"),
        (with_entries("linear", original_max_position_embeddings=4096), "'original_max_position_embeddings'"),
        (with_entries("linear", rope_theta=-1.0), r"rope_theta"),
        (with_entries("linear", partial_rotary_factor=1.5), "partial_rotary_factor"),
        (with_entries("linear", partial_rotary_factor=0.0), "partial_rotary_factor"),
        (with_entries("linear", factor=0.5), "factor must be a number >= 1"),
        (with_entries("dynamic", original_max_position_embeddings=0), "original_max_position_embeddings"),
        (with_entries("yarn", beta_fast=0), "beta_fast"),
        (with_entries("yarn", beta_fast=1.0, beta_slow=2.0), "beta_fast must be >= beta_slow"),
        (with_entries("yarn", mscale=-1.0, mscale_all_dim=1.0), "mscale"),
        (with_entries("yarn", attention_factor=0.0), "attention_factor"),
        (with_entries("yarn", original_max_position_embeddings=2), "leaves no YaRN ramp"),
        (with_entries("llama3", high_freq_factor=1.0), "high_freq_factor must be > low_freq_factor"),
        (with_entries("llama3", low_freq_factor=0), "low_freq_factor"),
        (
            with_entries("longrope", long_factor=[2.0] * 31),
            "long_factor must have one entry per rotated pair",
        ),
        (with_entries("longrope", short_factor=[1.0] * 31 + [-1.0]), r"short_factor\[31\]"),
        (with_entries("longrope", original_max_position_embeddings=1), "original_max_position_embeddings"),
        (with_entries("longrope", factor=None), "'factor'.*'attention_factor'"),
        (with_entries("longrope", attention_factor=-2.0), "attention_factor"),
    ],
)
def test_bad_scaling_values_are_value_errors(scaling: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rope_frequencies(64, scaling=scaling)


@pytest.mark.parametrize(
    ("scaling", "match"),
    [
        ([("rope_type", "linear"), ("factor", 2.0)], "scaling must be None or a dict"),
        (with_entries("linear", factor="4"), "factor"),
        (
            with_entries("dynamic", original_max_position_embeddings=4096.0),
            "original_max_position_embeddings",
        ),
        (with_entries("yarn", truncate=1), "truncate must be a bool"),
        (with_entries("yarn", truncate="false"), "truncate must be a bool"),
        (with_entries("yarn", beta_slow="1"), "beta_slow"),
        (with_entries("llama3", high_freq_factor=[4.0]), "high_freq_factor"),
        (with_entries("longrope", long_factor="2.0"), "long_factor must be a list"),
        (with_entries("longrope", long_factor=None), "missing the key 'long_factor'"),
        (with_entries("longrope", short_factor=[1.0] * 31 + [True]), r"short_factor\[31\]"),
        (with_entries("longrope", short_factor=[1.0] * 31 + ["1"]), r"short_factor\[31\]"),
    ],
)
def test_bad_scaling_types_are_type_errors(scaling: object, match: str) -> None:
    with pytest.raises((TypeError, ValueError), match=match) as error:
        rope_frequencies(64, scaling=scaling)
    expected = ValueError if "missing" in match else TypeError
    assert error.type is expected


@pytest.mark.parametrize(
    ("dim", "base", "error", "match"),
    [
        (0, 10000.0, ValueError, "dim"),
        (-2, 10000.0, ValueError, "dim"),
        (63, 10000.0, ValueError, "dim must be an even"),
        (64.0, 10000.0, TypeError, "dim"),
        (True, 10000.0, TypeError, "dim"),
        (64, 0.0, ValueError, "base"),
        (64, -10.0, ValueError, "base"),
        (64, 1.0, ValueError, "base must be a finite number > 1"),
        (64, math.inf, ValueError, "base"),
        (64, math.nan, ValueError, "base"),
        (64, "10000", TypeError, "base"),
    ],
)
def test_bad_dim_or_base(dim: object, base: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        rope_inverse_frequencies(dim, base=base)
    with pytest.raises(error, match=match):
        rope_frequencies(dim, base=base, scaling=VALID_SCALINGS["linear"])


@pytest.mark.parametrize(
    ("seq_len", "error"), [(0, ValueError), (-5, ValueError), (10.0, TypeError), (True, TypeError)]
)
def test_bad_seq_len(seq_len: object, error: type[Exception]) -> None:
    for scaling in (None, VALID_SCALINGS["linear"], VALID_SCALINGS["dynamic"], VALID_SCALINGS["longrope"]):
        with pytest.raises(error, match="seq_len"):
            rope_frequencies(64, scaling=scaling, seq_len=seq_len)
