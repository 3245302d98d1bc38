"""Moving production pointers, inside a caller's transaction.

Every move of a pointer appends one ``PromotionEvent`` in the same transaction, so the pointer is always the
``to`` of the latest effective event and the history alone can say what production was at any time. A rollback
undoes the latest move that has not been undone yet (the history is replayed as an undo stack: promotions and
manual overrides push, a rollback pops the event it reverts), so repeated rollbacks walk back one step each.

These functions take a ``Session`` and never commit: ``registry.repository.Registry`` owns the transactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from spectral_surgery.registry.models import (
    Adapter,
    AdapterVersion,
    Candidate,
    Decision,
    ProductionPointer,
    PromotionEvent,
    Review,
    utcnow,
)
from spectral_surgery.registry.validation import NotFoundError, RegistryError


class BackwardsError(RegistryError):
    """A move would put an older adapter version in production than the one it serves, and was not forced."""


@dataclass(frozen=True)
class ProductionState:
    """What an adapter serves now.

    Attributes:
        adapter_name: The adapter.
        adapter_version_id: The version served (edited or not).
        content_sha256: Content hash of that version.
        local_path: Where that version's unedited files are.
        candidate_id: The edited candidate served; ``None`` = the unedited version.
        artifact_uri: Where the candidate's files are (``None`` for the unedited version).
        updated_at: When the pointer last moved; ``None`` when ``implicit``.
        implicit: ``True`` when nothing was ever promoted: production is the latest unedited version.
    """

    adapter_name: str
    adapter_version_id: int
    content_sha256: str
    local_path: str | None
    candidate_id: int | None
    artifact_uri: str | None
    updated_at: datetime | None
    implicit: bool


def lock_adapter(session: Session, adapter_id: int) -> Adapter:
    """Load the adapter row ``FOR UPDATE``: the per-adapter mutex of every pointer move.

    On PostgreSQL concurrent movers of one adapter queue here, so each reads the pointer the previous one wrote.
    SQLite ignores ``FOR UPDATE``; there ``BEGIN IMMEDIATE`` already serialises all writers.
    """
    adapter = session.execute(select(Adapter).where(Adapter.id == adapter_id).with_for_update()).scalar_one_or_none()
    if adapter is None:
        raise NotFoundError(f"no adapter with id {adapter_id}")
    return adapter


def latest_version(session: Session, adapter_id: int) -> AdapterVersion | None:
    """The adapter's most recently seen version (ties broken by id)."""
    return session.scalars(
        select(AdapterVersion)
        .where(AdapterVersion.adapter_id == adapter_id)
        .order_by(AdapterVersion.last_seen_at.desc(), AdapterVersion.id.desc())
        .limit(1)
    ).first()


def current_state(session: Session, adapter_id: int) -> tuple[int | None, int | None]:
    """``(candidate_id, version_id)`` in production; with no pointer yet, the latest unedited version."""
    pointer = session.get(ProductionPointer, adapter_id)
    if pointer is not None:
        return pointer.candidate_id, pointer.adapter_version_id
    latest = latest_version(session, adapter_id)
    return None, latest.id if latest is not None else None


