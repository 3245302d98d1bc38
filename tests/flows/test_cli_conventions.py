"""flows/cli/app.py: the command line's conventions (Click): version, global options anywhere, exit codes that
tell usage from not-found from failure, shell completion, a closed pipe ending quietly, no telemetry by default."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest
from pydantic import BaseModel, ValidationError

from spectral_surgery.flows.cli.common import EXIT_FAILURE, EXIT_NOT_FOUND, EXIT_USAGE, exit_code
from spectral_surgery.registry.validation import NotFoundError, RegistryError
from tests.flows.cli_support import assert_error, cli


def test_version():
    r = cli("--version")
    assert r.code == 0 and r.out.strip() == f"spectral-surgery, version {version('spectral-surgery')}"


HEAVY = ("torch", "transformers", "peft", "prefect", "lm_eval", "sqlalchemy", "scipy", "pydantic")


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["run", "--help"], ["demo", "--help"]])
def test_version_and_help_import_no_model_stack(argv):
    """``--version`` and ``--help`` answer at once (issue 27): the sub-commands' modules are imported when they run."""
    code = ("import sys; from spectral_surgery.flows.cli.app import main; code = main(%r); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & set(%r))); sys.exit(code)" % (argv, HEAVY))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout[-500:]


def test_global_options_after_the_sub_command(tmp_path):
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    assert cli("--data-dir", data, "list", "--json").json() == []  # before the command
    assert cli("list", "--json", "--data-dir", data).json() == []  # after it
    quiet = cli("history", "nope", "--data-dir", data)
    assert_error(quiet, "no adapter named 'nope'", code=EXIT_NOT_FOUND)
    loud = cli("history", "nope", "-v", "--data-dir", data)  # -v after the command shows the traceback
    assert loud.code == EXIT_NOT_FOUND and "Traceback" in loud.err and "NotFoundError" in loud.err


class _Cfg(BaseModel):
    n: int


@pytest.mark.parametrize("error, code", [
    (NotFoundError("no adapter named 'x'"), EXIT_NOT_FOUND),
    (FileNotFoundError("gone.yaml"), EXIT_NOT_FOUND),
    (RegistryError("reason must be a non-empty string"), EXIT_USAGE),
    (RuntimeError("the evaluator crashed"), EXIT_FAILURE),
])
def test_exit_code_of_each_kind_of_error(error, code):
    assert exit_code(error) == code


def test_exit_code_of_a_validation_error():
    with pytest.raises(ValidationError) as e:
        _Cfg(n="many")
    assert exit_code(e.value) == EXIT_USAGE


def _python_cli(*argv: str, env: dict | None = None, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spectral_surgery.flows.cli", *argv], capture_output=True, text=True,
                          timeout=timeout,
                          env={**os.environ, **(env or {})}, **kw)


