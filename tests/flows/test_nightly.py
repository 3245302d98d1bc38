"""The nightly flow over a tiny fleet: failures isolated, idempotent re-runs, kill/resume, racing runs, rollback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from spectral_surgery.flows import worker
from spectral_surgery.flows.refine_fleet import headline, run_nightly
from spectral_surgery.registry import models as m
from spectral_surgery.tasks.decision.record import DecisionRecord
from spectral_surgery.tasks.config import CalibConfig, SurgeryConfig
from spectral_surgery.tasks.run_config import RunConfig
from tests import tiny

REPO = Path(__file__).resolve().parents[2]
TABLES = [m.Adapter, m.AdapterVersion, m.RefinementRun, m.AdapterRun, m.Candidate, m.Evaluation, m.GuardResult,
          m.Decision, m.ProductionPointer, m.PromotionEvent]
# every candidate of an adapter under the defaults: the three policies, the calibrated global scalar, random_index at
# three seeds, the zero-rebuild canary and the bare base
LADDERED = ["abs_select", "bare_base", "global_scalar", "grad_direction", "random_index", "random_index",
            "random_index", "smooth_abs", "zero_rebuild"]
WINNER = {"smooth_abs": 0.9}  # the fake evaluator scores smooth_abs' documents at 0.9 and everything else at 0.5


def _config(data_dir: Path, calib: Path, **kw) -> RunConfig:
    return RunConfig(data_dir=data_dir, evaluator="fake", evaluator_options={"n_docs": 60, "rates": WINNER, "seed": 11},
                     calib_source=str(calib), task_limit=60, guard_limit=60,
                     surgery=SurgeryConfig(calib=CalibConfig(n_samples=4, batch_size=4)), **kw)


def _register(cfg: RunConfig, dirs, base, families=("math", "commonsense", "instruction")):
    reg = worker.registry(cfg)
    for d, fam in zip(dirs, families):
        reg.register_adapter(d.name, str(d), str(base), fam)
    return reg


def _counts(reg) -> dict[str, int]:
    from sqlalchemy.orm import Session

    with Session(reg.engine) as s:
        return {t.__tablename__: s.scalar(select(func.count()).select_from(t)) for t in TABLES}


def _corrupt(d: Path) -> None:
    (d / "adapter_model.safetensors").write_bytes(b"\x00\x01 not a safetensors file")


pytestmark = pytest.mark.usefixtures("fresh_worker")


def test_fleet_with_one_corrupt_adapter(prefect_harness, make_fleet, fleet_base, tmp_path):
    dirs, calib = make_fleet(3)
    _corrupt(dirs[1])
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base)
    out = run_nightly(cfg)
    assert out["refined"] == 3 and out["failed"] == 1
    assert out["completed"] == 2 and out["scan_failed"] == 0
    assert headline(out) == "2 refined, 1 failed"
    by_name = {r["adapter"]: r for r in out["results"]}
    assert by_name["ad1"]["status"] == "failed" and "safetensors" in by_name["ad1"]["error"]
    assert by_name["ad0"]["status"] == by_name["ad2"]["status"] == "completed"
    counts = _counts(reg)
    assert counts["decisions"] == 2
    runs = reg.adapter_runs(out["run_id"])
    failed = [r for r in runs if r.status == "failed"]
    assert len(failed) == 1 and "safetensors" in failed[0].error_message
    # every policy and rung of the ladder produced a candidate for each healthy adapter (the bare base: no files)
    for name in ("ad0", "ad2"):
        version = reg.list_versions(name)[0]
        cands = reg.list_candidates(version.id)
        assert sorted(c.policy for c in cands) == LADDERED
        assert all(Path(c.artifact_uri, "edit_manifest.json").is_file() for c in cands if c.policy != "bare_base")
        evals = reg.list_evaluations(version.id)
        assert all(e.doc_outcomes_json and len(e.doc_outcomes_json) == e.n for e in evals)
        prod = reg.production(name)
        assert prod is not None and reg.get_candidate(prod.candidate_id).policy == "smooth_abs"
    # a second run finds every key done: no new work, no new rows (beyond its own run row)
    before = _counts(reg)
    again = run_nightly(cfg)
    after = _counts(reg)
    assert again["refined"] == 1  # only the corrupt adapter is retried: it never completed
    assert {k: v for k, v in after.items() if k not in ("refinement_runs", "adapter_runs")} == \
           {k: v for k, v in before.items() if k not in ("refinement_runs", "adapter_runs")}
    assert after["refinement_runs"] == before["refinement_runs"] + 1


def test_rerun_with_nothing_new_does_no_work(prefect_harness, make_fleet, fleet_base, tmp_path):
    dirs, calib = make_fleet(2)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math", "commonsense"))
    run_nightly(cfg)
    before = _counts(reg)
    out = run_nightly(cfg)
    assert out["refined"] == 0
    after = _counts(reg)
    assert after.pop("refinement_runs") == before.pop("refinement_runs") + 1
    assert after == before


def test_config_change_and_new_version_are_refined(prefect_harness, make_fleet, fleet_base, tmp_path):
    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math",))
    run_nightly(cfg)
    changed = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"alpha": 0.01})})
    assert run_nightly(changed)["refined"] == 1
    tiny.save_adapter(fleet_base, dirs[0], seed=99)  # the adapter's content changes: a new version
    assert run_nightly(changed)["refined"] == 1
    assert len(reg.list_versions("ad0")) == 2


def _no_model_pass(monkeypatch, allow_evaluations: int = 0) -> dict[str, int]:
    """Make any calibration pass fail the test, and count (and cap) evaluated subjects."""
    import spectral_surgery.tasks.surgery.edit
    from spectral_surgery.tasks.evaluation.evaluate import FakeEvaluator

    def no_prepare(*a, **k):
        raise AssertionError("a model pass (calibration) ran although its result was stored")

    monkeypatch.setattr(spectral_surgery.tasks.surgery.edit, "prepare", no_prepare)
    seen = {"subjects": 0}
    real = FakeEvaluator.evaluate

    def counted(self, base_model, subjects, benchmark, **kw):
        seen["subjects"] += len(subjects)
        assert seen["subjects"] <= allow_evaluations, f"evaluated {sorted(subjects)} on {benchmark}"
        return real(self, base_model, subjects, benchmark, **kw)

    monkeypatch.setattr(FakeEvaluator, "evaluate", counted)
    return seen


def test_gate_only_change_redecides_from_stored_outcomes(prefect_harness, make_fleet, fleet_base, tmp_path,
                                                         monkeypatch):
    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math",))
    run_nightly(cfg)
    before = _counts(reg)
    version = reg.list_versions("ad0")[0]
    first = reg.decision_of_run(version.id, cfg.result_hash(_declared(reg)))
    seen = _no_model_pass(monkeypatch)
    strict = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"alpha": 1e-30})})
    out = run_nightly(strict)
    assert out["refined"] == 1 and seen["subjects"] == 0
    after = _counts(reg)
    assert after["candidates"] == before["candidates"] and after["evaluations"] == before["evaluations"]
    assert after["decisions"] == before["decisions"] + 1
    second = reg.decision_of_run(version.id, strict.result_hash(_declared(reg)))
    assert second.id != first.id and second.candidate_key == first.candidate_key
    assert first.promoted and not second.promoted  # nothing can be significant at alpha 1e-30
    assert second.statistics_json["config"]["alpha"] == 1e-30
    # back to the first thresholds: that visit is done already; nothing new is written
    assert run_nightly(cfg)["refined"] == 0 and _counts(reg)["decisions"] == after["decisions"]
    assert reg.decision_of_run(version.id, cfg.result_hash(_declared(reg))).id == first.id


def _runs(reg) -> list:
    from sqlalchemy import select

    from spectral_surgery.registry.db import session_scope

    with session_scope(reg.engine) as s:
        return list(s.scalars(select(m.RefinementRun).order_by(m.RefinementRun.id)))


def _declared(reg, name: str = "ad0") -> dict:
    from spectral_surgery.flows.refine_adapter import adapter_config_hash

    defaults = RunConfig()

    class _Cfg:  # adapter_config_hash(config, adapter) == config.result_hash(declared): recover `declared`
        def __getattr__(self, attr):  # the benchmark profile and the sandbox, as a default config resolves them
            return getattr(defaults, attr)

        def result_hash(self, declared):
            return declared

    return adapter_config_hash(_Cfg(), reg.get_adapter(name))


def test_new_policy_evaluates_only_the_new_candidate(prefect_harness, make_fleet, fleet_base, tmp_path, monkeypatch):
    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math",))
    run_nightly(cfg)
    before = _counts(reg)
    version = reg.list_versions("ad0")[0]
    old = {(c.policy, c.seed): c.id for c in reg.list_candidates(version.id)}
    seen = _no_model_pass(monkeypatch, allow_evaluations=2)  # the new candidate on the task and on the guard
    more = cfg.model_copy(update={"surgery": cfg.surgery.model_copy(
        update={"policies": (*cfg.surgery.policies, "double_smooth")})})
    out = run_nightly(more)
    decision = reg.decision_of_run(version.id, more.result_hash(_declared(reg)))
    # the new candidate on the task, and on the guard unless the guard plan (guard_arms: promotable) skips it
    # because its task evidence already rejects it: nothing else is scored
    new = 1 + ("double_smooth" not in decision.statistics_json["guard"]["skipped"])
    assert out["refined"] == 1 and seen["subjects"] == new
    result = out["results"][0]
    assert result["candidates_written"] == 1 and result["calibrated"] is False
    after = _counts(reg)
    assert after["candidates"] == before["candidates"] + 1
    assert after["evaluations"] == before["evaluations"] + new
    now = {(c.policy, c.seed): c.id for c in reg.list_candidates(version.id)}
    assert {k: v for k, v in now.items() if k in old} == old  # the others are the same rows, reused
    assert {v["name"] for v in decision.statistics_json["verdicts"]} == {"abs_select", "smooth_abs", "grad_direction",
                                                                          "double_smooth", "global_scalar"}


def test_all_data_free_edits_skip_calibration(prefect_harness, make_fleet, fleet_base, tmp_path, monkeypatch):
    """A run whose edits are all data-free (post-hoc reshapes, the zero-rebuild canary; no random control, no global
    scalar) reads no calibration source and runs no calibration pass; the candidates are still written, evaluated
    and decided."""
    from spectral_surgery.tasks.decision.gate import GateConfig
    from spectral_surgery.tasks.run_config import LadderConfig

    dirs, _ = make_fleet(1)
    cfg = RunConfig(data_dir=tmp_path / "data", evaluator="fake",
                    evaluator_options={"n_docs": 60, "rates": {"hns": 0.9}}, task_limit=60, guard_limit=60,
                    surgery=SurgeryConfig(policies=("hns", "flat_nuclear", "para"), random_control_seeds=()),
                    ladder=LadderConfig(global_scalar=False, zero_rebuild=True, bare_base=True),
                    gate=GateConfig(require_control=False))
    assert cfg.calib_source is None
    reg = _register(cfg, dirs, fleet_base, ("math",))  # registered without any calibration file
    import spectral_surgery.tasks.surgery.edit

    def no_prepare(*a, **k):
        raise AssertionError("a calibration pass ran for data-free edits")

    monkeypatch.setattr(spectral_surgery.tasks.surgery.edit, "prepare", no_prepare)
    out = run_nightly(cfg)
    assert out["failed"] == 0, out
    result = out["results"][0]
    assert result["calibrated"] is False and result["candidates_written"] == 5  # hns, flat, para, canary, bare
    version = reg.list_versions("ad0")[0]
    candidates = {c.policy: c for c in reg.list_candidates(version.id)}
    assert sorted(candidates) == ["bare_base", "flat_nuclear", "hns", "para", "zero_rebuild"]
    # ε-PARA's candidate is rank-pruned: a PEFT config with a rank_pattern, fewer parameters, still loadable
    from spectral_surgery.tasks.adapter_io import load_adapter

    pruned = load_adapter(candidates["para"].artifact_uri)
    assert pruned.config.get("rank_pattern") and sum(m.r for m in pruned.modules.values()) < sum(
        m.r for m in load_adapter(dirs[0]).modules.values())
    decision = reg.decision_of_run(version.id, cfg.result_hash(_declared(reg)))
    assert {v["name"] for v in decision.statistics_json["verdicts"]} == {"hns", "flat_nuclear", "para"}
    assert decision.promoted and reg.get_candidate(decision.promoted_candidate_id).policy == "hns"
    from spectral_surgery.flows.dashboard import render_dashboard  # candidates without sensitivities still render

    assert "flat_nuclear" in render_dashboard(reg, tmp_path / "dashboard.html").read_text()


@pytest.mark.slow
def test_sensitivity_hns_calibrates_once_and_is_a_candidate(prefect_harness, make_fleet, fleet_base, tmp_path,
                                                            monkeypatch):
    """A nightly config naming ``sensitivity_hns`` (EXTENSIONS §7) runs the calibration pass (it needs data) exactly
    once, writes the candidate with its selection in the manifest, and the gate decides on it; a changed setting
    is a new candidate key and is written from the stored per-example gradients, with no second pass."""
    import spectral_surgery.tasks.surgery.edit
    from spectral_surgery.tasks.decision.gate import GateConfig
    from spectral_surgery.tasks.run_config import LadderConfig

    calls = []
    real_prepare = spectral_surgery.tasks.surgery.edit.prepare

    def counting_prepare(*a, **k):
        calls.append(1)
        return real_prepare(*a, **k)

    monkeypatch.setattr(spectral_surgery.tasks.surgery.edit, "prepare", counting_prepare)
    dirs, calib = make_fleet(1)
    surgery = SurgeryConfig(policies=("sensitivity_hns",), random_control_seeds=(),
                            calib=CalibConfig(n_samples=4, batch_size=4))
    cfg = RunConfig(data_dir=tmp_path / "data", evaluator="fake", calib_source=str(calib),
                    evaluator_options={"n_docs": 60, "rates": {"sensitivity_hns": 0.9}}, task_limit=60,
                    guard_limit=60, surgery=surgery, ladder=LadderConfig(global_scalar=False),
                    gate=GateConfig(require_control=False))  # fmt: skip
    reg = _register(cfg, dirs, fleet_base, ("math",))
    out = run_nightly(cfg)
    assert out["failed"] == 0, out
    assert out["results"][0]["calibrated"] is True and len(calls) == 1
    version = reg.list_versions("ad0")[0]
    candidates = {c.policy: c for c in reg.list_candidates(version.id)}
    assert sorted(candidates) == ["bare_base", "sensitivity_hns", "zero_rebuild"]
    manifest = json.loads((Path(candidates["sensitivity_hns"].artifact_uri) / "edit_manifest.json").read_text())
    sel = manifest["pooled"]
    # targets o_proj + down_proj over 2 layers: 4 candidates, default budget 2 × 2 layers = 4
    assert sel["candidates"] == 4 and sel["module_budget"] == 4 and sel["selection_rule"] == "importance_compatible"
    assert sorted([*sel["chosen"], *sel["rejected"]]) == sorted(sel["scores"])
    assert all(sel["scores"][n]["compatibility"] > 0 for n in sel["chosen"])
    assert all(sel["scores"][n]["compatibility"] <= 0 for n in sel["rejected"])
    decision = reg.decision_of_run(version.id, cfg.result_hash(_declared(reg)))
    assert {v["name"] for v in decision.statistics_json["verdicts"]} == {"sensitivity_hns"}
    assert sel["chosen"]  # on this seeded fleet: 3 chosen, one o_proj rejected as non_positive_hns_compatibility
    assert decision.promoted and reg.get_candidate(decision.promoted_candidate_id).policy == "sensitivity_hns"

    edit = surgery.edit.model_copy(update={"sensitivity_hns": surgery.edit.sensitivity_hns.model_copy(
        update={"module_budget": 1, "selection_rule": "importance"})})
    changed = cfg.model_copy(update={"surgery": surgery.model_copy(update={"edit": edit})})
    out = run_nightly(changed)
    assert out["failed"] == 0 and out["results"][0]["calibrated"] is False and len(calls) == 1
    again = [c for c in reg.list_candidates(version.id) if c.policy == "sensitivity_hns"]
    assert len(again) == 2 and len({c.config_hash for c in again}) == 2
    newest = next(c for c in again if c.id != candidates["sensitivity_hns"].id)
    sel1 = json.loads((Path(newest.artifact_uri) / "edit_manifest.json").read_text())["pooled"]
    assert sel1["chosen"] == sel["ranking"][:1] and sel1["scores"] == sel["scores"]  # same stored gradients


def test_control_ladder_is_evaluated_and_recorded(prefect_harness, make_fleet, fleet_base, tmp_path):
    """Three random seeds, the calibrated global scalar, the zero-rebuild canary and the bare base, on real edits."""
    from spectral_surgery.flows.refine_adapter import adapter_config_hash
    from spectral_surgery.tasks.run_config import LadderConfig

    dirs, calib = make_fleet(1)
    Path(calib).write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(40)))  # held-out rows for γ
    cfg = _config(tmp_path / "data", calib, ladder=LadderConfig(global_scalar=True, zero_rebuild=True,
                                                                bare_base=True))
    cfg = cfg.model_copy(update={"surgery": cfg.surgery.model_copy(update={"random_control_seeds": (1, 2, 3)})})
    reg = _register(cfg, dirs, fleet_base, ("math",))
    out = run_nightly(cfg)
    assert out["failed"] == 0
    version = reg.list_versions("ad0")[0]
    cands = reg.list_candidates(version.id)
    assert sorted(c.policy for c in cands) == ["abs_select", "bare_base", "global_scalar", "grad_direction",
                                               "random_index", "random_index", "random_index", "smooth_abs",
                                               "zero_rebuild"]
    scalar = next(c for c in cands if c.policy == "global_scalar")
    assert scalar.params_json["gamma"] in scalar.params_json["gamma_grid"] and not scalar.is_control
    decision = reg.decision_of_run(version.id, adapter_config_hash(cfg, reg.get_adapter("ad0")))
    stats = decision.statistics_json
    # the zero rebuild has the baseline's update B·A, so it scores the same; the baseline differs from the bare base
    assert stats["canaries"]["zero_rebuild"]["ok"] and stats["canaries"]["zero_rebuild"]["n_differ"] == 0
    assert stats["canaries"]["bare_base"]["ok"] and stats["canaries"]["bare_base"]["n_differ"] > 0
    assert stats["ladder"]["roles"]["global_scalar"] == "scalar_control" and not stats["ladder"]["skipped"]
    assert {v["name"] for v in stats["verdicts"]} == {"abs_select", "smooth_abs", "grad_direction", "global_scalar"}
    assert decision.promoted and reg.get_candidate(decision.promoted_candidate_id).policy == "smooth_abs"
    assert stats["verdict"] == "promote" and stats["correction"] == "holm"
    # the stored statistics are a typed, versioned record: read back, it writes exactly what was stored
    record = DecisionRecord.from_json(stats, decision.promoted)
    assert stats["schema_version"] == 1 and record.to_json() == stats
    assert record.promoted_verdict.name == "smooth_abs" and record.promoted_verdict.vs_baseline.p_value < 0.05
    assert record.ladder.roles["zero_rebuild"] == "canary" and record.canaries["bare_base"].n_differ > 0
    assert record.guard.arms == cfg.guard_arms and record.keys.candidates == decision.candidate_key
    from spectral_surgery.flows.demo import best_edit_rows  # the demo's score table reads the same record

    (row,) = best_edit_rows(reg, ["ad0"], cfg)
    best = record.promoted_verdict
    assert row["verdict"] == "promote" and row["best_policy"] == "smooth_abs" == row["promoted"]
    assert (row["delta_baseline"], row["p_random"]) == (best.vs_baseline.delta, best.vs_control.p_value)


def test_calibration_file_without_held_out_rows_skips_the_scalar_and_says_why(prefect_harness, make_fleet,
                                                                              fleet_base, tmp_path):
    """The scalar's γ is chosen on rows after the sensitivity slice; a file with none left skips it (recorded), not
    the adapter (the demo's calibration files once held exactly n_samples rows)."""
    from spectral_surgery.flows.refine_adapter import adapter_config_hash

    dirs, calib = make_fleet(1)
    Path(calib).write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(4)))  # = n_samples: none held out
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math",))
    assert run_nightly(cfg)["failed"] == 0
    version = reg.list_versions("ad0")[0]
    assert "global_scalar" not in {c.policy for c in reg.list_candidates(version.id)}
    stats = reg.decision_of_run(version.id, adapter_config_hash(cfg, reg.get_adapter("ad0"))).statistics_json
    assert "no held-out calibration examples to choose γ on" in stats["ladder"]["skipped"]["global_scalar"]
    assert "add 32 more" in stats["ladder"]["skipped"]["global_scalar"]


