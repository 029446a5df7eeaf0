"""Tests for posenc_lib.hf.HFRotaryEmbedding: swapped into tiny random transformers 5.18 models."""

from __future__ import annotations

import copy
import importlib
import subprocess
import sys

import mpmath
import pytest
import torch
from torch.testing import assert_close
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from posenc_lib.hf import HFRotaryEmbedding
from posenc_lib.rope_spec import RopeSpec, load_rope_configs

# Tiny random models: 2 layers, 4 heads of width 8. A larger initialisation than transformers' 0.02 makes the
# attention depend strongly on the positions, so that a wrong cos/sin shows in the logits (see the control in
# test_swapped_in_model_gives_the_same_logits_and_generations).
TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 64,
    "max_position_embeddings": 64,
    "initializer_range": 0.3,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": None,
}
# name -> (model_type, config entries over TINY, attribute path of the model's rotary module)
MODELS = {
    "llama": ("llama", {}, "model"),
    "llama-dynamic-ntk": (
        "llama",
        {"max_position_embeddings": 16, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}},
        "model",
    ),
    "qwen2-yarn": (
        "qwen2",
        {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}},
        "model",
    ),
    "phi3-longrope": (  # Phi-3's layout: original length at the top level, no factor
        "phi3",
        {
            "original_max_position_embeddings": 16,
            "rope_scaling": {
                "type": "longrope",
                "short_factor": [1.0, 1.5, 2.0, 3.0],
                "long_factor": [2.0, 4.0, 8.0, 16.0],
            },
        },
        "model",
    ),
    "gemma": ("gemma", {"head_dim": 8}, "model"),
    "gpt-neox": ("gpt_neox", {"rotary_pct": 0.5, "num_key_value_heads": None}, "gpt_neox"),
    "gemma3-per-layer-type": (
        "gemma3_text",
        {
            "head_dim": 8,
            "sliding_window": 4,
            "layer_types": ["sliding_attention", "full_attention"],
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            },
        },
        "model",
    ),
}


pytestmark = pytest.mark.usefixtures("quiet_transformers")


def tiny_model(name: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(transformers' model, a copy of it with HFRotaryEmbedding swapped in), seeded random weights."""
    model_type, entries, path = MODELS[name]
    arguments = {key: value for key, value in {**TINY, **entries}.items() if value is not None}
    config = AutoConfig.for_model(model_type, **arguments)
    torch.manual_seed(0)
    reference = AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    swapped = copy.deepcopy(reference)
    owner = getattr(swapped, path)
    assert "RotaryEmbedding" in type(owner.rotary_emb).__name__  # the attribute really is the rotary module
    owner.rotary_emb = HFRotaryEmbedding(swapped.config)
    return reference, swapped


def left_padded_batch(length: int, padding: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids): row 1 has ``padding`` pad tokens on the left."""
    input_ids = torch.randint(
        2, TINY["vocab_size"], (2, length), generator=torch.Generator().manual_seed(length)
    )
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :padding] = 0
    input_ids[1, :padding] = TINY["pad_token_id"]
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # as generate() builds them
    return input_ids, attention_mask, position_ids


def logits(model: torch.nn.Module, length: int, padding: int = 4) -> torch.Tensor:
    """Logits of the real (not padded) tokens of a left-padded batch."""
    input_ids, attention_mask, position_ids = left_padded_batch(length, padding)
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    return out[attention_mask.bool()]


def generate(model: torch.nn.Module, length: int, new_tokens: int) -> torch.Tensor:
    input_ids, attention_mask, _ = left_padded_batch(length, padding=4)
    return model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens, do_sample=False
    )


# Lengths that cross the models' switches: 16 is L0 for dynamic NTK (max_position_embeddings) and LongRoPE.
LENGTHS = (12, 24, 8, 20, 18)


@pytest.mark.parametrize("name", MODELS)
def test_swapped_in_model_gives_the_same_logits_and_generations(name: str) -> None:
    reference, swapped = tiny_model(name)
    # In this order, dynamic NTK grows (24), resets (8), grows again (20) and keeps (18) its frequencies,
    # and LongRoPE switches to its long factors and back; both modules see the same calls.
    for length in LENGTHS:
        theirs, ours = logits(reference, length), logits(swapped, length)
        assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    # Greedy decoding from 12 tokens to 22 crosses 16 one token at a time.
    assert torch.equal(generate(swapped, 12, new_tokens=10), generate(reference, 12, new_tokens=10))
    # Control: frequencies of another base change the logits far beyond the tolerance above.
    owner = getattr(swapped, MODELS[name][2])
    owner.rotary_emb = HFRotaryEmbedding(
        swapped.config.to_dict() | {"rope_theta": 10.0, "rope_parameters": None}
    )
    assert (logits(swapped, 12) - logits(reference, 12)).abs().max() > 1e-2


def test_dynamic_ntk_and_longrope_switch_exactly_when_transformers_does() -> None:
    """The module's frequencies after each call equal transformers' own module's (its state machine)."""
    for name in ("llama-dynamic-ntk", "phi3-longrope"):
        reference, swapped = tiny_model(name)
        theirs, ours = reference.model.rotary_emb, swapped.model.rotary_emb
        x = torch.zeros(1, 1, 8)
        for length in (5, 16, 17, 40, 30, 15, 16, 20, 3):
            positions = torch.arange(length)[None]
            theirs(x, positions)
            ours(x, positions)
            state = ours._states[None]
            assert_close(state.inv_freq.float(), theirs.inv_freq, rtol=1e-6, atol=0.0)
            assert state.attention_factor == pytest.approx(theirs.attention_scaling, rel=1e-12)


def test_cos_sin_have_transformers_shapes_and_dtype() -> None:
    config = LlamaConfig(**TINY, head_dim=8)
    theirs, ours = LlamaRotaryEmbedding(config), HFRotaryEmbedding(config)
    positions = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]])
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        x = torch.zeros(2, 5, 32, dtype=dtype)
        for mine, reference in zip(ours(x, positions), theirs(x, positions), strict=True):
            assert mine.shape == reference.shape == (2, 5, 8) and mine.dtype == reference.dtype == dtype
            assert_close(
                mine.double(), reference.double(), rtol=1e-2, atol=1e-2 if dtype != torch.float32 else 1e-6
            )
    # floating-point positions give the same angles as the integers they hold
    x = torch.zeros(2, 5, 32)
    assert_close(ours(x, positions.double()), ours(x, positions), rtol=0.0, atol=0.0)


