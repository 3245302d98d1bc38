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

What wins across the fleet (many decisions, typed records of their own) is :mod:`tasks.decision.fleet_report`.
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

