"""Ctrl-C in a real terminal, and SIGTERM to the process group, at each stage of ``spectral-surgery run``: a clean stop.

The command runs in a pseudo-terminal whose slave side is its controlling terminal (its own session), exactly as in
a shell; ^C is written to the master side, so the kernel sends SIGINT to the terminal's foreground process group.
The stage hook (flows/stage_hook.py) holds the run at one stage; the test presses ^C there and checks: exit 130 within
a few seconds, ``error: interrupted`` as the last line and no traceback, swallowed interrupt or reconnect storm,
production exactly as it was when the signal came, the run ``cancelled`` with nothing left ``running``; then a
re-run does the rest of the work with no duplicate row (the same counts as one uninterrupted run).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from spectral_surgery.flows.stage_hook import ENV_AT, ENV_FILE, STAGES, STARTUP
from spectral_surgery.registry import models as m
from tests import tiny
from tests.flows.cli_support import cli

REPO = Path(__file__).resolve().parents[2]
WINNER = {"smooth_abs": 0.9}  # the fake evaluator scores smooth_abs' documents at 0.9, the others at 0.5
COUNTED = [m.Candidate, m.Evaluation, m.GuardResult, m.Decision, m.ProductionPointer, m.PromotionEvent]
REACH_S = 240  # start-up (imports, Prefect's temporary server) and the work up to the stage, on a busy 2-core machine
EXIT_S = 10  # from the signal to the exit: "within a few seconds", with room for a loaded CI machine
NOISE = ("Traceback", "Exception ignored", "ConnectError", "Unable to connect", "EventsWorker", "Crash detected")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
TIMINGS: dict[str, float] = {}


pytestmark = pytest.mark.usefixtures("fresh_worker_module")


@pytest.fixture(scope="module", autouse=True)
def _print_timings():
    yield
    if TIMINGS:  # the seconds from the signal to the exit, per stage (shown with -s; the report quotes them)
        print("\nsignal → exit:", ", ".join(f"{k} {v:.2f} s" for k, v in TIMINGS.items()))


def _counts(data: Path) -> dict[str, int]:
    from spectral_surgery.registry.db import session_scope
    from spectral_surgery.registry.repository import Registry

    reg = Registry.open(None, data)
    try:
        with session_scope(reg.engine, write=False) as s:
            return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in COUNTED}
    finally:
        reg.close()


def _state(data: Path) -> SimpleNamespace:
    """Runs, adapter runs, production and the history of ad0, read by a fresh registry handle."""
    from spectral_surgery.registry.db import session_scope
    from spectral_surgery.registry.repository import Registry

    reg = Registry.open(None, data)
    try:
        with session_scope(reg.engine, write=False) as s:
            runs = [(r.id, r.status) for r in s.scalars(select(m.RefinementRun).order_by(m.RefinementRun.id))]
            aruns = [(a.run_id, a.status, a.error_type)
                     for a in s.scalars(select(m.AdapterRun).order_by(m.AdapterRun.id))]
        prod = reg.production("ad0")
        return SimpleNamespace(runs=runs, aruns=aruns,
                               history=[(e.kind, e.to_candidate_id) for e in reg.history("ad0")],
                               production=(prod.adapter_version_id, prod.candidate_id, prod.implicit) if prod else None)
    finally:
        reg.close()


@pytest.fixture(scope="module")
def fleet(fleet_base, tmp_path_factory):
    """One tiny adapter registered in a fresh registry (copied per test), and the counts of one uninterrupted run."""
    root = tmp_path_factory.mktemp("interrupt")
    ad = tiny.save_adapter(fleet_base, root / "ad0", seed=1)
    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    template = root / "template"
    assert cli("init", "--data-dir", template).code == 0
    r = cli("register", "ad0", "--source", ad, "--base", fleet_base, "--family", "math", "--data-dir", template)
    assert r.code == 0, r.err
    return SimpleNamespace(root=root, calib=calib, template=template)


def _run_args(fleet, data: Path) -> list[str]:
    return [str(a) for a in ("run", "--data-dir", data, "--evaluator", "fake", "--evaluator-option",
                             f"rates={json.dumps(WINNER)}", "--evaluator-option", "n_docs=60", "--task-limit", 60,
                             "--guard-limit", 60, "--n-samples", 4, "--calib", fleet.calib)]


@pytest.fixture(scope="module")
def clean_counts(prefect_harness, fleet, tmp_path_factory):
    """Row counts after one uninterrupted run: what an interrupted run and its re-run must end with."""
    data = tmp_path_factory.mktemp("clean") / "home"
    shutil.copytree(fleet.template, data)
    r = cli(*_run_args(fleet, data))
    assert r.code == 0, r.err
    return _counts(data)


class Terminal:
    """``spectral-surgery`` in a pseudo-terminal: the child leads its own session with the pty's slave side as its
    controlling terminal, so a ^C written to the master reaches its foreground process group, as in a shell."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()

        def controlling_tty() -> None:  # runs in the child after setsid(): the slave (fd 0) becomes its terminal
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([sys.executable, "-m", "spectral_surgery.flows.cli", *argv], stdin=slave,
                                     stdout=slave,
                                     stderr=slave, cwd=REPO, env=env, start_new_session=True,
                                     preexec_fn=controlling_tty)
        os.close(slave)
        self.master, self.buf = master, bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:  # drain the master, or the child blocks once the terminal's buffer is full
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every slave side is closed (the child and whatever it started exited)
                return
            if not chunk:
                return
            self.buf.extend(chunk)

    def press_ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait(self, timeout: float) -> tuple[int, float]:
        """The exit status and the monotonic time the command exited; then the rest of its output is read (until
        every process holding the terminal, Prefect's temporary server included, has exited)."""
        try:
            code = self.proc.wait(timeout)
            return code, time.monotonic()
        finally:
            self.reader.join(10)
            os.close(self.master)

    def text(self) -> str:
        return ANSI.sub("", self.buf.decode(errors="replace")).replace("\r", "")

    def closed(self) -> bool:
        """Whether every process that held the terminal has exited (the reader saw its end)."""
        return not self.reader.is_alive()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def hold_at(self, marker: Path, stage: str) -> None:
        """Poll (up to ``REACH_S``) until the command holds at ``stage``: it wrote ``stage`` to ``marker``."""
        deadline = time.monotonic() + REACH_S
        while time.monotonic() < deadline and self.proc.poll() is None and not marker.exists():
            time.sleep(0.05)
        assert marker.exists() and marker.read_text() == stage, self.text()[-3000:]

    def stop(self, how: str) -> tuple[int, float]:
        """Stop the command with ``how`` (``SIGINT``: a ^C in the terminal; ``SIGTERM`` to its process group) and
        wait for its exit: ``(exit code, seconds from the signal to the exit)``."""
        t0 = time.monotonic()
        if how == "SIGINT":
            self.press_ctrl_c()
        else:
            os.killpg(self.proc.pid, signal.SIGTERM)
        code, ended = self.wait(EXIT_S + 20)
        return code, ended - t0

    def assert_clean_stop(self, code: int, took: float) -> None:
        """The stop was clean: exit 130, ``error: interrupted`` as the last line, within ``EXIT_S``, none of the
        noise, and no process the command started (Prefect's temporary server) outlived it."""
        out = self.text()
        lines = [t for line in out.splitlines() if (t := line.replace("^C", "").strip())]  # ^C: the terminal's echo
        assert code == 130, out[-3000:]
        assert lines[-1] == "error: interrupted", out[-3000:]
        assert took < EXIT_S, (took, out[-3000:])
        assert not [n for n in NOISE if n in out], out[-3000:]
        assert self.closed(), "a process the command started (Prefect's temporary server) outlived it"


