"""Fleet-size benchmark (issue 27 §2, §5; run on demand, not a timed test): how the orchestration grows with adapters.

    python -m tests.benchmarks.bench_fleet [--sizes 10 100 1000] [--run-sizes 10 100] [--backends sqlite postgresql]
                                           [--simulate 10000] [--json out.json]

For each backend (SQLite file; PostgreSQL from ``$SPECTRAL_TEST_PG_URL`` or a throwaway cluster, as in
``tests/pg.py``, one fresh schema per registry) and each size ``n``:

* register: ``register --dir`` over ``n`` tiny LoRA folders, door checks on (``--no-check`` past ``--check-max``);
* run (``n`` in ``--run-sizes``): the real nightly ``run`` with the fake evaluator (one policy, small limits) under
  one Prefect test server: wall seconds, SQL statements and Prefect task runs per adapter, and the overhead per
  adapter = (wall - model work) / n, model work being what the registry records the stages cost (decomposition
  and calibration once per version, each candidate's write, each evaluation's scoring; ``scoring_s``: the last
  alone, what the fake evaluator measures of its own work);
* sizes not run get the same rows in bulk (:func:`tests.fleet_rows.populate_bulk`: every adapter refined under the
  run's key, a quarter promoted), so that what follows sees a refined fleet either way;
* no-op night: ``run`` again, nothing to do (the scan before the flow; no Prefect server);
* ``list`` / ``history`` / ``check``: wall seconds of the real command in a fresh process, and ``list``'s SQL
  statements;
* dashboard: ``render_dashboard`` seconds and page size.

``--simulate N``: an N-adapter registry in bulk (rows only), then the no-op night's scan and plan
(:func:`flows.prescan.look_for_work`) and ``list``. Absolute times depend on the machine's load: read the growth
(per-adapter numbers across sizes), not the seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
POLICY = "smooth_abs"
RUN_OPTIONS = ["--evaluator", "fake", "--task-limit", "20", "--guard-limit", "20", "--n-samples", "4",
               "--policy", POLICY, "--evaluator-option", 'rates={"smooth_abs": 0.9}']


class Statements:
    """Counts the SQL statements every engine of this process sends (a SQLAlchemy event listener)."""

    def __init__(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        self.n = 0
        event.listen(Engine, "before_cursor_execute", self._seen)

    def _seen(self, *args) -> None:
        self.n += 1

    @contextlib.contextmanager
    def count(self, into: dict, key: str):
        start = self.n
        yield
        into[key] = self.n - start


def _cli(*argv) -> tuple[int, str, float]:
    """``spectral-surgery ARGV`` in this process: (exit code, stdout, seconds)."""
    from spectral_surgery.flows.cli import main

    out = io.StringIO()
    t = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), time.perf_counter() - t


def _fresh_process(*argv) -> float:
    """Wall seconds of ``spectral-surgery ARGV`` in a new process (imports included: what a person waits for)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "spectral_surgery.flows.cli", *map(str, argv)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - t


