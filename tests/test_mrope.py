"""M-RoPE: checked against Qwen2-VL, Qwen2.5-VL and Qwen3-VL in transformers 5.18, and by properties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close
from transformers import Qwen2_5_VLConfig, Qwen2VLConfig, Qwen3VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel, Qwen2_5_VLRotaryEmbedding
from transformers.models.qwen2_vl.modeling_qwen2_vl import (
    Qwen2VLModel,
    Qwen2VLRotaryEmbedding,
    apply_rotary_pos_emb,
)
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel, Qwen3VLTextRotaryEmbedding

from posenc_lib.mrope import (
    apply_mrope,
    mrope_angles,
    mrope_pair_axes,
    mrope_position_ids,
    mrope_position_ids_from_token_types,
)
from posenc_lib.rope import apply_rope

pytestmark = pytest.mark.usefixtures("quiet_transformers")

# Tiny random configs: only the rotary settings and the vision merge size matter here.
TEXT = {
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 8,
    "vocab_size": 16,
    "bos_token_id": None,
    "eos_token_id": None,
}
VISION = {"depth": 1, "hidden_size": 16, "num_heads": 2, "out_hidden_size": 16, "intermediate_size": 16}


def _random(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


@pytest.fixture(scope="module")
def models(quiet_transformers) -> dict:
    """transformers' Qwen2-VL, Qwen2.5-VL and Qwen3-VL models (tiny, random), for their get_rope_index."""
    qwen2 = Qwen2VLConfig(
        vision_config={"depth": 1, "embed_dim": 16, "num_heads": 2, "hidden_size": 16},
        text_config={**TEXT, "hidden_size": 16},
    )
    qwen25 = Qwen2_5_VLConfig(
        vision_config={**VISION, "tokens_per_second": 2}, text_config={**TEXT, "hidden_size": 16}
    )
    qwen3 = Qwen3VLConfig(vision_config=VISION, text_config={**TEXT, "hidden_size": 16, "head_dim": 8})
    return {
        "qwen2-vl": Qwen2VLModel(qwen2).eval(),
        "qwen2.5-vl": Qwen2_5_VLModel(qwen25).eval(),
        "qwen3-vl": Qwen3VLModel(qwen3).eval(),
    }


def _tokens(grid: tuple[int, int, int]) -> int:
    return grid[0] * (grid[1] // 2) * (grid[2] // 2)


def _hf_inputs(segments: list[tuple], model: str) -> dict:
    """The inputs of transformers' get_rope_index for one sequence of segments (merge size 2)."""
    types, images, videos, seconds = [], [], [], []
    for segment in segments:
        if segment[0] == "text":
            types += [0] * segment[1]
        elif segment[0] == "image":
            types += [1] * _tokens(segment[1])
            images.append(segment[1])
        else:
            types += [2] * _tokens(segment[1])
            videos.append(segment[1])
            seconds.append(segment[2] if len(segment) == 3 else 1.0)
    if model == "qwen3-vl" and videos:  # one video_grid_thw row for the whole video, split by get_rope_index
        videos = [(len(videos), *videos[0][1:])]
    inputs = {
        "mm_token_type_ids": torch.tensor([types]),
        "image_grid_thw": torch.tensor(images) if images else None,
        "video_grid_thw": torch.tensor(videos) if videos else None,
    }
    if model == "qwen2.5-vl" and videos:
        inputs["second_per_grid_ts"] = torch.tensor(seconds)  # float32, as the processor returns it
    return inputs


def _hf_rope_index(models: dict, model: str, inputs: dict, attention_mask: torch.Tensor | None = None):
    token_types = inputs["mm_token_type_ids"]
    return models[model].get_rope_index(
        torch.zeros_like(token_types), attention_mask=attention_mask, **inputs
    )


# --- the rotation, against transformers' text rotary embeddings ----------------------------------------


@pytest.mark.parametrize(
    ("rotary_class", "config_class"),
    [(Qwen2VLRotaryEmbedding, Qwen2VLConfig), (Qwen2_5_VLRotaryEmbedding, Qwen2_5_VLConfig)],
)
def test_contiguous_sections_match_qwen2_vl_and_qwen2_5_vl(rotary_class: type, config_class: type) -> None:
    rope = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}  # Qwen2-VL-7B's
    config = config_class(text_config={**TEXT, "hidden_size": 256, "rope_parameters": rope}).text_config
    positions = torch.randint(0, 300, (3, 2, 40), generator=torch.Generator().manual_seed(0))
    q, k = _random(2, 2, 40, 128, seed=1), _random(2, 2, 40, 128, seed=2)
    cos, sin = rotary_class(config)(q, positions)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    # transformers forms the angles in float32 (positions < 300): agreement to ~1e-5
    assert_close(apply_mrope(q, positions, sections=[16, 24, 24], base=1e6), q_hf, atol=1e-4, rtol=0)
    assert_close(apply_mrope(k, positions, sections=[16, 24, 24], base=1e6), k_hf, atol=1e-4, rtol=0)