@pytest.mark.parametrize(
    "name", [name for name, entry in load_rope_configs().items() if entry["model_type"] != "gptj"]
)
def test_cos_sin_equal_the_models_own_module_for_published_configs(name: str) -> None:
    """For every published config, with real hyper-parameters, at positions where float32 angles are exact
    enough to compare (< 1024: error below 1024 * 6e-8 rad)."""
    entry = load_rope_configs()[name]
    arguments = {key: value for key, value in entry.items() if key not in ("source", "note")}
    config = AutoConfig.for_model(arguments.pop("model_type"), **copy.deepcopy(arguments)).get_text_config()
    module_name = config.model_type.removesuffix("_text")
    modeling = importlib.import_module(f"transformers.models.{module_name}.modeling_{module_name}")
    (reference_class,) = [
        value
        for attribute, value in vars(modeling).items()
        if attribute.endswith("RotaryEmbedding") and value.__module__ == modeling.__name__
    ]
    theirs, ours = reference_class(config), HFRotaryEmbedding(config)
    positions = torch.stack([torch.arange(0, 1024, 8), torch.arange(1, 1025, 8)])
    x = torch.zeros(2, positions.shape[1], 4)
    for layer_type in ours.layer_types or (None,):
        extra = (layer_type,) if layer_type else ()
        for mine, reference in zip(ours(x, positions, *extra), theirs(x, positions, *extra), strict=True):
            assert mine.shape == reference.shape and mine.dtype == reference.dtype
            assert_close(mine, reference, rtol=0.0, atol=1e-4)