def _task_runs() -> int:
    """Task runs the Prefect API holds (the harness's server)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return int(client._client.post("/task_runs/count", json={}).json())


def _model_seconds(reg) -> float:
    """What the registry records the model work cost: decomposition and calibration once per version (the stage's
    own cost, shared by its candidates), each candidate's write and γ, each evaluation's scoring."""
    from sqlalchemy import func, select

    from spectral_surgery.registry.db import session_scope
    from spectral_surgery.registry.models import Candidate, Evaluation

    with session_scope(reg.engine, write=False) as s:
        shared: dict[int, float] = {}
        own = 0.0
        for version_id, secs in s.execute(select(Candidate.adapter_version_id, Candidate.seconds_json)):
            secs = secs or {}
            stage = float(secs.get("decompose") or 0) + float(secs.get("calibrate") or 0)
            shared[version_id] = max(shared.get(version_id, 0.0), stage)
            own += float(secs.get("write") or 0) + float(secs.get("gamma") or 0)
        scoring = float(s.scalar(select(func.coalesce(func.sum(Evaluation.seconds), 0.0))))
    return sum(shared.values()) + own + scoring


def _scoring_seconds(reg) -> float:
    """The part of :func:`_model_seconds` that is the evaluations' scoring (the fake evaluator's own seconds per
    subject; 0 before it recorded them, when its scoring counted as overhead)."""
    from sqlalchemy import func, select

    from spectral_surgery.registry.db import session_scope
    from spectral_surgery.registry.models import Evaluation

    with session_scope(reg.engine, write=False) as s:
        return float(s.scalar(select(func.coalesce(func.sum(Evaluation.seconds), 0.0))))


def _registry_urls(backend: str, pg_admin: str | None):
    """A function returning a fresh registry URL (None: SQLite in the data dir) for ``backend``."""
    if backend == "sqlite":
        return lambda: None
    from sqlalchemy import make_url, text

    from spectral_surgery.registry.db import make_engine

    admin = make_engine(pg_admin).execution_options(isolation_level="AUTOCOMMIT")

    def fresh() -> str:
        name = f"ss_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        url = make_url(pg_admin)
        return url.set(query={**url.query, "options": f"-csearch_path={name}"}).render_as_string(hide_password=False)

    return fresh


def _adapters(root: Path, base: Path, n: int) -> Path:
    """``n`` tiny adapter folders under ``root/adapters-n`` (made once, shared by the backends)."""
    from tests import tiny

    folder = root / f"adapters-{n}"
    if not folder.is_dir():
        for i in range(n):
            tiny.save_adapter(base, folder / f"ad{i:05d}", seed=i + 1)
    return folder


def _data_args(data: Path, url: str | None) -> list:
    return ["--data-dir", data] + (["--db", url] if url else [])


def _run_key(data: Path, url: str | None, base: Path, calib: Path) -> str:
    """The adapter key a ``run`` with :data:`RUN_OPTIONS` gives a tiny math adapter on ``base`` with ``calib``."""
    from types import SimpleNamespace

    from spectral_surgery.flows.cli.run import run_config_from_args
    from spectral_surgery.tasks.keys import adapter_key as adapter_config_hash

    ns = argparse.Namespace(config=None, data_dir=data, db=url, evaluator="fake", task_limit=20, guard_limit=20,
                            concurrency=None, task_runner=None, dask_address=None, calib=None, device=None,
                            evaluator_option=['rates={"smooth_abs": 0.9}'], dry_run=False, review=False,
                            no_guard=False, policy=[POLICY], n_samples=4)
    config = run_config_from_args(ns).resolved()
    adapter = SimpleNamespace(config_json={"calib": str(calib)}, base_model_id=str(base), base_model_revision=None,
                              task_family="math", benchmark_override=None)
    return adapter_config_hash(config, adapter)


def measure(backend: str, n: int, *, root: Path, base: Path, calib: Path, artifact: Path, url: str | None,
            run: bool, check: bool, stmts: Statements) -> dict:
    """One backend at one size (see the module docstring)."""
    from spectral_surgery.flows import worker
    from spectral_surgery.flows.dashboard import render_dashboard
    from spectral_surgery.registry.repository import Registry
    from tests import fleet_rows

    data = root / f"{backend}-{n}"
    where = _data_args(data, url)
    row: dict = {"backend": backend, "adapters": n}
    assert _cli("init", *where)[0] == 0
    if run:
        folder = _adapters(root, base, n)
        argv = ["register", "--dir", folder, "--base", base, "--family", "math", "--calib", calib, *where]
        with stmts.count(row, "register_statements"):
            code, _, row["register_s"] = _cli(*argv, *([] if check else ["--no-check"]))
        assert code == 0, f"register --dir failed at {n}"
        row["register_checked"] = check
        reg = Registry.open(url, data)
        tasks_before = _task_runs()
        with stmts.count(row, "run_statements"):
            code, out, row["run_s"] = _cli("run", *RUN_OPTIONS, *where, "--json")
        summary = json.loads(out)
        assert code == 0 and summary["completed"] == n, (code, out[-2000:])
        row["run_task_runs"] = _task_runs() - tasks_before
        row["model_s"] = round(_model_seconds(reg), 2)
        row["scoring_s"] = round(_scoring_seconds(reg), 2)
        row["overhead_per_adapter_s"] = round((row["run_s"] - row["model_s"]) / n, 3)
        row["statements_per_adapter"] = round(row["run_statements"] / n, 1)
        row["task_runs_per_adapter"] = round(row["run_task_runs"] / n, 1)
    else:
        reg = Registry.open(url, data)
        t = time.perf_counter()
        fleet_rows.populate_bulk(reg, n, artifact, base=str(base), config_hash=_run_key(data, url, base, calib),
                                 adapter_config={"calib": str(calib)})
        row["bulk_rows_s"] = round(time.perf_counter() - t, 2)
    worker.reset()
    with stmts.count(row, "noop_statements"):
        code, out, row["noop_s"] = _cli("run", *RUN_OPTIONS, *where, "--json")
    noop = json.loads(out)
    assert code == 0 and noop["results"] == [] and noop.get("prefect"), out[-2000:]
    with stmts.count(row, "list_statements"):
        assert _cli("list", "--json", *where)[0] == 0
    row["list_s"] = round(_fresh_process("list", *where), 2)
    name = reg.list_adapters()[0].name
    row["history_s"] = round(_fresh_process("history", name, *where), 2)
    if check:
        row["check_s"] = round(_fresh_process("check", *where), 2)
    t = time.perf_counter()
    page = render_dashboard(reg, root / f"dashboard-{backend}-{n}.html")
    row["dashboard_s"] = round(time.perf_counter() - t, 2)
    row["dashboard_mb"] = round(page.stat().st_size / 1e6, 2)
    reg.close()
    worker.reset()
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}


def simulate(backend: str, n: int, *, root: Path, base: Path, calib: Path, artifact: Path, url: str | None,
             stmts: Statements) -> dict:
    """``n`` adapters in bulk (rows only): the no-op night's scan and plan, and ``list``."""
    from spectral_surgery.flows import prescan, worker
    from spectral_surgery.registry.repository import Registry
    from spectral_surgery.tasks.run_config import RunConfig
    from tests import fleet_rows

    data = root / f"{backend}-sim-{n}"
    where = _data_args(data, url)
    assert _cli("init", *where)[0] == 0
    reg = Registry.open(url, data)
    row: dict = {"backend": backend, "adapters": n, "simulated": True}
    key = _run_key(data, url, base, calib)
    t = time.perf_counter()
    fleet_rows.populate_bulk(reg, n, artifact, base=str(base), config_hash=key, adapter_config={"calib": str(calib)})
    row["bulk_rows_s"] = round(time.perf_counter() - t, 2)
    worker.reset()
    config = RunConfig(data_dir=data, registry_url=url, evaluator="fake", task_limit=20, guard_limit=20,
                       evaluator_options={"rates": {"smooth_abs": 0.9}},
                       surgery={"policies": [POLICY], "calib": {"n_samples": 4}})
    with stmts.count(row, "scan_statements"):
        t = time.perf_counter()
        found = prescan.look_for_work(config)
        row["scan_and_plan_s"] = round(time.perf_counter() - t, 2)
    row["work_found"] = found.work
    t = time.perf_counter()
    pending = reg.pending_work(key)
    row["plan_only_s"] = round(time.perf_counter() - t, 3)
    row["pending"] = len(pending)
    with stmts.count(row, "list_statements"):
        code, _, row["list_in_process_s"] = _cli("list", "--json", *where)
    row["list_s"] = round(_fresh_process("list", *where), 2)
    reg.close()
    worker.reset()
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}


