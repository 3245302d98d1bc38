"""Issue 24 §4 through the nightly flow (fake evaluator): scores stored beside the outcomes, every decision's pairing
statistics, and the opt-in continuous decision metric re-deciding from the stored scores without a model pass."""

from __future__ import annotations

import pytest

from spectral_surgery.flows.refine_fleet import run_nightly
from tests.flows.test_nightly import _config, _declared, _no_model_pass, _register


pytestmark = pytest.mark.usefixtures("fresh_worker")


def test_decision_records_correlation_and_n_eff_and_the_continuous_metric_redecides(
        prefect_harness, make_fleet, fleet_base, tmp_path, monkeypatch):
    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("commonsense",))
    run_nightly(cfg)
    version = reg.list_versions("ad0")[0]
    evals = reg.list_evaluations(version.id)
    # [doc_id, outcome, score] triples, the score's sign being the outcome (the fake's margin)
    assert evals and all(
        len(row) == 3 and (row[2] > 0) == (row[1] == 1.0) for e in evals for row in e.doc_outcomes_json
    )
    first = reg.decision_of_run(version.id, cfg.result_hash(_declared(reg)))
    stats = first.statistics_json
    assert stats["decision"]["metric"] == "task"
    for v in stats["verdicts"]:
        refs = {p["reference"]: p for p in v["pairing"]}
        assert "baseline" in refs and v["control_name"] in refs
        for p in refs.values():
            assert p["outcomes"]["values"] == "outcomes" and p["outcomes"]["n"] == 60
            assert p["scores"]["values"] == "scores" and -1.0 <= p["scores"]["correlation"] <= 1.0
            assert p["scores"]["n_eff"] > 0 and (p["outcomes"]["n_eff"] is None or p["outcomes"]["n_eff"] > 0)
    # the continuous metric: a new decision from the stored scores, no evaluation and no calibration
    seen = _no_model_pass(monkeypatch)
    cont = cfg.model_copy(update={"decision": cfg.decision.model_copy(update={"metric": "continuous"})})
    out = run_nightly(cont)
    assert out["refined"] == 1 and seen["subjects"] == 0
    second = reg.decision_of_run(version.id, cont.result_hash(_declared(reg)))
    assert second.id != first.id and second.statistics_json["decision"]["metric"] == "continuous"
    assert "decision_metric" not in second.statistics_json  # every arm had scores: no fallback
    assert all(v["vs_baseline"]["method"] in ("paired_t", "none") for v in second.statistics_json["verdicts"])
    assert "nats" in second.sentence
