"""A night that fits its window (issue 27 §1), through the real nightly flow with the fake evaluator.

Stage costs are injected: the history by writing the recorded per-stage seconds of past nights
(``evaluations.seconds``, ``candidates.seconds_json``), the night's own cost by the flow's clock
(``flows.refine_fleet.monotonic``), which advances by an adapter's injected cost when its refinement returns.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from spectral_surgery.flows import refine_fleet
from spectral_surgery.flows.refine_fleet import headline, run_nightly, window_lines
from spectral_surgery.registry import models as m
from spectral_surgery.flows.cli.why import next_steps
from spectral_surgery.flows.dashboard.data import collect
from spectral_surgery.flows.dashboard.html import render_html
from spectral_surgery.registry.night import run_plan
from spectral_surgery.registry.read import adapter_story
from spectral_surgery.tasks.decision.gate import GateConfig
from tests.flows.test_nightly import _config, _register


class InjectedClock:
    """The night's clock: real time never moves it, an adapter's refinement moves it by that adapter's cost."""

    def __init__(self, costs: dict[str, float]) -> None:
        self.now, self.costs = 0.0, costs

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def night(monkeypatch):
    """Install an :class:`InjectedClock` for the given costs (seconds per adapter name)."""
    real = refine_fleet.refine_version

    def install(costs: dict[str, float]) -> InjectedClock:
        clock = InjectedClock(costs)

        def costly(version_id, adapter_name, run_id, config):
            try:
                return real(version_id, adapter_name, run_id, config)
            finally:
                clock.now += clock.costs[adapter_name]

        monkeypatch.setattr(refine_fleet, "monotonic", clock)
        monkeypatch.setattr(refine_fleet, "refine_version", costly)
        return clock

    return install


pytestmark = pytest.mark.usefixtures("fresh_worker")


def _inject_history(reg, name: str, seconds: float) -> None:
    """Make ``name``'s past night cost ``seconds``: one recorded evaluation took it all, the rest nothing."""
    with Session(reg.engine) as s, s.begin():
        versions = select(m.AdapterVersion.id).join(m.Adapter).where(m.Adapter.name == name)
        s.execute(update(m.Candidate).where(m.Candidate.adapter_version_id.in_(versions)).values(seconds_json=None))
        s.execute(update(m.Evaluation).where(m.Evaluation.adapter_version_id.in_(versions)).values(seconds=0.0))
        first = s.scalars(select(m.Evaluation.id).where(m.Evaluation.adapter_version_id.in_(versions),
                                                        m.Evaluation.candidate_id.is_(None))
                          .order_by(m.Evaluation.id).limit(1)).one()
        s.execute(update(m.Evaluation).where(m.Evaluation.id == first).values(seconds=seconds))


