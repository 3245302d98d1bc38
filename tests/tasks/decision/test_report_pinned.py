"""What the decision report renders is pinned byte for byte on real gate decisions (tasks/decision/report.py, and
what wins across them: tasks/decision/fleet_report.py).

Every surface that renders a recorded decision through :mod:`tasks.decision.report` is rendered here from real gate
decisions recorded as the flow records them (:mod:`tests.records`) and from the older row shapes the registry holds
(:mod:`tests.registry.test_record_readers`): the Markdown (the flow's artifact and the MLflow mirror's
``decision/decision.md``), the table artifact's rows, the dashboard's pairing words and what-wins table, the CLI's
``report`` rows and the MLflow metrics and tags. ``report_pinned.json`` beside this file holds what the code rendered
before the report moved from raw dicts to the typed record (:class:`tasks.decision.record.DecisionRecord`), and
before what wins moved from dicts to typed rows (:mod:`tasks.decision.fleet_report`); the output must not change by
a byte. A change of the report that is meant regenerates it with
``python -m tests.tasks.decision.test_report_pinned --write`` and says so in the commit.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from spectral_surgery.tasks.decision.fleet_report import (
    ArmSeconds,
    LatestDecision,
    cost_by_data,
    cost_text,
    what_wins,
    what_wins_markdown,
)
from spectral_surgery.tasks.decision.gate import ArmOutcomes, DecisionConfig, GateConfig, decide
from spectral_surgery.tasks.decision.record import DecisionRecord, MetricFallback
from spectral_surgery.tasks.decision.report import candidate_rows, decision_markdown
from spectral_surgery.tasks.delivery.mlflow_run import run_metrics, run_tags
from tests.records import ladder_promotion, recorded, statistics
from tests.registry.test_record_readers import _shapes
from tests.tasks.decision.test_gate_sentences import BASE, GUARD_FAILS, HELD, RANDOM, cand, task

PINNED = Path(__file__).with_name("report_pinned.json")


def _full() -> DecisionRecord:
    """A promotion weighed against the whole ladder (random control, global scalar, both canaries)."""
    return ladder_promotion()


def _continuous() -> DecisionRecord:
    def scored(a: ArmOutcomes, shift: float) -> ArmOutcomes:
        return dataclasses.replace(a, scores=[(1.0 if o else -1.0) + shift + 0.01 * (i % 7)
                                              for i, o in enumerate(a.task)])

    base = scored(BASE, 0.0)
    d = decide(base, [scored(cand("smooth_abs", gain=10), 0.3), scored(cand("hns", gain=0), 0.01)],
               [scored(RANDOM, 0.0)], GateConfig(), decision=DecisionConfig(metric="continuous"))
    return recorded(d)


def decisions() -> dict[str, DecisionRecord]:
    """Real gate decisions of every verdict and section the report renders, recorded and read back."""
    cfg = GateConfig()
    return {
        "full": _full(),
        "held": recorded(decide(BASE, [cand("abs_select", **HELD)], [RANDOM], cfg)),
        "guard_fails": recorded(decide(BASE, [cand("smooth_abs", **GUARD_FAILS), cand("hns", gain=2, loss=10)],
                                       [RANDOM], cfg)),
        "canary_failed": recorded(decide(BASE, [cand("smooth_abs")], [RANDOM], cfg, zero_rebuild=ArmOutcomes(
            "zero_rebuild", "zero_rebuild", True, task(3)))),
        "holm": recorded(decide(BASE, [cand("smooth_abs", gain=30), cand("hns", gain=8)],
                                [RANDOM, ArmOutcomes("random_s1", "random_index", True, task(4))],
                                GateConfig(correction="holm"))),
        "continuous": _continuous(),
        "fallback": recorded(decide(BASE, [cand("smooth_abs", gain=12, drop=1)], [RANDOM], cfg),
                             decision_metric=MetricFallback(requested="continuous", used="task",
                                                            why="the benchmark has no per-document scores")),
    }


def older_rows() -> dict[str, dict[str, Any]]:
    """The older row shapes the report rendered before it read the record (it raised on the others: a candidate
    recorded before verdicts, without its interval; nulls where a value has a default)."""
    return {name: stats for name, (stats, _, _) in _shapes().items() if name not in ("before_verdicts", "nulls")}


def _costs(i: int) -> dict[str, dict[str, float]]:
    return {"smooth_abs": {"write": 1.0 + i, "decompose": 2.0, "calibrate": 60.0 + 7 * i, "evaluate": 30.0},
            "hns": {"write": 0.5, "decompose": 2.0, "evaluate": 20.0 + 3 * i},
            "abs_select": {"write": 0.25 * i, "decompose": 2.0, "calibrate": 10.0, "gamma": 4.5, "evaluate": None}}


def rendered() -> dict[str, Any]:
    """Every surface of the report, rendered from :func:`decisions` and :func:`older_rows` by today's code."""
    from spectral_surgery.flows.dashboard.data import _pairing
    from spectral_surgery.flows.dashboard.html import _what_wins

    out: dict[str, Any] = {}
    recs = decisions()
    for name, rec in recs.items():
        out[f"{name}/markdown"] = decision_markdown(f"ad-{name}", rec, rec.sentence or "")
        out[f"{name}/markdown_promoted"] = decision_markdown(f"ad-{name}", rec, "moved", promoted=rec.promoted)
        out[f"{name}/rows"] = json.dumps(candidate_rows(rec))
        out[f"{name}/pairing"] = [_pairing(v) for v in rec.verdicts] + [_pairing(None)]
        out[f"{name}/mlflow_metrics"] = json.dumps(run_metrics(rec))
        out[f"{name}/mlflow_tags"] = json.dumps(run_tags(rec, rec.sentence or "", decision_id=7, registry_run_id=3,
                                                         promoted=rec.promoted is not None))
    for name, stats in older_rows().items():
        rec = DecisionRecord.from_json(stats)
        out[f"old:{name}/markdown"] = decision_markdown(f"old-{name}", rec, "s")
        out[f"old:{name}/rows"] = json.dumps(candidate_rows(rec))
        out[f"old:{name}/pairing"] = [_pairing(v) for v in rec.verdicts]
    history = [LatestDecision(adapter=f"ad-{name}", family="math" if i % 2 else "code", decision_id=i,
                              at=datetime(2026, 12, 1, tzinfo=UTC), record=rec,
                              seconds=None if i == 3 else 100.0 + 10 * i,
                              costs={arm: ArmSeconds(**spent) for arm, spent in _costs(i).items()} if i != 4 else {})
               for i, (name, rec) in enumerate(recs.items())]
    rows = what_wins(history)  # the typed rows, dumped as `report --json` dumps them
    out["what_wins/rows"] = json.dumps([r.model_dump(mode="json") for r in rows])
    out["what_wins/markdown"] = what_wins_markdown(rows)
    out["what_wins/cost_by_data"] = json.dumps({k: c.model_dump(mode="json") for k, c in cost_by_data(rows).items()})
    out["what_wins/cost_text"] = [cost_text(r.cost) for r in rows]
    out["what_wins/dashboard_html"] = _what_wins({"what_wins": rows})
    return out