def test_held_out_rows_that_repeat_sensitivity_rows_are_not_used_for_gamma(prefect_harness, make_fleet, fleet_base,
                                                                          tmp_path):
    """A file whose rows after the sensitivity slice repeat rows inside it has no unseen data for γ (the demo's
    generated instruction rows repeat a few): the scalar is skipped with its reason, the adapter still decided."""
    from spectral_surgery.flows.refine_adapter import adapter_config_hash

    dirs, calib = make_fleet(1)
    rows = tiny.calib_rows(4)
    Path(calib).write_text("".join(json.dumps(r) + "\n" for r in rows + rows))  # held-out = sensitivity rows
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math",))
    assert run_nightly(cfg)["failed"] == 0
    version = reg.list_versions("ad0")[0]
    assert "global_scalar" not in {c.policy for c in reg.list_candidates(version.id)}
    stats = reg.decision_of_run(version.id, adapter_config_hash(cfg, reg.get_adapter("ad0"))).statistics_json
    assert "no new rows after the first 4" in stats["ladder"]["skipped"]["global_scalar"]


def test_rollback_restores_previous_production(prefect_harness, make_fleet, fleet_base, tmp_path):
    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math",))
    run_nightly(cfg)
    first = reg.production("ad0")
    tiny.save_adapter(fleet_base, dirs[0], seed=42)
    run_nightly(cfg)
    second = reg.production("ad0")
    assert second.candidate_id != first.candidate_id and second.adapter_version_id != first.adapter_version_id
    reg.rollback("ad0", actor="alice", reason="regression reported by the math team")
    restored = reg.production("ad0")
    assert (restored.candidate_id, restored.adapter_version_id) == (first.candidate_id, first.adapter_version_id)
    kinds = [e.kind for e in reg.history("ad0")]
    assert kinds.count("promotion") == 2 and kinds[-1] == "rollback"
    last = reg.history("ad0")[-1]
    assert (last.from_candidate_id, last.to_candidate_id) == (second.candidate_id, first.candidate_id)
    assert last.actor == "alice" and "regression" in last.reason


