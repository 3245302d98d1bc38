"""flows/cli/shared_server.py: one Prefect server reused by the runs on a machine, stopped by its watchdog when idle.

The server here is a stand-in that answers ``/api/health`` (a real HTTP server in its own process, started by the
real watchdog), as tests/flows/test_prefect_home.py stands in a sleeping process for Prefect's: the lifecycle is
what is under test, and a real Prefect server takes tens of seconds to start on a loaded machine (the CLI test in
tests/flows/test_nightly_server.py and docs/operations.md measure it with Prefect's).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spectral_surgery.flows.cli import shared_server as ss

REPO = Path(__file__).resolve().parents[2]
HEALTH = textwrap.dedent("""
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()
            self.wfile.write(b"true")
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def stand_in(port: int) -> list[str]:
    """A server that answers ``/api/health`` on ``port``."""
    return [sys.executable, "-c", HEALTH, str(port)]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh Prefect home, no server chosen; every server started here is stopped afterwards."""
    for var in ("PREFECT_API_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(ss, "wanted", lambda env: ss.idle_seconds(env) > 0)  # this process's test harness aside
    ss.detach()
    yield tmp_path / "prefect"
    ss.detach()
    if (rec := ss.read_record(tmp_path / "prefect")) is not None:
        ss.stop_recorded(rec)


def _env(home: Path, idle: str = "10m") -> dict[str, str]:
    return {"PREFECT_HOME": str(home), ss.ENV_IDLE: idle}


def _gone(rec: ss.ServerRecord, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not ss._runs(rec.pid, rec.started) and not ss._runs(rec.server_pid, rec.server_started):
            return True
        time.sleep(0.05)
    return False


def test_idle_setting_parses_units_and_rejects_nonsense():
    assert ss.idle_seconds({}) == 900.0  # 15m
    assert [ss.idle_seconds({ss.ENV_IDLE: v}) for v in ("0", "90", "30s", "2m", "1h")] == [0, 90, 30, 120, 3600]
    with pytest.raises(ValueError, match="SPECTRAL_SURGERY_PREFECT_IDLE must be a duration such as 15m"):
        ss.idle_seconds({ss.ENV_IDLE: "soon"})
    assert not ss.wanted({ss.ENV_IDLE: "0"})
    assert not ss.wanted({ss.ENV_IDLE: "5m", "PREFECT_API_URL": "http://x/api"})


def test_a_second_run_reuses_the_server_and_a_wrong_version_or_dead_one_is_replaced(home):
    env = _env(home)
    first = ss.attach(env, command=stand_in, version="3.9.1", poll_s=0.2)
    assert first is not None and not first.reused and env["PREFECT_API_URL"] == first.url
    rec = ss.read_record(home)
    assert rec is not None and (rec.pid, rec.url, rec.prefect_version) == (first.pid, first.url, "3.9.1")
    assert rec.database == f"sqlite+aiosqlite:///{home / 'prefect.db'}" and os.getsid(rec.pid) == rec.pid

    second = ss.attach(env2 := _env(home), command=stand_in, version="3.9.1")
    assert second == ss.Attached(first.url, first.pid, reused=True) and env2["PREFECT_API_URL"] == first.url

    assert ss.attach(_env(home), command=stand_in, version="4.0.0") is None  # in use by this "run": left alone
    assert ss.read_record(home) == rec and ss._runs(rec.pid, rec.started)
    ss.detach()  # that run ended: now the wrong-version server is replaced
    other = ss.attach(_env(home), command=stand_in, version="4.0.0", poll_s=0.2)
    assert not other.reused and other.pid != first.pid and other.replaced == "it runs Prefect 3.9.1, this run 4.0.0"
    assert _gone(rec)  # the old server and its watchdog were stopped, not left beside the new one

    rec = ss.read_record(home)
    os.kill(rec.pid, signal.SIGKILL)  # the watchdog killed outright: its server dies with it (PR_SET_PDEATHSIG)
    assert _gone(rec)
    third = ss.attach(_env(home), command=stand_in, version="4.0.0", poll_s=0.2)
    assert not third.reused and third.replaced == "its process is gone" and third.pid != other.pid


def test_an_idle_server_stops_itself_and_a_used_one_stays(home):
    started = ss.attach(_env(home, idle="1s"), command=stand_in, version="1", poll_s=0.1)
    rec = ss.read_record(home)
    time.sleep(1.5)  # past the idle period, but this process still holds it
    assert ss._runs(rec.pid, rec.started) and ss.read_record(home) == rec
    ss.detach()
    assert _gone(rec, within_s=5.0)
    assert ss.read_record(home) is None and started.pid == rec.pid
    fresh = ss.attach(_env(home, idle="1s"), command=stand_in, version="1", poll_s=0.1)  # and a new one starts
    assert not fresh.reused and fresh.replaced is None


ATTACH = textwrap.dedent("""
    import sys
    from tests.flows.test_shared_server import stand_in
    from spectral_surgery.flows.cli import shared_server as ss
    ss.wanted = lambda env: True
    got = ss.attach({"PREFECT_HOME": sys.argv[1], ss.ENV_IDLE: "10m"}, command=stand_in, version="1")
    print(got.pid, got.reused, flush=True)
