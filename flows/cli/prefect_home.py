"""One Prefect database per temporary server: concurrent ``run``/``demo`` processes never share (and migrate) one.

Without ``PREFECT_API_URL`` each ``spectral-surgery run`` starts Prefect's temporary (ephemeral) server, whose
SQLite database is ``$PREFECT_HOME/prefect.db``. Two runs started together on a fresh Prefect home then both
migrate that file, and one can die with ``duplicate column name`` (measured in issue 13). So the first process
holds an exclusive lock on ``$PREFECT_HOME/spectral-surgery-server.lock`` for its lifetime and uses the usual
database (its flow runs stay in Prefect's history); a process that finds the lock taken gets a private database
in a temporary directory, removed when it exits. A directory left by a killed process is removed by the next
run that starts (its name carries the owner's pid).

:func:`detach_temporary_server` starts that server in a session of its own: a terminal's Ctrl-C (SIGINT to the
foreground process group) or a SIGTERM to the group then reaches the command, not the server, which stays up while
the command closes its run and is stopped by it on the way out (no "Unable to connect" reconnect storm).
Detached, it also outlives a command killed outright (SIGKILL runs no exit hook): each detached server is recorded
in ``$PREFECT_HOME/spectral-surgery-servers/<pid>.json`` with its owner, and the next command that starts one
stops those whose owner is gone (:func:`sweep_stale_servers`).

Nothing changes when the user chose a server (``PREFECT_API_URL``) or a database
(``PREFECT_SERVER_DATABASE_CONNECTION_URL`` / ``PREFECT_API_DATABASE_CONNECTION_URL``). This must run before
Prefect is imported: its settings are read from the environment at import.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path

LOCK_NAME = "spectral-surgery-server.lock"
PRIVATE_PREFIX = "ss-prefect-"
DB_VARS = ("PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL")
_held: list[int] = []  # the lock's file descriptor, open for the life of the process


def prefect_home(env: MutableMapping[str, str]) -> Path:
    """``$PREFECT_HOME`` or Prefect's default ``~/.prefect``."""
    return Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(tmp_root: Path) -> list[Path]:
    """Remove private database directories whose owner process is gone; returns what was removed."""
    removed = []
    for d in tmp_root.glob(PRIVATE_PREFIX + "*"):
        pid = d.name.removeprefix(PRIVATE_PREFIX).split("-", 1)[0]
        if d.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def local_defaults(env: MutableMapping[str, str] | None = None) -> None:
    """The settings a run of the product on one machine needs, unless the user chose otherwise (CLI, benchmarks).

    ``run`` and ``demo`` start an ephemeral Prefect server when no ``PREFECT_API_URL`` is set; Prefect waits 20 s
    for it, which a busy 2-core machine overruns (measured in CI), so the wait is 180 s. The machine may be
    offline (the product needs no network): no telemetry from Prefect's local server, and no tokenizer threads
    forked into the data loaders.
    """
    env = os.environ if env is None else env
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def isolate_temporary_server(env: MutableMapping[str, str] | None = None, *,
                             tmp_root: Path | None = None) -> str | None:
    """Give this process a private Prefect database when another run's temporary server holds the shared one.

    Args:
        env: The environment to read and update (default ``os.environ``).
        tmp_root: Where private databases go (default the system temp directory).

    Returns:
        The private database URL set in ``env``, or None (a server or database was chosen, or this process
        holds the shared database's lock).
    """
    env = os.environ if env is None else env
    if env.get("PREFECT_API_URL") or any(env.get(v) for v in DB_VARS) or _held:
        return None
    tmp_root = Path(tmp_root or tempfile.gettempdir())
    remove_stale(tmp_root)
    home = prefect_home(env)
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(home / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None  # an unwritable home: Prefect reports that itself
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
    else:
        _held.append(fd)
        return None
    private = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_PREFIX}{os.getpid()}-", dir=tmp_root))
    atexit.register(shutil.rmtree, private, True)
    url = f"sqlite+aiosqlite:///{private / 'prefect.db'}"
    env[DB_VARS[0]] = url
    return url


def release() -> None:
    """Drop the shared database's lock (tests; a process releases it when it exits)."""
    while _held:
        os.close(_held.pop())


_server_output: list[Path] = []  # the run's log file (flows/cli/runlog.py): where the server's stdout/stderr go


def send_server_output_to(path: Path | None) -> None:
    """Append the output of the temporary server started from now on to ``path`` (None: inherit the terminal).

    The server prints its own shutdown tracebacks (``task_run_recorder ... CancelledError`` when the command ends
    it) straight to the inherited stderr, past any logging filter of this process.
    """
    _server_output[:] = [Path(path)] if path is not None else []


SERVERS_DIR = "spectral-surgery-servers"  # under the Prefect home: one pid file per detached server


