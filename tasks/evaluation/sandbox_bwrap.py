"""The bubblewrap command line of :mod:`tasks.evaluation.sandbox` (the default ``bwrap`` backend).

The sandboxed program sees a new root made of read-only binds (``/usr`` and the ``/lib*``, ``/bin`` links, four
files of ``/etc``, the Python installation: ``sys.base_prefix`` and the venv ``sys.prefix``), a fresh ``/proc`` of
its own PID namespace, a minimal ``/dev`` and one writable place, a size-limited tmpfs on ``/tmp`` that is its
working directory (the runner and the program are copied in from file descriptors; nothing of the evaluator's
disk is writable or even visible outside those binds). It runs in new PID, network, IPC, UTS and cgroup
namespaces, in a new session, with an empty environment plus a few fixed variables, no capabilities, as uid/gid
65534, and dies with its parent.

The uid is changed differently as root and as an ordinary user, because of how the kernel counts processes:

* as an ordinary user, bubblewrap creates a user namespace mapping the caller to 65534 inside
  (``--unshare-user --uid 65534``); ``RLIMIT_NPROC`` then counts the sandbox's own processes only;
* as root, a user namespace would still map the program to the evaluator's kernel uid 0, for which the kernel
  ignores ``RLIMIT_NPROC`` and which owns the evaluator's files. So as root bubblewrap runs privileged (no user
  namespace) and ``setpriv`` drops the program to the real uid/gid 65534, no supplementary groups, empty
  capability sets and bounding set, ``no_new_privs``; ``RLIMIT_NPROC`` then counts every process of uid 65534 on
  the machine (run at most :data:`NPROC` sandboxes at once).

The rlimits (``RLIMIT_AS``, ``RLIMIT_CPU``, ``RLIMIT_FSIZE``, ``RLIMIT_NPROC``, ``RLIMIT_CORE`` = 0) are set by
``prlimit`` inside the sandbox, right before ``exec`` of the interpreter, so bubblewrap itself is not limited.
"""

from __future__ import annotations

import os
import shutil
import sys

SANDBOX_UID = 65534  # nobody / nogroup
NPROC = 16  # processes and threads the program may have at once (RLIMIT_NPROC)
WORKDIR = "/tmp"  # the sandbox's only writable directory, a tmpfs
ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": WORKDIR,
    "TMPDIR": WORKDIR,
    "LANG": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    # Numeric libraries start thread pools on import; one thread keeps them inside RLIMIT_NPROC.
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")


def missing_tools() -> list[str]:
    """The programs this backend needs that are not on ``PATH`` (``bwrap``, ``prlimit``, as root ``setpriv``)."""
    need = ["bwrap", "prlimit"] + (["setpriv"] if os.geteuid() == 0 else [])
    return [t for t in need if shutil.which(t) is None]


def _python_dirs() -> list[str]:
    """The Python installation to bind read-only: base prefix and venv prefix, outside the system dirs."""
    out: list[str] = []
    for p in sorted({sys.base_prefix, sys.prefix, os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)},
                    key=len):
        covered = any(p == d or p.startswith(d + "/") for d in (*_SYSTEM_DIRS, *out))
        if os.path.isdir(p) and not covered:
            out.append(p)
    return out


def _parents(path: str, made: set[str]) -> list[str]:
    """``--dir`` arguments creating the missing ancestors of ``path`` world-readable (bwrap's default is 0700)."""
    args: list[str] = []
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        if d not in made:
            made.add(d)
            args += ["--perms", "0755", "--dir", d]
    return args


def bwrap_command(runner_fd: int, program_fd: int, *, memory_mb: int, cpu_s: int, fsize_mb: int) -> list[str]:
    """The full command line: bubblewrap, the uid drop (as root), ``prlimit``, then the interpreter.

    Args:
        runner_fd: Open descriptor of the runner script (prelude), copied to ``/tmp/_runner.py``.
        program_fd: Open descriptor of the program, copied to ``/tmp/program.py``.
        memory_mb: ``RLIMIT_AS`` in MiB.
        cpu_s: ``RLIMIT_CPU`` soft limit in seconds (hard = soft + 1).
        fsize_mb: ``RLIMIT_FSIZE`` in MiB; the tmpfs holds four times that.

    Returns:
        The argv; pass both descriptors with ``pass_fds``.
    """
    root = os.geteuid() == 0
    cmd = [shutil.which("bwrap") or "bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
           "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--clearenv"]
    if not root:
        cmd += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    for k, v in ENV.items():
        cmd += ["--setenv", k, v]
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            cmd += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
    mib = 1024 * 1024
    # the tmpfs first: a Python installation under /tmp (a CI venv) is then bound read-only on top of it
    cmd += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(4 * fsize_mb * mib), "--tmpfs",
            WORKDIR]
    made: set[str] = {WORKDIR}
    for f in _ETC_FILES:
        if os.path.exists(f):
            cmd += [*_parents(f, made), "--ro-bind", f, f]
    for d in _python_dirs():
        cmd += [*_parents(d, made), "--ro-bind", d, d]
    cmd += ["--file", str(runner_fd), f"{WORKDIR}/_runner.py", "--file", str(program_fd), f"{WORKDIR}/program.py",
            "--chdir", WORKDIR]
    if root:
        # bubblewrap drops every capability of the child unless told; setpriv needs these two for the drop.
        cmd += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--",
                shutil.which("setpriv") or "setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}",
                "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    mem, fs = memory_mb * mib, fsize_mb * mib
    cmd += ["--", shutil.which("prlimit") or "prlimit", f"--as={mem}:{mem}", f"--cpu={cpu_s}:{cpu_s + 1}",
            f"--fsize={fs}:{fs}", f"--nproc={NPROC}:{NPROC}", "--core=0:0",
            "--", sys.executable, "-I", "-B", f"{WORKDIR}/_runner.py"]
    return cmd
