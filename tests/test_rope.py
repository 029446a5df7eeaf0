"""RoPE: checked against Hugging Face Llama, GPT-J, GPT-NeoX and rotary-embedding-torch, and by properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rotary_embedding_torch import RotaryEmbedding as LucidrainsRotaryEmbedding
from torch.testing import assert_close
from transformers import GPTNeoXConfig, LlamaConfig
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb as neox_apply
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_apply
from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_apply

from posenc_lib.rope import (
    ROPE_LAYOUTS,
    RotaryEmbedding,
    apply_rope,
    rope_angles,
    rope_permutation,
    rotate_with_cos_sin,
)
from posenc_lib.rope_scaling import rope_inverse_frequencies


def _random(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


def _rope_float64(x: torch.Tensor, positions: torch.Tensor, *, base: float, layout: str) -> torch.Tensor:
    """An independent float64 RoPE written pair by pair, the exact reference for precision tests."""
    x = x.double()
    dim = x.shape[-1]
    out = x.clone()
    for c in range(dim // 2):
        theta = base ** (-2.0 * c / dim)
        angle = positions.double() * theta
        cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        a, b = (c, c + dim // 2) if layout == "half" else (2 * c, 2 * c + 1)
        xa, xb = x[..., a : a + 1], x[..., b : b + 1]
        out[..., a : a + 1] = xa * cos - xb * sin
        out[..., b : b + 1] = xa * sin + xb * cos
    return out


# --- against the real implementations -------------------------------------------------------------


@pytest.mark.parametrize("base", [10000.0, 500000.0])
def test_half_layout_matches_hugging_face_llama(base: float) -> None:
    num_heads, head_dim, seq_len = 4, 64, 300
    config = LlamaConfig(
        hidden_size=num_heads * head_dim,
        num_attention_heads=num_heads,
        rope_parameters={"rope_type": "default", "rope_theta": base},
    )
    q, k = _random(2, num_heads, seq_len, head_dim, seed=1), _random(2, num_heads, seq_len, head_dim, seed=2)
    position_ids = torch.arange(seq_len)[None].expand(2, -1)
    cos, sin = LlamaRotaryEmbedding(config)(q, position_ids)
    q_hf, k_hf = llama_apply(q, k, cos, sin)
    # Hugging Face's angles are float32 (off by ~300 * 6e-8 rad here), ours float64: agree to that error.
    assert_close(apply_rope(q, base=base), q_hf, atol=1e-4, rtol=0)
    assert_close(apply_rope(k, base=base), k_hf, atol=1e-4, rtol=0)


def test_interleaved_layout_matches_gptj() -> None:
    batch, seq_len, num_heads, head_dim = 2, 200, 3, 32
    x = _random(batch, seq_len, num_heads, head_dim, seed=3)  # GPT-J's layout: [B, T, H, D]
    sin, cos = create_sinusoidal_positions(seq_len, head_dim)[None].expand(batch, -1, -1).chunk(2, dim=-1)
    expected = gptj_apply(x, sin, cos)
    ours = apply_rope(x.transpose(1, 2), layout="interleaved").transpose(1, 2)  # a non-contiguous input
    assert_close(ours, expected, atol=2e-5, rtol=1e-5)


def test_interleaved_layout_matches_rotary_embedding_torch() -> None:
    x = _random(2, 4, 128, 64, seed=4)
    expected = LucidrainsRotaryEmbedding(dim=64).rotate_queries_or_keys(x)
    assert_close(apply_rope(x, layout="interleaved"), expected, atol=1e-5, rtol=1e-5)


def test_partial_rotary_matches_gpt_neox() -> None:
    num_heads, head_dim, seq_len = 4, 64, 100
    config = GPTNeoXConfig(
        hidden_size=num_heads * head_dim,
        num_attention_heads=num_heads,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
    )
    q, k = _random(1, num_heads, seq_len, head_dim, seed=5), _random(1, num_heads, seq_len, head_dim, seed=6)
    cos, sin = GPTNeoXRotaryEmbedding(config)(q, torch.arange(seq_len)[None])
    assert cos.shape[-1] == 16  # the check below really is partial
    q_hf, k_hf = neox_apply(q, k, cos, sin)
    assert_close(apply_rope(q, rotary_dim=16), q_hf, atol=1e-5, rtol=1e-5)
    assert_close(apply_rope(k, rotary_dim=16), k_hf, atol=1e-5, rtol=1e-5)


# --- properties ----------------------------------------------------------------------------------

dims = st.sampled_from([2, 4, 8, 16, 64])
layouts = st.sampled_from(["half", "interleaved"])
positions_st = st.integers(min_value=-5000, max_value=5000)


@settings(max_examples=60, deadline=None)
@given(
    dim=dims, layout=layouts, m=positions_st, n=positions_st, shift=positions_st, seed=st.integers(0, 2**16)
)
def test_scores_depend_only_on_relative_position(
    dim: int, layout: str, m: int, n: int, shift: int, seed: int
):
    q, k = (
        _random(1, dim, seed=seed, dtype=torch.float64),
        _random(1, dim, seed=seed + 1, dtype=torch.float64),
    )

    def score(p_q: int, p_k: int) -> torch.Tensor:
        q_rot = apply_rope(q, torch.tensor([p_q]), layout=layout)
        k_rot = apply_rope(k, torch.tensor([p_k]), layout=layout)
        return (q_rot * k_rot).sum()

    assert_close(score(m, n), score(m + shift, n + shift), atol=1e-9, rtol=1e-9)


@settings(max_examples=60, deadline=None)
@given(dim=dims, layout=layouts, seed=st.integers(0, 2**16), start=positions_st)
def test_rotation_keeps_norms(dim: int, layout: str, seed: int, start: int) -> None:
    x = _random(3, 7, dim, seed=seed, dtype=torch.float64)
    y = apply_rope(x, torch.arange(start, start + 7), layout=layout)
    assert_close(y.norm(dim=-1), x.norm(dim=-1))


@settings(max_examples=60, deadline=None)
@given(
    head_dim=st.sampled_from([4, 8, 32, 64]),
    fraction=st.sampled_from([0.25, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
    start=positions_st,
)
def test_layouts_linked_by_permutation(head_dim: int, fraction: float, seed: int, start: int) -> None:
    rotary_dim = max(2, int(head_dim * fraction) // 2 * 2)
    x = _random(2, 9, head_dim, seed=seed, dtype=torch.float64)
    p = torch.arange(start, start + 9)
    perm = rope_permutation(head_dim, rotary_dim=rotary_dim)
    interleaved = apply_rope(x, p, layout="interleaved", rotary_dim=rotary_dim)
    half = apply_rope(x[..., perm], p, layout="half", rotary_dim=rotary_dim)
    assert_close(interleaved[..., perm], half)
    assert sorted(perm.tolist()) == list(range(head_dim))


def test_layouts_differ_without_the_permutation() -> None:
    x = _random(5, 16, seed=7)
    assert not torch.allclose(apply_rope(x, layout="half"), apply_rope(x, layout="interleaved"), atol=1e-3)


def test_partial_rotary_leaves_the_tail_and_uses_its_own_frequencies() -> None:
    x = _random(2, 10, 32, seed=8, dtype=torch.float64)
    y = apply_rope(x, rotary_dim=8)
    assert torch.equal(y[..., 8:], x[..., 8:])
    assert_close(y[..., :8], apply_rope(x[..., :8]))


def test_position_zero_is_the_identity_and_inv_freq_overrides_base() -> None:
    x = _random(4, 1, 16, seed=9)
    assert_close(apply_rope(x, torch.tensor([0])), x, atol=0, rtol=0)
    y = _random(20, 16, seed=10, dtype=torch.float64)
    assert_close(apply_rope(y, base=500.0), apply_rope(y, inv_freq=rope_inverse_frequencies(16, base=500.0)))


def test_attention_factor_scales_the_output() -> None:
    x = _random(12, 8, seed=11, dtype=torch.float64)
    assert_close(apply_rope(x, attention_factor=1.25), 1.25 * apply_rope(x))


def test_input_is_not_modified() -> None:
    for layout in ("half", "interleaved"):
        x = _random(2, 6, 8, seed=12)
        before = x.clone()
        apply_rope(x, layout=layout)
        assert torch.equal(x, before)


# --- precision -----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_float32_accurate_up_to_position_2_pow_20(layout: str) -> None:
    head_dim = 64
    positions = torch.cat([torch.arange(0, 2**20 + 1, 4099), torch.tensor([2**20 - 1, 2**20])])
    x = _random(len(positions), head_dim, seed=13)
    ours = apply_rope(x, positions, layout=layout)
    exact = _rope_float64(x, positions, base=10000.0, layout=layout)
    assert ours.dtype == torch.float32
    assert (ours.double() - exact).abs().max() <= 2e-5


def test_hugging_face_float32_path_is_far_off_at_position_2_pow_20() -> None:
    """The precision test above can fail: Hugging Face's float32 angles miss by ~1e-2 there."""
    head_dim, positions = 64, torch.tensor([2**20 - 3, 2**20 - 2, 2**20 - 1, 2**20])
    config = LlamaConfig(hidden_size=head_dim, num_attention_heads=1)
    x = _random(1, 1, len(positions), head_dim, seed=14)
    cos, sin = LlamaRotaryEmbedding(config)(x, positions[None])
    hf, _ = llama_apply(x, x, cos, sin)
    exact = _rope_float64(x, positions, base=config.rope_parameters["rope_theta"], layout="half")
    assert (hf.double() - exact).abs().max() > 1e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_low_precision_keeps_dtype_with_only_the_final_rounding(dtype: torch.dtype, layout: str) -> None:
    positions = torch.tensor([0, 1, 100, 4095, 65536, 1_000_000])
    x = _random(3, len(positions), 64, seed=15, dtype=dtype)
    ours = apply_rope(x, positions, layout=layout)
    exact = _rope_float64(x, positions, base=10000.0, layout=layout)
    assert ours.dtype == dtype
    # The exact result rounded once to dtype; float32 intermediates may flip a rounding tie, never more.
    one_ulp = (exact.to(dtype).double() - exact).abs() * 2 + torch.finfo(dtype).eps * exact.abs()
    assert ((ours.double() - exact).abs() <= one_ulp + 1e-30).all()
    assert (ours == exact.to(dtype)).double().mean() > 0.99


