"""The code sandbox: status semantics on both backends, the choice of backend, the refusal without bubblewrap.

The hostile programs (the 17 cases of issue 13 §5) are in test_sandbox_hostile.py.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

import pytest

from spectral_surgery.tasks.evaluation import sandbox
from spectral_surgery.tasks.evaluation.sandbox import (
    SandboxUnavailable,
    bwrap_problem,
    resolve_backend,
    run_code,
    using_backend,
)
from spectral_surgery.tasks.evaluation.suites.utils import humaneval_program, load_ss_code

BACKENDS = [
    pytest.param("bwrap", marks=pytest.mark.skipif(bwrap_problem() is not None, reason=f"{bwrap_problem()}")),
    "python-guard",
]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture(scope="module")
def humaneval0():
    return load_ss_code()["test"][0]  # HumanEval/0 has_close_elements


def test_correct_humaneval_solution_passes(humaneval0, backend):
    res = run_code(humaneval_program(humaneval0, humaneval0["canonical_solution"]), backend=backend)
    assert res.passed and res.status == "passed", res.detail


def test_wrong_humaneval_solution_fails(humaneval0, backend):
    res = run_code(humaneval_program(humaneval0, "    return False\n"), backend=backend)
    assert not res.passed and res.status == "failed"
    assert "AssertionError" in res.detail


@pytest.mark.parametrize("end", ["import posix\nposix._exit(0)", "import os\nos._exit(0)", "import sys\nsys.exit(0)",
                                 "exit()"])
def test_a_program_that_ends_itself_before_its_tests_fails(humaneval0, backend, end):
    """Ending the process early with status 0 (before a failing assert ran) is not a pass on either backend."""
    res = run_code(f"{end}\nassert False, 'the tests'\n", backend=backend)
    assert not res.passed and res.status == "failed", res


def test_infinite_loop_is_killed(backend):
    t = time.monotonic()
    res = run_code("while True:\n    pass\n", timeout_s=1.0, backend=backend)
    assert res.status == "timeout" and not res.passed
    assert time.monotonic() - t < 5


def test_sleeping_program_times_out(backend):
    res = run_code("import time\ntime.sleep(60)\n", timeout_s=0.5, backend=backend)
    assert res.status == "timeout"


def test_plausible_mistakes_are_permission_errors(backend):
    # the prelude (an extra layer under bwrap) turns ordinary escapes into readable failed test cases; the
    # paths do not exist, so nothing is at stake if it did not
    away = Path.home() / f"ss-sandbox-nonexistent-{uuid.uuid4().hex}"
    for prog in (
        f"open({str(away / 'x')!r}, 'w').write('x')",
        f"import shutil; shutil.rmtree({str(away)!r})",
        "import subprocess; subprocess.run(['true'])",
        "import os; os.system('true')",
        "import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 9))\n",
    ):
        res = run_code(prog, backend=backend)
        assert res.status == "failed" and "PermissionError" in res.detail, (prog, res)
    assert not away.exists()


def test_writes_inside_own_work_dir_are_allowed(backend):
    prog = "open('scratch.txt', 'w').write('ok')\nimport os\nos.mkdir('d')\nassert open('scratch.txt').read() == 'ok'\n"
    res = run_code(prog, backend=backend)
    assert res.passed, res.detail


def test_memory_limit(backend):
    res = run_code("x = bytearray(1024 * 1024 * 1024)\n", memory_mb=256, backend=backend)
    assert res.status == "failed" and "MemoryError" in res.detail


def test_early_exit_is_not_a_pass(backend):
    assert run_code("import sys; sys.exit(0)\nassert False\n", backend=backend).status == "failed"
    assert run_code("import os; os._exit(0)\n", backend=backend).status == "failed"


def test_syntax_error_is_an_error(backend):
    res = run_code("def f(:\n", backend=backend)
    assert res.status == "error" and "SyntaxError" in res.detail


def test_runs_in_a_separate_process(backend):
    res = run_code(f"import os\nassert os.getpid() != {os.getpid()}\n", backend=backend)
    assert res.passed


def test_huge_stderr_is_bounded(backend):
    # the program's output goes to a file under RLIMIT_FSIZE, never into the evaluator's memory
    res = run_code("import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n", fsize_mb=1, timeout_s=5,
                   backend=backend)
    assert not res.passed and len(res.detail) <= 2000


def test_bad_limits():
    with pytest.raises(ValueError, match="positive"):
        run_code("pass", timeout_s=0)


def test_unknown_backend_names_the_choices(monkeypatch):
    with pytest.raises(ValueError, match="bwrap, python-guard"):
        resolve_backend("docker")
    monkeypatch.setenv(sandbox.ENV_SANDBOX, "nsjail")
    with pytest.raises(ValueError, match=r"\$SPECTRAL_SURGERY_SANDBOX"):
        run_code("pass")


def test_choice_order(monkeypatch):
    monkeypatch.setenv(sandbox.ENV_SANDBOX, "python-guard")
    assert resolve_backend() == "python-guard"
    with using_backend("python-guard"):
        assert resolve_backend() == "python-guard"
    monkeypatch.delenv(sandbox.ENV_SANDBOX)
    with using_backend("docker"), pytest.raises(ValueError, match="run config 'sandbox'"):
        resolve_backend()


@pytest.fixture
def no_bwrap(monkeypatch, tmp_path):
    """A PATH without bubblewrap, so the real probe fails (the probe's cache is cleared around the test)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv(sandbox.ENV_SANDBOX, raising=False)
    sandbox.bwrap_problem.cache_clear()
    yield
    sandbox.bwrap_problem.cache_clear()


def test_without_bubblewrap_code_is_refused_with_the_fix(no_bwrap):
    assert bwrap_problem() and "bwrap" in bwrap_problem()
    with pytest.raises(SandboxUnavailable) as e:
        run_code("pass")
    msg = str(e.value)
    assert "apt-get install bubblewrap" in msg and "sandbox: python-guard" in msg and "SPECTRAL_SURGERY_SANDBOX" in msg
    assert sandbox.network_isolation() in ("netns+prelude", "prelude")


def test_python_guard_opt_in_runs_with_a_warning(no_bwrap, monkeypatch, caplog):
    monkeypatch.setenv(sandbox.ENV_SANDBOX, "python-guard")
    sandbox._warn_guard.cache_clear()
    with caplog.at_level(logging.WARNING, logger="spectral_surgery.tasks.evaluation.sandbox"):
        assert run_code("assert 1 + 1 == 2\n").passed
    assert any("python-guard" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(bwrap_problem() is not None, reason=f"{bwrap_problem()}")
def test_bwrap_is_the_default(monkeypatch):
    monkeypatch.delenv(sandbox.ENV_SANDBOX, raising=False)
    assert resolve_backend() == "bwrap" and sandbox.network_isolation() == "bwrap"
    res = run_code("import os\nassert os.getuid() == 65534 and os.getpid() == 2, (os.getuid(), os.getpid())\n")
    assert res.passed, res.detail


def test_code_benchmark_is_refused_before_the_model_loads(no_bwrap, tmp_path):
    from spectral_surgery.tasks.evaluation.evaluate import get_evaluator, runs_generated_code

    assert runs_generated_code("lm_eval") and not runs_generated_code("fake")
    ev = get_evaluator("lm_eval")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):  # no such model: it never loads
        ev.evaluate("no-such/model", {"baseline": None}, "ss_code", limit=1, out_dir=tmp_path)


def test_run_config_sandbox_is_validated():
    from pydantic import ValidationError

    from spectral_surgery.tasks.run_config import RunConfig

    assert RunConfig().sandbox is None and RunConfig(sandbox="python-guard").sandbox == "python-guard"
    with pytest.raises(ValidationError, match="bwrap"):
        RunConfig(sandbox="docker")
    assert RunConfig(sandbox="python-guard").result_hash() == RunConfig().result_hash()  # where code runs, not what
