"""Chapter 7's lab in full: context-extension methods applied to a small trained RoPE model.

A ``posenc_lib.TinyDecoder`` with RoPE (width 32, 2 heads of width 16, 2 layers, base 10000) is trained at
``L0 = 256`` tokens on ``lag_copy`` with lag 2, once per seed. Each model is then run at ``4 L0`` with the
frequencies of every method (plain RoPE, Position Interpolation, NTK-aware scaling, dynamic NTK, YaRN,
Llama 3's rule, all with ``s = 4``), without training (zero-shot), and fine-tuned at ``4 L0`` with some of
them, its accuracy measured along the way. The chapter (``notebooks/07_context_extension.ipynb``) re-runs the
zero-shot part for three seeds and plots the fine-tuning curves from the results file this script writes,
which also records the settings and the environment.

Usage: ``python experiments/context_extension_lab.py`` (all seeds; about 20 minutes on a quiet 2-core CPU) or
``--quick`` (a smoke test with tiny sizes that writes nothing unless ``--output`` is given).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

import posenc_lib
from posenc_lib import lab

# The results file ships with posenc_lib (package data), so that the chapter can read it wherever posenc_lib
# is installed, Google Colab included: posenc_lib.lab.load_results("context_extension_lab").
RESULTS = Path(__file__).resolve().parent.parent / "posenc_lib" / "data" / "context_extension_lab.json"

SETTINGS = {
    "task": "lag_copy",
    "lag": 2,
    "vocab_size": 16,
    "dim": 32,
    "num_heads": 2,
    "num_layers": 2,
    "base": 10000.0,
    "train_len": 256,  # L0
    "train_steps": 60,
    "train_batch": 8,
    "train_lr": 1e-2,
    "factor": 4.0,  # s: the model is run at s * L0 tokens
    "eval_batch": 8,
    "seeds": [0, 1, 2, 3, 4],
    # fine-tuning at s * L0: steps per method (the others are at 1.0 long before 100 steps), one sequence per
    # step, a linear warm-up over 10 steps, then a constant learning rate, so that a shorter run is exactly
    # the start of a longer one
    "finetune_steps": {"none": 100, "PI": 600, "NTK-aware": 100, "YaRN": 100},
    "finetune_batch": 1,
    "finetune_lr": 3e-3,
    "finetune_warmup": 10,
    "finetune_checkpoints": [0, 10, 25, 50, 100, 150, 200, 300, 400, 500, 600],
}
QUICK = SETTINGS | {
    "train_len": 16,
    "train_steps": 3,
    "eval_batch": 2,
    "seeds": [0],
    "finetune_steps": {"none": 2, "PI": 3},
    "finetune_warmup": 1,
    "finetune_checkpoints": [0, 2, 3],
}


def scalings(settings: dict) -> dict[str, tuple[dict | None, int]]:
    """Each method's ``rope_scaling`` dict and the sequence length its frequencies are computed for.

    Dynamic NTK's frequencies follow the length (here the evaluation length ``s L0``); NTK-aware scaling with
    the fixed stretch ``s`` is dynamic NTK at the length where its bracket equals ``s``.
    """
    factor, original = settings["factor"], settings["train_len"]
    long = int(factor * original)
    dynamic = {"rope_type": "dynamic", "factor": factor, "original_max_position_embeddings": original}
    return {
        "none": (None, long),
        "PI": ({"rope_type": "linear", "factor": factor}, long),
        "NTK-aware": (dynamic, int(original * (2 * factor - 1) / factor)),
        "dynamic NTK": (dynamic, long),
        "YaRN": ({"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}, long),
        "Llama 3": (
            {
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": original,
            },
            long,
        ),
    }


def train(settings: dict, seed: int) -> posenc_lib.TinyDecoder:
    """The seed's model, trained at L0 (initial weights drawn on the CPU from the seed)."""
    torch.manual_seed(seed)
    model = posenc_lib.TinyDecoder(
        settings["vocab_size"],
        settings["dim"],
        settings["num_heads"],
        settings["num_layers"],
        encoding="rope",
    )
    lab.train_model(
        model, settings["task"], steps=settings["train_steps"], seq_len=settings["train_len"],
        vocab_size=settings["vocab_size"], batch_size=settings["train_batch"], lr=settings["train_lr"],
        seed=seed, lag=settings["lag"], progress=False,
    )  # fmt: skip
    return model