def artifacts(monkeypatch) -> dict[str, Any]:
    """The Prefect artifacts the nightly flow publishes for each decision (the real builder; what it hands to
    :func:`flows.refine.artifacts.publish` is recorded instead of posted to a server)."""
    from prefect.artifacts import TableArtifact

    from spectral_surgery.flows.refine import artifacts as art

    posted: dict[str, Any] = {}

    def record(*built) -> None:
        for a in built:
            body = json.dumps(a.table) if isinstance(a, TableArtifact) else a.markdown
            posted.setdefault(a.key, [body, a.description])

    monkeypatch.setattr(art, "publish", record)
    for name, rec in decisions().items():
        stats = json.loads(json.dumps(rec.to_json()))
        art.decision_artifacts(f"ad-{name}", {"statistics": stats, "sentence": rec.sentence,
                                              "promoted": rec.promoted})
    return posted


def test_the_report_renders_every_decision_byte_for_byte_as_pinned(monkeypatch):
    pinned = json.loads(PINNED.read_text(encoding="utf-8"))
    now = {**rendered(), "artifacts": artifacts(monkeypatch)}
    assert sorted(now) == sorted(pinned)
    for key in pinned:
        assert now[key] == pinned[key], key


def test_the_pinned_decisions_cover_every_verdict_and_section():
    """The pins are worth something only if the decisions reach every branch of the report."""
    recs = decisions()
    assert {r.verdict for r in recs.values()} == {"promote", "hold", "reject"}
    verdicts = [v for r in recs.values() for v in r.verdicts]
    assert {v.verdict for v in verdicts} == {"promote", "hold", "reject"}
    assert any(v.vs_scalar for v in verdicts) and any(v.vs_control for v in verdicts)
    assert any(p.scores for v in verdicts for p in v.pairing)  # the continuous decision's score pairing
    assert any(not c.ok for r in recs.values() for c in r.canaries.values())
    assert recs["continuous"].metric == "continuous" and recs["fallback"].decision_metric is not None
    assert recs["holm"].correction and any(r.flags for r in recs.values())
    assert any(v.mde is not None for v in verdicts) and any(v.guard_delta for v in verdicts)


