"""Hostile generated code (issue 13 §5): the 17 cases, each against a real target planted in the evaluator's world.

Every test plants something (a file in the evaluator's temp dir, in $HOME and in the visible read-only venv,
HF_TOKEN in the evaluator's environment, a victim process, listening sockets), runs a program that attacks it
by the means that undo a Python-level guard (``posix``, ``io.FileIO``, ``ctypes``, ``_socket``, ``importlib``),
and checks in the evaluator's world that the effect did not happen. Under ``bwrap`` all must hold. The
``python-guard`` fallback runs the cases that are safe to lose on this machine: the ones it holds are asserted
held, the ones it loses are strict xfails (documented, and flagged if they ever start to hold); the cases that
would harm the evaluator if lost (signals to -1, fork bombs, filling the disk) never run under it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spectral_surgery.tasks.evaluation.sandbox import bwrap_problem, run_code
from spectral_surgery.tasks.evaluation.sandbox_bwrap import NPROC

BWRAP = pytest.param("bwrap", marks=pytest.mark.skipif(bwrap_problem() is not None, reason=f"{bwrap_problem()}"))
GUARD_LOSES = pytest.mark.xfail(strict=True, reason="the python-guard fallback does not hold this (use bwrap)")
GUARD = pytest.param("python-guard")
GUARD_LOST = pytest.param("python-guard", marks=GUARD_LOSES)
ORIGINAL = "original content"
LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"


@dataclass
class World:
    """What the attacks target in the evaluator's world."""

    secret: str
    plants: list[Path]  # existing files that must keep their content
    news: list[Path]  # paths that must not come into existence
    dirs: list[Path] = field(default_factory=list)

    def all_targets(self) -> list[str]:
        return [str(p) for p in (*self.plants, *self.news)]

    def assert_untouched(self) -> None:
        for p in self.plants:
            assert p.exists() and p.read_text() == ORIGINAL, f"{p} was changed or deleted"
        for p in self.news:
            assert not p.exists(), f"{p} was created"


@pytest.fixture
def world(tmp_path, monkeypatch):
    """Files in the evaluator's temp dir, in a dir under $HOME and in the (bound, read-only) venv; HF_TOKEN."""
    secret = f"planted-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("HF_TOKEN", secret)
    places = [tmp_path]
    try:
        places.append(Path(tempfile.mkdtemp(prefix="ss-sandbox-test-", dir=Path.home())))
    except OSError:
        pass
    tag = uuid.uuid4().hex
    venv_plant = Path(sys.prefix) / f".ss-sandbox-plant-{tag}"
    plants, news = [p / "plant.txt" for p in places], [p / "new.txt" for p in places]
    try:
        venv_plant.write_text(ORIGINAL)
        plants.append(venv_plant)
        news.append(Path(sys.prefix) / f".ss-sandbox-new-{tag}")
    except OSError:
        pass
    for p in plants:
        p.write_text(ORIGINAL)
    (tmp_path / "secret.txt").write_text(secret)
    if len(places) > 1:
        (places[1] / "secret.txt").write_text(secret)
    w = World(secret, plants, news, places)
    yield w
    for p in (*plants, *news):
        p.unlink(missing_ok=True)
    for d in places[1:]:
        shutil.rmtree(d, ignore_errors=True)


def attempts(targets: list[str], stmt: str, prefix: str = "") -> str:
    """A program trying ``stmt`` (with ``t`` bound) on every target, reporting each outcome on stderr."""
    return (f"import sys\n{prefix}for t in {targets!r}:\n    try:\n"
            + "".join(f"        {line}\n" for line in stmt.splitlines())
            + "        print('DONE', t, file=sys.stderr)\n"
            "    except BaseException as e:\n        print('BLOCKED', t, repr(e), file=sys.stderr)\n")


WRITES = {
    "open": "open(t, 'w').write('pwned')",
    "io.FileIO": "import io\nf = io.FileIO(t, 'w')\nf.write(b'pwned')\nf.close()",
    "posix.open": "import posix\nfd = posix.open(t, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC, 0o666)\n"
                  "posix.write(fd, b'pwned')\nposix.close(fd)",
    "ctypes": "fd = libc.open(t.encode(), 0o1 | 0o100 | 0o1000, 0o666)\nassert fd >= 0, ctypes.get_errno()\n"
              "libc.write(fd, b'pwned', 5)\nlibc.close(fd)",
}


# (1)-(4) writes outside the work dir: open, io.FileIO, posix.open, ctypes libc
@pytest.mark.parametrize("how", list(WRITES))
@pytest.mark.parametrize("backend", [BWRAP, GUARD])
def test_01_04_write_outside(world, how, backend, request):
    if backend == "python-guard" and how != "open":
        request.applymarker(GUARD_LOSES)
    run_code(attempts(world.all_targets(), WRITES[how], LIBC), backend=backend)
    world.assert_untouched()


