"""A decision's report in Markdown, built from the decision alone (what the nightly flow publishes as artifacts).

The flow reports what it decided from :meth:`tasks.decision.gate.Decision.to_dict` (the statistics the registry records),
never from the dashboard: no database read, nothing the decision did not see. One table row per candidate and
control: the task score, the gain over the unedited adapter, the best random control and the calibrated global
scalar (points, 95% interval, one-sided p), the IFEval change, the evidence behind a HOLD (n, discordant pairs, the
minimum detectable effect, the documents that would resolve it) and the verdict's words
(:func:`tasks.decision.gate.verdict_label`), so a HOLD never reads like a REJECT.
"""

from __future__ import annotations

from typing import Any

from tasks.decision.gate import fmt_p, verdict_label, verdict_of


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}"


def _pts(x: float | None) -> str:
    if x is None:
        return "–"
    v = round(x * 100, 1)
    return f"{'−' if v < 0 else '+'}{abs(v):.1f}"


def _delta(test: dict[str, Any] | None) -> str:
    """``+3.1 [−0.5, +6.7] p=0.04`` of a recorded :class:`tasks.decision.stats.PairedTest` (``–`` without one)."""
    if not test:
        return "–"
    return f"{_pts(test['delta'])} [{_pts(test['ci_low'])}, {_pts(test['ci_high'])}] {fmt_p(test['p_value'])}"


def _discordant(v: dict[str, Any]) -> str:
    if v.get("n_a_only") is None:
        return "–"
    return f"{v['n_a_only']}/{v['n_b_only']}"


def candidate_rows(statistics: dict[str, Any]) -> list[dict[str, Any]]:
    """One plain row per candidate of a recorded decision (the table artifact's rows; numbers in points)."""
    rows = []
    for v in statistics.get("verdicts", []):
        verdict = v.get("verdict") or ("promote" if v["passed"] else "reject")
        rows.append({"candidate": v["name"], "task": round(v["task_mean"], 4),
                     "vs baseline (pts)": round(v["vs_baseline"]["delta"] * 100, 2),
                     "p vs baseline": round(v["vs_baseline"]["p_value"], 4),
                     "guard delta (pts)": None if v["guard_delta"] is None else round(v["guard_delta"] * 100, 2),
                     "verdict": verdict_label(verdict, v.get("n_needed")),
                     "MDE (pts)": None if v.get("mde") is None else round(v["mde"] * 100, 2),
                     "passed": v["passed"]})
    return rows


