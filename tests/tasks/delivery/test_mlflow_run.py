"""The MLflow mirror's mapping (tasks/delivery/mlflow_run.py): a real gate decision → params, metrics, tags; no
server."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from spectral_surgery.tasks.decision.gate import GateConfig
from spectral_surgery.tasks.delivery.mlflow_run import (
    metric_key,
    model_version_tags,
    registered_model_name,
    run_metrics,
    run_name,
    run_params,
    run_tags,
)
from spectral_surgery.tasks.run_config import RunConfig
from tests.records import ladder_promotion


def _statistics() -> dict:
    """A decision of the project's gate on synthetic 0/1 outcomes, as the registry hands it back."""
    return ladder_promotion().to_json()


def test_metrics_carry_every_arm_and_every_test():
    stats = _statistics()
    assert stats["promoted"] == "smooth_abs"
    m = run_metrics(stats)
    for arm, mean in stats["means"].items():  # every evaluated arm, controls and canaries too
        assert m[f"task/{arm}"] == pytest.approx(mean)
    assert m["task/smooth_abs"] == pytest.approx(0.7) and m["task/baseline"] == pytest.approx(0.5)
    assert m["guard/random_index-s42"] == pytest.approx(0.8)
    v = next(x for x in stats["verdicts"] if x["name"] == "smooth_abs")
    assert m["delta_vs_baseline/smooth_abs"] == pytest.approx(0.2)
    assert m["p_vs_baseline/smooth_abs"] == v["vs_baseline"]["p_value"] < 1e-6
    assert m["p_vs_control/smooth_abs"] == v["vs_control"]["p_value"]
    assert m["p_vs_scalar/smooth_abs"] == v["vs_scalar"]["p_value"]
    assert m["ci_low_vs_baseline/smooth_abs"] == v["vs_baseline"]["ci_low"]
    assert m["p_adjusted/smooth_abs"] == v["p_adjusted"]
    assert m["guard_delta/smooth_abs"] == 0.0 and m["guard_p/smooth_abs"] == v["guard_test"]["p_value"]
    assert m["passed/smooth_abs"] == 1.0 and m["passed/abs_select"] == 0.0 and m["n/smooth_abs"] == 200
    assert "p_vs_scalar/global_scalar" not in m  # the scalar is not compared with itself
    assert m["decision/promoted"] == 1.0 and m["decision/baseline_task"] == pytest.approx(0.5)
    assert m["canary/bare_base/n_differ"] == 100 and m["canary/zero_rebuild/fraction"] == 0.0
    assert all(isinstance(x, float) for x in m.values())


def test_params_are_the_settings_that_decided():
    stats = _statistics()
    cfg = RunConfig(task_limit=200, gate=GateConfig(alpha=0.01))
    stats["config"]["alpha"] = 0.025  # a sequential decision records the level of its look: that one is logged
    p = run_params(adapter={"name": "ad0", "version_sha256": "ab" * 32, "base_model": "m", "base_model_revision": None,
                            "task_family": "math", "benchmark": "ss_math", "guard_benchmark": "ss_ifeval"},
                   run_config=cfg.model_dump(mode="json"), surgery=cfg.surgery.model_dump(mode="json"),
                   statistics=stats)
    assert p["adapter.name"] == "ad0" and p["adapter.base_model_revision"] == "null"
    assert p["gate.alpha"] == "0.025" and p["gate.correction"] == "holm"
    assert p["surgery.edit.eta"] == "0.2" and json.loads(p["surgery.policies"]) == list(cfg.surgery.policies)
    assert p["surgery.targets.target_modules"] == '["o_proj", "down_proj"]'
    assert p["task_limit"] == "200" and p["ladder.global_scalar"] == "true" and p["sequential.enabled"] == "false"
    assert "registry_url" not in p and "data_dir" not in p and "sequential.looks" not in p
    assert all(isinstance(v, str) for v in p.values()) and len(p) < 100  # one log_batch


def test_tags_say_the_verdict_and_the_sentence():
    stats = _statistics()
    t = run_tags(stats, stats["sentence"], decision_id=7, registry_run_id=3, promoted=True)
    assert t["spectral_surgery.decision_id"] == "7" and t["spectral_surgery.verdict"] == "promote"
    assert t["spectral_surgery.verdict_label"] == "promote smooth_abs"
    assert t["spectral_surgery.promoted_candidate"] == "smooth_abs"
    assert t["mlflow.note.content"] == t["spectral_surgery.sentence"] == stats["sentence"]
    assert run_tags(stats, "s", decision_id=7, registry_run_id=None, promoted=False)[
        "spectral_surgery.production_moved"] == "false"
    mv = model_version_tags(stats, stats["sentence"], decision_id=7, adapter_sha256="ab" * 32,
                            candidate={"id": 12, "policy": "smooth_abs", "seed": 42, "artifact_sha256": "cd" * 32})
    v = next(x for x in stats["verdicts"] if x["name"] == "smooth_abs")
    assert mv["spectral_surgery.policy"] == "smooth_abs" and mv["spectral_surgery.decision_id"] == "7"
    assert float(mv["spectral_surgery.p_vs_baseline"]) == v["vs_baseline"]["p_value"]
    assert float(mv["spectral_surgery.p_adjusted"]) == v["p_adjusted"]
    assert mv["spectral_surgery.sentence"] == stats["sentence"]


def test_names_and_keys_use_mlflow_characters():
    assert metric_key("task", "weird:name/ü") == "task/weird_name/_"
    assert registered_model_name("ss-", "team/ad 0") == "ss-team-ad-0"
    assert run_name("ad0", "0123456789abcdef" * 4) == "ad0@0123456789ab"


def test_config_is_off_by_default_and_keeps_no_password():
    assert RunConfig().mlflow is None
    cfg = RunConfig.model_validate({"mlflow": {"tracking_uri": "https://bot:hunter2@mlflow.internal",
                                               "experiment": "nightly"}})
    dumped = json.dumps(cfg.model_dump(mode="json"))
    assert "hunter2" not in dumped and "https://bot:***@mlflow.internal" in dumped
    assert cfg.mlflow.tracking_uri == "https://bot:hunter2@mlflow.internal"  # the object keeps it for the flow
    assert cfg.result_hash() == RunConfig().result_hash()  # where decisions are mirrored decides nothing
    with pytest.raises(ValidationError, match="experimen"):
        RunConfig.model_validate({"mlflow": {"experimen": "x"}})


def test_metrics_carry_what_the_pairing_bought():
    stats = _statistics()
    m = run_metrics(stats)
    v = next(x for x in stats["verdicts"] if x["name"] == "smooth_abs")
    by_ref = {p["reference"]: p for p in v["pairing"]}
    assert m["corr_vs_baseline/smooth_abs"] == by_ref["baseline"]["outcomes"]["correlation"]
    assert m["n_eff_vs_control/smooth_abs"] == by_ref["random_index-s42"]["outcomes"]["n_eff"]
    assert m["n_eff_vs_scalar/smooth_abs"] == by_ref["global_scalar"]["outcomes"]["n_eff"]
    # the baseline solves documents 0..99, smooth_abs 0..139: phi = (100·60)/√(140·60·100·100), by hand
    assert m["corr_vs_baseline/smooth_abs"] == pytest.approx(6000 / (140 * 60 * 100 * 100) ** 0.5)
    assert not any(k.startswith("score_") for k in m)  # arms without continuous scores
