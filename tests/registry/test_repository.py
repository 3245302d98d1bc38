"""The registry API on SQLite and PostgreSQL: idempotent writes, pending work, promotion, rollback, audit history."""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp

import pytest
from sqlalchemy import func, select

from spectral_surgery.registry.models import Base, PromotionEvent
from spectral_surgery.registry.repository import NotFoundError, Registry, RegistryError
from tests.registry.artifacts import artifact

H1, H2 = "a" * 64, "b" * 64  # config hashes


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def counts(reg: Registry) -> dict[str, int]:
    with reg.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in Base.metadata.sorted_tables}


def make_adapter(reg: Registry, name: str = "gsm-lora", content: str = "v1"):
    adapter = reg.register_adapter(name, f"hf://acme/{name}@main", "HuggingFaceTB/SmolLM2-135M", "math")
    version, _ = reg.record_version(adapter, sha(name + content), "rev-" + content, f"/cache/{name}/{content}")
    return adapter, version


def refine(reg: Registry, version, run_id: int | None = None, config_hash: str = H1, *, promote_policy="abs_select"):
    """Record what a refinement produces: two candidates, a control, baseline + candidate scores, a decision."""
    uri, digest = artifact(f"{version.id}/{promote_policy}/{config_hash}")
    good = reg.add_candidate(version.id, config_hash, promote_policy, 42, params={"eta": 0.2},
                             artifact_uri=uri, artifact_sha256=digest)
    o_uri, o_sha = artifact(f"{version.id}/smooth_abs/{config_hash}")
    other = reg.add_candidate(version.id, config_hash, "smooth_abs", 42, artifact_uri=o_uri, artifact_sha256=o_sha)
    c_uri, c_sha = artifact(f"{version.id}/random_index/{config_hash}")
    control = reg.add_candidate(version.id, config_hash, "random_index", 42, is_control=True, artifact_uri=c_uri,
                                artifact_sha256=c_sha)
    reg.add_evaluation(version.id, "gsm8k", "acc", 0.40, evaluator_key="ev1", higher_is_better=True,
                       doc_outcomes=[(0, 0.0), (1, 1.0)])
    reg.add_evaluation(version.id, "gsm8k", "acc", 0.45, evaluator_key="ev1", higher_is_better=True,
                       candidate_id=good.id, doc_outcomes=[(0, 1.0), (1, 1.0)])
    decision = reg.record_decision(version.id, config_hash, run_id=run_id, promoted_candidate_id=good.id,
                                   statistics={"delta": 0.05, "p_value": 0.01}, sentence="abs_select beats both")
    return good, other, control, decision


@pytest.fixture
def reg(registry) -> Registry:
    return registry


# ------------------------------------------------------------------------------------------- adapters
def test_register_adapter_is_idempotent_and_declarative(reg):
    a = reg.register_adapter("gsm-lora", "hf://acme/gsm-lora@v1", "base", "math",
                             config={"surgery": {"calib": {"seed": 1}}})
    before = counts(reg)
    again = reg.register_adapter("gsm-lora", "hf://acme/gsm-lora@v1", "base", "math",
                                 config={"surgery": {"calib": {"seed": 1}}})
    assert again.id == a.id and counts(reg) == before
    with pytest.raises(RegistryError, match=r"config.surgery: \{'calib': \{'seed': 1\}\} → \(none\).*--force"):
        reg.register_adapter("gsm-lora", "hf://acme/gsm-lora@v2", "base", "math", benchmark_override="gsm8k")
    assert [str(c) for c in reg.registration_changes("gsm-lora", "hf://acme/gsm-lora@v2", "base", "math")] == [
        "source_uri: 'hf://acme/gsm-lora@v1' → 'hf://acme/gsm-lora@v2'",
        "config.surgery: {'calib': {'seed': 1}} → (none)"]
    with pytest.raises(RegistryError, match="source_uri: 'hf://acme/gsm-lora@v1' → 'hf://acme/other@v1'"):
        reg.register_adapter("gsm-lora", "hf://acme/other@v1", "base", "math",
                             config={"surgery": {"calib": {"seed": 1}}})  # another repository: another adapter
    moved = reg.register_adapter("gsm-lora", "hf://acme/gsm-lora@v2", "base", "math", benchmark_override="gsm8k",
                                 force=True)  # a new release, and its override dropped on purpose
    assert (moved.id, moved.source_uri, moved.benchmark_override, moved.config_json) == (
        a.id, "hf://acme/gsm-lora@v2", "gsm8k", None)
    assert counts(reg) == before
    assert reg.get_adapter("gsm-lora").source_uri == "hf://acme/gsm-lora@v2"


