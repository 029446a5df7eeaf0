"""2-D RoPE: checked against Qwen2-VL's vision encoder in transformers 5.18, and by properties.

RoPE-Mixed (Heo et al. 2024) is checked against axial 2-D RoPE at its axial initialisation and by the
relative property for any learned frequencies.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from transformers import Qwen2VLConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2VLVisionRotaryEmbedding,
    VisionAttention,
    apply_rotary_pos_emb_vision,
)
from transformers.vision_utils import get_vision_position_ids

from posenc_lib.rope import apply_rope
from posenc_lib.rope2d import (
    RoPEMixed,
    apply_rope_2d,
    patch_grid_positions,
    rope_2d_angles,
    rope_2d_frequencies,
)

pytestmark = pytest.mark.usefixtures("quiet_transformers")


def _random(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


def _vision_config(head_dim: int, num_heads: int = 2):
    config = Qwen2VLConfig(
        vision_config={
            "depth": 1,
            "embed_dim": head_dim * num_heads,
            "num_heads": num_heads,
            "hidden_size": 16,
        }
    ).vision_config
    config._attn_implementation = "eager"
    return config


def _grid_positions(grid_thw: list[tuple[int, int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns of the patches of several images/videos, frames repeating their grid."""
    rows, cols = [], []
    for t, h, w in grid_thw:
        r, c = patch_grid_positions(h, w, merge_size=2)
        rows.append(r.repeat(t))
        cols.append(c.repeat(t))
    return torch.cat(rows), torch.cat(cols)