def test_float64_input_is_computed_in_float64() -> None:
    positions = torch.tensor([3, 2**20, 2**30])
    x = _random(len(positions), 16, seed=16, dtype=torch.float64)
    ours = apply_rope(x, positions, layout="interleaved")
    assert ours.dtype == torch.float64
    assert_close(ours, _rope_float64(x, positions, base=10000.0, layout="interleaved"), atol=1e-9, rtol=0)


# --- the module: cache, offset, dtype casts ------------------------------------------------------


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_module_matches_function_at_any_positions(layout: str) -> None:
    rope = RotaryEmbedding(32, layout=layout)
    x = _random(2, 3, 40, 32, seed=17)
    assert_close(rope(x), apply_rope(x, layout=layout))
    assert_close(rope(x, offset=1000), apply_rope(x, torch.arange(1000, 1040), layout=layout))
    assert_close(rope(x, offset=-7), apply_rope(x, torch.arange(-7, 33), layout=layout))
    rows = torch.stack([torch.arange(40), torch.arange(5, 45)])
    assert_close(rope(x, rows), apply_rope(x, rows, layout=layout))
    assert [name for name, _ in rope.named_buffers()] == []  # no state that grows with the positions


def test_memory_is_proportional_to_tokens_not_to_positions() -> None:
    """One token at position 2**31 - 1 allocates what one token at position 0 does (a few kB)."""
    rope = RotaryEmbedding(128)
    x = _random(1, 8, 1, 128, seed=27)

    def peak_allocation(position: int) -> int:
        with torch.profiler.profile(
            activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
        ) as p:
            rope(x, offset=position)
        return max(event.cpu_memory_usage for event in p.events())

    near, far = peak_allocation(0), peak_allocation(2**31 - 1)
    assert far == near < 64 * 1024, (near, far)
    exact = _rope_float64(x[0], torch.tensor([2**31 - 1]), base=10000.0, layout="half")
    assert (rope(x, offset=2**31 - 1)[0].double() - exact).abs().max() < 2e-6