def test_reregistering_keeps_a_disabled_adapter_disabled(reg):
    reg.register_adapter("x", "/adapters/x", "base", "code")
    assert reg.set_enabled("x", False).enabled is False
    assert reg.register_adapter("x", "/adapters/x", "base", "code").enabled is False
    assert reg.register_adapter("x", "/adapters/x", "base", "code", enabled=True).enabled is True
    assert [a.name for a in reg.list_adapters(enabled_only=True)] == ["x"]


def test_bad_adapter_input_is_named(reg):
    with pytest.raises(RegistryError, match="source_uri 'hf://nope'"):
        reg.register_adapter("x", "hf://nope", "base", "math")
    with pytest.raises(RegistryError, match="name ' bad name'"):
        reg.register_adapter(" bad name", "/p", "base", "math")
    with pytest.raises(RegistryError, match="config.bad: set is not JSON"):
        reg.register_adapter("x", "/p", "base", "math", config={"bad": {1, 2}})
    reg.register_adapter("gsm-lora", "/p", "base", "math")
    with pytest.raises(NotFoundError, match="did you mean 'gsm-lora'"):
        reg.get_adapter("gsm-lra")


# ------------------------------------------------------------------------------------------- versions
def test_record_version_is_content_addressed(reg):
    a, v1 = make_adapter(reg)
    before = counts(reg)
    same, created = reg.record_version("gsm-lora", v1.content_sha256, "rev-other", "/elsewhere")
    assert (same.id, created) == (v1.id, False) and counts(reg) == before
    v2, created = reg.record_version(a, sha("new bytes"), "rev-2", "/cache/v2")
    assert created and v2.id != v1.id and v2.adapter.name == "gsm-lora"
    assert [v.id for v in reg.list_versions("gsm-lora")] == [v2.id, v1.id]
    reg.record_version(a, v1.content_sha256, "rev-3", "/cache/v1")  # the source went back to old bytes
    assert [v.id for v in reg.list_versions("gsm-lora")] == [v1.id, v2.id]
    with pytest.raises(RegistryError, match="sha256 must be 64 lowercase hex"):
        reg.record_version(a, "ABC", None, None)


def test_fetch_error_is_recorded_on_the_adapter_and_cleared_by_a_version(reg):
    reg.register_adapter("ghost", "/adapters/ghost", "base", "math")
    try:
        raise FileNotFoundError("adapter source /adapters/ghost does not exist")
    except FileNotFoundError as e:
        reg.record_fetch_error("ghost", e)
    row = reg.get_adapter("ghost")
    assert row.fetch_error.rstrip().endswith("FileNotFoundError: adapter source /adapters/ghost does not exist")
    assert "Traceback" in row.fetch_error and row.fetch_error_at is not None
    reg.record_fetch_error("ghost", "offline, nothing cached")  # a later failure replaces it
    assert reg.get_adapter("ghost").fetch_error == "offline, nothing cached"
    reg.record_version("ghost", sha("ghost bytes"), None, "/adapters/ghost")
    row = reg.get_adapter("ghost")
    assert row.fetch_error is None and row.fetch_error_at is None