CASES = [(stage, "SIGINT") for stage in (STARTUP, *STAGES)] + [("evaluation", "SIGTERM")]


@pytest.mark.slow  # eight runs stopped in a terminal and eight re-runs: 10 min on a 2-core machine at load 6
@pytest.mark.parametrize("stage,how", CASES, ids=[f"{s}-{h}" for s, h in CASES])
def test_interrupt_is_a_clean_stop(stage, how, clean_counts, prefect_harness, prefect_home_template, fleet, tmp_path):
    data = tmp_path / "home"
    shutil.copytree(fleet.template, data)
    marker = tmp_path / "paused"
    # the command's temporary server on a migrated database (a user's second run): the stop is what is tested here,
    # a first run's migration is tests/flows/test_prefect_home.py's
    shutil.copytree(prefect_home_template, tmp_path / "prefect")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
           "COLUMNS": "250", ENV_AT: stage, ENV_FILE: str(marker)}
    env.pop("PREFECT_API_URL", None)  # the command starts its own temporary server, as a user's shell would
    term = Terminal(_run_args(fleet, data), env)
    try:
        term.hold_at(marker, stage)
        before = _state(data)  # what production was when the signal came
        code, took = term.stop(how)
        TIMINGS[f"{stage}-{how}"] = took
    finally:
        term.kill()
    term.assert_clean_stop(code, took)
    after = _state(data)
    assert after.production == before.production and after.history == before.history  # nothing moved after ^C
    if stage == STARTUP:
        assert after.runs == [] and after.aruns == []  # stopped before the flow started: nothing was begun
    else:
        assert after.runs == [(before.runs[-1][0], "cancelled")]
        # released, not left running (at the scan no adapter run is open yet)
        assert after.aruns == ([] if stage == "scan" else [(after.runs[0][0], "failed", "Interrupted")])
    if stage == "promotion":  # the hold comes after the move: it was done whole, before the signal
        assert [k for k, _ in after.history] == ["promotion"]
    elif stage != STARTUP:
        assert after.history == []  # the gate promotes smooth_abs: the interrupt came before that move started
    again = cli(*_run_args(fleet, data))  # the re-run (in this process, on the session's Prefect server)
    assert again.code == 0, again.err
    assert _counts(data) == clean_counts  # the rest of the work done, no row twice
    final = _state(data)
    assert [s for _, s in final.runs] == ([] if stage == STARTUP else ["cancelled"]) + ["completed"]
    assert not [a for a in final.aruns if a[1] in ("pending", "running")]
    assert [k for k, _ in final.history] == ["promotion"]


