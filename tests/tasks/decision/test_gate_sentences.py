"""Every verdict's sentence (tasks/decision/gate.py): a candidate's reason per verdict and the decision's sentence per
verdict.

Only a HOLD ends with the adapter's "held for evidence" tail; a REJECT's sentence never carries it, whatever the
order of the candidates (issue 9: a guard-rejected candidate's sentence ended "reject: the IFEval guard fails — held
for evidence: needs ~N documents" on the sequential path, which composed its own sentence). Outcomes are 0/1 on 400
documents and 100 prompts, built as in tests/tasks/decision/test_gate.py.
"""

from __future__ import annotations

from spectral_surgery.tasks.config import CalibConfig, SurgeryConfig
from spectral_surgery.tasks.decision.gate import ArmOutcomes, GateConfig, decide, summarize
from spectral_surgery.tasks.run_config import RunConfig
from spectral_surgery.tasks.decision.sequential import SequentialConfig, design_for

CFG = GateConfig()


def task(gain: int = 0, loss: int = 0) -> list[float]:
    """The baseline solves documents 0..199 of 400; ``gain`` more from 200 on, ``loss`` fewer from 0 on."""
    x = [1.0] * 200 + [0.0] * 200
    x[200 : 200 + gain] = [1.0] * gain
    x[:loss] = [0.0] * loss
    return x


def guard(drop: int = 0) -> list[float]:
    x = [1.0] * 80 + [0.0] * 20
    x[:drop] = [0.0] * drop
    return x


BASE = ArmOutcomes("baseline", "identity", False, task(), guard())
RANDOM = ArmOutcomes("random_s0", "random_index", True, task())


def cand(name: str, gain: int = 40, loss: int = 0, drop: int = 0, **kw) -> ArmOutcomes:
    return ArmOutcomes(name, name, False, task(gain, loss), guard(drop), **kw)


HELD = {"gain": 20, "loss": 14}  # +1.5 pts, p≈0.196: the interval holds 0 and +2 pts
GUARD_FAILS = {"gain": 60, "drop": 30}  # a clear task gain, an IFEval drop of 30 pts


def reason(*arms: ArmOutcomes, controls=(RANDOM,), cfg: GateConfig = CFG, **extras) -> str:
    return decide(BASE, list(arms), list(controls), cfg, **extras).verdicts[0].reason


# ------------------------------------------------------------------------------------- candidate reasons
def test_promoted_candidates_reason_has_no_verdict_tail():
    r = reason(cand("smooth_abs"))
    assert r == "smooth_abs +10.0 pts vs baseline (p<0.001) and +10.0 vs random_s0 (p<0.001); IFEval +0.0 within 2.0"


def test_held_candidates_reason_ends_with_the_documents_it_needs():
    d = decide(BASE, [cand("abs_select", **HELD)], [RANDOM], CFG)
    v = d.verdicts[0]
    assert v.verdict == "hold"
    assert v.reason.endswith(f"; hold: held for evidence: needs ~{v.n_needed} documents (MDE at 400: "
                             f"+{v.mde * 100:.1f} pts)")


def test_reject_reasons_say_why_and_never_held_for_evidence():
    scalar = ArmOutcomes("global_scalar", "global_scalar", False, task(40), guard())
    cases = {
        "the IFEval guard fails": reason(cand("a", **GUARD_FAILS)),
        "the gain's upper bound −0.2 pts is below min_effect 2.0": reason(cand("a", gain=2, loss=10)),
        "the random control random_s0 explains this gain": reason(
            cand("a"), controls=[ArmOutcomes("random_s0", "random_index", True, task(40))]),
        "a global rescale explains this gain": reason(cand("a", gain=41), scalar_control=scalar),
        "a random control is required": reason(cand("a"), controls=()),
        "canary failed: zero-rebuild canary": reason(
            cand("a"), zero_rebuild=ArmOutcomes("zero_rebuild", "zero_rebuild", True, task(3))),
    }
    for why, r in cases.items():
        assert f"; reject: {why}" in r, (why, r)
        assert "held for evidence" not in r and "hold:" not in r


def test_a_skipped_guard_says_so_and_the_task_evidence_rejects():
    r = reason(ArmOutcomes("a", "a", False, task(2, 10), None, guard_skipped="rejected on task evidence"))
    assert "IFEval guard not evaluated: rejected on task evidence; reject: the gain's upper bound" in r


