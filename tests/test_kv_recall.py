"""The kv_recall task of posenc_lib.lab (proposed additions to tests/test_lab.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from posenc_lib.lab import IGNORE_INDEX, evaluate_model, make_task_batch, train_model


def _batch(seq_len: int = 16, vocab_size: int = 48, num_keys: int | None = 32, seed: int = 0, batch: int = 8):
    return make_task_batch(
        "kv_recall",
        batch_size=batch,
        seq_len=seq_len,
        vocab_size=vocab_size,
        generator=torch.Generator().manual_seed(seed),
        num_keys=num_keys,
    )


@settings(deadline=None, max_examples=40)
@given(n=st.integers(1, 12), extra_keys=st.integers(0, 8), values=st.integers(1, 8), seed=st.integers(0, 99))
def test_every_scored_target_is_the_value_after_the_same_key(
    n: int, extra_keys: int, values: int, seed: int
) -> None:
    num_keys = n + extra_keys
    tokens, targets = _batch(4 * n, num_keys + values, num_keys, seed)
    pair_keys, pair_values = tokens[:, : 2 * n : 2], tokens[:, 1 : 2 * n : 2]
    assert ((pair_keys >= 0) & (pair_keys < num_keys)).all()
    assert ((pair_values >= num_keys) & (pair_values < num_keys + values)).all()
    assert all(row.unique().numel() == n for row in pair_keys)  # distinct keys
    scored = targets != IGNORE_INDEX
    assert torch.equal(scored.nonzero()[:, 1].unique(), torch.arange(2 * n, 4 * n, 2))
    for row in range(tokens.shape[0]):
        lookup = dict(zip(pair_keys[row].tolist(), pair_values[row].tolist(), strict=True))
        for t in range(2 * n, 4 * n, 2):
            assert targets[row, t] == lookup[int(tokens[row, t])] == tokens[row, t + 1]


def test_the_same_generator_gives_the_same_batch_and_keys_default_to_half() -> None:
    first, second = _batch(seed=3), _batch(seed=3)
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    tokens, _ = _batch(seq_len=8, vocab_size=20, num_keys=None)
    assert tokens[:, :4:2].max() < 10 <= tokens[:, 1:4:2].min()


class _Oracle(torch.nn.Module):
    """Looks the value up in the pairs: a perfect model of the task, for evaluate_model."""

    def __init__(self, vocab_size: int, wrong: bool = False) -> None:
        super().__init__()
        self.vocab_size, self.wrong = vocab_size, wrong
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1] // 4
        logits = torch.zeros(*tokens.shape, self.vocab_size)
        for row in range(tokens.shape[0]):
            lookup = dict(
                zip(tokens[row, : 2 * n : 2].tolist(), tokens[row, 1 : 2 * n : 2].tolist(), strict=True)
            )
            for t in range(2 * n, 4 * n, 2):
                value = lookup[int(tokens[row, t])]
                logits[row, t, value if not self.wrong else tokens[row, 1]] = 1.0  # wrong: always v_1
        return logits


def test_an_oracle_scores_one_and_a_guess_does_not() -> None:
    right = evaluate_model(_Oracle(48), "kv_recall", seq_len=64, vocab_size=48, num_keys=32, batches=1)
    wrong = evaluate_model(
        _Oracle(48, wrong=True), "kv_recall", seq_len=64, vocab_size=48, num_keys=32, batches=1
    )
    assert right["accuracy"] == 1.0 and wrong["accuracy"] < 0.2  # control: the first value is rarely right


def test_train_model_passes_num_keys() -> None:
    model = torch.nn.Sequential(torch.nn.Embedding(48, 8), torch.nn.Linear(8, 48))
    losses = train_model(
        model, "kv_recall", steps=2, seq_len=16, vocab_size=48, num_keys=32, batch_size=4, progress=False
    )
    assert len(losses) == 2
    with pytest.raises(ValueError, match="num_keys"):  # 4 distinct keys cannot fit into 3
        train_model(model, "kv_recall", steps=1, seq_len=16, vocab_size=48, num_keys=3, progress=False)


@pytest.mark.parametrize(
    ("seq_len", "vocab_size", "num_keys"),
    [(10, 48, 32), (3, 48, 32), (16, 48, 2), (16, 32, 32), (16, 48, 48)],
)
def test_bad_sizes_are_rejected(seq_len: int, vocab_size: int, num_keys: int) -> None:
    with pytest.raises(ValueError, match="kv_recall needs seq_len = 4n"):
        _batch(seq_len, vocab_size, num_keys)