def _pg_admin() -> tuple[str | None, object]:
    from spectral_surgery.registry.db import normalize_url

    if os.environ.get("SPECTRAL_TEST_PG_URL"):
        return normalize_url(os.environ["SPECTRAL_TEST_PG_URL"]), lambda: None
    from tests.pg import _start_cluster

    return _start_cluster()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--run-sizes", type=int, nargs="*", default=[10, 100],
                    help="Sizes that get a real nightly run (the others get the same rows in bulk).")
    ap.add_argument("--check-max", type=int, default=100, help="Largest size whose register and `check` read files.")
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"])
    ap.add_argument("--simulate", type=int, default=10_000, help="Adapters of the bulk registry (0: none).")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    import torch
    from prefect.testing.utilities import prefect_test_harness

    from tests import tiny

    torch.set_num_threads(1)
    stmts = Statements()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, prefect_test_harness(server_startup_timeout=600):
        root = Path(tmp)
        base = tiny.save_base(root / "base")
        artifact = tiny.save_adapter(base, root / "artifact", seed=1)
        calib = root / "calib.jsonl"
        calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
        for backend in args.backends:
            admin, stop = _pg_admin() if backend == "postgresql" else (None, lambda: None)
            try:
                fresh = _registry_urls(backend, admin)
                for n in args.sizes:
                    row = measure(backend, n, root=root, base=base, calib=calib, artifact=artifact, url=fresh(),
                                  run=n in args.run_sizes, check=n <= args.check_max, stmts=stmts)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                if args.simulate:
                    row = simulate(backend, args.simulate, root=root, base=base, calib=calib, artifact=artifact,
                                   url=fresh(), stmts=stmts)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            finally:
                stop()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return {"rows": rows}


if __name__ == "__main__":
    main()