DELETES = {
    "os.remove": "import os\nos.remove(t)",
    "posix.unlink": "import posix\nposix.unlink(t)",
    "ctypes.unlink": "assert libc.unlink(t.encode()) == 0, ctypes.get_errno()",
}


# (5) delete a file outside
@pytest.mark.parametrize("how", list(DELETES))
@pytest.mark.parametrize("backend", [BWRAP, GUARD])
def test_05_delete_outside(world, how, backend, request):
    if backend == "python-guard" and how != "os.remove":
        request.applymarker(GUARD_LOSES)
    run_code(attempts([str(p) for p in world.plants], DELETES[how], LIBC), backend=backend)
    world.assert_untouched()


def _write_all(targets: list[str]) -> str:
    return "".join(f"    try: open({t!r}, 'w').write('pwned')\n    except BaseException: pass\n" for t in targets)


# (6) fork: the child is contained (it cannot write outside) and the kernel caps how many there can be
@pytest.mark.parametrize("backend", [BWRAP])
def test_06_fork_is_contained(world, backend):
    prog = (LIBC + "import posix, sys, importlib, builtins, _io\nbuiltins.open = _io.open\n"
            "for fork in (posix.fork, libc.fork):\n    pid = fork()\n    if pid == 0:\n"
            + _write_all(world.all_targets()).replace("    ", "        ")
            + "        posix._exit(0)\n    posix.waitpid(pid, 0)\n    print('FORKED', pid, file=sys.stderr)\n")
    res = run_code(prog, backend=backend)
    assert "FORKED" in res.detail  # forks work inside; contained
    world.assert_untouched()


# (7) spawning processes: os.system through posix, ctypes system, posix_spawn of a shell
@pytest.mark.parametrize("backend", [BWRAP, GUARD_LOST])
def test_07_spawn_is_contained(world, backend):
    cmds = [f"echo pwned > {t}" for t in world.all_targets()]
    prog = (LIBC + f"import posix\nfor c in {cmds!r}:\n    posix.system(c)\n    libc.system(c.encode())\n"
            "    posix.waitpid(posix.posix_spawn('/bin/sh', ['sh', '-c', c], {}), 0)\n")
    run_code(prog, backend=backend)
    world.assert_untouched()


