"""Flow-test fixtures: one Prefect test server for the session, tiny fleets on disk."""

from __future__ import annotations

import json
import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pytest

from tests import tiny


@pytest.fixture(scope="session")
def prefect_harness():
    """A temporary Prefect API for the whole session (started once: it takes seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def fleet_base(tmp_path_factory):
    """A tiny base model shared by the flow tests."""
    return tiny.save_base(tmp_path_factory.mktemp("fleet_base"))


@pytest.fixture
def make_fleet(fleet_base, tmp_path):
    """Build ``n`` tiny adapters (names ad0..) and a calibration file; returns (adapter dirs, calib path)."""

    def make(n: int = 3, root=None):
        root = root or tmp_path
        dirs = [tiny.save_adapter(fleet_base, root / f"ad{i}", seed=i + 1) for i in range(n)]
        calib = root / "calib.jsonl"
        calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
        return dirs, calib

    return make


from tests.mlflow_server import mlflow_server  # noqa: E402,F401  (a real MLflow tracking server, once a session)