def test_interleaved_sections_match_qwen3_vl() -> None:
    rope = {
        "rope_type": "default",
        "rope_theta": 5e6,
        "mrope_section": [24, 20, 20],
    }  # transformers' Qwen3-VL default
    config = Qwen3VLConfig(
        text_config={**TEXT, "hidden_size": 256, "head_dim": 128, "rope_parameters": rope}
    ).text_config
    positions = torch.randint(0, 300, (3, 2, 40), generator=torch.Generator().manual_seed(3))
    q, k = _random(2, 2, 40, 128, seed=4), _random(2, 2, 40, 128, seed=5)
    cos, sin = Qwen3VLTextRotaryEmbedding(config)(q, positions)
    q_hf, k_hf = apply_rotary_pos_emb(q, k, cos, sin)
    ours = apply_mrope(q, positions, sections=[24, 20, 20], base=5e6, section_layout="interleaved")
    assert_close(ours, q_hf, atol=1e-4, rtol=0)
    assert_close(
        apply_mrope(k, positions, sections=[24, 20, 20], base=5e6, section_layout="interleaved"),
        k_hf,
        atol=1e-4,
        rtol=0,
    )
    # control: the comparison tells the two section layouts apart
    assert (apply_mrope(q, positions, sections=[24, 20, 20], base=5e6) - q_hf).abs().max() > 0.1


def test_pair_axes_of_the_real_sections() -> None:
    contiguous = mrope_pair_axes([16, 24, 24])
    assert contiguous.tolist() == [0] * 16 + [1] * 24 + [2] * 24
    interleaved = mrope_pair_axes([24, 20, 20], section_layout="interleaved")
    assert interleaved[:6].tolist() == [0, 1, 2, 0, 1, 2] and interleaved[60:].tolist() == [0, 0, 0, 0]
    assert torch.bincount(interleaved).tolist() == [24, 20, 20]
    assert mrope_pair_axes([2, 2, 1], section_layout="interleaved").tolist() == [0, 1, 2, 0, 1]
    angles = mrope_angles(torch.tensor([[5], [7], [9]]), sections=[1, 2, 2], base=100.0)
    theta = 100.0 ** (-torch.arange(5, dtype=torch.float64) / 5)
    assert angles.dtype == torch.float64
    assert_close(angles[0], torch.tensor([5.0, 7, 7, 9, 9], dtype=torch.float64) * theta, atol=0, rtol=1e-14)


# --- text reduces to 1-D RoPE (misconception 17) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("sections", "section_layout"),
    [([16, 24, 24], "contiguous"), ([24, 20, 20], "interleaved"), ([64, 0, 0], "contiguous")],
)
def test_text_only_mrope_is_rope_exactly(sections: list[int], section_layout: str) -> None:
    x = _random(2, 3, 50, 128, seed=6)
    positions = torch.stack([torch.arange(50), torch.arange(50) + 1000])  # [B, T], a shifted second row
    ours = apply_mrope(
        x, positions.expand(3, -1, -1), sections=sections, base=1e6, section_layout=section_layout
    )
    assert torch.equal(ours, apply_rope(x, positions, base=1e6))
    shared = torch.arange(50)
    assert torch.equal(apply_mrope(x[0], shared.expand(3, -1), sections=sections), apply_rope(x[0], shared))
    assert torch.equal(
        apply_mrope(x[0, 0], shared.expand(3, -1), sections=sections), apply_rope(x[0, 0], shared)
    )


