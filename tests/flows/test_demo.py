"""Smoke test of the README's main-job command: ``spectral-surgery demo`` at its smallest budget, end to end.

It runs the real thing in a child process (bundled SmolLM2, three freshly trained demo adapters, the real nightly
flow with lm-eval on the offline suites, the IFEval guard, the gate) and then reads what it left behind in the
registry and on disk. A few minutes on 2 cores; the full demo's numbers are in docs/demo.md.

Two first-run costs that no assertion here reads are paid once per test process instead, as a user's second run
finds them: the GGUF's conversion (``smol_base``, shared with the real-model tests of the ``smol`` group in
tests/conftest.py, and tested against the GGUF in tests/tasks/test_model.py) and the migration of Prefect's database
(``prefect_home_template``; a fresh Prefect home is tests/flows/test_prefect_home.py's).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spectral_surgery.registry.repository import Registry
from spectral_surgery.tasks.config import SurgeryConfig

pytestmark = pytest.mark.slow

TASK_SUITE = {"demo-math": "ss_arith", "demo-commonsense": "ss_mc", "demo-instruction": "ss_ifeval",
              "demo-commonsense-x3": "ss_mc", "demo-math-untrained": "ss_arith"}


@pytest.fixture(scope="module")
def demo_run(smol_base, prefect_home_template, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data_dir = root / "data"
    # the bundled model's cache as the first run leaves it (a copy: tests/tasks/test_model.py alters its own)
    shutil.copytree(smol_base[0] / "models", data_dir / "models")
    shutil.copytree(prefect_home_template, root / "prefect")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PREFECT_HOME=str(root / "prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", SPECTRAL_SURGERY_HOME=str(root / "unused"))
    env["PREFECT_LOGGING_LEVEL"] = "INFO"  # tests/flows/conftest.py quiets Prefect; the demo's user sees INFO
    env.pop("PREFECT_API_URL", None)  # the child runs its own temporary Prefect server, as a user's does
    proc = subprocess.run([sys.executable, "-m", "spectral_surgery.flows.cli", "demo", "--budget", "smallest",
                           "--data-dir",
                           str(data_dir), "--json"], env=env, capture_output=True, text=True, timeout=1500,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, f"demo failed ({proc.returncode}):\n{proc.stderr[-6000:]}"
    summary = json.loads(proc.stdout)
    reg = Registry.open(None, data_dir)
    yield data_dir, summary, proc.stderr, reg
    reg.close()


def test_demo_registers_the_fleet_and_decides_every_adapter(demo_run):
    data_dir, summary, stderr, reg = demo_run
    names = sorted(a.name for a in reg.list_adapters())
    assert names == ["demo-commonsense", "demo-commonsense-x3", "demo-instruction", "demo-math",
                     "demo-math-untrained"]
    # the over-scaled adapter is registered with its own targets: every module it adapts
    assert reg.get_adapter("demo-commonsense-x3").config_json["surgery"]["targets"]["target_modules"] == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert summary["failed"] == 0
    assert [r["adapter"] for r in summary["rows"]] == ["demo-math", "demo-commonsense", "demo-instruction",
                                                       "demo-commonsense-x3", "demo-math-untrained"]
    for row in summary["rows"]:
        assert row["decision"] and "vs baseline" in row["decision"], row
        assert row["best_policy"] in (*SurgeryConfig().policies, "global_scalar")
        assert row["verdict"] in ("promote", "hold", "reject")
    # progress was visible while it ran: the demo's steps and the flow's per-subject lines
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]"):
        assert step in stderr
    assert "calibration batch" in stderr and "baseline on ss_" in stderr


def test_demo_candidates_evaluations_and_decisions_are_in_the_registry(demo_run):
    _, _, _, reg = demo_run
    policies = set(SurgeryConfig().policies)
    for adapter in reg.list_adapters():
        (version,) = reg.list_versions(adapter.name)
        cands = reg.list_candidates(version.id)
        # the policies and the calibrated global scalar; the ladder's controls: three random seeds and two canaries
        assert {c.policy for c in cands if not c.is_control} == policies | {"global_scalar"}
        assert sorted(c.policy for c in cands if c.is_control) == ["bare_base", "random_index", "random_index",
                                                                    "random_index", "zero_rebuild"]
        for c in cands:  # every candidate is a real PEFT adapter on disk with its spectrum summary
            if c.policy == "bare_base":  # the base model with the adapter off: nothing written
                continue
            assert (Path(c.artifact_uri) / "adapter_model.safetensors").is_file()
            assert (Path(c.artifact_uri) / "edit_manifest.json").is_file() and c.spectrum_json
        evals = reg.list_evaluations(version.id)
        benchmarks = {e.benchmark for e in evals}
        runs = [r for r in reg.adapter_runs(1) if r.adapter_version_id == version.id]
        skipped = reg.decision_of_run(version.id, runs[0].config_hash).statistics_json.get("guard", {}).get("skipped",
                                                                                                            {})
        assert all(why.startswith("guard not evaluated: ") for why in skipped.values())
        # the task suite and the IFEval guard (unless every candidate is rejected on task evidence: then not even
        # the baseline's guard is scored); the instruction adapter's task suite *is* the guard, scored once
        expected = {TASK_SUITE[adapter.name]} | (set() if "baseline" in skipped else {"ss_ifeval"})
        assert benchmarks == expected, (adapter.name, benchmarks)
        # task suite: baseline + 3 policies + scalar + 3 random controls + 2 canaries; guard (guard_arms:
        # promotable): all but the canaries, less the arms the decision lists as skipped (random controls, candidates
        # rejected on task evidence, the baseline when nothing needs it)
        n_task = 1 + len(policies) + 1 + 3 + 2
        separate_guard = TASK_SUITE[adapter.name] != "ss_ifeval"
        assert len(evals) == (n_task + n_task - 2 - len(skipped) if separate_guard else n_task)
        for e in evals:  # the smallest budget: 4 documents, the multiple-choice suite its own 6
            n = 6 if e.benchmark == "ss_mc" else 4
            assert e.n == n and len(e.doc_outcomes_json) == n, (e.benchmark, e.n)
            assert all(0.0 <= float(v) <= 1.0 for _, v, *_ in e.doc_outcomes_json)
            assert Path(e.samples_uri).is_file()
        runs = [r for r in reg.adapter_runs(1) if r.adapter_version_id == version.id]
        assert runs and runs[0].status == "completed"
        decision = reg.decision_of_run(version.id, runs[0].config_hash)
        assert decision is not None and decision.sentence
        assert decision.statistics_json["verdicts"]
        # the canaries were checked on the real model: the zero rebuild scores as the baseline, and the baseline
        # differs from the bare base (a 4-document smoke run may not see a difference: then it is flagged)
        canaries = decision.statistics_json["canaries"]
        assert canaries["zero_rebuild"]["ok"], canaries
        assert set(canaries) == {"zero_rebuild", "bare_base"}
        if adapter.name == "demo-math-untrained":  # saved before training: it IS the base model, on every document
            assert not canaries["bare_base"]["ok"] and canaries["bare_base"]["n_differ"] == 0, canaries
            assert decision.statistics_json["verdict"] == "reject" and decision.promoted_candidate_id is None
            assert "canary" in decision.sentence


def test_demo_renders_the_dashboard(demo_run):
    data_dir, summary, _, _ = demo_run
    page = Path(summary["dashboard"])
    assert page == data_dir / "dashboard.html" and page.is_file()
    html = page.read_text(encoding="utf-8")
    for name in (*TASK_SUITE,):
        assert name in html
