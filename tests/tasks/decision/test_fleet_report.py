"""tasks/decision/fleet_report.py: what wins across adapters, from real gate decisions (typed records, no registry)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from spectral_surgery.tasks.decision.fleet_report import (
    ArmSeconds,
    DataKindCost,
    EditCost,
    LatestDecision,
    MeanCost,
    cost_by_data,
    edit_cost,
    what_wins,
    what_wins_markdown,
)
from spectral_surgery.tasks.decision.gate import GateConfig, decide
from spectral_surgery.tasks.decision.record import DecisionRecord
from tests.records import recorded
from tests.tasks.decision.test_report import _arm

AT = datetime(2026, 12, 1, tzinfo=UTC)


def _two_policies(base: int, a: int, b: int) -> DecisionRecord:
    baseline = _arm("baseline", "baseline", base)
    d = decide(baseline, [_arm("smooth_abs", "smooth_abs", a), _arm("hns", "hns", b)],
               [_arm("random_s1", "random_index", base, control=True)], GateConfig())
    return recorded(d)


def _latest(i: int, adapter: str, family: str, record: DecisionRecord, seconds: float | None,
            costs: dict[str, dict[str, float]] | None = None) -> LatestDecision:
    return LatestDecision(adapter=adapter, family=family, decision_id=i, at=AT, record=record, seconds=seconds,
                          costs={arm: ArmSeconds(**spent) for arm, spent in (costs or {}).items()})


def test_what_wins_counts_verdicts_and_averages_gains_across_adapters():
    decisions = [  # gains of hns: +4, +8, +16 pts over the unedited adapter (of 400 documents) in math
        _latest(1, "m1", "math", _two_policies(200, 200, 216), 100.0),
        _latest(2, "m2", "math", _two_policies(200, 204, 232), 300.0),
        _latest(3, "m3", "math", _two_policies(100, 100, 164), None),
        _latest(4, "c1", "commonsense", _two_policies(200, 260, 200), 50.0),
    ]
    rows = what_wins(decisions)
    assert [(r.family, r.edit) for r in rows] == [("commonsense", "smooth_abs"), ("commonsense", "hns"),
                                                  ("math", "hns"), ("math", "smooth_abs")]
    hns = rows[2]
    assert (hns.adapters, hns.promoted, hns.passed) == (3, 3, 3) and hns.held == hns.rejected == 0
    # mean of (4, 8, 16) = 9.333; sd 6.110, t(0.975, 2) = 4.3027: 9.333 ± 15.18 (textbook Student-t interval)
    assert hns.delta_pts.mean == pytest.approx(28 / 3)
    assert hns.delta_pts.lo == pytest.approx(28 / 3 - 4.302653 * 6.110101 / 3 ** 0.5, abs=1e-4)
    assert hns.delta_pts.hi == pytest.approx(28 / 3 + 4.302653 * 6.110101 / 3 ** 0.5, abs=1e-4)
    assert hns.guard_pts.mean == 0.0
    assert hns.seconds_per_adapter == 200.0  # the runs with a known wall time
    smooth = rows[3]
    assert smooth.promoted == 0 and smooth.adapters == 3 and smooth.delta_pts.mean == pytest.approx(1 / 3)
    single = rows[0]
    assert single.promoted == 1 and single.delta_pts.lo is None  # one adapter: no interval
    md = what_wins_markdown(rows)
    assert "| math | hns | – | 3 | 3 | 3 / 0 / 0 | +9.3 [−5.8, +24.5] | +0.0 [+0.0, +0.0] | – | 200 |" in md
    assert hns.cost is None and hns.data is None  # decisions from before costs were recorded


def test_what_wins_reports_each_edits_own_cost_and_data_free_against_calibrated():
    """An edit's cost per adapter is its stages counted whole (what it alone would pay) + write + evaluate; the
    calibration pass counts only for an edit that needs data; data-free edits are compared with calibrated ones."""
    def costs(calibrate: float, evaluate_hns: float) -> dict:
        return {"smooth_abs": {"write": 1.0, "decompose": 2.0, "calibrate": calibrate, "evaluate": 30.0},
                "hns": {"write": 0.5, "decompose": 2.0, "evaluate": evaluate_hns},
                "random_index-s1": {"write": 1.0, "decompose": 2.0, "calibrate": calibrate, "evaluate": 30.0}}

    decisions = [
        _latest(1, "m1", "math", _two_policies(200, 200, 216), 100.0, costs(60.0, 20.0)),
        _latest(2, "m2", "math", _two_policies(200, 204, 232), 300.0, costs(100.0, 40.0)),
        # an adapter decided before costs were recorded: not in the means
        _latest(3, "m3", "math", _two_policies(100, 100, 164), None, {}),
    ]
    rows = {r.edit: r for r in what_wins(decisions)}
    assert set(rows) == {"hns", "smooth_abs"}  # the random control is a reference, not an edit
    hns, smooth = rows["hns"], rows["smooth_abs"]
    assert hns.data == "data-free" and smooth.data == "calibration"
    assert hns.cost == MeanCost(prepare=2.0, write=0.5, evaluate=30.0, total=32.5, n=2)
    assert smooth.cost == MeanCost(prepare=82.0, write=1.0, evaluate=30.0, total=113.0, n=2)
    assert edit_cost(ArmSeconds(write=1.0, decompose=2.0, calibrate=3.0, gamma=4.0, evaluate=None)) == EditCost(
        prepare=9.0, write=1.0, evaluate=0.0, total=10.0, data="calibration")
    assert edit_cost(ArmSeconds(evaluate=None)) is None and edit_cost(None) is None
    by = cost_by_data(list(rows.values()))
    assert by == {"data-free": DataKindCost(edits=1, prepare=2.0, write=0.5, evaluate=30.0, total=32.5),
                  "calibration": DataKindCost(edits=1, prepare=82.0, write=1.0, evaluate=30.0, total=113.0)}
    md = what_wins_markdown(list(rows.values()))
    assert (
        "| math | hns | data-free | 3 | 3 | 3 / 0 / 0 | +9.3 [−5.8, +24.5] | +0.0 [+0.0, +0.0] | 32 (2 + 0.5 + 30) "
        "| 200 |"
        in md
    )


def test_the_json_of_a_row_has_the_keys_of_the_dicts_it_replaced_in_their_order():
    """``report --json`` dumps the typed rows: the same keys, in the same order, as the report's dicts before the
    records were typed (their values are pinned end to end in tests/flows/test_cli_report.py)."""
    row = what_wins([_latest(1, "m1", "math", _two_policies(200, 200, 216), 100.0,
                             {"hns": {"write": 0.5, "decompose": 2.0, "evaluate": 20.0}})])[0]
    dumped = row.model_dump(mode="json")
    assert list(dumped) == ["family", "edit", "adapters", "promoted", "passed", "held", "rejected", "delta_pts",
                            "guard_pts", "seconds_per_adapter", "data", "cost"]
    assert list(dumped["delta_pts"]) == list(dumped["guard_pts"]) == ["n", "mean", "lo", "hi"]
    assert dumped["cost"] == {"prepare": 2.0, "write": 0.5, "evaluate": 20.0, "total": 22.5, "n": 1}
    assert list(dumped["cost"]) == ["prepare", "write", "evaluate", "total", "n"]
    assert list(cost_by_data([row])["data-free"].model_dump(mode="json")) == ["edits", "prepare", "write", "evaluate",
                                                                             "total"]
    with pytest.raises(ValidationError):  # frozen: a consumer reads a row, never edits it
        row.adapters = 2  # type: ignore[misc]