def test_low_precision_and_seq_dim() -> None:
    x = _random(2, 3, 10, 16, seed=7)
    positions = torch.randint(0, 50, (3, 2, 10), generator=torch.Generator().manual_seed(8))
    low = apply_mrope(x.bfloat16(), positions, sections=[2, 3, 3])
    assert low.dtype == torch.bfloat16
    assert torch.equal(low, apply_mrope(x.bfloat16().float(), positions, sections=[2, 3, 3]).bfloat16())
    assert torch.equal(
        apply_mrope(x.transpose(1, 2), positions, sections=[2, 3, 3], seq_dim=-3),
        apply_mrope(x, positions, sections=[2, 3, 3]).transpose(1, 2),
    )


# --- the property the chapter asserts ---------------------------------------------------------------------

triples = st.tuples(*[st.integers(min_value=-60, max_value=60)] * 3)


@settings(max_examples=50, deadline=None)
@given(
    sections=st.sampled_from([[1, 1, 1], [2, 1, 1], [2, 2, 1], [24, 20, 20]]),
    section_layout=st.sampled_from(["contiguous", "interleaved"]),
    query=triples,
    key=triples,
    shift=triples,
    seed=st.integers(0, 2**16),
)
def test_score_depends_only_on_the_3d_offset(
    sections: list[int], section_layout: str, query: tuple, key: tuple, shift: tuple, seed: int
) -> None:
    dim = 2 * sum(sections)
    q, k = (
        _random(1, dim, seed=seed, dtype=torch.float64),
        _random(1, dim, seed=seed + 1, dtype=torch.float64),
    )

    def score(q_at: tuple, k_at: tuple) -> torch.Tensor:
        kwargs = {"sections": sections, "section_layout": section_layout}
        q_rot = apply_mrope(q, torch.tensor(q_at)[:, None], **kwargs)
        k_rot = apply_mrope(k, torch.tensor(k_at)[:, None], **kwargs)
        return (q_rot * k_rot).sum()

    moved_q = tuple(p + s for p, s in zip(query, shift, strict=True))
    moved_k = tuple(p + s for p, s in zip(key, shift, strict=True))
    assert_close(score(query, key), score(moved_q, moved_k), atol=1e-9, rtol=1e-9)


# --- the position indices, against get_rope_index -----------------------------------------------------------

IMAGES = [  # sequences where both rules for the text after an image agree (every image, short videos)
    [("text", 3), ("image", (1, 4, 6)), ("text", 4)],
    [("image", (1, 2, 2)), ("text", 2), ("image", (1, 8, 4)), ("text", 1), ("image", (1, 2, 6)), ("text", 3)],
    [("text", 2), ("video", (2, 4, 4), 0.5), ("text", 2), ("image", (1, 6, 2))],
    [("text", 6)],
]


@pytest.mark.parametrize("model", ["qwen2-vl", "qwen2.5-vl"])
@pytest.mark.parametrize("segments", IMAGES)
def test_indices_match_get_rope_index(models: dict, model: str, segments: list) -> None:
    inputs = _hf_inputs(segments, model)
    expected, _ = _hf_rope_index(models, model, inputs)
    ours = mrope_position_ids(segments, model=model)
    assert torch.equal(ours, expected[:, 0])
    assert torch.equal(ours, mrope_position_ids(segments, model=model, text_after_vision="spatial_extent"))
    assert torch.equal(mrope_position_ids_from_token_types(**inputs, model=model), expected)


VIDEOS = [  # a video's temporal index past its spatial ones: the two rules differ after it
    ("qwen2-vl", [("text", 1), ("video", (5, 2, 4)), ("text", 3)]),
    ("qwen2.5-vl", [("text", 2), ("video", (3, 4, 4), 0.5), ("text", 2), ("image", (1, 4, 4)), ("text", 1)]),
    ("qwen2.5-vl", [("video", (4, 2, 2), 2 / 3), ("text", 2), ("video", (4, 4, 2), 0.25), ("text", 1)]),
    ("qwen2.5-vl", [("text", 1), ("video", (6, 2, 6), 1.5), ("text", 2)]),
]


