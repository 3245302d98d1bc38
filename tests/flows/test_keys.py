"""Keys hold exactly what was used (flows/refine_adapter.py, flows/cli/run.py): the sandbox a code benchmark ran
in, the re-fetched adapter's content, and the CLI's own run, followed by id."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from spectral_surgery.flows.refine_adapter import SourceChangedError, _evaluator_key, adapter_config_hash, version_files
from spectral_surgery.tasks.adapter_io import adapter_content_sha256
from spectral_surgery.tasks.download import resolve_source
from spectral_surgery.tasks.evaluation.benchmarks import get_benchmark
from spectral_surgery.tasks.run_config import RunConfig


def _adapter(family: str, benchmark: str | None = None):
    return SimpleNamespace(config_json=None, base_model_id="acme/base", base_model_revision=None,
                           task_family=family, benchmark_override=benchmark)


def test_the_sandbox_used_is_keyed_for_code_benchmarks_only(tmp_path, monkeypatch):
    monkeypatch.delenv("SPECTRAL_SURGERY_SANDBOX", raising=False)
    cfg = RunConfig(data_dir=tmp_path, benchmark_profile="offline")
    code, math = _adapter("code"), _adapter("math")
    default_code, default_math = adapter_config_hash(cfg, code), adapter_config_hash(cfg, math)
    monkeypatch.setenv("SPECTRAL_SURGERY_SANDBOX", "python-guard")  # the backend the run would now use
    assert adapter_config_hash(cfg, code) != default_code
    assert adapter_config_hash(cfg, math) == default_math  # no code runs: the sandbox determines nothing
    assert cfg.resolved().sandbox == "python-guard"
    explicit = RunConfig(data_dir=tmp_path, benchmark_profile="offline", sandbox="bwrap")
    assert adapter_config_hash(explicit, code) == default_code  # bwrap was the default: same key
    fake = RunConfig(data_dir=tmp_path, benchmark_profile="offline", evaluator="fake")
    monkeypatch.delenv("SPECTRAL_SURGERY_SANDBOX")
    before = adapter_config_hash(fake, code)
    monkeypatch.setenv("SPECTRAL_SURGERY_SANDBOX", "python-guard")
    assert adapter_config_hash(fake, code) == before  # the fake evaluator runs no generated code
    spec = get_benchmark("ss_code")
    assert _evaluator_key("id", spec, 10, None, "bwrap") != _evaluator_key("id", spec, 10, None, "python-guard")
    assert _evaluator_key("id", spec, 10) == _evaluator_key("id", spec, 10, None, None)


def test_a_refetched_adapter_must_be_the_scanned_version(tiny_adapter, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_adapter, source)
    version = SimpleNamespace(id=7, local_path=None, content_sha256=adapter_content_sha256(source))
    assert version_files(version, str(source), fetch=resolve_source) == source  # unchanged: its files
    cfg = source / "adapter_config.json"
    cfg.write_text(cfg.read_text().replace('"r": 4', '"r": 4 '))  # same meaning, other bytes: another content
    assert adapter_content_sha256(source) != version.content_sha256
    with pytest.raises(SourceChangedError, match=r"now holds content .*not version 7's .*changed after the scan"):
        version_files(version, str(source), fetch=resolve_source)
    kept = SimpleNamespace(id=7, local_path=str(tiny_adapter), content_sha256=adapter_content_sha256(tiny_adapter))
    assert version_files(kept, str(source), fetch=resolve_source) == tiny_adapter  # its recorded copy still holds it


def test_the_cli_follows_its_own_run_not_a_concurrent_one(tmp_path):
    """Another process's run started after ours began is never taken for ours (today: before + 1)."""
    from rich.console import Console

    from spectral_surgery.flows.cli.run import Progress
    from spectral_surgery.registry.repository import Registry
    from spectral_surgery.registry.runs import this_owner

    reg = Registry.open(data_dir=tmp_path)
    progress = Progress(reg, Console(file=open(tmp_path / "out.txt", "w")))
    reg.start_run("other-flow-run", {}, "h" * 64, owner="elsewhere:1")
    progress.poll()
    assert progress.run_id is None
    ours = reg.start_run("our-flow-run", {}, "h" * 64, owner=this_owner())
    progress.poll()
    assert progress.run_id == ours.id
    reg.close()