def decision_markdown(adapter_name: str, statistics: dict[str, Any], sentence: str, *,
                      promoted: str | None = None) -> str:
    """The decision of one adapter version as Markdown.

    Args:
        adapter_name: The adapter (the heading).
        statistics: The decision's recorded statistics (:meth:`tasks.decision.gate.Decision.to_dict`, plus the flow's
            ``means``/``guard_means``/``keys`` when present).
        sentence: The decision sentence.
        promoted: The promoted candidate's name when the promotion happened (None: nothing moved, e.g. a dry run).
    """
    verdict = verdict_of(statistics, bool(statistics.get("promoted")))
    label = verdict_label(verdict, statistics.get("n_needed"), promoted or statistics.get("promoted"))
    base = statistics.get("baseline_task_mean")
    lines = [f"### {adapter_name}: {label.upper()}", "", sentence, ""]
    if base is not None:
        lines.append(f"- **Unedited adapter:** task {_pct(base)}%")
    for flag in statistics.get("flags", []):
        lines.append(f"- **Flag:** {flag}")
    for name, canary in (statistics.get("canaries") or {}).items():
        state = "ok" if canary.get("ok", True) else "FAILED"
        lines.append(f"- **Canary {name}** (`{canary.get('arm')}`): {state}, differs from the unedited adapter on "
                     f"{canary.get('n_differ')} documents ({_pct(canary.get('fraction'))}%)")
    correction = statistics.get("correction")
    if correction:
        lines.append(f"- **Multiple comparisons:** {correction}")
    verdicts = statistics.get("verdicts", [])
    if verdicts:
        lines += ["", "Task and IFEval in %, differences in points with 95% CI and one-sided p; discordant pairs "
                      "are documents only the candidate / only the unedited adapter solves.", "",
                  "| candidate | task | Δ vs unedited | Δ vs best random | Δ vs global scalar | Δ IFEval | n "
                  "| discordant | MDE | verdict |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for v in verdicts:
            words = verdict_label(v.get("verdict") or ("promote" if v["passed"] else "reject"), v.get("n_needed"))
            if v["name"] == statistics.get("promoted"):
                words = f"**{words}**"
            mde = "–" if v.get("mde") is None else _pts(v["mde"]).lstrip("+")
            lines.append("| " + " | ".join([
                v["name"], _pct(v["task_mean"]), _delta(v["vs_baseline"]), _delta(v.get("vs_control")),
                _delta(v.get("vs_scalar")), _pts(v.get("guard_delta")), str(v.get("n", "–")), _discordant(v), mde,
                words]) + " |")
        reasons = [f"- `{v['name']}`: {v['reason']}" for v in verdicts if v.get("reason")]
        if reasons:
            lines += ["", "**Why**", "", *reasons]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- what wins
def _mean_ci(values: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean with a Student-t interval across adapters (scipy); no interval from fewer than two values."""
    import math

    from scipy import stats

    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "lo": None, "hi": None}
    mean = sum(values) / n
    if n < 2 or len(set(values)) == 1:
        return {"n": n, "mean": mean, "lo": None if n < 2 else mean, "hi": None if n < 2 else mean}
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    lo, hi = float(ci.low), float(ci.high)
    return {"n": n, "mean": mean, "lo": lo if math.isfinite(lo) else None, "hi": hi if math.isfinite(hi) else None}


def what_wins(decisions: list[dict[str, Any]], confidence: float = 0.95) -> list[dict[str, Any]]:
    """Per task family × edit, over each adapter's latest decision: how often the edit was promoted, its mean gain
    over the unedited adapter and its IFEval change across adapters (95% Student-t intervals), and the cost.

    Args:
        decisions: ``[{"adapter", "family", "statistics", "seconds"}]``, one per adapter
            (:func:`registry.read.latest_decisions`).
        confidence: Of the intervals.

    Returns:
        Rows sorted by family, then by mean gain (best first): ``{"family", "edit", "adapters", "promoted",
        "passed", "held", "rejected", "delta_pts": {n, mean, lo, hi}, "guard_pts": {...}, "seconds_per_adapter"}``.
        Differences are in points (×100). ``seconds_per_adapter`` is the mean wall time of the adapter runs that
        decided (every edit of a run together: the registry keeps no per-edit time). Random controls and canaries
        are references, not edits, and are not listed.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    seconds: dict[str, list[float]] = {}
    for d in decisions:
        stats = d.get("statistics") or {}
        if d.get("seconds") is not None:
            seconds.setdefault(d["family"], []).append(float(d["seconds"]))
        for v in stats.get("verdicts", []):
            g = groups.setdefault((d["family"], v.get("policy") or v["name"]), {
                "adapters": 0, "promoted": 0, "passed": 0, "held": 0, "rejected": 0, "delta": [], "guard": []})
            g["adapters"] += 1
            verdict = v.get("verdict") or ("promote" if v["passed"] else "reject")
            g["passed"] += bool(v["passed"])
            g["promoted"] += stats.get("promoted") == v["name"]
            g["held"] += verdict == "hold"
            g["rejected"] += verdict == "reject"
            g["delta"].append(v["vs_baseline"]["delta"] * 100)
            if v.get("guard_delta") is not None:
                g["guard"].append(v["guard_delta"] * 100)
    rows = []
    for (family, edit), g in groups.items():
        secs = seconds.get(family, [])
        rows.append({"family": family, "edit": edit, "adapters": g["adapters"], "promoted": g["promoted"],
                     "passed": g["passed"], "held": g["held"], "rejected": g["rejected"],
                     "delta_pts": _mean_ci(g["delta"], confidence), "guard_pts": _mean_ci(g["guard"], confidence),
                     "seconds_per_adapter": sum(secs) / len(secs) if secs else None})
    return sorted(rows, key=lambda r: (r["family"], -(r["delta_pts"]["mean"] or 0.0), r["edit"]))


def _pts_ci(x: dict[str, Any]) -> str:
    if x["mean"] is None:
        return "–"
    ci = f" [{_pts(x['lo'] / 100)}, {_pts(x['hi'] / 100)}]" if x["lo"] is not None else ""
    return f"{_pts(x['mean'] / 100)}{ci}"


def what_wins_markdown(rows: list[dict[str, Any]]) -> str:
    """:func:`what_wins` as a Markdown table (the CLI's ``report`` and the README)."""
    lines = ["| family | edit | adapters | promoted | passed / held / rejected | Δ vs unedited (pts, 95% CI) "
             "| Δ IFEval (pts) | s per adapter |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        secs = "–" if r["seconds_per_adapter"] is None else f"{r['seconds_per_adapter']:.0f}"
        lines.append(f"| {r['family']} | {r['edit']} | {r['adapters']} | {r['promoted']} | "
                     f"{r['passed']} / {r['held']} / {r['rejected']} | {_pts_ci(r['delta_pts'])} | "
                     f"{_pts_ci(r['guard_pts'])} | {secs} |")
    return "\n".join(lines) + "\n"