def test_shell_completion():
    script = _python_cli(env={"_SPECTRAL_SURGERY_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_spectral_surgery_completion" in script.stdout
    words = _python_cli(env={"_SPECTRAL_SURGERY_COMPLETE": "bash_complete", "COMP_WORDS": "spectral-surgery li",
                             "COMP_CWORD": "1"})
    assert words.returncode == 0 and "plain,list" in words.stdout.split()


def test_closed_pipe_ends_quietly(tmp_path):
    """``list --json | head -c0``: the reader is gone before the command writes; no traceback, no noise."""
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    read, write = os.pipe()
    os.close(read)  # nobody will ever read
    try:
        p = subprocess.run([sys.executable, "-m", "spectral_surgery.flows.cli", "list", "--json", "--data-dir",
                            str(data)],
                           stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr and "error" not in p.stderr.lower()
    assert p.returncode == 0


@pytest.mark.parametrize("json_", [True, False])
def test_a_reader_that_leaves_early_gets_exit_0(tmp_path, json_):
    """``list --json | head -1`` over a large registry: the reader leaves mid-output; exit 0 and no noise (Click
    turns an EPIPE it sees into exit 1, so the command handles it first)."""
    from spectral_surgery.registry.repository import Registry

    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    reg = Registry.open(None, data)
    for i in range(300):
        reg.register_adapter(f"ad{i:03d}", f"/srv/loras/ad{i:03d}", "base", "math")
    reg.close()
    argv = [sys.executable, "-m", "spectral_surgery.flows.cli", "list", "--data-dir",
            str(data)] + (["--json"] if json_ else [])
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = p.stdout.readline()
    p.stdout.close()  # `head -1` exits
    err = p.stderr.read()
    assert p.wait(timeout=120) == 0, err
    assert first.strip() and "Traceback" not in err and "Exception ignored" not in err and "error" not in err.lower()


def test_prefect_telemetry_off_by_default(monkeypatch, capsys):
    from spectral_surgery.flows.cli import main

    monkeypatch.delenv("PREFECT_SERVER_ANALYTICS_ENABLED", raising=False)
    assert main(["--version"]) == 0
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")  # a user's own choice wins
    assert main(["--version"]) == 0 and os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "true"


@pytest.mark.slow  # two real nightly runs through Prefect in a subprocess
def test_run_reports_a_failed_adapter_in_one_line_without_a_traceback(prefect_harness, tmp_path):
    """A recorded failure is one line on the console (what, which file and field); ``-v`` brings the traceback back.
    The header counts the failure apart from the refinements."""
    import json

    from tests import tiny

    base = tiny.save_base(tmp_path / "base")
    tiny.save_adapter(base, tmp_path / "good")
    tiny.save_adapter(base, tmp_path / "bad")
    (tmp_path / "bad" / "adapter_model.safetensors").write_bytes(b"not safetensors")
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    home = str(tmp_path / "home")
    assert cli("init", "--data-dir", home).code == 0  # in this process: only the run's console is under test here
    for name in ("good", "bad"):
        reg = cli("register", name, "--source", tmp_path / name, "--base", base, "--family", "math", "--calib", calib,
                  "--no-check", "--data-dir", home)
        assert reg.code == 0, reg.err
    argv = ("run", "--evaluator", "fake", "--task-limit", "20", "--guard-limit", "20", "--n-samples", "4",
            "--policy", "smooth_abs", "--data-dir", home)
    # each run in a process of its own (its console is under test) on the session's Prefect server: a temporary
    # server of its own (its start-up and stop, tested in test_prefect_home.py and test_interrupt.py) cost each run
    # 10-20 s here and changed nothing on the console the assertions read
    from prefect.settings import PREFECT_API_URL

    env = {"COLUMNS": "200", "PREFECT_API_URL": PREFECT_API_URL.value()}
    quiet = _python_cli(*argv, env=env, timeout=600)
    assert quiet.returncode == EXIT_FAILURE
    assert "Traceback" not in quiet.stderr
    assert "✗ bad failed: AdapterError:" in quiet.stderr and "adapter_model.safetensors" in quiet.stderr
    assert "1 refined, 1 failed" in quiet.stdout
    tiny.save_adapter(base, tmp_path / "bad", seed=5)  # a new version of `bad`, corrupted again: refined again
    (tmp_path / "bad" / "adapter_model.safetensors").write_bytes(b"still not safetensors")
    loud = _python_cli(*argv, "-v", env=env, timeout=600)
    assert loud.returncode == EXIT_FAILURE and "Traceback" in loud.stderr


# ------------------------------------------------------------------------------------------- tables at 80 columns
def _words(r) -> set[str]:
    return set(r.out.replace("│", " ").replace("┃", " ").split())


def test_tables_fit_80_columns_without_broken_words(reg_env, tmp_path):
    """At an 80-column terminal every table fits, ids, hashes and labels stay whole words, and the long paths of
    ``list`` (source, base) either wrap at their separators or follow the table whole, one line per adapter."""
    runs = {
        "list": cli("list", "--data-dir", reg_env.data, columns=80),
        "history": cli("history", "ad0", "--data-dir", reg_env.data, columns=80),
        "export": cli("export", tmp_path / "exp", "--dry-run", "--data-dir", reg_env.data, columns=80),
        "check": cli("check", "--data-dir", reg_env.data, columns=80),
    }
    for name, r in runs.items():
        assert r.code in (0, 1), (name, r.err)
        too_wide = [line for line in r.out.splitlines() if len(line) > 80]
        assert not too_wide, (name, too_wide)
        assert "…" not in r.out, name  # nothing is cut
    listed = runs["list"]
    shas = {n: reg_env.versions[n].content_sha256[:12] for n in ("ad0", "ad1")}
    assert set(shas.values()) <= _words(listed)  # hashes are never folded
    assert {"smooth_abs", "(never", "promoted)", "version", "yet"} <= _words(listed)
    for n in ("ad0", "ad1", "ad2"):  # the base left the table for a whole line of its own
        assert f"{n}: base {reg_env.base}" in listed.out
    assert {"promotion", "smooth_abs", "gate"} <= _words(runs["history"])


def test_piped_tables_keep_each_row_on_one_line(reg_env):
    """In a pipe (stdout not a terminal, no COLUMNS) nothing is wrapped: each adapter's row holds its whole source
    and base paths, so ``grep`` and ``cut`` see whole values."""
    r = cli("list", "--data-dir", reg_env.data, columns=None)
    assert r.code == 0
    for n in ("ad0", "ad1", "ad2"):
        row = next(line for line in r.out.splitlines() if f"│ {n} " in line)
        assert str(reg_env.dirs[n]) in row and str(reg_env.base) in row


def test_a_folded_path_breaks_after_its_separators():
    from spectral_surgery.flows.cli.common import Folded

    path = "/srv/lora/adapters/gsm8k-math-v3/checkpoint-1200"
    lines = Folded(path).lines(20)
    assert "".join(lines) == path and all(len(line) <= 20 for line in lines)
    assert lines == ["/srv/lora/adapters/", "gsm8k-math-v3/", "checkpoint-1200"]
    assert Folded("hf://org/a-very-long-repository-name").lines(10) == \
        ["hf://org/", "a-very-lon", "g-reposito", "ry-name"]  # a name wider than the column folds, losing nothing