def test_a_signal_only_requests_a_stop():
    """The handlers raise nothing where the signal lands (that is how a Ctrl-C got swallowed): they record the stop,
    run the callbacks once, and :func:`flows.interrupt.check` raises at the next checkpoint; Prefect's SIGTERM
    bridge is replaced again by :func:`flows.interrupt.rearm`; :func:`flows.interrupt.reset` restores everything."""
    from spectral_surgery.flows import interrupt

    called: list[int] = []
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        assert interrupt.install()
        interrupt.on_request(lambda: called.append(1))
        interrupt.check()  # nothing requested: returns
        signal.signal(signal.SIGTERM, lambda *a: None)  # what Prefect's engine does for a flow run
        interrupt.rearm()
        os.kill(os.getpid(), signal.SIGINT)  # handled in this (the main) thread before kill() returns to Python
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.requested() and called == [1] and interrupt.signal_name() == "SIGINT"
        with pytest.raises(interrupt.Interrupted, match="SIGINT"):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):  # what the `except Exception` of one adapter's failure lets through
            interrupt.wait(5)
    finally:
        interrupt.reset()
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == old
    assert not interrupt.requested()


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_demo_interrupt_is_a_clean_stop(how, tmp_path):
    """``demo`` stops as ``run`` does (issue 25): held at its start-up (after the slow imports, before the bundled
    model, the fleet and the nightly flow), a ^C or SIGTERM ends it within seconds with exit 130, ``error:
    interrupted`` as its last line, no traceback, and nothing begun in its registry."""
    data = tmp_path / "home"
    marker = tmp_path / "paused"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "WARNING",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "250", ENV_AT: STARTUP, ENV_FILE: str(marker)}
    env.pop("PREFECT_API_URL", None)
    term = Terminal(["demo", "--budget", "smallest", "--data-dir", str(data)], env)
    try:
        term.hold_at(marker, STARTUP)
        code, took = term.stop(how)
        TIMINGS[f"demo-{STARTUP}-{how}"] = took
    finally:
        term.kill()
    term.assert_clean_stop(code, took)
    assert not (data / "registry.db").exists()  # stopped before the registry, the model and the flow
