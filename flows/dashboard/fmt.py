"""Cell formatting shared by the dashboard's pages: percentages, points, p-values, intervals and badges."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from spectral_surgery.flows.dashboard.svg import e


def pct(v: float | None, digits: int = 1) -> str:
    """A fraction as a percentage number (0.391 → "39.1"); "–" when missing."""
    return f"{v * 100:.{digits}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def pts(v: float | None) -> str:
    """A difference of fractions in signed points (0.031 → "+3.1")."""
    if not (isinstance(v, (int, float)) and math.isfinite(v)):
        return "–"
    s = f"{v * 100:+.1f}"
    return s.replace("-", "−")


def fmt_p(p: float | None) -> str:
    if not isinstance(p, (int, float)) or not math.isfinite(p):
        return ""
    return "p<0.001" if p < 0.001 else f"p={p:.3g}"


def ci_cell(x: dict | None, *, signed: bool = False) -> str:
    """``39.0`` over a muted ``[29.4, 48.6]`` line (and the p-value, for a difference)."""
    if not x:
        return "–"
    f = pts if signed else pct
    key = "delta" if signed else "mean"
    extra = []
    if x.get("lo") is not None:
        extra.append(f"[{f(x['lo'])}, {f(x['hi'])}]")
    if signed and x.get("p") is not None:
        extra.append(fmt_p(x["p"]))
    return f"{f(x.get(key))}" + (f"<small>{' '.join(extra)}</small>" if extra else "")


def shorten(text: str | None, n: int = 160) -> str:
    """``text`` cut to ``n`` characters, the last one an ellipsis when it was longer ("" for None)."""
    text = text or ""
    return text if len(text) <= n else text[: n - 1] + "…"


def date_ticks(ts: Sequence[float | None]) -> Any:
    """Tick formatter for a night-index axis labelled with dates (times when everything is within two days)."""
    valid = [t for t in ts if t is not None]
    fmt = "%H:%M" if valid and max(valid) - min(valid) < 2 * 86400 else "%m-%d"

    def f(v: float) -> str:
        i = int(round(v)) - 1
        return datetime.fromtimestamp(ts[i], UTC).strftime(fmt) if 0 <= i < len(ts) and ts[i] else ""

    return f, ("time of decision (UTC)" if fmt == "%H:%M" else "night (date of decision, UTC)")


def decision_badge(dec: dict) -> str:
    """The last decision's verdict as a badge: promoted (green), held for evidence with the documents it needs
    (amber: the evidence could not tell yet), rejected (red: measured, and not worth promoting). A passing
    decision put up for review (``promote: review``) is amber "awaiting review" while its review is pending, grey
    once it expired or was superseded (production never moved), green once approved."""
    verdict = dec.get("verdict") or ("promote" if dec.get("promoted") else "reject")
    review = dec.get("review")
    if verdict == "promote" and review and review["state"] == "pending":
        return (f'<span class="badge b-warn" title="review {review["id"]}, requested by {e(review["requested_by"])} '
                f'at {e(review["requested_at"])}; approve before {e(review["expires_at"])}">awaiting review: '
                f'{e(dec.get("arm") or "")}</span>')
    if verdict == "promote" and review and review["state"] != "approved":
        return (f'<span class="badge b-mut" title="{e(review["reason"] or "")}">passed {e(dec.get("arm") or "")}, '
                f'review {e(review["state"])}</span>')
    if verdict == "promote":
        return f'<span class="badge b-ok">promoted {e(dec.get("arm") or "")}</span>'
    if verdict == "hold":
        need = f": needs ~{dec['n_needed']:,} docs" if dec.get("n_needed") else ""
        return f'<span class="badge b-warn" title="held for evidence">held{need}</span>'
    return '<span class="badge b-bad">rejected</span>'


def review_text(r: dict) -> str:
    """One sentence (HTML) of a review's state for the adapter page: who asked, until when, how to approve; or who
    approved it, or why it expired or was superseded."""
    head = f'<b>Review {r["id"]}</b> of decision {r["decision_id"]} ({e(r["candidate"] or "")}): '
    if r["state"] == "pending":
        return (head + f'<span class="badge b-warn">awaiting review</span> requested by {e(r["requested_by"])} at '
                f'{e(r["requested_at"])}, open until {e(r["expires_at"])}; production has not moved. Approve with '
                f'<code>spectral-surgery approve {r["id"]} --reason "…"</code>.')
    if r["state"] == "approved":
        return (head + f'<span class="badge b-ok">approved</span> by {e(r["decided_by"] or "")} at '
                f'{e(r["decided_at"] or "")}: {e(r["reason"] or "")}')
    why = r["reason"] or (f'not approved by {r["expires_at"]} (marked at the next run)' if not r["marked"] else "")
    if r["state"] == "superseded":  # the reason says by what: a newer review, or a move of production
        return head + f'<span class="badge b-mut">superseded</span> {e(why)}; it can no longer be approved.'
    return head + f'<span class="badge b-mut">{e(r["state"])}</span> {e(why)}; production did not move.'


def status_badge(status: str | None) -> str:
    """A run's status as a coloured badge (completed green, failed red, deferred amber; "never run" for None)."""
    cls = {"completed": "b-ok", "failed": "b-bad", "running": "b-info", "pending": "b-mut",
           "deferred": "b-warn"}.get(status or "", "b-mut")
    return f'<span class="badge {cls}">{e(status or "never run")}</span>'


# ------------------------------------------------------------------------------------------------ fleet
