"""One local Prefect server reused by the runs on a machine, stopped by its own watchdog once idle.

Each ``spectral-surgery run`` used to start Prefect's temporary server (about 55 s on a loaded 2-core machine) and
stop it at exit. With ``$SPECTRAL_SURGERY_PREFECT_IDLE`` above zero (default :data:`DEFAULT_IDLE`) the first run
that has work starts one *shared* server under its Prefect home instead, and later runs reuse it (:func:`attach`):

- **Reuse** needs all of: the recorded server's process is the one recorded (pid and start time), it runs the same
  Prefect version, on the same database file, and its ``/api/health`` answers 200. Anything else is stopped and
  replaced. The record is ``$PREFECT_HOME/spectral-surgery-shared-server.json`` (:class:`ServerRecord`).
- **Concurrency**: a run looks for, starts or replaces the server while it holds an exclusive lock on
  ``spectral-surgery-shared-server.start.lock``, so two runs starting together start one server. The server holds
  the home's database lock (:data:`flows.cli.prefect_home.LOCK_NAME`), so a run with idle ``0`` beside it gets a
  private database, as it would beside another run; a shared server is not started while such a run holds the lock
  (this run then falls back to a private temporary server).
- **Idle stop**: the server runs under a watchdog (:func:`watch`, this file run as a script, standard library only)
  that leads the server's own session. A run using the server holds a shared lock on
  ``spectral-surgery-shared-server.users`` for its life (released by the kernel however it ends, even SIGKILL);
  the watchdog polls that lock and, once nobody has held it for the idle period, removes the record and stops the
  server, under the start lock (a run never attaches to a server being stopped). The server dies with its
  watchdog (``PR_SET_PDEATHSIG``), so no server outlives its watchdog.

``0`` keeps the behaviour without sharing: a temporary server per run, stopped at exit
(:mod:`flows.cli.prefect_home`). Nothing is shared when the user chose a server (``PREFECT_API_URL``) or a database.

Over 400 lines: the record, the locks, attach/start/replace and the watchdog are one protocol; the watchdog runs this
file as a script (standard library only), so it cannot live in a module that imports the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ENV_IDLE = "SPECTRAL_SURGERY_PREFECT_IDLE"
DEFAULT_IDLE = "15m"
RECORD = "spectral-surgery-shared-server.json"
START_LOCK = "spectral-surgery-shared-server.start.lock"
USERS_LOCK = "spectral-surgery-shared-server.users"
DB_LOCK = "spectral-surgery-server.lock"  # flows.cli.prefect_home.LOCK_NAME (this file imports nothing of the project)
LOG = "spectral-surgery-shared-server.log"
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_lease: list[int] = []  # the users lock's descriptor, held for the life of the process


def idle_seconds(env: MutableMapping[str, str] | None = None) -> float:
    """``$SPECTRAL_SURGERY_PREFECT_IDLE`` in seconds (``'15m'``, ``'900'``, ``'1h'``; ``0``: no shared server).

    Raises:
        ValueError: not a duration, naming the variable and the fix.
    """
    env = os.environ if env is None else env
    raw = (env.get(ENV_IDLE) or DEFAULT_IDLE).strip().lower()
    number, unit = raw.rstrip("smh"), raw[len(raw.rstrip("smh")):]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise ValueError(f"${ENV_IDLE} must be a duration such as 15m, 900s or 1h (0: stop Prefect's server when the "
                         f"run exits), got {raw!r}") from None
    if value < 0:
        raise ValueError(f"${ENV_IDLE} must not be negative, got {raw!r} (0: stop the server when the run exits)")
    return value


def wanted(env: MutableMapping[str, str] | None = None) -> bool:
    """Whether runs share a server here: idle above 0, and neither a server nor a database chosen by the user (nor
    by a Prefect test harness already imported in this process)."""
    env = os.environ if env is None else env
    if env.get("PREFECT_API_URL") or any(env.get(v) for v in
                                         ("PREFECT_SERVER_DATABASE_CONNECTION_URL",
                                          "PREFECT_API_DATABASE_CONNECTION_URL")):
        return False
    if "prefect.settings" in sys.modules:  # Prefect imported already: its settings are fixed (a test harness)
        from prefect.settings import get_current_settings

        if get_current_settings().api.url:
            return False
    return idle_seconds(env) > 0


@dataclass(frozen=True)
class ServerRecord:
    """A shared server as recorded under the Prefect home: what a run checks before it reuses it.

    Attributes:
        pid: The watchdog's pid (it leads the server's session and process group).
        started: The watchdog's start time in clock ticks since boot (a reused pid has another one).
        server_pid: The server's pid (uvicorn), with ``server_started`` likewise.
        url: The API URL (``http://127.0.0.1:PORT/api``).
        prefect_version: The Prefect version it runs.
        database: The database URL it serves.
        idle_s: The idle period after which it stops itself.
    """

    pid: int
    started: str | None
    server_pid: int
    server_started: str | None
    url: str
    prefect_version: str
    database: str
    idle_s: float


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _runs(pid: int, started: str | None) -> bool:
    """``pid`` runs, is no zombie, and (where /proc tells) started at ``started``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat[0] != "Z" and (started is None or stat[19] == started)


def read_record(home: Path) -> ServerRecord | None:
    """The recorded shared server (None: none, or a record that cannot be read)."""
    try:
        return ServerRecord(**json.loads((home / RECORD).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as r:  # noqa: S310 - our own local URL
            return r.status == 200
    except (OSError, ValueError):
        return False


def why_not_reused(rec: ServerRecord, version: str, database: str) -> str | None:
    """Why ``rec`` cannot serve this run (None: it can)."""
    if not _runs(rec.pid, rec.started) or not _runs(rec.server_pid, rec.server_started):
        return "its process is gone"
    if rec.prefect_version != version:
        return f"it runs Prefect {rec.prefect_version}, this run {version}"
    if rec.database != database:
        return f"it serves {rec.database}, this run needs {database}"
    if not _healthy(rec.url):
        return "its health endpoint does not answer"
    return None


def stop_recorded(rec: ServerRecord, timeout_s: float = 10.0) -> None:
    """Stop a recorded server and its watchdog (SIGTERM to the group, SIGKILL after ``timeout_s``); processes whose
    start time differs from the record are never signalled."""
    mine = [(p, s) for p, s in ((rec.pid, rec.started), (rec.server_pid, rec.server_started)) if _runs(p, s)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid, _ in mine:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s
        while any(_runs(p, s) for p, s in mine) and time.monotonic() < deadline:
            for p, _ in mine:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(p, os.WNOHANG)
            time.sleep(0.05)
        if not any(_runs(p, s) for p, s in mine):
            return


def prefect_command(port: int) -> list[str]:
    """Prefect's own temporary-server command (``SubprocessASGIServer._run_uvicorn_command``) on ``port``."""
    import importlib.util

    app_dir = Path(importlib.util.find_spec("prefect").origin).parent.parent
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(app_dir), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port), "--log-level",
            "error", "--lifespan", "on"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _locked(path: Path, mode: int = fcntl.LOCK_EX):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Attached:
    """What :func:`attach` did: the server's ``url`` and ``pid`` (its watchdog), whether it was ``reused``, and why
    a recorded server was ``replaced`` (None: none was)."""

    url: str
    pid: int
    reused: bool
    replaced: str | None = None


def attach(env: MutableMapping[str, str] | None = None, *, command: Callable[[int], Sequence[str]] = prefect_command,
           version: str | None = None, timeout_s: float = 180.0, poll_s: float = 5.0,
           check: Callable[[], None] | None = None) -> Attached | None:
    """Reuse this Prefect home's shared server, or start one, and point ``env``'s ``PREFECT_API_URL`` at it.

    Call before Prefect is imported (its settings are read at import). This process holds the server's users lock
    until it exits (:func:`detach` in tests).

    Args:
        env: The environment to read and update (default ``os.environ``).
        command: The server's command line for a port (default Prefect's temporary server).
        version: The Prefect version to require (default the installed one).
        timeout_s: How long a started server may take to answer its health endpoint.
        poll_s: How often the watchdog checks for users.
        check: Called while a started server is awaited; what it raises (a stop request) stops that server and
            propagates.

    Returns:
        What was done, or None: no sharing here (see :func:`wanted`), another process holds the database without a
        shared server (a run with idle 0), or the recorded server cannot serve this run but a live run uses it;
        the caller then starts a temporary server with a private database, as before.

    Raises:
        RuntimeError: the started server did not answer within ``timeout_s`` (the message holds its log's tail).
    """
    env = os.environ if env is None else env
    if not wanted(env):
        return None
    from importlib.metadata import version as installed

    version = version or installed("prefect")
    home = Path(env.get("PREFECT_HOME") or "~/.prefect").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    database = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    with _locked(home / START_LOCK):
        rec, replaced = read_record(home), None
        if rec is not None and (replaced := why_not_reused(rec, version, database)) is None:
            _lease_users(home)
            env["PREFECT_API_URL"] = rec.url
            return Attached(rec.url, rec.pid, reused=True)
        if rec is not None and _runs(rec.pid, rec.started) and _in_use(home):
            return None  # a live run uses it (another Prefect version, say): never pulled from under it
        if rec is not None:
            stop_recorded(rec)
            (home / RECORD).unlink(missing_ok=True)
        db = os.open(home / DB_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(db, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(db)
            return None  # a run without sharing uses the database: this one gets a private one, as before
        port = _free_port()
        idle = idle_seconds(env)
        with open(home / LOG, "wb") as log:  # the current server's output only
            proc = subprocess.Popen(
                [sys.executable, "-P", str(Path(__file__).resolve()), str(home), str(idle), str(poll_s), str(db), "--",
                 *command(port)], start_new_session=True, pass_fds=(db,), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env={**env, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                                               "PREFECT__SERVER_FINAL": "1"})
        os.close(db)  # the watchdog holds the lock now (the same open file description)
        url = f"http://127.0.0.1:{port}/api"
        server_pid = _await_server(proc, url, home, timeout_s, check)
        rec = ServerRecord(proc.pid, _start_time(proc.pid), server_pid, _start_time(server_pid), url, version,
                           database, idle)
        tmp = home / f"{RECORD}.{os.getpid()}"
        tmp.write_text(json.dumps(asdict(rec)))
        tmp.replace(home / RECORD)
        _lease_users(home)
    env["PREFECT_API_URL"] = url
    return Attached(url, proc.pid, reused=False, replaced=replaced)


def _await_server(proc: subprocess.Popen, url: str, home: Path, timeout_s: float,
                  check: Callable[[], None] | None = None) -> int:
    """Wait for the watchdog's server to answer; returns the server's pid (the watchdog's only child)."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if check is not None:
                check()
            if _healthy(url, timeout_s=1.0):
                children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
                with contextlib.suppress(OSError, ValueError):
                    return int(children.read_text().split()[0])
                return proc.pid  # no /proc: the watchdog stands for both
            time.sleep(0.1)
    except BaseException:
        _kill_group(proc)  # a stop request while it started: no server is left behind
        raise
    _kill_group(proc)
    tail = (home / LOG).read_text(errors="replace")[-2000:] if (home / LOG).exists() else ""
    raise RuntimeError(f"Prefect's shared server did not answer {url}/health within {timeout_s:.0f} s; its log "
                       f"({home / LOG}) ends:\n{tail}")


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _in_use(home: Path) -> bool:
    """Whether a run (this process included) holds the users lock."""
    fd = os.open(home / USERS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the lock if it was taken
    return False


def _lease_users(home: Path) -> None:
    if not _lease:
        fd = os.open(home / USERS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _lease.append(fd)


def detach() -> None:
    """Drop this process's hold on the shared server (tests; a process drops it when it exits)."""
    while _lease:
        os.close(_lease.pop())


def watch(home: Path, idle_s: float, poll_s: float, command: Sequence[str]) -> int:
    """The watchdog: run ``command`` (the server) and stop it once no run has held the users lock for ``idle_s``.

    Runs as this file's ``__main__`` (``python -P``: the project's modules beside it never shadow the standard
    library) in the server's own session; a SIGTERM, SIGINT or SIGHUP stops the server too.
    """
    def _stop(_sig, _frame):
        raise _Stopped  # out of any wait, a blocked flock included (a replacing run holds the start lock)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _stop)
    server = subprocess.Popen(list(command), preexec_fn=_die_with_parent)  # noqa: PLW1509 - a prctl, nothing else
    me = os.getpid()
    last_busy: float | None = None  # idle counts from the first check: the starter holds the start lock until ready
    users = os.open(home / USERS_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    with contextlib.suppress(_Stopped):
        while server.poll() is None:
            time.sleep(poll_s)
            if server.poll() is not None:
                break
            with _locked(home / START_LOCK):
                last_busy = time.monotonic() if last_busy is None else last_busy
                try:
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    last_busy = time.monotonic()  # a run holds it: in use
                    continue
                fcntl.flock(users, fcntl.LOCK_UN)
                if time.monotonic() - last_busy >= idle_s:
                    _forget(home, me)  # under the start lock: no run attaches to a server being stopped
                    break
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # stopping now: a second signal changes nothing
    _forget(home, me)
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return 0


class _Stopped(Exception):
    """The watchdog was asked to stop (SIGTERM, SIGINT, SIGHUP)."""


def _forget(home: Path, pid: int) -> None:
    rec = read_record(home)
    if rec is not None and rec.pid == pid:
        (home / RECORD).unlink(missing_ok=True)


def _die_with_parent() -> None:
    """In the server's child process: SIGTERM when the watchdog dies, however it dies (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


if __name__ == "__main__":  # the watchdog: HOME IDLE_S POLL_S DB_FD -- COMMAND...
    sep = sys.argv.index("--")
    _home, _idle, _poll, _db = sys.argv[1:sep]
    sys.exit(watch(Path(_home), float(_idle), float(_poll), sys.argv[sep + 1:]))
