"""The decision of a visit: the gate on the stored outcomes, the decision stored once per key, production moved
or a review requested (:func:`decide_and_promote`). The key's evidence and the stored record come from
:mod:`tasks.decision.decision_evidence`, the gate's inputs from :mod:`tasks.decision.arms`."""

from spectral_surgery.flows import interrupt, stage_hook, worker
from spectral_surgery.flows.integrations import events
from spectral_surgery.flows.refine import logger
from spectral_surgery.flows.refine.candidates import Candidates
from spectral_surgery.registry.evidence import GuardVerdict
from spectral_surgery.tasks.decision.arms import Arm, gate_inputs, run_gate
from spectral_surgery.tasks.decision.decision_evidence import decision_evidence, decision_record
from spectral_surgery.tasks.decision.gate import decision_metric, verdict_label
from spectral_surgery.tasks.keys import decision_key
from spectral_surgery.tasks.run_config import RunConfig


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
    reg = worker.registry(config)
    task_key, task_out, task_scores = task_eval
    guard_key, guard_out = guard_eval[:2] if guard_eval is not None else (None, None)
    evidence = decision_evidence(task_name, task_key, guard_name, guard_key, cands.ids, sequential, guard_skipped)
    dkey = decision_key(config.gate, cands.key, evidence, config.decision)
    base, candidates, controls, extras = gate_inputs(arms, cands.ids, task_out, guard_out, higher_is_better,
                                                      guard_skipped, task_scores)
    metric = decision_metric(config.decision, [base, *candidates, *controls, extras["scalar_control"]], task_name)
    decision = run_gate(config, sequential, base, candidates, controls, extras, metric.used)
    guarded = [GuardVerdict(cands.ids[v.name], v.guard_test.mean_b, v.guard_test.mean_a, v.guard_ok,
                            p_value=v.guard_test.p_value) for v in decision.verdicts if v.guard_test is not None]
    if guarded and guard_name:  # every verdict in one transaction
        reg.add_guard_results(guard_name, config.gate.guard_tolerance, guarded)
    record = decision_record(
        decision, arms, candidate_ids=cands.ids, candidates_key=cands.key, candidate_keys=cands.keys,
        ladder_skipped=cands.skipped, task_key=task_key, task_out=task_out, guard_key=guard_key, guard_out=guard_out,
        guard_name=guard_name, guard_arms=config.guard_arms, guard_skipped=guard_skipped, sequential=sequential,
        edit_budget=budget, requested_metric=config.decision.metric, metric_fallback=metric.fallback)
    row = reg.record_decision(version.id, dkey, run_id=run_id, candidate_key=cands.key,
                              candidate_ids=sorted(cands.ids.values()),
                              promoted_candidate_id=cands.ids[decision.promoted] if decision.promoted else None,
                              statistics=record.to_json(), sentence=decision.sentence)
    stage_hook.reached("decision")
    promoted, review, held_back = False, None, None
    if row.promoted and config.moves:
        from spectral_surgery.registry.promotion import BackwardsError

        try:
            # checked inside the move's transaction: no move starts after a stop request, one that started commits
            # whole and the run must still be running (cancelled by the command that saw the signal: a remote worker
            # stops too)
            event, created = reg.promote_decision(row, actor=config.actor, before_move=interrupt.check, run_id=run_id)
        except BackwardsError as e:  # production serves a newer version: the gate never moves it backwards
            held_back = str(e)
            logger().warning("decision %d not promoted: %s", row.id, e)
        else:
            if created:  # a repeat (a retried task, a racing run) announces nothing twice
                events.announce_move(reg, event)
            promoted = True
    elif row.promoted and config.promote == "review":
        review = request_review(reg, row, config)
    recorded = row.record  # this one, or an older one
    n_needed = recorded.n_needed if recorded.verdict == "hold" else None
    return {"decision_id": row.id, "promoted": decision.promoted if promoted else None, "review": review,
            "verdict": recorded.verdict, "n_needed": n_needed,
            "verdict_label": verdict_label(recorded.verdict, n_needed, recorded.promoted),
            "sentence": row.sentence if held_back is None else f"{row.sentence} Not promoted: {held_back}",
            "statistics": row.statistics_json or {}}  # as recorded: `run --json` prints them unchanged


def request_review(reg, decision, config: RunConfig) -> dict | None:
    """``promote: review``: the passing decision waits for approval instead of moving production.

    Returns the review as the run's result shows it (``None`` if the decision is already in production: its
    version was promoted under another setting). Announces the request and whatever it superseded or found expired.
    """
    from spectral_surgery.registry.validation import RegistryError

    try:
        req = reg.request_review(decision, window=config.review_window, actor=config.actor)
    except RegistryError as e:  # already in production: nothing to wait for
        logger().info("decision %d not put up for review: %s", decision.id, e)
        return None
    if req.created:
        for old in [*req.expired, *req.superseded]:
            events.announce_review(reg, old)
        events.announce_review(reg, req.review)
    r = req.review
    return {"id": r.id, "state": r.state, "expires_at": r.expires_at.isoformat(timespec="seconds"),
            "candidate": decision.record.promoted}
