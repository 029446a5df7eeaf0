"""The lab's synthetic tasks, training loop and evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from posenc_lib.lab import IGNORE_INDEX, SEPARATOR, evaluate_model, make_task_batch, train_model
from posenc_lib.transformer import TinyDecoder


def _batch(task: str, seq_len: int, seed: int = 0, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return make_task_batch(task, batch_size=5, seq_len=seq_len, vocab_size=10, generator=generator, **kwargs)


@pytest.mark.parametrize("lag", [1, 2, 5])
def test_lag_copy_targets_are_the_tokens_lag_steps_back(lag: int) -> None:
    tokens, targets = _batch("lag_copy", 12, lag=lag)
    for t in range(12):
        expected = tokens[:, t - lag] if t >= lag else torch.full((5,), IGNORE_INDEX)
        assert torch.equal(targets[:, t], expected)


@pytest.mark.parametrize("seq_len", [7, 8])
@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_copy_and_reverse_targets(task: str, seq_len: int) -> None:
    tokens, targets = _batch(task, seq_len)
    n = (seq_len - 1) // 2
    content = tokens[:, :n]
    answer = content.flip(-1) if task == "reverse" else content
    assert bool((content != SEPARATOR).all()) and bool((tokens[:, n] == SEPARATOR).all())
    assert torch.equal(tokens[:, n + 1 : 2 * n + 1], answer)
    scored = targets != IGNORE_INDEX
    assert scored.sum(1).tolist() == [n] * 5
    # Next-token prediction: where a target is scored, it is the token that follows in the sequence.
    assert torch.equal(targets[:, :-1][scored[:, :-1]], tokens[:, 1:][scored[:, :-1]])


def test_batches_are_reproducible_from_the_seed() -> None:
    assert torch.equal(_batch("reverse", 9, seed=3)[0], _batch("reverse", 9, seed=3)[0])
    assert not torch.equal(_batch("reverse", 9, seed=3)[0], _batch("reverse", 9, seed=4)[0])


def test_training_learns_lag_copy_and_evaluation_scores_it() -> None:
    torch.manual_seed(0)
    model = TinyDecoder(8, 32, 4, 2, encoding="rope")
    before = evaluate_model(model, "lag_copy", seq_len=16, vocab_size=8, batches=2)
    losses = train_model(model, "lag_copy", steps=150, seq_len=16, vocab_size=8, progress=False)
    after = evaluate_model(model, "lag_copy", seq_len=16, vocab_size=8, batches=2)
    assert len(losses) == 150 and losses[-1] < 0.5 * losses[0]
    assert before["accuracy"] < 0.4 < 0.9 < after["accuracy"]
    per_position = after["loss_by_position"]
    assert per_position.shape == (16,) and all(math.isnan(v) for v in per_position[:2].tolist())
    assert bool(torch.isfinite(per_position[2:]).all())


def test_a_learned_table_cannot_be_evaluated_past_its_length() -> None:
    model = TinyDecoder(8, 16, 2, 1, encoding="learned", max_positions=16)
    with pytest.raises(ValueError, match="positions"):
        evaluate_model(model, "lag_copy", seq_len=32, vocab_size=8, batches=1)


def test_bad_input() -> None:
    generator = torch.Generator()
    with pytest.raises(ValueError, match="task must be one of 'lag_copy', 'copy', 'reverse'"):
        make_task_batch("sort", batch_size=1, seq_len=4, vocab_size=4, generator=generator)
    with pytest.raises(ValueError, match="seq_len > lag"):
        make_task_batch("lag_copy", batch_size=1, seq_len=2, vocab_size=4, generator=generator)
    with pytest.raises(ValueError, match="vocab_size >= 3"):
        make_task_batch("copy", batch_size=1, seq_len=5, vocab_size=2, generator=generator)
    with pytest.raises(TypeError, match=r"generator must be a torch\.Generator"):
        make_task_batch("copy", batch_size=1, seq_len=5, vocab_size=5, generator=0)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        train_model(TinyDecoder(4, 8, 2, 1), "copy", steps=0, seq_len=5, vocab_size=4)


def test_progress_bar_obeys_tqdm_disable(monkeypatch: pytest.MonkeyPatch) -> None:
    from posenc_lib import lab

    steps = range(3)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    assert lab._progress(steps, enabled=True, description="x") is steps
    monkeypatch.delenv("TQDM_DISABLE")
    assert lab._progress(steps, enabled=False, description="x") is steps
    bar = lab._progress(steps, enabled=True, description="x")
    assert bar is not steps and list(bar) == [0, 1, 2]
