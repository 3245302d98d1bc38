"""``spectral-surgery why ADAPTER``: what happened to one adapter, why, and what to do next.

One screen from :func:`registry.read.adapter_story` (one read transaction): the adapter's versions with their
per-adapter numbers (``ops-math@3`` beside the global id ``v22``), its last refinement (and the failure, whole),
its latest decision (the verdict with its key number, each candidate's gain, interval and reason, wrapped under the
table, never inside a cell), what production serves and why, pending reviews, and the next step:
"needs ~N documents", "retrained version held: production still serves an edit of @2", "fix the source", ...
``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

from typing import Any

from spectral_surgery.flows.cli.common import console, emit, guarded, open_registry, table
from spectral_surgery.tasks.decision.record import DecisionRecord, PairedTestRecord


def _pts(x: float | None) -> str:
    if x is None:
        return "–"
    v = round(x * 100, 1)
    return f"{'−' if v < 0 else '+'}{abs(v):.1f}"


def _interval(test: PairedTestRecord | None) -> str:
    if not test:
        return "–"
    return f"{_pts(test.delta)} [{_pts(test.ci_low)}, {_pts(test.ci_high)}]"


def _error_line(run: dict[str, Any]) -> str:
    """The exception and its message from a stored traceback (its last line)."""
    from spectral_surgery.registry.validation import error_summary

    return error_summary(run["error_message"]) or run["error_type"] or "unknown error"


def production_line(story) -> str:
    """What production serves and where it came from, in words."""
    p = story.production
    if p is None or p.adapter_version_id is None:
        return "nothing yet (no version has been scanned)"
    what = "the unedited adapter" if p.candidate_id is None else f"{p.policy} (candidate #{p.candidate_id})"
    label = story.label(p.adapter_version_id)
    if p.implicit:
        return f"{what} of {label}: never promoted, the latest unedited version serves by default"
    how = f"promoted by decision #{p.decision_id}" if p.decision_id is not None else "moved by hand"
    return f"{what} of {label}, {how}" + (f" on {p.promoted_at[:16].replace('T', ' ')} UTC" if p.promoted_at else "")


def next_steps(story) -> list[str]:
    """The next things a person would do for this adapter, most pressing first (plain sentences)."""
    steps: list[str] = []
    if not story.enabled:
        steps.append(f"It is disabled: `spectral-surgery register {story.adapter} ... --enabled` puts it back in the "
                     "nightly run.")
    if story.fetch_error:
        steps.append(f"Fix its source: the last fetch failed ({story.fetch_error.splitlines()[0]}); "
                     f"`spectral-surgery check {story.adapter}` re-reads it.")
    if not story.versions:
        steps.append("No version yet: the next `spectral-surgery run` scans and refines it.")
        return steps
    latest = story.versions[-1]
    run, decision = story.last_run, story.decision
    if run is not None and run["status"] == "failed" and run["version_id"] == latest.id:
        steps.append(f"Its last refinement failed ({_error_line(run)}); fix that, then `spectral-surgery run` "
                     "retries it.")
    deferred = run is not None and run["status"] == "deferred" and run["version_id"] == latest.id
    if deferred:
        steps.append(f"Run #{run['run_id']} deferred {latest.label(story.adapter)}: it did not fit the night's window "
                     f"({run['plan_reason']}). The next run puts it first in line; a longer window.wall_clock, or "
                     "`spectral-surgery run` without --window, refines it sooner.")
    if decision is None or decision["version_id"] != latest.id:
        if not (run is not None and run["status"] in ("failed", "deferred") and run["version_id"] == latest.id):
            steps.append(f"{latest.label(story.adapter)} has no decision yet: the next `spectral-surgery run` "
                         "refines it.")
    else:
        stats = DecisionRecord.from_json(decision["statistics"], decision["promoted"])
        if decision["verdict"] == "hold":
            need = stats.n_needed
            steps.append(f"The evidence cannot tell yet: it needs ~{need:,} documents per arm; raise `task_limit` "
                         "(or `task_limits`) in the run config to that, or turn on sequential looks."
                         if need else "The evidence cannot tell yet: evaluate more documents.")
        elif decision["verdict"] == "reject" and stats.flags:
            steps.append("A canary failed, so nothing of this version can be promoted: " + stats.flags[0])
    for r in story.pending_reviews:
        steps.append(f"Review {r['id']} waits for approval until {str(r['expires_at'])[:16].replace('T', ' ')} UTC: "
                     f"`spectral-surgery approve {r['id']} --reason ...`.")
    p = story.production
    if p is not None and p.adapter_version_id is not None and p.adapter_version_id != latest.id:
        served = story.version(p.adapter_version_id)
        why = {"hold": "held", "reject": "rejected"}.get(decision["verdict"], "not decided") \
            if decision is not None and decision["version_id"] == latest.id else "not decided yet"
        steps.append(f"Retrained version {latest.label(story.adapter)} {why}: production still serves "
                     f"{'an edit' if p.candidate_id is not None else 'the unedited adapter'} of "
                     f"@{served.number if served else '?'}.")
    return steps or ["Nothing to do: production serves the latest decision."]


def story_dict(story) -> dict[str, Any]:
    """The JSON form of ``why``."""
    from dataclasses import asdict

    out = asdict(story)
    out["versions"] = [{"id": v.id, "number": v.number, "label": v.label(story.adapter), "sha256": v.sha256,
                        "first_seen_at": v.first_seen_at.isoformat()} for v in story.versions]
    out["production_line"] = production_line(story)
    out["next_steps"] = next_steps(story)
    return out


@guarded
def cmd_why(args) -> int:
    from spectral_surgery.registry.read import adapter_story
    from spectral_surgery.registry.validation import NotFoundError

    reg = open_registry(args)
    try:
        story = adapter_story(reg, args.adapter)
    finally:
        reg.close()
    if story is None:
        raise NotFoundError(f"no adapter named {args.adapter!r}; `spectral-surgery list` shows the registered ones")

    def render() -> None:
        out = console()
        bench = f", benchmark {story.benchmark_override}" if story.benchmark_override else ""
        out.print(f"[bold]{story.adapter}[/] (family {story.family}{bench}"
                  f"{'' if story.enabled else ', disabled'}): {len(story.versions)} version(s)"
                  + (f", latest {story.versions[-1].label(story.adapter)} "
                     f"sha {story.versions[-1].sha256[:12]}" if story.versions else ""))
        run = story.last_run
        if run is not None:
            out.print(f"Last refinement: run #{run['run_id']} on {story.label(run['version_id'])}, {run['status']}"
                      + (f" at {run['at'][:16].replace('T', ' ')} UTC" if run["at"] else ""))
            if run["status"] == "failed":
                out.print(f"  {_error_line(run)}", highlight=False)
            elif run["status"] == "deferred":
                out.print(f"  deferred to the next night: {run['plan_reason']}", highlight=False)
        d = story.decision
        if d is not None:
            from spectral_surgery.tasks.decision.gate import verdict_label

            stats = DecisionRecord.from_json(d["statistics"], d["promoted"])
            label = verdict_label(d["verdict"], stats.n_needed, stats.promoted)
            out.print(f"Latest decision #{d['id']} on {story.label(d['version_id'])}: [bold]{label.upper()}[/]")
            out.print(f"  {d['sentence']}", highlight=False)
            verdicts = stats.verdicts  # a candidate recorded without a verdict reads as promote if it passed
            if verdicts:
                out.print(table("Candidates", ["candidate", "task", "Δ vs unedited [95% CI]", "Δ IFEval", "verdict"],
                                [[v.name, "–" if v.task_mean is None else f"{v.task_mean * 100:.1f}",
                                  _interval(v.vs_baseline), _pts(v.guard_delta),
                                  verdict_label(v.verdict, v.n_needed)] for v in verdicts],
                                narrow=("candidate", "task")))
                for v in verdicts:
                    if v.reason:
                        out.print(f"  {v.name}: {v.reason}", highlight=False)
        out.print(f"Production: {production_line(story)}", highlight=False)
        out.print("Next:")
        for step in next_steps(story):
            out.print(f"  - {step}", highlight=False)

    return emit(args, story_dict(story), render)
