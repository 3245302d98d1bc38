"""``guard_arms: promotable``: the nightly flow guards only the arms whose verdict the guard can change (issue 9).

The fleet of tests/flows/test_nightly.py's three paths (math: PROMOTE, commonsense: REJECT, code: HOLD) on the fake
evaluator, run once with every arm guarded and once with the default: the same verdicts, the same promoted
candidates, fewer guard evaluations, and each skip recorded. A later gate change that needs a skipped guard scores
it then (and nothing else: no calibration, no task evaluation).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spectral_surgery.flows import worker
from spectral_surgery.flows.refine_fleet import run_nightly
from spectral_surgery.tasks.config import CalibConfig, SurgeryConfig
from spectral_surgery.tasks.run_config import RunConfig

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("fresh_worker")]

THREE_PATHS = {"smooth_abs": 0.9, "ss_mc/smooth_abs": 0.2, "ss_mc/global_scalar": 0.2, "ss_code/smooth_abs": 0.6}
FAMILIES = {"ad0": "math", "ad1": "commonsense", "ad2": "code"}
SKIPPED = "guard not evaluated: rejected on task evidence"


def _config(data_dir: Path, calib: Path, **kw) -> RunConfig:
    return RunConfig(data_dir=data_dir, evaluator="fake", calib_source=str(calib), task_limit=60, guard_limit=60,
                     evaluator_options={"n_docs": 60, "rates": THREE_PATHS, "seed": 7},
                     surgery=SurgeryConfig(policies=("smooth_abs",), calib=CalibConfig(n_samples=4, batch_size=4)),
                     **kw)


def _run(cfg: RunConfig, dirs, base, *, page: bool = False) -> dict:
    from spectral_surgery.flows.refine_adapter import adapter_config_hash
    from spectral_surgery.registry.validation import NotFoundError

    reg = worker.registry(cfg)
    for d in dirs:
        try:
            reg.get_adapter(d.name)
        except NotFoundError:
            reg.register_adapter(d.name, str(d), str(base), FAMILIES[d.name])
    out = run_nightly(cfg)
    assert out["failed"] == 0
    got = {}
    for d in dirs:
        version = reg.list_versions(d.name)[0]
        stats = reg.decision_of_run(version.id, adapter_config_hash(cfg, reg.get_adapter(d.name))).statistics_json
        guards = [e for e in reg.list_evaluations(version.id) if e.kind == "guard"]
        got[d.name] = {"stats": stats, "guards": len(guards),
                       "verdicts": {v["name"]: v["verdict"] for v in stats["verdicts"]},
                       "decision": (stats["verdict"], stats["promoted"], stats["n_needed"])}
    if page:  # the dashboard shows a skipped guard as no score (and still renders)
        from spectral_surgery.flows.dashboard import build_page

        html, data, _ = build_page(reg, cache_dir=cfg.data_dir / "dash")
        for a in data["adapters"]:
            rows = {r["arm"]: r for n in a["nights"][:1] for r in n["rows"]}
            for arm in got[a["name"]]["stats"]["guard"]["skipped"]:
                assert rows[arm]["guard"] is None and rows[arm]["guard_delta"] is None, (a["name"], arm)
        assert "rejected on task evidence" in html
    return got


def test_promotable_guards_decide_exactly_as_guarding_every_arm(prefect_harness, make_fleet, fleet_base, tmp_path):
    dirs, calib = make_fleet(3)
    every = _run(_config(tmp_path / "all", calib, guard_arms="all"), dirs, fleet_base)
    some = _run(_config(tmp_path / "promotable", calib), dirs, fleet_base, page=True)
    assert {n: r["decision"][0] for n, r in some.items()} == {"ad0": "promote", "ad1": "reject", "ad2": "hold"}
    for name in FAMILIES:
        assert some[name]["verdicts"] == every[name]["verdicts"], name
        assert some[name]["decision"] == every[name]["decision"], name
    # all: baseline + smooth_abs + scalar + 3 random seeds; promotable: only what can still be promoted or held
    assert {n: r["guards"] for n, r in every.items()} == {"ad0": 6, "ad1": 6, "ad2": 6}
    assert {n: r["guards"] for n, r in some.items()} == {"ad0": 3, "ad1": 0, "ad2": 3}  # 12 of 18 skipped
    randoms = {"random_index-s42", "random_index-s43", "random_index-s44"}
    for name, r in some.items():
        skipped = r["stats"]["guard"]["skipped"]
        assert r["stats"]["guard"]["arms"] == "promotable" and every[name]["stats"]["guard"]["skipped"] == {}
        assert {n: why for n, why in skipped.items() if n in randoms} == dict.fromkeys(
            randoms, "guard not evaluated: a random control, never promoted")
        for v in r["stats"]["verdicts"]:
            if v["name"] in skipped:  # rejected on task evidence: its guard was not needed, and not scored
                assert skipped[v["name"]] == SKIPPED and v["verdict"] == "reject"
                assert v["guard_test"] is None and v["guard_ok"] is None
                assert "IFEval guard not evaluated: rejected on task evidence" in v["reason"]
            else:  # promoted, held, or (its task evidence holding it) rejected by its guard
                assert v["guard_test"] is not None
                assert v["verdict"] != "reject" or v["guard_ok"] is False and "the IFEval guard fails" in v["reason"]
        guarded = [v for v in r["stats"]["verdicts"] if v["name"] not in skipped]
        assert r["guards"] == (0 if "baseline" in skipped else 1 + len(guarded))
    # commonsense: every candidate is rejected on its task evidence, so not even the baseline is guarded
    assert some["ad1"]["guards"] == 0 and "baseline" in some["ad1"]["stats"]["guard"]["skipped"]


def test_a_gate_change_that_needs_a_skipped_guard_scores_it_then(prefect_harness, make_fleet, fleet_base, tmp_path,
                                                                 monkeypatch):
    """min_effect 90 pts rejects everything on task evidence: no guard is scored. Back at the default gate the math
    adapter's smooth_abs can be promoted again: its guard and the baseline's are scored now (only those), and the
    decision is the one of a run that guarded every arm."""
    import spectral_surgery.tasks.surgery.edit
    from spectral_surgery.tasks.evaluation.evaluate import FakeEvaluator

    dirs, calib = make_fleet(1)
    strict = _config(tmp_path / "data", calib)
    strict = strict.model_copy(update={"gate": strict.gate.model_copy(update={"min_effect": 0.9})})
    first = _run(strict, dirs[:1], fleet_base)["ad0"]
    assert first["guards"] == 0 and first["decision"][0] == "reject"
    assert set(first["stats"]["guard"]["skipped"]) >= {"baseline", "smooth_abs", "global_scalar"}

    def no_prepare(*a, **k):
        raise AssertionError("a model pass (calibration) ran although its result was stored")

    monkeypatch.setattr(spectral_surgery.tasks.surgery.edit, "prepare", no_prepare)
    scored, real = [], FakeEvaluator.evaluate

    def counted(self, base_model, subjects, benchmark, **kw):
        scored.extend((benchmark, s) for s in subjects)
        return real(self, base_model, subjects, benchmark, **kw)

    monkeypatch.setattr(FakeEvaluator, "evaluate", counted)
    again = _run(_config(tmp_path / "data", calib), dirs[:1], fleet_base)["ad0"]
    needed = {"baseline"} | {v["name"] for v in again["stats"]["verdicts"]} - set(again["stats"]["guard"]["skipped"])
    assert {"baseline", "smooth_abs"} <= needed and {b for b, _ in scored} == {"ss_ifeval"}  # guards only
    assert sorted(s for _, s in scored) == sorted(needed) and again["guards"] == len(needed)
    assert again["decision"] == ("promote", "smooth_abs", None)
    monkeypatch.undo()  # a fresh registry: the "all" run calibrates and evaluates everything
    every = _run(_config(tmp_path / "all", calib, guard_arms="all"), dirs[:1], fleet_base)["ad0"]
    assert again["verdicts"] == every["verdicts"] and again["decision"] == every["decision"]