def test_a_night_plans_itself_defers_what_does_not_fit_and_puts_it_first_next_night(
        prefect_harness, make_fleet, fleet_base, tmp_path, night):
    dirs, calib = make_fleet(3)
    window = {"wall_clock": "2500s", "default_adapter_seconds": 1000}
    cfg = _config(tmp_path / "data", calib, window=window)
    reg = _register(cfg, dirs, fleet_base)

    # night 1, nothing recorded: every adapter forecast at the default 1000 s; two fit in 2500 s, ad2 waits
    night({"ad0": 700.0, "ad1": 1100.0, "ad2": 900.0})
    out = run_nightly(cfg)
    assert (out["completed"], out["deferred"], out["failed"], out["refined"]) == (2, 1, 0, 2)
    assert headline(out) == "2 refined, 0 failed, 1 deferred to the next night (the window)"
    plan = {r["adapter"]: r for r in out["plan"]}
    assert [r["adapter"] for r in out["plan"]] == ["ad0", "ad1", "ad2"]
    assert {n: (r["action"], r["status"], r["basis"]) for n, r in plan.items()} == {
        "ad0": ("start", "completed", "default"), "ad1": ("start", "completed", "default"),
        "ad2": ("defer", "deferred", "default")}
    assert (plan["ad0"]["actual_s"], plan["ad0"]["error"]) == (700.0, pytest.approx(-0.3))
    assert plan["ad2"]["actual_s"] is None and "past the window 0:41:40" in plan["ad2"]["reason"]
    w = out["window"]
    assert (w["forecast_s"], w["actual_s"], w["elapsed_s"]) == (2000.0, 1800.0, 1800.0)
    assert w["forecast_error"] == pytest.approx(-0.1) and w["mean_abs_error"] == pytest.approx(0.2)
    lines = window_lines(out)
    assert lines[0].startswith("Window (wall clock 0:41:40, 1 lane(s)): 2 planned to start, 1 deferred")
    # recorded: deferred (not failed, not running) with its reason and forecast; still pending work
    rows = {r.adapter: r for r in run_plan(reg, out["run_id"])}
    assert {n: r.status for n, r in rows.items()} == {"ad0": "completed", "ad1": "completed", "ad2": "deferred"}
    assert rows["ad2"].forecast_s == 1000.0 and "past the window" in rows["ad2"].reason
    assert rows["ad0"].forecast_s == 1000.0 and rows["ad0"].reason.startswith("never refined")
    assert (rows["ad0"].actual_s, rows["ad0"].error) == (700.0, pytest.approx(-0.3))  # the visit, as measured
    assert [v.adapter.name for v in reg.pending_work(lambda a: refine_fleet.adapter_config_hash(cfg, a))] == ["ad2"]

    # night 2, a new gate (every version needs a visit): ad2 was deferred, so it is first in line, forecast at the
    # fleet's median recorded cost; ad1 declared priority 3 goes before ad0. Injected stage seconds 800 / 2000
    # against visits of 700 / 1100: each forecast is the larger, 800 / 2000
    _inject_history(reg, "ad0", 800.0)
    _inject_history(reg, "ad1", 2000.0)
    reg.register_adapter("ad1", str(dirs[1]), str(fleet_base), "commonsense", priority=3)
    cfg2 = _config(tmp_path / "data", calib, window=window, gate=GateConfig(min_delta=0.01))
    # ad2 runs long (2000 s against 1400 s forecast): at 0:33:20 ad0's 800 s no longer fits, so it is not started
    night({"ad0": 10.0, "ad1": 10.0, "ad2": 2000.0})
    out2 = run_nightly(cfg2)
    plan2 = {r["adapter"]: r for r in out2["plan"]}
    assert [r["adapter"] for r in out2["plan"]] == ["ad2", "ad1", "ad0"]
    assert plan2["ad2"]["reason"].startswith("deferred last night")
    assert (plan2["ad2"]["forecast_s"], plan2["ad2"]["basis"]) == (1400.0, "fleet")
    assert (plan2["ad1"]["forecast_s"], plan2["ad1"]["action"]) == (2000.0, "defer")  # 1400 + 2000 > 2500
    assert (plan2["ad0"]["forecast_s"], plan2["ad0"]["action"]) == (800.0, "start")  # 1400 + 800 fits the plan
    assert plan2["ad0"]["status"] == "deferred" and "the night ran long" in plan2["ad0"]["reason"]
    assert (plan2["ad2"]["status"], plan2["ad2"]["error"]) == ("completed", pytest.approx(600 / 1400))
    assert (out2["completed"], out2["deferred"]) == (1, 2)
    rows2 = {r.adapter: r.status for r in run_plan(reg, out2["run_id"])}
    assert rows2 == {"ad0": "deferred", "ad1": "deferred", "ad2": "completed"}
    assert reg.get_run(out2["run_id"]).status == "completed"

    # the dashboard's table and `why` say the same
    data = collect(reg)
    assert data["night"]["run_id"] == out2["run_id"]
    assert [(r["adapter"], r["status"], r["forecast_s"]) for r in data["night"]["rows"]] == [
        ("ad0", "deferred", 800.0), ("ad1", "deferred", 2000.0), ("ad2", "completed", 1400.0)]
    assert data["night"]["rows"][0]["actual_s"] is None and data["night"]["rows"][2]["actual_s"] == 2000.0
    assert data["night"]["error"] == pytest.approx(600 / 1400)
    assert "Last night against its window" in render_html(data) and "the night ran long" in render_html(data)
    story = adapter_story(reg, "ad1")
    assert story.last_run["status"] == "deferred" and story.last_run["forecast_seconds"] == 2000.0
    assert any("did not fit the night's window" in s and "first in line" in s for s in next_steps(story))


def test_without_a_window_nothing_is_planned(prefect_harness, make_fleet, fleet_base, tmp_path, night):
    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib)
    _register(cfg, dirs, fleet_base, families=("math",))
    night({"ad0": 5.0})
    out = run_nightly(cfg)
    assert out["completed"] == 1 and out["deferred"] == 0 and "plan" not in out and window_lines(out) == []


def test_register_declares_a_priority(make_fleet, fleet_base, tmp_path):
    import json

    from tests.flows.cli_support import cli

    dirs, _ = make_fleet(2)
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    out = cli("register", "ad0", "--source", dirs[0], "--base", fleet_base, "--family", "math", "--priority", "5",
              "--data-dir", data, "--json")
    assert out.code == 0 and out.json()["priority"] == 5
    again = cli("register", "ad0", "--source", dirs[0], "--base", fleet_base, "--family", "math", "--data-dir", data,
                "--json")
    assert again.json()["priority"] == 5  # a re-registration without --priority keeps it
    table = tmp_path / "fleet.csv"
    table.write_text(f"name,source,base,family,priority\nad1,ad1,{fleet_base},math,-2\n")
    many = json.loads(cli("register", "--from", table, "--data-dir", data, "--json").out)
    assert [(a["name"], a["priority"]) for a in many["adapters"]] == [("ad1", -2)]
    bad = cli("register", "ad0", "--source", dirs[0], "--base", fleet_base, "--family", "math", "--priority", "5000",
              "--data-dir", data)
    assert bad.code != 0 and "priority must be a whole number from -1000 to 1000" in bad.err