# ------------------------------------------------------------------------------------------------ runs
def test_runs_are_idempotent(reg):
    run = reg.start_run("flow-1", {"surgery": {"policies": ("abs_select",)}, "limit": float("nan")}, H1)
    assert run.config_snapshot == {"surgery": {"policies": ["abs_select"]}, "limit": None}
    before = counts(reg)
    assert reg.start_run("flow-1", {}, H1).id == run.id and counts(reg) == before
    with pytest.raises(RegistryError, match="new configuration needs a new flow run"):
        reg.start_run("flow-1", {}, H2)
    done = reg.finish_run(run.id, "crashed")
    assert done.status == "crashed" and done.ended_at is not None
    assert reg.finish_run(run.id, "crashed").ended_at == done.ended_at
    assert reg.start_run("flow-1", {}, H1).status == "running"  # a retried flow run re-opens it
    with pytest.raises(RegistryError, match="status must be one of completed, failed, crashed"):
        reg.finish_run(run.id, "running")


def test_pending_work(reg):
    _, gsm = make_adapter(reg, "gsm-lora")
    _, code = make_adapter(reg, "code-lora")
    reg.register_adapter("off", "/p", "base", "math", enabled=False)
    reg.record_version("off", sha("off"), None, "/p")
    run = reg.start_run("flow-1", {}, H1)
    assert [v.id for v in reg.pending_work(H1)] == [code.id, gsm.id]  # new, by name; disabled left out

    ar = reg.start_adapter_run(run.id, gsm.id)
    assert ar.status == "running" and not reg.is_refined(gsm.id, H1)
    reg.record_failure(run.id, code.id, RuntimeError("OOM"))
    reg.finish_adapter_run(ar.id, "completed")
    assert reg.is_refined(gsm.id, H1)
    assert [v.id for v in reg.pending_work(H1)] == [code.id]  # failed: still to do
    assert [v.id for v in reg.pending_work(H2)] == [code.id, gsm.id]  # another config: everything again

    gsm2, _ = reg.record_version("gsm-lora", sha("gsm v2"), "rev-2", "/cache/gsm/2")
    assert [v.id for v in reg.pending_work(H1)] == [code.id, gsm2.id]  # only the latest version
    per_adapter = {"gsm-lora": H1, "code-lora": H2}
    assert [v.id for v in reg.pending_work(lambda a: per_adapter[a.name])] == [code.id, gsm2.id]
    reg.set_enabled("gsm-lora", False)
    assert [v.adapter.name for v in reg.pending_work(H1)] == ["code-lora"]


def test_adapter_runs_record_failures_and_retries(reg):
    _, v = make_adapter(reg)
    run = reg.start_run("flow-1", {}, H1)
    first = reg.start_adapter_run(run.id, v.id, status="pending")
    assert reg.start_adapter_run(run.id, v.id, status="pending").id == first.id
    try:
        raise ValueError("calibration set is empty: /data/calib.jsonl")
    except ValueError as exc:
        failed = reg.record_failure(run.id, v.id, exc)
    assert failed.id == first.id and failed.status == "failed" and failed.error_type == "ValueError"
    assert "Traceback" in failed.error_message and "calibration set is empty" in failed.error_message
    before = counts(reg)
    retried = reg.start_adapter_run(run.id, v.id)
    assert (retried.id, retried.status, retried.error_message) == (first.id, "running", None)
    done = reg.finish_adapter_run(retried.id)
    assert done.status == "completed" and reg.start_adapter_run(run.id, v.id).status == "completed"
    assert counts(reg) == before
    assert [r.id for r in reg.adapter_runs(run.id)] == [first.id]


# -------------------------------------------------------------------------------------------- evidence
def test_evidence_writes_are_idempotent(reg):
    _, v = make_adapter(reg)
    run = reg.start_run("flow-1", {}, H1)
    good, other, control, decision = refine(reg, v, run.id)
    reg.add_guard_result(good.id, "ifeval", 0.50, 0.49, 0.02, True, p_value=0.4)
    before = counts(reg)
    assert before["candidates"] == 3 and before["evaluations"] == 2 and before["decisions"] == 1
    again = refine(reg, v, run.id)
    assert [x.id for x in again] == [good.id, other.id, control.id, decision.id]
    assert reg.add_guard_result(good.id, "ifeval", 0.50, 0.49, 0.02, True).p_value == 0.4
    assert counts(reg) == before


