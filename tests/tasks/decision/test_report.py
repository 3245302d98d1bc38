"""tasks/decision/report.py: the flow's decision report, built from a real gate decision (no registry, no dashboard)."""

from __future__ import annotations

import pytest

from spectral_surgery.tasks.decision.gate import ArmOutcomes, GateConfig, decide
from spectral_surgery.tasks.decision.record import DecisionRecord
from spectral_surgery.tasks.decision.report import candidate_rows, decision_markdown
from tests.records import stored

N = 400


def _arm(name: str, policy: str, solved: int, *, control: bool = False, guard: int = 90) -> ArmOutcomes:
    """The first ``solved`` of N documents right (arms nest, so every gain is a set of discordant documents)."""
    return ArmOutcomes(name, policy, control, [1.0] * solved + [0.0] * (N - solved),
                       guard=[1.0] * guard + [0.0] * (100 - guard))


def _decision(base: int, cand: int, ctrl: int):
    baseline = _arm("baseline", "baseline", base)
    d = decide(baseline, [_arm("smooth_abs", "smooth_abs", cand)], [_arm("random_s1", "random_index", ctrl,
               control=True)], GateConfig())
    return stored(d)  # what the registry stores and the flow reads back


def test_promoted_decision_reports_every_number_behind_it():
    stats = _decision(base=200, cand=260, ctrl=200)
    assert stats["verdict"] == "promote" and stats["promoted"] == "smooth_abs"
    md = decision_markdown("ad-1", DecisionRecord.from_json(stats), "the sentence", promoted="smooth_abs")
    assert md.startswith("### ad-1: PROMOTE SMOOTH_ABS\n") and "the sentence" in md
    assert "- **Unedited adapter:** task 50.0%" in md
    row = next(line for line in md.splitlines() if line.startswith("| smooth_abs |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # 65.0% task; +15.0 pts over the unedited adapter; n = 400; 60 documents only the candidate solves, 0 only
    # the baseline; the IFEval guard unchanged.
    assert cells[1] == "65.0" and cells[2].startswith("+15.0 [") and cells[6] == "400" and cells[7] == "60/0"
    assert cells[5] == "+0.0" and cells[-1] == "**promote**"
    assert "**Why**" in md and "- `smooth_abs`:" in md


def test_hold_is_not_a_reject_and_says_how_many_documents():
    stats = _decision(base=200, cand=204, ctrl=200)  # +1 pt at 400 docs: the interval holds 0 and +2 pts
    assert stats["verdict"] == "hold" and stats["n_needed"] > 0
    md = decision_markdown("ad-2", DecisionRecord.from_json(stats), "s")
    assert md.startswith(f"### ad-2: HELD FOR EVIDENCE: NEEDS ~{stats['n_needed']} DOCUMENTS")
    assert "rejected" not in md.split("**Why**")[0]
    rows = candidate_rows(DecisionRecord.from_json(stats))
    assert [r["candidate"] for r in rows] == ["smooth_abs"]  # controls are references, not verdicts
    assert rows[0]["verdict"].startswith("held for evidence") and rows[0]["vs baseline (pts)"] == 1.0


def test_reject_and_canary_lines():
    stats = _decision(base=200, cand=150, ctrl=200)
    assert stats["verdict"] == "reject"
    stats["canaries"] = {"zero_rebuild": {"arm": "zero_rebuild", "n_differ": 3, "fraction": 0.0075, "ok": False,
                                          "tolerance": 0.0}}
    stats["flags"] = ["zero-rebuild canary zero_rebuild differs from the baseline on 3 of 400 documents"]
    md = decision_markdown("ad-3", DecisionRecord.from_json(stats), "s")
    assert md.startswith("### ad-3: REJECTED")
    assert "- **Canary zero_rebuild** (`zero_rebuild`): FAILED, differs from the unedited adapter on 3 documents" in md
    assert "- **Flag:** zero-rebuild canary" in md


def test_report_shows_the_pairing_and_a_continuous_decision_in_nats():
    import dataclasses

    from spectral_surgery.tasks.decision.gate import DecisionConfig

    stats = _decision(base=200, cand=260, ctrl=200)
    md = decision_markdown("ad-1", DecisionRecord.from_json(stats), "s")
    row = next(line for line in md.splitlines() if line.startswith("| smooth_abs |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # nested arms: phi = (200·140)/√(260·140·200·200) = 0.73; n·(var_c + var_b)/var(c − b) with the
    # ddof=1 variances 400·p(1−p)/399 of p = 0.65, 0.5 and 0.15 (60 differing documents): 400·(91 + 100)/51 = 1,498
    assert cells[-2] == "φ 0.73, n_eff 1,498"
    phi = candidate_rows(DecisionRecord.from_json(stats))[0]["phi vs baseline"]
    assert phi == pytest.approx(28000 / (260 * 140 * 200 * 200) ** 0.5)
    # on the continuous metric: differences in nats, the score pairing beside the outcomes'
    def scored(a: ArmOutcomes, shift: float) -> ArmOutcomes:
        return dataclasses.replace(a, scores=[(1.0 if o else -1.0) + shift + 0.01 * (i % 7)
                                              for i, o in enumerate(a.task)])

    base, cand = scored(_arm("baseline", "baseline", 200), 0.0), scored(_arm("smooth_abs", "smooth_abs", 200), 0.3)
    d = decide(base, [cand], [], GateConfig(require_control=False), decision=DecisionConfig(metric="continuous"))
    cont = stored(d)
    md = decision_markdown("ad-1", DecisionRecord.from_json(cont), d.sentence)
    assert "- **Decision metric:** continuous" in md and "nats of the gold answer's margin" in md
    row = next(line for line in md.splitlines() if line.startswith("| smooth_abs |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2].startswith("+0.300 [") and "; scores r 1.00, n_eff –" in cells[-2]