def verify_target(session: Session, to_version_id: int, to_candidate_id: int | None) -> None:
    """Refuse to point production at files that are not there or not what the registry recorded.

    A candidate's artifact directory must exist and hash (``tasks.adapter_io.adapter_content_sha256``: config and
    weights) to its recorded ``artifact_sha256``; an unedited version's local files must hash to its
    ``content_sha256`` (a local directory overwritten in place no longer holds that version). An unedited version
    of a Hub source (``hf://``) whose cached copy is gone is allowed: it is served from the Hub at its recorded
    revision.

    Raises:
        RegistryError: the directory is missing or unreadable, or its content differs from the recorded hash.
    """
    from spectral_surgery.tasks.adapter_io import (
        AdapterError,
        adapter_content_sha256,
    )  # lazy: the registry's only tasks import

    if to_candidate_id is not None:
        cand = session.get(Candidate, to_candidate_id)
        if cand is None:
            raise NotFoundError(f"no candidate with id {to_candidate_id}")
        path, want, what = cand.artifact_uri, cand.artifact_sha256, f"candidate {cand.id} ({cand.policy})"
        if not path:
            raise RegistryError(f"{what} has no artifact recorded: it cannot be served; re-run the night that made it")
    else:
        version = session.get(AdapterVersion, to_version_id)
        if version is None:
            raise NotFoundError(f"no adapter version with id {to_version_id}")
        path, want, what = version.local_path, version.content_sha256, f"adapter version {version.id} (unedited)"
        adapter = session.get(Adapter, version.adapter_id)
        from_hub = adapter is not None and adapter.source_uri.startswith("hf://")
        if from_hub and (not path or not Path(path).exists()):
            return
        if not path:
            raise RegistryError(f"{what} was never fetched (no local files): it cannot be served")
    try:
        have = adapter_content_sha256(path)
    except (AdapterError, OSError) as e:
        raise RegistryError(f"{what}: its files at {path} cannot be served ({e}); production stays where it is. "
                            "Re-run the nightly flow to rebuild it, or promote another candidate") from e
    if want and have != want:
        raise RegistryError(f"{what}: the files at {path} hash to {have[:12]}…, not the recorded {want[:12]}…: they "
                            "changed after they were evaluated; production stays where it is. Re-run the nightly "
                            "flow to rebuild and re-evaluate it")


def move_pointer(
    session: Session,
    adapter_id: int,
    to_version_id: int,
    to_candidate_id: int | None,
    *,
    kind: str,
    actor: str,
    reason: str,
    evidence: dict[str, Any] | None = None,
    decision_id: int | None = None,
    reverts_event_id: int | None = None,
    force: bool = False,
) -> PromotionEvent:
    """Point ``adapter_id`` at ``(to_version_id, to_candidate_id)`` and append the event recording the move.

    The caller must hold the adapter's lock (:func:`lock_adapter`) and commit; both writes then land together
    or not at all. The event's ``from`` is the state before the move (see :func:`current_state`). The target's
    files are verified first (:func:`verify_target`), so production never points at a missing or changed adapter.

    Production never moves backwards by accident: a move other than a ``rollback`` to an older version than the
    one served (versions are ordered by id, the order the registry first saw them) raises :class:`BackwardsError`
    unless ``force`` (the event's evidence then carries a ``warning``). A move to a version supersedes every
    pending review of an older version of the adapter (and, for a gate ``promotion``, the review of the decision
    it promotes), with the event as the reason, so that no later approval undoes it.

    Raises:
        BackwardsError: the target is older than production and ``force`` is not set.
        RegistryError: no version recorded; the target's files are missing or changed.
    """
    from_candidate_id, from_version_id = current_state(session, adapter_id)
    if from_version_id is None:
        raise RegistryError(f"adapter {adapter_id} has no recorded version: record_version() before promoting")
    if kind != "rollback" and to_version_id < from_version_id:
        frm, to = describe(session, from_version_id, from_candidate_id), describe(session, to_version_id,
                                                                                   to_candidate_id)
        if not force:
            raise BackwardsError(f"this {kind.replace('_', ' ')} would replace production's {frm} with {to}, an "
                                 "older version: production never moves backwards by accident; pass --force "
                                 "(force=True) to serve the older version anyway (recorded as a warning), or use "
                                 "`spectral-surgery rollback` to undo the latest move")
        evidence = {**(evidence or {}), "warning": f"moved production backwards from {frm} to {to} with --force "
                                                   f"by {actor}"}
    verify_target(session, to_version_id, to_candidate_id)
    now = utcnow()
    pointer = session.get(ProductionPointer, adapter_id)
    if pointer is None:
        pointer = ProductionPointer(adapter_id=adapter_id)
        session.add(pointer)
    pointer.candidate_id = to_candidate_id
    pointer.adapter_version_id = to_version_id
    pointer.updated_at = now
    event = PromotionEvent(
        adapter_id=adapter_id, kind=kind, actor=actor, at=now, reason=reason, evidence_json=evidence,
        from_candidate_id=from_candidate_id, from_version_id=from_version_id,
        to_candidate_id=to_candidate_id, to_version_id=to_version_id,
        decision_id=decision_id, reverts_event_id=reverts_event_id,
    )
    session.add(event)
    session.flush()
    if kind != "rollback":
        supersede_stale_reviews(session, event)
    return event