def accuracy(settings: dict, model: torch.nn.Module, seq_len: int) -> float:
    """Accuracy on one batch of fresh sequences of ``seq_len`` tokens (the evaluation data of the chapter)."""
    result = lab.evaluate_model(
        model, settings["task"], seq_len=seq_len, vocab_size=settings["vocab_size"], lag=settings["lag"],
        batches=1, batch_size=settings["eval_batch"],
    )  # fmt: skip
    return round(result["accuracy"], 4)


def accuracy_by_token(settings: dict, model: torch.nn.Module, seq_len: int) -> list[float]:
    """Accuracy for each target token value, on the evaluation batch of :func:`accuracy`."""
    generator = torch.Generator().manual_seed(12345)  # evaluate_model's default seed: the same sequences
    tokens, targets = lab.make_task_batch(
        settings["task"], batch_size=settings["eval_batch"], seq_len=seq_len,
        vocab_size=settings["vocab_size"], generator=generator, lag=settings["lag"],
    )  # fmt: skip
    with torch.no_grad():
        predicted = model(tokens).argmax(-1)
    return [
        round((predicted[targets == value] == value).float().mean().item(), 4)
        for value in range(settings["vocab_size"])
    ]


def run_seed(settings: dict, seed: int) -> dict:
    """Zero-shot accuracies at L0, 2 L0 and 4 L0 for every method, then the fine-tuning curves at 4 L0.

    After each fine-tune, the accuracy for each target token value at 4 L0 is recorded too: it tells an
    error of position (every value wrong alike) from a confusion between token values.
    """
    model = train(settings, seed)
    original, factor = settings["train_len"], settings["factor"]
    long = int(factor * original)
    methods = scalings(settings)
    zero_shot = {}
    for name, (scaling, seq_len) in methods.items():
        scaled = lab.with_rope_scaling(model, scaling, base=settings["base"], seq_len=seq_len)
        zero_shot[name] = {str(t): accuracy(settings, scaled, t) for t in (original, 2 * original, long)}
    curves, by_token = {}, {}
    for name, steps in settings["finetune_steps"].items():
        scaling, seq_len = methods[name]
        tuned = lab.with_rope_scaling(model, scaling, base=settings["base"], seq_len=seq_len)
        curve = {0: accuracy(settings, tuned, long)}

        def after_step(step: int, _loss: float, tuned=tuned, curve=curve) -> None:
            if step in settings["finetune_checkpoints"]:
                curve[step] = accuracy(settings, tuned, long)

        lab.train_model(
            tuned, settings["task"], steps=steps, seq_len=long, vocab_size=settings["vocab_size"],
            batch_size=settings["finetune_batch"], lr=settings["finetune_lr"],
            warmup_steps=settings["finetune_warmup"], seed=1000 + seed, lag=settings["lag"],
            progress=False, after_step=after_step,
        )  # fmt: skip
        curves[name] = {str(step): value for step, value in sorted(curve.items())}
        by_token[name] = accuracy_by_token(settings, tuned, long)
    return {
        "zero_shot": zero_shot,
        "finetune_accuracy_at_4L0": curves,
        "finetuned_accuracy_by_target_token": by_token,
    }


def environment() -> dict:
    """Where and with what the numbers were measured."""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "posenc_lib": posenc_lib.__version__,
        "machine": f"{platform.system()} {platform.machine()}, {platform.processor() or 'unknown CPU'}",
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one seed: a smoke test")
    parser.add_argument("--output", type=Path, help=f"results file (default {RESULTS}; none with --quick)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else SETTINGS
    output = args.output if args.output is not None or args.quick else RESULTS
    start = time.perf_counter()
    seeds = {}
    for seed in settings["seeds"]:
        seeds[str(seed)] = run_seed(settings, seed)
        zero = seeds[str(seed)]["zero_shot"]
        long = str(int(settings["factor"] * settings["train_len"]))
        print(f"seed {seed}: zero-shot at 4 L0 " + ", ".join(f"{k} {v[long]:.3f}" for k, v in zero.items()))
        for name, curve in seeds[str(seed)]["finetune_accuracy_at_4L0"].items():
            print(
                f"  fine-tune {name:10s} " + " ".join(f"{step}:{value:.2f}" for step, value in curve.items())
            )
        sys.stdout.flush()
    results = {
        "description": "Accuracy of a RoPE TinyDecoder trained at L0 on lag_copy, run at 4 L0 with each "
        "context-extension method: zero-shot, and during a fine-tune at 4 L0 "
        "(written by experiments/context_extension_lab.py)",
        "settings": settings,
        "environment": environment() | {"seconds": round(time.perf_counter() - start)},
        "seeds": seeds,
    }
    if output is not None:
        output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {output} in {results['environment']['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
