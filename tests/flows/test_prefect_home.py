"""flows/cli/prefect_home.py: concurrent runs never share (and migrate) one temporary Prefect server database."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spectral_surgery.flows.cli import prefect_home as ph
from tests.flows.cli_support import cli

REPO = Path(__file__).resolve().parents[2]
HOLD = textwrap.dedent("""
    import sys, time
    from spectral_surgery.flows.cli.prefect_home import isolate_temporary_server
    env = {"PREFECT_HOME": sys.argv[1]}
    print(isolate_temporary_server(env), flush=True)
    time.sleep(60)
""")


@pytest.fixture(autouse=True)
def _released():
    ph.release()
    yield
    ph.release()


def _holder(home: Path) -> subprocess.Popen:
    """Another process that takes the shared database's lock (and prints None: it holds it)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(home)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert p.stdout.readline().strip() == "None"
    return p


def test_a_chosen_server_or_database_is_left_alone(tmp_path):
    for env in ({"PREFECT_API_URL": "http://127.0.0.1:4200/api"},
                {"PREFECT_SERVER_DATABASE_CONNECTION_URL": "postgresql+asyncpg://x/y"},
                {"PREFECT_API_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:///x.db"}):
        before = dict(env, PREFECT_HOME=str(tmp_path / "home"))
        env = dict(before)
        assert ph.isolate_temporary_server(env, tmp_root=tmp_path) is None
        assert env == before and not (tmp_path / "home").exists()


