"""``spectral-surgery why ADAPTER`` (flows/cli/why.py over registry.read.adapter_story): the registry answers why."""

from __future__ import annotations

from tests.flows.cli_support import assert_error, cli


def _why(env, name: str, *more: str, columns: int | None = 250):
    return cli("why", name, "--data-dir", env.data, *more, columns=columns)


def test_promoted_adapter_says_what_production_serves_and_nothing_to_do(reg_env):
    r = _why(reg_env, "ad0")
    assert r.code == 0, r.err
    assert "ad0@1 (v" in r.out and "Latest decision #" in r.out and "PROMOTE" in r.out
    assert "smooth_abs (candidate #" in r.out and f"promoted by decision #{reg_env.decision.id}" in r.out
    assert "Nothing to do" in r.out
    j = _why(reg_env, "ad0", "--json").json()
    assert [v["label"] for v in j["versions"]] == [f"ad0@1 (v{reg_env.versions['ad0'].id})"]
    assert j["decision"]["verdict"] == "promote" and j["production"]["policy"] == "smooth_abs"


def test_never_refined_and_never_scanned(reg_env):
    j = _why(reg_env, "ad1", "--json").json()
    assert j["decision"] is None and j["production"]["implicit"] is True
    assert any("has no decision yet" in s for s in j["next_steps"])
    assert "never promoted" in j["production_line"]
    j2 = _why(reg_env, "ad2", "--json").json()
    assert j2["versions"] == [] and j2["next_steps"] == ["No version yet: the next `spectral-surgery run` scans and "
                                                        "refines it."]


def test_retrained_version_held_keeps_production_on_the_old_edit_and_says_so(reg_env, tmp_path):
    from spectral_surgery.tasks.adapter_io import adapter_content_sha256
    from tests import tiny

    env, reg = reg_env, reg_env.reg
    new_dir = tiny.save_adapter(env.base, tmp_path / "ad0-v2", seed=99)
    v2, created = reg.record_version("ad0", adapter_content_sha256(new_dir), "v2", new_dir)
    assert created
    stats = {"verdict": "hold", "n_needed": 1186, "verdicts": [
        {"name": "smooth_abs", "task_mean": 0.52, "verdict": "hold", "n_needed": 1186, "passed": False,
         "guard_delta": -0.01, "reason": "the interval holds both no gain and min_effect",
         "vs_baseline": {"delta": 0.02, "ci_low": -0.01, "ci_high": 0.05, "p_value": 0.1}}]}
    reg.record_decision(v2.id, "h" * 64, run_id=None, promoted_candidate_id=None, statistics=stats,
                        sentence="HOLD: could not tell yet")
    r = _why(env, "ad0", columns=100)
    assert r.code == 0, r.err
    assert f"ad0@2 (v{v2.id})" in r.out and "HOLD" in r.out and "+2.0 [−1.0, +5.0]" in r.out
    assert "smooth_abs: the interval holds both no gain and min_effect" in r.out  # the reason, under the table
    steps = _why(env, "ad0", "--json").json()["next_steps"]
    assert any("needs ~1,186 documents" in s for s in steps)
    assert any(f"Retrained version ad0@2 (v{v2.id}) held: production still serves an edit of @1" in s for s in steps)


def test_a_failed_refinement_is_shown_whole_with_the_fix(reg_env):
    env, reg = reg_env, reg_env.reg
    run = reg.start_run("flow-why", {}, "c" * 64)
    error = ValueError("d_in 192 != in_features 128 (adapter for another base)")
    reg.record_failure(run.id, env.versions["ad1"].id, error)
    r = _why(env, "ad1")
    assert r.code == 0, r.err
    assert f"run #{run.id}" in r.out and "failed" in r.out and "d_in 192 != in_features 128" in r.out
    j = _why(env, "ad1", "--json").json()
    assert j["last_run"]["status"] == "failed"
    assert j["next_steps"][0].startswith("Its last refinement failed (ValueError: d_in 192 != in_features 128")


def test_unknown_adapter_is_not_found(reg_env):
    assert_error(_why(reg_env, "nope"), "no adapter named 'nope'", code=3)
