"""Flow-test fixtures: tiny fleets on disk (the session's Prefect test server is ``prefect_harness`` in
tests/conftest.py)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests import tiny


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


@pytest.fixture
def reg_env(fleet_base, tmp_path):
    """A registry for the export and publish CLI tests: ad0 with a gate promotion (``env.decision``; promote more
    with :func:`tests.flows.cli_support.promote`), ad1 unedited (never promoted), ad2 registered without a version."""
    from spectral_surgery.registry.repository import Registry
    from spectral_surgery.tasks.adapter_io import adapter_content_sha256
    from tests.flows.cli_support import cli, promote

    src = tmp_path / "src"
    data = tmp_path / "home"
    assert cli("init", "--data-dir", data).code == 0
    dirs = {n: tiny.save_adapter(fleet_base, src / n, seed=i + 1) for i, n in enumerate(("ad0", "ad1", "ad2"))}
    edited = [tiny.save_adapter(fleet_base, src / f"edit{i}", seed=10 + i) for i in range(2)]
    for name, d in dirs.items():
        assert cli("register", name, "--source", d, "--base", fleet_base, "--family", "math",
                   "--data-dir", data).code == 0
    reg = Registry.open(None, data)
    versions = {n: reg.record_version(n, adapter_content_sha256(dirs[n]), "v1", dirs[n])[0] for n in ("ad0", "ad1")}
    env = SimpleNamespace(data=data, dirs=dirs, edited=edited, versions=versions, base=fleet_base, reg=reg)
    env.decision = promote(env, edited[0], "smooth_abs", "d0")
    yield env
    reg.close()


from tests.mlflow_server import mlflow_server  # noqa: E402,F401  (a real MLflow tracking server, once a session)