@pytest.mark.parametrize(("model", "segments"), VIDEOS)
def test_videos_match_get_rope_index_with_its_text_rule(models: dict, model: str, segments: list) -> None:
    inputs = _hf_inputs(segments, model)
    expected, deltas = _hf_rope_index(models, model, inputs)
    ours = mrope_position_ids(segments, model=model, text_after_vision="spatial_extent")
    assert torch.equal(ours, expected[:, 0])
    from_types = mrope_position_ids_from_token_types(
        **inputs, model=model, text_after_vision="spatial_extent"
    )
    assert torch.equal(from_types, expected)
    assert not torch.equal(mrope_position_ids(segments, model=model), ours)  # the report's rule differs
    assert int(deltas) == int(expected.max()) + 1 - expected.shape[-1]  # decoding continues from max + 1


def test_transformers_5_18_continues_text_below_the_last_temporal_index(models: dict) -> None:
    # Qwen2.5-VL, 2 tokens per second, 1 s per grid: the video's temporal indices are 2, 4, 6, 8
    segments = [("text", 2), ("video", (4, 4, 4), 1.0), ("text", 3)]
    expected, deltas = _hf_rope_index(models, "qwen2.5-vl", _hf_inputs(segments, "qwen2.5-vl"))
    assert expected[0, 0, 2:18:4].tolist() == [2, 4, 6, 8]
    assert expected[0, 0, -3:].tolist() == [4, 5, 6]  # text at 2 + max(2, 2), among the video's times
    assert expected.shape[-1] + int(deltas) == 9  # while the first generated token goes to max + 1 = 9
    ours = mrope_position_ids(segments, model="qwen2.5-vl")
    assert ours[:, -3:].tolist() == [[9, 10, 11]] * 3  # the report's rule: max + 1, and decoding goes on


def test_qwen2_5_vl_time_aligned_temporal_index(models: dict) -> None:
    # 2 tokens per second; grids of 2/3 s: floor(k * 4/3) computed in float32, as transformers does
    segments = [("text", 2), ("video", (5, 2, 2), 2 / 3)]
    ours = mrope_position_ids(segments, model="qwen2.5-vl")
    assert ours[0, 2:].tolist() == [2, 3, 4, 6, 7]
    assert torch.equal(
        ours, mrope_position_ids(segments, model="qwen2.5-vl", text_after_vision="spatial_extent")
    )
    # Qwen2-VL counts grid steps instead of seconds
    assert mrope_position_ids(segments, model="qwen2-vl")[0, 2:].tolist() == [2, 3, 4, 5, 6]
    # images are not scaled (transformers #45325)
    image = [("text", 1), ("image", (1, 4, 4))]
    assert torch.equal(mrope_position_ids(image, model="qwen2.5-vl"), mrope_position_ids(image))


def test_qwen3_vl_encodes_a_video_frame_by_frame(models: dict) -> None:
    frame = (1, 4, 6)
    segments = [
        ("text", 2),
        ("image", (1, 4, 4)),
        ("text", 3),
        ("video", frame),
        ("text", 2),
        ("video", frame),
    ]
    segments.append(("text", 1))
    inputs = _hf_inputs(segments, "qwen3-vl")
    assert inputs["video_grid_thw"].tolist() == [[2, 4, 6]]  # one row for the video, as the processor gives
    expected, _ = _hf_rope_index(models, "qwen3-vl", inputs)
    assert torch.equal(mrope_position_ids(segments, model="qwen3-vl"), expected[:, 0])
    assert torch.equal(mrope_position_ids_from_token_types(**inputs, model="qwen3-vl"), expected)
    # every frame starts its temporal index afresh at the next text index: no temporal offset between frames
    first, second = expected[0, 0, 9:15], expected[0, 0, 17:23]
    assert first.unique().tolist() == [7] and second.unique().tolist() == [12]


