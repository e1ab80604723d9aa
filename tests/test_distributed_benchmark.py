"""benchmarks/ring_joint_attention.py in its --smoke mode: 3 processes under torchrun, gloo, tiny shapes.

The multi-GPU run (NCCL) cannot happen in CI; this keeps the script's logic honest where it can run: launch,
sharding, both strategies, the overlap, rank-check and correctness measurements, the chooser report and the
JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_smoke_runs_and_reports(tmp_path):
    out = tmp_path / "smoke.json"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3",
        str(REPO / "benchmarks" / "ring_joint_attention.py"), "--smoke", "--iters=1", "--warmup=0", f"--out={out}",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    env = report["environment"]
    assert env["backend"] == "gloo" and env["world_size"] == 3
    assert env["env"] == {
        "NCCL_NVLS_ENABLE": "0",
        "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
        "NVSHMEM_DISABLE_NVLS": "1",
    }
    rows = {(r["shape"], r["strategy"]): r for r in report["rows"]}
    assert set(rows) == {(s, t) for s in ("mochi_tiny", "flux_tiny") for t in ("ring", "ulysses")}
    assert rows["flux_tiny", "ulysses"]["skipped"] == "nh=4 is not divisible by P=3"
    measured = [r for r in rows.values() if "skipped" not in r]
    assert len(measured) == 3
    for r in measured:
        assert r["ok"] and r["joint_out_identical_on_all_ranks"] and r["lse_inf_match"]
        assert r["block_runtime"] == r["single_runtime"] == "reference"
        assert r["max_abs_err_out"] < 1e-4 and r["max_abs_err_joint_out"] < 1e-4
        assert len(r["per_rank_ms"]) == 3 and r["group_ms"] > 0 and r["compute_only_ms"] > 0
        # The ranks' check: timed alone and as the difference it makes to a call.
        assert 0 < r["check_min_ms"] <= r["check_ms"] and r["unchecked_ms"] > 0
        assert r["check_fraction"] == pytest.approx(r["check_ms"] / r["unchecked_ms"], rel=1e-2, abs=2e-3)
        # The JSON rounds each field, so recompute with slack.
        assert r["speedup"] == pytest.approx(r["single_ms"] / r["group_ms"], rel=1e-2, abs=2e-3)
        assert r["scaling_efficiency"] == pytest.approx(r["speedup"] / 3, rel=1e-2, abs=2e-3)
    assert 0 <= rows["mochi_tiny", "ring"]["comm_hidden_fraction"] <= 1
    assert rows["mochi_tiny", "ring"]["comm_only_ms"] > 0
    assert rows["mochi_tiny", "ring"]["auto_choice"] == "ulysses"  # nh = 6 divides by 3
    assert rows["flux_tiny", "ring"]["auto_choice"] == "ring"  # nh = 4 does not