def _rope_2d_float64(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, *, base: float, layout: str, first_axis: str
) -> torch.Tensor:
    """An independent float64 reference written pair by pair from the formula, for x of shape [T, d_h]."""
    x = x.double()
    dim = x.shape[-1]
    out = x.clone()
    for pair in range(dim // 2):
        c = pair % (dim // 4)
        first_half = pair < dim // 4
        follows_row = first_half == (first_axis == "row")
        angle = (rows if follows_row else cols).double() * base ** (-2.0 * c / (dim / 2))
        a, b = (pair, pair + dim // 2) if layout == "half" else (2 * pair, 2 * pair + 1)
        out[:, a] = x[:, a] * angle.cos() - x[:, b] * angle.sin()
        out[:, b] = x[:, a] * angle.sin() + x[:, b] * angle.cos()
    return out


# --- against Qwen2-VL's vision encoder (transformers 5.18) -------------------------------------------------


def test_patch_grid_positions_match_qwen2_vl_spatial_merge_order() -> None:
    grids = [(1, 4, 6), (2, 2, 2), (1, 8, 4), (3, 6, 10)]
    rows, cols = _grid_positions(grids)
    expected = get_vision_position_ids(torch.tensor(grids), 2)
    assert torch.equal(torch.stack([rows, cols], dim=-1), expected)
    # the merger's 2 x 2 blocks are consecutive: rows 0 0 1 1, columns 0 1 0 1 in the first block
    assert rows[:4].tolist() == [0, 0, 1, 1] and cols[:4].tolist() == [0, 1, 0, 1]
    plain_rows, plain_cols = patch_grid_positions(3, 5)
    assert torch.equal(plain_rows * 5 + plain_cols, torch.arange(15))  # merge_size=1: row-major


def test_frequencies_equal_qwen2_vl_vision_inv_freq() -> None:
    rotary = Qwen2VLVisionRotaryEmbedding(_vision_config(80))  # Qwen2-VL's vision head width: 1280 / 16
    assert_close(rope_2d_frequencies(80), rotary.inv_freq.double(), atol=0, rtol=1e-6)  # float32 there


@pytest.mark.parametrize("head_dim", [16, 80])
@pytest.mark.parametrize("grids", [[(1, 2, 2)], [(1, 4, 6)], [(2, 6, 4), (1, 14, 10)]])
def test_apply_rope_2d_matches_qwen2_vl_vision_rotary(head_dim: int, grids: list) -> None:
    rotary = Qwen2VLVisionRotaryEmbedding(_vision_config(head_dim))
    position_ids = get_vision_position_ids(torch.tensor(grids), 2)
    cos, sin = rotary(torch.zeros(1), position_ids)
    num_patches, num_heads = position_ids.shape[0], 3
    q = _random(num_patches, num_heads, head_dim, seed=1)  # Qwen2-VL's vision layout [T, H, d_h]
    k = _random(num_patches, num_heads, head_dim, seed=2)
    q_hf, k_hf = apply_rotary_pos_emb_vision(q, k, cos, sin)
    rows, cols = _grid_positions(grids)
    # transformers forms the angles in float32 (indices < 14 here): agreement to ~1e-6
    assert_close(apply_rope_2d(q, rows, cols, seq_dim=-3), q_hf, atol=1e-5, rtol=0)
    assert_close(apply_rope_2d(k, rows, cols, seq_dim=-3), k_hf, atol=1e-5, rtol=0)
    # control: the comparison sees which half of the pairs follows the row
    swapped = apply_rope_2d(q, rows, cols, seq_dim=-3, first_axis="column")
    assert (swapped - q_hf).abs().max() > 0.1


def test_qwen2_vl_vision_attention_with_our_rotation() -> None:
    """The whole attention layer: transformers' VisionAttention against its weights with apply_rope_2d."""
    torch.manual_seed(0)
    config = _vision_config(16, num_heads=2)
    attention = VisionAttention(config).eval()
    grids = [(1, 4, 6), (2, 2, 4)]
    position_ids = get_vision_position_ids(torch.tensor(grids), 2)
    cos, sin = Qwen2VLVisionRotaryEmbedding(config)(torch.zeros(1), position_ids)
    lengths = [t * h * w for t, h, w in grids]
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    hidden = _random(sum(lengths), 32, seed=3) * 3
    with torch.no_grad():
        expected = attention(hidden, cu_seqlens, position_embeddings=(cos, sin))
        rows, cols = _grid_positions(grids)

        def ours(first_axis: str) -> torch.Tensor:
            q, k, v = attention.qkv(hidden).reshape(-1, 3, 2, 16).unbind(1)  # [T, H, d_h] each
            q = apply_rope_2d(q, rows, cols, seq_dim=-3, first_axis=first_axis)
            k = apply_rope_2d(k, rows, cols, seq_dim=-3, first_axis=first_axis)
            outputs = []
            for q_i, k_i, v_i in zip(*(t.split(lengths) for t in (q, k, v)), strict=True):  # images apart
                o = F.scaled_dot_product_attention(*(t.transpose(0, 1) for t in (q_i, k_i, v_i)))
                outputs.append(o.transpose(0, 1).reshape(-1, 32))
            return attention.proj(torch.cat(outputs))

        assert_close(ours("row"), expected, atol=1e-5, rtol=1e-5)
        assert (ours("column") - expected).abs().max() > 1e-3  # control: a wrong axis order shows


# --- the formula and its reductions ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("first_axis", ["row", "column"])
def test_matches_the_formula_pair_by_pair(layout: str, first_axis: str) -> None:
    rows, cols = patch_grid_positions(6, 4)
    x = _random(24, 16, seed=4, dtype=torch.float64)
    expected = _rope_2d_float64(x, rows, cols, base=100.0, layout=layout, first_axis=first_axis)
    ours = apply_rope_2d(x, rows, cols, base=100.0, layout=layout, first_axis=first_axis)
    assert_close(ours, expected, atol=1e-12, rtol=1e-12)


def test_each_axis_alone_is_one_dimensional_rope_on_its_pairs() -> None:
    x = _random(2, 3, 12, 16, seed=5)
    indices = torch.arange(-3, 9)
    zeros = torch.zeros_like(indices)
    theta = rope_2d_frequencies(16)
    # rows only: 1-D RoPE whose first d_h/4 frequencies are theta and the others 0 (pairs left alone)
    row_freqs = torch.cat([theta, torch.zeros_like(theta)])
    assert torch.equal(apply_rope_2d(x, indices, zeros), apply_rope(x, indices, inv_freq=row_freqs))
    col_freqs = torch.cat([torch.zeros_like(theta), theta])
    assert torch.equal(apply_rope_2d(x, zeros, indices), apply_rope(x, indices, inv_freq=col_freqs))
    angles = rope_2d_angles(indices, zeros, dim=16)
    assert angles.dtype == torch.float64 and angles.shape == (12, 8)


def test_batched_indices_low_precision_and_seq_dim() -> None:
    x = _random(2, 3, 6, 8, seed=6)
    rows, cols = patch_grid_positions(2, 3)
    batched_rows = torch.stack([rows, rows + 5])
    batched_cols = torch.stack([cols, cols - 2])
    both = apply_rope_2d(x, batched_rows, batched_cols)
    assert torch.equal(both[1], apply_rope_2d(x[1], rows + 5, cols - 2))
    assert torch.equal(
        apply_rope_2d(x.transpose(1, 2), rows, cols, seq_dim=-3), apply_rope_2d(x, rows, cols).transpose(1, 2)
    )
    low = apply_rope_2d(x.bfloat16(), rows, cols)
    assert low.dtype == torch.bfloat16
    assert torch.equal(low, apply_rope_2d(x.bfloat16().float(), rows, cols).bfloat16())  # one rounding


# --- the property the chapter asserts --------------------------------------------------------------------

offsets = st.integers(min_value=-40, max_value=40)


@settings(max_examples=50, deadline=None)
@given(
    dim=st.sampled_from([4, 8, 16, 32]),
    layout=st.sampled_from(["half", "interleaved"]),
    first_axis=st.sampled_from(["row", "column"]),
    query=st.tuples(offsets, offsets),
    key=st.tuples(offsets, offsets),
    shift=st.tuples(offsets, offsets),
    seed=st.integers(0, 2**16),
)
def test_score_depends_only_on_the_2d_offset(
    dim: int, layout: str, first_axis: str, query: tuple, key: tuple, shift: tuple, seed: int
) -> None:
    q, k = (
        _random(1, dim, seed=seed, dtype=torch.float64),
        _random(1, dim, seed=seed + 1, dtype=torch.float64),
    )

    def score(q_at: tuple[int, int], k_at: tuple[int, int]) -> torch.Tensor:
        q_rot = apply_rope_2d(
            q, torch.tensor([q_at[0]]), torch.tensor([q_at[1]]), layout=layout, first_axis=first_axis
        )
        k_rot = apply_rope_2d(
            k, torch.tensor([k_at[0]]), torch.tensor([k_at[1]]), layout=layout, first_axis=first_axis
        )
        return (q_rot * k_rot).sum()

    moved_q = (query[0] + shift[0], query[1] + shift[1])
    moved_k = (key[0] + shift[0], key[1] + shift[1])
    assert_close(score(query, key), score(moved_q, moved_k), atol=1e-9, rtol=1e-9)


def test_one_row_down_is_not_width_columns_right_unlike_flattened_1d_rope() -> None:
    width = 7
    q, k = _random(1, 16, seed=7, dtype=torch.float64), _random(1, 16, seed=8, dtype=torch.float64)

    def score_2d(offset: tuple[int, int]) -> float:
        k_rot = apply_rope_2d(k, torch.tensor([offset[0]]), torch.tensor([offset[1]]))
        return float((apply_rope_2d(q, torch.tensor([0]), torch.tensor([0])) * k_rot).sum())

    def score_1d(offset: tuple[int, int]) -> float:
        flat = offset[0] * width + offset[1]
        return float((q * apply_rope(k, torch.tensor([flat]))).sum())

    assert math.isclose(score_1d((1, 0)), score_1d((0, width)), rel_tol=1e-12)  # the same flattened offset
    assert abs(score_2d((1, 0)) - score_2d((0, width))) > 1e-2  # two different 2-D offsets


# --- RoPE-Mixed --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_mixed_with_axial_init_equals_axial_rope_with_columns_first(layout: str) -> None:
    mixed = RoPEMixed(16, 3, base=100.0, random_rotation=False, layout=layout)
    rows, cols = patch_grid_positions(4, 5)
    axial_angles = rope_2d_angles(rows, cols, dim=16, base=100.0, first_axis="column")
    assert torch.equal(mixed.angles(rows, cols), axial_angles.expand(3, -1, -1))
    x = _random(2, 3, 20, 16, seed=9, dtype=torch.float64)
    with torch.no_grad():
        ours = mixed(x, rows, cols)
    axial = apply_rope_2d(x, rows, cols, base=100.0, layout=layout, first_axis="column")
    assert_close(ours, axial, atol=1e-14, rtol=0)


def test_mixed_init_is_a_random_rotation_of_the_axial_frequencies() -> None:
    mixed = RoPEMixed(32, 4, generator=torch.Generator().manual_seed(0))
    theta_x, theta_y = mixed.frequencies.detach()
    magnitudes = rope_2d_frequencies(32, base=10.0)
    norms = torch.hypot(theta_x, theta_y)
    assert_close(norms, torch.cat([magnitudes, magnitudes]).expand(4, -1), atol=1e-15, rtol=1e-14)
    # the two pairs sharing a magnitude point in orthogonal directions
    first, second = slice(0, 8), slice(8, 16)
    dot = theta_x[:, first] * theta_x[:, second] + theta_y[:, first] * theta_y[:, second]
    assert_close(dot, torch.zeros_like(dot), atol=1e-15, rtol=0)
    directions = torch.atan2(theta_y[:, 0], theta_x[:, 0])
    assert len(set(directions.tolist())) == 4  # one angle per head
    again = RoPEMixed(32, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.frequencies, mixed.frequencies)
    assert mixed.frequencies.dtype == torch.float64 and mixed.frequencies.requires_grad


@settings(max_examples=30, deadline=None)
@given(
    layout=st.sampled_from(["half", "interleaved"]),
    query=st.tuples(offsets, offsets),
    key=st.tuples(offsets, offsets),
    shift=st.tuples(offsets, offsets),
    seed=st.integers(0, 2**16),
)
def test_mixed_score_depends_only_on_the_2d_offset_for_any_frequencies(
    layout: str, query: tuple, key: tuple, shift: tuple, seed: int
) -> None:
    mixed = RoPEMixed(8, 2, layout=layout)
    with torch.no_grad():
        mixed.frequencies.copy_(_random(2, 2, 4, seed=seed, dtype=torch.float64))  # any learned values
    q, k = (
        _random(2, 1, 8, seed=seed + 1, dtype=torch.float64),
        _random(2, 1, 8, seed=seed + 2, dtype=torch.float64),
    )

    def scores(q_at: tuple[int, int], k_at: tuple[int, int]) -> torch.Tensor:
        with torch.no_grad():
            q_rot = mixed(q, torch.tensor([q_at[0]]), torch.tensor([q_at[1]]))
            k_rot = mixed(k, torch.tensor([k_at[0]]), torch.tensor([k_at[1]]))
        return (q_rot * k_rot).sum(dim=(-1, -2))  # one score per head

    moved_q = (query[0] + shift[0], query[1] + shift[1])
    moved_k = (key[0] + shift[0], key[1] + shift[1])
    assert_close(scores(query, key), scores(moved_q, moved_k), atol=1e-9, rtol=1e-9)


def test_mixed_learns_its_frequencies_and_takes_batched_indices() -> None:
    mixed = RoPEMixed(8, 2, generator=torch.Generator().manual_seed(1))
    x = _random(3, 2, 6, 8, seed=10)
    rows, cols = patch_grid_positions(2, 3)
    q = _random(3, 2, 6, 8, seed=11)
    (mixed(q, rows, cols) * x).sum().backward()
    assert mixed.frequencies.grad is not None and mixed.frequencies.grad.abs().sum() > 0
    with torch.no_grad():
        batched = mixed(x, torch.stack([rows, rows, rows + 1]), torch.stack([cols, cols, cols]))
        assert torch.equal(batched[:2], mixed(x[:2], rows, cols))
        assert mixed(x.bfloat16(), rows, cols).dtype == torch.bfloat16
        assert mixed(x[0], rows, cols).shape == (2, 6, 8)


# --- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": torch.zeros(6, 6)}, "must be a positive multiple of 4"),
        ({"rows": torch.arange(5)}, r"rows must have shape \[T\] = \[6\]"),
        ({"cols": torch.arange(5)}, "rows and cols must have the same shape"),
        ({"first_axis": "x"}, "first_axis must be one of 'row', 'column'"),
        ({"layout": "neox"}, "layout must be one of 'half', 'interleaved'"),
        ({"rows": torch.tensor([0.0, 1, 2, 3, 4, float("nan")])}, "rows must hold finite"),
        ({"base": 0.5}, "base"),
        ({"seq_dim": -1}, "seq_dim must be one of -2, -3"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, message: str) -> None:
    arguments = {"x": torch.zeros(6, 8), "rows": torch.arange(6), "cols": torch.arange(6)} | kwargs
    x, rows, cols = arguments.pop("x"), arguments.pop("rows"), arguments.pop("cols")
    with pytest.raises(ValueError, match=message):
        apply_rope_2d(x, rows, cols, **arguments)


def test_bad_types_and_grids_raise() -> None:
    with pytest.raises(TypeError, match="rows must be an integer or floating-point tensor"):
        apply_rope_2d(torch.zeros(2, 8), torch.tensor([True, False]), torch.arange(2))
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        apply_rope_2d(torch.zeros(2, 8, dtype=torch.int64), torch.arange(2), torch.arange(2))
    with pytest.raises(ValueError, match="divisible by merge_size = 2"):
        patch_grid_positions(3, 4, merge_size=2)
    with pytest.raises(ValueError, match="height must be a positive integer"):
        patch_grid_positions(0, 4)
    with pytest.raises(ValueError, match="dim must be a positive multiple of 4"):
        rope_2d_frequencies(10)
    with pytest.raises(ValueError, match="dim must be a positive multiple of 4"):
        RoPEMixed(6, 2)
    with pytest.raises(TypeError, match="random_rotation must be True or False"):
        RoPEMixed(8, 2, random_rotation=1)
    mixed = RoPEMixed(8, 2)
    with pytest.raises(ValueError, match=r"num_heads = 2 and dim = 8"):
        mixed(torch.zeros(1, 3, 4, 8), torch.arange(4), torch.arange(4))
    with pytest.raises(ValueError, match=r"rows and cols must have shape \[T\] = \[4\]"):
        mixed(torch.zeros(1, 2, 4, 8), torch.arange(5), torch.arange(5))
    with pytest.raises(ValueError, match=r"rows and cols must have shape \[T\] = \[4\]"):
        mixed(
            torch.zeros(2, 4, 8), torch.zeros(2, 4, dtype=torch.int64), torch.zeros(2, 4, dtype=torch.int64)
        )