def test_the_first_run_holds_the_shared_database_and_a_second_gets_a_private_one(tmp_path):
    home = tmp_path / "home"
    env = {"PREFECT_HOME": str(home)}
    assert ph.isolate_temporary_server(env, tmp_root=tmp_path) is None  # alone: Prefect's usual prefect.db
    assert (home / ph.LOCK_NAME).is_file() and set(env) == {"PREFECT_HOME"}
    ph.release()
    holder = _holder(home)
    try:
        url = ph.isolate_temporary_server(env, tmp_root=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert url is not None and env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == url
    private = Path(url.removeprefix("sqlite+aiosqlite:///")).parent
    assert private.is_dir() and private.parent == tmp_path
    assert private.name.startswith(f"{ph.PRIVATE_PREFIX}{os.getpid()}-")
    # the holder is gone: the next run holds the shared database again
    env = {"PREFECT_HOME": str(home)}
    assert ph.isolate_temporary_server(env, tmp_root=tmp_path) is None


def test_a_killed_runs_private_database_is_removed_by_the_next_run(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{ph.PRIVATE_PREFIX}{dead.pid}-abc"
    (stale / "sub").mkdir(parents=True)
    mine = tmp_path / f"{ph.PRIVATE_PREFIX}{os.getpid()}-def"
    mine.mkdir()
    assert ph.remove_stale(tmp_path) == [stale]
    assert not stale.exists() and mine.is_dir()


@pytest.mark.slow
def test_two_runs_started_together_on_a_fresh_prefect_home_both_succeed(tmp_path, make_fleet, fleet_base):
    """Two real ``spectral-surgery run`` processes, each with its own temporary Prefect server, on one fresh
    Prefect home: both exit 0, one says it used a private database, and no private database is left. The registry
    holds one adapter, so that both runs find work and start their server (a night without work starts none)."""
    data, tmp = tmp_path / "data", tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL" and k not in ph.DB_VARS}
    env.update(HF_HUB_OFFLINE="1", PREFECT_HOME=str(tmp_path / "prefect"), TMPDIR=str(tmp),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "spectral_surgery.flows.cli"]
    assert cli("init", "--data-dir", data).code == 0  # in this process: the two runs are what is under test
    dirs, calib = make_fleet(1, tmp_path / "fleet")
    assert cli("register", "ad0", "--source", dirs[0], "--base", fleet_base, "--family", "math", "--calib", calib,
               "--data-dir", data).code == 0
    small = ["--task-limit", "10", "--guard-limit", "5", "--n-samples", "4", "--policy", "smooth_abs"]
    runs = [subprocess.Popen([*cmd, "run", "--evaluator", "fake", *small, "--data-dir", data], env=env, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    out = [p.communicate(timeout=600) for p in runs]
    for p, (_, err) in zip(runs, out, strict=True):
        assert p.returncode == 0, err[-3000:]
    said = ["private Prefect database" in err for _, err in out]
    assert sorted(said) == [False, True]
    assert (tmp_path / "prefect" / "prefect.db").is_file()  # the first run's, in Prefect's usual place
    assert not list(tmp.glob(ph.PRIVATE_PREFIX + "*"))


def test_local_defaults_fill_only_what_the_user_left_unset():
    env = {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "30"}
    ph.local_defaults(env)
    assert env == {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "30",  # the user's own wait is kept
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}
    ph.local_defaults(env := {})
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "180"


def test_the_temporary_server_starts_detached_and_is_stopped_by_the_command(monkeypatch):
    """Prefect's server module spawns through :class:`prefect_home._DetachedSubprocess`: a session of its own (a
    terminal's ^C to the command's process group never reaches it), and :func:`stop_temporary_server` ends it."""
    from prefect.server.api import server
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    monkeypatch.setattr(server, "subprocess", server.subprocess)  # restored after the test
    assert ph.detach_temporary_server({"PREFECT_API_URL": "http://127.0.0.1:1/api"}) is False
    assert server.subprocess is subprocess  # a chosen server: nothing changed
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # no server chosen (even under a test harness)
        assert get_current_settings().api.url is None
        assert ph.detach_temporary_server({}) is True
    proc = server.subprocess.Popen([sys.executable, "-c", "import os, time; print(os.getsid(0), flush=True); "
                                    "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert int(proc.stdout.readline()) == proc.pid != os.getsid(0)  # its own session, led by itself
    assert server.subprocess.TimeoutExpired is subprocess.TimeoutExpired  # the rest of the module is untouched
    ph.stop_temporary_server()
    proc.stdout.close()
    assert proc.poll() is not None and ph._servers == []


OWNER = textwrap.dedent("""
    import os, sys, time
    os.environ["PREFECT_HOME"] = sys.argv[1]
    from spectral_surgery.flows.cli.prefect_home import _DetachedPopen
    server = _DetachedPopen([sys.executable, "-c", "import time; time.sleep(300)"])
    print(server.pid, flush=True)
    time.sleep(300)
""")


def test_a_server_left_by_a_sigkilled_run_is_stopped_by_the_next_start(tmp_path):
    """A real owner process starts a detached "server" and is SIGKILLed (no exit hook runs): the server survives it
    (its own session), is left alone while its owner lives, and is stopped by the next sweep."""
    import signal
    import time

    home = tmp_path / "prefect"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(home)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
    server = int(owner.stdout.readline())
    try:
        assert (home / ph.SERVERS_DIR / f"{server}.json").is_file()
        assert ph.sweep_stale_servers(home) == []  # its owner runs: in use
        assert ph._same_process(server, None)
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert ph._same_process(server, None)  # the SIGKILL did not reach it: this is the leak being fixed
        assert ph.sweep_stale_servers(home) == [server]
        deadline = time.monotonic() + 5
        while ph._same_process(server, None) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not ph._same_process(server, None)
        assert not list((home / ph.SERVERS_DIR).glob("*.json"))
        assert ph.sweep_stale_servers(home) == []
    finally:
        owner.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(server, signal.SIGKILL)


def test_a_record_whose_pid_was_reused_is_never_signalled(tmp_path):
    """The record's start time must match: a live process under a recorded pid but started later is not ours."""
    me = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (home := tmp_path / "prefect" / ph.SERVERS_DIR).mkdir(parents=True)
        (home / f"{me.pid}.json").write_text(json.dumps({"pid": me.pid, "started": "1", "owner": 999999999,
                                                         "owner_started": None}))
        assert ph.sweep_stale_servers(tmp_path / "prefect") == []
        assert me.poll() is None and not list(home.glob("*.json"))
    finally:
        me.kill()
        me.wait()
