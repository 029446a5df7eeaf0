"""Attention statistics and rotary pair norms, against loops written from their definitions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from posenc_lib.attention_stats import attention_by_distance, attention_to_key, rotary_pair_norms
from posenc_lib.rope import apply_rope


def causal_probabilities(*shape: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=generator, dtype=torch.float64)
    future = torch.ones(shape[-1], shape[-1], dtype=torch.bool).triu(1)
    return logits.masked_fill(future, float("-inf")).softmax(dim=-1)


@settings(max_examples=30, deadline=None)
@given(heads=st.integers(1, 3), seq_len=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_attention_by_distance_is_the_mean_of_each_diagonal(heads: int, seq_len: int, seed: int) -> None:
    probs = causal_probabilities(2, heads, seq_len, seq_len, seed=seed)
    by_distance = attention_by_distance(probs)
    assert by_distance.shape == (2, heads, seq_len) and by_distance.dtype == torch.float64
    for delta in range(seq_len):
        expected = torch.stack([probs[..., i, i - delta] for i in range(delta, seq_len)], dim=-1).mean(dim=-1)
        assert_close(by_distance[..., delta], expected)
    counts = torch.arange(seq_len, 0, -1, dtype=torch.float64)  # T - delta queries per distance
    assert_close(
        (by_distance * counts).sum(dim=-1), torch.full((2, heads), float(seq_len), dtype=torch.float64)
    )


def test_previous_token_and_sink_heads_are_recognised() -> None:
    seq_len = 6
    previous = torch.zeros(seq_len, seq_len)
    previous[0, 0] = 1.0
    previous[torch.arange(1, seq_len), torch.arange(seq_len - 1)] = 1.0
    sink = torch.zeros(seq_len, seq_len)
    sink[:, 0] = 1.0
    by_distance = attention_by_distance(torch.stack([previous, sink]))
    assert_close(by_distance[0, 1], torch.tensor(1.0, dtype=torch.float64))
    # queries 0 and 1 of the previous-token head put their weight on key 0; every query of the sink head
    expected = torch.tensor([2 / 6, 1.0], dtype=torch.float64)
    assert_close(attention_to_key(torch.stack([previous, sink])), expected)
    probs = causal_probabilities(3, 5, 5, seed=1)
    assert_close(attention_to_key(probs, key=2), probs[:, 2:, 2].mean(dim=-1))


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_pair_norms_follow_the_layout_and_do_not_change_under_rope(layout: str) -> None:
    x = torch.randn(4, 7, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    norms = rotary_pair_norms(x, layout=layout)
    pairs = [(c, c + 8) if layout == "half" else (2 * c, 2 * c + 1) for c in range(8)]
    expected = torch.stack([(x[..., a] ** 2 + x[..., b] ** 2).sqrt() for a, b in pairs], dim=-1)
    assert_close(norms, expected)
    rotated = apply_rope(x, torch.arange(7) * 1000, layout=layout)
    assert_close(rotary_pair_norms(rotated, layout=layout), norms)
    partial = rotary_pair_norms(x, layout=layout, rotary_dim=8)
    assert partial.shape == (4, 7, 4)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: attention_by_distance(torch.zeros(3, 4)),
            ValueError,
            r"probs must have shape \[\.\.\., T, T\]",
        ),
        (lambda: attention_by_distance(torch.zeros(3, 3, dtype=torch.int64)), TypeError, "probs"),
        (lambda: attention_to_key(torch.zeros(3, 3), key=3), ValueError, r"key must be a key position"),
        (lambda: attention_to_key(torch.zeros(3, 3), key=-1), ValueError, "key"),
        (lambda: rotary_pair_norms(torch.zeros(2, 5)), ValueError, "even last dimension"),
        (lambda: rotary_pair_norms(torch.zeros(2, 4), layout="neox"), ValueError, "layout"),
        (lambda: rotary_pair_norms(torch.zeros(2, 4), rotary_dim=6), ValueError, "rotary_dim"),
    ],
)
def test_bad_input_names_the_argument(call, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()
