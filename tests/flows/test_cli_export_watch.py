"""``spectral-surgery export DIR --watch`` as a real subprocess on a tiny registry: the exported folder follows every
promotion and rollback, a database error is survived, SIGTERM/SIGINT stop it cleanly (exit 0)."""

from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from spectral_surgery.tasks.adapter_io import adapter_content_sha256
from tests.flows.cli_support import assert_error, cli, promote

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 120  # generous: only a failure waits this long


class Watcher:
    """The watcher process, its stdout JSON lines in a queue and its stderr lines in a list."""

    def __init__(self, env, out: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "spectral_surgery.flows.cli", "export", str(out), "--watch", "--interval", "0.2",
               "--json",
               "--data-dir", str(env.data), *extra]
        penv = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=penv,
                                     cwd=ROOT)
        self.lines: queue.Queue = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err.append), daemon=True).start()

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line)

    def next_switch(self, adapter: str) -> dict:
        """The next line about ``adapter`` (other adapters' lines are passed over)."""
        while True:
            try:
                line = self.lines.get(timeout=DEADLINE_S)
            except queue.Empty:
                pytest.fail(f"no line about {adapter} within {DEADLINE_S} s; stderr: {''.join(self.err)}")
            row = json.loads(line)
            if row["adapter"] == adapter:
                return row

    def wait_stderr(self, fragment: str) -> None:
        import time

        deadline = time.monotonic() + DEADLINE_S
        while not any(fragment in e for e in self.err):
            assert self.proc.poll() is None, "".join(self.err)
            assert time.monotonic() < deadline, f"{fragment!r} not on stderr: {''.join(self.err)}"
            time.sleep(0.05)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=DEADLINE_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def loads(env, folder: Path, expected: Path) -> None:
    """What a server does after a switch: PEFT loads the exported folder, and it holds the expected adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(env.base), str(folder))
    assert adapter_content_sha256(folder) == adapter_content_sha256(expected)


@pytest.mark.slow
def test_the_watched_folder_follows_promotions_and_rollbacks(reg_env, tmp_path):
    out = tmp_path / "serve"
    w = Watcher(reg_env, out)
    try:
        first = w.next_switch("ad0")
        assert (first["status"], first["policy"], first["decision_id"]) == ("exported", "smooth_abs",
                                                                            reg_env.decision.id)
        assert w.next_switch("ad1")["status"] == "exported"
        loads(reg_env, out / "ad0", reg_env.edited[0])

        d1 = promote(reg_env, reg_env.edited[1], "abs_select", "d1")  # a gate promotion, through the Registry API
        row = w.next_switch("ad0")
        assert (row["status"], row["policy"], row["decision_id"]) == ("switched", "abs_select", d1.id)
        assert row["previous_sha256"] == first["sha256"][:12]
        loads(reg_env, out / "ad0", reg_env.edited[1])
        assert json.loads((out / "production.json").read_text())["ad0"]["decision_id"] == d1.id

        assert cli("rollback", "ad0", "--reason", "regression", "--data-dir", reg_env.data).code == 0
        row = w.next_switch("ad0")
        assert (row["status"], row["sha256"]) == ("switched", first["sha256"])
        loads(reg_env, out / "ad0", reg_env.edited[0])

        # A real database error for a while (a table the read needs is gone): reported, retried, survived.
        with sqlite3.connect(reg_env.data / "registry.db") as con:
            con.execute("ALTER TABLE promotion_events RENAME TO promotion_events_away")
        w.wait_stderr("reading the production set failed")
        with sqlite3.connect(reg_env.data / "registry.db") as con:
            con.execute("ALTER TABLE promotion_events_away RENAME TO promotion_events")
        w.wait_stderr("works again")
        promote(reg_env, reg_env.edited[1], "abs_select", "d2")
        assert w.next_switch("ad0")["status"] == "switched"
        loads(reg_env, out / "ad0", reg_env.edited[1])
        assert w.proc.poll() is None
    finally:
        code = w.stop(signal.SIGTERM)
    err = "".join(w.err)
    assert code == 0, err
    assert "stopped on SIGTERM" in err and "Traceback" not in err
    assert w.lines.empty()  # nothing re-exported while nothing changed (ad1 was never switched again)


@pytest.mark.slow
def test_sigint_stops_a_single_adapter_watcher(reg_env, tmp_path):
    w = Watcher(reg_env, tmp_path / "serve", "--adapter", "ad1")
    assert w.next_switch("ad1")["status"] == "exported"
    assert w.stop(signal.SIGINT) == 0
    err = "".join(w.err)
    assert "stopped on SIGINT" in err and "Traceback" not in err and not (tmp_path / "serve" / "ad0").exists()


def test_watch_options_are_checked(reg_env, tmp_path):
    out = tmp_path / "serve"
    assert_error(cli("export", out, "--interval", "5", "--data-dir", reg_env.data), "go with --watch")
    assert_error(cli("export", out, "--watch", "--dry-run", "--data-dir", reg_env.data), "drop --dry-run")
    assert_error(cli("export", out, "--watch", "--interval", "0", "--data-dir", reg_env.data), "--interval")
    assert_error(cli("export", out, "--watch", "--adapter", "nope", "--data-dir", reg_env.data),
                 "no adapter named 'nope'", code=3)
    r = cli("export", out, "--watch", "--max-ticks", "2", "--interval", "0.01", "--data-dir", reg_env.data)
    assert r.code == 0, r.err
    assert [line.split()[1:3] for line in r.out.splitlines()] == [["ad0:", "exported"], ["ad1:", "exported"]]
    assert "stopped after 2 polls" in r.err
