"""What wins across the fleet: per task family × edit, over each adapter's latest decision (typed records, pure).

The fleet report reads each adapter's latest decision (:class:`LatestDecision`: the registry builds it,
:func:`registry.read.latest_decisions` and :func:`registry.read.edit_history`; the dashboard builds it from its own
snapshot) and reduces them to one :class:`WhatWinsRow` per family × edit (:func:`what_wins`): how often the edit was
promoted, its mean gain over the unedited adapter and its IFEval change (:class:`MeanCI`), and what it costs one
adapter alone (:func:`edit_cost` of its recorded :class:`ArmSeconds`, averaged into a :class:`MeanCost`), with the
data-free edits' cost against the calibrated ones (:func:`cost_by_data`, :class:`DataKindCost`). Its readers are the
CLI's ``report`` (``--json`` is each record's ``model_dump(mode="json")``: the same keys in the same order as the
dicts the report handed out before it was typed), the dashboard's "What wins" view and the per-family edit budget.

Apart from :mod:`tasks.decision.report` (one decision's report) because it is another reader's need: many decisions,
not one; the records live in ``tasks/`` because they cross from ``registry/`` into ``tasks/`` (which may not import
``registry/``).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from spectral_surgery.tasks.decision.record import DecisionRecord
from spectral_surgery.tasks.decision.report import _pts

DataKind = Literal["calibration", "data-free"]
_PARTS = ("prepare", "write", "evaluate", "total")


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmSeconds(_Record):
    """What one arm of a decision cost, in seconds (None: not recorded).

    ``write``, ``decompose``, ``calibrate``, ``gamma`` are the candidate's recorded seconds
    (``candidates.seconds_json``: none for rows written before costs were recorded, ``calibrate`` only for an edit
    written from the calibration pass), ``evaluate`` the seconds of every evaluation of it (task and guard, every
    look; None when none was timed).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)  # a stage a later revision times is not this report's

    write: float | None = None
    decompose: float | None = None
    calibrate: float | None = None
    gamma: float | None = None
    evaluate: float | None = None


class LatestDecision(_Record):
    """An adapter's latest decision, with what the fleet report needs.

    Attributes:
        adapter: The adapter's name.
        family: Its task family.
        decision_id: The decision.
        at: When it was made.
        record: Its recorded statistics.
        seconds: Wall time of the adapter run that made it (None if unknown: a decision re-made by hand, a run
            without an end, or a reader that does not time runs, like the edit budget's history).
        costs: What each arm it weighed cost, by arm name (``random_index-s<seed>`` for a random control, else the
            policy); empty where the reader does not read costs.
    """

    adapter: str
    family: str
    decision_id: int
    at: datetime
    record: DecisionRecord
    seconds: float | None = None
    costs: dict[str, ArmSeconds] = {}


class MeanCI(_Record):
    """A mean across adapters with its Student-t interval (None: no values, or no interval from fewer than two)."""

    n: int
    mean: float | None
    lo: float | None
    hi: float | None


class EditCost(_Record):
    """What one edit cost one adapter (:func:`edit_cost`), in seconds; ``data``: whether it needed the calibration
    pass (None: unknown)."""

    prepare: float
    write: float
    evaluate: float
    total: float
    data: DataKind | None


class MeanCost(_Record):
    """An edit's mean cost over the ``n`` adapters that timed it, in seconds."""

    prepare: float
    write: float
    evaluate: float
    total: float
    n: int


class WhatWinsRow(_Record):
    """One task family × edit of :func:`what_wins` (differences in points, ×100)."""

    family: str
    edit: str
    adapters: int
    promoted: int
    passed: int
    held: int
    rejected: int
    delta_pts: MeanCI
    guard_pts: MeanCI
    seconds_per_adapter: float | None
    data: DataKind | None
    cost: MeanCost | None


class DataKindCost(_Record):
    """The mean of one kind's edits' mean costs (:func:`cost_by_data`), in seconds, over ``edits`` edits."""

    edits: int
    prepare: float
    write: float
    evaluate: float
    total: float