# ------------------------------------------------------------------------------ separate processes
RUNNER = """
import json, os, sys
sys.path.insert(0, {repo!r})
from spectral_surgery.flows.refine_fleet import run_nightly
from spectral_surgery.tasks.run_config import RunConfig
out = run_nightly(RunConfig.model_validate_json(sys.argv[1]))
print(json.dumps({{"refined": out["refined"], "failed": out["failed"]}}))
"""


def _spawn(cfg: RunConfig, home: Path, extra_env: dict | None = None, argv: list | None = None) -> subprocess.Popen:
    """The nightly run in a child process (its own session, so that a kill takes its Prefect server with it);
    ``argv``: a ``spectral-surgery`` command line instead of :func:`run_nightly` on ``cfg``."""
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_URL": "", "PREFECT_LOGGING_LEVEL": "WARNING",
           # two children start their own ephemeral servers at once on a loaded 2-core machine: 20 s is not enough
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120", **(extra_env or {})}
    if not env["PREFECT_API_URL"]:
        env.pop("PREFECT_API_URL")
    cmd = [sys.executable, "-m", "spectral_surgery.flows.cli", *map(str, argv)] if argv else \
        [sys.executable, "-c", RUNNER.format(repo=str(REPO)), cfg.model_dump_json()]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child and everything it started (its process group: it was started in a session of its own)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()