def test_candidate_fills_missing_fields_and_keeps_recorded_ones(reg):
    _, v = make_adapter(reg)
    c = reg.add_candidate(v.id, H1, "abs_select", 42)
    assert c.artifact_uri is None and c.params_json == {} and not c.is_control
    filled = reg.add_candidate(v.id, H1, "abs_select", 42, artifact_uri="/store/1", spectrum={"o_proj": [1.0, 0.5]})
    assert (filled.id, filled.artifact_uri, filled.spectrum_json) == (c.id, "/store/1", {"o_proj": [1.0, 0.5]})
    kept = reg.add_candidate(v.id, H1, "abs_select", 42, artifact_uri="/store/other")
    assert kept.artifact_uri == "/store/1"
    assert reg.add_candidate(v.id, H1, "abs_select", 7).id != c.id  # another seed is another candidate
    assert [x.seed for x in reg.list_candidates(v.id, H1)] == [42, 7]


def test_evaluations_baseline_and_candidates(reg):
    _, v = make_adapter(reg)
    _, other_v = make_adapter(reg, "other")
    c = reg.add_candidate(v.id, H1, "abs_select", 42)
    base = reg.add_evaluation(v.id, "gsm8k", "acc", 0.4, evaluator_key="ev1", higher_is_better=True,
                              doc_outcomes=[("d0", 1.0), ("d1", 0.0)], stderr=float("nan"), samples_uri="/s/b")
    assert (base.subject, base.candidate_id, base.n, base.stderr) == ("baseline", None, 2, None)
    assert base.doc_outcomes_json == [["d0", 1.0], ["d1", 0.0]]
    first_wins = reg.add_evaluation(v.id, "gsm8k", "acc", 0.9, evaluator_key="ev1", higher_is_better=True)
    assert (first_wins.id, first_wins.value) == (base.id, 0.4)
    cand = reg.add_evaluation(v.id, "gsm8k", "acc", 0.5, evaluator_key="ev1", higher_is_better=True,
                              candidate_id=c.id)
    assert cand.subject == f"candidate:{c.id}" and cand.id != base.id
    new_evaluator = reg.add_evaluation(v.id, "gsm8k", "acc", 0.41, evaluator_key="ev2", higher_is_better=True)
    assert new_evaluator.id not in (base.id, cand.id)
    assert reg.get_evaluation(v.id, "gsm8k", "ev1").id == base.id
    assert reg.get_evaluation(v.id, "gsm8k", "ev1", candidate_id=c.id).id == cand.id
    assert reg.get_evaluation(v.id, "gsm8k", "ev3") is None
    assert len(reg.list_evaluations(v.id)) == 3
    with pytest.raises(RegistryError, match="belongs to adapter version"):
        reg.add_evaluation(other_v.id, "gsm8k", "acc", 0.5, evaluator_key="ev1", higher_is_better=True,
                           candidate_id=c.id)
    with pytest.raises(RegistryError, match="value must be finite"):
        reg.add_evaluation(v.id, "mbpp", "pass@1", math.inf, evaluator_key="ev1", higher_is_better=True)


