"""Speed of posenc_lib's RoPE against Hugging Face's and against clone(), as ratios measured in one run.

Applying RoPE must read a tensor and write one of the same size, so ``clone()`` of the same tensors is the
memory-bound limit on the machine at hand. This script times, in one process, for q and k of shape
``[4, 16, 1024, 128]`` float32:

* ``clone``: ``q.clone(); k.clone()``;
* ``hf_eager``: ``transformers.models.llama.modeling_llama.apply_rotary_pos_emb(q, k, cos, sin)``, with its
  cos/sin computed beforehand (outside the timed region, which favours it);
* ``half`` and ``interleaved``: ``apply_rope(q); apply_rope(k)`` in each layout, angles included;
* ``half_compiled``: the half-layout kernel ``rotate_with_cos_sin`` compiled by ``torch.compile`` (one fused
  loop; cos/sin computed beforehand, as a model computes them once per forward pass for all layers), for
  information: eager PyTorch needs at least two passes for the half layout (a product, then the cross term
  of each half), a fused kernel one, and a pass costs about 0.25x ``clone()`` here; not in ``--quick`` runs;

and, for position ids ``[1, 4096]`` of a Llama config with head width 128:

* ``hf_rotary_emb``: transformers' ``LlamaRotaryEmbedding.forward`` (angles in float32);
* ``ours_rotary_emb``: ``posenc_lib.hf.HFRotaryEmbedding.forward`` (angles in float64).

The methods take turns, one call each per round, over many rounds, and each is summarised by its median
(``posenc_lib.timing.time_calls``, which synchronises a GPU around each call), so that load from other
processes on a shared machine affects them alike; only ratios measured in the same run are reported.
Targets (issue 10), on 2 CPU threads: half at most 1.15x ``clone()``, interleaved at most 1.10x, both at most
0.4x Hugging Face's eager RoPE, and ``HFRotaryEmbedding`` at most 2x transformers' own rotary module.
``--device cuda`` prints the same ratios on a GPU (the targets are the CPU's and are only reported there);
``--check`` makes the exit status non-zero when a target is missed; ``--quick`` runs tiny shapes only, to
check that the script works.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as hf_apply_rotary_pos_emb

from posenc_lib.hf import HFRotaryEmbedding
from posenc_lib.rope import apply_rope, rope_angles, rotate_with_cos_sin
from posenc_lib.rope_scaling import rope_inverse_frequencies
from posenc_lib.timing import time_calls

TARGETS = {  # (method, baseline): largest acceptable time ratio
    ("half", "clone"): 1.15,
    ("interleaved", "clone"): 1.10,
    ("half", "hf_eager"): 0.4,
    ("interleaved", "hf_eager"): 0.4,
    ("ours_rotary_emb", "hf_rotary_emb"): 2.0,
}
INFORMATION = [("half_compiled", "clone"), ("half_compiled", "half")]  # ratios printed without a target


def make_methods(
    shape: tuple[int, int, int, int], rotary_positions: int, device: torch.device, *, compiled: bool
) -> dict[str, Callable[[], object]]:
    """Return the timed callables, acting on seeded q and k of ``shape`` (float32, made on the CPU)."""
    _, heads, seq_len, head_dim = shape
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(shape, generator=generator).to(device)
    k = torch.randn(shape, generator=generator).to(device)
    config = LlamaConfig(hidden_size=heads * head_dim, num_attention_heads=heads)
    hf_rotary = LlamaRotaryEmbedding(config).to(device)
    ours_rotary = HFRotaryEmbedding(config).to(device)
    cos, sin = hf_rotary(q, torch.arange(seq_len, device=device)[None])
    position_ids = torch.arange(rotary_positions, device=device)[None]
    methods = {
        "clone": lambda: (q.clone(), k.clone()),
        "hf_eager": lambda: hf_apply_rotary_pos_emb(q, k, cos, sin),
        "half": lambda: (apply_rope(q, layout="half"), apply_rope(k, layout="half")),
        "interleaved": lambda: (apply_rope(q, layout="interleaved"), apply_rope(k, layout="interleaved")),
        "hf_rotary_emb": lambda: hf_rotary(q, position_ids),
        "ours_rotary_emb": lambda: ours_rotary(q, position_ids),
    }
    if compiled:
        angles = rope_angles(torch.arange(seq_len, device=device), rope_inverse_frequencies(head_dim))
        table = angles.cos().float(), angles.sin().float()
        kernel = torch.compile(rotate_with_cos_sin, fullgraph=True)
        methods["half_compiled"] = lambda: (kernel(q, *table), kernel(k, *table))
    return methods


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few rounds: a smoke test")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--check", action="store_true", help="exit with status 1 if a target is missed")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    shape, rotary_positions = ((1, 2, 64, 32), 64) if args.quick else ((4, 16, 1024, 128), 4096)
    rounds, warmup = (2, 1) if args.quick else (args.rounds, 3)

    methods = make_methods(shape, rotary_positions, device, compiled=not args.quick)
    times = time_calls(methods, rounds=rounds, warmup=warmup, statistic="median", device=device)
    print(
        f"torch {torch.__version__} on {device.type}, {torch.get_num_threads()} CPU threads; "
        f"q and k of shape {list(shape)} float32; position ids [1, {rotary_positions}]"
    )
    for name, seconds in times.items():
        print(f"  {name:16s} {seconds * 1e3:9.3f} ms (median of {rounds} calls)")
    if args.quick:
        print("quick run: the shapes are too small for the targets to mean anything, so none is checked")
        return 0
    missed = []
    for (method, baseline), target in TARGETS.items():
        ratio = times[method] / times[baseline]
        if device.type == "cpu":
            verdict = "ok" if ratio <= target else "MISSED"
            print(f"  {method:16s} / {baseline:14s} = {ratio:6.3f}x   (target <= {target}x: {verdict})")
            if ratio > target:
                missed.append(f"{method}/{baseline}")
        else:
            print(f"  {method:16s} / {baseline:14s} = {ratio:6.3f}x   (CPU target <= {target}x)")
    for method, baseline in INFORMATION:
        print(
            f"  {method:16s} / {baseline:14s} = {times[method] / times[baseline]:6.3f}x   (for information)"
        )
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