def _survivors(name: str) -> list[int]:
    """Pids of processes whose comm is ``name``."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "comm").read_text().strip() == name:
                out.append(int(d.name))
        except OSError:
            pass
    return out


def _daemon(world: World, name: str, main_tail: str) -> str:
    return (LIBC + "import posix, time, builtins, _io\nbuiltins.open = _io.open\n"
            "if posix.fork() == 0:\n    posix.setsid()\n    if posix.fork() == 0:\n"
            f"        libc.prctl(15, {name.encode()!r}, 0, 0, 0)\n        time.sleep(1.5)\n"
            + _write_all(world.all_targets()).replace("    ", "        ")
            + "        posix._exit(0)\n    posix._exit(0)\n" + main_tail)


# (8) a setsid double-forked daemon that sleeps past the program (or past the timeout), then writes outside
@pytest.mark.slow
@pytest.mark.parametrize("main", ["exits", "times out"])
@pytest.mark.parametrize("backend", [BWRAP, GUARD_LOST])
def test_08_daemon_does_not_outlive_the_run(world, backend, main):
    name = f"ss{uuid.uuid4().hex[:12]}"
    try:
        tail = "time.sleep(0.3)\n" if main == "exits" else "time.sleep(30)\n"
        res = run_code(_daemon(world, name, tail), timeout_s=1.0, backend=backend)
        assert res.status == ("passed" if main == "exits" else "timeout"), res
        time.sleep(0.2)
        assert not _survivors(name), "a process of the program outlived the run"
        time.sleep(1.8)  # past the daemon's sleep: its write would have happened by now
        world.assert_untouched()
    finally:
        for pid in _survivors(name):
            os.kill(pid, signal.SIGKILL)


REPO = Path(__file__).resolve().parents[3]


def run_in_evaluator(prog: str, backend: str, secret: str) -> str:
    """Status and detail of ``prog`` run by a fresh evaluator process started with ``HF_TOKEN=secret``.

    A separate evaluator, because ``/proc/<pid>/environ`` shows a process's environment as it was started:
    only then is the secret really there to be stolen.
    """
    code = ("import sys\nfrom spectral_surgery.tasks.evaluation.sandbox import run_code\n"
            "r = run_code(sys.stdin.read(), backend=sys.argv[1])\nsys.stdout.write(r.status + '\\n' + r.detail)\n")
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "HF_TOKEN": secret, "PYTHONPATH": path}
    out = subprocess.run([sys.executable, "-c", code, backend], check=False, input=prog, env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


# (9) the evaluator's environment (HF_TOKEN) through os.environ and posix.environ
@pytest.mark.parametrize("backend", [BWRAP, GUARD])
def test_09_environment_does_not_leak(world, backend):
    out = run_in_evaluator("import os, posix, sys\nprint(dict(os.environ), posix.environ, file=sys.stderr)\n",
                           backend, world.secret)
    assert out.startswith("passed") and "HOME" in out and world.secret not in out


# (10) the evaluator's environment through /proc: the parent's, pid 1's, the evaluator's pid, every pid
@pytest.mark.parametrize("backend", [BWRAP, GUARD_LOST])
def test_10_proc_environ_does_not_leak(world, backend):
    prog = ("import os, sys\nfor p in ['/proc/%d/environ' % os.getppid(), '/proc/1/environ'] + "
            "['/proc/%s/environ' % d for d in os.listdir('/proc') if d.isdigit()]:\n"
            "    try:\n        print(p, open(p, 'rb').read(), file=sys.stderr)\n"
            "    except OSError as e:\n        print(p, repr(e), file=sys.stderr)\n")
    out = run_in_evaluator(prog, backend, world.secret)
    assert "/proc/1/environ" in out and world.secret not in out


# (11) signals: the evaluator, a victim process of the evaluator's, the parent, every process (kill -1)
@pytest.mark.parametrize("backend", [BWRAP])
def test_11_signals_do_not_reach_the_evaluator(backend):
    victim = subprocess.Popen(["sleep", "30"])
    try:
        prog = (LIBC + "import posix, signal\n"
                f"for pid, sig in [({victim.pid}, 9), ({os.getpid()}, 15), (posix.getppid(), 9), (-1, 9)]:\n"
                "    for kill in (posix.kill, libc.kill):\n        try:\n            kill(pid, sig)\n"
                "        except OSError:\n            pass\n")
        run_code(prog, backend=backend)
        time.sleep(0.2)
        assert victim.poll() is None, "the evaluator's process was killed"
    finally:
        victim.kill()
        victim.wait()


class _Listeners:
    """A TCP, a UDP and an abstract Unix socket on loopback in the evaluator, recording whatever reaches them."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix_name = f"\0ss-sandbox-{uuid.uuid4().hex}"
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.unix_name)
        self.unix.listen()
        for s in (self.tcp, self.udp, self.unix):
            s.settimeout(0.2)

    def drain(self) -> list[str]:
        for name, s in (("tcp", self.tcp), ("unix", self.unix)):
            try:
                s.accept()
                self.hits.append(name)
            except OSError:
                pass
        try:
            self.hits.append(f"udp {self.udp.recv(64)!r}")
        except OSError:
            pass
        return self.hits

    def close(self) -> None:
        for s in (self.tcp, self.udp, self.unix):
            s.close()


# (12) network: loopback TCP/UDP/abstract-Unix servers of the evaluator's, DNS, through _socket (no prelude)
@pytest.mark.parametrize("backend", [BWRAP, GUARD])
def test_12_no_network(backend):
    if backend == "python-guard":
        from spectral_surgery.tasks.evaluation.sandbox_guard import unshare_prefix

        if not unshare_prefix():
            pytest.xfail("no network namespace here: python-guard cannot hold _socket")
    ls = _Listeners()
    try:
        tcp, udp = ls.tcp.getsockname()[1], ls.udp.getsockname()[1]
        prog = ("import _socket, sys\ndef attempt(f):\n    try:\n        print('DONE', f(), file=sys.stderr)\n"
                "    except OSError as e:\n        print('BLOCKED', repr(e), file=sys.stderr)\n"
                "def tcp():\n    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n    s.settimeout(1)\n"
                f"    s.connect(('127.0.0.1', {tcp}))\n    return s.send(b'pwned')\n"
                "def udp():\n    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)\n"
                f"    return s.sendto(b'pwned', ('127.0.0.1', {udp}))\n"
                "def unix():\n    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)\n"
                f"    s.settimeout(1)\n    return s.connect({ls.unix_name!r})\n"
                "for f in (tcp, udp, unix, lambda: _socket.getaddrinfo('example.com', 80)):\n    attempt(f)\n")
        res = run_code(prog, backend=backend)
        # a UDP datagram may leave (into the sandbox's own loopback, where bubblewrap brings up lo); what counts
        # is that nothing arrives here, and that no name resolves
        assert "gaierror" in res.detail, res.detail
        assert ls.drain() == [], "a connection from the sandbox reached the evaluator's loopback"
    finally:
        ls.close()


