"""A decision's report in Markdown, built from the decision alone (what the nightly flow publishes as artifacts).

The flow reports what it decided from the decision's typed record (:class:`tasks.decision.record.DecisionRecord`: the
statistics the registry records, read back through :meth:`~tasks.decision.record.DecisionRecord.from_json`, which
settles absent vs null fields and older row shapes), never from the dashboard: no database read, nothing the decision
did not see. One table row per candidate and control: the task score, the gain over the unedited adapter, the best
random control and the calibrated global scalar (points, 95% interval, one-sided p), the IFEval change, the evidence
behind a HOLD (n, discordant pairs, the minimum detectable effect, the documents that would resolve it), what pairing
the documents bought (correlation and effective sample size vs the unedited adapter) and the verdict's words
(:func:`tasks.decision.gate.verdict_label`), so a HOLD never reads like a REJECT. A decision on the continuous metric
shows its differences in nats.
"""

from __future__ import annotations

from typing import Any

from spectral_surgery.tasks.decision.gate import fmt_p, verdict_label
from spectral_surgery.tasks.decision.record import (
    DecisionRecord,
    PairedTestRecord,
    PairingValues,
    ReferencePairingRecord,
    VerdictRecord,
)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}"


def _pts(x: float | None) -> str:
    if x is None:
        return "–"
    v = round(x * 100, 1)
    return f"{'−' if v < 0 else '+'}{abs(v):.1f}"


def _nats(x: float | None) -> str:
    return "–" if x is None else f"{'−' if x < 0 else '+'}{abs(x):.3f}"


def _delta(test: PairedTestRecord | None, continuous: bool = False) -> str:
    """``+3.1 [−0.5, +6.7] p=0.04`` of a recorded :class:`tasks.decision.stats.PairedTest` (``–`` without one, or
    for a number it did not record); in nats with three decimals for a decision on the continuous metric."""
    if test is None or test.empty:
        return "–"
    f = _nats if continuous else _pts
    p = "p=–" if test.p_value is None else fmt_p(test.p_value)
    return f"{f(test.delta)} [{f(test.ci_low)}, {f(test.ci_high)}] {p}"


def pairing_vs(verdict: VerdictRecord, reference: str = "baseline") -> ReferencePairingRecord | None:
    """The recorded pairing of a verdict against the arm ``reference``, or None (decisions recorded before pairing
    existed, or no such reference)."""
    return next((p for p in verdict.pairing if p.reference == reference), None)


def pairing_text(p: ReferencePairingRecord | None) -> str:
    """``φ 0.94, n_eff 1,624; scores r 0.99, n_eff 13,054`` (``–`` without a pairing or for a missing number)."""
    if p is None or p.empty:
        return "–"

    def one(x: PairingValues | None, sym: str) -> str:
        r, ne = (x.correlation, x.n_eff) if x is not None else (None, None)
        return f"{sym} {'–' if r is None else f'{r:.2f}'}, n_eff {'–' if ne is None else f'{ne:,.0f}'}"

    out = one(p.outcomes, "φ")
    return out + (f"; scores {one(p.scores, 'r')}" if p.scores is not None and not p.scores.empty else "")


def _discordant(v: VerdictRecord) -> str:
    return "–" if v.n_a_only is None else f"{v.n_a_only}/{v.n_b_only}"


def _round(x: float | None, scale: float, digits: int) -> float | None:
    return None if x is None else round(x * scale, digits)


def candidate_rows(record: DecisionRecord) -> list[dict[str, Any]]:
    """One plain row per candidate of a recorded decision (the table artifact's rows; numbers in points; None for a
    number the decision did not record)."""
    rows = []
    for v in record.verdicts:
        pair = pairing_vs(v)
        outcomes, scores = (pair.outcomes, pair.scores) if pair is not None else (None, None)
        test = v.vs_baseline
        rows.append({"candidate": v.name, "task": _round(v.task_mean, 1, 4),
                     "vs baseline (pts)": _round(test and test.delta, 100, 2),
                     "p vs baseline": _round(test and test.p_value, 1, 4),
                     "guard delta (pts)": _round(v.guard_delta, 100, 2),
                     "verdict": verdict_label(v.verdict, v.n_needed),
                     "MDE (pts)": _round(v.mde, 100, 2),
                     "phi vs baseline": outcomes and outcomes.correlation,
                     "n_eff vs baseline": outcomes and outcomes.n_eff,
                     "score r vs baseline": scores and scores.correlation,
                     "score n_eff vs baseline": scores and scores.n_eff,
                     "passed": v.passed})
    return rows