def test_evaluations_in_one_transaction_are_the_rows_one_at_a_time_would_be(reg):
    """add_evaluations (one evaluation's subjects at once, as the flow writes them) keys, keeps the first write and
    refuses what add_evaluation refuses, and writes nothing when one score is refused."""
    from spectral_surgery.registry.evidence import Score

    _, v = make_adapter(reg)
    _, other_v = make_adapter(reg, "other")
    c1, c2 = reg.add_candidate(v.id, H1, "abs_select", 42), reg.add_candidate(v.id, H1, "smooth_abs", 42)
    first = reg.add_evaluation(v.id, "gsm8k", "acc", 0.4, evaluator_key="ev1", higher_is_better=True)
    rows = reg.add_evaluations(v.id, "gsm8k", "ev1", [
        Score(None, "acc", 0.9, True), Score(c1.id, "acc", 0.5, True, doc_outcomes=[(0, 1.0), (1, 0.0)], seconds=2.0),
        Score(c2.id, "acc", 0.6, True, n=7), Score(c1.id, "acc", 0.7, True)], kind="guard")
    assert rows[0].id == first.id and rows[0].value == 0.4  # the first write wins, in a batch too
    assert rows[3].id == rows[1].id and rows[3].value == 0.5
    assert [(r.subject, r.candidate_id, r.kind, r.n) for r in rows[1:3]] == [
        (f"candidate:{c1.id}", c1.id, "guard", 2), (f"candidate:{c2.id}", c2.id, "guard", 7)]
    assert rows[1].seconds == 2.0 and rows[1].doc_outcomes_json == [[0, 1.0], [1, 0.0]]
    assert reg.get_evaluation(v.id, "gsm8k", "ev1", candidate_id=c2.id).id == rows[2].id
    assert {k: e.id for k, e in reg.evaluations_by_subject(v.id, "gsm8k", "ev1").items()} == \
        {None: rows[0].id, c1.id: rows[1].id, c2.id: rows[2].id}
    before = counts(reg)
    with pytest.raises(RegistryError, match="belongs to adapter version"):
        reg.add_evaluations(other_v.id, "gsm8k", "ev1", [Score(None, "acc", 0.5, True), Score(c1.id, "acc", 0.5, True)])
    with pytest.raises(NotFoundError, match="no candidate with id"):
        reg.add_evaluations(v.id, "gsm8k", "ev2", [Score(None, "acc", 0.5, True), Score(10**6, "acc", 0.5, True)])
    with pytest.raises(RegistryError, match="value must be finite"):
        reg.add_evaluations(v.id, "gsm8k", "ev2", [Score(None, "acc", 0.5, True), Score(c1.id, "acc", math.nan, True)])
    assert counts(reg) == before


def test_guard_verdicts_in_one_transaction_and_writes_to_a_missing_version(reg):
    """add_guard_results keys by (candidate, benchmark) and keeps the first write, in a batch too; a write whose
    version or run does not exist (refused by its foreign key, with no read before it) names what is missing."""
    from spectral_surgery.registry.evidence import GuardVerdict

    _, v = make_adapter(reg)
    c1, c2 = reg.add_candidate(v.id, H1, "abs_select", 42), reg.add_candidate(v.id, H1, "smooth_abs", 42)
    first = reg.add_guard_result(c1.id, "ifeval", 0.5, 0.4, 0.02, False)
    rows = reg.add_guard_results("ifeval", 0.02, [GuardVerdict(c1.id, 0.5, 0.6, True),
                                                  GuardVerdict(c2.id, 0.5, 0.55, True, p_value=0.3),
                                                  GuardVerdict(c2.id, 0.5, 0.1, False)])
    assert rows[0].id == first.id and rows[0].candidate_value == 0.4  # the first write wins
    assert rows[2].id == rows[1].id and (rows[1].candidate_value, rows[1].p_value, rows[1].passed) == (0.55, 0.3, True)
    assert [g.id for g in reg.guard_results(c2.id)] == [rows[1].id]
    assert reg.add_candidate(v.id, H1, "abs_select", 42).id == c1.id  # get, not a second row
    before = counts(reg)
    with pytest.raises(NotFoundError, match="no candidate with id"):
        reg.add_guard_results("ifeval", 0.02, [GuardVerdict(10**6, 0.5, 0.6, True)])
    with pytest.raises(NotFoundError, match="no adapter version with id"):
        reg.add_candidate(10**6, H1, "abs_select", 42)
    with pytest.raises(NotFoundError, match="no adapter version with id"):
        reg.add_evaluation(10**6, "gsm8k", "acc", 0.5, evaluator_key="ev1", higher_is_better=True)
    with pytest.raises(NotFoundError, match="no refinement run with id"):
        reg.record_decision(v.id, H1, run_id=10**6, promoted_candidate_id=None, statistics={}, sentence="s")
    assert counts(reg) == before


