"""The run config and its stage keys (tasks/run_config.py): each key changes with exactly what determines it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from spectral_surgery.tasks.config import SurgeryConfig
from spectral_surgery.tasks.decision.gate import GateConfig
from spectral_surgery.tasks.keys import candidate_key, decision_key, prepared_key
from spectral_surgery.tasks.run_config import RunConfig

ADAPTER, BASE, CALIB = "a" * 64, "acme/base", "c" * 64
EVIDENCE = {"task": {"evaluator": "fake/v1", "subjects": [None, 1, 2]}}


def keys(surgery: SurgeryConfig, gate: GateConfig = GateConfig(), *, adapter: str = ADAPTER, base: str = BASE,
         revision: str | None = None, calib: str = CALIB, evidence: dict = EVIDENCE) -> tuple[str, str, str]:
    """(prepared, candidate, decision) keys of one adapter version, chained as the nightly flow chains them; the
    candidate is grad_direction's (which reads ``eta``)."""
    p = prepared_key(adapter, base, revision, surgery, calib)
    c = candidate_key(p, surgery, "grad_direction", surgery.calib.seed)
    return p, c, decision_key(gate, c, evidence)


def surgery(**overrides) -> SurgeryConfig:
    return RunConfig().surgery_for({"surgery": overrides})