def test_module_decoding_one_token_at_an_offset_equals_rotating_the_sequence() -> None:
    rope = RotaryEmbedding(16)
    x = _random(1, 2, 10, 16, seed=18)
    whole = rope(x)
    steps = torch.cat([rope(x[..., t : t + 1, :], offset=t) for t in range(10)], dim=-2)
    assert_close(steps, whole)


def test_module_cache_survives_a_cast_to_bfloat16() -> None:
    """A model cast to bfloat16 must not round RoPE's frequencies (transformers #25681)."""
    rope = RotaryEmbedding(64).to(torch.bfloat16)
    x = _random(1, 5000, 64, seed=19)
    exact = _rope_float64(x, torch.arange(5000), base=10000.0, layout="half")
    assert (rope(x).double() - exact).abs().max() < 2e-5
    assert rope.inv_freq.dtype == torch.float64


def test_module_rotate_hook_and_float64() -> None:
    rope = RotaryEmbedding(8, rotary_dim=4, base=100.0)
    q, k = (
        _random(1, 2, 5, 8, seed=20, dtype=torch.float64),
        _random(1, 2, 7, 8, seed=21, dtype=torch.float64),
    )
    qp, kp = torch.arange(2, 7), torch.arange(7)
    q_rot, k_rot = rope.rotate(q, k, qp, kp)
    assert_close(q_rot, apply_rope(q, qp, base=100.0, rotary_dim=4), atol=1e-12, rtol=0)
    assert_close(k_rot, apply_rope(k, kp, base=100.0, rotary_dim=4), atol=1e-12, rtol=0)


