"""What a decision is keyed by and records besides the verdicts (tasks/decision/decision_evidence.py).

Decisions come from the real gate as in tests/tasks/decision/test_record.py; the flow's use (a threshold change
re-decides, an unchanged one finds its decision) is covered in tests/flows/test_nightly.py and
tests/flows/test_guard_arms.py.
"""

from __future__ import annotations

from spectral_surgery.tasks.decision.arms import Arm
from spectral_surgery.tasks.decision.decision_evidence import decision_evidence, decision_record
from spectral_surgery.tasks.decision.gate import GateConfig, decide
from spectral_surgery.tasks.decision.record import DecisionRecord
from spectral_surgery.tasks.keys import decision_key
from tests.tasks.decision.test_gate_sentences import BASE, RANDOM, cand

IDS = {"smooth_abs": 7, "random_s0": 3}
ARMS = [Arm("smooth_abs", 42, "policy"), Arm("random_index", 0, "random_control"),
        Arm("global_scalar", 42, "scalar_control")]  # the scalar was not written: not in IDS


def test_the_evidence_holds_the_evaluations_weighed_and_only_the_sections_that_apply():
    assert decision_evidence("gsm8k", "t" * 4, None, None, IDS) == {
        "task": ["gsm8k", "tttt"], "guard": [None, None], "subjects": [("random_s0", 3), ("smooth_abs", 7)]}
    full = decision_evidence("gsm8k", "t", "ifeval", "g", IDS, {"design": {"looks": [20, 40]}, "futile": {}},
                             {"smooth_abs": "rejected on task evidence"})
    assert full["sequential"] == {"looks": [20, 40]} and full["guard_skipped"] == ["smooth_abs"]
    # an empty skip map is absent: the keys of decisions made before guard arms existed stay the same
    assert decision_evidence("gsm8k", "t", "ifeval", "g", IDS, None, {}) == decision_evidence(
        "gsm8k", "t", "ifeval", "g", IDS)


def test_the_decision_key_changes_with_what_was_weighed_and_nothing_else():
    def key(**kw):
        return decision_key(GateConfig(), "c" * 64, decision_evidence(**{
            "task_name": "gsm8k", "task_key": "t", "guard_name": "ifeval", "guard_key": "g",
            "candidate_ids": IDS, **kw}))
    assert key() == key(candidate_ids=dict(reversed(list(IDS.items()))))  # the order of the arms is not keyed
    assert len({key(), key(task_key="t2"), key(guard_key=None), key(candidate_ids={"smooth_abs": 7}),
                key(guard_skipped={"random_s0": "x"})}) == 5


def _record(**kw) -> DecisionRecord:
    d = decide(BASE, [cand("smooth_abs")], [RANDOM], GateConfig())
    args = dict(candidate_ids=IDS, candidates_key="c", candidate_keys={"smooth_abs": "k1", "random_s0": "k0"},
                ladder_skipped={"global_scalar": "no held-out rows"}, task_key="t",
                task_out={"baseline": [0.0, 1.0], "smooth_abs": [1.0, 1.0]}, guard_key=None, guard_out=None,
                guard_name=None, guard_arms="promotable", guard_skipped=None, sequential=None, edit_budget=None,
                requested_metric="task", metric_fallback=None)
    return decision_record(d, ARMS, **{**args, **kw})


def test_the_record_carries_means_keys_and_the_ladder_of_the_written_arms():
    rec = _record()
    stored = rec.to_json()
    assert stored["means"] == {"baseline": 0.5, "smooth_abs": 1.0} and "guard_means" not in stored
    assert stored["keys"] == {"candidates": "c", "task_evaluation": "t", "guard_evaluation": None,
                              "candidate_arms": {"random_s0": "k0", "smooth_abs": "k1"}}
    # roles only of the arms written (the scalar control's absence is in skipped, with why)
    assert stored["ladder"] == {"roles": {"smooth_abs": "policy"}, "skipped": {"global_scalar": "no held-out rows"}}
    assert {"guard", "sequential", "edit_budget", "decision_metric"}.isdisjoint(stored)


def test_the_guard_plan_and_a_metric_fallback_are_recorded_where_they_apply():
    stored = _record(guard_name="ifeval", guard_key="g", guard_out={"baseline": [1.0, 0.0, 1.0, 1.0]},
                     guard_skipped={"random_s0": "rejected on task evidence"},
                     requested_metric="continuous", metric_fallback="no scores").to_json()
    assert stored["guard_means"] == {"baseline": 0.75}
    assert stored["guard"] == {"arms": "promotable", "skipped": {"random_s0": "guard not evaluated: rejected on "
                                                                             "task evidence"}}
    assert stored["decision_metric"] == {"requested": "continuous", "used": "task", "why": "no scores"}