def test_decision_first_write_wins_and_controls_never_promote(reg):
    _, v = make_adapter(reg)
    good, other, control, decision = refine(reg, v)
    assert decision.promoted and decision.promoted_candidate_id == good.id
    again = reg.record_decision(v.id, H1, run_id=None, promoted_candidate_id=None, statistics={}, sentence="no")
    assert (again.id, again.promoted_candidate_id) == (decision.id, good.id)
    assert reg.get_decision(v.id, H1).id == decision.id
    control_h2 = reg.add_candidate(v.id, H2, control.policy, control.seed, is_control=True)
    with pytest.raises(RegistryError, match="random control"):
        reg.record_decision(v.id, H2, run_id=None, promoted_candidate_id=control_h2.id, statistics={}, sentence="x")
    with pytest.raises(RegistryError, match="not a candidate of adapter version"):
        reg.record_decision(v.id, H2, run_id=None, promoted_candidate_id=other.id, statistics={}, sentence="x")


# ------------------------------------------------------------------------------------------ production
def test_promote_moves_pointer_once(reg):
    _, v = make_adapter(reg)
    assert reg.production("gsm-lora").implicit  # nothing promoted yet: the latest unedited version
    good, *_, decision = refine(reg, v)
    event = reg.promote(decision)
    assert (event.kind, event.decision_id, event.to_candidate_id, event.to_version_id) == (
        "promotion", decision.id, good.id, v.id)
    assert (event.from_candidate_id, event.from_version_id) == (None, v.id)
    assert event.reason == "abs_select beats both" and event.evidence_json["p_value"] == 0.01
    prod = reg.production("gsm-lora")
    assert (prod.candidate_id, prod.adapter_version_id, prod.artifact_uri, prod.implicit) == (
        good.id, v.id, good.artifact_uri, False)
    before = counts(reg)
    assert reg.promote(decision.id).id == event.id
    assert counts(reg) == before and before["promotion_events"] == 1


def test_a_stop_checked_inside_the_promotion_moves_nothing(reg):
    """``before_move`` runs inside the move's transaction, after the adapter's lock: what it raises (a stop request)
    rolls the whole move back; a later promotion of the same decision moves once."""

    class Stop(KeyboardInterrupt):
        pass

    seen = []

    def stop() -> None:
        seen.append(reg.production("gsm-lora").implicit)  # read from another session: the move is not visible
        raise Stop

    _, v = make_adapter(reg)
    good, *_, decision = refine(reg, v)
    before = counts(reg)
    with pytest.raises(Stop):
        reg.promote(decision, before_move=stop)
    assert seen == [True] and counts(reg) == before and reg.production("gsm-lora").implicit
    assert reg.promote(decision, before_move=lambda: None).to_candidate_id == good.id
    assert reg.promote(decision, before_move=stop).decision_id == decision.id  # done already: nothing to check
    assert counts(reg)["promotion_events"] == before["promotion_events"] + 1


def test_a_promotion_of_a_run_that_was_cancelled_moves_nothing(reg):
    """The run row is the stop state every worker shares (a remote one too): a promotion names its run, and one
    whose run was cancelled (or closed) refuses inside the move's transaction; a running run's promotion moves."""
    from spectral_surgery.registry.validation import RunStoppedError

    _, v = make_adapter(reg)
    good, *_, decision = refine(reg, v)
    stopped, live = reg.start_run("f1", {}, H1), reg.start_run("f2", {}, H1)
    reg.cancel_run(stopped.id, "stopped by SIGINT")
    before = counts(reg)
    with pytest.raises(RunStoppedError, match=f"run {stopped.id} is cancelled"):
        reg.promote(decision, run_id=stopped.id)
    assert counts(reg) == before and reg.production("gsm-lora").implicit
    assert reg.promote(decision, run_id=live.id).to_candidate_id == good.id


