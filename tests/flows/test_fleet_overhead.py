"""What the nightly flow's orchestration costs per adapter (issue 27 §2; docs/fleet.md, "Measured"), pinned as counts
that do not depend on the machine: the SQL statements the run sends and the Prefect runs it creates for a 3- and a
6-adapter night with the fake evaluator, on SQLite and PostgreSQL. A regression (a task or subflow run per step again,
a statement per candidate or subject, a query that grows with the fleet) fails here; the seconds are measured by
``tests/benchmarks/bench_fleet.py``.
"""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from spectral_surgery.flows import worker
from spectral_surgery.flows.refine_fleet import run_nightly
from spectral_surgery.tasks.run_config import RunConfig

SIZES = (3, 6)  # two fleet sizes: the statements per adapter must not grow with the fleet
# One task run per adapter for the refinement and one for reading its source at the scan (the only retried step);
# no subflow run.
TASK_RUNS_PER_ADAPTER = 2
FLOW_RUNS = 1  # the nightly flow itself
# SQL statements per adapter of this night (7 candidates, 11 scores, 2 guard verdicts, a decision per adapter).
# Measured at 3 and 6 adapters: 73.0 and 63.5 on SQLite (which counts its BEGINs: one per transaction), 54.0 and 46.5
# on PostgreSQL; the adapters from the 4th to the 6th cost 54 and 39 each. Was 75/65.5 and 55/47.5 before the
# refinement read its adapter with its version (issue 27 §2, third pass); 114 at 3 on SQLite before the per-adapter
# writes were batched; 249 before one task run per adapter. The margin allows for the lease's heartbeat (a
# transaction every 30 s of a slow run: 3 statements on SQLite, 2 on PostgreSQL), not for a statement per
# candidate's read or per score again: that alone adds 10 or more.
STATEMENTS_PER_ADAPTER = {"sqlite": 76, "postgresql": 57}
# The marginal adapter (the statements of 6 adapters less those of 3, per adapter added) costs no more than the
# average one: nothing is read once per adapter already seen (no O(n²) query).
MARGINAL_SLACK = 3


@contextlib.contextmanager
def counting_statements():
    """Count every SQL statement this process sends while the block runs (``box["n"]``)."""
    box = {"n": 0}

    def seen(*_args) -> None:
        box["n"] += 1

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield box
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


def _prefect_counts() -> tuple[int, int]:
    """(task runs, flow runs) the Prefect API holds (the session's test server)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return (int(client._client.post("/task_runs/count", json={}).json()),
                int(client._client.post("/flow_runs/count", json={}).json()))


pytestmark = pytest.mark.usefixtures("fresh_worker")


def _night(cfg: RunConfig, dirs, fleet_base) -> tuple[int, int, int]:
    """Register ``dirs`` and run one night: (SQL statements, Prefect task runs, flow runs) it cost."""
    reg = worker.registry(cfg)
    for d in dirs:
        reg.register_adapter(d.name, str(d), str(fleet_base), "math")
    tasks_before, flows_before = _prefect_counts()
    with counting_statements() as statements:
        out = run_nightly(cfg)
    tasks_after, flows_after = _prefect_counts()
    assert out["completed"] == len(dirs) and out["failed"] == 0
    # the work is all there: every candidate of the ladder written, scored and decided
    for d in dirs:
        version = reg.list_versions(d.name)[0]
        assert len(reg.list_candidates(version.id)) == 7
        assert len(reg.list_evaluations(version.id)) >= 10
        assert reg.latest_decision(version.id) is not None
    worker.reset()
    return statements["n"], tasks_after - tasks_before, flows_after - flows_before


@contextlib.contextmanager
def _registry_url(backend: str, request):
    """A fresh, empty registry for one night: SQLite in the night's data dir (None), or a new schema on the
    PostgreSQL server (``$SPECTRAL_TEST_PG_URL`` or a throwaway cluster; the test skips without one), dropped after."""
    if backend == "sqlite":
        yield None
        return
    from tests.pg import fresh_schema

    with fresh_schema(request.getfixturevalue("pg_server")) as url:
        yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_orchestration_per_adapter_is_bounded_and_flat(backend, request, prefect_harness, make_fleet, fleet_base,
                                                       tmp_path):
    """The statements per adapter stay under the budget at 3 and 6 adapters and do not grow from one to the other;
    on PostgreSQL as on SQLite."""
    counts = {}
    for n in SIZES:
        dirs, calib = make_fleet(n, root=tmp_path / f"fleet-{n}")
        with _registry_url(backend, request) as url:
            cfg = RunConfig(data_dir=tmp_path / f"data-{n}", registry_url=url, evaluator="fake",
                            evaluator_options={"rates": {"smooth_abs": 0.9}}, calib_source=str(calib),
                            task_limit=20, guard_limit=20,
                            surgery={"policies": ["smooth_abs"], "calib": {"n_samples": 4}})
            counts[n], task_runs, flow_runs = _night(cfg, dirs, fleet_base)
        assert task_runs == TASK_RUNS_PER_ADAPTER * n
        assert flow_runs == FLOW_RUNS
    per_adapter = {n: counts[n] / n for n in SIZES}
    small, large = SIZES
    marginal = (counts[large] - counts[small]) / (large - small)
    assert all(v <= STATEMENTS_PER_ADAPTER[backend] for v in per_adapter.values()), per_adapter
    assert marginal <= per_adapter[small] + MARGINAL_SLACK, (marginal, per_adapter)
