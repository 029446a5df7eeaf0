"""SmolLM2-135M-Instruct past its trained context: perplexity by position with each RoPE scaling.

SmolLM2-135M-Instruct (``posenc_lib.pretrained``) was trained on contexts of L0 = 8192 tokens. This script
runs it on slices of ``2 L0`` tokens of *Pride and Prejudice* (``posenc_lib.texts``) with its rotary module
replaced by ``posenc_lib.hf.HFRotaryEmbedding`` for each way of extending the context by s = 2:

* ``none``: the model as trained (base b = 100000);
* ``pi``: Position Interpolation, every frequency divided by s (Chen et al. 2023; rope_type ``linear``);
* ``ntk``: NTK-aware scaling, base b s^(d_h/(d_h - 2)) (bloc97 2023), fixed;
* ``dynamic``: dynamic NTK (emozilla 2023; rope_type ``dynamic``), which picks its base from the length of
  the input, here 2 L0;
* ``yarn``: YaRN (Peng et al. 2023; rope_type ``yarn``, factor s, L0 = 8192, attention factor 0.1 ln s + 1).

For each slice and method it records the negative log-likelihood of every next token (one forward pass over
the whole slice; causal attention, so position p sees tokens 0..p), averaged in bins of 512 positions, and
the perplexity over positions below and above L0. It also records, for each method, the perplexity of the
first 2048 tokens of the first slice as a separate short run: the chapter re-measures that point live.

The results file (``posenc_lib/data/smollm2_long_context.json``, package data, so that the chapter can read
it in Colab too) holds the environment (versions, device, threads), the inputs (the model file's SHA-256,
the text's package and version, each slice's token range, the SHA-256 of its token ids and its first and
last characters) and the run times. About 15 minutes on 2 CPU cores; ``--device cuda`` runs it on a GPU;
``--quick`` runs one 512-token slice with two methods and writes nothing unless ``--output`` is given (``make
test`` runs it).

Run ``make smollm2-long`` to rewrite the results file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import transformers

import posenc_lib
from posenc_lib.hf import HFRotaryEmbedding
from posenc_lib.pretrained import find_smollm2_gguf, load_smollm2
from posenc_lib.texts import PRIDE_AND_PREJUDICE_PACKAGE, PRIDE_AND_PREJUDICE_VERSION, pride_and_prejudice

RESULTS = Path(__file__).resolve().parent.parent / "posenc_lib" / "data" / "smollm2_long_context.json"
METHODS = ("none", "pi", "ntk", "dynamic", "yarn")
BIN = 512  # positions per bin of the per-position curves
SHORT = 2048  # length of the short run that the chapter repeats live
DESCRIPTION = (
    "SmolLM2-135M-Instruct (trained context L0 = 8192) on slices of 2 L0 tokens of Pride and Prejudice, "
    "with its RoPE replaced by posenc_lib.hf.HFRotaryEmbedding for each context extension by s = 2: mean "
    "next-token negative log-likelihood (nats) per bin of positions, perplexity below and above L0, and the "
    "perplexity of the first 2048 tokens; written by experiments/smollm2_long_context.py (make smollm2-long)."
)
LOGIT_CHUNK = 1024  # positions per chunk of the output layer (full logits of 16k tokens would take 3 GB)


def scaled_config(config: dict[str, Any], method: str, factor: float) -> dict[str, Any]:
    """The model's config dict with the RoPE of ``method`` for an extension by ``factor``."""
    config = json.loads(json.dumps(config))  # a deep copy
    rope = dict(config.get("rope_parameters") or {})
    base = float(rope.get("rope_theta", config.get("rope_theta")))
    original = int(config["max_position_embeddings"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])
    if method == "none":
        scaling = {"rope_type": "default", "rope_theta": base}
    elif method == "pi":
        scaling = {"rope_type": "linear", "factor": factor, "rope_theta": base}
    elif method == "ntk":
        scaling = {"rope_type": "default", "rope_theta": base * factor ** (head_dim / (head_dim - 2))}
    elif method == "dynamic":
        scaling = {"rope_type": "dynamic", "factor": factor, "rope_theta": base}
    elif method == "yarn":
        scaling = {
            "rope_type": "yarn",
            "factor": factor,
            "original_max_position_embeddings": original,
            "rope_theta": base,
        }
    else:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    config["rope_parameters"] = scaling
    config["rope_scaling"] = None
    return config