def test_a_decision_without_candidate_does_not_promote(reg):
    _, v = make_adapter(reg)
    d = reg.record_decision(v.id, H1, run_id=None, promoted_candidate_id=None, statistics={"why": "no gain"},
                            sentence="No candidate beat the random control.")
    with pytest.raises(RegistryError, match="promoted no candidate: No candidate beat"):
        reg.promote(d)
    assert reg.history("gsm-lora") == []


def test_rollback_restores_previous_production(reg):
    _, v1 = make_adapter(reg)
    c1, *_, d1 = refine(reg, v1)
    reg.promote(d1)
    v2, _ = reg.record_version("gsm-lora", sha("gsm v2"), "rev-2", "/cache/2")
    c2, *_, d2 = refine(reg, v2)
    reg.promote(d2)
    assert reg.production("gsm-lora").candidate_id == c2.id

    back = reg.rollback("gsm-lora", "alice", "v2 regressed in production")
    assert (back.kind, back.actor, back.reverts_event_id) == ("rollback", "alice", reg.history("gsm-lora")[1].id)
    assert (back.from_candidate_id, back.from_version_id, back.to_candidate_id, back.to_version_id) == (
        c2.id, v2.id, c1.id, v1.id)
    prod = reg.production("gsm-lora")
    assert (prod.candidate_id, prod.adapter_version_id) == (c1.id, v1.id)
    assert [(e.kind, e.to_candidate_id) for e in reg.history("gsm-lora")] == [
        ("promotion", c1.id), ("promotion", c2.id), ("rollback", c1.id)]

    reg.rollback("gsm-lora", "alice", "v1 edit too")  # walks back one more step: the unedited v1
    prod = reg.production("gsm-lora")
    assert (prod.candidate_id, prod.adapter_version_id, prod.implicit) == (None, v1.id, False)
    with pytest.raises(RegistryError, match="no promotion left to roll back"):
        reg.rollback("gsm-lora", "alice", "again")
    assert reg.promote(d2).decision_id == d2.id  # still promoted once: rollbacks do not re-arm a decision
    assert len(reg.history("gsm-lora")) == 4


def test_manual_promote_and_its_rollback(reg):
    _, v = make_adapter(reg)
    good, other, control, decision = refine(reg, v)
    reg.promote(decision)
    with pytest.raises(RegistryError, match="reason must be a non-empty string"):
        reg.manual_promote(other.id, "bob", "  ")
    ev = reg.manual_promote(other.id, "bob", "smooth_abs reads better in review")
    assert (ev.kind, ev.actor, ev.from_candidate_id, ev.to_candidate_id) == (
        "manual_override", "bob", good.id, other.id)
    assert ev.evidence_json["policy"] == "smooth_abs"
    assert reg.manual_promote(other.id, "bob", "double click") is None  # already there: nothing appended
    unedited = reg.manual_promote(None, "bob", "serve the plain adapter", adapter_version_id=v.id)
    assert (unedited.to_candidate_id, unedited.to_version_id) == (None, v.id)
    with pytest.raises(RegistryError, match="pass adapter_version_id"):
        reg.manual_promote(None, "bob", "which version?")
    reg.rollback("gsm-lora", "bob", "undo the plain adapter")
    assert reg.production("gsm-lora").candidate_id == other.id
    assert [e.kind for e in reg.history("gsm-lora")] == ["promotion", "manual_override", "manual_override",
                                                        "rollback"]


