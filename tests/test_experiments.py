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
    assert set(results) == {"methods", "inputs", "environment"}
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
