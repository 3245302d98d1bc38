"""The MLflow alias ``production`` follows every manual production move (``promote``, ``rollback``, ``approve``)
against a real tracking server: the version whose files production serves gets the alias, registered for the move
when none exists; an unreachable server only warns and the move stands."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from spectral_surgery.tasks.adapter_io import adapter_content_sha256
from spectral_surgery.tasks.delivery.mlflow_run import MlflowConfig
from tests.flows.cli_support import assert_error, cli
from tests.mlflow_server import free_port
from tests.records import statistics

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
MlflowClient = pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[test]'"
                                   ).MlflowClient
MODEL = "spectral-surgery-ad0"  # the default prefix + the adapter


def alias_files(client, model: str, tmp_path, tag: str) -> tuple[str, str]:
    """(version holding the alias, content sha256 of its files as downloaded from the server)."""
    mv = client.get_model_version_by_alias(model, "production")
    got = client.download_artifacts(mv.run_id, "adapter", str(tmp_path / f"dl-{tag}"))
    return mv.version, adapter_content_sha256(got)


@pytest.mark.slow
def test_the_alias_follows_manual_promotions_rollbacks_and_approvals(reg_env, mlflow_server, tmp_path, monkeypatch):
    from spectral_surgery.flows.integrations.mlflow_client import mirror_decision
    from spectral_surgery.tasks.run_config import RunConfig

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)
    reg, data = reg_env.reg, reg_env.data
    sha0, sha1 = (adapter_content_sha256(p) for p in reg_env.edited)
    v0 = reg_env.versions["ad0"]
    cand = reg.add_candidate(v0.id, "m" * 64, "abs_select", 0, artifact_uri=str(reg_env.edited[1]),
                             artifact_sha256=sha1)

    r = cli("promote", cand.id, "--reason", "by hand", "--data-dir", data, "--json").json()
    assert r["mlflow"]["registered"] and r["mlflow"]["model"] == MODEL
    first = r["mlflow"]["model_version"]
    assert alias_files(client, MODEL, tmp_path, "1") == (first, sha1)
    mv = client.get_model_version(MODEL, first)
    assert (mv.tags["spectral_surgery.event_kind"], mv.tags["spectral_surgery.policy"]) == ("manual_override",
                                                                                           "abs_select")
    assert mv.tags["spectral_surgery.event_reason"] == "by hand"

    # back to the gate's promotion (never mirrored): its files are registered for the rollback
    r = cli("rollback", "ad0", "--reason", "regression", "--data-dir", data, "--json").json()
    second = r["mlflow"]["model_version"]
    assert r["mlflow"]["registered"] and second != first
    assert alias_files(client, MODEL, tmp_path, "2") == (second, sha0)

    # moves between files already registered only move the alias
    r = cli("promote", cand.id, "--reason", "again", "--data-dir", data, "--json").json()
    assert (r["mlflow"]["registered"], r["mlflow"]["model_version"]) == (False, first)
    r = cli("rollback", "ad0", "--reason", "again", "--data-dir", data, "--json").json()
    assert (r["mlflow"]["registered"], r["mlflow"]["model_version"]) == (False, second)
    assert client.get_model_version_by_alias(MODEL, "production").version == second
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 2

    # an approval: the reviewed decision was mirrored (nothing registered then); its run gets the files
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    mcfg = {"tracking_uri": mlflow_server, "experiment": "reviewed", "registered_model_prefix": "ss-"}
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"mlflow": mcfg}))
    v1 = reg_env.versions["ad1"]
    c1 = reg.add_candidate(v1.id, "n" * 64, "smooth_abs", 0, artifact_uri=str(reg_env.edited[1]),
                           artifact_sha256=sha1)
    d = reg.record_decision(v1.id, "n" * 64, run_id=None, promoted_candidate_id=c1.id, candidate_key="n" * 64,
                            statistics=statistics(verdict="promote", promoted="smooth_abs"), sentence="smooth_abs wins")
    review = reg.request_review(d, window=timedelta(hours=24), now=datetime.now(UTC)).review
    run_cfg = RunConfig(data_dir=data, mlflow=MlflowConfig(**mcfg))
    mirrored = mirror_decision(run_cfg, reg, v1, reg.get_adapter("ad1"), d.id, benchmark="ss_mc",
                               guard_benchmark=None, production_moved=False)
    assert mirrored["model_version"] is None
    r = cli("approve", review.id, "--reason", "checked", "--config", config, "--data-dir", data, "--json").json()
    assert r["mlflow"]["registered"] and r["mlflow"]["model"] == "ss-ad1"
    mv = client.get_model_version_by_alias("ss-ad1", "production")
    assert mv.run_id == mirrored["run_id"] and mv.tags["spectral_surgery.decision_id"] == str(d.id)
    assert mv.tags["spectral_surgery.event_kind"] == "approval"
    assert client.get_run(mirrored["run_id"]).data.tags["spectral_surgery.production_moved"] == "true"
    assert alias_files(client, "ss-ad1", tmp_path, "3")[1] == sha1


def test_without_a_server_nothing_is_tried_and_an_unreachable_one_only_warns(reg_env, tmp_path, monkeypatch,
                                                                            caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = reg_env.reg.production("ad0")
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({"mlflow": {"tracking_uri": "http://x", "prefix": "typo"}}))
    assert_error(cli("rollback", "ad0", "--reason", "x", "--config", tmp_path / "none.yaml", "--data-dir",
                     reg_env.data), "none.yaml", code=3)
    assert_error(cli("rollback", "ad0", "--reason", "x", "--config", bad, "--data-dir", reg_env.data), "prefix")
    assert reg_env.reg.production("ad0") == before  # a bad --config is refused before anything moves
    r = cli("rollback", "ad0", "--reason", "no mlflow", "--data-dir", reg_env.data, "--json").json()
    assert "mlflow" not in r
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://bot:hunter2@127.0.0.1:{free_port()}")  # nothing listens
    cand = reg_env.reg.add_candidate(reg_env.versions["ad0"].id, "u" * 64, "abs_select", 0,
                                     artifact_uri=str(reg_env.edited[1]),
                                     artifact_sha256=adapter_content_sha256(reg_env.edited[1]))
    r = cli("promote", cand.id, "--reason", "server down", "--data-dir", reg_env.data, "--json")
    assert r.code == 0 and "hunter2" not in r.out
    assert "Connection refused" in r.json()["mlflow"]["error"]
    assert reg_env.reg.production("ad0").candidate_id == cand.id  # the move stands
    warned = [x.getMessage() for x in caplog.records if "could not move the MLflow alias" in x.getMessage()]
    assert len(warned) == 1 and "hunter2" not in warned[0]
