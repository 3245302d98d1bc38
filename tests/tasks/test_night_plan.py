"""The night planner: forecasts from injected stage costs, priority order, fitting onto lanes, deferral."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from spectral_surgery.tasks.night_plan import (
    AdapterHistory,
    WindowConfig,
    clock,
    forecast_error,
    forecast_of,
    forecast_seconds,
    plan_night,
    still_fits,
)

HOUR = 3600.0
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _h(name: str, seconds: float | None, **kw) -> AdapterHistory:
    stages = {} if seconds is None else {"calibrate": seconds / 2, "evaluate": seconds / 2}
    return AdapterHistory(name=name, version_id=abs(hash(name)) % 1000, stage_seconds=stages, **kw)


def _actions(plan) -> dict[str, str]:
    return {e.name: e.action for e in plan.entries}


def test_forecast_is_the_sum_of_recorded_stages():
    assert forecast_seconds({"decompose": 1.5, "calibrate": 10.0, "write": 2.0, "gamma": 0.5, "evaluate": 30.0}) == 44.0
    assert forecast_seconds({}) is None


def test_an_own_forecast_is_the_larger_of_the_stages_and_the_last_wall_time():
    stages = {"calibrate": 10.0, "evaluate": 30.0}
    assert forecast_of(AdapterHistory("a", 1, stage_seconds=stages, wall_seconds=100.0)) == 100.0  # overheads
    assert forecast_of(AdapterHistory("a", 1, stage_seconds=stages, wall_seconds=5.0)) == 40.0  # stages reused
    assert forecast_of(AdapterHistory("a", 1, wall_seconds=5.0)) == 5.0
    assert forecast_of(AdapterHistory("a", 1)) is None


def test_window_parses_durations_and_needs_a_limit():
    assert WindowConfig(wall_clock="6h").wall_clock_s == 6 * HOUR
    assert WindowConfig(wall_clock=1.5).wall_clock_s == 1.5 * HOUR  # hours by default
    assert WindowConfig(wall_clock="90m").wall_clock_s == 90 * 60
    assert WindowConfig(wall_clock="PT2H").wall_clock_s == 2 * HOUR
    assert WindowConfig(gpu_hours=12).gpu_seconds == 12 * HOUR
    with pytest.raises(ValidationError, match="wall_clock .e.g. 6h. and/or gpu_hours"):
        WindowConfig()
    with pytest.raises(ValidationError, match="positive"):
        WindowConfig(wall_clock="0h")
    with pytest.raises(ValidationError, match="duration"):
        WindowConfig(wall_clock=True)


def test_one_lane_starts_what_fits_in_priority_order_and_defers_the_rest():
    # three 2-hour adapters in a 5-hour window: two fit, the third waits
    plan = plan_night([_h("c", 2 * HOUR), _h("a", 2 * HOUR), _h("b", 2 * HOUR)], WindowConfig(wall_clock="5h"))
    assert [e.name for e in plan.entries] == ["a", "b", "c"]  # ties: by name, the same every night
    assert _actions(plan) == {"a": "start", "b": "start", "c": "defer"}
    a, b, c = plan.entries
    assert (a.start_s, a.end_s, b.start_s, b.end_s) == (0, 2 * HOUR, 2 * HOUR, 4 * HOUR)
    assert "would end at 6:00:00, past the window 5:00:00" in c.reason
    assert plan.planned_end_s == 4 * HOUR and c.lane is None


def test_lanes_fit_by_wall_clock():
    # four 2-hour adapters, 5-hour window: one lane fits 2, two lanes fit all 4 (2 per lane)
    fleet = [_h(n, 2 * HOUR) for n in "abcd"]
    assert len(plan_night(fleet, WindowConfig(wall_clock="5h"), lanes=1).started) == 2
    two = plan_night(fleet, WindowConfig(wall_clock="5h"), lanes=2)
    assert len(two.started) == 4 and two.planned_end_s == 4 * HOUR
    assert sorted(e.lane for e in two.started) == [0, 0, 1, 1]
    # each adapter takes the lane that frees first: a short one frees its lane for the next
    mixed = plan_night([_h("a", 1 * HOUR), _h("b", 4 * HOUR), _h("c", 3 * HOUR)], WindowConfig(wall_clock="4h"),
                       lanes=2)
    by = {e.name: e for e in mixed.entries}
    assert (by["c"].lane, by["c"].start_s, by["c"].end_s) == (by["a"].lane, HOUR, 4 * HOUR)


def test_time_spent_before_the_plan_counts():
    plan = plan_night([_h("a", 2 * HOUR), _h("b", 2 * HOUR)], WindowConfig(wall_clock="5h"), elapsed_s=1.5 * HOUR)
    assert _actions(plan) == {"a": "start", "b": "defer"} and plan.entries[0].start_s == 1.5 * HOUR


def test_a_smaller_adapter_behind_a_deferred_one_fills_the_gap():
    plan = plan_night([_h("a", 3 * HOUR), _h("b", 3 * HOUR), _h("c", 1 * HOUR)], WindowConfig(wall_clock="4h"))
    assert _actions(plan) == {"a": "start", "b": "defer", "c": "start"}


def test_gpu_hours_budget_counts_every_lane():
    plan = plan_night([_h(n, 2 * HOUR) for n in "abc"], WindowConfig(gpu_hours=5), lanes=3)
    assert _actions(plan) == {"a": "start", "b": "start", "c": "defer"}
    assert "past the budget 5.00" in plan.entries[2].reason


def test_priority_order():
    old, new = T0, T0 + timedelta(days=3)
    fleet = [
        _h("decided-recently", HOUR, last_decision_at=new),
        _h("decided-long-ago", HOUR, last_decision_at=old),
        _h("declared", HOUR, priority=5, last_decision_at=new),
        _h("new-version", HOUR, new_version=True, last_decision_at=new),
        _h("never", None, never_refined=True),
        _h("waited", HOUR, deferred=True, last_decision_at=new),
    ]
    plan = plan_night(fleet, WindowConfig(wall_clock="100h"))
    assert [e.name for e in plan.entries] == ["waited", "never", "new-version", "declared", "decided-long-ago",
                                              "decided-recently"]
    assert [e.rank for e in plan.entries] == list(range(6))
    assert plan.entries[0].reason.startswith("deferred last night")


def test_a_deferred_adapter_is_first_in_line_the_next_night():
    window = WindowConfig(wall_clock="3h")
    night1 = plan_night([_h("a", 2 * HOUR, priority=1), _h("b", 2 * HOUR)], window)
    assert _actions(night1) == {"a": "start", "b": "defer"}
    # the next night: a has a fresh decision, b carries its deferral and a is refined again (config changed)
    night2 = plan_night([_h("a", 2 * HOUR, priority=1, last_decision_at=T0),
                         _h("b", 2 * HOUR, deferred=True)], window)
    assert [e.name for e in night2.entries] == ["b", "a"] and _actions(night2) == {"b": "start", "a": "defer"}


def test_empty_history_uses_the_default_then_the_fleets_median():
    first = plan_night([_h("a", None), _h("b", None)], WindowConfig(wall_clock="1h", default_adapter_seconds=1200))
    assert [(e.forecast_s, e.basis) for e in first.entries] == [(1200, "default"), (1200, "default")]
    later = plan_night([_h("a", 100), _h("b", 300), _h("c", 500), _h("new", None, never_refined=True)],
                       WindowConfig(wall_clock="1h"))
    by = {e.name: e for e in later.entries}
    assert (by["new"].forecast_s, by["new"].basis) == (300, "fleet") and by["a"].basis == "history"
    assert plan_night([], WindowConfig(wall_clock="1h")).entries == ()


def test_an_adapter_longer_than_the_window_says_so():
    plan = plan_night([_h("huge", 10 * HOUR), _h("small", HOUR)], WindowConfig(wall_clock="6h"))
    assert _actions(plan) == {"huge": "defer", "small": "start"}
    assert "longer than the whole window 6:00:00" in plan.entries[0].reason


def test_still_fits_by_the_real_clock():
    window = WindowConfig(wall_clock="2h", gpu_hours=3)
    entry = plan_night([_h("a", HOUR)], window).entries[0]
    assert still_fits(entry, elapsed_s=0.5 * HOUR, spent_s=0, window=window) is None
    assert "past the window 2:00:00" in still_fits(entry, elapsed_s=1.5 * HOUR, spent_s=0, window=window)
    assert "budget 3.00" in still_fits(entry, elapsed_s=0, spent_s=2.5 * HOUR, window=window)


def test_forecast_error_and_clock():
    assert forecast_error(100.0, 125.0) == pytest.approx(0.25)
    assert clock(3900) == "1:05:00"


def test_the_window_decides_what_runs_never_what_a_result_is():
    from spectral_surgery.tasks.run_config import RunConfig

    plain = RunConfig()
    windowed = RunConfig(window={"wall_clock": "6h", "gpu_hours": 12})
    assert windowed.window.wall_clock_s == 6 * HOUR and windowed.result_hash() == plain.result_hash()
    again = RunConfig.model_validate(windowed.model_dump(mode="json"))  # the flow parameter round trip
    assert again.window == windowed.window
    with pytest.raises(ValidationError, match="window.wall_clock must be positive"):
        RunConfig(window={"wall_clock": -1})
