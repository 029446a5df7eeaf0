"""The lab's synthetic tasks, training loop and evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from posenc_lib.lab import (
    IGNORE_INDEX,
    SEPARATOR,
    evaluate_model,
    make_task_batch,
    train_model,
    with_rope_scaling,
)
from posenc_lib.rope import RotaryEmbedding
from posenc_lib.rope_scaling import rope_frequencies
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


def test_after_step_sees_every_step_and_the_model_keeps_training() -> None:
    torch.manual_seed(0)
    model = TinyDecoder(6, 16, 2, 1, encoding="rope")
    seen = []

    def after_step(step: int, loss: float) -> None:
        seen.append((step, loss, model.training))
        evaluate_model(model, "lag_copy", seq_len=8, vocab_size=6, batches=1, batch_size=2)  # sets eval mode

    losses = train_model(
        model, "lag_copy", steps=4, seq_len=8, vocab_size=6, progress=False, after_step=after_step
    )
    assert [step for step, _, _ in seen] == [1, 2, 3, 4]
    assert [loss for _, loss, _ in seen] == losses and all(training for _, _, training in seen)
    # the same run without the callback: the same losses (evaluating does not disturb training)
    torch.manual_seed(0)
    fresh = TinyDecoder(6, 16, 2, 1, encoding="rope")
    again = train_model(fresh, "lag_copy", steps=4, seq_len=8, vocab_size=6, progress=False)
    assert again == losses and not model.training
    with pytest.raises(TypeError, match="after_step must be callable"):
        train_model(model, "lag_copy", steps=1, seq_len=8, vocab_size=6, progress=False, after_step=3)


def test_with_a_fixed_warm_up_a_short_run_is_the_start_of_a_long_one() -> None:
    runs = []
    for steps in (3, 6):
        torch.manual_seed(0)
        model = TinyDecoder(6, 16, 2, 1, encoding="rope")
        runs.append(
            train_model(
                model, "lag_copy", steps=steps, seq_len=8, vocab_size=6, progress=False, warmup_steps=2
            )
        )
    assert len(runs[1]) == 6 and runs[1][:3] == runs[0]
    torch.manual_seed(0)
    default = train_model(TinyDecoder(6, 16, 2, 1, encoding="rope"), "lag_copy", steps=6, seq_len=8,
                          vocab_size=6, progress=False)  # fmt: skip
    assert default != runs[1]  # the default warm-up (6 // 10 -> 1 step) is another schedule
    with pytest.raises(ValueError, match="warmup_steps must be a positive integer"):
        train_model(model, "lag_copy", steps=1, seq_len=8, vocab_size=6, progress=False, warmup_steps=0)


YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}


def test_with_rope_scaling_swaps_the_frequencies_of_every_layer_and_keeps_the_weights() -> None:
    torch.manual_seed(0)
    model = TinyDecoder(8, 32, 2, 3, encoding="rope").eval()
    scaled = with_rope_scaling(model, YARN)
    inv_freq, attention_factor = rope_frequencies(16, scaling=YARN)
    for block, original in zip(scaled.blocks, model.blocks, strict=True):
        rope = block.attention.positional
        assert isinstance(rope, RotaryEmbedding) and rope is not original.attention.positional
        assert torch.equal(rope.inv_freq, inv_freq) and rope.attention_factor == attention_factor
        # the original model is untouched
        assert torch.equal(original.attention.positional.inv_freq, rope_frequencies(16)[0])
    weights, original_weights = scaled.state_dict(), model.state_dict()
    assert weights.keys() == original_weights.keys()
    assert all(torch.equal(weights[name], original_weights[name]) for name in weights)
    tokens = torch.randint(0, 8, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(with_rope_scaling(model, None)(tokens), model(tokens), rtol=0, atol=0)
        assert not torch.allclose(scaled(tokens), model(tokens))


def test_with_rope_scaling_passes_the_length_to_length_dependent_types() -> None:
    model = TinyDecoder(8, 32, 2, 1, encoding="rope")
    dynamic = {"rope_type": "dynamic", "factor": 4.0, "original_max_position_embeddings": 64}
    for seq_len in (64, 256):
        rope = with_rope_scaling(model, dynamic, seq_len=seq_len).blocks[0].attention.positional
        assert torch.equal(rope.inv_freq, rope_frequencies(16, scaling=dynamic, seq_len=seq_len)[0])
    # at the original length, dynamic NTK is plain RoPE
    plain = with_rope_scaling(model, dynamic, seq_len=64).blocks[0].attention.positional
    assert torch.equal(plain.inv_freq, rope_frequencies(16)[0])


def test_with_rope_scaling_keeps_layout_rotary_width_and_sharing() -> None:
    shared = RotaryEmbedding(16, layout="interleaved", rotary_dim=8, base=500.0)
    model = torch.nn.ModuleDict({"a": shared, "b": shared})
    scaled = with_rope_scaling(model, {"rope_type": "linear", "factor": 2.0}, base=500.0)
    assert scaled["a"] is scaled["b"] and scaled["a"] is not shared
    assert (scaled["a"].dim, scaled["a"].layout, scaled["a"].rotary_dim) == (16, "interleaved", 8)
    torch.testing.assert_close(scaled["a"].inv_freq, shared.inv_freq / 2, rtol=1e-15, atol=0)
    alone = with_rope_scaling(shared, {"rope_type": "linear", "factor": 2.0}, base=500.0)  # the module itself
    assert isinstance(alone, RotaryEmbedding) and torch.equal(alone.inv_freq, scaled["a"].inv_freq)


def test_with_rope_scaling_refuses_what_it_cannot_scale() -> None:
    model = TinyDecoder(8, 32, 2, 1, encoding="rope")
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        with_rope_scaling("model", YARN)
    with pytest.raises(ValueError, match="no RotaryEmbedding"):
        with_rope_scaling(TinyDecoder(8, 32, 2, 1, encoding="alibi"), YARN)
    with pytest.raises(ValueError, match="plain RoPE frequencies with base 500"):
        with_rope_scaling(model, YARN, base=500.0)  # trained with base 10000
    with pytest.raises(ValueError, match="plain RoPE frequencies"):
        with_rope_scaling(with_rope_scaling(model, YARN), YARN)  # scalings never compound
    with pytest.raises(ValueError, match="rope_type"):
        with_rope_scaling(model, {"factor": 4.0})


def _experiment():
    """experiments/context_extension_lab.py, the script behind chapter 7's results file, as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "experiments" / "context_extension_lab.py"
    spec = importlib.util.spec_from_file_location("context_extension_lab", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_context_extension_results_file_matches_its_script() -> None:
    experiment = _experiment()
    results = json.loads(experiment.RESULTS.read_text(encoding="utf-8"))
    assert results["settings"] == experiment.SETTINGS
    seeds = [str(seed) for seed in experiment.SETTINGS["seeds"]]
    assert list(results["seeds"]) == seeds
    long = str(int(experiment.SETTINGS["factor"] * experiment.SETTINGS["train_len"]))
    steps = experiment.SETTINGS["finetune_steps"]
    for seed in seeds:
        run = results["seeds"][seed]
        assert list(run["zero_shot"]) == list(experiment.scalings(experiment.SETTINGS))
        assert all(0 <= values[long] <= 1 for values in run["zero_shot"].values())
        assert list(run["finetune_accuracy_at_4L0"]) == list(steps)
        for name, curve in run["finetune_accuracy_at_4L0"].items():
            expected = [
                str(step) for step in experiment.SETTINGS["finetune_checkpoints"] if step <= steps[name]
            ]
            assert list(curve) == expected and all(0 <= value <= 1 for value in curve.values())
        by_token = run["finetuned_accuracy_by_target_token"]
        assert list(by_token) == list(steps)
        assert all(len(values) == experiment.SETTINGS["vocab_size"] for values in by_token.values())
    assert {"date", "python", "torch", "machine", "torch_threads", "seconds"} <= set(results["environment"])


def test_context_extension_script_runs(tmp_path) -> None:
    output = tmp_path / "results.json"
    assert _experiment().main(["--quick", "--output", str(output)]) == 0
    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["settings"]["train_len"] == 16 and list(results["seeds"]) == ["0"]


def test_load_results_reads_the_installed_results_file() -> None:
    from posenc_lib.lab import RESULTS, load_results

    expected_keys = {
        "context_extension_lab": {"description", "settings", "environment", "seeds"},
        "smollm2_long_context": {"description", "methods", "inputs", "environment"},
    }
    assert set(expected_keys) == set(RESULTS)
    for name in RESULTS:
        assert expected_keys[name] <= set(load_results(name))
    assert load_results("context_extension_lab") == json.loads(
        _experiment().RESULTS.read_text(encoding="utf-8")
    )
    with pytest.raises(ValueError, match="name"):
        load_results("no_such_results")