def test_rotate_with_cos_sin_and_angles() -> None:
    angles = rope_angles(torch.arange(4), torch.tensor([1.0, 0.5], dtype=torch.float64))
    assert_close(angles[3], torch.tensor([3.0, 1.5], dtype=torch.float64))
    x = _random(4, 4, seed=22, dtype=torch.float64)
    assert_close(
        rotate_with_cos_sin(x, angles.cos(), angles.sin()), apply_rope(x, inv_freq=torch.tensor([1.0, 0.5]))
    )
    assert angles.dtype == torch.float64


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rotary_dim": 3}, "rotary_dim"),
        ({"rotary_dim": 10}, "rotary_dim"),
        ({"rotary_dim": 0}, "rotary_dim"),
        ({"layout": "neox"}, "layout must be one of 'half', 'interleaved'"),
        ({"positions": torch.arange(5)}, r"positions must have shape \[T\] = \[6\]"),
        ({"positions": torch.arange(6)[None]}, r"positions must have shape \[T\] = \[6\]"),
        ({"positions": torch.tensor([0.0, 1, 2, 3, 4, float("nan")])}, "positions must hold finite"),
        ({"inv_freq": torch.tensor([1.0, float("nan"), 0.1, 0.01])}, "inv_freq must hold finite"),
        ({"seq_dim": -1}, "seq_dim must be one of -2, -3"),
        ({"base": -1.0}, "base"),
        ({"attention_factor": 0.0}, "attention_factor"),
        ({"inv_freq": torch.ones(3)}, "inv_freq must have shape"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_rope(torch.zeros(6, 8), **kwargs)


def test_bad_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="positions must be an integer or floating-point tensor"):
        apply_rope(torch.zeros(3, 4), torch.tensor([True, False, True]))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        apply_rope(torch.zeros(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="last dimension D must be even"):
        apply_rope(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="dim must be an even positive integer"):
        rope_permutation(7)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        RotaryEmbedding(0)
    with pytest.raises(TypeError, match="offset must be an integer"):
        RotaryEmbedding(4)(torch.zeros(2, 4), offset=1.5)
    with pytest.raises(ValueError, match="either positions or offset"):
        RotaryEmbedding(4)(torch.zeros(2, 4), torch.arange(2), offset=3)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_gradients_flow_and_match_the_fast_path(layout: str) -> None:
    x = _random(2, 6, 8, seed=23, dtype=torch.float64).requires_grad_()
    positions = torch.arange(3, 9)
    assert torch.autograd.gradcheck(lambda t: apply_rope(t, positions, layout=layout, rotary_dim=6), (x,))
    with torch.no_grad():
        fast = apply_rope(x, positions, layout=layout, rotary_dim=6)
    assert_close(apply_rope(x, positions, layout=layout, rotary_dim=6), fast, atol=1e-12, rtol=0)
    low = _random(4, 8, seed=24, dtype=torch.bfloat16).requires_grad_()
    assert_close(apply_rope(low, layout=layout), apply_rope(low.detach(), layout=layout), atol=0, rtol=0)


def test_module_builds_under_the_meta_device() -> None:
    """Counting a large model's parameters on the meta device must not fail because of RoPE."""
    with torch.device("meta"):
        rope = RotaryEmbedding(64)
    assert rope.inv_freq.device.type == "cpu"
    assert_close(rope(_random(1, 3, 64, seed=26)), apply_rope(_random(1, 3, 64, seed=26)))


# --- batches of positions, fractional positions, layouts of x -----------------------------------


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    heads=st.integers(1, 3),
    seq_len=st.integers(0, 9),
    dim=st.sampled_from([4, 8, 12]),
    layout=layouts,
    seq_dim=st.sampled_from([-2, -3]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    floating=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_batched_positions_equal_one_call_per_row(
    batch: int,
    heads: int,
    seq_len: int,
    dim: int,
    layout: str,
    seq_dim: int,
    dtype: torch.dtype,
    floating: bool,
    seed: int,
) -> None:
    """Positions ``[B, T]`` (one row per batch element) equal a loop over rows with 1-D positions."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, heads, seq_len, dim) if seq_dim == -2 else (batch, seq_len, heads, dim)
    x = torch.randn(shape, generator=generator).to(dtype)
    positions = torch.randint(-(2**31), 2**31, (batch, seq_len), generator=generator)
    if floating:
        positions = positions.to(torch.float64) / 3.0
    rotary_dim = dim // 2 if dim % 4 == 0 else dim
    out = apply_rope(x, positions, layout=layout, rotary_dim=rotary_dim, seq_dim=seq_dim)
    assert out.dtype == dtype and out.shape == x.shape and bool(torch.isfinite(out).all())
    for b in range(batch):
        row = apply_rope(x[b], positions[b], layout=layout, rotary_dim=rotary_dim, seq_dim=seq_dim)
        assert_close(out[b], row, atol=0, rtol=0)


def test_fractional_positions_are_position_interpolation() -> None:
    """Rotating at p / s equals rotating at p with every frequency divided by s (Chen et al. 2023)."""
    x = _random(2, 4, 64, 32, seed=30, dtype=torch.float64)
    positions, factor = torch.arange(64), 4.0
    by_positions = apply_rope(x, positions / factor)
    by_frequencies = apply_rope(x, positions, inv_freq=rope_inverse_frequencies(32) / factor)
    assert_close(by_positions, by_frequencies, atol=1e-12, rtol=0)


def test_seq_dim_minus_3_equals_transposing() -> None:
    x = _random(2, 50, 4, 16, seed=31)  # [B, T, H, D]
    positions = torch.randint(0, 10**6, (2, 50), generator=torch.Generator().manual_seed(0))
    for layout in ROPE_LAYOUTS:
        expected = apply_rope(x.transpose(1, 2), positions, layout=layout).transpose(1, 2)
        assert_close(apply_rope(x, positions, layout=layout, seq_dim=-3), expected, atol=0, rtol=0)
        module = RotaryEmbedding(16, layout=layout)
        assert_close(module(x, positions, seq_dim=-3), expected, atol=0, rtol=0)


def test_works_under_vmap_meta_and_compile() -> None:
    x = _random(3, 2, 7, 8, seed=32)
    positions = torch.arange(21).reshape(3, 7) * 1000
    expected = apply_rope(x, positions)
    # these paths compute out of place: equal to the in-place kernel up to float32 rounding
    with torch.no_grad():  # the in-place fast path must step aside for vmap
        for layout in ROPE_LAYOUTS:
            mapped = torch.func.vmap(lambda xi, pi, lay=layout: apply_rope(xi, pi, layout=lay))(x, positions)
            assert_close(mapped, apply_rope(x, positions, layout=layout), atol=1e-6, rtol=0)
    meta = apply_rope(x.to("meta"), positions.to("meta"), layout="interleaved")
    assert meta.device.type == "meta" and meta.shape == x.shape
    assert RotaryEmbedding(8)(x.to("meta"), offset=5).shape == x.shape
    torch._dynamo.reset()
    compiled = torch.compile(lambda t, p: apply_rope(t, p), fullgraph=True, backend="eager")
    assert_close(compiled(x, positions), expected, atol=1e-6, rtol=0)
    module = RotaryEmbedding(8, layout="interleaved")
    compiled_module = torch.compile(lambda t, p: module(t, p), fullgraph=True, backend="eager")
    assert_close(
        compiled_module(x, positions), apply_rope(x, positions, layout="interleaved"), atol=1e-6, rtol=0
    )


def test_rotate_with_cos_sin_rejects_hugging_face_shaped_tables() -> None:
    """Hugging Face's cos/sin repeat each frequency ([T, r]); read as [T, r/2] they would be wrong."""
    x = _random(1, 2, 6, 16, seed=33)
    config = LlamaConfig(hidden_size=32, num_attention_heads=2)
    cos, sin = LlamaRotaryEmbedding(config)(x, torch.arange(6)[None])  # [1, 6, 16]
    with pytest.raises(ValueError, match="repeat each frequency twice"):
        rotate_with_cos_sin(x, cos[0], sin[0])
    with pytest.raises(ValueError, match="cos and sin must have shape"):
        rotate_with_cos_sin(x, cos[0, :, :4], sin[0, :, :4])  # a partial table needs rotary_dim
    assert_close(rotate_with_cos_sin(x, cos[..., :8], sin[..., :8]), apply_rope(x), atol=1e-6, rtol=0)
    partial = rope_angles(torch.arange(6), rope_inverse_frequencies(8))
    assert_close(
        rotate_with_cos_sin(x, partial.cos().float(), partial.sin().float(), rotary_dim=8),
        apply_rope(x, rotary_dim=8),
    )
    with pytest.raises(TypeError, match="cos and sin must both be float32 or both float64"):
        rotate_with_cos_sin(x, cos[0, :, :8], sin[0, :, :8].double())


def test_empty_inputs_give_empty_outputs() -> None:
    for layout in ROPE_LAYOUTS:
        assert apply_rope(torch.zeros(2, 0, 8), layout=layout).shape == (2, 0, 8)
        assert RotaryEmbedding(8, layout=layout)(torch.zeros(1, 0, 8), offset=2**31).shape == (1, 0, 8)