def test_a_control_listed_as_candidate_is_never_promoted():
    r = reason(ArmOutcomes("random_s1", "random_index", True, task(40), guard()))
    assert r.startswith("random_s1 is a random control, never promoted (")


# ------------------------------------------------------------------------------------- decision sentences
def test_promote_sentence():
    d = decide(BASE, [cand("smooth_abs"), cand("abs_select", gain=30)], [RANDOM], CFG)
    assert d.verdict == "promote"
    assert d.sentence == d.verdicts[0].reason + " → promoted (also passed: abs_select)"
    assert "held for evidence" not in d.sentence


def test_hold_sentence_ends_with_the_adapters_tail_naming_the_held():
    # the guard-rejected candidate is listed last: the tail must not read as its verdict
    d = decide(BASE, [cand("abs_select", **HELD), cand("smooth_abs", **GUARD_FAILS)], [RANDOM], CFG)
    assert d.verdict == "hold"
    head, tail = d.sentence.rsplit(" — ", 1)
    assert head.endswith("reject: the IFEval guard fails")
    assert tail == f"adapter held for evidence (abs_select): needs ~{d.n_needed} documents"


def test_reject_sentence_has_no_held_tail():
    d = decide(BASE, [cand("abs_select", gain=2, loss=10), cand("smooth_abs", **GUARD_FAILS)], [RANDOM], CFG)
    assert d.verdict == "reject" and d.n_needed is None
    assert d.sentence.startswith("no candidate promoted: abs_select ")
    assert d.sentence.endswith("; reject: the IFEval guard fails") and "held for evidence" not in d.sentence


def test_a_canary_turns_a_hold_into_a_reject_without_the_tail():
    zr = ArmOutcomes("zero_rebuild", "zero_rebuild", True, task(3))
    d = decide(BASE, [cand("abs_select", **HELD)], [RANDOM], CFG, zero_rebuild=zr)
    assert d.verdict == "reject" and "held for evidence" not in d.sentence and "canary failed" in d.sentence


def test_no_candidates_and_lower_is_better_sentences():
    assert decide(BASE, [], [RANDOM], CFG).sentence == "no candidate promoted: no candidates evaluated"
    assert summarize([], ("zero-rebuild canary differs",)) == (
        None, "reject", "no candidate promoted: zero-rebuild canary differs", None)
    low = [ArmOutcomes(a.name, a.policy, a.is_control, [1 - x for x in a.task], a.guard, higher_is_better=False)
           for a in (BASE, cand("smooth_abs", **GUARD_FAILS), RANDOM)]
    d = decide(low[0], [low[1]], [low[2]], CFG)
    assert d.verdict == "reject" and d.sentence.endswith(
        "reject: the IFEval guard fails (task metric: lower is better)"
    )


def test_sequential_decision_sentence_uses_the_gates_tail(tmp_path):
    """A sequential run adds the candidates stopped for futility to the gate's verdicts: its sentence comes from the
    same composer, so a REJECT has no tail and a HOLD's names the held candidate (not "held for evidence" after a
    guard-rejected candidate's reason)."""
    from spectral_surgery.tasks.decision.sequential import sequential_decision

    cfg = RunConfig(data_dir=tmp_path, sequential=SequentialConfig(enabled=True, looks=4), task_limit=400,
                    surgery=SurgeryConfig(calib=CalibConfig(n_samples=4)))
    extras = {"scalar_control": None, "zero_rebuild": None, "bare_base": None}
    stopped = cand("grad_direction", gain=0, loss=40)  # stopped for futility at the first look
    for first, expect in ((cand("abs_select", gain=2, loss=10), "reject"), (cand("abs_select", **HELD), "hold")):
        arms = [first, cand("smooth_abs", **GUARD_FAILS), stopped]
        design = design_for(cfg.sequential, cfg.gate, 400, len(arms))
        record = {"design": design.model_dump(mode="json"), "futile": {"grad_direction": 1}, "stopped_at_look": 4}
        d = sequential_decision(cfg.gate, record, BASE, arms, [RANDOM], extras)
        assert d.verdict == expect and [v.name for v in d.verdicts] == ["abs_select", "smooth_abs", "grad_direction"]
        assert "reject: the IFEval guard fails | grad_direction: stopped for futility at look 1 of 4" in d.sentence
        if expect == "reject":
            assert "held for evidence" not in d.sentence and d.n_needed is None
        else:
            assert d.sentence.endswith(f" — adapter held for evidence (abs_select): needs ~{d.n_needed} documents")
