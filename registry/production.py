"""The registry API of production: promotions by the gate, manual overrides, rollbacks, history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spectral_surgery.registry import promotion as prom
from spectral_surgery.registry import validation as check
from spectral_surgery.registry.models import (
    AdapterVersion,
    Candidate,
    Decision,
    ProductionPointer,
    PromotionEvent,
    RefinementRun,
)
from spectral_surgery.registry.promotion import ProductionState
from spectral_surgery.registry.store import Store
from spectral_surgery.registry.validation import RegistryError, RunStoppedError


class ProductionStore(Store):
    """The production pointer of each adapter and its audited history."""

    # ----------------------------------------------------------------------------------------- production
    def _event_of_decision(self, s: Session, decision_id: int) -> PromotionEvent | None:
        return s.scalars(select(PromotionEvent).where(PromotionEvent.decision_id == decision_id)).first()

    def promote(self, decision: Decision | int, *, actor: str = "gate",
                before_move: Callable[[], None] | None = None, run_id: int | None = None) -> PromotionEvent:
        """Put a decision's candidate in production: the pointer moves and the event is appended, atomically.

        Idempotent: a decision promotes at most once (``unique(decision_id)``). A repeat, or a second process
        racing this one, appends nothing and gets the existing event.

        Args:
            decision: The decision (or its id).
            actor: Who promotes (recorded in the history).
            before_move: Called inside the transaction, after the adapter's lock is taken and before the pointer
                moves; whatever it raises rolls the transaction back and propagates, so nothing moves. The nightly
                flow passes :func:`flows.interrupt.check`: no move starts after a stop was requested.
            run_id: The refinement run promoting. Its row is locked in the same transaction and must still be
                ``running``: a run cancelled by another process (the command that saw the Ctrl-C, while a remote
                worker went on) moves nothing. A cancellation and a move are serialised: one commits first.

        Raises:
            RegistryError: if the decision promoted no candidate.
            BackwardsError: its version is older than the one in production (the gate never moves production
                backwards; a person can, with ``manual_promote(..., force=True)``).
            RunStoppedError: ``run_id`` is no longer running.
        """
        return self.promote_decision(decision, actor=actor, before_move=before_move, run_id=run_id)[0]

    def promote_decision(self, decision: Decision | int, *, actor: str = "gate",
                         before_move: Callable[[], None] | None = None,
                         run_id: int | None = None) -> tuple[PromotionEvent, bool]:
        """:meth:`promote`, also saying whether this call moved the pointer (``False``: a repeat, or the event of
        a racing process), so that a caller announces each move once."""
        decision_id = decision.id if isinstance(decision, Decision) else int(decision)
        check.text(actor, "actor", max_len=200)
        try:
            with self._write() as s:
                d = self._row(s, Decision, decision_id, "decision")
                if not d.promoted or d.promoted_candidate_id is None:
                    raise RegistryError(f"decision {d.id} promoted no candidate: {d.sentence}")
                version = self._row(s, AdapterVersion, d.adapter_version_id, "adapter version")
                prom.lock_adapter(s, version.adapter_id)
                # Checked after taking the lock: a racing promoter of this decision has committed by now.
                existing = self._event_of_decision(s, d.id)
                if existing is not None:
                    return existing, False
                if run_id is not None:
                    run = s.execute(select(RefinementRun).where(RefinementRun.id == run_id).with_for_update()
                                    ).scalar_one_or_none()
                    if run is None or run.status != "running":
                        raise RunStoppedError(f"refinement run {run_id} is "
                                              f"{run.status if run else 'not recorded'}: decision {d.id} is not "
                                              "promoted by it; the next run promotes it")
                if before_move is not None:
                    before_move()
                # the evidence is the decision's statistics exactly as recorded (raw: the audit copy never changes)
                return prom.move_pointer(
                    s, version.adapter_id, d.adapter_version_id, d.promoted_candidate_id, kind="promotion",
                    actor=actor, reason=d.sentence, evidence=d.statistics_json, decision_id=d.id,
                ), True
        except IntegrityError:
            # Lost a race for the pointer row or the unique decision_id: the winner's event is the answer.
            with self._read() as s:
                existing = self._event_of_decision(s, decision_id)
            if existing is None:
                raise
            return existing, False

    def manual_promote(
        self,
        candidate_id: int | None,
        actor: str,
        reason: str,
        *,
        adapter_version_id: int | None = None,
        force: bool = False,
    ) -> PromotionEvent | None:
        """Put a candidate (or, with ``candidate_id=None``, an unedited version) in production by hand.

        Args:
            candidate_id: The candidate to serve; ``None`` to serve ``adapter_version_id`` unedited.
            actor: Who decided (recorded in the history).
            reason: Why (required, recorded in the history).
            adapter_version_id: Required when ``candidate_id`` is ``None``.
            force: Allow a control (a random control or a canary, which the gate never promotes), or a version
                older than the one in production; the event's evidence then carries a ``warning``.

        Returns:
            The ``manual_override`` event, or ``None`` if production already was that (nothing is appended).

        Raises:
            RegistryError: a control without ``force``; the target's files are missing or changed
                (:func:`registry.promotion.verify_target`); a candidate of another version.
            BackwardsError: the target is older than production's version and ``force`` is not set.
        """
        check.text(actor, "actor", max_len=200)
        check.text(reason, "reason")
        with self._write() as s:
            evidence: dict[str, Any] | None = None
            if candidate_id is not None:
                cand = self._row(s, Candidate, candidate_id, "candidate")
                if adapter_version_id is not None and adapter_version_id != cand.adapter_version_id:
                    raise RegistryError(f"candidate {candidate_id} belongs to adapter version "
                                        f"{cand.adapter_version_id}, not {adapter_version_id}")
                adapter_version_id = cand.adapter_version_id
                evidence = {"policy": cand.policy, "seed": cand.seed, "is_control": cand.is_control,
                            "config_hash": cand.config_hash}
                if cand.is_control:
                    if not force:
                        raise RegistryError(f"candidate {cand.id} is a control ({cand.policy}, seed {cand.seed}): "
                                            "the gate never promotes controls, since they measure chance, not an "
                                            "edit. Pass --force to serve it anyway; it is recorded "
                                            "as a warning")
                    evidence["warning"] = (f"a control ({cand.policy}) was put in production by hand with --force "
                                           f"by {actor}")
            elif adapter_version_id is None:
                raise RegistryError("manual_promote(None, ...) serves an unedited version: pass adapter_version_id")
            version = self._row(s, AdapterVersion, adapter_version_id, "adapter version")
            prom.lock_adapter(s, version.adapter_id)
            pointer = s.get(ProductionPointer, version.adapter_id)
            if pointer is not None and (pointer.candidate_id, pointer.adapter_version_id) == (candidate_id,
                                                                                              adapter_version_id):
                return None
            return prom.move_pointer(s, version.adapter_id, adapter_version_id, candidate_id,
                                     kind="manual_override", actor=actor, reason=reason, evidence=evidence,
                                     force=force)

    def rollback(self, adapter_name: str, actor: str, reason: str) -> PromotionEvent:
        """Undo the latest move of ``adapter_name``'s pointer still in effect, and append a ``rollback`` event.

        Production returns to that move's ``from`` state. A second rollback undoes the move before it, and so on.

        Raises:
            RegistryError: if there is nothing left to roll back.
        """
        check.text(actor, "actor", max_len=200)
        check.text(reason, "reason")
        with self._write() as s:
            adapter = prom.lock_adapter(s, self._adapter(s, adapter_name).id)
            target = prom.rollback_target(s, adapter)
            return prom.move_pointer(
                s, adapter.id, target.from_version_id, target.from_candidate_id, kind="rollback", actor=actor,
                reason=reason, reverts_event_id=target.id,
                evidence={"reverted_event_id": target.id, "reverted_kind": target.kind,
                          "reverted_decision_id": target.decision_id},
            )

    def history(self, adapter_name: str) -> list[PromotionEvent]:
        """Every move of the adapter's production pointer, oldest first."""
        with self._read() as s:
            return prom.events_of(s, self._adapter(s, adapter_name).id)

    def production(self, adapter_name: str) -> ProductionState | None:
        """What ``adapter_name`` serves now; ``None`` if it has no version yet."""
        with self._read() as s:
            return prom.production_state(s, self._adapter(s, adapter_name))

