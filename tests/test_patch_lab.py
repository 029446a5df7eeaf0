"""The patch-grid task and the tiny encoder of the 2-D RoPE lab (posenc_lib.patch_lab)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc_lib.patch_lab import (
    IGNORE_INDEX,
    PATCH_ENCODINGS,
    PatchEncoder,
    evaluate_patch_model,
    make_patch_batch,
    train_patch_model,
)
from posenc_lib.rope import apply_rope
from posenc_lib.rope2d import apply_rope_2d


@settings(max_examples=30, deadline=None)
@given(
    height=st.integers(1, 6),
    width=st.integers(1, 6),
    row_shift=st.integers(-5, 5),
    col_shift=st.integers(-5, 5),
)
def test_targets_are_the_symbols_at_the_offset_and_ignored_outside_the_grid(
    height: int, width: int, row_shift: int, col_shift: int
) -> None:
    if abs(row_shift) >= height or abs(col_shift) >= width:
        return
    tokens, targets = make_patch_batch(
        height,
        width,
        batch_size=2,
        vocab_size=7,
        generator=torch.Generator().manual_seed(0),
        offset=(row_shift, col_shift),
    )
    assert tokens.shape == targets.shape == (2, height * width)
    grid, target_grid = tokens.view(2, height, width), targets.view(2, height, width)
    for i in range(height):
        for j in range(width):
            source = (i + row_shift, j + col_shift)
            if 0 <= source[0] < height and 0 <= source[1] < width:
                assert torch.equal(target_grid[:, i, j], grid[:, source[0], source[1]])
            else:
                assert (target_grid[:, i, j] == IGNORE_INDEX).all()


def test_batches_are_reproducible_from_the_seed() -> None:
    first = make_patch_batch(4, 5, batch_size=3, vocab_size=9, generator=torch.Generator().manual_seed(3))
    again = make_patch_batch(4, 5, batch_size=3, vocab_size=9, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("encoding", PATCH_ENCODINGS)
def test_encoder_gives_logits_for_every_patch_at_any_grid_size(encoding: str) -> None:
    torch.manual_seed(0)
    model = PatchEncoder(encoding, vocab_size=5, dim=16, num_heads=2, num_layers=2)
    for height, width in ((3, 4), (6, 2)):
        tokens = torch.randint(0, 5, (2, height * width))
        assert model(tokens, height, width).shape == (2, height * width, 5)


def test_without_positions_the_encoder_is_permutation_equivariant_and_with_them_it_is_not() -> None:
    tokens = torch.randint(0, 8, (1, 12), generator=torch.Generator().manual_seed(1))
    order = torch.randperm(12, generator=torch.Generator().manual_seed(2))
    for encoding in PATCH_ENCODINGS:
        torch.manual_seed(0)
        model = PatchEncoder(encoding, vocab_size=8, dim=16, num_heads=2).eval()
        with torch.no_grad():
            permuted = model(tokens[:, order], 3, 4)
            expected = model(tokens, 3, 4)[:, order]
        assert torch.allclose(permuted, expected, atol=1e-5) == (encoding == "none"), encoding


def test_1d_rope_uses_the_flattened_index_and_2d_rope_the_row_and_column() -> None:
    """Rows of width W: the patch above is W tokens back in 1-D, one row back in 2-D."""
    torch.manual_seed(0)
    x = torch.randn(1, 2, 12, 8)
    model_1d = PatchEncoder("rope_1d", vocab_size=4, dim=16, num_heads=2)
    model_2d = PatchEncoder("rope_2d", vocab_size=4, dim=16, num_heads=2)
    rows, cols = torch.arange(3).repeat_interleave(4), torch.arange(4).repeat(3)
    flat = torch.arange(12)
    torch.testing.assert_close(model_1d._rotate(x, flat, rows, cols, 0), apply_rope(x, flat, base=100.0))
    torch.testing.assert_close(
        model_2d._rotate(x, flat, rows, cols, 0), apply_rope_2d(x, rows, cols, base=100.0)
    )


def test_training_learns_the_patch_above_and_evaluation_scores_it() -> None:
    torch.manual_seed(0)
    model = PatchEncoder("rope_2d", vocab_size=4, dim=16, num_heads=2)
    before = evaluate_patch_model(model, height=4, width=4, vocab_size=4)
    losses = train_patch_model(model, steps=60, height=4, width=4, vocab_size=4, lr=1e-2)
    after = evaluate_patch_model(model, height=4, width=4, vocab_size=4)
    assert len(losses) == 60 and losses[-1] < losses[0]
    assert 0.0 <= before < after <= 1.0 and after > 0.9
    assert not model.training


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: make_patch_batch(0, 3, batch_size=1, vocab_size=3, generator=torch.Generator()),
            ValueError,
            "height",
        ),
        (
            lambda: make_patch_batch(3, 3, batch_size=1, vocab_size=1, generator=torch.Generator()),
            ValueError,
            "vocab_size",
        ),
        (lambda: make_patch_batch(3, 3, batch_size=1, vocab_size=3, generator=0), TypeError, "generator"),
        (
            lambda: make_patch_batch(
                3, 3, batch_size=1, vocab_size=3, generator=torch.Generator(), offset=(3, 0)
            ),
            ValueError,
            "offset",
        ),
        (
            lambda: make_patch_batch(
                3, 3, batch_size=1, vocab_size=3, generator=torch.Generator(), offset=[1, 0]
            ),
            TypeError,
            "offset",
        ),
        (lambda: PatchEncoder("rope_3d", vocab_size=3), ValueError, "encoding"),
        (lambda: PatchEncoder("rope_2d", vocab_size=3, dim=12, num_heads=2), ValueError, "multiple of 4"),
        (
            lambda: PatchEncoder("rope_2d", vocab_size=3)(torch.zeros(1, 5, dtype=torch.long), 2, 3),
            ValueError,
            "tokens",
        ),
    ],
)
def test_bad_arguments_are_rejected_with_a_message_that_names_them(call, error, match) -> None:
    with pytest.raises(error, match=match):
        call()


def test_attention_weights_are_returned_per_layer_and_give_the_same_logits() -> None:
    torch.manual_seed(0)
    model = PatchEncoder("rope_2d", vocab_size=6, dim=16, num_heads=2, num_layers=2).eval()
    tokens = torch.randint(0, 6, (3, 12))
    with torch.no_grad():
        logits, maps = model(tokens, 3, 4, return_attention=True)
        torch.testing.assert_close(logits, model(tokens, 3, 4), atol=1e-5, rtol=1e-5)
    assert maps.shape == (2, 3, 2, 12, 12)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 3, 2, 12))
