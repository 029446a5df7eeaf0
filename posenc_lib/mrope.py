r"""M-RoPE: multimodal RoPE with temporal, height and width indices (Qwen2-VL, Qwen2.5-VL, Qwen3-VL).

Wang et al. 2024, "Qwen2-VL: Enhancing Vision-Language Model's Perception of the World at Any Resolution",
arXiv:2409.12191; Bai et al. 2025, "Qwen2.5-VL Technical Report", arXiv:2502.13923; RoPE itself
from Su et al. 2021, arXiv:2104.09864.

**Rotation.** Every token gets three position indices :math:`(p^t, p^h, p^w)` (temporal, height, width)
instead of one. The :math:`d_h/2` rotary pairs keep RoPE's frequencies over the full head width,
:math:`\theta_c = b^{-2c/d_h}`, and are split among the three axes by ``sections``
:math:`(s_t, s_h, s_w)`, :math:`s_t + s_h + s_w = d_h/2` (``mrope_section`` of the configs: [16, 24, 24] for
Qwen2-VL and Qwen2.5-VL, head width 128); pair :math:`c` is rotated by :math:`p^{a(c)}\,\theta_c`, with
:math:`a(c)` its axis:

* ``section_layout="contiguous"`` (Qwen2-VL, Qwen2.5-VL): the first :math:`s_t` pairs follow :math:`p^t`,
  the next :math:`s_h` :math:`p^h`, the last :math:`s_w` :math:`p^w`, so time gets the fastest frequencies;
* ``section_layout="interleaved"`` (Qwen3-VL, whose ``mrope_section`` defaults to [24, 20, 20] in
  transformers): the axes alternate, pair :math:`c` follows :math:`p^h` if :math:`c \bmod 3 = 1` and
  :math:`c < 3 s_h`, :math:`p^w` if :math:`c \bmod 3 = 2` and :math:`c < 3 s_w`, and :math:`p^t` otherwise,
  so every axis spans the whole range of frequencies (:func:`mrope_pair_axes`).

The pairs are in the ``"half"`` layout, :math:`(x_c, x_{c + d_h/2})`. Since each pair is a rotation by one
index times :math:`\theta_c`, the score of a query at :math:`(p^t, p^h, p^w)` and a key at
:math:`(p'^t, p'^h, p'^w)` depends only on the offset :math:`(p'^t - p^t, p'^h - p^h, p'^w - p^w)`.

**Text reduces to RoPE.** A text token has :math:`p^t = p^h = p^w = p`, so every pair is rotated by
:math:`p\,\theta_c`: exactly 1-D RoPE at position :math:`p` (:func:`posenc_lib.rope.apply_rope`), whatever the
sections. A text-only sequence is encoded as by the language model Qwen2-VL starts from.

**Indices of a mixed sequence** (:func:`mrope_position_ids`): text tokens count up by one on all three axes.
A vision block of :math:`t' \times h' \times w'` tokens (after the 2 x 2 spatial merge) starting at index
:math:`s` (the next text index) gets :math:`(s + \tau_k, s + i, s + j)` for frame-group :math:`k`, row
:math:`i`, column :math:`j`, in that order (frames, then rows, then columns); :math:`\tau_k = k` in
Qwen2-VL, and Qwen2.5-VL aligns it with time, :math:`\tau_k = \lfloor k \cdot \text{tokens\_per\_second} \cdot
\text{seconds\_per\_grid} \rfloor`, so one index step is a fixed time interval whatever the frame rate.
The text that follows continues from the largest index used plus one (Qwen2-VL report), not from the
number of tokens: an image of :math:`h' \times w'` tokens advances the index by :math:`\max(h', w')` only.
Qwen3-VL keeps the same rule but writes a timestamp in text before each frame of a video, so every frame is
its own :math:`1 \times h' \times w'` block.

transformers 5.18 differs in one case: after a vision block it continues text at :math:`s + \max(h', w')`,
ignoring the temporal index, which is smaller than the largest index plus one when a video's last temporal
index exceeds its spatial ones (a Qwen2-VL video with :math:`t' > \max(h', w')`; a Qwen2.5-VL video whose
time-aligned index runs past :math:`\max(h', w') - 1`), while its ``rope_deltas`` still continue decoding
from the largest index plus one. transformers up to 5.2 used the largest index, as the report describes
(the code added with Qwen2-VL and Qwen2.5-VL, transformers pull requests #32318 and #35569; issue #45381 shows
5.2's indices). ``text_after_vision="spatial_extent"`` reproduces transformers 5.18; the default
``"max_plus_one"`` follows the report. Both agree for every image and every Qwen3-VL frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch

from posenc_lib._validation import (
    check_choice,
    check_floating_tensor,
    check_integer_tensor,
    check_positive_float,
    check_positive_int,
    check_seq_dim,
    check_tensor,
)
from posenc_lib.rope import rotate_with_cos_sin
from posenc_lib.rope_scaling import rope_inverse_frequencies

MROPE_SECTION_LAYOUTS = ("contiguous", "interleaved")
MROPE_MODELS = ("qwen2-vl", "qwen2.5-vl", "qwen3-vl")
TEXT_AFTER_VISION_RULES = ("max_plus_one", "spatial_extent")
SEGMENT_KINDS = ("text", "image", "video")
_TOKEN_TYPES = {0: "text", 1: "image", 2: "video"}  # mm_token_type_ids of Qwen's processors


def mrope_pair_axes(sections: Sequence[int], *, section_layout: str = "contiguous") -> torch.Tensor:
    r"""The axis that each rotary pair follows: 0 (temporal), 1 (height) or 2 (width).

    Returns an int64 tensor of length :math:`s_t + s_h + s_w = d_h/2`; entry :math:`c` is :math:`a(c)` of the
    module docstring. For ``sections=[2, 2, 1]``: ``[0, 0, 1, 1, 2]`` (contiguous) and ``[0, 1, 2, 0, 1]``
    (interleaved).

    Raises:
        ValueError: ``sections`` not three non-negative integers with a positive sum, or, for the
            interleaved layout, sections the alternation cannot give (it needs :math:`3 s_h - 2 < d_h/2`
            and :math:`3 s_w - 1 < d_h/2`, as for Qwen3-VL's [24, 20, 20]).
        TypeError: ``sections`` not a sequence of integers.
    """
    sections = _check_sections(sections)
    check_choice("section_layout", section_layout, MROPE_SECTION_LAYOUTS)
    num_pairs = sum(sections)
    if section_layout == "contiguous":
        return torch.repeat_interleave(torch.arange(3), torch.tensor(sections))
    pair = torch.arange(num_pairs)
    axes = torch.zeros(num_pairs, dtype=torch.int64)
    axes[(pair % 3 == 1) & (pair < 3 * sections[1])] = 1
    axes[(pair % 3 == 2) & (pair < 3 * sections[2])] = 2
    counts = torch.bincount(axes, minlength=3).tolist()
    if counts != sections:
        raise ValueError(
            f"sections {sections} cannot be interleaved over {num_pairs} pairs (every third pair from 1 for "
            f"height, from 2 for width): that gives {counts}; the interleaved layout needs "
            f"3 * sections[1] - 2 < {num_pairs} and 3 * sections[2] - 1 < {num_pairs}"
        )
    return axes


def mrope_angles(
    positions: torch.Tensor,
    *,
    sections: Sequence[int],
    base: float = 10000.0,
    section_layout: str = "contiguous",
) -> torch.Tensor:
    r"""Rotation angles :math:`p^{a(c)}\,\theta_c` in float64, shape ``[*positions.shape[1:], d_h/2]``.

    :math:`d_h/2 = s_t + s_h + s_w` and :math:`\theta_c = b^{-2c/d_h}`.

    Args:
        positions: integer indices ``[3, T]`` or ``[3, B, T]`` (temporal, height, width).
        sections: :math:`(s_t, s_h, s_w)`.
        base: frequency base :math:`b` (``rope_theta``: 1e6 for Qwen2-VL and Qwen2.5-VL).
        section_layout: ``"contiguous"`` or ``"interleaved"``.

    Raises:
        ValueError: bad ``sections``, ``section_layout`` or ``base``; ``positions`` not ``[3, ...]``.
        TypeError: ``positions`` not an integer tensor.
    """
    axes = mrope_pair_axes(sections, section_layout=section_layout)
    check_integer_tensor("positions", positions)
    if positions.ndim not in (2, 3) or positions.shape[0] != 3:
        raise ValueError(
            f"positions must have shape [3, T] or [3, B, T] (temporal, height, width), "
            f"got {tuple(positions.shape)}"
        )
    inv_freq = rope_inverse_frequencies(2 * len(axes), base=base, device=positions.device)
    return _angles(positions, axes.to(positions.device), inv_freq)


def _angles(positions: torch.Tensor, axes: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """:func:`mrope_angles` without checks: ``positions[a(c)] * theta_c`` for every pair ``c``."""
    per_pair = positions.to(torch.float64).index_select(0, axes)  # [d_h/2, ..., T]
    return per_pair.movedim(0, -1) * inv_freq


def apply_mrope(
    x: torch.Tensor,
    positions: torch.Tensor,
    *,
    sections: Sequence[int],
    base: float = 10000.0,
    section_layout: str = "contiguous",
    seq_dim: int = -2,
) -> torch.Tensor:
    r"""Rotate ``x`` by M-RoPE at the 3-D ``positions``; same shape and dtype as ``x``.

    Pair :math:`c = (x_c, x_{c+d_h/2})` is rotated by :math:`p^{a(c)}\,\theta_c`, with
    :math:`\theta_c = b^{-2c/d_h}` (see the module docstring). Matches transformers 5.18's
    ``Qwen2VLRotaryEmbedding`` (and Qwen2.5-VL's) with ``apply_rotary_pos_emb`` for
    ``section_layout="contiguous"``, and ``Qwen3VLTextRotaryEmbedding`` for ``"interleaved"``, with angles in
    float64 where transformers forms them in float32. With the three rows of ``positions`` equal it is
    :func:`posenc_lib.rope.apply_rope` at those positions, bit for bit.

    Args:
        x: queries or keys, floating point: ``[B, H, T, d_h]``, ``[H, T, d_h]`` or ``[T, d_h]``
            (``seq_dim=-2``), or ``[B, T, H, d_h]`` (``seq_dim=-3``).
        positions: integer indices ``[3, T]`` (shared by the batch) or ``[3, B, T]`` (``B`` equal to
            ``x.shape[0]`` or 1), rows temporal, height, width, as :func:`mrope_position_ids` and
            transformers' ``get_rope_index`` give them.
        sections: :math:`(s_t, s_h, s_w)`, summing to :math:`d_h/2` (``mrope_section``).
        base: frequency base :math:`b` (``rope_theta``).
        section_layout: ``"contiguous"`` (Qwen2-VL, Qwen2.5-VL) or ``"interleaved"`` (Qwen3-VL). Not the pair
            layout of :mod:`posenc_lib.rope`, which is ``"half"`` here.
        seq_dim: the axis of ``x`` that holds the sequence, ``-2`` or ``-3``.

    Raises:
        ValueError: ``sections`` not three non-negative integers summing to :math:`d_h/2`, ``positions`` not
            ``[3, T]`` or ``[3, B, T]`` for ``x``, a bad ``section_layout``, ``base`` or ``seq_dim``.
        TypeError: ``x`` not floating point, ``positions`` not an integer tensor.
    """
    check_floating_tensor("x", x)
    seq_dim = check_seq_dim(seq_dim, x)
    sections = _check_sections(sections)
    dim = x.shape[-1]
    if dim % 2 or sum(sections) != dim // 2:
        raise ValueError(
            f"sections must sum to d_h / 2 = {dim / 2:g} (x's last dimension d_h = {dim}), "
            f"got {sections} with sum {sum(sections)}"
        )
    axes = mrope_pair_axes(sections, section_layout=section_layout).to(x.device)
    _check_positions(positions, x, seq_dim)
    inv_freq = rope_inverse_frequencies(dim, base=base, device=x.device)
    angles = _angles(positions.to(x.device), axes, inv_freq)
    compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return rotate_with_cos_sin(
        x, angles.cos().to(compute_dtype), angles.sin().to(compute_dtype), layout="half", seq_dim=seq_dim
    )


def mrope_position_ids(
    segments: Sequence[tuple],
    *,
    model: str = "qwen2-vl",
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2,
    text_after_vision: str = "max_plus_one",
) -> torch.Tensor:
    r"""The ``[3, T]`` M-RoPE indices (temporal, height, width) of a sequence of text, images and videos.

    ``segments`` lists the parts of the sequence in order, each a tuple:

    * ``("text", n)``: ``n`` text tokens (special tokens such as ``<|vision_start|>`` included);
    * ``("image", (t, h, w))``: an image whose patch grid is ``(t, h, w)``, as the processor's
      ``image_grid_thw`` row (before the spatial merge: it becomes :math:`t \cdot (h/m) \cdot (w/m)` tokens,
      :math:`m` = ``spatial_merge_size``; :math:`t = 1` for images);
    * ``("video", (t, h, w))`` or ``("video", (t, h, w), seconds_per_grid)``: a video, ``video_grid_thw`` row,
      with ``seconds_per_grid`` the time covered by one temporal grid step (``second_per_grid_ts``, the
      temporal patch size over the sampling rate; default 1.0, as transformers), used by Qwen2.5-VL only.

    Text tokens get :math:`(p, p, p)` with :math:`p` counting up from the next text index. A vision block
    starting at :math:`s` gets :math:`(s + \tau_k, s + i, s + j)` (frames, then rows, then columns), with
    :math:`\tau_k = k` for ``"qwen2-vl"`` and ``"qwen3-vl"``, and
    :math:`\tau_k = \lfloor k \cdot \text{tokens\_per\_second} \cdot \text{seconds\_per\_grid} \rfloor` for
    a ``"qwen2.5-vl"`` video (computed in float32, as transformers does with the processor's float32
    ``second_per_grid_ts``, so the indices are those the model was trained and is run with). The next text
    index is then one more than the largest index of the block (``text_after_vision="max_plus_one"``, the
    Qwen2-VL report) or :math:`s + \max(h/m, w/m)` (``"spatial_extent"``, transformers 5.18); see the module
    docstring for where they differ.

    Qwen3-VL writes each frame of a video as its own block, after a timestamp in text: give one
    ``("video", (1, h, w))`` segment per frame with its text in between; a Qwen3-VL video segment with
    :math:`t > 1` is rejected.

    Equal to ``get_rope_index`` of transformers 5.18's ``Qwen2VLModel``, ``Qwen2_5_VLModel`` and
    ``Qwen3VLModel`` for one sequence (with ``text_after_vision="spatial_extent"`` for every input, and with
    the default wherever the two rules agree).

    Args:
        segments: the parts of the sequence, as above.
        model: ``"qwen2-vl"``, ``"qwen2.5-vl"`` or ``"qwen3-vl"``.
        spatial_merge_size: side :math:`m` of the patch blocks merged into one token (2 in every Qwen-VL).
        tokens_per_second: temporal index steps per second of video for Qwen2.5-VL (``tokens_per_second``
            of its vision config: 2 in the released checkpoints; transformers' config class defaults to 4).
        text_after_vision: ``"max_plus_one"`` or ``"spatial_extent"``.

    Returns:
        int64 tensor ``[3, T]``, ``T`` the number of tokens.

    Raises:
        ValueError: an unknown segment kind, a grid that is not three positive integers or whose height
            or width is not divisible by ``spatial_merge_size``, a non-positive ``seconds_per_grid``, a
            Qwen3-VL video with several frames, an unknown ``model`` or ``text_after_vision``.
        TypeError: ``segments`` or one of its entries of the wrong type.
    """
    check_choice("model", model, MROPE_MODELS)
    check_choice("text_after_vision", text_after_vision, TEXT_AFTER_VISION_RULES)
    merge = check_positive_int("spatial_merge_size", spatial_merge_size)
    tokens_per_second = check_positive_float("tokens_per_second", tokens_per_second)
    if isinstance(segments, (str, bytes)) or not isinstance(segments, Sequence):
        raise TypeError(f"segments must be a list of tuples, got {type(segments).__name__}")
    parts = [_check_segment(f"segments[{i}]", segment, merge) for i, segment in enumerate(segments)]
    for i, (kind, size, _) in enumerate(parts):
        if model == "qwen3-vl" and kind == "video" and size[0] > 1:
            raise ValueError(
                f"segments[{i}]: Qwen3-VL encodes a video frame by frame, each after a timestamp in text; "
                f"give one ('video', (1, h, w)) segment per frame with its text in between, got t = {size[0]}"
            )
    return _positions_of_parts(parts, model, merge, tokens_per_second, text_after_vision)


def mrope_position_ids_from_token_types(
    mm_token_type_ids: torch.Tensor,
    *,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | Sequence[float] | None = None,
    attention_mask: torch.Tensor | None = None,
    model: str = "qwen2-vl",
    spatial_merge_size: int = 2,
    tokens_per_second: float = 2,
    text_after_vision: str = "max_plus_one",
) -> torch.Tensor:
    r"""The ``[3, B, T]`` M-RoPE indices of a batch, from the inputs that transformers' ``get_rope_index``
    takes.

    ``mm_token_type_ids`` (``[B, T]``, returned by Qwen's processors) marks each token as text (0), image (1)
    or video (2); from token ids, it is ``(input_ids == image_token_id) + 2 * (input_ids == video_token_id)``
    with the ids of the model's config. Every run of consecutive image (video) tokens is one image (video)
    and takes the next row of ``image_grid_thw`` (``video_grid_thw``), in order through the batch; for
    ``model="qwen3-vl"`` each video row of :math:`t` frames is first split into :math:`t` rows of one frame,
    as the timestamps in the text separate them. Tokens where ``attention_mask`` is 0 (padding, left or
    right) are skipped when counting and get index 0 on all three axes, as in transformers. The indices of
    each sequence are those of :func:`mrope_position_ids` (whose docstring gives the rules and the arguments
    ``model``, ``spatial_merge_size``, ``tokens_per_second`` and ``text_after_vision``).

    Args:
        mm_token_type_ids: integer tensor ``[B, T]`` with values 0, 1, 2.
        image_grid_thw: integer tensor ``[num_images, 3]``, the patch grids of the images.
        video_grid_thw: integer tensor ``[num_videos, 3]``, the patch grids of the videos.
        second_per_grid_ts: seconds per temporal grid step of each video (``[num_videos]``; default 1.0),
            used by Qwen2.5-VL.
        attention_mask: ``[B, T]``, 1 for real tokens and 0 for padding (default: no padding).

    Returns:
        int64 tensor ``[3, B, T]``.

    Raises:
        ValueError: shapes that do not fit, token types other than 0, 1, 2, a run of vision tokens whose
            length is not the token count of its grid, more or fewer grids than runs, and the errors of
            :func:`mrope_position_ids`.
        TypeError: tensors of the wrong dtype.
    """
    check_choice("model", model, MROPE_MODELS)
    check_choice("text_after_vision", text_after_vision, TEXT_AFTER_VISION_RULES)
    merge = check_positive_int("spatial_merge_size", spatial_merge_size)
    tokens_per_second = check_positive_float("tokens_per_second", tokens_per_second)
    token_types = check_integer_tensor("mm_token_type_ids", mm_token_type_ids)
    if token_types.ndim != 2:
        raise ValueError(f"mm_token_type_ids must have shape [B, T], got {tuple(token_types.shape)}")
    if not bool(((token_types >= 0) & (token_types <= 2)).all()):
        raise ValueError("mm_token_type_ids must hold 0 (text), 1 (image) or 2 (video) only")
    if attention_mask is None:
        keep = torch.ones_like(token_types, dtype=torch.bool)
    else:
        check_tensor("attention_mask", attention_mask)
        if attention_mask.shape != token_types.shape:
            raise ValueError(
                f"attention_mask must have the shape of mm_token_type_ids, {tuple(token_types.shape)}, "
                f"got {tuple(attention_mask.shape)}"
            )
        keep = attention_mask.to(token_types.device).bool()
    images = [("image", grid) for grid in _grid_rows("image_grid_thw", image_grid_thw)]
    video_grids = _grid_rows("video_grid_thw", video_grid_thw)
    seconds = _seconds_per_video(second_per_grid_ts, len(video_grids))
    if model == "qwen3-vl":  # one block per frame, as the timestamps in the text separate them
        videos = [
            ("video", (1, h, w), second)
            for (t, h, w), second in zip(video_grids, seconds, strict=True)
            for _ in range(t)
        ]
    else:
        videos = [("video", grid, second) for grid, second in zip(video_grids, seconds, strict=True)]
    vision = {"image": images, "video": videos}
    used = {"image": 0, "video": 0}
    out = torch.zeros(3, *token_types.shape, dtype=torch.int64, device=token_types.device)
    for row in range(token_types.shape[0]):
        parts = []
        for type_id, length in _runs(token_types[row][keep[row]].tolist()):
            kind = _TOKEN_TYPES[type_id]
            if kind == "text":
                parts.append(("text", length, None))
                continue
            if used[kind] == len(vision[kind]):
                raise ValueError(
                    f"sequence {row} has more runs of {kind} tokens than the {len(vision[kind])} {kind}s "
                    f"(frames, for qwen3-vl videos) that {kind}_grid_thw gives"
                )
            part = _check_segment(f"{kind}_grid_thw[{used[kind]}]", vision[kind][used[kind]], merge)
            used[kind] += 1
            tokens = _vision_tokens(part[1], merge)
            if tokens != length:
                raise ValueError(
                    f"sequence {row} has a run of {length} {kind} tokens where its grid {list(part[1])} "
                    f"gives {tokens} (t * h/{merge} * w/{merge}); two {kind}s with no text between them "
                    f"cannot be told apart (Qwen's processors put vision start and end tokens around each)"
                )
            parts.append(part)
        positions = _positions_of_parts(parts, model, merge, tokens_per_second, text_after_vision)
        out[:, row, keep[row]] = positions.to(out.device)
    for kind in ("image", "video"):
        if used[kind] != len(vision[kind]):
            raise ValueError(
                f"{kind}_grid_thw gives {len(vision[kind])} {kind}s (frames, for qwen3-vl videos) but "
                f"mm_token_type_ids holds {used[kind]} runs of {kind} tokens"
            )
    return out


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """``(value, length)`` of each run of equal consecutive values."""
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and runs[-1][0] == value:
            runs[-1] = (value, runs[-1][1] + 1)
        else:
            runs.append((value, 1))
    return runs


def _vision_tokens(grid: tuple[int, int, int], merge: int) -> int:
    """Number of language tokens of a patch grid ``(t, h, w)`` after the ``merge`` x ``merge`` merge."""
    return grid[0] * (grid[1] // merge) * (grid[2] // merge)


def _positions_of_parts(
    parts: list[tuple], model: str, merge: int, tokens_per_second: float, text_after_vision: str
) -> torch.Tensor:
    """Indices ``[3, T]`` of checked parts ``("text", n, None)`` and ``(kind, (t, h, w), seconds)``."""
    blocks = [torch.zeros(3, 0, dtype=torch.int64)]
    next_index = 0
    for kind, size, seconds in parts:
        if kind == "text":
            blocks.append(torch.arange(next_index, next_index + size).expand(3, -1))
            next_index += size
            continue
        frames, height, width = size[0], size[1] // merge, size[2] // merge
        temporal = torch.arange(frames)
        if model == "qwen2.5-vl" and kind == "video":
            # float32, as transformers computes it from the processor's float32 second_per_grid_ts
            interval = torch.tensor(seconds, dtype=torch.float32) * tokens_per_second
            temporal = (temporal * interval).long()
        grid = torch.meshgrid(temporal, torch.arange(height), torch.arange(width), indexing="ij")
        block = torch.stack(grid).reshape(3, -1) + next_index
        blocks.append(block)
        if text_after_vision == "max_plus_one":
            next_index = int(block.max()) + 1
        else:
            next_index += max(height, width)
    return torch.cat(blocks, dim=1)


def _check_segment(where: str, segment: object, merge: int) -> tuple:
    """``segment`` as ``("text", n, None)`` or ``(kind, (t, h, w), seconds)``; errors name ``where``."""
    if not isinstance(segment, tuple) or not segment:
        raise TypeError(
            f"{where} must be a tuple such as ('text', 5) or ('image', (1, 28, 28)), got {segment!r}"
        )
    kind = check_choice(f"{where}[0] (the kind of segment)", segment[0], SEGMENT_KINDS)
    if kind == "text":
        if len(segment) != 2 or isinstance(segment[1], bool) or not isinstance(segment[1], Integral):
            raise TypeError(f"{where} must be ('text', n) with n a number of tokens, got {segment!r}")
        if segment[1] < 0:
            raise ValueError(f"{where}: the number of text tokens must be >= 0, got {segment[1]}")
        return ("text", int(segment[1]), None)
    if len(segment) not in ((2, 3) if kind == "video" else (2,)):
        form = (
            "('video', (t, h, w)) or ('video', (t, h, w), seconds_per_grid)"
            if kind == "video"
            else "('image', (t, h, w))"
        )
        raise TypeError(f"{where} must be {form}, got {segment!r}")
    grid = segment[1].tolist() if isinstance(segment[1], torch.Tensor) else segment[1]
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 3
        or any(isinstance(v, bool) or not isinstance(v, Integral) or v < 1 for v in grid)
    ):
        raise ValueError(f"{where}: the grid must be three positive integers (t, h, w), got {segment[1]!r}")
    grid = tuple(int(v) for v in grid)
    if grid[1] % merge or grid[2] % merge:
        raise ValueError(
            f"{where}: the grid's height and width must be divisible by spatial_merge_size = {merge} "
            f"(patches before the merge), got {grid}"
        )
    seconds = segment[2] if len(segment) == 3 else 1.0
    if isinstance(seconds, torch.Tensor) and seconds.numel() == 1:
        seconds = seconds.item()
    return (kind, grid, check_positive_float(f"{where}: seconds_per_grid", seconds))


def _check_sections(sections: object) -> list[int]:
    if isinstance(sections, torch.Tensor):
        values = sections.tolist() if sections.ndim == 1 else [sections.tolist()]
    elif isinstance(sections, Sequence) and not isinstance(sections, (str, bytes)):
        values = list(sections)
    else:
        raise TypeError(f"sections must be a list of three integers (t, h, w), got {sections!r}")
    if any(isinstance(v, bool) or not isinstance(v, Integral) for v in values):
        raise TypeError(f"sections must be a list of three integers (t, h, w), got {sections!r}")
    if len(values) != 3 or any(v < 0 for v in values) or sum(values) == 0:
        raise ValueError(
            f"sections must be three non-negative integers (temporal, height, width) with a positive sum, "
            f"like Qwen2-VL's mrope_section [16, 24, 24]; got {values}"
        )
    return [int(v) for v in values]


def _check_positions(positions: object, x: torch.Tensor, seq_dim: int) -> None:
    """``positions`` must be an integer tensor ``[3, T]`` or ``[3, B, T]`` for the sequence axis of ``x``."""
    check_integer_tensor("positions", positions)
    seq_len = x.shape[seq_dim]
    has_batch = x.ndim + seq_dim >= 1
    batch_ok = positions.ndim == 2 or (
        positions.ndim == 3 and has_batch and positions.shape[1] in (1, x.shape[0])
    )
    if not batch_ok or positions.shape[0] != 3 or positions.shape[-1] != seq_len:
        expected = f"[3, T] = [3, {seq_len}]"
        if has_batch:
            expected += f" or [3, B, T] = [3, {x.shape[0]}, {seq_len}] (or [3, 1, {seq_len}])"
        raise ValueError(
            f"positions must have shape {expected} (temporal, height, width), T being x.shape[{seq_dim}]; "
            f"got shape {tuple(positions.shape)} for x of shape {tuple(x.shape)}"
        )


def _grid_rows(name: str, grid_thw: torch.Tensor | None) -> list[tuple[int, int, int]]:
    if grid_thw is None:
        return []
    check_integer_tensor(name, grid_thw)
    if grid_thw.ndim != 2 or grid_thw.shape[1] != 3:
        raise ValueError(f"{name} must have shape [N, 3] (t, h, w per row), got {tuple(grid_thw.shape)}")
    return [tuple(row) for row in grid_thw.tolist()]


def _seconds_per_video(second_per_grid_ts: object, num_videos: int) -> list[float]:
    if second_per_grid_ts is None:
        return [1.0] * num_videos
    values = (
        second_per_grid_ts.reshape(-1).tolist()
        if isinstance(second_per_grid_ts, torch.Tensor)
        else list(second_per_grid_ts)
    )
    if len(values) != num_videos:
        raise ValueError(
            f"second_per_grid_ts must give one value per video ({num_videos}), got {len(values)}"
        )
    return values
