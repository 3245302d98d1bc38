"""``spectral-surgery report --json`` is pinned byte for byte on a registry of timed and untimed decisions.

The fleet report's records moved from dicts to typed records (:mod:`tasks.decision.fleet_report`, issue 26); its JSON
must not change. ``PINNED`` is what the code printed before the move, for the registry :func:`_registry` builds: a
math adapter decided by a timed run (its edits' stages and evaluations timed), a math adapter decided by hand with
nothing timed (a row from before costs were recorded), and a code adapter whose HOLD was timed but whose candidates'
evaluations were not. Every time the report reads is fixed here (the adapter runs' start and end are set), so the
output is the same on every run.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import update

from spectral_surgery.registry.db import session_scope
from spectral_surgery.registry.models import AdapterRun
from spectral_surgery.registry.repository import Registry
from spectral_surgery.tasks.decision.gate import ArmOutcomes, GateConfig, decide
from tests.flows.cli_support import cli
from tests.records import stored
from tests.tasks.decision.test_gate_sentences import BASE, GUARD_FAILS, HELD, RANDOM, cand, task

# (length, sha256) of what `report` prints for _registry(), printed by the code before the typed records: its JSON
# (`--json`) and its table (250 columns)
PINNED_JSON = (3849, "5310090717a8d06f6aeb07184f5ffa7c8e7dbd3066791b3e3d2edd9952e655a2")
PINNED_TABLE = (1977, "55a428afd6300c59369696b98ac7c9ddc17e228df32bacf772ce7ea49cc7c0fb")


def _pin(text: str) -> tuple[int, str]:
    return len(text), hashlib.sha256(text.encode()).hexdigest()


def _decide(*arms: ArmOutcomes):
    return decide(BASE, list(arms), [RANDOM], GateConfig())


def _adapter(reg: Registry, name: str, family: str, decision, seconds: dict[str, dict[str, float] | None],
             evaluated: dict[str, float | None], run_id: int | None, run_seconds: float | None) -> None:
    """``name`` with one version, a candidate per arm of ``decision`` (its recorded ``seconds``), a task evaluation
    per candidate (its ``evaluated`` seconds), the decision, and the adapter run that made it (``run_seconds`` long)."""
    reg.register_adapter(name, f"hf://acme/{name}@main", "base", family)
    version, _ = reg.record_version(name, hashlib.sha256(name.encode()).hexdigest(), None, f"/cache/{name}")
    ids = {}
    for arm, spent in seconds.items():
        policy, seed = ("random_index", 0) if arm == "random_index-s0" else (arm, 0)
        c = reg.add_candidate(version.id, "k" * 64, policy, seed, is_control=policy == "random_index",
                              artifact_uri=f"/a/{name}/{arm}", artifact_sha256=hashlib.sha256(arm.encode()).hexdigest(),
                              seconds=spent)
        ids[arm] = c.id
        reg.add_evaluation(version.id, "gsm8k", "acc", 0.5, evaluator_key="e" * 64, higher_is_better=True,
                           candidate_id=c.id, n=200, seconds=evaluated.get(arm))
    promoted = ids.get(decision.promoted) if decision.promoted else None
    d = reg.record_decision(version.id, "h" * 64, run_id=run_id, promoted_candidate_id=promoted,
                            statistics=stored(decision), sentence=f"{name} decided", candidate_key="k" * 64,
                            candidate_ids=sorted(ids.values()))
    if run_id is None:
        return
    ar = reg.start_adapter_run(run_id, version.id)
    reg.finish_adapter_run(ar.id, "completed", decision_id=d.id)
    start = datetime(2026, 12, 1, 2, 0, 0, tzinfo=UTC)
    with session_scope(reg.engine) as s:
        s.execute(update(AdapterRun).where(AdapterRun.id == ar.id)
                  .values(started_at=start, ended_at=start + timedelta(seconds=run_seconds)))


def _registry(data) -> None:
    assert cli("init", "--data-dir", data).code == 0
    reg = Registry.open(None, data)
    run = reg.start_run("night-1", {}, "r" * 64)
    timed = _decide(cand("smooth_abs", gain=30), cand("hns", gain=2), cand("abs_select", **HELD))
    _adapter(reg, "ad-timed", "math", timed,
             {"smooth_abs": {"write": 1.25, "decompose": 2.0, "calibrate": 61.5},
              "hns": {"write": 0.5, "decompose": 2.0},
              "abs_select": {"write": 0.75, "decompose": 2.0, "calibrate": 61.5, "gamma": 4.25},
              "random_index-s0": {"write": 0.5, "decompose": 2.0}},
             {"smooth_abs": 30.5, "hns": 28.0, "abs_select": None, "random_index-s0": 29.0}, run.id, 412.5)
    untimed = _decide(cand("smooth_abs", gain=12), cand("hns", gain=0))
    _adapter(reg, "ad-untimed", "math", untimed,
             {"smooth_abs": None, "hns": None, "random_index-s0": None}, {}, None, None)
    held = _decide(cand("smooth_abs", **HELD), cand("hns", **GUARD_FAILS),
                   ArmOutcomes("abs_select", "abs_select", False, task(5)))
    _adapter(reg, "ad-code", "code", held,
             {"smooth_abs": {"write": 2.0, "decompose": 3.0, "calibrate": 40.0},
              "hns": {"write": 1.0, "decompose": 3.0}, "abs_select": None,
              "random_index-s0": {"write": 1.0, "decompose": 3.0}},
             {}, run.id, 100.0)
    reg.finish_run(run.id, "completed")
    reg.close()


def test_report_prints_what_it_printed_before_the_typed_records(tmp_path):
    data = tmp_path / "home"
    _registry(data)
    out = cli("report", "--json", "--data-dir", data)
    assert out.code == 0, out.err
    payload = json.loads(out.out)
    # the registry holds what the pin is about: timed and untimed rows, both kinds of edit, both families
    assert payload["adapters"] == 3 and {r["family"] for r in payload["rows"]} == {"math", "code"}
    assert {r["data"] for r in payload["rows"]} == {"calibration", "data-free", None}
    assert any(r["cost"] is None for r in payload["rows"]) and any(r["cost"] for r in payload["rows"])
    assert set(payload["cost_by_data"]) == {"calibration", "data-free"}
    assert _pin(out.out) == PINNED_JSON, out.out
    table = cli("report", "--data-dir", data)
    assert table.code == 0 and _pin(table.out) == PINNED_TABLE, table.out
