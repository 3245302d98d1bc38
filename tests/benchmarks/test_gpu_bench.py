"""The GPU benchmark's one command runs end to end on CPU with a tiny model (its smoke mode), bf16 and fp32."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_bench_command_runs_on_cpu_tiny_and_prints_the_ratios(tmp_path):
    out = tmp_path / "rows.json"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(ROOT / "tests/benchmarks/gpu_bench.sh"), "--device", "cpu", "--tiny", "--dtypes", "float32,bfloat16",
         "--arms", "3", "--limit", "6", "--gen-limit", "2", "--max-gen-toks", "4", "--batch-size", "4",
         "--threads", "1", "--json", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Summary" in proc.stdout and "| evaluator ss_mc | bfloat16 | 3 |" in proc.stdout
    rows = json.loads(out.read_text())
    assert {(r["benchmark"], r["dtype"]) for r in rows["eval_arms"]} == {
        (b, d) for b in ("ss_mc", "ss_arith") for d in ("float32", "bfloat16")}
    assert {r["dtype"] for r in rows["generation"]} == {"float32", "bfloat16"}
    assert all(r["ratio"] > 0 for r in rows["eval_arms"] + rows["generation"])
    fp32 = [r for r in rows["eval_arms"] if r["dtype"] == "float32"]
    assert all(r["mismatches"] == [] for r in fp32)  # fp32: the one pass is the reference's outcomes
    mc = next(r for r in fp32 if r["benchmark"] == "ss_mc")
    assert mc["documents"] == 6 * 3 and mc["max_abs_dll"] <= 1e-4
    assert all(r["strings_differing"] == 0 for r in rows["generation"] if r["dtype"] == "float32")
