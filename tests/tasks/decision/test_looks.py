"""The sequential look loop (tasks.decision.sequential.run_looks) over a score callback, without a flow or a model.

Outcomes are 0/1 over a 240-document budget in 4 looks (60, 120, 180, 240): the baseline solves every other
document, a winner every document, a loser none; the callback hands out each look's slice and records what it was
asked to score. The flow's use (evaluating each look's documents) is covered in tests/flows/test_nightly.py.
"""

from __future__ import annotations

from spectral_surgery.tasks.decision.gate import GateConfig
from spectral_surgery.tasks.decision.sequential import SequentialConfig, design_for, run_looks

N = 240
BASE = [float(i % 2) for i in range(N)]
WIN, LOSE = [1.0] * N, [0.0] * N


def _score(outcomes: dict[str, list[float]], asked: list):
    def score(names: list[str], docs: tuple[int, int]):
        asked.append((sorted(names), docs))
        chunk = {n: outcomes[n][docs[0]:docs[1]] for n in ["baseline", *names]}
        return f"key{docs[0]}:{docs[1]}", chunk, {}
    return score


def _run(outcomes: dict[str, list[float]], roles: dict[str, str], gate: GateConfig = GateConfig()):
    n_cands = sum(r in ("policy", "scalar_control") for r in roles.values())
    design = design_for(SequentialConfig(enabled=True, looks=4), gate, N, n_cands)
    asked: list = []
    run = run_looks(design, roles, _score(outcomes, asked), canary_tolerance=gate.canary_tolerance)
    return run, asked


def test_a_clear_winner_stops_the_adapter_at_the_first_look_and_a_loser_for_futility():
    outcomes = {"baseline": BASE, "win": WIN, "lose": LOSE, "random_index-s1": BASE, "zero_rebuild": BASE}
    roles = {"win": "policy", "lose": "policy", "random_index-s1": "random_control", "zero_rebuild": "canary"}
    run, asked = _run(outcomes, roles)
    rec = run.record
    assert rec["stopped_at_look"] == 1 and rec["documents"] == 60 and rec["futile"] == {"lose": 1}
    assert rec["looks"] == [{"look": 1, "documents": 60, "results": {"win": "efficacy", "lose": "futility"}}]
    assert asked == [(["lose", "random_index-s1", "win", "zero_rebuild"], (0, 60))]
    assert run.outcomes["win"] == WIN[:60] and run.scores == {} and rec["canary_stop"] is None
    assert rec["subject_documents"] == 5 * 60 and rec["fixed_subject_documents"] == 5 * 240
    assert rec["evaluation_keys"] == ["key0:60"] and len(run.key) == 64


def test_a_failing_zero_rebuild_stops_the_adapter_at_the_first_look():
    broken = [1.0 - x for x in BASE]
    outcomes = {"baseline": BASE, "same": BASE, "random_index-s1": BASE, "zero_rebuild": broken}
    run, asked = _run(outcomes, {"same": "policy", "random_index-s1": "random_control", "zero_rebuild": "canary"})
    assert run.record["stopped_at_look"] == 1
    assert run.record["canary_stop"] == "the zero-rebuild canary zero_rebuild failed at look 1"


def test_the_bare_base_is_scored_until_the_baseline_differs_and_efficacy_waits_for_it():
    bare = BASE[:60] + [1.0 - x for x in BASE[60:]]  # the adapter changes nothing on the first look's documents
    outcomes = {"baseline": BASE, "win": WIN, "random_index-s1": BASE, "bare_base": bare}
    run, asked = _run(outcomes, {"win": "policy", "random_index-s1": "random_control", "bare_base": "bare_base"})
    rec = run.record
    assert rec["efficacy_deferred_at"] == [1] and rec["stopped_at_look"] == 2
    assert asked == [(["bare_base", "random_index-s1", "win"], (0, 60)),
                     (["bare_base", "random_index-s1", "win"], (60, 120))]
    assert rec["canary_documents"] == {"bare_base": 120}


def test_no_early_stop_without_evidence_runs_the_whole_budget():
    outcomes = {"baseline": BASE, "same": BASE, "random_index-s1": BASE}
    run, asked = _run(outcomes, {"same": "policy", "random_index-s1": "random_control"},
                      GateConfig(min_effect=0.01))  # a 1-point effect stays inside the interval at every look
    assert [docs for _, docs in asked] == [(0, 60), (60, 120), (120, 180), (180, 240)]
    assert run.record["stopped_at_look"] == 4 and run.outcomes["same"] == BASE
    assert run.record["looks"][-1]["results"] == {"same": "not significant"} and run.record["futile"] == {}
