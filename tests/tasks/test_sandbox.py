"""The code sandbox: limits, isolation, and HumanEval pass/fail."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from tasks.sandbox import network_isolation, run_code
from tasks.suites.utils import humaneval_program, load_ss_code


@pytest.fixture(scope="module")
def humaneval0():
    return load_ss_code()["test"][0]  # HumanEval/0 has_close_elements


def test_correct_humaneval_solution_passes(humaneval0):
    res = run_code(humaneval_program(humaneval0, humaneval0["canonical_solution"]))
    assert res.passed and res.status == "passed", res.detail


def test_wrong_humaneval_solution_fails(humaneval0):
    res = run_code(humaneval_program(humaneval0, "    return False\n"))
    assert not res.passed and res.status == "failed"
    assert "AssertionError" in res.detail


def test_infinite_loop_is_killed():
    t = time.monotonic()
    res = run_code("while True:\n    pass\n", timeout_s=1.0)
    assert res.status == "timeout" and not res.passed
    assert time.monotonic() - t < 5


def test_sleeping_child_processes_die_with_the_group():
    res = run_code("import time\ntime.sleep(60)\n", timeout_s=0.5)
    assert res.status == "timeout"


def test_write_outside_tmp_is_a_failed_test_case(tmp_path):
    target = tmp_path / f"escape-{uuid.uuid4().hex}.txt"
    for prog in (
        f"open({str(target)!r}, 'w').write('x')",
        f"import pathlib; pathlib.Path({str(target)!r}).write_text('x')",
        f"import os; os.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))",
        f"import shutil; shutil.rmtree({str(tmp_path)!r})",
    ):
        res = run_code(prog)
        assert res.status == "failed" and "PermissionError" in res.detail, (prog, res)
    assert not target.exists() and tmp_path.exists()


def test_writes_inside_own_tmp_dir_are_allowed():
    prog = "open('scratch.txt', 'w').write('ok')\nimport os\nos.mkdir('d')\nassert open('scratch.txt').read() == 'ok'\n"
    res = run_code(prog)
    assert res.passed, res.detail


def test_socket_connect_is_blocked():
    res = run_code("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\n")
    assert res.status == "failed" and "network access" in res.detail


@pytest.mark.skipif(network_isolation() != "netns+prelude", reason="no network namespace on this machine")
def test_network_namespace_holds_without_the_prelude():
    # _socket is the C module the prelude does not patch: only the empty namespace stops this.
    res = run_code("import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('1.1.1.1', 80))\n")
    assert res.status == "failed" and "OSError" in res.detail


def test_process_creation_is_blocked():
    for prog in ("import os; os.fork()", "import subprocess; subprocess.run(['true'])", "import os; os.system('true')"):
        res = run_code(prog)
        assert res.status == "failed" and "creating a process" in res.detail, prog


def test_memory_limit():
    res = run_code("x = bytearray(1024 * 1024 * 1024)\n", memory_mb=256)
    assert res.status == "failed" and "MemoryError" in res.detail


def test_early_exit_is_not_a_pass():
    assert run_code("import sys; sys.exit(0)\nassert False\n").status == "failed"
    assert run_code("import os; os._exit(0)\n").status == "failed"


def test_syntax_error_is_an_error():
    res = run_code("def f(:\n")
    assert res.status == "error" and "SyntaxError" in res.detail


def test_runs_in_a_separate_process():
    res = run_code(f"import os\nassert os.getpid() != {os.getpid()}\n")
    assert res.passed


def test_bad_limits():
    with pytest.raises(ValueError, match="positive"):
        run_code("pass", timeout_s=0)