def test_next_text_index_after_an_image_is_not_the_token_count() -> None:
    # 5 text tokens, an image of 8 x 12 patches = 4 x 6 = 24 tokens, then text
    positions = mrope_position_ids([("text", 5), ("image", (1, 8, 12)), ("text", 1)])
    assert positions.shape == (3, 30)
    assert positions[:, 5].tolist() == [5, 5, 5] and positions[:, 28].tolist() == [5, 8, 10]
    assert positions[:, -1].tolist() == [11, 11, 11]  # 5 + max(4, 6), not 5 + 24 = 29


@pytest.mark.parametrize("model", ["qwen2-vl", "qwen2.5-vl"])
def test_batch_with_left_and_right_padding(models: dict, model: str) -> None:
    rows = [
        [("text", 2), ("image", (1, 4, 4)), ("text", 3)],  # 9 tokens
        [("text", 1), ("video", (2, 2, 4), 0.5), ("text", 1), ("image", (1, 2, 2)), ("text", 2)],  # 9 tokens
        [("image", (1, 2, 6)), ("text", 1)],  # 4 tokens
    ]
    inputs = [_hf_inputs(row, model) for row in rows]
    length = 11
    token_types = torch.zeros(3, length, dtype=torch.int64)
    mask = torch.zeros(3, length, dtype=torch.int64)
    starts = [2, 0, 4]  # left padding, right padding, both
    for i, (start, row_inputs) in enumerate(zip(starts, inputs, strict=True)):
        n = row_inputs["mm_token_type_ids"].shape[1]
        token_types[i, start : start + n] = row_inputs["mm_token_type_ids"][0]
        mask[i, start : start + n] = 1
    grids = {}
    for key in ("image_grid_thw", "video_grid_thw"):
        grids[key] = torch.cat([r[key] for r in inputs if r[key] is not None])
    if model == "qwen2.5-vl":
        grids["second_per_grid_ts"] = torch.tensor([0.5])
    expected, _ = _hf_rope_index(
        models, model, {"mm_token_type_ids": token_types, **grids}, attention_mask=mask
    )
    ours = mrope_position_ids_from_token_types(token_types, attention_mask=mask, model=model, **grids)
    assert torch.equal(ours, expected)
    assert torch.equal(ours[:, 0, 2:11], mrope_position_ids(rows[0], model=model))
    assert ours[:, 0, :2].eq(0).all()  # padding gets index 0, as in transformers


# --- bad input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message", "error"),
    [
        ({"sections": [2, 1, 2]}, r"sections must sum to d_h / 2 = 4", ValueError),
        ({"sections": [3, -1, 2]}, "three non-negative integers", ValueError),
        ({"sections": [2, 2]}, "three non-negative integers", ValueError),
        ({"sections": [2.0, 1, 1]}, "sections must be a list of three integers", TypeError),
        ({"sections": "211"}, "sections must be a list of three integers", TypeError),
        ({"sections": [0, 3, 1], "section_layout": "interleaved"}, "cannot be interleaved", ValueError),
        (
            {"section_layout": "chunked"},
            "section_layout must be one of 'contiguous', 'interleaved'",
            ValueError,
        ),
        ({"positions": torch.arange(6)}, r"positions must have shape \[3, T\] = \[3, 6\]", ValueError),
        ({"positions": torch.zeros(2, 6, dtype=torch.int64)}, r"must have shape \[3, T\]", ValueError),
        ({"positions": torch.zeros(3, 5, dtype=torch.int64)}, r"must have shape \[3, T\]", ValueError),
        ({"positions": torch.zeros(3, 2, 6, dtype=torch.int64)}, r"must have shape \[3, T\]", ValueError),
        ({"positions": torch.zeros(3, 6)}, "positions must be an integer tensor", TypeError),
        ({"positions": torch.tensor(3)}, r"must have shape \[3, T\]", ValueError),
        ({"base": -1.0}, "base", ValueError),
        ({"seq_dim": -1}, "seq_dim must be one of -2, -3", ValueError),
    ],
)
def test_bad_arguments_of_apply_mrope(kwargs: dict, message: str, error: type) -> None:
    arguments = {"positions": torch.zeros(3, 6, dtype=torch.int64), "sections": [2, 1, 1]} | kwargs
    with pytest.raises(error, match=message):
        apply_mrope(torch.zeros(6, 8), **arguments)


