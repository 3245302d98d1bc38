"""Run untrusted, model-generated Python (HumanEval completions + their unit tests) in a sandbox.

Threat model: the program is hostile. It may use anything Python offers (``ctypes``, ``posix``, ``io.FileIO``,
``_socket``, raw syscalls) to write or delete the evaluator's files, read its secrets (``HF_TOKEN`` in the
environment, ``/proc/<ppid>/environ``, files in its temp dir or home), signal or outlive it (``setsid`` daemons),
reach the network, or exhaust memory, CPU, processes or disk. Scoring is not defended: a program that fakes
its own success only corrupts its own pass@1; ending its process early with status 0 (``posix._exit(0)`` before
the tests run) is a failure, since only the runner, after the whole program, exits with ``EXIT_OK`` (86).

Two backends, chosen by :func:`resolve_backend` (argument, then the run config's ``sandbox`` via
:func:`using_backend`, then ``$SPECTRAL_SURGERY_SANDBOX``, then ``bwrap``):

* ``bwrap`` (default): an OS boundary from bubblewrap, see :mod:`tasks.evaluation.sandbox_bwrap` for the flags. New PID,
  network, IPC, UTS, cgroup namespaces (no network at all; the evaluator's processes are invisible, so neither
  their ``/proc/*/environ`` nor a signal reaches them); a read-only view of ``/usr``, ``/lib*`` and the Python
  installation only; a private size-limited tmpfs as the only writable place; an empty environment plus a few
  fixed variables; uid/gid 65534 without capabilities (as root: a real uid drop, so ``RLIMIT_NPROC`` holds);
  ``RLIMIT_AS``/``CPU``/``FSIZE``/``NPROC``/``CORE`` set inside; at the wall-clock timeout the process group is
  killed, which kills the PID namespace's init and with it every process in the namespace (a ``setsid`` child
  cannot outlive the run; it dies as soon as the program's main process exits, too).
* ``python-guard`` (opt-in fallback, logged as a warning): the Python prelude of :mod:`tasks.evaluation.sandbox_guard`,
  rlimits, ``unshare --net`` when it works and a process-group kill. It stops accidents, not hostile code.

What holds is tested case by case in ``tests/tasks/evaluation/test_sandbox_hostile.py`` (issue 13's 17 hostile cases,
each against a real target in the evaluator's world; the table is in docs/sandbox.md): under ``bwrap`` all of them,
under ``python-guard`` only the environment, network namespace, memory, CPU, single-file size and the plain
``open``/``os.remove`` cases.

Without a working bubblewrap, :func:`run_code` raises :class:`SandboxUnavailable` (saying how to install it or
opt in) rather than run code unconfined. Both backends run the prelude, so plausible mistakes (writing outside
the work dir, ``subprocess``, ``socket.connect``) show up as a ``PermissionError``; what the prelude misses, the
kernel stops (``OSError`` of some kind). Either way it is an ordinary failed test case (status ``"failed"``),
never a crash of the evaluator. The program's stdout is discarded and its stderr goes to a file bounded by
``RLIMIT_FSIZE``, so its output cannot fill the evaluator's memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from spectral_surgery.tasks.evaluation.sandbox_bwrap import ENV, WORKDIR, bwrap_command, missing_tools
from spectral_surgery.tasks.evaluation.sandbox_guard import (
    EXIT_OK,
    EXIT_SYNTAX,
    guard_command,
    guard_limits,
    runner_source,
    unshare_prefix,
)

Status = Literal["passed", "failed", "timeout", "error"]
Backend = Literal["bwrap", "python-guard"]
BACKENDS: tuple[str, ...] = ("bwrap", "python-guard")
ENV_SANDBOX = "SPECTRAL_SURGERY_SANDBOX"
_DETAIL_CHARS = 2000
_CHOICE: contextvars.ContextVar[str | None] = contextvars.ContextVar("sandbox_backend", default=None)
log = logging.getLogger(__name__)


class SandboxUnavailable(RuntimeError):
    """The chosen sandbox cannot run on this machine; the message says how to fix it."""


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    Attributes:
        passed: True iff the program ran to completion (all asserts held) within the limits.
        status: ``passed``; ``failed`` (an exception such as a failed assert or a blocked operation, or
            an early ``exit()``); ``timeout`` (wall clock or CPU limit hit, everything killed);
            ``error`` (the program does not compile, was killed by a signal, or the sandbox could not start).
        detail: Human-readable reason: the tail of stderr, or what killed it.
    """

    passed: bool
    status: Status
    detail: str


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why the ``bwrap`` backend cannot run here (None when it works: a trivial program ran and passed in it)."""
    missing = missing_tools()
    if missing:
        return f"{', '.join(missing)} not found on PATH"
    res = _run_bwrap("pass\n", timeout_s=30, memory_mb=512, fsize_mb=1)
    return None if res.passed else f"bubblewrap failed to run a trivial program ({res.status}: {res.detail})"


@functools.lru_cache(maxsize=1)
def _warn_guard() -> None:
    log.warning("code sandbox: running generated code under the Python-level guard (python-guard), which hostile "
                "code can undo (ctypes, posix, io.FileIO); install bubblewrap for an OS boundary")


def chosen_backend(choice: str | None = None) -> Backend:
    """The backend :func:`resolve_backend` would use, by the same order (``choice``, :func:`using_backend`,
    ``$SPECTRAL_SURGERY_SANDBOX``, ``bwrap``), without checking that it works here: what a result is keyed by.

    Raises:
        ValueError: An unknown backend name.
    """
    name = choice if choice is not None else _CHOICE.get()
    name = (name if name is not None else os.environ.get(ENV_SANDBOX) or "bwrap").strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown code sandbox {name!r}; choose one of: {', '.join(BACKENDS)} (the run config's "
                         f"sandbox, or ${ENV_SANDBOX})")
    return name  # type: ignore[return-value]


def resolve_backend(choice: str | None = None) -> Backend:
    """The sandbox backend to use, checked to work here.

    Args:
        choice: ``bwrap`` or ``python-guard``; None = the one set by :func:`using_backend`, else
            ``$SPECTRAL_SURGERY_SANDBOX``, else ``bwrap``.

    Raises:
        ValueError: An unknown backend name.
        SandboxUnavailable: ``bwrap`` chosen but bubblewrap does not work here.
    """
    source = "argument"
    if choice is None:
        choice, source = _CHOICE.get(), "run config 'sandbox'"
    if choice is None:
        choice, source = os.environ.get(ENV_SANDBOX) or None, f"${ENV_SANDBOX}"
    if choice is None:
        choice, source = "bwrap", "default"
    name = choice.strip().lower()
    if name not in BACKENDS:
        raise ValueError(f"unknown code sandbox {choice!r} (from {source}); choose one of: {', '.join(BACKENDS)}")
    if name == "bwrap":
        problem = bwrap_problem()
        if problem:
            raise SandboxUnavailable(
                f"code benchmarks run generated code only inside bubblewrap, which does not work here: {problem}. "
                "Install it (Debian/Ubuntu: apt-get install bubblewrap; it needs unprivileged user namespaces, or "
                f"root), or accept that hostile code can escape and opt into the Python-level guard: "
                f"sandbox: python-guard in the run config, or {ENV_SANDBOX}=python-guard."
            )
        return "bwrap"
    _warn_guard()
    return "python-guard"


@contextlib.contextmanager
def using_backend(choice: str | None) -> Iterator[None]:
    """Within the block (this thread / context), :func:`run_code` uses ``choice`` unless told otherwise.

    None leaves the choice to ``$SPECTRAL_SURGERY_SANDBOX`` and the default.
    """
    token = _CHOICE.set(choice)
    try:
        yield
    finally:
        _CHOICE.reset(token)


def network_isolation() -> str:
    """How network access is blocked here: ``"bwrap"``, ``"netns+prelude"`` (python-guard) or ``"prelude"``."""
    if bwrap_problem() is None:
        return "bwrap"
    return "netns+prelude" if unshare_prefix() else "prelude"


def run_code(program: str, *, timeout_s: float = 10, memory_mb: int = 512, fsize_mb: int = 16,
             backend: str | None = None) -> SandboxResult:
    """Execute ``program`` in the sandbox and report whether it completed.

    Args:
        program: Python source, e.g. HumanEval ``prompt + completion + test + "check(entry_point)"``.
        timeout_s: Wall-clock limit in seconds; the CPU limit is ``ceil(timeout_s)``.
        memory_mb: Address-space limit (``RLIMIT_AS``) in MiB.
        fsize_mb: Largest file the program may write (``RLIMIT_FSIZE``) in MiB.
        backend: ``bwrap`` or ``python-guard``; None = :func:`resolve_backend`'s choice.

    Returns:
        A :class:`SandboxResult`; ``passed`` only for a normal, complete run.

    Raises:
        ValueError: A non-positive limit or an unknown backend.
        SandboxUnavailable: No usable sandbox (bubblewrap missing and python-guard not opted into).
    """
    if timeout_s <= 0 or memory_mb <= 0 or fsize_mb <= 0:
        raise ValueError(f"run_code: limits must be positive (timeout_s={timeout_s}, memory_mb={memory_mb})")
    if resolve_backend(backend) == "bwrap":
        return _run_bwrap(program, timeout_s=timeout_s, memory_mb=memory_mb, fsize_mb=fsize_mb)
    return _run_guard(program, timeout_s=timeout_s, memory_mb=memory_mb, fsize_mb=fsize_mb)


def _run_bwrap(program: str, *, timeout_s: float, memory_mb: int, fsize_mb: int) -> SandboxResult:
    cpu_s = max(1, math.ceil(timeout_s))
    with tempfile.TemporaryFile() as runner, tempfile.TemporaryFile() as prog:
        for f, text in ((runner, runner_source(WORKDIR)), (prog, program)):
            f.write(text.encode("utf-8"))
            f.flush()
            f.seek(0)
        cmd = bwrap_command(runner.fileno(), prog.fileno(), memory_mb=memory_mb, cpu_s=cpu_s, fsize_mb=fsize_mb)
        return _supervise(cmd, timeout_s, bwrap=True, popen_kw={"pass_fds": (runner.fileno(), prog.fileno())})


def _run_guard(program: str, *, timeout_s: float, memory_mb: int, fsize_mb: int) -> SandboxResult:
    cpu_s = max(1, math.ceil(timeout_s))
    with tempfile.TemporaryDirectory(prefix="ss-sandbox-") as tmp:
        Path(tmp, "program.py").write_text(program, encoding="utf-8")
        Path(tmp, "_runner.py").write_text(runner_source(tmp), encoding="utf-8")
        env = {**ENV, "HOME": tmp, "TMPDIR": tmp}
        return _supervise(guard_command("_runner.py"), timeout_s, bwrap=False,
                          popen_kw={"cwd": tmp, "env": env, "preexec_fn": guard_limits(memory_mb, cpu_s, fsize_mb)})


def _supervise(cmd: list[str], timeout_s: float, *, bwrap: bool, popen_kw: dict) -> SandboxResult:
    """Start ``cmd`` in its own session, wait up to ``timeout_s``, kill its process group, classify."""
    popen_kw.setdefault("env", dict(ENV))
    with tempfile.TemporaryFile() as err:  # a file: RLIMIT_FSIZE bounds what the program can write to it
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True, **popen_kw)  # own group: the timeout kills it all
        except OSError as e:
            return SandboxResult(False, "error", f"sandbox could not start: {e}")
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.wait()
            tail = _tail(err)
            return SandboxResult(False, "timeout", f"killed after {timeout_s:g}s wall clock" + (f". {tail}" if tail
                                                                                               else ""))
        finally:
            _kill_group(proc)  # reap any straggler left in the group
        return _classify(rc, _tail(err), bwrap=bwrap)


def _tail(f: IO[bytes]) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 4 * _DETAIL_CHARS))
    return f.read().decode("utf-8", errors="replace").strip()[-_DETAIL_CHARS:]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(rc: int, detail: str, *, bwrap: bool) -> SandboxResult:
    if bwrap:
        if rc > 128 and rc - 128 in {int(s) for s in signal.Signals}:
            rc = -(rc - 128)  # bubblewrap exits 128+N when the program died of signal N
        elif detail.startswith(("bwrap:", "setpriv:", "prlimit:")):
            return SandboxResult(False, "error", f"sandbox could not start: {detail}")
    if rc == EXIT_OK:
        return SandboxResult(True, "passed", detail)
    if rc == EXIT_SYNTAX:
        return SandboxResult(False, "error", detail or "program does not compile")
    if rc < 0:
        signum = -rc
        name = signal.Signals(signum).name if signum in {int(x) for x in signal.Signals} else str(signum)
        if signum == signal.SIGXCPU:  # RLIMIT_CPU's soft signal: the program used up its CPU seconds
            return SandboxResult(False, "timeout", "killed by SIGXCPU (CPU time limit)")
        return SandboxResult(False, "error", f"killed by {name}. {detail}".strip())
    if rc == 0:
        return SandboxResult(False, "failed", detail or "the program ended its process (exit status 0) before "
                             "its tests finished")
    return SandboxResult(False, "failed", detail or f"exit code {rc}")