def changed(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[bool, ...]:
    return tuple(x != y for x, y in zip(a, b))


BASELINE = keys(SurgeryConfig())


# ------------------------------------------------------------------------------------------- stage keys
def test_keys_are_deterministic_hex_and_distinct_per_stage():
    assert keys(SurgeryConfig()) == BASELINE
    assert all(len(k) == 64 and int(k, 16) >= 0 for k in BASELINE) and len(set(BASELINE)) == 3


@pytest.mark.parametrize("what, kwargs", [
    ("adapter content", {"adapter": "b" * 64}),
    ("base model", {"base": "acme/other"}),
    ("base revision", {"revision": "r2"}),
    ("calibration examples", {"calib": "d" * 64}),
])  # fmt: skip
def test_inputs_of_the_model_pass_change_every_key(what, kwargs):
    assert changed(BASELINE, keys(SurgeryConfig(), **kwargs)) == (True, True, True), what


@pytest.mark.parametrize("what, overrides, expected", [
    ("calibration settings", {"calib": {"n_samples": 4}}, (True, True, True)),
    ("calibration seed", {"calib": {"seed": 7}}, (True, True, True)),
    ("targets", {"targets": {"target_modules": ["o_proj"]}}, (True, True, True)),
    ("edit settings", {"edit": {"eta": 0.3}}, (False, True, True)),
    ("another policy", {"policies": ["abs_select", "smooth_abs", "grad_direction", "z_score"]}, (False, False, False)),
    ("fewer policies", {"policies": ["smooth_abs"]}, (False, False, False)),
    ("control seeds", {"random_control_seeds": [1, 2, 3]}, (False, False, False)),
])  # fmt: skip
def test_surgery_settings_change_only_the_stages_they_determine(what, overrides, expected):
    # policies and seeds are the rest of a candidate's identity (rows keyed by policy and seed), not the key
    assert changed(BASELINE, keys(surgery(**overrides))) == expected, what


def test_the_gate_and_the_evidence_change_only_the_decision_key():
    assert changed(BASELINE, keys(SurgeryConfig(), GateConfig(alpha=0.01))) == (False, False, True)
    assert changed(BASELINE, keys(SurgeryConfig(), GateConfig(min_effect=0.05))) == (False, False, True)
    other = {"task": {"evaluator": "fake/v2", "subjects": [None, 1, 2]}}
    assert changed(BASELINE, keys(SurgeryConfig(), evidence=other)) == (False, False, True)


# ------------------------------------------------------------------------------------------- result hash
def test_result_hash_covers_what_the_results_depend_on_and_nothing_else(tmp_path):
    base = RunConfig(data_dir=tmp_path / "a")
    same = [RunConfig(data_dir=tmp_path / "b"), RunConfig(data_dir=tmp_path / "a", concurrency=8),
            RunConfig(data_dir=tmp_path / "a", registry_url="sqlite:///x.db", task_runner="dask", promote=False,
                      actor="bob", device="cuda")]
    assert {c.result_hash() for c in same} == {base.result_hash()}
    different = [RunConfig(data_dir=tmp_path / "a", gate=GateConfig(alpha=0.01)),
                 RunConfig(data_dir=tmp_path / "a", task_limit=50), RunConfig(data_dir=tmp_path / "a", guard=False),
                 RunConfig(data_dir=tmp_path / "a", task_limits={"ss_mc": 200}),
                 RunConfig(data_dir=tmp_path / "a", evaluator="fake"),
                 RunConfig(data_dir=tmp_path / "a", evaluator_options={"n_docs": 3}),
                 RunConfig(data_dir=tmp_path / "a", calib_source="metamath"),
                 RunConfig(data_dir=tmp_path / "a", surgery=surgery(policies=["smooth_abs"]))]
    hashes = {c.result_hash() for c in different}
    assert len(hashes) == len(different) and base.result_hash() not in hashes
    assert base.result_hash({"calib": "x.jsonl"}) != base.result_hash() == base.result_hash({})


# ------------------------------------------------------------------------------------------- overrides
def test_surgery_for_merges_an_adapters_overrides_section_by_section():
    run = RunConfig(surgery=SurgeryConfig.model_validate({"calib": {"n_samples": 16, "batch_size": 4}}))
    assert run.surgery_for(None) is run.surgery and run.surgery_for({"surgery": {}}) is run.surgery
    merged = run.surgery_for({"surgery": {"calib": {"n_samples": 4}, "policies": ["gd"]}, "calib": "x.jsonl"})
    assert (merged.calib.n_samples, merged.calib.batch_size) == (4, 4)  # a section is updated, not replaced
    assert merged.policies == ("gd",) and merged.edit == run.surgery.edit
    assert run.surgery.calib.n_samples == 16  # the run's own config is untouched
    with pytest.raises(ValidationError, match="etaa"):
        run.surgery_for({"surgery": {"edit": {"etaa": 1}}})


def test_run_config_rules_say_the_fix(tmp_path):
    with pytest.raises(ValidationError, match="random control is added automatically"):
        RunConfig(surgery=SurgeryConfig(policies=("smooth_abs", "random_index")))
    with pytest.raises(ValidationError, match="set gate.require_control=false"):
        RunConfig(surgery=SurgeryConfig(random_control_seeds=()))
    RunConfig(surgery=SurgeryConfig(random_control_seeds=()), gate=GateConfig(require_control=False))
    with pytest.raises(ValidationError, match="task_runner"):
        RunConfig(task_runner="ray")
    assert RunConfig(data_dir="~/x").data_dir.is_absolute()
    dumped = RunConfig(data_dir=tmp_path).model_dump(mode="json")  # JSON round trip (a config sent to a worker)
    assert RunConfig.model_validate(dumped) == RunConfig(data_dir=tmp_path)


def test_task_limits_give_a_benchmark_its_own_documents(tmp_path):
    run = RunConfig(data_dir=tmp_path, task_limit=60, task_limits={"ss_mc": 200})
    assert (run.limit_for("ss_mc"), run.limit_for("ss_arith")) == (200, 60)
    assert RunConfig(data_dir=tmp_path, task_limits={"ss_mc": 60}).result_hash() != RunConfig(
        data_dir=tmp_path, task_limits={"ss_mc": 61}).result_hash()
    with pytest.raises(ValidationError, match="unknown benchmark 'ss_mcq'; did you mean 'ss_mc'"):
        RunConfig(task_limits={"ss_mcq": 200})
    with pytest.raises(ValidationError, match=r"task_limits.ss_mc: documents must be a whole number >= 1"):
        RunConfig(task_limits={"ss_mc": 0})
    with pytest.raises(ValidationError, match="every task_limits entry >= sequential.looks"):
        RunConfig(task_limits={"ss_mc": 2}, sequential={"enabled": True, "looks": 4})


def test_arms_pass_is_an_lm_eval_option_checked_at_the_edge(tmp_path):
    for arms_pass in ("one_pass", "arm_by_arm"):
        RunConfig(data_dir=tmp_path, evaluator_options={"arms_pass": arms_pass})
    with pytest.raises(ValidationError, match="arms_pass must be one_pass .* or arm_by_arm .* got 'both'"):
        RunConfig(data_dir=tmp_path, evaluator_options={"arms_pass": "both"})
    with pytest.raises(ValidationError, match="only the lm_eval evaluator takes it .*'fake'"):
        RunConfig(data_dir=tmp_path, evaluator="fake", evaluator_options={"arms_pass": "one_pass"})


def test_read_config_file_is_the_one_loader(tmp_path):
    """YAML and JSON files, the errors naming the file; the deployments' loader and the CLI's are this one."""
    import spectral_surgery.deployments.serve
    from spectral_surgery.tasks.run_config import RunConfig, read_config_file

    y = tmp_path / "c.yaml"
    y.write_text("task_limit: 7\nsurgery: {policies: [hns]}\n")
    j = tmp_path / "c.json"
    j.write_text('{"task_limit": 7, "surgery": {"policies": ["hns"]}}')
    assert read_config_file(y) == read_config_file(j) == {"task_limit": 7, "surgery": {"policies": ["hns"]}}
    assert RunConfig.model_validate(read_config_file(y)).surgery.policies == ("hns",)
    (tmp_path / "empty.yaml").write_text("")
    assert read_config_file(tmp_path / "empty.yaml") == {}
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ValueError, match="list.yaml: a run config is a mapping"):
        read_config_file(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("key: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml: not valid YAML"):
        read_config_file(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError, match="--config .*absent.yaml: no such file"):
        read_config_file(tmp_path / "absent.yaml")
    assert spectral_surgery.deployments.serve.load_config(y) == read_config_file(y)


def test_promote_takes_true_false_or_review_and_the_window_reads_hours_by_default():
    from datetime import timedelta

    assert [RunConfig(promote=v).moves for v in (True, False, "review")] == [True, False, False]
    assert RunConfig().promote is True and RunConfig().review_window == timedelta(hours=24)
    windows = {36: timedelta(hours=36), 1.5: timedelta(minutes=90), "36h": timedelta(hours=36),
               "90m": timedelta(minutes=90), "2d": timedelta(days=2), "PT1H": timedelta(hours=1)}
    for given, want in windows.items():
        assert RunConfig(promote="review", review_window=given).review_window == want, given
    cfg = RunConfig(promote="review", review_window="12h")
    again = RunConfig.model_validate_json(cfg.model_dump_json())  # as Prefect hands it to the flow
    assert (again.promote, again.review_window) == ("review", timedelta(hours=12))
    assert cfg.result_hash() == RunConfig().result_hash()  # how results are promoted keys no result
    with pytest.raises(ValueError, match="review_window must be positive"):
        RunConfig(review_window=0)
    with pytest.raises(ValueError, match="promote"):
        RunConfig(promote="maybe")


# ------------------------------------------------------------------------------------------- keys hold what was used
def test_every_setting_is_classified_as_keyed_or_not():
    """A new RunConfig field must say where it enters the keys (tasks.run_config.SETTING_KEYS), or this fails."""
    from spectral_surgery.tasks.run_config import SETTING_KEYS

    assert set(SETTING_KEYS) == set(RunConfig.model_fields), set(RunConfig.model_fields) ^ set(SETTING_KEYS)
    assert set(SETTING_KEYS.values()) == {"result", "evaluation", "adapter", "no"}


@pytest.mark.parametrize("field, value", [
    ("surgery", {"edit": {"eta": 0.3}}), ("gate", {"alpha": 0.01}), ("ladder", {"zero_rebuild": False}),
    ("sequential", {"enabled": True, "looks": 2}), ("edit_budget", {"enabled": True}), ("evaluator", "fake"),
    ("evaluator_options", {"n_docs": 3}), ("benchmark_profile", "paper"), ("task_limit", 50),
    ("task_limits", {"ss_mc": 200}), ("guard_limit", 50), ("guard", False), ("guard_arms", "all"),
    ("calib_source", "metamath"), ("decision", {"metric": "continuous"}),
])  # fmt: skip
def test_every_setting_classified_result_changes_the_result_hash(field, value, tmp_path, monkeypatch):
    from spectral_surgery.tasks.run_config import SETTING_KEYS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert SETTING_KEYS[field] == "result"
    base = RunConfig(data_dir=tmp_path)
    assert RunConfig.model_validate({"data_dir": str(tmp_path), field: value}).result_hash() != base.result_hash()


def test_the_benchmark_profile_is_keyed_by_what_it_resolves_to(tmp_path, monkeypatch):
    """``benchmark_profile: null`` picks the suites from HF_HUB_OFFLINE at refine time: the key must follow."""
    monkeypatch.delenv("SPECTRAL_SURGERY_BENCHMARK_PROFILE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    cfg = RunConfig(data_dir=tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = cfg.result_hash()
    assert cfg.resolved().benchmark_profile == "offline"
    assert offline == RunConfig(data_dir=tmp_path, benchmark_profile="offline").result_hash()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert cfg.result_hash() != offline  # the paper's benchmarks now: not "done" under the offline suites' key
    assert cfg.result_hash() == RunConfig(data_dir=tmp_path, benchmark_profile="paper").result_hash()


@pytest.mark.parametrize("policy, fragment", [
    ("global_scalar", "ladder.global_scalar"), ("zero_rebuild", "ladder.zero_rebuild"),
    ("zero_rebuild_one_sided", "never a candidate"),
])  # fmt: skip
def test_a_control_or_canary_listed_as_a_policy_is_refused_with_the_fix(policy, fragment, tmp_path):
    from spectral_surgery.registry.declaration import DeclarationError, check_surgery

    with pytest.raises(ValidationError, match=rf"surgery.policies\[1\] lists {policy}.*{fragment}.*remove it"):
        RunConfig.model_validate({"data_dir": str(tmp_path), "surgery": {"policies": ["smooth_abs", policy]}})
    with pytest.raises(DeclarationError, match=rf"config.surgery.policies\[0\] lists {policy}"):
        check_surgery({"surgery": {"policies": [policy]}})


# ------------------------------------------------------------------------------------------- decision metric
def test_decision_metric_is_keyed_into_the_decision_only_and_validated_at_the_edge(tmp_path):
    from spectral_surgery.tasks.decision.gate import DecisionConfig

    p, c, d = keys(SurgeryConfig())
    assert decision_key(GateConfig(), c, EVIDENCE, DecisionConfig()) == d  # the default: keys as before it existed
    cont = DecisionConfig(metric="continuous")
    assert decision_key(GateConfig(), c, EVIDENCE, cont) != d
    assert decision_key(GateConfig(), c, EVIDENCE, DecisionConfig(metric="continuous", min_effect=0.2)) not in (
        d, decision_key(GateConfig(), c, EVIDENCE, cont))
    base = RunConfig(data_dir=tmp_path)
    assert RunConfig(data_dir=tmp_path, decision={"metric": "task"}).result_hash() == base.result_hash()
    assert RunConfig(data_dir=tmp_path, decision={"metric": "continuous"}).result_hash() != base.result_hash()
    with pytest.raises(ValidationError, match="decision.metric"):
        RunConfig(data_dir=tmp_path, decision={"metric": "margin"})
    with pytest.raises(ValidationError, match="min_effect"):
        RunConfig(data_dir=tmp_path, decision={"metric": "continuous", "min_effect": 0})
    with pytest.raises(ValidationError, match="continuous cannot be combined with sequential"):
        RunConfig(data_dir=tmp_path, decision={"metric": "continuous"}, sequential={"enabled": True})
