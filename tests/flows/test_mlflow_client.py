"""The MLflow mirror against a real tracking server (loopback, SQLite store): the nightly flow logs one run per
decided adapter version and registers the promoted adapter with alias ``production``; a mirror that cannot reach
its server only warns."""

from __future__ import annotations

import json
import os

import pytest

from spectral_surgery.flows import worker
from spectral_surgery.flows.integrations.mlflow_client import mirror_decision
from spectral_surgery.flows.refine_fleet import run_nightly
from spectral_surgery.tasks.adapter_io import adapter_content_sha256
from spectral_surgery.tasks.config import CalibConfig, SurgeryConfig
from spectral_surgery.tasks.decision.gate import GateConfig
from spectral_surgery.tasks.delivery.mlflow_run import MlflowConfig
from spectral_surgery.tasks.run_config import RunConfig
from tests.mlflow_server import free_port

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
MlflowClient = pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[test]'"
                                   ).MlflowClient

WINNER = {"smooth_abs": 0.9}  # the fake evaluator scores smooth_abs' documents at 0.9, every other subject at 0.5


def _config(data_dir, calib, mlflow: MlflowConfig, **kw) -> RunConfig:
    return RunConfig(data_dir=data_dir, evaluator="fake", evaluator_options={"n_docs": 60, "rates": WINNER},
                     calib_source=str(calib), task_limit=60, guard_limit=60,
                     surgery=SurgeryConfig(policies=["smooth_abs"], random_control_seeds=[42],
                                           calib=CalibConfig(n_samples=4, batch_size=4)),
                     mlflow=mlflow, **kw)


pytestmark = pytest.mark.usefixtures("fresh_worker")