""")


def test_two_runs_starting_together_start_one_server(home):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    procs = [subprocess.Popen([sys.executable, "-c", ATTACH, str(home)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                              env=dict(env, PYTHONPATH=str(REPO))) for _ in range(2)]
    try:
        said = sorted(p.communicate(timeout=120)[0].split() for p in procs)
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
    assert said[0][0] == said[1][0] and sorted(s[1] for s in said) == ["False", "True"]


def test_a_run_without_sharing_keeps_the_database_and_no_shared_server_starts(home):
    """A run with idle 0 holds the home's database lock (flows/cli/prefect_home.py): a sharing run beside it
    starts no server on that database and falls back to a private temporary one."""
    from spectral_surgery.flows.cli import prefect_home as ph

    ph.release()
    try:
        assert ph.isolate_temporary_server({"PREFECT_HOME": str(home)}) is None  # holds prefect.db
        assert ss.attach(_env(home), command=stand_in, version="1") is None
        assert ss.read_record(home) is None
    finally:
        ph.release()


@pytest.mark.slow  # two real `run` processes through Prefect's server
def test_a_second_run_reuses_the_first_runs_prefect_server_and_starts_faster(prefect_harness, fleet_base, tmp_path):
    """Two nights through the flow (the scan before it made to find work) on one Prefect home with sharing on: the
    first starts the server, the second reuses it (same pid and URL) and its start-up is what it saves."""
    import json
    import re

    from tests import tiny
    from tests.flows.cli_support import cli
    from tests.flows.test_prescan import _run, _work_done

    data, tmp = tmp_path / "data", tmp_path / "tmp"
    tmp.mkdir()
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    assert cli("init", "--data-dir", data).code == 0
    src = tiny.save_adapter(fleet_base, tmp_path / "ad0", seed=1)
    assert cli("register", "ad0", "--source", src, "--base", fleet_base, "--family", "math", "--calib", calib,
               "--data-dir", data).code == 0
    argv = ["run", "--evaluator", "fake", "--task-limit", 20, "--guard-limit", 20, "--n-samples", 4,
            "--policy", "smooth_abs", "--data-dir", data, "--json"]
    # the work done (in this process, on the session's Prefect server): the two nights below are alike
    assert _work_done(argv).code == 0
    home = tmp_path / "p1"
    os.environ[ss.ENV_IDLE] = "5m"  # _run passes this process's environment on
    try:
        (first, t_first), (second, t_second) = (_run(argv, home, tmp, forced=True) for _ in range(2))
    finally:
        os.environ[ss.ENV_IDLE] = "0"
        if (rec := ss.read_record(home)) is not None:
            ss.stop_recorded(rec)
    assert first.returncode == 0 and second.returncode == 0, (first.stderr[-3000:], second.stderr[-3000:])
    said = [re.search(r"Prefect server (\S+) \(pid (\d+)\) (reused|started in \d+ s)", p.stderr) for p in (first,
                                                                                                         second)]
    assert said[0] and said[1], (first.stderr[-2000:], second.stderr[-2000:])
    assert said[0].group(1, 2) == said[1].group(1, 2) and said[1].group(3) == "reused"
    assert said[0].group(3).startswith("started") and rec.url == said[0].group(1)
    assert _gone(rec)
    print(f"second run {t_second:.1f} s vs first {t_first:.1f} s (server {said[0].group(3)}): "
          f"ratio {t_second / t_first:.2f}")
    assert t_second < t_first


def test_a_stop_request_while_the_server_starts_leaves_no_server(home):
    """``run`` passes its stop check (flows.interrupt.check): a Ctrl-C during the start stops the starting server."""
    from spectral_surgery.flows import interrupt

    slow = lambda port: ["sh", "-c", 'sleep 30; exec "$0" "$@"', *stand_in(port)]  # noqa: E731
    calls = []

    def check() -> None:
        calls.append(1)
        if len(calls) > 3:
            raise interrupt.Interrupted("interrupted (SIGINT)")

    with pytest.raises(interrupt.Interrupted):
        ss.attach(_env(home), command=slow, version="1", check=check)
    assert ss.read_record(home) is None and not ss._in_use(home)
    assert not [p for p in Path("/proc").glob("[0-9]*") if f" {home} 600.0 5.0 " in _cmdline(p)]  # no watchdog


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