def test_an_adapter_in_flight_at_the_hard_stop_is_released_deferred_and_first_next_night(
        prefect_harness, make_fleet, fleet_base, tmp_path, night, monkeypatch):
    """window.wall_clock + window.grace passes while ad0 writes its candidates (each written candidate costs an
    injected 600 s): ad0 stops at the checkpoint before its third write (never mid-write), is recorded deferred
    (not failed, not running), nothing is decided or promoted, ad1 never starts, and the next night ad0 is first."""
    from spectral_surgery.flows import stage_hook

    dirs, calib = make_fleet(2)
    window = {"wall_clock": "1000s", "grace": "100s", "default_adapter_seconds": 400}
    cfg = _config(tmp_path / "data", calib, window=window)
    reg = _register(cfg, dirs, fleet_base, families=("math", "math"))
    clock = night({"ad0": 0.0, "ad1": 0.0})
    reached, stage_costs = stage_hook.reached, {"editing": 600.0}

    def costly_stage(stage: str) -> None:
        reached(stage)
        clock.now += stage_costs.get(stage, 0.0)

    monkeypatch.setattr(stage_hook, "reached", costly_stage)
    out = run_nightly(cfg)
    assert (out["completed"], out["failed"], out["deferred"], out["refined"]) == (0, 0, 2, 0)
    assert [r["action"] for r in out["plan"]] == ["start", "start"]  # both fitted the plan; the night ran long
    res = {r["adapter"]: r for r in out["results"]}
    assert res["ad0"]["status"] == "deferred" and res["ad0"]["released"]
    assert "window ended" in res["ad0"]["reason"] and "(window 0:16:40 + grace 0:01:40); released at 0:20:00, " \
        "nothing promoted" in res["ad0"]["reason"]
    assert "the night ran long" in res["ad1"]["reason"] and "not started" in res["ad1"]["reason"]
    rows = {r.adapter: r for r in run_plan(reg, out["run_id"])}
    assert {n: r.status for n, r in rows.items()} == {"ad0": "deferred", "ad1": "deferred"}
    assert "released at 0:20:00" in rows["ad0"].reason and rows["ad0"].forecast_s == 400.0
    assert reg.get_run(out["run_id"]).status == "completed"
    ad0 = reg.list_versions("ad0")[0]
    written = [c for c in reg.list_candidates(ad0.id) if c.artifact_uri]  # the bare-base arm writes nothing
    assert len(written) == 2  # two whole candidates; the checkpoint before the third stopped it
    from spectral_surgery.tasks.adapter_io import adapter_content_sha256

    assert all(adapter_content_sha256(c.artifact_uri) == c.artifact_sha256 for c in written)  # none cut mid-write
    with Session(reg.engine) as s:
        assert s.scalar(select(m.Decision.id).limit(1)) is None  # nothing decided, so nothing promoted
    assert reg.production("ad0").candidate_id is None  # still the adapter as registered (implicit)

    # next night, no injected stage cost: ad0 is first in line and completes, reusing its two stored candidates
    stage_costs.clear()
    night({"ad0": 10.0, "ad1": 10.0})
    out2 = run_nightly(cfg)
    assert [r["adapter"] for r in out2["plan"]] == ["ad0", "ad1"]
    assert out2["plan"][0]["reason"].startswith("deferred last night")
    assert (out2["completed"], out2["deferred"], out2["failed"]) == (2, 0, 0)
    res2 = {r["adapter"]: r for r in out2["results"]}
    # the two candidates written before the hard stop and the bare-base row are reused, not written again
    assert res2["ad0"]["candidates_written"] == res2["ad1"]["candidates_written"] - 3


def test_grace_is_a_duration_and_none_lets_adapters_in_flight_finish():
    from datetime import timedelta

    from spectral_surgery.tasks.night_plan import WindowConfig, time_left

    w = WindowConfig(wall_clock="1000s")
    assert w.grace == timedelta(minutes=5) and w.hard_stop_s == 1300.0
    assert (time_left(300.0, w), time_left(2000.0, w)) == (1000.0, 0.0)
    assert WindowConfig(wall_clock=1, grace="90s").hard_stop_s == 3690.0
    assert time_left(0.0, WindowConfig(wall_clock=1, grace=None)) is None  # as before: in-flight adapters finish
    assert time_left(0.0, WindowConfig(gpu_hours=2)) is None  # no wall clock, no hard stop
    with pytest.raises(ValueError, match="window.grace must not be negative"):
        WindowConfig(wall_clock=1, grace=-0.1)