def decision_markdown(adapter_name: str, record: DecisionRecord, sentence: str, *,
                      promoted: str | None = None) -> str:
    """The decision of one adapter version as Markdown.

    Args:
        adapter_name: The adapter (the heading).
        record: The decision's recorded statistics (:meth:`tasks.decision.record.DecisionRecord.from_json` of what the
            registry holds, or :meth:`~tasks.decision.record.DecisionRecord.of` of what the gate just decided).
        sentence: The decision sentence.
        promoted: The promoted candidate's name when the promotion happened (None: nothing moved, e.g. a dry run).
    """
    label = verdict_label(record.verdict, record.n_needed, promoted or record.promoted)
    base = record.baseline_task_mean
    lines = [f"### {adapter_name}: {label.upper()}", "", sentence, ""]
    if base is not None:
        lines.append(f"- **Unedited adapter:** task {_pct(base)}%")
    for flag in record.flags:
        lines.append(f"- **Flag:** {flag}")
    for name, canary in record.canaries.items():
        state = "ok" if canary.held else "FAILED"
        lines.append(f"- **Canary {name}** (`{canary.arm}`): {state}, differs from the unedited adapter on "
                     f"{canary.n_differ} documents ({_pct(canary.fraction)}%)")
    if record.correction:
        lines.append(f"- **Multiple comparisons:** {record.correction}")
    continuous = record.metric == "continuous"
    if continuous:
        lines.append(f"- **Decision metric:** continuous (the gold answer's log-likelihood margin, paired t-test; "
                     f"min_effect {record.decision.get('min_effect')} nats)")
    fallback = record.decision_metric
    if fallback is not None:
        lines.append(f"- **Decision metric:** {fallback.requested} requested, {fallback.used} used: {fallback.why}")
    if record.verdicts:
        unit = "nats of the gold answer's margin" if continuous else "points"
        lines += ["", f"Task and IFEval in %, differences in {unit} with 95% CI and one-sided p; discordant pairs "
                      "are documents only the candidate / only the unedited adapter solves; pairing: the correlation "
                      "of the paired per-document values vs the unedited adapter (φ on the 0/1 outcomes, r on the "
                      "scores) and the documents per arm an unpaired comparison would need for the same standard "
                      "error (n_eff).", "",
                  "| candidate | task | Δ vs unedited | Δ vs best random | Δ vs global scalar | Δ IFEval | n "
                  "| discordant | MDE | pairing | verdict |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for v in record.verdicts:
            words = verdict_label(v.verdict, v.n_needed)
            if v.name == record.promoted:
                words = f"**{words}**"
            mde = "–" if v.mde is None else (_nats if continuous else _pts)(v.mde).lstrip("+")
            lines.append("| " + " | ".join([
                v.name, _pct(v.task_mean), _delta(v.vs_baseline, continuous), _delta(v.vs_control, continuous),
                _delta(v.vs_scalar, continuous), _pts(v.guard_delta), "–" if v.n is None else str(v.n),
                _discordant(v), mde, pairing_text(pairing_vs(v)), words]) + " |")
        reasons = [f"- `{v.name}`: {v.reason}" for v in record.verdicts if v.reason]
        if reasons:
            lines += ["", "**Why**", "", *reasons]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- what wins
def _mean_ci(values: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean with a Student-t interval across adapters (scipy); no interval from fewer than two values. The values are
    differences of rates in points, so the interval is clipped to their range, ±100 points."""
    import math

    from scipy import stats

    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "lo": None, "hi": None}
    mean = sum(values) / n
    if n < 2 or len(set(values)) == 1:
        return {"n": n, "mean": mean, "lo": None if n < 2 else mean, "hi": None if n < 2 else mean}
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    lo, hi = max(float(ci.low), -100.0), min(float(ci.high), 100.0)
    return {"n": n, "mean": mean, "lo": lo if math.isfinite(lo) else None, "hi": hi if math.isfinite(hi) else None}


def what_wins(decisions: list[dict[str, Any]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per task family × edit, over each adapter's latest decision: how often the edit was promoted, its mean gain
    over the unedited adapter and its IFEval change across adapters (95% Student-t intervals), and the cost.

    Args:
        decisions: ``[{"adapter", "family", "record", "seconds"}]``, one per adapter
            (:func:`registry.read.latest_decisions`; ``record``: the decision's :class:`DecisionRecord`).
        confidence: Of the intervals.

    Returns:
        Rows sorted by family, then by mean gain (best first): ``{"family", "edit", "adapters", "promoted",
        "passed", "held", "rejected", "delta_pts": {n, mean, lo, hi}, "guard_pts": {...}, "seconds_per_adapter",
        "data", "cost"}``. Differences are in points (×100). ``seconds_per_adapter`` is the mean wall time of the
        adapter runs that decided (every edit of a run together). ``cost`` is what the edit alone costs an adapter,
        in mean seconds over the adapters that timed it (:func:`edit_cost`): ``{"prepare", "write", "evaluate",
        "total", "n"}``, None where no adapter recorded its cost. ``data`` is ``calibration`` when the edit needed
        the calibration pass, ``data-free`` when it did not, None when unknown. Random controls and canaries are
        references, not edits, and are not listed.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    seconds: dict[str, list[float]] = {}
    for d in decisions:
        rec: DecisionRecord = d["record"]
        if d.get("seconds") is not None:
            seconds.setdefault(d["family"], []).append(float(d["seconds"]))
        for v in rec.verdicts:  # a candidate recorded before verdicts existed: promote if it passed, else reject
            g = groups.setdefault((d["family"], v.policy or v.name), {
                "adapters": 0, "promoted": 0, "passed": 0, "held": 0, "rejected": 0, "delta": [], "guard": [],
                "costs": []})
            cost = edit_cost((d.get("costs") or {}).get(v.name))
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
        rows.append({"family": family, "edit": edit, "adapters": g["adapters"], "promoted": g["promoted"],
                     "passed": g["passed"], "held": g["held"], "rejected": g["rejected"],
                     "delta_pts": _mean_ci(g["delta"], confidence), "guard_pts": _mean_ci(g["guard"], confidence),
                     "seconds_per_adapter": sum(secs) / len(secs) if secs else None,
                     **_mean_cost(g["costs"])})
    return sorted(rows, key=lambda r: (r["family"], -(r["delta_pts"]["mean"] or 0.0), r["edit"]))


def edit_cost(spent: dict[str, Any] | None) -> dict[str, Any] | None:
    """What one edit cost one adapter, from its recorded seconds (``registry.read.latest_decisions``' ``costs``).

    ``prepare`` is the decomposition plus, for an edit that needs data, the calibration pass and the global
    scalar's γ search, each counted whole: the stages are shared by every edit of an adapter, but they are what
    running this edit alone would pay, which is what tells a data-free edit's cost from a calibrated one's.
    ``write`` is writing the edited adapter, ``evaluate`` scoring it (task and guard); ``total`` their sum.
    ``data`` is ``calibration`` when the calibration pass was needed (recorded as ``calibrate``), else
    ``data-free``. None when nothing was timed (rows from before costs were recorded).
    """
    if not spent or all(spent.get(k) is None for k in ("write", "evaluate")):
        return None
    prepare = sum(float(spent.get(k) or 0.0) for k in ("decompose", "calibrate", "gamma"))
    write = float(spent.get("write") or 0.0)
    evaluate = float(spent.get("evaluate") or 0.0)
    data = None if "write" not in spent else "calibration" if "calibrate" in spent else "data-free"
    return {"prepare": prepare, "write": write, "evaluate": evaluate, "total": prepare + write + evaluate,
            "data": data}


def _mean_cost(costs: list[dict[str, Any]]) -> dict[str, Any]:
    if not costs:
        return {"data": None, "cost": None}
    kinds = {c["data"] for c in costs} - {None}
    mean = {k: sum(c[k] for c in costs) / len(costs) for k in ("prepare", "write", "evaluate", "total")}
    return {"data": kinds.pop() if len(kinds) == 1 else None, "cost": {**mean, "n": len(costs)}}


def cost_by_data(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Data-free edits' cost against the calibrated ones: per kind, the mean of its edits' mean costs (seconds).

    Args:
        rows: :func:`what_wins` rows.

    Returns:
        ``{"data-free": {"edits", "prepare", "write", "evaluate", "total"}, "calibration": {...}}``, a kind only
        when some edit of it was timed.
    """
    out: dict[str, dict[str, float]] = {}
    for kind in ("data-free", "calibration"):
        costs = [r["cost"] for r in rows if r.get("data") == kind and r.get("cost")]
        if costs:
            out[kind] = {"edits": len(costs),
                         **{k: sum(c[k] for c in costs) / len(costs) for k in ("prepare", "write", "evaluate",
                                                                              "total")}}
    return out


def _pts_ci(x: dict[str, Any]) -> str:
    if x["mean"] is None:
        return "–"
    ci = f" [{_pts(x['lo'] / 100)}, {_pts(x['hi'] / 100)}]" if x["lo"] is not None else ""
    return f"{_pts(x['mean'] / 100)}{ci}"


def what_wins_markdown(rows: list[dict[str, Any]]) -> str:
    """:func:`what_wins` as a Markdown table (the CLI's ``report`` and docs/decisions.md)."""
    lines = ["| family | edit | data | adapters | promoted | passed / held / rejected | Δ vs unedited (pts, 95% CI) "
             "| Δ IFEval (pts) | s per edit (prepare + write + evaluate) | s per adapter run |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        secs = "–" if r["seconds_per_adapter"] is None else f"{r['seconds_per_adapter']:.0f}"
        lines.append(f"| {r['family']} | {r['edit']} | {r.get('data') or '–'} | {r['adapters']} | {r['promoted']} | "
                     f"{r['passed']} / {r['held']} / {r['rejected']} | {_pts_ci(r['delta_pts'])} | "
                     f"{_pts_ci(r['guard_pts'])} | {cost_text(r.get('cost'))} | {secs} |")
    return "\n".join(lines) + "\n"


def cost_text(cost: dict[str, Any] | None) -> str:
    """``412 (300 + 2 + 110)``: an edit's mean total seconds and their parts (``–`` when not timed)."""
    if not cost:
        return "–"
    return f"{cost['total']:.0f} ({cost['prepare']:.0f} + {cost['write']:.1f} + {cost['evaluate']:.0f})"
