"""Prefect events for every move of production and every review, so that an automation can react to them.

One event per promotion by the gate, manual override, rollback and approval, and per review requested,
expired or superseded:

================================  ==============================================================
``spectral-surgery.promoted``      the gate promoted a decision's candidate (``promote: true``)
``spectral-surgery.manual-promoted``  ``spectral-surgery promote`` (a manual override)
``spectral-surgery.rolled-back``   ``spectral-surgery rollback``
``spectral-surgery.approved``      ``spectral-surgery approve`` moved a reviewed decision into production
``spectral-surgery.review-requested``  a passing decision waits for approval (``promote: review``)
``spectral-surgery.review-expired``    nobody approved it within the window
``spectral-surgery.review-superseded`` a newer decision of the same adapter asked for review instead
================================  ==============================================================

The resource is the adapter (``prefect.resource.id`` = ``spectral-surgery.adapter.<name>``), so an automation
matches one adapter, or all of them with ``spectral-surgery.adapter.*``; the decision (and the review) are related
resources; the payload holds the versions, candidates, policies and hashes before and after, who, why and when.

The specs are built by pure functions (:func:`move_event`, :func:`review_event`) from plain values; the flow
and the CLI announce through :func:`announce_move` / :func:`announce_review` *after* the registry has recorded
the change. Announcing never fails the change it reports: an error is logged as a warning. Outside a flow run and
without ``PREFECT_API_URL`` nothing is sent (there is no server an automation could live on, and starting a
temporary one for a CLI command would cost seconds and reach nobody).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

MOVE_EVENTS = {
    "promotion": "spectral-surgery.promoted",
    "manual_override": "spectral-surgery.manual-promoted",
    "rollback": "spectral-surgery.rolled-back",
    "approval": "spectral-surgery.approved",
}
REVIEW_EVENTS = {
    "pending": "spectral-surgery.review-requested",
    "expired": "spectral-surgery.review-expired",
    "superseded": "spectral-surgery.review-superseded",
}
RESOURCE_PREFIX = "spectral-surgery.adapter."

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EventSpec:
    """The arguments of one ``prefect.events.emit_event`` call."""

    event: str
    resource: dict[str, str]
    payload: dict[str, Any]
    related: list[dict[str, str]] = field(default_factory=list)


def adapter_resource(adapter: str, **labels: Any) -> dict[str, str]:
    """The adapter as a Prefect resource; extra labels (``None`` dropped) as strings, as Prefect requires."""
    resource = {"prefect.resource.id": RESOURCE_PREFIX + adapter, "prefect.resource.name": adapter}
    resource.update({f"spectral-surgery.{k.replace('_', '-')}": str(v) for k, v in labels.items() if v is not None})
    return resource


def _related(decision_id: int | None, review_id: int | None) -> list[dict[str, str]]:
    out = []
    if decision_id is not None:
        out.append({"prefect.resource.id": f"spectral-surgery.decision.{decision_id}",
                    "prefect.resource.role": "decision"})
    if review_id is not None:
        out.append({"prefect.resource.id": f"spectral-surgery.review.{review_id}", "prefect.resource.role": "review"})
    return out


def move_event(event, adapter: str, before: dict[str, Any], after: dict[str, Any]) -> EventSpec:
    """The event of one recorded move of production (a ``registry.models.PromotionEvent``).

    Args:
        event: The promotion event (kind, actor, reason, at, decision, evidence).
        adapter: The adapter's name.
        before: What production was (:func:`state_of`: version_id, candidate_id, policy, sha256, path).
        after: What production is now, likewise.
    """
    evidence = event.evidence_json or {}
    review_id = evidence.get("review_id") if event.kind == "approval" else None
    payload = {
        "adapter": adapter, "kind": event.kind, "event_id": event.id, "actor": event.actor, "reason": event.reason,
        "at": event.at.isoformat(), "decision_id": event.decision_id, "review_id": review_id,
        "reverts_event_id": event.reverts_event_id, "warning": evidence.get("warning"),
        "from": before, "to": after,
    }
    resource = adapter_resource(adapter, policy=after.get("policy"), version_id=after.get("version_id"),
                                candidate_id=after.get("candidate_id"))
    return EventSpec(MOVE_EVENTS[event.kind], resource, payload, _related(event.decision_id, review_id))


def review_event(review, adapter: str, target: dict[str, Any]) -> EventSpec:
    """The event of a review's state (``pending`` = requested, ``expired``, ``superseded``).

    Args:
        review: The ``registry.models.Review``.
        adapter: The adapter's name.
        target: What an approval would serve (:func:`state_of` of the decision's candidate).
    """
    iso = lambda t: t.isoformat() if t is not None else None  # noqa: E731
    payload = {
        "adapter": adapter, "review_id": review.id, "state": review.state, "decision_id": review.decision_id,
        "requested_by": review.requested_by, "requested_at": iso(review.requested_at),
        "expires_at": iso(review.expires_at), "decided_by": review.decided_by, "decided_at": iso(review.decided_at),
        "reason": review.reason, "superseded_by": review.superseded_by_id, "candidate": target,
        "approve_with": f"spectral-surgery approve {review.id} --reason '...'" if review.state == "pending" else None,
    }
    resource = adapter_resource(adapter, policy=target.get("policy"), version_id=target.get("version_id"),
                                candidate_id=target.get("candidate_id"))
    return EventSpec(REVIEW_EVENTS[review.state], resource, payload, _related(review.decision_id, review.id))


def state_of(reg, version_id: int | None, candidate_id: int | None) -> dict[str, Any]:
    """What ``(version, candidate)`` serves, as event payload: ids, policy (``unedited``), sha256 and path."""
    if version_id is None:
        return {"version_id": None, "candidate_id": None, "policy": None, "sha256": None, "path": None}
    if candidate_id is not None:
        c = reg.get_candidate(candidate_id)
        return {"version_id": version_id, "candidate_id": c.id, "policy": c.policy, "sha256": c.artifact_sha256,
                "path": c.artifact_uri}
    v = reg.get_version(version_id)
    return {"version_id": v.id, "candidate_id": None, "policy": "unedited", "sha256": v.content_sha256,
            "path": v.local_path}


def can_emit() -> bool:
    """Inside a Prefect flow or task run (its server is up), or with ``PREFECT_API_URL`` set."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value() or FlowRunContext.get() or TaskRunContext.get())


def emit(spec: EventSpec):
    """Send ``spec`` with ``prefect.events.emit_event``; the sent event, or ``None`` (not sent, or it failed)."""
    try:
        if not can_emit():
            log.debug("event %s not sent: no Prefect API (set PREFECT_API_URL)", spec.event)
            return None
        from prefect.events import emit_event

        return emit_event(event=spec.event, resource=spec.resource, related=spec.related or None,
                          payload=spec.payload)
    except Exception as e:  # an announcement never fails the change it announces
        log.warning("could not emit Prefect event %s for %s: %s", spec.event,
                    spec.resource.get("prefect.resource.name"),
                    e)
        return None


def announce_move(reg, event):
    """Emit the event of a recorded pointer move (never raises); the sent event or ``None``."""
    try:
        name = reg.get_version(event.to_version_id).adapter.name
        spec = move_event(event, name, state_of(reg, event.from_version_id, event.from_candidate_id),
                          state_of(reg, event.to_version_id, event.to_candidate_id))
    except Exception as e:
        log.warning("could not describe promotion event %s for Prefect: %s", getattr(event, "id", "?"), e)
        return None
    return emit(spec)


def announce_review(reg, review):
    """Emit the event of a review's current state (never raises); the sent event or ``None``."""
    try:
        decision = reg.get_decision_by_id(review.decision_id)
        spec = review_event(review, review.adapter.name,
                            state_of(reg, decision.adapter_version_id, decision.promoted_candidate_id))
    except Exception as e:
        log.warning("could not describe review %s for Prefect: %s", getattr(review, "id", "?"), e)
        return None
    return emit(spec)
