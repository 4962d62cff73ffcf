"""The SAE benchmarks run in quick mode and report what their tables need."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.slow
def test_train_throughput_quick_mode_reports_ratios_and_memory():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "sae_train_throughput.py"), "--quick", "--steps", "3",
                          "--repeats", "1", "--json"], capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(result["rows_per_s"]) == {"ours relu", "plain relu", "ours topk", "ours topk, matryoshka 4 groups",
                                         "plain topk, dense decode", "plain topk, k-winner decode"}
    assert all(v > 0 for v in result["rows_per_s"].values())
    assert result["ratio_relu"] > 0 and result["ratio_topk"] > 0 and result["matmul_gflops"] > 0
    # The nested-prefix loss adds decodes to a TopK step; it cannot make the step faster.
    assert 0 < result["ratio_matryoshka_vs_topk"] < 1.5
    memory = result["memory"]
    # Training on the data must not hold a second copy of it.
    assert memory["activations_mb"] > 90
    assert memory["peak_mb"] - memory["after_data_mb"] < 0.5 * memory["activations_mb"]


@pytest.mark.slow
def test_toy_recovery_quick_mode_reports_every_setting():
    out = subprocess.run([sys.executable, str(BENCHMARKS / "sae_toy_recovery.py"), "--quick", "--json"],
                         capture_output=True, text=True, check=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.03 < result["oracle_fvu"] < 0.2 and 4 < result["true_l0"] < 6.5
    assert {r["architecture"] for r in result["results"]} == {"relu", "topk"}
    assert all(0 < r["mmcs"] <= 1 and r["fvu"] > 0 for r in result["results"])
