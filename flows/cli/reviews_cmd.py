"""Review-window sub-commands of ``spectral-surgery``: ``reviews`` (what waits for approval) and ``approve``.

Under ``promote: review`` a passing decision waits for a person instead of moving production
(:mod:`registry.reviews`). Both commands first mark the reviews whose window has passed ``expired`` (recorded and
announced as Prefect events, like the nightly run does), so nobody sees or approves a lapsed one.
"""

from __future__ import annotations

from spectral_surgery.flows.integrations import events
from spectral_surgery.flows.cli.common import console, default_actor, emit, guarded, open_registry, table


def _expire(reg) -> list:
    lapsed = reg.expire_reviews()
    for r in lapsed:
        events.announce_review(reg, r)
    return lapsed


def review_dict(reg, r) -> dict:
    """A review as ``--json`` prints it: ids, state, times, who and why, and the candidate an approval serves."""
    d = reg.get_decision_by_id(r.decision_id)
    policy = reg.get_candidate(d.promoted_candidate_id).policy if d.promoted_candidate_id is not None else None
    iso = lambda t: t.isoformat() if t is not None else None  # noqa: E731
    return {"id": r.id, "adapter": r.adapter.name, "state": r.state, "decision_id": r.decision_id,
            "version_id": d.adapter_version_id, "candidate_id": d.promoted_candidate_id, "policy": policy,
            "requested_by": r.requested_by, "requested_at": iso(r.requested_at), "expires_at": iso(r.expires_at),
            "decided_by": r.decided_by, "decided_at": iso(r.decided_at), "reason": r.reason,
            "promotion_event_id": r.promotion_event_id, "superseded_by_id": r.superseded_by_id,
            "sentence": d.sentence}


@guarded
def cmd_reviews(args) -> int:
    reg = open_registry(args)
    _expire(reg)
    state = None if args.all else "pending"
    rows = [review_dict(reg, r) for r in reg.list_reviews(state=state, adapter=args.adapter)]
    reg.close()

    def render() -> None:
        if not rows:
            console().print("No review waiting for approval." if state else "No reviews yet.")
            return
        short = lambda t: t[:16].replace("T", " ") if t else "—"  # noqa: E731
        console().print(table(
            f"{len(rows)} review(s)" + (" awaiting approval (spectral-surgery approve ID --reason ...)" if state
                                        else ""),
            ["id", "adapter", "state", "candidate", "requested (UTC)", "expires (UTC)", "decided", "decision"],
            [[r["id"], r["adapter"], r["state"], f"v{r['version_id']} {r['policy']} (#{r['candidate_id']})",
              short(r["requested_at"]), short(r["expires_at"]),
              "—" if r["decided_at"] is None else f"{short(r['decided_at'])} by {r['decided_by']}: {r['reason']}",
              r["sentence"]] for r in rows],
            narrow=("id", "state", "requested (UTC)", "expires (UTC)")))

    return emit(args, rows, render)


@guarded
def cmd_approve(args) -> int:
    from rich.markup import escape

    from spectral_surgery.flows.cli.adapters import event_payload, follow_in_mlflow, mlflow_config

    mcfg = mlflow_config(args)
    reg = open_registry(args)
    _expire(reg)
    event, review = reg.approve(args.review, args.actor or default_actor(), args.reason,
                                force=getattr(args, "force", False))
    events.announce_move(reg, event)
    mirrored = follow_in_mlflow(reg, event, mcfg)
    payload, frm, to = event_payload(reg, event)
    if mirrored is not None:
        payload["mlflow"] = mirrored
    payload["review"] = review_dict(reg, review)
    reg.close()
    return emit(args, payload, lambda: console().print(
        f"[green]Approved[/] review {review.id}: {escape(payload['event']['adapter'])} {frm} → [bold]{to}[/] "
        f"(event #{event.id} by {escape(event.actor)}: {escape(event.reason)})"))