def test_cos_sin_near_position_2_to_the_20_are_exact_where_transformers_are_not() -> None:
    """Against an mpmath reference, theta_c = b^(-2c/r) and the angles computed with 50 digits."""
    config = LlamaConfig(**{**TINY, "max_position_embeddings": 1 << 21}, head_dim=16)
    positions = (1 << 20) + torch.arange(64).reshape(2, 32)
    mpmath.mp.dps = 50
    theta = [mpmath.power(10000, mpmath.mpf(-2 * c) / 16) for c in range(8)]
    exact_cos = torch.tensor(
        [[[float(mpmath.cos(int(p) * t)) for t in theta] * 2 for p in row] for row in positions],
        dtype=torch.float64,
    )
    exact_sin = torch.tensor(
        [[[float(mpmath.sin(int(p) * t)) for t in theta] * 2 for p in row] for row in positions],
        dtype=torch.float64,
    )
    x = torch.zeros(2, 32, 32)
    ours = HFRotaryEmbedding(config)(x, positions)
    theirs = LlamaRotaryEmbedding(config)(x, positions)
    assert max((ours[0].double() - exact_cos).abs().max(), (ours[1].double() - exact_sin).abs().max()) < 2e-6
    assert (
        max((theirs[0].double() - exact_cos).abs().max(), (theirs[1].double() - exact_sin).abs().max()) > 1e-2
    )


def test_other_output_layouts_match_their_models() -> None:
    """gpt-oss returns [B, T, r/2]; Cohere repeats each angle twice in a row."""
    from transformers.models.cohere.modeling_cohere import CohereRotaryEmbedding
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssRotaryEmbedding

    positions = torch.arange(40).reshape(2, 20)
    x = torch.zeros(2, 20, 8)
    gpt_oss = AutoConfig.for_model("gpt_oss", **{**TINY, "head_dim": 8, "eos_token_id": None})
    cohere = AutoConfig.for_model("cohere", **TINY)
    for module, config in ((GptOssRotaryEmbedding, gpt_oss), (CohereRotaryEmbedding, cohere)):
        for mine, reference in zip(
            HFRotaryEmbedding(config)(x, positions), module(config)(x, positions), strict=True
        ):
            assert mine.shape == reference.shape
            assert_close(mine, reference, rtol=0.0, atol=1e-5)


def test_module_has_no_parameters_or_buffers_and_survives_dtype_casts() -> None:
    config = LlamaConfig(**TINY, head_dim=8)
    module = HFRotaryEmbedding(config)
    assert not list(module.parameters()) and not list(module.buffers())
    assert module.spec() == RopeSpec.from_config(config)
    x, positions = torch.zeros(1, 3, 32), torch.arange(3)[None]
    before = module(x, positions)
    module.to(torch.bfloat16)
    assert_close(module(x, positions), before, rtol=0.0, atol=0.0)
    assert "rotary_dim=8" in repr(module)


def test_import_posenc_lib_does_not_import_transformers() -> None:
    code = (
        "import sys, posenc_lib, posenc_lib.rope_spec; "
        "assert 'transformers' not in sys.modules; "
        "import posenc_lib.hf; assert 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("x", "position_ids", "layer_type", "error", "match"),
    [
        ([0.0], torch.zeros(1, 3, dtype=torch.long), None, TypeError, "x must be a torch.Tensor"),
        (
            torch.zeros(1, 3, 8, dtype=torch.long),
            torch.zeros(1, 3, dtype=torch.long),
            None,
            TypeError,
            "x must be",
        ),
        (torch.zeros(1, 3, 8), [[0, 1, 2]], None, TypeError, "position_ids must be a torch.Tensor"),
        (torch.zeros(1, 3, 8), torch.zeros(1, 3, dtype=torch.bool), None, TypeError, "position_ids"),
        (torch.zeros(1, 3, 8), torch.arange(3), None, ValueError, r"position_ids must have shape \[B, T\]"),
        (torch.zeros(1, 3, 8), torch.zeros(1, 1, 3, dtype=torch.long), None, ValueError, r"\[B, T\]"),
        (
            torch.zeros(1, 3, 8),
            torch.zeros(1, 3, dtype=torch.long),
            "full_attention",
            ValueError,
            "layer_type",
        ),
    ],
)
def test_bad_input(
    x: object, position_ids: object, layer_type: str | None, error: type[Exception], match: str
) -> None:
    module = HFRotaryEmbedding(LlamaConfig(**TINY, head_dim=8))
    with pytest.raises(error, match=match):
        module(x, position_ids, layer_type)


def test_per_layer_type_module_needs_a_layer_type() -> None:
    _, swapped = tiny_model("gemma3-per-layer-type")
    with pytest.raises(ValueError, match="layer_type must be one of 'full_attention', 'sliding_attention'"):
        swapped.model.rotary_emb(torch.zeros(1, 3, 8), torch.arange(3)[None])