def _stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` from field 3 (state) on; None where there is no /proc or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # the fields after the command name, which may hold spaces


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22): a pid reused by another process has another
    one. None where there is no /proc or no such process."""
    stat = _stat(pid)
    return stat[19] if stat else None


def _same_process(pid: int, started: str | None) -> bool:
    """``pid`` runs (a zombie does not: an orphan's may wait for a container's init to reap it) and is the process
    recorded as started at ``started``."""
    stat = _stat(pid)
    if stat is not None:
        return stat[0] != "Z" and (started is None or stat[19] == started)
    return _alive(pid)


def record_server(proc: subprocess.Popen, home: Path, owner: int | None = None) -> Path | None:
    """Write ``home/spectral-surgery-servers/<pid>.json``: the detached server and the process that owns it, so that
    the next start stops a server whose owner was killed outright (SIGKILL runs no exit hook). None: unwritable."""
    owner = os.getpid() if owner is None else owner
    folder = home / SERVERS_DIR
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{proc.pid}.json"
        path.write_text(json.dumps({"pid": proc.pid, "started": _start_time(proc.pid), "owner": owner,
                                    "owner_started": _start_time(owner)}))
    except OSError:
        return None
    return path


def sweep_stale_servers(home: Path, timeout_s: float = 3.0) -> list[int]:
    """Stop every detached temporary server recorded under ``home`` whose owner is gone; returns their pids.

    A server whose owner lives is left alone (another run's); a record whose server is gone is removed. The pid and
    start time must both match the record, so a pid reused by an unrelated process is never signalled.
    """
    stopped = []
    for path in sorted((home / SERVERS_DIR).glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            pid, owner = int(rec["pid"]), int(rec["owner"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if owner != os.getpid() and _same_process(owner, rec.get("owner_started")):
            continue  # its owner still runs: its server is in use
        if _same_process(pid, rec.get("started")):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)  # its own session and group: uvicorn and anything it spawned
            deadline = time.monotonic() + timeout_s
            while _same_process(pid, rec.get("started")) and time.monotonic() < deadline:
                _reap(pid)
                time.sleep(0.05)
            if _same_process(pid, rec.get("started")):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            _reap(pid)
            stopped.append(pid)
        path.unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is this process's child (a zombie still answers ``kill(pid, 0)``)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


class _DetachedPopen(subprocess.Popen):
    """``subprocess.Popen`` in a new session (so out of the terminal's process group), remembered for :func:`stop`
    and recorded under the Prefect home for :func:`sweep_stale_servers`; its output goes to the run's log file when
    there is one (:func:`send_server_output_to`)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["start_new_session"] = True
        out = None
        if _server_output and kwargs.get("stdout") is None and kwargs.get("stderr") is None:
            out = open(_server_output[0], "ab")  # noqa: SIM115 - the child holds it; closed here after the start
            kwargs["stdout"], kwargs["stderr"] = out, subprocess.STDOUT
        try:
            super().__init__(*args, **kwargs)
        finally:
            if out is not None:
                out.close()
        _servers.append(self)
        self.record = record_server(self, prefect_home(os.environ))


class _DetachedSubprocess:
    """The ``subprocess`` module as Prefect's server module sees it: the same, except that ``Popen`` detaches."""

    Popen = _DetachedPopen

    def __getattr__(self, name: str):
        return getattr(subprocess, name)


_servers: list[subprocess.Popen] = []


def detach_temporary_server(env: MutableMapping[str, str] | None = None) -> bool:
    """Make Prefect start its temporary server (when this process starts one) in a session of its own.

    A terminal sends Ctrl-C to every process of its foreground group: the server died with the command, and the
    command's Prefect client then spent minutes reconnecting to it ("Unable to connect to ws://127.0.0.1:…",
    ``ConnectError``) instead of closing its run. Detached, the server receives no signal of the terminal; it
    is stopped when the command exits (Prefect's own exit hook, or :func:`stop_temporary_server`).

    Prefect's ``SubprocessASGIServer`` starts the server with ``subprocess.Popen`` and has no option for this, so
    its module's ``subprocess`` is swapped for :class:`_DetachedSubprocess` (the module is imported by Prefect
    anyway when it starts the server).

    Returns:
        False when ``PREFECT_API_URL`` names a server (nothing to start, nothing changed).
    """
    env = os.environ if env is None else env
    if env.get("PREFECT_API_URL"):
        return False
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:  # a server chosen in Prefect's settings (a profile, a test harness)
        return False
    sweep_stale_servers(prefect_home(env))  # servers left by runs killed outright (SIGKILL runs no exit hook)
    from prefect.server.api import server

    server.subprocess = _DetachedSubprocess()
    return True


def stop_temporary_server(timeout_s: float = 3.0) -> None:
    """Stop the temporary server(s) this process started detached (SIGTERM, then SIGKILL after ``timeout_s``)."""
    while _servers:
        proc = _servers.pop()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if getattr(proc, "record", None) is not None:
            proc.record.unlink(missing_ok=True)
