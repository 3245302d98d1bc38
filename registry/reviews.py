"""The registry API of review windows: a passing decision waits for a person's approval instead of promoting.

With ``promote: review`` the nightly flow calls :meth:`ReviewStore.request_review` where it would have called
``promote``: the decision gets a ``pending`` review that expires after the window. :meth:`ReviewStore.approve`
moves the pointer through the same verified path as every other move (``registry.promotion.move_pointer``,
kind ``approval``, carrying the decision like a gate promotion and the review in its evidence), so the audit
history reads like a manual promotion. A review that is not approved in time is marked ``expired`` (at the start
of every nightly run and whenever someone lists or approves reviews); a newer review of the same adapter
supersedes an older pending one, and so does any move of production to a newer version
(:func:`registry.promotion.supersede_stale_reviews`). Approving a review of a version older than production's is
refused without ``force``: production never moves backwards by accident. Every change of state records who,
when and why; nothing is deleted.

Times are parameters (``now=``) so that tests drive the clock instead of sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from spectral_surgery.registry import promotion as prom
from spectral_surgery.registry import validation as check
from spectral_surgery.registry.models import REVIEW_STATES, AdapterVersion, Decision, PromotionEvent, Review, utcnow
from spectral_surgery.registry.store import Store
from spectral_surgery.registry.validation import RegistryError


@dataclass(frozen=True)
class ReviewRequest:
    """What :meth:`ReviewStore.request_review` did.

    Attributes:
        review: The decision's review (new, or the one it already had).
        created: ``False`` when the decision already had a review (a repeat: nothing changed).
        superseded: Older pending reviews of the same adapter that this one replaced.
        expired: Pending reviews of the adapter found past their window on the way (marked expired).
    """

    review: Review
    created: bool
    superseded: list[Review] = field(default_factory=list)
    expired: list[Review] = field(default_factory=list)


LATE = ("promote its candidate by hand if it should still be served (`spectral-surgery promote CANDIDATE_ID --reason "
        "...`; `spectral-surgery reviews --all` shows it), or wait for a new decision to review")


def _now(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is None:
        raise RegistryError(f"now={now!r} is naive: pass a timezone-aware time (the registry stores UTC)")
    return now


def _expire(s: Session, now: datetime, adapter_id: int | None = None) -> list[Review]:
    """Mark every pending review whose window has passed ``expired`` (inside the caller's transaction)."""
    stmt = select(Review).where(Review.state == "pending", Review.expires_at <= now)
    if adapter_id is not None:
        stmt = stmt.where(Review.adapter_id == adapter_id)
    out = list(s.scalars(stmt.order_by(Review.id)))
    for r in out:
        r.state, r.decided_by, r.decided_at = "expired", "expiry", now
        r.reason = f"not approved within the window (expired at {r.expires_at.isoformat(timespec='seconds')})"
    s.flush()
    return out


class ReviewStore(Store):
    """Decisions waiting for approval, their expiry and their approval."""

    def request_review(self, decision: Decision | int, *, window: timedelta, actor: str = "gate",
                       now: datetime | None = None) -> ReviewRequest:
        """Put a passing decision up for review until ``now + window`` instead of promoting it.

        Idempotent per decision (``unique(decision_id)``): a repeat returns the existing review. A new review
        supersedes the adapter's older pending ones (the newer evidence is what a reviewer should look at).

        Raises:
            RegistryError: the decision promoted no candidate, is already in production, or ``window`` is not
                positive.
        """
        decision_id = decision.id if isinstance(decision, Decision) else int(decision)
        check.text(actor, "actor", max_len=200)
        if window <= timedelta(0):
            raise RegistryError(f"review window must be positive, got {window}")
        now = _now(now)
        with self._write() as s:
            d = self._row(s, Decision, decision_id, "decision")
            if not d.promoted or d.promoted_candidate_id is None:
                raise RegistryError(f"decision {d.id} promoted no candidate, so there is nothing to review: "
                                    f"{d.sentence}")
            version = self._row(s, AdapterVersion, d.adapter_version_id, "adapter version")
            prom.lock_adapter(s, version.adapter_id)
            existing = s.scalars(select(Review).where(Review.decision_id == d.id)).first()
            if existing is not None:
                return ReviewRequest(existing, False)
            done = s.scalars(select(PromotionEvent).where(PromotionEvent.decision_id == d.id)).first()
            if done is not None:
                raise RegistryError(f"decision {d.id} is already in production (event {done.id}, {done.kind}): "
                                    "nothing to review")
            expired = _expire(s, now, version.adapter_id)
            older = list(s.scalars(select(Review).where(Review.adapter_id == version.adapter_id,
                                                        Review.state == "pending").order_by(Review.id)))
            review = Review(adapter_id=version.adapter_id, decision_id=d.id, state="pending", requested_by=actor,
                            requested_at=now, expires_at=now + window)
            s.add(review)
            s.flush()
            review.adapter  # noqa: B018  (loaded now: the review is handed out detached)
            for r in older:
                r.state, r.decided_by, r.decided_at = "superseded", actor, now
                r.reason = f"superseded by review {review.id} (decision {d.id}, newer evidence)"
                r.superseded_by_id = review.id
            s.flush()
            return ReviewRequest(review, True, older, expired)

    def expire_reviews(self, now: datetime | None = None) -> list[Review]:
        """Mark every pending review past its window ``expired`` (with when and why); returns those just marked."""
        now = _now(now)
        with self._write() as s:
            return _expire(s, now)

    def approve(self, review_id: int, actor: str, reason: str, *, now: datetime | None = None,
                force: bool = False) -> tuple[PromotionEvent, Review]:
        """Approve a pending review: its decision's candidate goes into production (an ``approval`` event).

        The pointer moves through :func:`registry.promotion.move_pointer`, so the candidate's files are verified
        first, exactly as for the gate's promotion and a manual ``promote``. Reviews past their window are
        marked expired first, and then refused. A review of a version older than production's is refused unless
        ``force`` (the approval's evidence then carries a ``warning``).

        Raises:
            NotFoundError: no review with that id.
            RegistryError: the review is not pending (approved, expired or superseded: the message says when and
                why), or the candidate's files are missing or changed.
            BackwardsError: its version is older than production's and ``force`` is not set (the message says what
                it would replace).
        """
        check.text(actor, "actor", max_len=200)
        check.text(reason, "reason")
        now = _now(now)
        self.expire_reviews(now)  # its own transaction: an expiry is recorded even though the approval is refused
        with self._write() as s:
            review = self._row(s, Review, review_id, "review")
            prom.lock_adapter(s, review.adapter_id)
            s.refresh(review)  # the state as of the lock: a racing approver has committed by now
            if review.state != "pending" or review.expires_at <= now:
                raise RegistryError(self._refusal(review))
            d = self._row(s, Decision, review.decision_id, "decision")
            # the audit row copies the decision's statistics exactly as recorded (raw, not re-serialised through the
            # record: what is recorded never changes); a reader reads them through DecisionRecord.from_json
            evidence = {"review_id": review.id, "requested_by": review.requested_by,
                        "requested_at": review.requested_at.isoformat(), "expires_at": review.expires_at.isoformat(),
                        "decision_sentence": d.sentence, "statistics": d.statistics_json}
            try:
                event = prom.move_pointer(s, review.adapter_id, d.adapter_version_id, d.promoted_candidate_id,
                                          kind="approval", actor=actor, reason=reason, evidence=evidence,
                                          decision_id=d.id, force=force)
            except prom.BackwardsError as e:
                raise prom.BackwardsError(f"review {review.id}: {e}") from None
            review.state, review.decided_by, review.decided_at = "approved", actor, now
            review.reason, review.promotion_event_id = reason, event.id
            s.flush()
            return event, review

    @staticmethod
    def _refusal(review: Review) -> str:
        if review.state == "pending":  # past its window, not yet marked (a clock skew between the two calls)
            return (f"review {review.id} expired at {review.expires_at.isoformat(timespec='seconds')}: it can no "
                    f"longer be approved; {LATE}")
        when = review.decided_at.isoformat(timespec="seconds") if review.decided_at else "?"
        if review.state == "approved":
            return f"review {review.id} was already approved by {review.decided_by} at {when} (event " \
                   f"{review.promotion_event_id})"
        hint = ("approve the newer review instead (`spectral-surgery reviews`)" if review.state == "superseded"
                else LATE)
        return (
            f"review {review.id} is {review.state} (at {when}: {review.reason}): it can no longer be approved; {hint}"
        )

    def get_review(self, review_id: int) -> Review:
        """One review by id (``NotFoundError`` if unknown)."""
        with self._read() as s:
            return self._row(s, Review, review_id, "review")

    def review_of_decision(self, decision_id: int) -> Review | None:
        """The review of a decision, if it was put up for one."""
        with self._read() as s:
            return s.scalars(select(Review).where(Review.decision_id == decision_id)).first()

    def list_reviews(self, *, state: str | None = None, adapter: str | None = None) -> list[Review]:
        """Reviews, newest first; ``state`` one of pending/approved/expired/superseded, ``adapter`` a name."""
        if state is not None and state not in REVIEW_STATES:
            raise RegistryError(f"state must be one of {', '.join(REVIEW_STATES)}, got {state!r}")
        with self._read() as s:
            stmt = select(Review).order_by(Review.id.desc())
            if state is not None:
                stmt = stmt.where(Review.state == state)
            if adapter is not None:
                stmt = stmt.where(Review.adapter_id == self._adapter(s, adapter).id)
            return list(s.scalars(stmt))
