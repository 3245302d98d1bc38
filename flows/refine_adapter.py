"""Per-adapter subflow: download → decompose + calibrate once → edit under every policy and random control →
evaluate → guard → decide → promote.

Every step first asks the registry whether its result already exists (content-addressed keys), so a re-run does
no new work and a run killed mid-way resumes where it stopped. Pure work lives in ``tasks/``; the Prefect tasks
here only add retries (for I/O), logging and artifacts: the arms, the gate's inputs and the guard plan come from
:mod:`tasks.decision.arms`, what to write from :mod:`tasks.surgery.write_plan`, the sequential looks from
:func:`tasks.decision.sequential.run_looks` (scored here) and the stored decision from
:class:`tasks.decision.record.DecisionRecord`.
"""


import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows import interrupt, stage_hook, worker
from flows.integrations import events
from registry.runs import INTERRUPTED
from registry.validation import RunStoppedError
from tasks.adapter_io import adapter_content_sha256
from tasks.evaluation.benchmarks import BenchmarkSpec, guard_benchmark, resolve_benchmark
from tasks.download import ResolvedAdapter, can_heal, resolve_source
from tasks.evaluation.evaluate import doc_rows, runs_generated_code, split_doc_rows
from tasks.decision.gate import decision_metric, verdict_label, verdict_of
from tasks.decision.arms import BARE_BASE, BASELINE, Arm, gate_inputs, guard_plan, plan_arms, run_gate
from tasks.decision.sequential import design_for, run_looks
from tasks.surgery.policies import get_policy
from tasks.surgery.write_plan import (candidate_record, fresh_holdout, is_data_free, no_holdout_reason, plan_writes,
                                      stage_seconds)
from tasks.decision.record import DecisionRecord, EvidenceKeys, GuardRecord, LadderRecord, MetricFallback
from tasks.decision.report import candidate_rows, decision_markdown
from tasks.run_config import RunConfig
from tasks.keys import candidate_key, candidates_key, evaluation_key, prepared_key, sandbox_used
from tasks.keys import adapter_key as adapter_config_hash  # noqa: F401  (this module's API since issue 9)
from tasks.evaluation.sandbox import resolve_backend, using_backend


def _logger():
    try:
        return get_run_logger()
    except Exception:  # called outside a flow run (unit tests of the helpers)
        return logging.getLogger(__name__)




def _io_retry(task_, task_run, state) -> bool:
    """Retry only failures that can heal (:func:`tasks.download.can_heal`); a bad adapter, a missing path or an
    unknown Hub repository stays so however often it is fetched."""
    try:
        state.result()
    except Exception as e:
        return can_heal(e)
    return False


@task(retries=3, retry_delay_seconds=[2, 10, 30], retry_condition_fn=_io_retry, cache_policy=NO_CACHE)
def fetch_adapter(uri: str) -> ResolvedAdapter:
    """Download (hub, revision pinned) or locate (local path) an adapter and hash its content."""
    return resolve_source(uri)


class SourceChangedError(ValueError):
    """The adapter's source no longer holds the version being refined (it changed after the scan)."""


def version_files(version, source_uri: str, fetch=None) -> Path:
    """A local directory holding exactly ``version``: its recorded copy if that still hashes to the version's
    sha256, else a fresh fetch of ``source_uri``, which must hash to it too.

    Args:
        fetch: ``uri -> ResolvedAdapter`` (default the retried :func:`fetch_adapter` task).

    Raises:
        SourceChangedError: the re-fetched content is another version's: nothing is refined under this version's
            identity (the next scan records the new content as a new version).
    """
    local = Path(version.local_path) if version.local_path else None
    if local is not None and local.is_dir() and adapter_content_sha256(local) == version.content_sha256:
        return local
    got = (fetch or fetch_adapter)(source_uri)
    if got.sha256 != version.content_sha256:
        raise SourceChangedError(
            f"adapter source {source_uri} now holds content {got.sha256[:12]}…, not version {version.id}'s "
            f"{version.content_sha256[:12]}… recorded by the scan: it changed after the scan, so version "
            f"{version.id} cannot be refined from it; the next run scans the new content as a new version "
            "(restore the source to refine this one)")
    return got.local_path