def test_a_setting_one_policy_reads_rewrites_and_rescores_that_policy_only(prefect_harness, make_fleet, fleet_base,
                                                                          tmp_path, monkeypatch):
    """issue 25: ``edit.z_tau`` (read by z_score alone) or an HNS sub-setting (read by hns alone) rewrites that
    policy's candidate and scores it; every other candidate (the global scalar's γ search and the random controls
    included) is the same row, reused with its evaluations: no model pass, no γ search, nothing else scored."""
    import spectral_surgery.tasks.surgery.global_scalar
    from spectral_surgery.flows import worker
    from spectral_surgery.flows.refine_fleet import run_nightly
    from tests.flows.test_nightly import _config, _counts, _declared, _no_model_pass, _register

    worker.reset()
    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib)
    cfg = cfg.model_copy(update={"surgery": cfg.surgery.model_copy(update={"policies": ("abs_select", "z_score",
                                                                                        "hns")})})
    reg = _register(cfg, dirs, fleet_base, ("math",))
    run_nightly(cfg)
    version = reg.list_versions("ad0")[0]

    def no_gamma_search(*a, **k):
        raise AssertionError("the global scalar's γ search ran again although nothing it reads changed")

    monkeypatch.setattr(spectral_surgery.tasks.surgery.global_scalar, "select_gamma_calib_loss", no_gamma_search)
    seen = _no_model_pass(monkeypatch, allow_evaluations=4)
    for changed, edit in (("z_score", {"z_tau": 0.5}), ("hns", {"z_tau": 0.5, "hns": {"fast_steps": 4,
                                                                                       "stable_steps": 1}})):
        before = _counts(reg)
        rows = {(c.policy, c.seed): c for c in reg.list_candidates(version.id)}
        evals = {(e.candidate_id, e.benchmark, e.evaluator_key) for e in reg.list_evaluations(version.id)}
        seen["subjects"] = 0
        cfg = cfg.model_copy(update={"surgery": cfg.surgery.model_copy(
            update={"edit": cfg.surgery.edit.model_validate({**cfg.surgery.edit.model_dump(), **edit})})})
        out = run_nightly(cfg)
        assert out["refined"] == 1 and out["failed"] == 0, out
        result = out["results"][0]
        assert result["candidates_written"] == 1 and result["calibrated"] is False
        decision = reg.decision_of_run(version.id, cfg.result_hash(_declared(reg)))
        skipped = decision.statistics_json.get("guard", {}).get("skipped", {})
        new = 1 + (changed not in skipped)  # the task benchmark, and the guard unless the plan skips it
        assert seen["subjects"] == new, seen
        after = _counts(reg)
        assert after["candidates"] == before["candidates"] + 1
        assert after["evaluations"] == before["evaluations"] + new
        now = {(c.policy, c.seed): c for c in reg.list_candidates(version.id)}
        new_rows = {k: c for k, c in now.items() if c.id not in {r.id for r in rows.values()}}
        assert [k[0] for k in new_rows] == [changed]
        weighed = set(decision.statistics_json["candidate_ids"])
        kept = {k: r for k, r in rows.items() if k[0] != changed}
        assert {r.id for r in kept.values()} <= weighed  # the others: the same rows, weighed again
        assert now[(changed, 42)].id in weighed and rows[(changed, 42)].id not in weighed
        assert now[(changed, 42)].config_hash != rows[(changed, 42)].config_hash
        assert all(now[k].config_hash == r.config_hash for k, r in kept.items())
        assert {(e.candidate_id, e.benchmark, e.evaluator_key) for e in reg.list_evaluations(version.id)} >= evals
    worker.reset()
