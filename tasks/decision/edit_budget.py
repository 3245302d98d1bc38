"""The per-family edit budget: evaluate only the edits that have won before on adapters of the same task family.

A fleet that tries every registered edit on every adapter each night pays an evaluation per edit. With
``edit_budget.enabled`` the nightly flow keeps, for an adapter of family F, the ``per_family`` configured edits that
did best on F's adapters in past nights, plus every configured edit tried on fewer than ``explore_below`` of them
(a new edit gets its chance before it can be dropped). The controls and canaries of the ladder are never cut.

The history is chosen on past nights only, never on the night being decided: each adapter's latest decision made
by an earlier run, before this run started (:func:`registry.read.edit_history`). Ranking, best first: times
promoted, then times passed, then mean gain over the unedited adapter (:func:`tasks.decision.fleet_report.what_wins`),
then the configured order. Without enough history every configured edit is evaluated.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from spectral_surgery.tasks.decision.fleet_report import LatestDecision, what_wins


class EditBudgetConfig(BaseModel):
    """``edit_budget:`` of a run config (off by default: every configured edit is evaluated)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="Evaluate only the edits that won before on the adapter's family.")
    per_family: int = Field(2, ge=1, description="Edits kept per adapter by their past results on its family.")
    explore_below: int = Field(1, ge=1, description="An edit tried on fewer past adapters of the family than this "
                               "is always evaluated (1: only an edit never tried on the family).")


def choose_edits(configured: list[str], history: list[LatestDecision], family: str,
                 cfg: EditBudgetConfig) -> tuple[list[str], dict[str, str]]:
    """The configured edits to evaluate for an adapter of ``family``, and why each other one is not.

    Args:
        configured: The configured edits (``surgery.policies``), in order.
        history: Past decisions (:func:`registry.read.edit_history`: each adapter's latest decision of an earlier
            night).
        family: The adapter's task family.
        cfg: The budget.

    Returns:
        ``(kept, skipped)``: the edits to evaluate in configured order; ``{edit: reason}`` for the others.
    """
    if not cfg.enabled:
        return list(configured), {}
    rows = {r.edit: r for r in what_wins([d for d in history if d.family == family])}
    order = {e: i for i, e in enumerate(configured)}

    def rank(edit: str) -> tuple:
        r = rows[edit]
        return (-r.promoted, -r.passed, -(r.delta_pts.mean or 0.0), order[edit])

    tried = [e for e in configured if e in rows and rows[e].adapters >= cfg.explore_below]
    best = sorted(tried, key=rank)[:cfg.per_family]
    kept = [e for e in configured if e in best or e not in tried]
    skipped = {}
    for e in configured:
        if e not in kept:
            r = rows[e]
            skipped[e] = (f"edit budget: not among the {cfg.per_family} best of family {family} on past nights "
                          f"(promoted {r.promoted} of {r.adapters} adapter(s), mean "
                          f"{r.delta_pts.mean:+.1f} pts; kept {', '.join(best)})")
    return kept, skipped
