"""Credentials never stored (tasks/secrets.py): a password in the registry URL reaches neither the registry, nor
Prefect's database, nor the console, after a real nightly run on PostgreSQL."""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest
from sqlalchemy import inspect, make_url, text

from spectral_surgery.flows import worker
from spectral_surgery.tasks.run_config import RunConfig
from spectral_surgery.tasks.secrets import has_password, redact_text, redact_url
from tests import tiny
from tests.flows.cli_support import cli


def test_redact_url():
    assert redact_url("postgresql+psycopg://ss:pa:ss@db.internal:5432/reg?sslmode=require") == \
        "postgresql+psycopg://ss:***@db.internal:5432/reg?sslmode=require"
    assert redact_url("postgresql://ss@db/reg") == "postgresql://ss@db/reg"  # nothing to hide
    assert redact_url("sqlite:////tmp/r.db") == "sqlite:////tmp/r.db" and redact_url(None) is None
    assert has_password("postgresql://u:x@h/d") and not has_password("postgresql://u@h/d")
    assert not has_password("postgresql://u:***@h/d") and not has_password(None)
    assert redact_text("could not connect to postgresql://u:hunter2@h/d", ["hunter2", ""]) == \
        "could not connect to postgresql://u:***@h/d"


def test_every_dump_of_a_run_config_leaves_the_password_out():
    cfg = RunConfig(registry_url="postgresql://u:hunter2@h/d")
    assert cfg.registry_url == "postgresql://u:hunter2@h/d"  # the object itself keeps it (to connect)
    assert "hunter2" not in json.dumps(cfg.model_dump(mode="json")) and "hunter2" not in cfg.model_dump_json()
    assert cfg.model_dump()["registry_url"] == "postgresql://u:***@h/d"


@pytest.mark.postgres
def test_a_planted_password_is_nowhere_after_a_run(prefect_harness, fleet_base, pg_url, tmp_path, capfd):
    url = make_url(pg_url)
    secret = url.password or "planted-s3cret-9f2c"  # CI's server trusts loopback: any password connects
    url = url.set(password=secret).render_as_string(hide_password=False)
    ad = tiny.save_adapter(fleet_base, tmp_path / "ad0", seed=1)
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    data = tmp_path / "home"
    worker.reset()
    with mock.patch.dict(os.environ):  # run_nightly hands the URL to the flow through $SPECTRAL_SURGERY_DB
        assert cli("init", "--data-dir", data, "--db", url).code == 0
        reg = cli("register", "ad0", "--source", ad, "--base", fleet_base, "--family", "math", "--calib", calib,
                  "--data-dir", data, "--db", url)
        config = tmp_path / "run.yaml"
        config.write_text("surgery:\n  calib:\n    n_samples: 4\n    batch_size: 4\nevaluator_options:\n  n_docs: 40\n")
        run = cli("run", "--data-dir", data, "--db", url, "--config", config, "--evaluator", "fake",
                  "--task-limit", 40, "--guard-limit", 40, "--json", "-v")
        assert run.code == 0, run.err[-3000:] + run.out[-2000:]
    worker.reset()
    assert run.code == 0, run.err[-3000:]
    assert json.loads(run.out)["failed"] == 0
    # 1. the console (stdout, stderr, Prefect's logs at -v)
    out, err = capfd.readouterr()
    for text_ in (reg.out, reg.err, run.out, run.err, out, err):
        assert secret not in text_
    # 2. every text of every table of the registry
    from spectral_surgery.registry.db import make_engine

    engine = make_engine(url)
    with engine.connect() as conn:
        tables = inspect(conn).get_table_names()
        dump = "\n".join(str(row) for t in tables for row in conn.execute(text(f'SELECT * FROM "{t}"')))
    engine.dispose()
    assert "refinement_runs" in tables and "candidates" in tables and len(dump) > 1000
    assert secret not in dump
    # 3. Prefect's own database (flow-run parameters, logs, task inputs), byte for byte
    from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL

    db_file = Path(make_url(PREFECT_API_DATABASE_CONNECTION_URL.value()).database)
    blobs = [db_file.read_bytes()] + [p.read_bytes() for p in db_file.parent.glob(db_file.name + "-*")]  # WAL
    assert sum(len(b) for b in blobs) > 10_000
    assert all(secret.encode() not in b for b in blobs)