@torch.no_grad()
def token_nll(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood (nats, float64) of tokens 1..T-1 given their prefixes (``ids``: ``[1, T]``)."""
    hidden = model.model(input_ids=ids).last_hidden_state[0]
    targets = ids[0, 1:]
    losses = []
    for start in range(0, targets.numel(), LOGIT_CHUNK):
        logits = model.lm_head(hidden[start : start + LOGIT_CHUNK][: targets.numel() - start]).double()
        losses.append(
            torch.nn.functional.cross_entropy(logits, targets[start : start + LOGIT_CHUNK], reduction="none")
        )
    return torch.cat(losses).cpu()


def slice_record(tokenizer: Any, ids: torch.Tensor, start: int, length: int) -> dict[str, Any]:
    """Where a slice comes from: its token range, the SHA-256 of its ids, its first and last characters."""
    piece = ids[start : start + length]
    text = tokenizer.decode(piece)
    return {
        "token_start": start,
        "token_stop": start + length,
        "token_ids_sha256": hashlib.sha256(piece.numpy().astype("<i8").tobytes()).hexdigest(),
        "first_characters": text[:120],
        "last_characters": text[-120:],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="512-token slices, two methods: a smoke test")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--output", type=Path, default=None, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available here")
    output = args.output if (args.output is not None or args.quick) else RESULTS

    started = time.perf_counter()
    model, tokenizer = load_smollm2()
    model.to(device)
    original_rotary = model.model.rotary_emb
    config = model.config.to_dict()
    trained = int(config["max_position_embeddings"])
    factor = 2.0
    length = 512 if args.quick else int(factor * trained)
    short = 128 if args.quick else SHORT
    methods = ("none", "pi") if args.quick else METHODS
    bin_size = 64 if args.quick else BIN
    ids = tokenizer(pride_and_prejudice(), return_tensors="pt").input_ids[0]
    starts = [0] if args.quick else [0, ids.numel() // 2]
    if starts[-1] + length > ids.numel():
        raise ValueError(f"the text has {ids.numel()} tokens, too few for slices of {length}")

    results: dict[str, Any] = {"description": DESCRIPTION, "methods": {}}
    for method in methods:
        model.model.rotary_emb = HFRotaryEmbedding(scaled_config(config, method, factor))
        method_started = time.perf_counter()
        curves = []
        for start in starts:
            nll = token_nll(model, ids[None, start : start + length].to(device))
            bins = nll[: (nll.numel() // bin_size) * bin_size].view(-1, bin_size).mean(dim=1)
            curves.append(
                {
                    "token_start": start,
                    "mean_nll_per_bin": [round(float(value), 6) for value in bins],
                    "perplexity_below_L0": round(math.exp(float(nll[: trained - 1].mean())), 4),
                    "perplexity_above_L0": (
                        round(math.exp(float(nll[trained - 1 :].mean())), 4)
                        if nll.numel() > trained
                        else None
                    ),
                }
            )
        short_nll = token_nll(model, ids[None, :short].to(device))
        results["methods"][method] = {
            "rope": {
                key: value for key, value in scaled_config(config, method, factor)["rope_parameters"].items()
            },
            "slices": curves,
            "short_run": {"tokens": short, "perplexity": round(math.exp(float(short_nll.mean())), 6)},
            "seconds": round(time.perf_counter() - method_started, 1),
        }
        record = results["methods"][method]
        below = ", ".join(str(curve["perplexity_below_L0"]) for curve in curves)
        above = ", ".join(str(curve["perplexity_above_L0"]) for curve in curves)
        print(
            f"{method:8s} perplexity below L0 {below}; above L0 {above}; "
            f"first {short} tokens {record['short_run']['perplexity']} ({record['seconds']} s)"
        )
    model.model.rotary_emb = original_rotary

    gguf = find_smollm2_gguf()
    results["inputs"] = {
        "model": f"SmolLM2-135M-Instruct ({gguf.path.name} from {gguf.package} {gguf.version}, de-quantised)",
        "model_sha256": gguf.sha256,
        "trained_context": trained,
        "extension_factor": factor,
        "slice_length": length,
        "bin": bin_size,
        "text": f"Pride and Prejudice, {PRIDE_AND_PREJUDICE_PACKAGE} {PRIDE_AND_PREJUDICE_VERSION}",
        "text_tokens": ids.numel(),
        "slices": [slice_record(tokenizer, ids, start, length) for start in starts],
    }
    results["environment"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "posenc_lib": posenc_lib.__version__,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "attention": model.config._attn_implementation,
        "seconds": round(time.perf_counter() - started, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    if output is not None:
        output.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