@dataclass(frozen=True)
class Candidates:
    """The candidates of one visit: the key of the set, the arm name -> candidate row id of every planned arm and
    arm name -> its own candidate key (:func:`tasks.keys.candidate_key`)."""

    key: str
    ids: dict[str, int]
    written: int
    calibrated: bool
    skipped: dict[str, str]
    keys: dict[str, str] = field(default_factory=dict)


@task(cache_policy=NO_CACHE)
def make_candidates(config: RunConfig, version, adapter, local: Path, arms: list[Arm]) -> Candidates:
    """Write every planned candidate that is not stored yet; the model pass runs only if its result is not stored.

    Each candidate is keyed by what determines it (:func:`tasks.keys.candidate_key`: its policy, seed and the
    settings that policy reads), so a setting only one policy reads rewrites that policy's candidate alone; the
    decomposition and sensitivities by :func:`tasks.keys.prepared_key`, stored once per key in the artifact store, so
    a new policy or another edit setting is written from the stored sensitivities with no forward or backward pass.
    """
    from tasks.surgery.calibration import calibration_sha256, load_calibration
    from tasks.surgery.edit import prepare, prepare_data_free, write_candidate
    from tasks.surgery.global_scalar import holdout_calib_config, select_gamma_calib_loss
    from tasks.surgery.prep_store import load_prepared, save_prepared

    reg = worker.registry(config)
    overrides = adapter.config_json or {}
    surgery = config.surgery_for(overrides)
    # Data-free edits (post-hoc reshapes, the zero-rebuild canary) depend on the adapter alone: when every arm
    # to write is one, no calibration source is read and no model runs (the key holds no calibration either).
    data_free = is_data_free(arms)
    source = overrides.get("calib") or config.calib_source
    if not source and not data_free:
        raise ValueError(f"adapter {adapter.name!r} has no calibration source: register it with a calib file "
                         "(config {'calib': 'path.jsonl'}) or set RunConfig.calib_source")
    examples = [] if data_free else load_calibration(source, surgery.calib)
    skipped: dict[str, str] = {}
    holdout = []
    if any(a.role == "scalar_control" for a in arms):
        try:
            holdout = load_calibration(source, holdout_calib_config(surgery))
        except ValueError:  # the same file read above for the sensitivities: here it only has no rows left
            holdout = []
        fresh = fresh_holdout(examples, holdout)
        if len(fresh) < len(holdout):
            _logger().info(f"{adapter.name}: {len(holdout) - len(fresh)} held-out calibration row(s) repeat a "
                           f"sensitivity row; γ is chosen on the other {len(fresh)}")
        holdout = fresh
        if not holdout:
            skipped["global_scalar"] = no_holdout_reason(source, surgery.calib.start, surgery.calib.n_samples,
                                                         surgery.global_scalar.holdout)
            arms = [a for a in arms if a.role != "scalar_control"]
    pkey = prepared_key(version.content_sha256, adapter.base_model_id, adapter.base_model_revision, surgery,
                        calibration_sha256(examples))
    holdout_sha = calibration_sha256(holdout) if holdout else None
    keys = {a.name: candidate_key(pkey, surgery, a.policy, a.seed, holdout_sha256=holdout_sha) for a in arms}
    mine = {(a.policy, a.seed, keys[a.name]) for a in arms}  # a stored row counts only under its arm's own key
    plan = plan_writes(arms, {(c.policy, c.seed): c for c in reg.list_candidates(version.id)
                              if (c.policy, c.seed, c.config_hash) in mine})
    calibrated = False
    log = _logger()
    for arm in plan.bare:  # scored with the adapter off: nothing to write
        reg.add_candidate(version.id, keys[arm.name], arm.policy, arm.seed, params={}, is_control=True)
    writes = plan.writes
    if writes:
        prep_file = worker.store_dir(config, adapter.name, version.content_sha256, pkey) / "prepared.safetensors"
        prepared = load_prepared(prep_file, local, surgery.targets)
        if prepared is None and data_free:
            prepared = prepare_data_free(local, surgery)
            save_prepared(prepared, prep_file)
            log.info("%s: decomposed %d modules for %d data-free candidate(s): no model, no calibration",
                     adapter.name, len(prepared.modules), len(writes))
        needs_model = plan.needs_model(prepared is not None)
        if prepared is not None:
            log.info("%s: %d new candidate(s) from the stored decomposition and sensitivities", adapter.name,
                     len(writes))
        selection, gamma_seconds = None, None
        if needs_model:
            with worker.model_lock(adapter.base_model_id):
                model, tok = worker.base_model(config, adapter.base_model_id, adapter.base_model_revision)
                if prepared is None:
                    log.info("%s: decomposing and calibrating on %d examples for %d candidates", adapter.name,
                             len(examples), len(writes))

                    def on_batch(done_: int, total: int) -> None:
                        log.info("%s: calibration batch %d/%d", adapter.name, done_, total)
                        stage_hook.reached("calibration")
                        interrupt.check()

                    prepared = prepare(model, tok, local, examples, surgery, on_batch=on_batch)
                    calibrated = True
                    save_prepared(prepared, prep_file)
                    log.info("%s: decomposed %d modules, calibrated on %d examples in %.1fs", adapter.name,
                             len(prepared.modules), prepared.n_examples, prepared.timings.get("calibrate", 0.0))
                if plan.needs_gamma:
                    t_gamma = time.perf_counter()
                    selection = select_gamma_calib_loss(model, tok, prepared, holdout, surgery,
                                                        sensitivity_examples=examples)
                    gamma_seconds = time.perf_counter() - t_gamma
                    log.info("%s: global scalar γ = %g (lowest held-out calibration loss of %s on %d examples)",
                             adapter.name, selection.gamma, list(selection.grid), len(holdout))
        for arm in writes:
            interrupt.check()
            store = worker.store_dir(config, adapter.name, version.content_sha256, keys[arm.name])
            sel = selection if arm.role == "scalar_control" else None
            t_write = time.perf_counter()
            path, manifest = write_candidate(prepared, arm.policy, surgery, store / arm.name, seed=arm.seed,
                                             selection=sel)
            seconds = {"write": time.perf_counter() - t_write,
                       **stage_seconds(prepared, get_policy(arm.policy).needs_data)}
            if sel is not None and gamma_seconds is not None:
                seconds["gamma"] = gamma_seconds
            rec = candidate_record(manifest, scalar=sel is not None)
            reg.add_candidate(version.id, keys[arm.name], arm.policy, arm.seed, params=rec.params,
                              is_control=arm.is_control, artifact_uri=str(path),
                              artifact_sha256=adapter_content_sha256(path),
                              spectrum=rec.spectrum, sensitivity=rec.sensitivity, seconds=seconds)
            stage_hook.reached("editing")
    rows = {(c.policy, c.seed, c.config_hash): c for c in reg.list_candidates(version.id)}
    ids = {a.name: rows[(a.policy, a.seed, keys[a.name])].id for a in arms}
    return Candidates(candidates_key(keys), ids, len(plan.missing), calibrated, skipped, keys)


