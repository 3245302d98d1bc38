"""A released adapter is not a crash (issue 27 §1): in the run's log FILE (flows/cli/runlog.py), an adapter released by
the window's hard stop or by a stop request ends its Prefect run in a named state, logged as one readable line, with
no "Crash detected!" and no traceback; a real failure of the work still logs its error and traceback there.

The window's release runs the command line in this process with injected stage costs (as
tests/flows/test_night_window.py: the night's clock advances 600 s per written candidate). The stop request cannot
run the command line in this process (its watchdog ends the process after a stop), so it runs the nightly flow under
the same log file (:class:`flows.cli.runlog.RunLog`), verbose, as ``run -v`` does.
"""

from __future__ import annotations

import json
import logging
import re
import signal

import pytest

from spectral_surgery.flows import interrupt, refine_fleet, stage_hook, worker
from spectral_surgery.registry.night import run_plan
from tests.flows.cli_support import cli
from tests.flows.test_nightly import WINNER, _config, _register

CRASH = ("Crash detected", "Traceback", "Crashed")


pytestmark = pytest.mark.usefixtures("fresh_worker")


@pytest.fixture
def prefect_info():
    """Prefect's run loggers at INFO (the tests' environment sets WARNING), as a user's run has them: the
    "Finished in state ..." line of every task and flow run reaches the log file."""
    logger = logging.getLogger("prefect")
    old = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(old)


def _fleet(make_fleet, fleet_base, tmp_path, n: int = 1):
    dirs, calib = make_fleet(n)
    data = tmp_path / "home"
    assert cli("init", "--data-dir", data).code == 0
    for d in dirs:
        r = cli("register", d.name, "--source", d, "--base", fleet_base, "--family", "math", "--data-dir", data)
        assert r.code == 0, r.err
    return data, calib


def _run(data, calib, *extra, verbose: bool = True) -> tuple[object, str]:
    """``spectral-surgery run [-v]`` with the fake evaluator; its result and the text of its log file."""
    r = cli("run", *(["-v"] if verbose else []), "--data-dir", data, "--evaluator", "fake", "--evaluator-option",
            f"rates={json.dumps(WINNER)}", "--evaluator-option", "n_docs=60", "--task-limit", 60, "--guard-limit", 60,
            "--n-samples", 4, "--calib", calib, *extra)
    path = re.search(r"log: (\S+\.log)", r.err)
    assert path, r.err[-3000:]
    return r, open(path.group(1), encoding="utf-8").read()


def test_a_release_by_the_window_is_one_readable_line_not_a_crash(prefect_harness, prefect_info, make_fleet,
                                                                 fleet_base, tmp_path, monkeypatch):
    data, calib = _fleet(make_fleet, fleet_base, tmp_path)
    conf = tmp_path / "night.json"
    conf.write_text(json.dumps({"window": {"wall_clock": "1000s", "grace": "100s", "default_adapter_seconds": 400}}))
    now = [0.0]
    monkeypatch.setattr(refine_fleet, "monotonic", lambda: now[0])
    reached = stage_hook.reached

    def costly(stage: str) -> None:  # each written candidate costs 600 s: the hard stop passes at the second
        reached(stage)
        now[0] += 600.0 if stage == "editing" else 0.0

    monkeypatch.setattr(stage_hook, "reached", costly)
    r, log = _run(data, calib, "--config", conf)
    assert r.code == 0, r.err[-3000:]
    assert not [c for c in CRASH if c in log], log[-5000:]
    released = [line for line in log.splitlines() if "Finished in state Released(" in line]
    assert len(released) == 1 and "ad0 released by the window: the night's window ended" in released[0], log[-5000:]
    assert "deferred, nothing promoted" in released[0]
    assert "Finished in state Completed()" in log  # the nightly flow run itself completes: the night ended as planned
    reg = worker.registry(_config(data, calib))
    (row,) = run_plan(reg, 1)  # the registry's first run: deferred, with the window's times
    assert row.status == "deferred" and "released at 0:20:00" in row.reason
    assert reg.get_run(1).status == "completed"


def test_a_release_by_a_stop_request_is_a_cancelled_run_not_a_crash(prefect_harness, prefect_info, make_fleet,
                                                                    fleet_base, tmp_path, monkeypatch):
    from spectral_surgery.flows.cli import runlog

    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, families=("math",))
    reached = stage_hook.reached

    def stop_at_editing(stage: str) -> None:  # a SIGINT as the first candidate is written: ad0 is in flight
        reached(stage)
        if stage == "editing":
            interrupt.request(signal.SIGINT)

    monkeypatch.setattr(stage_hook, "reached", stop_at_editing)
    log = runlog.capture(verbose=True)
    try:
        path = log.open(tmp_path, "run")
        with pytest.raises(interrupt.Interrupted, match="SIGINT"):  # what the command line turns into exit 130
            refine_fleet.run_nightly(cfg)
    finally:
        log.close()
        interrupt.reset()
    text = path.read_text(encoding="utf-8")
    assert not [c for c in CRASH if c in text], text[-5000:]
    task = [line for line in text.splitlines() if "prefect.task_runs: Finished in state Cancelled(" in line]
    assert len(task) == 1 and "ad0 released by the interrupt (SIGINT): nothing promoted after it" in task[0], text
    flow = [line for line in text.splitlines() if "prefect.flow_runs: Finished in state Cancelled(" in line]
    assert len(flow) == 1 and "stopped by SIGINT: adapters in flight released, nothing promoted" in flow[0], text
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from spectral_surgery.registry import models as m

    with Session(reg.engine) as s:
        assert [r.status for r in s.scalars(select(m.RefinementRun))] == ["cancelled"]
        assert [(a.status, a.error_type) for a in s.scalars(select(m.AdapterRun))] == [("failed", "Interrupted")]
        assert s.scalar(select(m.Decision.id).limit(1)) is None  # nothing decided, so nothing promoted


def test_a_real_failure_still_reads_as_one_in_the_log(prefect_harness, make_fleet, fleet_base, tmp_path,
                                                      monkeypatch):
    data, calib = _fleet(make_fleet, fleet_base, tmp_path)
    reached = stage_hook.reached

    def broken(stage: str) -> None:  # the work itself fails as the first candidate is written
        reached(stage)
        if stage == "editing":
            raise RuntimeError("a disk full while writing a candidate")

    monkeypatch.setattr(stage_hook, "reached", broken)
    r, log = _run(data, calib, verbose=False)  # the quiet log file (warnings and errors) has it too
    assert "1 failed" in r.err + r.out, r.err[-3000:]
    assert "ERROR prefect.task_runs: ad0 failed: RuntimeError: a disk full while writing a candidate" in log
    assert "Traceback" in log and "Released" not in log and "released by" not in log