@pytest.fixture(autouse=True)
def _no_tracking_uri(monkeypatch):
    """No MLFLOW_TRACKING_URI from the environment: each test's config names its own server."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.mark.slow
def test_nightly_run_is_mirrored_and_promoted_adapter_registered(prefect_harness, make_fleet, fleet_base, tmp_path,
                                                                 mlflow_server, monkeypatch, capfd):
    host = mlflow_server.removeprefix("http://")
    uri = f"http://bot:hunter2@{host}"  # a password in the URI: it reaches MLflow, never a stored snapshot
    mcfg = MlflowConfig(tracking_uri=uri, experiment="nightly-roundtrip", registered_model_prefix="ss-")
    (ad0,), calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib, mcfg)
    reg = worker.registry(cfg)
    reg.register_adapter("ad0", str(ad0), str(fleet_base), "math")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")  # run_nightly puts the URI here; monkeypatch restores it
    out = run_nightly(cfg)
    assert "hunter2" not in capfd.readouterr().out  # MLflow prints no "View run at <URI>" line
    (res,) = out["results"]
    assert res["status"] == "completed" and res["promoted"] == "smooth_abs"
    assert res["mlflow"]["reused"] is False, res["mlflow"]
    assert os.environ["MLFLOW_TRACKING_URI"] == uri
    snapshot = json.dumps(reg.get_run(out["run_id"]).config_snapshot)
    assert "hunter2" not in snapshot

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("nightly-roundtrip")
    (run,) = client.search_runs([exp.experiment_id])
    decision = reg.get_decision_by_id(res["decision_id"])
    stats = decision.statistics_json
    version = reg.get_version(decision.adapter_version_id)
    assert run.info.run_id == res["mlflow"]["run_id"] and run.info.status == "FINISHED"
    assert run.info.run_name == f"ad0@{version.content_sha256[:12]}"
    # params: what decided
    p = run.data.params
    assert p["adapter.name"] == "ad0" and p["adapter.version_sha256"] == version.content_sha256
    assert p["adapter.benchmark"] == res["benchmark"] and p["gate.alpha"] == str(cfg.gate.alpha)
    assert json.loads(p["surgery.policies"]) == ["smooth_abs"] and p["evaluator"] == "fake"
    assert "hunter2" not in json.dumps(p)
    # metrics: every arm's task and guard score, the gains and p-values the registry recorded
    m = run.data.metrics
    for arm, mean in stats["means"].items():
        assert m[f"task/{arm}"] == pytest.approx(mean)
    for arm, mean in stats["guard_means"].items():
        assert m[f"guard/{arm}"] == pytest.approx(mean)
    assert m["task/smooth_abs"] > m["task/baseline"]
    assert {"task/random_index-s42", "task/global_scalar", "task/zero_rebuild", "task/bare_base"} <= set(m)
    v = next(x for x in stats["verdicts"] if x["name"] == "smooth_abs")
    assert m["p_vs_baseline/smooth_abs"] == pytest.approx(v["vs_baseline"]["p_value"])
    assert m["p_vs_control/smooth_abs"] == pytest.approx(v["vs_control"]["p_value"])
    assert m["p_adjusted/smooth_abs"] == pytest.approx(v["p_adjusted"])
    assert m["delta_vs_baseline/smooth_abs"] == pytest.approx(v["vs_baseline"]["delta"])
    assert v["vs_baseline"]["delta"] > 0
    assert m["decision/promoted"] == 1.0
    # tags: the verdict and the sentence
    t = run.data.tags
    assert t["spectral_surgery.decision_id"] == str(decision.id) and t["spectral_surgery.verdict"] == "promote"
    assert t["mlflow.note.content"] == decision.sentence == res["sentence"]
    assert t["spectral_surgery.registry_run_id"] == str(out["run_id"])
    # the promoted adapter: its files as the run's artifacts, a model version, alias production
    mv = client.get_model_version_by_alias("ss-ad0", "production")
    assert mv.version == res["mlflow"]["model_version"] and mv.run_id == run.info.run_id
    assert mv.source == f"runs:/{run.info.run_id}/adapter"
    assert mv.tags["spectral_surgery.decision_id"] == str(decision.id)
    assert mv.tags["spectral_surgery.policy"] == "smooth_abs"
    assert float(mv.tags["spectral_surgery.p_vs_baseline"]) == pytest.approx(v["vs_baseline"]["p_value"])
    assert mv.tags["spectral_surgery.sentence"] == decision.sentence
    cand = reg.get_candidate(decision.promoted_candidate_id)
    got = client.download_artifacts(run.info.run_id, "adapter", str(tmp_path / "download"))
    assert adapter_content_sha256(got) == cand.artifact_sha256  # the very files production serves
    assert {f.path for f in client.list_artifacts(run.info.run_id, "decision")} == {
        "decision/decision.md", "decision/statistics.json"}

    # the same decision again: found by its id, nothing logged twice
    again = mirror_decision(cfg, reg, version, reg.get_adapter("ad0"), decision.id, benchmark=res["benchmark"],
                            guard_benchmark="x", production_moved=True)
    assert again["reused"] and again["run_id"] == run.info.run_id
    assert len(client.search_runs([exp.experiment_id])) == 1

    # a gate-only change re-decides from the stored outcomes: a second run; the alias moves to its version
    worker.reset()
    cfg2 = cfg.model_copy(update={"gate": GateConfig(alpha=0.04)})
    (res2,) = run_nightly(cfg2)["results"]
    assert res2["decision_id"] != res["decision_id"] and res2["mlflow"]["reused"] is False
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.data.params["gate.alpha"] for r in runs] == ["0.05", "0.04"]
    assert client.get_model_version_by_alias("ss-ad0", "production").version == res2["mlflow"]["model_version"]
    assert len(client.search_model_versions("name='ss-ad0'")) == 2

    # a dry run decides (a third run) but moves nothing: nothing registered, the alias stays
    worker.reset()
    (res3,) = run_nightly(cfg.model_copy(update={"gate": GateConfig(alpha=0.03), "promote": False}))["results"]
    assert res3["promoted"] is None and res3["mlflow"]["model_version"] is None
    dry = client.get_run(res3["mlflow"]["run_id"])
    assert dry.data.tags["spectral_surgery.production_moved"] == "false" and dry.data.params["promote"] == "false"
    assert dry.data.tags["spectral_surgery.promoted_candidate"] == "smooth_abs"  # what the gate chose
    assert client.list_artifacts(dry.info.run_id, "adapter") == []
    assert client.get_model_version_by_alias("ss-ad0", "production").version == res2["mlflow"]["model_version"]
    assert len(client.search_model_versions("name='ss-ad0'")) == 2


@pytest.mark.slow
def test_unreachable_server_only_warns(prefect_harness, make_fleet, fleet_base, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    mcfg = MlflowConfig(tracking_uri=f"http://bot:hunter2@127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    (ad0,), calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib, mcfg)
    reg = worker.registry(cfg)
    reg.register_adapter("ad0", str(ad0), str(fleet_base), "math")
    out = run_nightly(cfg)
    (res,) = out["results"]
    assert out["failed"] == 0 and res["status"] == "completed" and res["promoted"] == "smooth_abs"
    assert reg.production("ad0") is not None  # production moved: the registry is the record, not MLflow
    err = res["mlflow"]["error"]
    assert "Connection refused" in err and "hunter2" not in err
    warned = [r.getMessage() for r in caplog.records if "could not mirror ad0's decision to MLflow" in r.getMessage()]
    assert len(warned) == 1 and "hunter2" not in warned[0] and "bot:***@127.0.0.1" in warned[0]