@pytest.mark.parametrize("name", list(_shapes()))
def test_every_recorded_shape_renders_through_the_record(name):
    """Rows of every shape the registry holds render (the report raised on a candidate recorded before verdicts and
    on nulls where a value has a default); what a row did not record shows as ``–`` / None, never as a number."""
    stats, promoted, _ = _shapes()[name]
    rec = DecisionRecord.from_json(json.loads(json.dumps(stats)), promoted)
    md = decision_markdown(name, rec, "s")
    rows = candidate_rows(rec)
    assert md.startswith(f"### {name}: ") and [r["candidate"] for r in rows] == [v.name for v in rec.verdicts]
    if name == "before_verdicts":  # verdicts upgraded from `passed`; the interval it never recorded: `–`
        assert [r["verdict"] for r in rows] == ["promote", "rejected"] and rows[0]["vs baseline (pts)"] == 10.0
        assert "| smooth_abs | 60.0 | +10.0 [–, –] p=0.001 | – | – | – | – | – | – | – | **promote** |" \
            in md
        assert rows[0]["guard delta (pts)"] is None and rows[0]["phi vs baseline"] is None
    if name == "nulls":
        assert rows == [] and md == "### nulls: REJECTED\n\ns\n\n"


def test_an_empty_recorded_part_reads_as_not_recorded_and_a_canary_without_ok_as_held():
    """``{}`` where a paired test or a pairing belongs shows as ``–``, like an absent or null one; a canary that
    recorded no ``ok`` held, one that recorded a null failed (the gate records a bool)."""
    v = {"name": "a", "passed": False, "task_mean": 0.5, "vs_baseline": {"delta": 0.01, "ci_low": -0.01,
         "ci_high": 0.03, "p_value": 0.2}, "vs_control": {}, "vs_scalar": None, "n": None,
         "pairing": [{"reference": "baseline", "outcomes": {"correlation": 0.5, "n_eff": 1234.0}, "scores": {}}]}
    rec = DecisionRecord.from_json(statistics(verdicts=[v], canaries={"zero_rebuild": {"arm": "z", "n_differ": 0},
                                                                      "bare_base": {"arm": "b", "ok": None}}))
    md = decision_markdown("x", rec, "s")
    assert "| a | 50.0 | +1.0 [−1.0, +3.0] p=0.2 | – | – | – | – | – | – | φ 0.50, n_eff 1,234 | rejected |" \
        in md
    assert "- **Canary zero_rebuild** (`z`): ok," in md and "- **Canary bare_base** (`b`): FAILED," in md
    assert rec.verdicts[0].vs_control is not None and rec.verdicts[0].vs_control.empty
    assert not rec.verdicts[0].vs_baseline.empty
    assert candidate_rows(rec)[0]["score r vs baseline"] is None


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    mp = pytest.MonkeyPatch()
    try:
        PINNED.write_text(json.dumps({**rendered(), "artifacts": artifacts(mp)}, ensure_ascii=False, indent=1)
                          + "\n", encoding="utf-8")
    finally:
        mp.undo()
