"""What the nightly flow's orchestration costs per adapter (issue 27 §2; docs/fleet.md, "Measured"), pinned as counts
that do not depend on the machine: the SQL statements the run sends and the Prefect runs it creates for a 3-adapter
night with the fake evaluator. A regression (a task or subflow run per step again, a query per subject) fails here;
the seconds are measured by ``tests/benchmarks/bench_fleet.py``.
"""

from __future__ import annotations

import contextlib

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from spectral_surgery.flows import worker
from spectral_surgery.flows.refine_fleet import run_nightly
from spectral_surgery.tasks.run_config import RunConfig

ADAPTERS = 3
# One task run per adapter for the refinement and one for reading its source at the scan (the only retried step);
# no subflow run.
TASK_RUNS_PER_ADAPTER = 2
FLOW_RUNS = 1  # the nightly flow itself
# Measured 114 per adapter for this night on SQLite (before: 249, and 7 task runs and a subflow run per adapter); the
# margin allows for the lease's heartbeat (a statement every 30 s of a slow run), not for a query per candidate or
# subject again (7 candidates and 10 scores per adapter).
STATEMENTS_PER_ADAPTER = 125


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


@pytest.fixture(autouse=True)
def _fresh_worker():
    worker.reset()
    yield
    worker.reset()


def test_orchestration_per_adapter_is_bounded(prefect_harness, make_fleet, fleet_base, tmp_path):
    dirs, calib = make_fleet(ADAPTERS)
    cfg = RunConfig(data_dir=tmp_path / "data", evaluator="fake", evaluator_options={"rates": {"smooth_abs": 0.9}},
                    calib_source=str(calib), task_limit=20, guard_limit=20,
                    surgery={"policies": ["smooth_abs"], "calib": {"n_samples": 4}})
    reg = worker.registry(cfg)
    for d in dirs:
        reg.register_adapter(d.name, str(d), str(fleet_base), "math")
    tasks_before, flows_before = _prefect_counts()
    with counting_statements() as statements:
        out = run_nightly(cfg)
    tasks_after, flows_after = _prefect_counts()
    assert out["completed"] == ADAPTERS and out["failed"] == 0
    # the work is all there: every candidate of the ladder written, scored and decided
    for d in dirs:
        version = reg.list_versions(d.name)[0]
        assert len(reg.list_candidates(version.id)) == 7
        assert reg.latest_decision(version.id) is not None
    assert tasks_after - tasks_before == TASK_RUNS_PER_ADAPTER * ADAPTERS
    assert flows_after - flows_before == FLOW_RUNS
    assert statements["n"] <= STATEMENTS_PER_ADAPTER * ADAPTERS, statements["n"] / ADAPTERS