def _mean_ci(values: list[float], confidence: float = 0.95) -> MeanCI:
    """Mean with a Student-t interval across adapters (scipy); no interval from fewer than two values. The values are
    differences of rates in points, so the interval is clipped to their range, ±100 points."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return MeanCI(n=0, mean=None, lo=None, hi=None)
    mean = sum(values) / n
    if n < 2 or len(set(values)) == 1:
        return MeanCI(n=n, mean=mean, lo=None if n < 2 else mean, hi=None if n < 2 else mean)
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    lo, hi = max(float(ci.low), -100.0), min(float(ci.high), 100.0)
    return MeanCI(n=n, mean=mean, lo=lo if math.isfinite(lo) else None, hi=hi if math.isfinite(hi) else None)


def what_wins(decisions: list[LatestDecision], confidence: float = 0.95) -> list[WhatWinsRow]:
    """Per task family × edit, over each adapter's latest decision: how often the edit was promoted, its mean gain
    over the unedited adapter and its IFEval change across adapters (95% Student-t intervals), and the cost.

    Args:
        decisions: One per adapter (:func:`registry.read.latest_decisions`).
        confidence: Of the intervals.

    Returns:
        Rows sorted by family, then by mean gain (best first). ``seconds_per_adapter`` is the mean wall time of the
        adapter runs that decided (every edit of a run together). ``cost`` is what the edit alone costs an adapter,
        in mean seconds over the adapters that timed it (:func:`edit_cost`), None where no adapter recorded its
        cost. ``data`` is ``calibration`` when the edit needed the calibration pass, ``data-free`` when it did not,
        None when unknown. Random controls and canaries are references, not edits, and are not listed.
    """
    groups: dict[tuple[str, str], dict] = {}
    seconds: dict[str, list[float]] = {}
    for d in decisions:
        rec = d.record
        if d.seconds is not None:
            seconds.setdefault(d.family, []).append(float(d.seconds))
        for v in rec.verdicts:  # a candidate recorded before verdicts existed: promote if it passed, else reject
            g = groups.setdefault((d.family, v.policy or v.name), {
                "adapters": 0, "promoted": 0, "passed": 0, "held": 0, "rejected": 0, "delta": [], "guard": [],
                "costs": []})
            cost = edit_cost(d.costs.get(v.name))
            if cost is not None:
                g["costs"].append(cost)
            g["adapters"] += 1
            g["passed"] += bool(v.passed)
            g["promoted"] += rec.promoted == v.name
            g["held"] += v.verdict == "hold"
            g["rejected"] += v.verdict == "reject"
            g["delta"].append(v.vs_baseline.delta * 100)
            if v.guard_delta is not None:
                g["guard"].append(v.guard_delta * 100)
    rows = []
    for (family, edit), g in groups.items():
        secs = seconds.get(family, [])
        data, cost = _mean_cost(g["costs"])
        rows.append(WhatWinsRow(
            family=family, edit=edit, adapters=g["adapters"], promoted=g["promoted"], passed=g["passed"],
            held=g["held"], rejected=g["rejected"], delta_pts=_mean_ci(g["delta"], confidence),
            guard_pts=_mean_ci(g["guard"], confidence), seconds_per_adapter=sum(secs) / len(secs) if secs else None,
            data=data, cost=cost))
    return sorted(rows, key=lambda r: (r.family, -(r.delta_pts.mean or 0.0), r.edit))


def edit_cost(spent: ArmSeconds | None) -> EditCost | None:
    """What one edit cost one adapter, from its recorded seconds (:attr:`LatestDecision.costs`).

    ``prepare`` is the decomposition plus, for an edit that needs data, the calibration pass and the global
    scalar's γ search, each counted whole: the stages are shared by every edit of an adapter, but they are what
    running this edit alone would pay, which is what tells a data-free edit's cost from a calibrated one's.
    ``write`` is writing the edited adapter, ``evaluate`` scoring it (task and guard); ``total`` their sum.
    ``data`` is ``calibration`` when the calibration pass was needed (``calibrate`` recorded), else ``data-free``
    (None when the write was not recorded). None when nothing was timed (rows from before costs were recorded).
    """
    if spent is None or (spent.write is None and spent.evaluate is None):
        return None
    prepare = sum(x or 0.0 for x in (spent.decompose, spent.calibrate, spent.gamma))
    write = spent.write or 0.0
    evaluate = spent.evaluate or 0.0
    data = None if spent.write is None else "calibration" if spent.calibrate is not None else "data-free"
    return EditCost(prepare=prepare, write=write, evaluate=evaluate, total=prepare + write + evaluate, data=data)


def _mean_cost(costs: list[EditCost]) -> tuple[DataKind | None, MeanCost | None]:
    """The edit's kind when every timed adapter agrees on it (else None), and its mean cost."""
    if not costs:
        return None, None
    kinds = {c.data for c in costs} - {None}
    mean = {k: sum(getattr(c, k) for c in costs) / len(costs) for k in _PARTS}
    return kinds.pop() if len(kinds) == 1 else None, MeanCost(**mean, n=len(costs))


def cost_by_data(rows: list[WhatWinsRow]) -> dict[DataKind, DataKindCost]:
    """Data-free edits' cost against the calibrated ones: per kind, the mean of its edits' mean costs (seconds).

    Args:
        rows: :func:`what_wins` rows.

    Returns:
        ``{"data-free": ..., "calibration": ...}``, a kind only when some edit of it was timed.
    """
    out: dict[DataKind, DataKindCost] = {}
    for kind in ("data-free", "calibration"):
        costs = [r.cost for r in rows if r.data == kind and r.cost is not None]
        if costs:
            out[kind] = DataKindCost(edits=len(costs),
                                     **{k: sum(getattr(c, k) for c in costs) / len(costs) for k in _PARTS})
    return out


def _pts_ci(x: MeanCI) -> str:
    if x.mean is None:
        return "–"
    ci = f" [{_pts(x.lo / 100)}, {_pts(x.hi / 100)}]" if x.lo is not None else ""
    return f"{_pts(x.mean / 100)}{ci}"


def what_wins_markdown(rows: list[WhatWinsRow]) -> str:
    """:func:`what_wins` as a Markdown table (the CLI's ``report`` and docs/decisions.md)."""
    lines = ["| family | edit | data | adapters | promoted | passed / held / rejected | Δ vs unedited (pts, 95% CI) "
             "| Δ IFEval (pts) | s per edit (prepare + write + evaluate) | s per adapter run |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        secs = "–" if r.seconds_per_adapter is None else f"{r.seconds_per_adapter:.0f}"
        lines.append(f"| {r.family} | {r.edit} | {r.data or '–'} | {r.adapters} | {r.promoted} | "
                     f"{r.passed} / {r.held} / {r.rejected} | {_pts_ci(r.delta_pts)} | "
                     f"{_pts_ci(r.guard_pts)} | {cost_text(r.cost)} | {secs} |")
    return "\n".join(lines) + "\n"


def cost_text(cost: MeanCost | None) -> str:
    """``412 (300 + 2 + 110)``: an edit's mean total seconds and their parts (``–`` when not timed)."""
    if cost is None:
        return "–"
    return f"{cost.total:.0f} ({cost.prepare:.0f} + {cost.write:.1f} + {cost.evaluate:.0f})"