def _harness_url() -> str:
    """The session's Prefect test server, for children that need not start a server of their own."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def test_killed_run_resumes_without_duplicates(prefect_harness, prefect_home_template, make_fleet, fleet_base,
                                               tmp_path):
    dirs, calib = make_fleet(3)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base)
    # killed with the temporary server it started, on a migrated Prefect database (not a first run: that is
    # tests/flows/test_prefect_home.py's)
    shutil.copytree(prefect_home_template, tmp_path / "prefect-a")
    proc = _spawn(cfg, tmp_path / "prefect-a")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if _counts(reg)["candidates"] >= 2:  # mid-way: candidates written, evaluations/decisions pending
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"the run finished before it could be killed: {proc.communicate()[1][-2000:]}"
    _kill(proc)
    mid = _counts(reg)
    assert mid["decisions"] < 3
    killed = [r for r in _runs(reg) if r.status == "running"]
    assert len(killed) == 1  # the killed process could not close its row
    out = run_nightly(cfg)
    assert out["failed"] == 0
    # the next run marked the killed one crashed (its process is gone) and left nothing running
    runs = {r.id: r for r in _runs(reg)}
    assert runs[killed[0].id].status == "crashed" and "is gone" in runs[killed[0].id].crash_reason
    assert all(r.status != "running" for r in runs.values())
    assert all(a.status in ("completed", "failed") for rid in runs for a in reg.adapter_runs(rid))
    counts = _counts(reg)
    assert counts["candidates"] == 3 * len(LADDERED) and counts["decisions"] == 3
    assert counts["promotion_events"] == counts["production_pointers"] == sum(
        1 for n in ("ad0", "ad1", "ad2") if reg.production(n) is not None)
    for name in ("ad0", "ad1", "ad2"):
        assert sum(e.kind == "promotion" for e in reg.history(name)) <= 1


RUN_TABLES = ("refinement_runs", "adapter_runs")  # a killed run leaves its own rows: the others must match a clean run


@pytest.fixture(scope="module")
def clean_counts(prefect_harness, fleet_base, tmp_path_factory):
    """Row counts of one uninterrupted run over a one-adapter fleet: what a killed-then-resumed run must end with."""
    root = tmp_path_factory.mktemp("clean")
    ad = tiny.save_adapter(fleet_base, root / "ad0", seed=1)
    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    worker.reset()
    cfg = _config(root / "data", calib)
    reg = _register(cfg, [ad], fleet_base, ("math",))
    assert run_nightly(cfg)["failed"] == 0
    counts = {k: v for k, v in _counts(reg).items() if k not in RUN_TABLES}
    worker.reset()
    return counts


@pytest.mark.slow  # six killed children and six resumed runs: about 2 min on 2 cores
@pytest.mark.parametrize("stage", __import__("spectral_surgery.flows.stage_hook", fromlist=["STAGES"]).STAGES)
def test_killed_at_each_stage_resumes_cleanly(stage, clean_counts, prefect_harness, make_fleet, fleet_base, tmp_path):
    """SIGKILL at each stage of a run (flows/stage_hook.py pauses the child exactly there), then a re-run: no row
    lost or doubled (the same counts as a clean run), nothing left ``running``, no temporary file or directory left,
    and production points at a candidate whose files are there and match their recorded sha256."""
    from spectral_surgery.flows.stage_hook import ENV_AT, ENV_FILE
    from spectral_surgery.tasks.adapter_io import adapter_content_sha256

    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math",))
    marker = tmp_path / "paused"
    proc = _spawn(cfg, tmp_path / "prefect-k", {ENV_AT: stage, ENV_FILE: str(marker),
                                                "PREFECT_API_URL": _harness_url()})
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not marker.exists():
        time.sleep(0.05)
    assert marker.exists() and marker.read_text() == stage, proc.communicate()[1][-3000:] if proc.poll() is not None \
        else "the run never reached the stage"
    _kill(proc)
    (killed,) = [r for r in _runs(reg) if r.status == "running"]  # the killed process could not close its row
    out = run_nightly(cfg)
    assert out["failed"] == 0, out
    runs = {r.id: r for r in _runs(reg)}
    assert runs[killed.id].status == "crashed"
    assert all(r.status != "running" for r in runs.values())
    assert all(a.status in ("completed", "failed") for rid in runs for a in reg.adapter_runs(rid))
    assert {k: v for k, v in _counts(reg).items() if k not in RUN_TABLES} == clean_counts  # none lost, none doubled
    prod = reg.production("ad0")
    cand = reg.get_candidate(prod.candidate_id)
    assert Path(cand.artifact_uri).is_dir() and adapter_content_sha256(cand.artifact_uri) == cand.artifact_sha256
    assert sum(e.kind == "promotion" for e in reg.history("ad0")) == 1
    leftovers = [p for p in Path(cfg.data_dir).rglob("*") if ".tmp" in p.name or p.name.startswith(".prepared-")]
    assert leftovers == []


def _cli_fleet(base: Path, root: Path, db_args: list) -> list:
    """init + two registered adapters through the CLI; returns the ``run`` command line both racers use."""
    from tests.flows.cli_support import cli

    ads = [tiny.save_adapter(base, root / f"ad{i}", seed=i + 1) for i in range(2)]
    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    assert cli("init", *db_args).code == 0
    for ad, fam in zip(ads, ("math", "commonsense")):
        r = cli("register", ad.name, "--source", ad, "--base", base, "--family", fam, "--calib", calib, *db_args)
        assert r.code == 0, r.err
    return ["run", "--evaluator", "fake", "--evaluator-option", f"rates={json.dumps(WINNER)}", "--evaluator-option",
            "n_docs=60", "--task-limit", 60, "--guard-limit", 60, "--n-samples", 4, "--json", *db_args]


@pytest.mark.slow  # two `spectral-surgery run` processes at once: about 40 s on 2 cores
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_two_cli_runs_at_once(backend, prefect_harness, fleet_base, tmp_path, request):
    """Two ``spectral-surgery run`` processes started together on one registry: both exit 0 with no lock failure,
    each adapter version is refined by exactly one of them (its claim), and each adapter is promoted once."""
    from spectral_surgery.registry.repository import Registry

    url = request.getfixturevalue("pg_url") if backend == "postgresql" else None
    db_args = ["--data-dir", tmp_path / "home", *(["--db", url] if url else [])]
    argv = _cli_fleet(fleet_base, tmp_path, db_args)
    procs = [_spawn(None, tmp_path / f"prefect-{i}", {"PREFECT_API_URL": _harness_url()}, argv) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se[-3000:]
        assert "OperationalError" not in se and "database is locked" not in se and "Traceback" not in se, se[-3000:]
    summaries = [json.loads(so) for so, _ in outs]
    # each run refined an adapter, found it claimed by the other (skipped) or already done (completed, reused)
    assert {r["status"] for s in summaries for r in s["results"]} <= {"completed", "skipped"}
    reg = Registry.open(url, tmp_path / "home")
    try:
        done = [a.adapter_version_id for r in _runs(reg) for a in reg.adapter_runs(r.id) if a.status == "completed"]
        assert sorted(done) == sorted(v.id for n in ("ad0", "ad1") for v in reg.list_versions(n))  # refined once
        for name in ("ad0", "ad1"):
            assert sum(e.kind == "promotion" for e in reg.history(name)) == 1
        counts = _counts(reg)
        assert counts["decisions"] == 2 and counts["candidates"] == 2 * len(LADDERED)
        assert all(r.status == "completed" for r in _runs(reg))
    finally:
        reg.close()


def test_two_runs_at_once_never_promote_twice(prefect_harness, make_fleet, fleet_base, tmp_path):
    dirs, calib = make_fleet(2)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math", "commonsense"))
    # on the session's Prefect server, as in test_two_cli_runs_at_once: the claims are the registry's, and two
    # temporary servers starting at once only cost CPU
    procs = [_spawn(cfg, tmp_path / f"prefect-{i}", {"PREFECT_API_URL": _harness_url()}) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (so, se) in zip(procs, outs):
        assert p.returncode == 0, se[-3000:]
    counts = _counts(reg)
    assert counts["decisions"] == 2 and counts["candidates"] == 2 * len(LADDERED)
    for name in ("ad0", "ad1"):
        assert sum(e.kind == "promotion" for e in reg.history(name)) == 1
    assert counts["promotion_events"] == 2
    # one claim per adapter version: each was refined by exactly one of the two runs
    done = [a.adapter_version_id for r in _runs(reg) for a in reg.adapter_runs(r.id) if a.status == "completed"]
    assert sorted(done) == sorted(v.id for n in ("ad0", "ad1") for v in reg.list_versions(n))
    assert all(r.status == "completed" for r in _runs(reg))


def test_a_version_held_by_a_live_run_is_skipped_and_picked_up_once_its_holder_dies(prefect_harness, make_fleet,
                                                                                      fleet_base, tmp_path):
    from datetime import timedelta

    from spectral_surgery.registry.db import session_scope

    dirs, calib = make_fleet(2)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math", "commonsense"))
    # another machine's run is refining ad0 right now (fresh heartbeat)
    from spectral_surgery.flows.refine_adapter import adapter_config_hash, fetch_adapter

    res = fetch_adapter.fn(str(dirs[0]))
    v0, _ = reg.record_version("ad0", res.sha256, res.revision, res.local_path)
    other = reg.start_run("other-machine", {}, cfg.result_hash(), owner="gpu-box-7:4242")
    reg.claim_adapter_run(other.id, v0.id, adapter_config_hash(cfg, reg.get_adapter("ad0")))
    out = run_nightly(cfg)
    by_name = {r["adapter"]: r for r in out["results"]}
    assert by_name["ad0"]["status"] == "skipped" and "gpu-box-7:4242" in by_name["ad0"]["reason"]
    assert by_name["ad1"]["status"] == "completed" and out["skipped"] == 1 and out["failed"] == 0
    assert _counts(reg)["decisions"] == 1  # ad0 was left to its holder
    # the other machine dies: its lease runs out, the next run reaps it and refines ad0
    with session_scope(reg.engine, write=True) as s:
        s.get(m.RefinementRun, other.id).heartbeat_at -= timedelta(hours=1)
    out = run_nightly(cfg)
    assert [r["adapter"] for r in out["results"] if r["status"] == "completed"] == ["ad0"]
    assert reg.get_run(other.id).status == "crashed" and "no heartbeat since" in reg.get_run(other.id).crash_reason
    (crashed,) = reg.adapter_runs(other.id)
    assert crashed.status == "failed" and crashed.error_type == "Crashed"


def test_missing_source_is_recorded_on_the_adapter_and_cleared_once_fixed(prefect_harness, make_fleet, fleet_base,
                                                                        tmp_path):
    """An adapter whose source does not exist (never fetched: no version to fail) is recorded in the registry, shown
    by the dashboard, and never stops the rest of the fleet; the next successful fetch clears it."""
    import shutil

    from spectral_surgery.flows.dashboard.data import collect

    dirs, calib = make_fleet(2)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, families=("math", "commonsense"))
    missing = tmp_path / "not-there"
    reg.register_adapter("ghost", str(missing), str(fleet_base), "math")
    out = run_nightly(cfg)
    assert out["failed"] == 1
    # the header counts the scan's failure apart from the two refinements (it refined no version)
    assert out["completed"] == 2 and out["scan_failed"] == 1 and headline(out) == "2 refined, 1 failed (at the scan)"
    by_name = {r["adapter"]: r for r in out["results"]}
    assert by_name["ghost"]["status"] == "failed" and "not-there" in by_name["ghost"]["error"]
    assert by_name["ad0"]["status"] == by_name["ad1"]["status"] == "completed"
    ghost = reg.get_adapter("ghost")
    assert ghost.fetch_error and "not-there" in ghost.fetch_error and ghost.fetch_error_at is not None
    assert reg.list_versions("ghost") == []
    data = collect(reg)
    entry = next(a for a in data["adapters"] if a["name"] == "ghost")
    assert entry["fetch_error"] and "not-there" in entry["fetch_error"]
    assert any(f["adapter"] == "ghost" and f["error_type"] == "fetch failed" for f in data["failures"])

    shutil.copytree(dirs[0], missing)  # the owner fixes the path
    again = run_nightly(cfg)
    assert again["failed"] == 0
    assert reg.get_adapter("ghost").fetch_error is None and len(reg.list_versions("ghost")) == 1


# ------------------------------------------------------------------------------- every decision path in one fleet
# What each arm of each benchmark scores (fake evaluator, "<benchmark>/<subject>" wins over "<subject>"; documents
# drawn from seed 7, so every session sees the same ones): smooth_abs is clearly better on the math benchmark,
# clearly worse on the multiple-choice one, and scripted a little better on the code one, where 60 documents cannot
# tell (measured: +1.7 pts, upper bound +11.6: both no gain and 2 pts inside). The guard (ss_ifeval) is held by
# smooth_abs at 0.9. The ladder and three random seeds are the defaults.
THREE_PATHS = {"smooth_abs": 0.9, "ss_mc/smooth_abs": 0.2, "ss_mc/global_scalar": 0.2, "ss_code/smooth_abs": 0.6}
# Unmistakable arms for the sequential test: every look's exact McNemar is decisive, whatever the documents are
CLEAR = {"smooth_abs": 1.0, "ss_mc/smooth_abs": 0.0, "ss_mc/global_scalar": 0.0}


def _three_paths_config(data_dir: Path, calib: Path, rates: dict = THREE_PATHS, **kw) -> RunConfig:
    return RunConfig(data_dir=data_dir, evaluator="fake", evaluator_options={"n_docs": 60, "rates": rates, "seed": 7},
                     calib_source=str(calib), task_limit=60, guard_limit=60,
                     surgery=SurgeryConfig(policies=("smooth_abs",), calib=CalibConfig(n_samples=4, batch_size=4)),
                     **kw)


def _decision(reg, cfg: RunConfig, name: str):
    from spectral_surgery.flows.refine_adapter import adapter_config_hash

    return reg.decision_of_run(reg.list_versions(name)[0].id, adapter_config_hash(cfg, reg.get_adapter(name)))


def test_one_fleet_reaches_promote_hold_and_reject(prefect_harness, make_fleet, fleet_base, tmp_path):
    """PROMOTE (passed the whole default ladder), HOLD (with the documents it needs) and REJECT side by side."""
    dirs, calib = make_fleet(3)
    cfg = _three_paths_config(tmp_path / "data", calib)
    assert cfg.ladder.global_scalar and cfg.ladder.zero_rebuild and cfg.ladder.bare_base
    reg = _register(cfg, dirs, fleet_base, ("math", "commonsense", "code"))
    out = run_nightly(cfg)
    assert out["failed"] == 0
    by = {r["adapter"]: r for r in out["results"]}
    assert {n: r["verdict"] for n, r in by.items()} == {"ad0": "promote", "ad1": "reject", "ad2": "hold"}

    win = _decision(reg, cfg, "ad0").statistics_json
    assert win["promoted"] == "smooth_abs" and not win["flags"]
    (v,) = [v for v in win["verdicts"] if v["name"] == "smooth_abs"]
    assert v["beats_baseline"] and v["beats_control"] and v["guard_ok"] and v["vs_scalar"]["delta"] > 0
    assert {n for n, role in win["ladder"]["roles"].items() if role == "random_control"} == {
        "random_index-s42", "random_index-s43", "random_index-s44"}
    assert win["canaries"]["zero_rebuild"]["ok"] and win["canaries"]["bare_base"]["ok"]
    assert reg.get_candidate(reg.production("ad0").candidate_id).policy == "smooth_abs"

    lose = _decision(reg, cfg, "ad1")
    assert not lose.promoted and lose.statistics_json["n_needed"] is None
    assert all(v["verdict"] == "reject" for v in lose.statistics_json["verdicts"])
    assert reg.production("ad1").candidate_id is None

    held = _decision(reg, cfg, "ad2").statistics_json
    holds = [v for v in held["verdicts"] if v["verdict"] == "hold"]
    assert holds and all(h["vs_baseline"]["ci_low"] < 0.02 < h["vs_baseline"]["ci_high"] for h in holds)
    assert all(h["n_needed"] >= held["n_needed"] for h in holds)
    assert held["n_needed"] > 60 and by["ad2"]["n_needed"] == held["n_needed"]
    assert f"held for evidence: needs ~{held['n_needed']} documents" in by["ad2"]["verdict_label"]
    assert "held for evidence" in by["ad2"]["sentence"]


def _break_zero_rebuild(monkeypatch) -> None:
    """Write the zero-rebuild canary through a deliberately wrong rebuild (B' doubled) instead of the real one."""
    import spectral_surgery.tasks.surgery.edit

    real = spectral_surgery.tasks.surgery.edit.write_candidate

    def writer(prepared, policy, surgery, out_dir, **kw):
        path, manifest = real(prepared, policy, surgery, out_dir, **kw)
        if policy == "zero_rebuild":
            tiny.write_broken_rebuild(prepared, Path(path), kind="scale")
        return path, manifest

    monkeypatch.setattr(spectral_surgery.tasks.surgery.edit, "write_candidate", writer)


def test_broken_rebuild_trips_the_zero_rebuild_canary(prefect_harness, make_fleet, fleet_base, tmp_path,
                                                      monkeypatch):
    """The math adapter would be promoted; a rebuild that changes B·A flags the run and nothing is promoted."""
    _break_zero_rebuild(monkeypatch)
    dirs, calib = make_fleet(1)
    cfg = _three_paths_config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math",))
    out = run_nightly(cfg)
    assert out["failed"] == 0 and out["results"][0]["verdict"] == "reject"
    stats = _decision(reg, cfg, "ad0").statistics_json
    assert not stats["promoted"] and not stats["canaries"]["zero_rebuild"]["ok"]
    assert stats["canaries"]["zero_rebuild"]["n_differ"] > 0 and stats["flags"]
    assert "zero" in stats["flags"][0] and "zero" in stats["sentence"]
    assert reg.production("ad0").candidate_id is None


def test_adapter_not_applied_trips_the_bare_base_canary(prefect_harness, make_fleet, fleet_base, tmp_path,
                                                        monkeypatch):
    """An evaluation stack that silently scores the bare base for every subject: flagged, nothing promoted."""
    from spectral_surgery.tasks.evaluation.evaluate import FakeEvaluator

    real = FakeEvaluator.evaluate

    def drops_adapters(self, base_model, subjects, benchmark, **kw):
        return real(self, base_model, {name: None for name in subjects}, benchmark, **kw)

    monkeypatch.setattr(FakeEvaluator, "evaluate", drops_adapters)
    dirs, calib = make_fleet(1)
    cfg = _three_paths_config(tmp_path / "data", calib, rates={})  # not applied: every subject scores alike
    reg = _register(cfg, dirs, fleet_base, ("math",))
    out = run_nightly(cfg)
    assert out["failed"] == 0 and out["results"][0]["verdict"] == "reject"
    stats = _decision(reg, cfg, "ad0").statistics_json
    assert not stats["canaries"]["bare_base"]["ok"] and stats["canaries"]["bare_base"]["n_differ"] == 0
    assert stats["flags"] and not stats["promoted"]


def test_sequential_evaluation_stops_early_with_the_fixed_designs_verdicts(prefect_harness, make_fleet, fleet_base,
                                                                           tmp_path):
    """Looks of 60 documents up to 240: the clear winner and the clear loser stop at the first look, each look
    scores only new documents for the arms still running, and the verdicts are those of the fixed 240-document run."""
    from spectral_surgery.tasks.decision.sequential import SequentialConfig

    dirs, calib = make_fleet(2)
    verdicts = {}
    for mode, seq in (("fixed", SequentialConfig()), ("sequential", SequentialConfig(enabled=True, looks=4))):
        cfg = _three_paths_config(tmp_path / mode, calib, rates=CLEAR, sequential=seq)
        cfg = cfg.model_copy(update={"task_limit": 240})
        reg = _register(cfg, dirs, fleet_base, ("math", "commonsense"))
        out = run_nightly(cfg)
        assert out["failed"] == 0
        verdicts[mode] = {r["adapter"]: r["verdict"] for r in out["results"]}
        if mode == "fixed":
            continue
        for name, why in (("ad0", "efficacy"), ("ad1", "futility")):
            stats = _decision(reg, cfg, name).statistics_json
            rec = stats["sequential"]
            assert rec["stopped_at_look"] == 1 and rec["documents"] == 60, rec
            assert rec["looks"][0]["results"]["smooth_abs"] == why
            assert rec["subject_documents"] < rec["fixed_subject_documents"] / 3
            assert stats["config"]["correction"] == "bonferroni" and stats["config"]["alpha"] < 0.05
            record = DecisionRecord.from_json(stats)
            assert record.to_json() == stats and record.sequential.stopped_at_look == 1
            assert record.sequential.looks[0]["results"]["smooth_abs"] == why
            version = reg.list_versions(name)[0]
            task_evals = [e for e in reg.list_evaluations(version.id) if e.kind == "task"]
            assert {e.n for e in task_evals} == {60}  # one look's documents, never the whole budget
            assert all([d for d, *_ in e.doc_outcomes_json] == [str(i) for i in range(60)] for e in task_evals)
        assert reg.get_candidate(reg.production("ad0").candidate_id).policy == "smooth_abs"
    assert verdicts["sequential"] == verdicts["fixed"] == {"ad0": "promote", "ad1": "reject"}


def _applied_only_after(monkeypatch, n_first: int) -> None:
    """An adapter that scores exactly like the bare base on the first ``n_first`` documents of every benchmark (a
    weak adapter, or an easy first chunk): the baseline's and the zero rebuild's outcomes there are the bare base's."""
    import dataclasses

    from spectral_surgery.tasks.evaluation.evaluate import FakeEvaluator

    real = FakeEvaluator.evaluate

    def weak(self, base_model, subjects, benchmark, **kw):
        bare = real(self, base_model, {n: None for n in subjects}, benchmark, **{**kw, "on_result": None})
        out = real(self, base_model, subjects, benchmark, **kw)
        for name in ("baseline", "zero_rebuild"):
            if name in out:
                r, b = out[name], bare[name]
                outcomes = [bo if int(d) < n_first else o for d, o, bo in zip(r.doc_ids, r.outcomes, b.outcomes)]
                out[name] = dataclasses.replace(r, outcomes=outcomes, value=sum(outcomes) / len(outcomes))
        return out

    monkeypatch.setattr(FakeEvaluator, "evaluate", weak)


def test_sequential_bare_base_canary_sees_the_fixed_designs_documents(prefect_harness, make_fleet, fleet_base,
                                                                      tmp_path, monkeypatch):
    """The baseline matches the bare base on the first look's 60 documents only. The fixed design sees the adapter
    applied and promotes the clear winner; so must the sequential one: the bare base is scored at later looks until
    the baseline differs from it, and the first look's efficacy waits for that difference instead of stopping into a
    canary REJECT ("adapter not applied" on 60 documents)."""
    from spectral_surgery.tasks.decision.sequential import SequentialConfig

    _applied_only_after(monkeypatch, 60)
    dirs, calib = make_fleet(1)
    verdicts, records = {}, {}
    for mode, seq in (("fixed", SequentialConfig()), ("sequential", SequentialConfig(enabled=True, looks=4))):
        cfg = _three_paths_config(tmp_path / mode, calib, rates=CLEAR, sequential=seq)
        cfg = cfg.model_copy(update={"task_limit": 240})
        reg = _register(cfg, dirs, fleet_base, ("math",))
        out = run_nightly(cfg)
        assert out["failed"] == 0
        verdicts[mode] = out["results"][0]["verdict"]
        stats = _decision(reg, cfg, "ad0").statistics_json
        assert stats["canaries"]["bare_base"]["ok"] and stats["canaries"]["zero_rebuild"]["ok"], stats["canaries"]
        records[mode] = stats.get("sequential")
    rec = records["sequential"]
    assert rec["looks"][0]["results"]["smooth_abs"] == "efficacy" and rec["efficacy_deferred_at"] == [1]
    k = rec["stopped_at_look"]
    assert 2 <= k < 4 and rec["canary_documents"] == {"zero_rebuild": 60, "bare_base": 60 * k}, rec
    assert rec["canary_stop"] is None
    assert verdicts == {"fixed": "promote", "sequential": "promote"}


def test_sequential_stops_at_the_first_look_when_the_zero_rebuild_fails(prefect_harness, make_fleet, fleet_base,
                                                                        tmp_path, monkeypatch):
    """A broken write path shows at the first look, and no later document can undo it: the adapter stops there,
    rejected by the canary, having scored one look instead of four."""
    from spectral_surgery.tasks.decision.sequential import SequentialConfig

    _break_zero_rebuild(monkeypatch)
    dirs, calib = make_fleet(1)
    cfg = _three_paths_config(tmp_path / "data", calib, rates={"smooth_abs": 0.6},
                              sequential=SequentialConfig(enabled=True, looks=4))
    cfg = cfg.model_copy(update={"task_limit": 240})
    reg = _register(cfg, dirs, fleet_base, ("math",))
    out = run_nightly(cfg)
    assert out["failed"] == 0 and out["results"][0]["verdict"] == "reject"
    stats = _decision(reg, cfg, "ad0").statistics_json
    rec = stats["sequential"]
    assert rec["stopped_at_look"] == 1 and rec["documents"] == 60 and "zero-rebuild" in rec["canary_stop"]
    assert not stats["canaries"]["zero_rebuild"]["ok"] and stats["flags"] and not stats["promoted"]


def test_headline_counts_failures_apart_from_refinements():
    """The run's header: refinements that reached a decision, then every failure (those of the scan named), then
    the versions another run held."""
    assert headline({"completed": 3, "failed": 0}) == "3 refined, 0 failed"
    assert headline({"completed": 1, "failed": 2, "scan_failed": 1, "skipped": 0}) == \
        "1 refined, 2 failed (1 at the scan)"
    assert headline({"completed": 0, "failed": 1, "scan_failed": 1, "skipped": 2}) == \
        "0 refined, 1 failed (at the scan), 2 skipped (another run holds them)"


def test_edit_budget_evaluates_only_past_winners_of_the_family_never_chosen_on_the_same_night(
        prefect_harness, make_fleet, fleet_base, tmp_path):
    """edit_budget: night 1 has no history, so both math adapters try every edit (the second one is not steered by
    the first one's decision of the same night); night 2's new math adapter evaluates only the past winner, and the
    ladder stays whole."""
    from spectral_surgery.tasks.decision.edit_budget import EditBudgetConfig

    dirs, calib = make_fleet(3)
    cfg = _config(tmp_path / "data", calib, edit_budget=EditBudgetConfig(enabled=True, per_family=1))
    reg = _register(cfg, dirs[:2], fleet_base, ("math", "math"))
    out = run_nightly(cfg)
    assert out["failed"] == 0
    for name in ("ad0", "ad1"):
        stats = _decision(reg, cfg, name).statistics_json
        assert stats["edit_budget"]["history_adapters"] == 0 and stats["edit_budget"]["skipped"] == {}
        assert {v["name"] for v in stats["verdicts"]} == {"abs_select", "smooth_abs", "grad_direction",
                                                          "global_scalar"}
        assert stats["promoted"] == "smooth_abs"
    reg.register_adapter(dirs[2].name, str(dirs[2]), str(fleet_base), "math")
    out = run_nightly(cfg)
    assert out["failed"] == 0 and out["refined"] == 1
    stats = _decision(reg, cfg, "ad2").statistics_json
    budget = stats["edit_budget"]
    assert budget["history_adapters"] == 2 and budget["kept"] == ["smooth_abs"]
    assert set(budget["skipped"]) == {"abs_select", "grad_direction"}
    assert "not among the 1 best of family math" in budget["skipped"]["abs_select"]
    assert {v["name"] for v in stats["verdicts"]} == {"smooth_abs", "global_scalar"}
    policies = {c.policy for c in reg.list_candidates(reg.list_versions("ad2")[0].id)}
    assert policies == {"smooth_abs", "random_index", "global_scalar", "zero_rebuild", "bare_base"}
    assert stats["promoted"] == "smooth_abs"