def describe(session: Session, version_id: int, candidate_id: int | None) -> str:
    """``v5 smooth_abs (#31)`` or ``v5 unedited``: a production state as the CLI writes it."""
    if candidate_id is None:
        return f"v{version_id} unedited"
    cand = session.get(Candidate, candidate_id)
    return f"v{version_id} {cand.policy if cand is not None else '?'} (#{candidate_id})"


def supersede_stale_reviews(session: Session, event: PromotionEvent) -> list[Review]:
    """Mark ``superseded`` the adapter's pending reviews that ``event`` made stale (inside its transaction).

    Stale: a review of a version older than the event's target (approving it would move production backwards),
    or, for a gate ``promotion``, the review of the very decision promoted. The reason names the event.
    """
    rows = session.execute(
        select(Review, Decision.adapter_version_id).join(Decision, Decision.id == Review.decision_id)
        .where(Review.adapter_id == event.adapter_id, Review.state == "pending").order_by(Review.id)
    ).all()
    to = describe(session, event.to_version_id, event.to_candidate_id)
    out = []
    for review, version_id in rows:
        if version_id < event.to_version_id:
            why = (f"superseded by {event.kind.replace('_', ' ')} event {event.id} ({event.actor}): production "
                   f"moved to {to}, newer than this review's v{version_id}; approving it would move production "
                   "backwards")
        elif event.kind == "promotion" and review.decision_id == event.decision_id:
            why = f"superseded by promotion event {event.id} ({event.actor}): its decision is already in production"
        else:
            continue
        review.state, review.decided_by, review.decided_at, review.reason = "superseded", event.actor, event.at, why
        out.append(review)
    session.flush()
    return out


def events_of(session: Session, adapter_id: int) -> list[PromotionEvent]:
    """The adapter's promotion events, oldest first."""
    return list(session.scalars(
        select(PromotionEvent).where(PromotionEvent.adapter_id == adapter_id).order_by(PromotionEvent.id)
    ))


def undo_stack(events: list[PromotionEvent]) -> list[PromotionEvent]:
    """The moves still in effect, oldest first: promotions and manual overrides not reverted by a rollback."""
    stack: list[PromotionEvent] = []
    for event in events:
        if event.kind == "rollback":
            stack = [e for e in stack if e.id != event.reverts_event_id]
        else:
            stack.append(event)
    return stack


def rollback_target(session: Session, adapter: Adapter) -> PromotionEvent:
    """The event a rollback of ``adapter`` reverts: the latest move still in effect.

    Raises:
        RegistryError: if nothing is left to roll back, or the pointer disagrees with the history.
    """
    stack = undo_stack(events_of(session, adapter.id))
    if not stack:
        raise RegistryError(f"adapter {adapter.name!r} has no promotion left to roll back (see its history)")
    top = stack[-1]
    pointer = session.get(ProductionPointer, adapter.id)
    if pointer is None or (pointer.candidate_id, pointer.adapter_version_id) != (top.to_candidate_id,
                                                                                 top.to_version_id):
        raise RegistryError(
            f"adapter {adapter.name!r}: the production pointer does not match the latest event in effect "
            f"(event {top.id}); use manual_promote() to set production explicitly"
        )
    return top


def production_state(session: Session, adapter: Adapter) -> ProductionState | None:
    """What ``adapter`` serves now (``None`` if it has no version at all)."""
    pointer = session.get(ProductionPointer, adapter.id)
    if pointer is not None:
        version = session.get(AdapterVersion, pointer.adapter_version_id)
        candidate = session.get(Candidate, pointer.candidate_id) if pointer.candidate_id is not None else None
        updated_at, implicit = pointer.updated_at, False
    else:
        version, candidate = latest_version(session, adapter.id), None
        updated_at, implicit = None, True
        if version is None:
            return None
    return ProductionState(
        adapter_name=adapter.name, adapter_version_id=version.id, content_sha256=version.content_sha256,
        local_path=version.local_path, candidate_id=candidate.id if candidate else None,
        artifact_uri=candidate.artifact_uri if candidate else None, updated_at=updated_at, implicit=implicit,
    )
