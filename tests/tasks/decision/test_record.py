"""The decision record (tasks/decision/record.py): today's keys written exactly, older shapes upgraded on reading.

Decisions come from the real gate on 0/1 outcomes built as in tests/tasks/decision/test_gate_sentences.py; the
older shapes are those the registry holds (tests/registry/test_repository.py, tests/flows/test_cli_reviews.py: rows
recorded before verdicts existed, with partial statistics or none). The record of a real fake-evaluator refine is
round-tripped in tests/flows/test_nightly.py (the control ladder and the sequential looks).
"""

from __future__ import annotations

import json
import math

import pytest

from spectral_surgery.tasks.decision.gate import ArmOutcomes, GateConfig, decide, verdict_of
from spectral_surgery.tasks.decision.record import (
    SCHEMA_VERSION,
    DecisionRecord,
    EvidenceKeys,
    GuardRecord,
    LadderRecord,
    MetricFallback,
)
from tests.tasks.decision.test_gate_sentences import BASE, HELD, RANDOM, cand, task

SECTIONS = {"means", "guard_means", "keys", "ladder", "guard", "sequential", "edit_budget", "decision_metric"}


def _record(decision, **kw) -> DecisionRecord:
    means = {"baseline": 0.5, **{v.name: v.task_mean for v in decision.verdicts}}
    return DecisionRecord.of(decision, means=means, guard_means={"baseline": 0.8}, keys=EvidenceKeys(
        candidates="c" * 64, task_evaluation="t" * 64, guard_evaluation=None), ladder=LadderRecord(
        roles={"smooth_abs": "policy", "random_s0": "random_control"}, skipped={}), **kw)


def test_a_gate_decision_is_written_with_todays_keys_plus_the_version():
    zero = ArmOutcomes("zero_rebuild", "zero_rebuild", True, task())
    d = decide(BASE, [cand("smooth_abs"), cand("abs_select", **HELD)], [RANDOM], GateConfig(), zero_rebuild=zero)
    rec = _record(d, guard=GuardRecord(arms="promotable", skipped={}), edit_budget={"family": "math", "kept": []},
                  sequential={"stopped_at_look": 2, "futile": {"abs_select": 1}}, decision_metric=MetricFallback(
                      requested="continuous", used="task", why="no scores"))
    stored = rec.to_json()
    assert set(stored) == set(d.to_dict()) | SECTIONS | {"schema_version"}
    assert stored["schema_version"] == SCHEMA_VERSION == 1
    # the gate's keys hold exactly what Decision.to_dict() gives (JSON-safe), the verdicts field for field
    assert {k: stored[k] for k in d.to_dict()} == json.loads(json.dumps(d.to_dict()))
    assert json.loads(json.dumps(stored)) == stored  # plain JSON
    again = DecisionRecord.from_json(json.loads(json.dumps(stored)), promoted=True)
    assert again == rec and again.to_json() == stored
    assert rec.verdict == "promote" and rec.promoted == "smooth_abs" == rec.promoted_verdict.name
    assert rec.promoted_verdict.vs_baseline.p_value == d.verdicts[0].vs_baseline.p_value
    assert rec.verdict_of("abs_select").verdict == "hold" and rec.canaries["zero_rebuild"].ok
    assert rec.sequential.futile == {"abs_select": 1} and rec.decision_metric.why == "no scores"
    assert rec.metric == "task" and rec.alpha == 0.05 and rec.keys.guard_evaluation is None


def test_absent_sections_stay_absent():
    d = decide(BASE, [cand("abs_select", **HELD)], [RANDOM], GateConfig())
    stored = DecisionRecord.of(d, means={"baseline": 0.5}, keys=EvidenceKeys(candidates="c", task_evaluation="t",
                               guard_evaluation=None), ladder=LadderRecord(roles={}, skipped={})).to_json()
    assert set(stored) == set(d.to_dict()) | {"means", "keys", "ladder", "schema_version"}
    assert stored["verdict"] == "hold" and stored["n_needed"] == d.n_needed


def test_non_finite_floats_are_recorded_as_none():
    d = decide(BASE, [cand("smooth_abs")], [RANDOM], GateConfig())
    stored = _record(d).to_json()
    bad = DecisionRecord.of(d, means={"baseline": float("nan"), "smooth_abs": math.inf},
                            keys=EvidenceKeys(), ladder=LadderRecord()).to_json()
    assert bad["means"] == {"baseline": None, "smooth_abs": None} and stored["means"]["baseline"] == 0.5


@pytest.mark.parametrize(("old", "promoted", "verdict"), [
    ({}, False, "reject"),
    (None, False, "reject"),
    ({"promoted": "smooth_abs"}, True, "promote"),
    ({"delta": 0.05, "p_value": 0.01}, True, "promote"),  # the first registry rows: a bare test
    ({"why": "no gain"}, False, "reject"),
    ({"verdict": "hold", "n_needed": 400}, False, "hold"),
    ({"verdict": "promote"}, True, "promote"),
])
def test_older_rows_upgrade_as_every_reader_read_them(old, promoted, verdict):
    rec = DecisionRecord.from_json(old, promoted)
    assert rec.verdict == verdict == verdict_of(old, promoted)
    stored = rec.to_json()
    # every key read is written back unchanged, with the verdict and the version added
    assert stored == {**(old or {}), "verdict": verdict, "schema_version": SCHEMA_VERSION}
    assert DecisionRecord.from_json(stored, promoted) == rec


def test_a_row_recorded_before_verdicts_existed_gets_each_candidates_verdict():
    old = {"promoted": "smooth_abs", "sentence": "smooth_abs wins", "baseline_task_mean": 0.5,
           "verdicts": [{"name": "smooth_abs", "passed": True, "task_mean": 0.6, "reason": "r",
                         "vs_baseline": {"delta": 0.1, "p_value": 0.001, "n": 60}},
                        {"name": "random_s0", "passed": False, "task_mean": 0.5},
                        {"name": "abs_select", "passed": True, "task_mean": 0.55}],  # also passed
           "means": {"baseline": 0.5, "smooth_abs": 0.6}}
    rec = DecisionRecord.from_json(old, promoted=True)
    assert [v.verdict for v in rec.verdicts] == ["promote", "reject", "promote"] and rec.verdict == "promote"
    assert rec.promoted_verdict.vs_baseline.delta == 0.1 and rec.verdicts[1].pairing == []
    stored = rec.to_json()
    assert stored["verdicts"][0] == {**old["verdicts"][0], "verdict": "promote"}
    assert "pairing" not in stored["verdicts"][1] and "guard" not in stored  # absent then, absent now
    # the decision's verdict follows the row's promoted flag, a candidate's whether it passed
    assert DecisionRecord.from_json(old, promoted=False).verdict == "reject"


def test_a_value_of_the_wrong_type_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="verdicts"):
        DecisionRecord.from_json({"verdicts": "smooth_abs"})
    with pytest.raises(ValueError, match="JSON object"):
        DecisionRecord.from_json(["promote"])  # type: ignore[arg-type]