def _evaluator_key(identity: str, spec: BenchmarkSpec, limit: int | None, docs: tuple[int, int] | None = None,
                   sandbox: str | None = None) -> str:
    return evaluation_key(identity, spec.name, limit, docs, sandbox)


def _doc_order(doc_id) -> tuple:
    """Documents in benchmark order (numeric ids as numbers: "10" after "9"), so a look's first n are the first n."""
    text = str(doc_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


@task(cache_policy=NO_CACHE)
def evaluate_subjects(config: RunConfig, version, adapter, local: Path, cands: Candidates, spec: BenchmarkSpec,
                      limit: int | None, kind: str, arms: list[str] | None = None,
                      docs: tuple[int, int] | None = None) -> tuple[str, dict[str, list], dict[str, list]]:
    """Evaluate the baseline and every candidate on ``spec``, skipping scores already recorded.

    An evaluation is keyed by (subject, benchmark, limit, evaluator identity): the baseline's is reused across
    nights and configs until one of those changes, a candidate's as long as the candidate is. Nothing is loaded
    when every score is recorded.

    Args:
        arms: The arm names to score besides the baseline (default: every arm of ``cands``).
        docs: ``(start, stop)``: score documents ``start..stop-1`` instead of the first ``limit`` (one sequential
            look's new documents; keyed as such).

    Returns:
        ``(evaluator key, subject name -> per-document outcomes aligned by document, subject name -> continuous
        per-document scores)``; subjects are "baseline" and the arm names; a subject without scores (a generative
        benchmark, an evaluation recorded before scores existed) is absent from the scores.
    """
    reg = worker.registry(config)
    sandbox = sandbox_used(config, spec)
    ekey = _evaluator_key(worker.evaluator_identity(config, adapter.base_model_id), spec, limit, docs, sandbox)
    subjects: dict[str, int | None] = {BASELINE: None, **{n: i for n, i in cands.ids.items()
                                                           if arms is None or n in arms}}
    todo: dict[str, Path | None] = {}
    for name, cid in subjects.items():
        if reg.get_evaluation(version.id, spec.name, ekey, cid) is None:
            if cid is None:
                todo[name] = local
            else:
                uri = reg.get_candidate(cid).artifact_uri
                todo[name] = None if name == BARE_BASE else Path(uri)
    if todo:
        log = _logger()
        with worker.model_lock(adapter.base_model_id):
            ev = worker.evaluator(config, adapter.base_model_id, adapter.base_model_revision)
            # the identity must be computable without the model
            if _evaluator_key(ev.key, spec, limit, docs, sandbox) != ekey:
                raise RuntimeError(f"evaluator {config.evaluator!r}: its key {ev.key!r} differs from the identity "
                                   "computed before loading it; results could not be reused safely")
            out_dir = worker.store_dir(config, adapter.name, version.content_sha256, ekey) / "eval"
            log.info("%s: scoring %d subject(s) on %s (%s)", adapter.name, len(todo), spec.name,
                     f"documents {docs[0]}..{docs[1] - 1}" if docs else
                     f"{limit} documents" if limit is not None else "all documents")

            took: dict[str, float] = {}

            def on_result(r, seconds: float) -> None:
                took[r.subject] = seconds
                log.info("%s: %s on %s: %s %.3f (n=%d, %.0f s)", adapter.name, r.subject, spec.name, r.metric,
                         r.value, r.n, seconds)
                interrupt.check()  # between subjects: a stop does not wait for the whole evaluation

            chosen = {} if docs is None else {"docs": list(range(*docs))}
            with using_backend(config.sandbox):  # generated code of this evaluation runs in the configured sandbox
                results = ev.evaluate(adapter.base_model_id, todo, spec.name, limit=None if docs else limit,
                                      out_dir=out_dir, on_result=on_result, **chosen)
            for name, r in results.items():
                reg.add_evaluation(version.id, spec.name, r.metric, r.value, evaluator_key=ekey,
                                   higher_is_better=r.higher_is_better, candidate_id=subjects[name], n=r.n,
                                   stderr=r.stderr, samples_uri=r.samples_path,
                                   doc_outcomes=doc_rows(r), kind=kind,
                                   seconds=took.get(r.subject, took.get(name)))
                stage_hook.reached("evaluation")
                interrupt.check()
    out: dict[str, list] = {}
    scores: dict[str, list] = {}
    for name, cid in subjects.items():
        row = reg.get_evaluation(version.id, spec.name, ekey, cid)
        _, out[name], sc = split_doc_rows(sorted(row.doc_outcomes_json, key=lambda p: _doc_order(p[0])))
        if sc is not None:  # an evaluation recorded before scores existed has none
            scores[name] = sc
    _logger().info("%s: %s evaluated (%d new subjects)", adapter.name, spec.name, len(todo))
    return ekey, out, scores


def evaluate_sequential(config: RunConfig, version, adapter, local: Path, cands: Candidates, spec: BenchmarkSpec,
                        arms: list[Arm]) -> tuple[tuple[str, dict[str, list], dict[str, list]], dict]:
    """The task benchmark in looks (:func:`tasks.decision.sequential.run_looks`), each look's new documents scored by
    :func:`evaluate_subjects`.

    Returns:
        ``((key, subject -> outcomes of the documents it was scored on, subject -> their scores), record)``; the
        record (design, looks, where each candidate stopped, documents evaluated) goes into the decision's statistics.
    """
    roles = {a.name: a.role for a in arms if a.name in cands.ids}
    n_candidates = sum(r in ("policy", "scalar_control") for r in roles.values())
    design = design_for(config.sequential, config.gate, config.limit_for(spec.name), n_candidates)

    def score(names: list[str], docs: tuple[int, int]):
        return evaluate_subjects(config, version, adapter, local, cands, spec, None, "task", names, docs=docs)

    run = run_looks(design, roles, score, higher_is_better=spec.higher_is_better,
                    canary_tolerance=config.gate.canary_tolerance, baseline=BASELINE)
    rec, stop_k = run.record, run.record["stopped_at_look"]
    _logger().info("%s: %s in %d of %d looks (%d of %d documents)%s%s", adapter.name, spec.name, stop_k,
                   len(design.looks), design.looks[stop_k - 1], design.looks[-1],
                   f"; stopped for futility: {', '.join(f'{n} at look {k}' for n, k in rec['futile'].items())}"
                   if rec["futile"] else "", f"; {rec['canary_stop']}" if rec["canary_stop"] else "")
    return (run.key, run.outcomes, run.scores), rec


@task(cache_policy=NO_CACHE)
def decide_and_promote(config: RunConfig, version, adapter, run_id: int, cands: Candidates, arms: list[Arm],
                       task_eval: tuple[str, dict], guard_eval: tuple[str, dict] | None, higher_is_better: bool,
                       task_name: str, guard_name: str | None, sequential: dict | None = None,
                       guard_skipped: dict[str, str] | None = None, budget: dict | None = None) -> dict:
    """Apply the gate to the stored outcomes, record the decision (once per decision key), move production.

    The decision key is the gate settings plus the evaluations weighed, so changing a threshold re-decides from
    the recorded per-document outcomes without any model pass, and an unchanged one finds its decision done.
    ``guard_skipped`` (from :func:`guard_plan`): the arms whose guard was not evaluated and why; recorded in the
    statistics (``guard.skipped``: "guard not evaluated: rejected on task evidence", ...) and in the key.
    """
    from tasks.keys import decision_key

    reg = worker.registry(config)
    task_key, task_out, task_scores = task_eval
    guard_key, guard_out = guard_eval[:2] if guard_eval is not None else (None, None)
    evidence = {"task": [task_name, task_key], "guard": [guard_name, guard_key],
                "subjects": sorted(cands.ids.items())}
    if sequential is not None:
        evidence["sequential"] = sequential["design"]
    if guard_skipped:  # absent when every arm is guarded: the keys of decisions made before guard_arms existed
        evidence["guard_skipped"] = sorted(guard_skipped)
    dkey = decision_key(config.gate, cands.key, evidence, config.decision)
    base, candidates, controls, extras = gate_inputs(arms, cands.ids, task_out, guard_out, higher_is_better,
                                                      guard_skipped, task_scores)
    role = {a.name: a.role for a in arms if a.name in cands.ids}
    metric = decision_metric(config.decision, [base, *candidates, *controls, extras["scalar_control"]], task_name)
    decision = run_gate(config, sequential, base, candidates, controls, extras, metric.used)
    for v in decision.verdicts:
        if v.guard_test is not None and guard_name:
            reg.add_guard_result(cands.ids[v.name], guard_name, v.guard_test.mean_b, v.guard_test.mean_a,
                                 config.gate.guard_tolerance, v.guard_ok, p_value=v.guard_test.p_value)
    record = DecisionRecord.of(
        decision, means={n: sum(x) / len(x) for n, x in task_out.items()},
        guard_means={n: sum(x) / len(x) for n, x in guard_out.items()} if guard_out else None,
        keys=EvidenceKeys(candidates=cands.key, task_evaluation=task_key, guard_evaluation=guard_key,
                          candidate_arms=dict(sorted(cands.keys.items()))),
        ladder=LadderRecord(roles=role, skipped=cands.skipped),
        guard=GuardRecord(arms=config.guard_arms, skipped={n: f"guard not evaluated: {why}"
                                                           for n, why in (guard_skipped or {}).items()})
        if guard_name else None,
        sequential=sequential, edit_budget=budget,
        decision_metric=MetricFallback(requested=config.decision.metric, used="task", why=metric.fallback)
        if metric.fallback else None)
    row = reg.record_decision(version.id, dkey, run_id=run_id, candidate_key=cands.key,
                              candidate_ids=sorted(cands.ids.values()),
                              promoted_candidate_id=cands.ids[decision.promoted] if decision.promoted else None,
                              statistics=record.to_json(), sentence=decision.sentence)
    stage_hook.reached("decision")
    promoted, review, held_back = False, None, None
    if row.promoted and config.moves:
        from registry.promotion import BackwardsError

        try:
            # checked inside the move's transaction: no move starts after a stop request, one that started commits
            # whole and the run must still be running (cancelled by the command that saw the signal: a remote worker
            # stops too)
            event, created = reg.promote_decision(row, actor=config.actor, before_move=interrupt.check, run_id=run_id)
        except BackwardsError as e:  # production serves a newer version: the gate never moves it backwards
            held_back = str(e)
            _logger().warning("decision %d not promoted: %s", row.id, e)
        else:
            if created:  # a repeat (a retried task, a racing run) announces nothing twice
                events.announce_move(reg, event)
            promoted = True
    elif row.promoted and config.promote == "review":
        review = request_review(reg, row, config)
    recorded = DecisionRecord.from_json(row.statistics_json, bool(row.promoted))  # this one, or an older one
    n_needed = recorded.n_needed if recorded.verdict == "hold" else None
    return {"decision_id": row.id, "promoted": decision.promoted if promoted else None, "review": review,
            "verdict": recorded.verdict, "n_needed": n_needed,
            "verdict_label": verdict_label(recorded.verdict, n_needed, recorded.promoted),
            "sentence": row.sentence if held_back is None else f"{row.sentence} Not promoted: {held_back}",
            "statistics": row.statistics_json or {}}


def request_review(reg, decision, config: RunConfig) -> dict | None:
    """``promote: review``: the passing decision waits for approval instead of moving production.

    Returns the review as the run's result shows it (``None`` if the decision is already in production: its
    version was promoted under another setting). Announces the request and whatever it superseded or found expired.
    """
    from registry.validation import RegistryError

    try:
        req = reg.request_review(decision, window=config.review_window, actor=config.actor)
    except RegistryError as e:  # already in production: nothing to wait for
        _logger().info("decision %d not put up for review: %s", decision.id, e)
        return None
    if req.created:
        for old in [*req.expired, *req.superseded]:
            events.announce_review(reg, old)
        events.announce_review(reg, req.review)
    r = req.review
    return {"id": r.id, "state": r.state, "expires_at": r.expires_at.isoformat(timespec="seconds"),
            "candidate": decision.statistics_json.get("promoted") if decision.statistics_json else None}


def apply_edit_budget(config: RunConfig, reg, adapter, run_id: int, arms: list[Arm]) -> tuple[list[Arm], dict]:
    """The arms left by the per-family edit budget (:mod:`tasks.decision.edit_budget`), and what it chose and why.

    Only configured edits (role ``policy``) are cut; the ladder's controls and canaries always stay. The history
    is past nights' decisions of the adapter's family (:func:`registry.read.edit_history`), never this run's.
    """
    from registry.read import edit_history
    from tasks.decision.edit_budget import choose_edits

    history = edit_history(reg, adapter.task_family, run_id)
    edits = [a.policy for a in arms if a.role == "policy"]
    kept, skipped = choose_edits(edits, history, adapter.task_family, config.edit_budget)
    if skipped:
        _logger().info("%s: edit budget keeps %s for family %s (%d past adapter(s)); not evaluated: %s", adapter.name,
                       ", ".join(kept), adapter.task_family, len(history), ", ".join(skipped))
    return ([a for a in arms if a.role != "policy" or a.policy in kept],
            {"family": adapter.task_family, "history_adapters": len(history), "kept": kept, "skipped": skipped})


def _artifact_key(adapter_name: str) -> str:
    # one key per adapter: every run adds a version under it, so the Prefect UI shows the adapter's history
    return ("refine-" + "".join(c if c.isalnum() else "-" for c in adapter_name.lower()).strip("-"))[:92]


def _artifacts(adapter_name: str, result: dict) -> None:
    """The decision's table and Markdown artifacts, built from the decision itself (never from the dashboard)."""
    key = _artifact_key(adapter_name)
    stats = result.get("statistics", {})
    label = result.get("verdict_label") or verdict_label(verdict_of(stats, bool(stats.get("promoted"))))
    review = result.get("review")
    if review and review["state"] == "pending":  # promote: review — passed, not in production yet
        label += f" (awaiting review {review['id']} until {review['expires_at']})"
    create_table_artifact(key=key, table=candidate_rows(stats),
                          description=f"{adapter_name}: {label.upper()} — {result.get('sentence', '')}")
    markdown = decision_markdown(adapter_name, stats, result.get("sentence", ""), promoted=result.get("promoted"))
    create_markdown_artifact(key=key + "-summary", markdown=markdown, description=f"Decision for {adapter_name}")


def _failure_artifact(adapter_name: str, e: BaseException) -> None:
    create_markdown_artifact(key=_artifact_key(adapter_name) + "-summary",
                             markdown=f"### {adapter_name}: refinement failed\n\n`{type(e).__name__}: {e}`\n",
                             description=f"Failure of {adapter_name}")


@flow(name="refine-adapter", flow_run_name="refine-{adapter_name}")  # no log_prints: see refine_fleet
def refine_adapter(version_id: int, adapter_name: str, run_id: int, config: RunConfig) -> dict:
    """Refine one adapter version end to end; failures are recorded in the registry and re-raised."""
    reg = worker.registry(config)
    version = reg.get_version(version_id)
    adapter = reg.get_adapter(adapter_name)
    chash = adapter_config_hash(config, adapter)
    arun, holder = reg.claim_adapter_run(run_id, version_id, chash)
    if arun is None:  # another live run is refining this very version: never refine it twice
        return {"adapter": adapter_name, "status": "skipped",
                "reason": f"being refined by run {holder.id} ({holder.owner}) since "
                          f"{holder.started_at.isoformat(timespec='seconds')}"}
    if arun.status == "completed":
        return {"adapter": adapter_name, "status": "completed", "reused": True}
    try:
        local = version_files(version, adapter.source_uri)
        surgery = config.surgery_for(adapter.config_json)
        arms = plan_arms(config, surgery)
        budget = None
        if config.edit_budget.enabled:
            arms, budget = apply_edit_budget(config, reg, adapter, run_id, arms)
        spec = resolve_benchmark(adapter.task_family, profile=config.profile, override=adapter.benchmark_override)
        if spec.executes_code and runs_generated_code(config.evaluator):
            resolve_backend(config.sandbox)  # before any model work: no usable sandbox refuses it, saying how to fix
        cands = make_candidates(config, version, adapter, local, arms)
        sequential = None
        if config.sequential.enabled:
            task_eval, sequential = evaluate_sequential(config, version, adapter, local, cands, spec, arms)
        else:
            task_eval = evaluate_subjects(config, version, adapter, local, cands, spec, config.limit_for(spec.name),
                                          "task")
        guard_eval, guard_name, guard_skipped = None, None, {}
        if config.guard:
            gspec = guard_benchmark(config.profile)
            guard_name = gspec.name
            if gspec.name == spec.name:  # the task benchmark is the guard: its scores serve as the guard, free
                guard_eval = task_eval
            else:  # the canaries and the bare base are checked on the task benchmark only
                guarded, guard_skipped = guard_plan(config, arms, cands.ids, task_eval[1], spec.higher_is_better,
                                                    sequential)
                if guarded or BASELINE not in guard_skipped:
                    guard_eval = evaluate_subjects(config, version, adapter, local, cands, gspec,
                                                   config.guard_limit, "guard", guarded)
                if guard_skipped:
                    _logger().info("%s: IFEval guard for %d arm(s), %d skipped (%s)", adapter.name, len(guarded),
                                   len(guard_skipped), ", ".join(sorted(guard_skipped)))
        result = decide_and_promote(config, version, adapter, run_id, cands, arms, task_eval, guard_eval,
                                    spec.higher_is_better, spec.name, guard_name, sequential, guard_skipped,
                                    budget)
        stage_hook.reached("promotion")
        reg.finish_adapter_run(arun.id, "completed", decision_id=result["decision_id"])
    except (KeyboardInterrupt, RunStoppedError) as e:  # a stop request: the row is released, not a failure of the work
        with contextlib.suppress(Exception):
            reg.finish_adapter_run(arun.id, "failed", error_type=INTERRUPTED,
                                   error_message=f"run {run_id} was interrupted before finishing this version ({e}): "
                                                 "the next run refines it again")
        raise
    except BaseException as e:
        reg.record_failure(run_id, version_id, e, config_hash=chash)
        try:
            _failure_artifact(adapter_name, e)
        except Exception:  # never mask the adapter's own error
            pass
        raise
    result.update(adapter=adapter_name, status="completed", candidates_written=cands.written,
                  calibrated=cands.calibrated, benchmark=spec.name)
    try:
        _artifacts(adapter_name, result)
    except Exception as e:  # artifacts are a convenience; never fail a refinement over them
        _logger().warning("could not write artifacts for %s: %s", adapter_name, e)
    if config.mlflow is not None:  # a copy of the decision in MLflow; a failure there is only a warning
        from flows.integrations.mlflow_client import mirror_or_warn

        result["mlflow"] = mirror_or_warn(config, reg, version, adapter, result, guard_name, _logger())
    return result
