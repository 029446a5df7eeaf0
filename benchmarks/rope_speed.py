"""Speed of posenc_lib.apply_rope against Hugging Face's eager RoPE and against clone(), in one run.

Applying RoPE must read a tensor and write one of the same size, so ``clone()`` of the same tensors is the
memory-bound limit on the machine at hand. This script times, on the CPU and in one process:

* ``clone``: ``q.clone(); k.clone()``;
* ``hf_eager``: ``transformers.models.llama.modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)``, with its
  cos/sin computed beforehand (outside the timed region, which favours it);
* ``half`` and ``interleaved``: ``apply_rope(q); apply_rope(k)`` in each layout, angles included.

The methods take turns, one call each per round, over many rounds, and each is summarised by its median
(``posenc_lib.timing.time_calls``), so that load from other processes on a shared machine affects them
alike; only ratios measured in the same run are reported.
Targets (issue 2): at most 0.4x Hugging Face's time in both layouts; at most 1.6x ``clone()`` for the half
layout and 1.2x for the interleaved one. ``--check`` makes the exit status non-zero when a target is missed;
``--quick`` runs tiny shapes only to check that the script works.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as hf_apply_rotary_pos_emb

from posenc_lib.rope import apply_rope
from posenc_lib.timing import time_calls

TARGETS = {  # (method, baseline): largest acceptable time ratio
    ("half", "hf_eager"): 0.4,
    ("interleaved", "hf_eager"): 0.4,
    ("half", "clone"): 1.6,
    ("interleaved", "clone"): 1.2,
}


def make_methods(shape: tuple[int, int, int, int]) -> dict[str, Callable[[], object]]:
    """Return the timed callables, each acting on the same seeded q and k of ``shape`` (float32)."""
    _, heads, seq_len, head_dim = shape
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(shape, generator=generator)
    k = torch.randn(shape, generator=generator)
    config = LlamaConfig(hidden_size=heads * head_dim, num_attention_heads=heads)
    cos, sin = LlamaRotaryEmbedding(config)(q, torch.arange(seq_len)[None])
    return {
        "clone": lambda: (q.clone(), k.clone()),
        "hf_eager": lambda: hf_apply_rotary_pos_emb(q, k, cos, sin),
        "half": lambda: (apply_rope(q, layout="half"), apply_rope(k, layout="half")),
        "interleaved": lambda: (apply_rope(q, layout="interleaved"), apply_rope(k, layout="interleaved")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few rounds: a smoke test")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument("--check", action="store_true", help="exit with status 1 if a target is missed")
    args = parser.parse_args(argv)
    shape = (1, 2, 64, 32) if args.quick else (4, 16, 1024, 128)
    rounds, warmup = (2, 1) if args.quick else (args.rounds, 3)

    # the methods take turns, one call each per round; each is summarised by its median
    times = time_calls(make_methods(shape), rounds=rounds, warmup=warmup, statistic="median")
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, q and k of shape {list(shape)} float32")
    for name, seconds in times.items():
        print(f"  {name:12s} {seconds * 1e3:9.2f} ms (median of {rounds} calls)")
    if args.quick:
        print("quick run: the shapes are too small for the targets to mean anything, so none is checked")
        return 0
    missed = []
    for (method, baseline), target in TARGETS.items():
        ratio = times[method] / times[baseline]
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"  {method:12s} / {baseline:9s} = {ratio:5.2f}x   (target <= {target}x: {verdict})")
        if ratio > target:
            missed.append(f"{method}/{baseline}")
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