def test_batched_positions_must_match_the_batch() -> None:
    positions = torch.zeros(3, 3, 6, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"or \[3, B, T\] = \[3, 2, 6\]"):
        apply_mrope(torch.zeros(2, 4, 6, 8), positions, sections=[2, 1, 1])
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        apply_mrope(torch.zeros(6, 8, dtype=torch.int64), positions[:, 0], sections=[2, 1, 1])


@pytest.mark.parametrize(
    ("segments", "kwargs", "message", "error"),
    [
        ([("audio", 3)], {}, r"segments\[0\]\[0\] \(the kind of segment\) must be one of", ValueError),
        ([("text", -1)], {}, "number of text tokens must be >= 0", ValueError),
        ([("text", 2.5)], {}, r"must be \('text', n\)", TypeError),
        (
            [("text", 1), ("image", (1, 3, 4))],
            {},
            r"segments\[1\]: .* divisible by spatial_merge_size",
            ValueError,
        ),
        ([("image", (1, 4))], {}, r"three positive integers \(t, h, w\)", ValueError),
        ([("image", (1, 4, 4), 1.0)], {}, r"must be \('image', \(t, h, w\)\)", TypeError),
        ([("video", (1, 4, 4), -1.0)], {}, "seconds_per_grid must be a finite positive number", ValueError),
        (["text"], {}, "must be a tuple", TypeError),
        ("text", {}, "segments must be a list of tuples", TypeError),
        ([("video", (2, 4, 4))], {"model": "qwen3-vl"}, "frame by frame", ValueError),
        ([("text", 1)], {"model": "qwen2-vl-7b"}, "model must be one of", ValueError),
        ([("text", 1)], {"text_after_vision": "max"}, "text_after_vision must be one of", ValueError),
        ([("text", 1)], {"tokens_per_second": 0}, "tokens_per_second", ValueError),
    ],
)
def test_bad_segments(segments: object, kwargs: dict, message: str, error: type) -> None:
    with pytest.raises(error, match=message):
        mrope_position_ids(segments, **kwargs)


def test_bad_token_type_inputs() -> None:
    types = torch.tensor([[0, 1, 1, 1, 1, 0]])
    grid = torch.tensor([[1, 4, 4]])
    assert mrope_position_ids_from_token_types(types, image_grid_thw=grid).shape == (3, 1, 6)
    with pytest.raises(ValueError, match="must hold 0 \\(text\\), 1 \\(image\\) or 2 \\(video\\)"):
        mrope_position_ids_from_token_types(types + 2, image_grid_thw=grid)
    with pytest.raises(ValueError, match="a run of 4 image tokens where its grid \\[1, 4, 8\\] gives 8"):
        mrope_position_ids_from_token_types(types, image_grid_thw=torch.tensor([[1, 4, 8]]))
    with pytest.raises(ValueError, match="more runs of image tokens than the 0 images"):
        mrope_position_ids_from_token_types(types)
    with pytest.raises(ValueError, match=r"image_grid_thw gives 2 images .* holds 1 runs"):
        mrope_position_ids_from_token_types(types, image_grid_thw=grid.repeat(2, 1))
    with pytest.raises(ValueError, match="attention_mask must have the shape of mm_token_type_ids"):
        mrope_position_ids_from_token_types(types, image_grid_thw=grid, attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="one value per video \\(1\\), got 2"):
        video = types * 2
        mrope_position_ids_from_token_types(video, video_grid_thw=grid, second_per_grid_ts=[1.0, 2.0])
    with pytest.raises(ValueError, match="image_grid_thw must have shape \\[N, 3\\]"):
        mrope_position_ids_from_token_types(types, image_grid_thw=grid[0])
    with pytest.raises(TypeError, match="image_grid_thw must be an integer tensor"):
        mrope_position_ids_from_token_types(types, image_grid_thw=grid.float())
    with pytest.raises(ValueError, match="mm_token_type_ids must have shape \\[B, T\\]"):
        mrope_position_ids_from_token_types(types[0], image_grid_thw=grid)
    with pytest.raises(TypeError, match="mm_token_type_ids must be an integer tensor"):
        mrope_position_ids_from_token_types(types.float(), image_grid_thw=grid)