def test_a_pointer_never_moves_to_a_control_without_force_or_to_missing_or_changed_files(reg, tmp_path):
    import shutil

    adapter, v = make_adapter(reg)
    good, other, control, decision = refine(reg, v)
    with pytest.raises(RegistryError, match="is a control .*--force"):
        reg.manual_promote(control.id, "bob", "try the random control")
    assert reg.history("gsm-lora") == []
    ev = reg.manual_promote(control.id, "bob", "measure chance in production", force=True)
    assert "by hand with --force by bob" in ev.evidence_json["warning"]
    # a candidate whose files changed after evaluation, or are gone, is refused; production stays
    moved = tmp_path / "moved"
    shutil.copytree(other.artifact_uri, moved)
    with open(other.artifact_uri + "/adapter_config.json", "a") as f:
        f.write(" ")
    with pytest.raises(RegistryError, match="changed after they were evaluated"):
        reg.manual_promote(other.id, "bob", "serve smooth_abs")
    shutil.rmtree(other.artifact_uri)
    with pytest.raises(RegistryError, match="cannot be served"):
        reg.manual_promote(other.id, "bob", "serve smooth_abs")
    shutil.copytree(moved, other.artifact_uri)  # the evaluated bytes are back: allowed again
    assert reg.manual_promote(other.id, "bob", "serve smooth_abs").to_candidate_id == other.id
    # the gate's own promotion and a rollback are checked the same way
    shutil.rmtree(good.artifact_uri)
    with pytest.raises(RegistryError, match="cannot be served"):
        reg.promote(decision)
    assert reg.production("gsm-lora").candidate_id == other.id
    reg.rollback("gsm-lora", "bob", "back to the control")
    assert reg.production("gsm-lora").candidate_id == control.id
    # a local (non-Hub) unedited version overwritten in place is refused; a Hub version with no cache is served
    local = reg.register_adapter("local-lora", str(tmp_path / "src"), "acme/base", "math")
    uri, digest = artifact("local-src-v1")
    lv, _ = reg.record_version(local, digest, None, uri)
    assert reg.manual_promote(None, "bob", "plain", adapter_version_id=lv.id) is not None
    with open(uri + "/adapter_config.json", "a") as f:
        f.write(" ")
    with pytest.raises(RegistryError, match="changed after"):
        reg.rollback("local-lora", "bob", "undo")  # back to the same version, whose bytes changed: refused
    assert reg.manual_promote(None, "bob", "hub copy gone", adapter_version_id=v.id) is not None  # /cache/... gone


def test_history_is_append_only_through_the_api(reg):
    _, v = make_adapter(reg)
    *_, decision = refine(reg, v)
    reg.promote(decision)
    reg.rollback("gsm-lora", "alice", "test")
    snapshot = [(e.id, e.kind, e.reason, e.at) for e in reg.history("gsm-lora")]
    public = {name for name in dir(Registry) if not name.startswith("_")}
    assert not {n for n in public if "delete" in n or "update" in n or "edit" in n}  # no way to rewrite events
    reg.promote(decision)
    assert [(e.id, e.kind, e.reason, e.at) for e in reg.history("gsm-lora")] == snapshot


# ------------------------------------------------------------------------------------------ concurrency
def _promote_in_process(url: str, decision_id: int, barrier, results) -> None:
    reg = Registry.open(url, migrate=False)
    try:
        barrier.wait(timeout=60)
        event = reg.promote(decision_id, actor="worker")
        # A get-or-create racing the other process on the same key, too.
        version = reg.get_version(event.to_version_id)
        same = reg.add_evaluation(version.id, "ifeval", "prompt_strict", 0.3, evaluator_key="race",
                                  higher_is_better=True, kind="guard")
        results.put((event.id, same.id))
    except BaseException as exc:  # report to the parent instead of dying silently
        results.put(("error", repr(exc)))
    finally:
        reg.close()


@pytest.mark.slow
def test_two_processes_promoting_one_decision_append_one_event(reg):
    _, v = make_adapter(reg)
    *_, decision = refine(reg, v)
    url = reg.engine.url.render_as_string(hide_password=False)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_promote_in_process, args=(url, decision.id, barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(g[0] != "error" for g in got), got
    assert got[0] == got[1]  # both saw the same event and the same evaluation
    with reg.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(PromotionEvent)).scalar_one() == 1
    assert counts(reg)["evaluations"] == 3
    assert reg.production("gsm-lora").candidate_id == decision.promoted_candidate_id
