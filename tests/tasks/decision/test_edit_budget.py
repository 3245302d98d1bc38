"""The per-family edit budget: past winners of the family are kept, untried edits explored, other families ignored."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from spectral_surgery.tasks.decision.edit_budget import EditBudgetConfig, choose_edits
from spectral_surgery.tasks.decision.fleet_report import LatestDecision
from spectral_surgery.tasks.decision.gate import GateConfig, decide
from tests.records import recorded
from tests.tasks.decision.test_report import _arm


def _decision(family: str, base: int, scores: dict[str, int]) -> LatestDecision:
    baseline = _arm("baseline", "baseline", base)
    d = decide(baseline, [_arm(n, n, k) for n, k in scores.items()],
               [_arm("random_s1", "random_index", base, control=True)], GateConfig())
    return LatestDecision(adapter=f"{family}-{base}", family=family, decision_id=base,
                          at=datetime(2026, 12, 1, tzinfo=UTC), record=recorded(d))


CONFIGURED = ["abs_select", "smooth_abs", "hns", "flat_nuclear"]


def test_off_keeps_every_configured_edit():
    history = [_decision("math", 200, {"hns": 260, "smooth_abs": 200})]
    assert choose_edits(CONFIGURED, history, "math", EditBudgetConfig()) == (CONFIGURED, {})


def test_keeps_the_best_of_the_family_and_explores_untried_edits():
    history = [_decision("math", 200, {"abs_select": 200, "smooth_abs": 204, "hns": 260}),   # hns promoted
               _decision("math", 180, {"abs_select": 180, "smooth_abs": 190, "hns": 250}),
               _decision("code", 200, {"abs_select": 300, "smooth_abs": 200, "hns": 200})]  # another family
    kept, skipped = choose_edits(CONFIGURED, history, "math", EditBudgetConfig(enabled=True, per_family=1))
    assert kept == ["hns", "flat_nuclear"]  # flat_nuclear was never tried on math: explored
    assert set(skipped) == {"abs_select", "smooth_abs"}
    assert "promoted 0 of 2 adapter(s)" in skipped["smooth_abs"] and "kept hns" in skipped["smooth_abs"]
    kept2, _ = choose_edits(CONFIGURED, history, "math", EditBudgetConfig(enabled=True, per_family=2))
    assert kept2 == ["smooth_abs", "hns", "flat_nuclear"]  # then by mean gain: smooth_abs gained, abs_select did not
    code, _ = choose_edits(CONFIGURED, history, "code", EditBudgetConfig(enabled=True, per_family=1))
    assert code == ["abs_select", "flat_nuclear"]


def test_no_history_evaluates_everything_and_explore_below_protects_young_edits():
    assert choose_edits(CONFIGURED, [], "math", EditBudgetConfig(enabled=True, per_family=1)) == (CONFIGURED, {})
    history = [_decision("math", 200, {"abs_select": 200, "smooth_abs": 260, "hns": 200, "flat_nuclear": 200})]
    kept, _ = choose_edits(CONFIGURED, history, "math", EditBudgetConfig(enabled=True, per_family=1, explore_below=2))
    assert kept == CONFIGURED  # each was tried on one adapter only, fewer than 2: all still exploring
    kept, _ = choose_edits(CONFIGURED, history, "math", EditBudgetConfig(enabled=True, per_family=1))
    assert kept == ["smooth_abs"]


def test_config_is_validated_at_the_edge():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="per_family"):
        EditBudgetConfig(enabled=True, per_family=0)
    with pytest.raises(ValidationError, match="extra"):
        EditBudgetConfig(enabled=True, per_famliy=2)
