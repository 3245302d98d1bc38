"""The summary of a nightly run a person can read (issue 27 §3): one line per adapter, the reasons below it.

Each adapter gets one headline, ``✓ ops-math@2  PROMOTE smooth_abs +4.2 pts  38 s``: its name and version, the verdict
with the number that carries it (the promoted edit's gain, the documents a HOLD needs, the best gain a REJECT
measured, the error of a failure) and the seconds its refinement took. What production serves now and the gate's
reasons follow, indented and wrapped to the width (never a sentence in a table cell). A terminal gets its own width;
a pipe gets plain lines of at most :data:`PIPE_WIDTH` characters, so a cron log stays readable and greppable.

:func:`summary_rows` reads the registry once into typed :class:`SummaryRow` records; :func:`render` is pure.
``run`` and ``demo`` both word what production serves with :func:`served_now`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a summary is built: the command line starts without the statistics stack
    from spectral_surgery.tasks.decision.record import DecisionRecord

PIPE_WIDTH = 100  # a pipe (cron log, `| less`): plain lines this long at most
MIN_WIDTH = 40  # the narrowest terminal the summary wraps for
INDENT = "    "
MARK = {"completed": "✓", "failed": "✗", "skipped": "·", "deferred": "…"}
STYLE = {"promote": "green", "hold": "yellow", "reject": "red", "failed": "red"}


@dataclass(frozen=True)
class SummaryRow:
    """One adapter of a run's summary, as shown.

    Attributes:
        adapter: The adapter's name.
        version: ``@N``, its N-th version ("" when unknown: a failure at the scan).
        status: ``completed``, ``failed``, ``skipped`` or ``deferred`` (did not fit the night's window).
        verdict: ``PROMOTE smooth_abs``, ``HOLD``, ``REJECT``, ``FAILED``, ``SKIPPED``, ``DEFERRED``, ``DONE``
            (already done).
        key: The number that carries the verdict (``+4.2 pts``, ``needs ~480 docs``, ``AdapterError``), or "".
        seconds: Wall seconds of its refinement in this run, or None.
        kind: ``promote``, ``hold``, ``reject``, ``failed`` or "" (its colour on a terminal).
        details: Indented lines under the headline: ``served now: ...`` and the reasons, one per clause.
    """

    adapter: str
    version: str
    status: str
    verdict: str
    key: str = ""
    seconds: float | None = None
    kind: str = ""
    details: tuple[str, ...] = field(default_factory=tuple)


def fmt_seconds(s: float | None) -> str:
    """``38 s``, ``4 min 05 s``, ``1 h 02 min``; "" for None."""
    if s is None:
        return ""
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def key_number(verdict: str, rec: DecisionRecord) -> str:
    """The number behind a verdict: the promoted edit's gain, a HOLD's documents needed, a REJECT's best gain."""
    from spectral_surgery.tasks.decision.gate import fmt_gain

    if verdict == "hold":
        n = rec.n_needed
        return f"needs ~{n:,} docs" if n else ""
    base = rec.baseline_task_mean
    sign = 1.0 if rec.higher_is_better else -1.0
    verdicts = [v for v in rec.verdicts if v.task_mean is not None]
    if base is None or not verdicts or rec.metric != "task":
        return ""
    if verdict == "promote":
        chosen = [v for v in verdicts if v.name == rec.promoted]
    else:  # the best gain any edit (not a control) measured
        chosen = sorted((v for v in verdicts if v.p_adjusted is not None), key=lambda v: -sign * (v.task_mean - base))
    if not chosen:
        return ""
    best = chosen[0]
    gain = fmt_gain(sign * (best.task_mean - base))
    return gain if verdict == "promote" else f"best {best.name} {gain}"


def reasons(sentence: str | None) -> list[str]:
    """The gate's sentence as one reason per clause (it separates them with `` | ``)."""
    return [part.strip() for part in (sentence or "").split(" | ") if part.strip()]


def served_now(result: dict) -> str | None:
    """What production serves after the run, in words: the line under an adapter's headline in the summaries of
    ``run`` and ``demo`` (:func:`summary_rows`' ``served``).

    Args:
        result: One adapter's result in what :func:`flows.refine_fleet.run_nightly` returned.

    Returns:
        ``smooth_abs (promoted by this run)``, ``unchanged (awaiting review N of ... until ...)``, ``unchanged
        (review N rejected)``, ``smooth_abs (not moved: dry run)`` or ``unchanged``; None when there is nothing to
        say (a failure, or a version an earlier run already did).
    """
    if result.get("status") != "completed" or result.get("reused"):
        return None
    if result.get("promoted"):
        return f"{result['promoted']} (promoted by this run)"
    review = result.get("review")
    if review and review["state"] == "pending":
        return f"unchanged (awaiting review {review['id']} of {review['candidate']} until {review['expires_at']})"
    if review:
        return f"unchanged (review {review['id']} {review['state']})"
    from spectral_surgery.tasks.decision.record import DecisionRecord

    promoted = DecisionRecord.from_json(result.get("statistics")).promoted  # the result's statistics, as recorded
    return f"{promoted} (not moved: dry run)" if promoted else "unchanged"


def row_of(result: dict, version: str, seconds: float | None, served: str | None) -> SummaryRow:
    """A :class:`SummaryRow` from one adapter's result of :func:`flows.refine_fleet.nightly_refinement`."""
    name, status = result["adapter"], result.get("status", "completed")
    if status == "failed":
        error = result.get("error") or "failed"
        kind_name, _, text = error.partition(": ")
        return SummaryRow(name, version, status, "FAILED", kind_name if text else "", seconds, "failed",
                          tuple(reasons(text or error)))
    if status == "skipped":
        return SummaryRow(name, version, status, "SKIPPED", "", seconds, "", tuple(reasons(result.get("reason"))))
    if status == "deferred":  # the night's window: first in line next night
        return SummaryRow(name, version, status, "DEFERRED", "next night", seconds, "hold",
                          tuple(reasons(result.get("reason"))))
    if result.get("reused"):
        return SummaryRow(name, version, status, "DONE", "already refined under this configuration", seconds)
    from spectral_surgery.tasks.decision.record import DecisionRecord

    stats = DecisionRecord.from_json(result.get("statistics"))  # the result's statistics, as recorded
    verdict = result.get("verdict") or stats.verdict
    label = verdict.upper()
    if verdict == "promote" and stats.promoted:
        label += f" {stats.promoted}"
        review = result.get("review")
        if review:
            label += " awaiting review" if review["state"] == "pending" else f" (review {review['state']})"
    details = ([f"served now: {served}"] if served else []) + reasons(result.get("sentence"))
    return SummaryRow(name, version, status, label, key_number(verdict, stats), seconds, verdict, tuple(details))


def render(rows: list[SummaryRow], width: int, *, color: bool = False) -> list[str]:
    """The summary's lines (rich markup when ``color``), none wider than ``width`` unless one word is.

    Args:
        rows: One per adapter, in the run's order.
        width: Columns of the terminal, or :data:`PIPE_WIDTH` in a pipe.
        color: Mark the verdicts up for a terminal (escaped text otherwise never holds markup).

    Returns:
        Lines without trailing newlines.
    """
    from rich.markup import escape

    width = max(MIN_WIDTH, width)
    named = max((len(r.adapter) + len(r.version) for r in rows), default=0)
    out: list[str] = []
    for r in rows:
        who = f"{r.adapter}{r.version}".ljust(min(named, 28))
        parts = [p for p in (r.verdict, r.key, fmt_seconds(r.seconds)) if p]
        head = f"{MARK.get(r.status, '·')} {who}  " + "  ".join(parts)
        lines = textwrap.wrap(head, width, subsequent_indent=INDENT, break_long_words=False, break_on_hyphens=False)
        if color:
            lines = [escape(line) for line in lines]
            if r.kind in STYLE:
                lines[0] = lines[0].replace(escape(r.verdict), f"[{STYLE[r.kind]}]{escape(r.verdict)}[/]", 1)
        out.extend(lines)
        for detail in r.details:
            wrapped = textwrap.wrap(detail, width, initial_indent=INDENT, subsequent_indent=INDENT + "  ",
                                    break_long_words=False, break_on_hyphens=False)
            out.extend(escape(line) if color else line for line in wrapped)
    return out


def width_of(console) -> int:
    """The summary's width: the terminal's, or :data:`PIPE_WIDTH` in a pipe (rich's console there is unlimited)."""
    return console.width if console.is_terminal else min(console.width, PIPE_WIDTH)


def note_lines(text: str, width: int) -> list[str]:
    """A ``note:`` under the summary, wrapped like the reasons."""
    return textwrap.wrap(f"note: {text}", max(MIN_WIDTH, width), subsequent_indent=INDENT, break_long_words=False,
                         break_on_hyphens=False)


def summary_rows(reg, summary: dict, served=None) -> list[SummaryRow]:
    """The run's :class:`SummaryRow` records: each result with its version (``@N``) and seconds from the registry.

    Args:
        reg: The registry the run wrote.
        summary: What :func:`flows.refine_fleet.run_nightly` returned.
        served: ``result -> str | None``, what production serves now (:func:`served_now`, the command line's
            wording), or None.
    """
    runs = {}
    for arun in reg.adapter_runs(summary["run_id"]):
        version = reg.get_version(arun.adapter_version_id)
        runs[version.adapter.name] = (arun, version)
    rows = []
    for r in summary["results"]:
        arun, version = runs.get(r["adapter"], (None, None))
        label, seconds = "", None
        if version is not None:
            ids = [v.id for v in reversed(reg.list_versions(r["adapter"]))]  # oldest first: @1 is the first seen
            label = f"@{ids.index(version.id) + 1}" if version.id in ids else f" v{version.id}"
        if arun is not None and arun.started_at and arun.ended_at and not r.get("reused"):
            seconds = (arun.ended_at - arun.started_at).total_seconds()
        rows.append(row_of(r, label, seconds, served(r) if served else None))
    return rows


def nothing_to_do(reg) -> str:
    """Why a run refined nothing: an empty registry (and how to register), nothing enabled, or all done."""
    adapters = reg.list_adapters()
    if not adapters:
        return ("Nothing to refine: the registry is empty. Register an adapter first: spectral-surgery register NAME "
                "--source DIR_OR_HF_URI --base MODEL --family FAMILY (or many with register --from FILE).")
    if not any(a.enabled for a in adapters):
        return (f"Nothing to refine: none of the {len(adapters)} registered adapter(s) is enabled "
                "(spectral-surgery register NAME --enabled re-enables one).")
    return "Nothing to refine: every enabled adapter's latest version is done under this configuration."
