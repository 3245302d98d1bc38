"""What a visit writes (tasks/surgery/write_plan.py): the arms left to store, and when a model pass or a γ choice runs.

The stored candidates are stand-ins with the one attribute the plan reads (``artifact_uri``); whether an artifact
directory exists is given to the plan, so no files are needed. The flow's use is covered in tests/flows/test_nightly.py
(re-runs that write nothing, a new policy written from the stored decomposition, the data-free path).
"""

from __future__ import annotations

from types import SimpleNamespace

from spectral_surgery.tasks.decision.arms import Arm
from spectral_surgery.tasks.surgery.write_plan import (arm_ids, candidate_record, fresh_holdout, is_data_free,
                                                       plan_writes,
                                      write_seconds)

SMOOTH, RANDOM = Arm("smooth_abs", 42, "policy"), Arm("random_index", 1, "random_control")
SCALAR, BARE = Arm("global_scalar", 42, "scalar_control"), Arm("bare_base", 0, "bare_base")
ZERO = Arm("zero_rebuild", 42, "canary")


def _stored(*arms: Arm, uri: str | None = "/store/x") -> dict:
    return {(a.policy, a.seed): SimpleNamespace(artifact_uri=None if a.role == "bare_base" else uri) for a in arms}


def test_nothing_stored_writes_every_arm_but_the_bare_base_which_is_only_recorded():
    plan = plan_writes([SMOOTH, RANDOM, SCALAR, BARE], {}, is_dir=lambda p: True)
    assert plan.writes == (SMOOTH, RANDOM, SCALAR) and plan.bare == (BARE,) and len(plan.missing) == 4
    assert plan.needs_gamma and plan.needs_model(prepared_stored=True)  # γ is chosen with the model


def test_stored_candidates_are_not_written_again_unless_their_files_are_gone():
    arms = [SMOOTH, RANDOM, BARE]
    assert plan_writes(arms, _stored(*arms), is_dir=lambda p: True).missing == ()
    gone = plan_writes(arms, _stored(*arms), is_dir=lambda p: False)
    assert gone.writes == (SMOOTH, RANDOM) and gone.bare == ()  # the bare base has no files to lose


def test_a_model_pass_runs_only_without_a_stored_decomposition_or_for_gamma():
    plan = plan_writes([SMOOTH, RANDOM], {}, is_dir=lambda p: True)
    assert not plan.needs_gamma and not plan.needs_model(prepared_stored=True) and plan.needs_model(False)
    assert not plan_writes([SMOOTH], _stored(SMOOTH), is_dir=lambda p: True).needs_model(False)  # nothing to write


def test_data_free_arms_and_held_out_rows():
    assert is_data_free([ZERO, BARE]) and not is_data_free([ZERO, SMOOTH])
    row = lambda p, a: SimpleNamespace(prompt=p, answer=a)  # noqa: E731
    assert fresh_holdout([row("1+1", "2")], [row("1+1", "2"), row("2+2", "4")]) == [row("2+2", "4")]


def test_candidate_record_keeps_the_manifests_spectrum_sensitivity_and_gamma():
    manifest = {"parameters": {"eta": 0.1}, "summary": {"modules": 1}, "gamma": 0.6, "gamma_rule": "calib_loss",
                "gamma_grid": [1.0, 0.6], "gamma_scores": [2.0, 1.5],
                "modules": {"q": {"sigma_before": [2.0], "sigma_after": [1.0],
                                  "sensitivity": {"magnitude": [0.5], "sign_agreement": [1.0], "other": 1}},
                            "v": {"sigma_before": [3.0], "sigma_after": [3.0]}}}
    rec = candidate_record(manifest, scalar=False)
    assert rec.params == {"eta": 0.1} and rec.spectrum["summary"] == {"modules": 1}
    assert rec.spectrum["modules"]["v"] == {"before": [3.0], "after": [3.0]}
    assert rec.sensitivity == {"q": {"magnitude": [0.5], "sign_agreement": [1.0]}}  # none without data
    assert candidate_record(manifest, scalar=True).params["gamma"] == 0.6


def test_a_written_candidate_costs_its_write_its_stages_and_gamma_only_when_chosen():
    prepared = SimpleNamespace(timings={"decompose": 1.0, "calibrate": 4.0, "stored_decompose": 2.0})
    assert write_seconds(0.5, prepared, needs_data=True) == {"write": 0.5, "decompose": 2.0, "calibrate": 4.0}
    assert write_seconds(0.5, prepared, needs_data=False, gamma=3.0) == {"write": 0.5, "decompose": 2.0,
                                                                         "gamma": 3.0}


def test_each_arm_finds_the_row_written_under_its_own_key():
    rows = [SimpleNamespace(policy="smooth_abs", seed=42, config_hash=h, id=i) for h, i in (("old", 1), ("new", 2))]
    rows.append(SimpleNamespace(policy="random_index", seed=1, config_hash="r", id=3))
    assert arm_ids([SMOOTH, RANDOM], {SMOOTH.name: "new", RANDOM.name: "r"}, rows) == {SMOOTH.name: 2,
                                                                                        RANDOM.name: 3}
