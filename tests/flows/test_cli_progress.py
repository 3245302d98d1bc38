"""``run`` on a terminal and in a pipe (issue 27 §3): a live progress line (stage, adapter i/n, ETA) on a terminal,
plain short lines in a pipe, a summary that fits 80 columns, third-party warnings in the run's log file only, and no
traceback on a successful run."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from tests import tiny
from tests.flows.cli_support import cli
from tests.flows.test_interrupt import ANSI, REPO, Terminal

WINNER = {"smooth_abs": 0.9}
LOG = re.compile(r"log: (\S+\.log)")


@pytest.fixture(scope="module")
def home(fleet_base, tmp_path_factory):
    """Two tiny adapters registered in a fresh registry (copied per test)."""
    root = tmp_path_factory.mktemp("progress")
    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    data = root / "template"
    assert cli("init", "--data-dir", data).code == 0
    for i in range(2):
        ad = tiny.save_adapter(fleet_base, root / f"ad{i}", seed=i + 1)
        r = cli("register", f"ad{i}", "--source", ad, "--base", fleet_base, "--family", "math", "--data-dir", data)
        assert r.code == 0, r.err
    return root, calib


def _argv(data: Path, calib: Path) -> list[str]:
    return [str(a) for a in ("run", "--data-dir", data, "--evaluator", "fake", "--evaluator-option",
                             f"rates={json.dumps(WINNER)}", "--evaluator-option", "n_docs=60", "--task-limit", 60,
                             "--guard-limit", 60, "--n-samples", 4, "--calib", calib)]


def _env(tmp_path: Path, prefect_home_template: Path, **extra: str) -> dict[str, str]:
    """The command's environment: its own temporary Prefect server, on a copy of the migrated Prefect home (a
    user's second run; the progress display is what is tested here, not a first run's migration)."""
    shutil.copytree(prefect_home_template, tmp_path / "prefect")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **extra}
    env.pop("PREFECT_API_URL", None)
    env.pop("COLUMNS", None)
    return env


@pytest.mark.slow  # one nightly run through Prefect in a subprocess (about 40 s on a busy 2-core machine)
def test_in_a_pipe_plain_short_lines_and_warnings_in_the_log_file(home, prefect_home_template, tmp_path):
    root, calib = home
    data = tmp_path / "home"
    shutil.copytree(root / "template", data)
    r = subprocess.run([sys.executable, "-m", "spectral_surgery.flows.cli", *_argv(data, calib)], capture_output=True,
                       text=True,
                       cwd=REPO, env=_env(tmp_path, prefect_home_template), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = (r.stdout + r.stderr).splitlines()
    assert max(len(line) for line in lines) <= 200, max(lines, key=len)
    assert "\x1b" not in r.stdout + r.stderr and "\r" not in r.stderr  # no colours, no redraws in a pipe
    assert "Traceback" not in r.stderr and "FutureWarning" not in r.stderr and "py.warnings" not in r.stderr
    # a plain line per change of stage or adapter (polled: a stage shorter than a tick may go unseen)
    seen = {m.groups() for line in lines if (m := re.match(r"^(\w+) · (ad\d \(\d/2\)) · ", line))}
    assert {a for _, a in seen} == {"ad0 (1/2)", "ad1 (2/2)"}, r.stderr
    assert len({s for s, _ in seen} & {"preparing", "calibration", "editing", "evaluation", "decision"}) >= 2, r.stderr
    assert any("ETA ~" in line for line in lines)  # once one adapter has finished
    heads = [line for line in r.stdout.splitlines() if not line.startswith(" ")]
    assert heads[0] == "Nightly refinement run 1: 2 refined, 0 failed"
    assert [h.split()[:3] for h in heads[1:]] == [["✓", "ad0@1", "PROMOTE"], ["✓", "ad1@1", "PROMOTE"]]
    log = Path(LOG.search(r.stderr).group(1))
    assert log.parent == data / "logs" and log.is_file()
    assert "FutureWarning" in log.read_text()  # transformers' deprecation, filed instead of shown


@pytest.mark.slow  # one nightly run through Prefect in a pseudo-terminal
def test_on_a_terminal_a_live_line_and_a_summary_that_fits_80_columns(home, prefect_home_template, tmp_path):
    root, calib = home
    data = tmp_path / "home"
    shutil.copytree(root / "template", data)
    term = Terminal(_argv(data, calib), _env(tmp_path, prefect_home_template, COLUMNS="80", LINES="24"))
    fcntl.ioctl(term.master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        code, _ = term.wait(600)
    finally:
        term.kill()
    raw = term.buf.decode(errors="replace")
    assert code == 0, raw[-3000:]
    assert "\r" in raw or "\x1b[" in raw  # the live line is redrawn in place
    text = ANSI.sub("", raw)
    frames = re.split(r"[\r\n]", text)
    assert any(re.search(r"(calibration|editing|evaluation) · ad\d \(\d/2\) · ", f) for f in frames), text[-3000:]
    summary = [line for line in text[text.index("Nightly refinement run"):].replace("\r", "").splitlines()
               if not line.startswith("log: ")]  # the log file's path is one line, whole, whatever its length
    assert all(len(line) <= 80 for line in summary), [line for line in summary if len(line) > 80]
    assert "Traceback" not in text and "FutureWarning" not in text


def test_the_eta_of_a_windowed_night_sums_the_plans_forecasts_left(tmp_path):
    """The progress line's ETA from the plan (tasks.night_plan.eta_seconds): before any adapter finished, and
    without the run's mean; a finished or deferred adapter leaves it."""
    from rich.console import Console

    from spectral_surgery.flows import stage_hook
    from spectral_surgery.flows.cli.run import Progress

    with open(tmp_path / "out.txt", "w") as out:
        progress = Progress(None, Console(file=out), concurrency=1)
        stage_hook.plan(3, {"ad0": 600.0, "ad1": 1200.0, "ad2": 60.0})
        try:
            assert progress.status(["ad0"], 0).endswith("ETA ~31 min 00 s")  # 600 + 1200 + 60 s
            progress.finished |= {"ad0", "ad2"}  # ad0 done, ad2 deferred by the window
            progress.durations.append(5.0)  # the run's mean (5 s) is not what the plan says is left
            assert progress.status(["ad1"], 1).endswith("ETA ~20 min 00 s")
        finally:
            stage_hook.forget()
