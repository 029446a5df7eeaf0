"""The scripts in experiments/ run: each one's --quick mode, which `make test` runs through this file."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_smollm2_long_context_quick_run_writes_a_complete_results_file(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    script = ROOT / "experiments" / "smollm2_long_context.py"
    environment = {**os.environ, "TQDM_DISABLE": "1"}
    subprocess.run(
        [sys.executable, str(script), "--quick", "--output", str(output)], check=True, env=environment
    )
    results = json.loads(output.read_text())
    assert set(results) == {"description", "methods", "inputs", "environment"}
    assert set(results["methods"]) == {"none", "pi"}
    for record in results["methods"].values():
        (curve,) = record["slices"]
        assert len(curve["mean_nll_per_bin"]) == (512 - 1) // results["inputs"]["bin"]  # 511 predictions
        assert 1.0 < curve["perplexity_below_L0"] < 1000.0 and curve["perplexity_above_L0"] is None
        assert math.isfinite(record["short_run"]["perplexity"])
    assert results["methods"]["pi"]["rope"] == {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0}
    (piece,) = results["inputs"]["slices"]
    assert piece["first_characters"].startswith("It is a truth universally acknowledged")
    assert results["environment"]["transformers"] == "5.18.0"


def test_smollm2_long_context_results_file_matches_its_inputs() -> None:
    """The shipped results file was made from this text, this model and the script's methods."""
    import hashlib

    from posenc_lib.lab import load_results
    from posenc_lib.pretrained import SMOLLM2_GGUF_SHA256, load_smollm2
    from posenc_lib.texts import pride_and_prejudice

    results = load_results("smollm2_long_context")
    assert list(results["methods"]) == ["none", "pi", "ntk", "dynamic", "yarn"]
    inputs = results["inputs"]
    assert inputs["model_sha256"] == SMOLLM2_GGUF_SHA256 and inputs["slice_length"] == 2 * 8192
    _, tokenizer = load_smollm2()
    ids = tokenizer(pride_and_prejudice(), return_tensors="pt").input_ids[0]
    assert inputs["text_tokens"] == ids.numel()
    for piece in inputs["slices"]:
        tokens = ids[piece["token_start"] : piece["token_stop"]].numpy().astype("<i8").tobytes()
        assert hashlib.sha256(tokens).hexdigest() == piece["token_ids_sha256"]
    methods = results["methods"]
    # dynamic NTK changes nothing up to L0: its short run is the unscaled model's
    assert methods["dynamic"]["short_run"] == {**methods["none"]["short_run"]}
    for record in methods.values():
        for curve in record["slices"]:
            assert len(curve["mean_nll_per_bin"]) == (2 * 8192 - 1) // inputs["bin"]
