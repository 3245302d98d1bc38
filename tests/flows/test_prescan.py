"""flows/prescan.py: a no-op night finds nothing to do before the flow, starts no Prefect server, costs seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spectral_surgery.flows.cli import prefect_home as ph
from tests import tiny
from tests.flows.cli_support import cli

REPO = Path(__file__).resolve().parents[2]
# `run` with the scan before the flow made to find work: the command as it was before the no-op path existed
FORCED = ("import sys; import spectral_surgery.flows.prescan as p; p.look_for_work = lambda c: p.Prescan('forced', 0); "
          "from spectral_surgery.flows.cli import main; sys.exit(main(sys.argv[1:]))")


def _run(argv: list, prefect: Path, tmp: Path, *, forced: bool = False) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL" and k not in ph.DB_VARS}
    env.update(HF_HUB_OFFLINE="1", PREFECT_HOME=str(prefect), TMPDIR=str(tmp), PYTHONPATH=str(REPO),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cmd = [sys.executable, "-c", FORCED] if forced else [sys.executable, "-m", "spectral_surgery.flows.cli"]
    t0 = time.perf_counter()
    done = subprocess.run([*cmd, *map(str, argv)], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    return done, time.perf_counter() - t0


def _work_done(argv: list):
    """``run`` in this process (on the session's Prefect server), its registry handles released afterwards."""
    from spectral_surgery.flows import worker

    try:
        return cli(*argv)
    finally:
        worker.reset()


@pytest.mark.slow  # two real `run` processes, one of them through Prefect's temporary server
def test_a_no_op_night_starts_no_prefect_server_and_takes_a_fraction_of_a_flow_run(prefect_harness, fleet_base,
                                                                                  tmp_path):
    data, tmp = tmp_path / "data", tmp_path / "tmp"
    tmp.mkdir()
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    assert cli("init", "--data-dir", data).code == 0
    for i in range(2):
        src = tiny.save_adapter(fleet_base, tmp_path / f"ad{i}", seed=i + 1)
        assert cli("register", f"ad{i}", "--source", src, "--base", fleet_base, "--family", "math", "--calib",
                   calib, "--data-dir", data).code == 0
    argv = ["run", "--evaluator", "fake", "--task-limit", 20, "--guard-limit", 20, "--n-samples", 4,
            "--policy", "smooth_abs", "--data-dir", data, "--json"]
    # the night that does the work, in this process on the session's Prefect server: only the two nights after it
    # are compared, each in its own process (a third process and server start cost 15-20 s and tested nothing)
    first = _work_done(argv)
    assert first.code == 0, first.err[-3000:]
    assert first.json()["completed"] == 2
    # The same night again: through the flow as before (a fresh Prefect home: a server to start), then the no-op
    flowed, t_flow = _run(argv, tmp_path / "p1", tmp, forced=True)
    quiet, t_quiet = _run(argv, tmp_path / "p2", tmp)
    assert flowed.returncode == 0 and quiet.returncode == 0, (flowed.stderr[-3000:], quiet.stderr[-3000:])
    before, after = json.loads(flowed.stdout), json.loads(quiet.stdout)
    assert before["results"] == after["results"] == [] and after["run_id"] == before["run_id"] + 1
    assert "prefect" not in before and after["prefect"] == "not started: nothing to do"
    assert (tmp_path / "p1" / "prefect.db").is_file()  # the flow's temporary server made its database
    assert not (tmp_path / "p2" / "prefect.db").exists()  # the no-op started no server
    history = cli("history", "ad0", "--data-dir", data, "--json")
    assert history.code == 0
    print(f"no-op night {t_quiet:.1f} s vs through the flow {t_flow:.1f} s: ratio {t_quiet / t_flow:.2f}")
    assert t_quiet < 0.6 * t_flow


def test_work_is_found_for_a_new_version_and_none_after_it_is_refined(fleet_base, tmp_path):
    """The scan before the flow without Prefect: an unrefined version is work; once refined under the key, none."""
    from spectral_surgery.flows import prescan, worker
    from spectral_surgery.flows.refine_adapter import adapter_config_hash
    from spectral_surgery.tasks.adapter_io import adapter_content_sha256
    from spectral_surgery.tasks.run_config import RunConfig

    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    src = tiny.save_adapter(fleet_base, tmp_path / "ad0", seed=1)
    assert cli("register", "ad0", "--source", src, "--base", fleet_base, "--family", "math", "--no-check",
               "--data-dir", data).code == 0
    config = RunConfig(data_dir=data, evaluator="fake")
    worker.reset()
    assert prescan.look_for_work(config).work == "ad0: new content at its source"
    reg = worker.registry(config)
    version, _ = reg.record_version("ad0", adapter_content_sha256(src), None, src)
    assert prescan.look_for_work(config).work == "1 version(s) not yet refined under this configuration"
    run = reg.start_run("r1", {}, config.resolved().result_hash())
    key = adapter_config_hash(config.resolved(), version.adapter)
    reg.finish_adapter_run(reg.start_adapter_run(run.id, version.id, key).id, "completed")
    reg.finish_run(run.id, "completed")
    assert prescan.look_for_work(config).work is None
    shutil.rmtree(src)
    tiny.save_adapter(fleet_base, src, seed=2)  # new content at the source: a new version to refine
    assert prescan.look_for_work(config).work == "ad0: new content at its source"
    shutil.rmtree(src)
    assert prescan.look_for_work(config).work.startswith("ad0: its source cannot be read")
    quiet = prescan.record_quiet_night(config)
    assert reg.get_run(quiet["run_id"]).status == "completed" and not reg.adapter_runs(quiet["run_id"])
    worker.reset()