# (13) memory bomb: an allocation past RLIMIT_AS, plain and through mmap
@pytest.mark.parametrize("backend", [BWRAP, GUARD])
def test_13_memory_bomb(backend):
    prog = ("import mmap, sys\ntry:\n    x = bytearray(1 << 31)\n    print('ALLOCATED', file=sys.stderr)\n"
            "except MemoryError:\n    pass\nm = mmap.mmap(-1, 1 << 31)\nm[::4096] = b'x' * ((1 << 31) // 4096)\n"
            "print('ALLOCATED', file=sys.stderr)\n")
    res = run_code(prog, memory_mb=256, backend=backend)
    assert not res.passed and "ALLOCATED" not in res.detail, res


# (14) CPU spin past the timeout
@pytest.mark.parametrize("backend", [BWRAP, GUARD])
def test_14_cpu_spin(backend):
    t = time.monotonic()
    res = run_code("while True:\n    pass\n", timeout_s=1.0, backend=backend)
    assert res.status == "timeout" and time.monotonic() - t < 5


# (15) fork bomb: the kernel caps the processes; all are gone when the run ends
@pytest.mark.parametrize("backend", [BWRAP])
def test_15_fork_bomb(backend):
    name = f"ss{uuid.uuid4().hex[:12]}"
    prog = (LIBC + f"import posix, sys, time\nlibc.prctl(15, {name.encode()!r}, 0, 0, 0)\nn = 0\n"
            "try:\n    while n < 10000:\n        if posix.fork() == 0:\n            time.sleep(30)\n"
            "            posix._exit(0)\n        n += 1\n"
            "except OSError as e:\n    print('ERR', repr(e), file=sys.stderr)\n"
            "print('FORKS', n, file=sys.stderr)\ntime.sleep(30)\n")
    try:
        t = time.monotonic()
        res = run_code(prog, timeout_s=2.0, backend=backend)
        assert res.status == "timeout" and time.monotonic() - t < 6
        time.sleep(0.2)
        assert not _survivors(name)
        # the count is written before the last sleep, so the stderr tail of the killed run has it
        assert "FORKS" in res.detail and int(res.detail.split("FORKS")[-1].split()[0]) < NPROC, res.detail
    finally:
        for pid in _survivors(name):
            os.kill(pid, signal.SIGKILL)


# (16) fill the disk: one huge file (RLIMIT_FSIZE) and many files under the limit (the tmpfs's size)
@pytest.mark.parametrize("backend", [BWRAP])
def test_16_disk_fill(backend):
    mib = 1 << 20
    prog = ("import sys\ndef fill(path, n):\n    w = 0\n    try:\n        with open(path, 'wb') as f:\n"
            f"            while w < n:\n                f.write(b'x' * {mib})\n                w += {mib}\n"
            "    except OSError as e:\n        print(path, repr(e), file=sys.stderr)\n    return w\n"
            f"one = fill('big', 1 << 30)\nmany = sum(fill('f%d' % i, {3 * mib}) for i in range(100))\n"
            "print('WROTE', one, many, file=sys.stderr)\n")
    res = run_code(prog, fsize_mb=4, backend=backend)
    one, many = (int(x) for x in res.detail.split("WROTE")[-1].split()[:2])
    assert one <= 4 * mib and many <= 16 * mib, res.detail


@pytest.mark.parametrize("backend", [GUARD])
def test_16_one_huge_file_under_the_guard(backend):
    res = run_code("f = open('big', 'wb')\nfor _ in range(1024):\n    f.write(b'x' * (1 << 20))\n", fsize_mb=4,
                   backend=backend)
    assert res.status == "failed" and "File too large" in res.detail, res


# (17) read a secret file of the evaluator's: its temp dir, its home
@pytest.mark.parametrize("backend", [BWRAP, GUARD_LOST])
def test_17_secret_files_are_unreadable(world, backend):
    paths = [str(d / "secret.txt") for d in world.dirs]
    prog = attempts(paths, "import posix\nprint(open(t).read(), file=sys.stderr)\n"
                    "print(posix.read(posix.open(t, posix.O_RDONLY), 100), file=sys.stderr)")
    res = run_code(prog, backend=backend)
    assert "BLOCKED" in res.detail and world.secret not in res.detail


# (+) undo the Python guard (reimport, restore builtins), then write, delete, spawn the plain way
@pytest.mark.parametrize("backend", [BWRAP, GUARD_LOST])
def test_undoing_the_python_guard_changes_nothing(world, backend):
    undo = "import builtins, _io, importlib, os\nbuiltins.open = _io.open\nimportlib.reload(os)\n"
    run_code(attempts(world.all_targets(), "open(t, 'w').write('pwned')", undo), backend=backend)
    run_code(attempts([str(p) for p in world.plants], "os.remove(t)", undo), backend=backend)
    world.assert_untouched()
