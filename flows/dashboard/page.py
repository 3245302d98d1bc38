"""The audit dashboard: one self-contained HTML page of the fleet's evidence, read from the registry.

* :func:`render_dashboard` writes the page to a file (no network needed to view it: inline SVG, inline CSS/JS).
* :func:`flows.dashboard.server.serve_dashboard` serves it on localhost and reloads it when the registry changes.
* :func:`adapter_markdown` summarises one adapter as Markdown (its history, production and latest decision; the
  nightly flow's own artifacts come from the decision alone, :mod:`tasks.decision.report`).

Layers: :mod:`flows.dashboard.data` (read-only queries → plain dicts), :mod:`tasks.surgery.diagnostics`
(Fig. 1 from adapter files, cached), :mod:`flows.dashboard.html` / :mod:`flows.dashboard.adapter_html`
(rendering) on :mod:`flows.dashboard.svg` (chart primitives).

Example::

    from spectral_surgery.registry.repository import Registry
    from spectral_surgery.flows.dashboard import render_dashboard
    render_dashboard(Registry.open(), Path("dashboard.html"))
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from spectral_surgery.flows.dashboard.data import DETAIL_RUNS, HISTORY, collect
from spectral_surgery.registry.read import registry_fingerprint
from spectral_surgery.flows.dashboard.fmt import fmt_p, pct, pts
from spectral_surgery.flows.dashboard.html import render_html

__all__ = ["adapter_data", "adapter_markdown", "evidence_markdown", "build_page", "pick_alignment_adapter",
           "render_dashboard"]


def pick_alignment_adapter(data: dict, requested: str | None = None) -> dict | None:
    """The adapter whose subspace alignment is shown: ``requested`` if given, else the adapter with the most
    recent decision whose latest version's files are on this machine (else any such adapter)."""
    adapters = data["adapters"]
    if requested is not None:
        return next((a for a in adapters if a["name"] == requested), None)
    with_files = [a for a in adapters if a["latest_version"] and a["latest_version"]["local_path"]
                  and os.path.isdir(a["latest_version"]["local_path"])]
    if not with_files:
        return None
    return max(with_files, key=lambda a: (a["trend"][-1]["t"] if a["trend"] else 0.0, a["name"]))


def alignment_for(registry, adapter: dict | None, *, cache_dir: Path | None = None) -> dict | None:
    """Fig. 1 data of ``adapter``'s latest version, or ``{"adapter", "error"}`` saying why it is unavailable."""
    if adapter is None:
        return None
    from spectral_surgery.tasks.surgery.diagnostics import subspace_alignment

    lv = adapter["latest_version"]
    if lv is None or not lv["local_path"]:
        return {"adapter": adapter["name"], "error": "no adapter version with a local path is recorded"}
    if not os.path.isdir(lv["local_path"]):
        return {"adapter": adapter["name"], "error": f"adapter files not found at {lv['local_path']}"}
    version = registry.get_version(lv["id"])
    try:
        result = subspace_alignment(lv["local_path"], version.content_sha256, cache_dir=cache_dir)
    except Exception as exc:  # a bad adapter must not take the whole dashboard down; say why instead
        return {"adapter": adapter["name"], "error": f"{type(exc).__name__}: {exc}"}
    return {**result, "adapter": adapter["name"], "version_sha": lv["sha"]}


def build_page(registry, *, alignment_adapter: str | None = None, live: bool = False, interval_s: float = 5.0,
               history: int = HISTORY, detail_runs: int = DETAIL_RUNS, cache_dir: Path | None = None,
               now: datetime | None = None) -> tuple[str, dict[str, Any], str]:
    """Collect and render: returns ``(html, data, fingerprint)`` (the fingerprint taken before the snapshot, so a
    write during rendering makes the next poll re-render rather than being missed)."""
    version = registry_fingerprint(registry)
    with _collector_paused():
        data = collect(registry, history=history, detail_runs=detail_runs, now=now)
        data["alignment"] = alignment_for(registry, pick_alignment_adapter(data, alignment_adapter),
                                          cache_dir=cache_dir)
        choices = [a["name"] for a in data["adapters"] if a["latest_version"]] if live else None
        html = render_html(data, live=live, version=version, interval_s=interval_s, alignment_choices=choices)
    return html, data, version


@contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while a page is built, and on again after (if it was on).

    A 1,000-adapter page builds millions of small dicts and lists that live until the page is written and form
    no cycles; the collector would rescan them every few thousand allocations (it took a third of the time).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def render_dashboard(registry, out_path: Path, *, alignment_adapter: str | None = None, history: int = HISTORY,
                     detail_runs: int = DETAIL_RUNS) -> Path:
    """Write the dashboard of ``registry`` as ONE self-contained HTML file.

    Args:
        registry: A ``registry.repository.Registry`` (read only).
        out_path: The HTML file to write (parent directories are created; written atomically).
        alignment_adapter: Adapter whose subspace alignment (Fig. 1) is computed; default: the most recently
            decided adapter whose files are on this machine. Results are cached in ``<out dir>/.dashboard-cache``.
        history: Decisions per adapter in trends and diagnostics.
        detail_runs: Decisions per adapter itemised candidate by candidate.

    Returns:
        ``out_path``.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    html, _, _ = build_page(registry, alignment_adapter=alignment_adapter, history=history, detail_runs=detail_runs,
                            cache_dir=out_path.parent / ".dashboard-cache")
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out_path)  # a browser reloading the file never sees half a page
    return out_path


def adapter_data(registry, name: str, *, history: int = HISTORY, detail_runs: int = DETAIL_RUNS) -> dict:
    """One adapter's view (an entry of ``collect()["adapters"]``), for :func:`adapter_markdown`.

    Raises:
        registry.validation.NotFoundError: no adapter called ``name`` (with close names).
    """
    registry.get_adapter(name)  # raises with "did you mean" on an unknown name
    return collect(registry, history=history, detail_runs=detail_runs, only=name)["adapters"][0]


def adapter_markdown(data: dict) -> str:
    """One adapter's audit summary in Markdown (for ``prefect.artifacts.create_markdown_artifact``).

    Args:
        data: One adapter's view: :func:`adapter_data`, or an entry of ``collect()["adapters"]``.
    """
    a = data
    prod = a["production"]
    lines = [f"### {a['name']} ({a['family']})", ""]
    if prod is None:
        lines.append("- **Production:** no version recorded")
    else:
        since = " (implicit: nothing promoted yet)" if prod["implicit"] else f" since {prod['since']}"
        score = "" if prod["value"] is None else f" · task {pct(prod['value'])}%"
        lines.append(f"- **Production:** {prod['label']}{since}{score}")
    run = a["last_run"]
    if run:
        err = f" — `{run['error_type']}`: {run['error']}" if run["status"] == "failed" else ""
        lines.append(f"- **Last run:** #{run['run_id']} {run['status']} ({run['ended'] or run['started']}){err}")
    if a["last_decision"]:
        dec = a["last_decision"]
        lines.append(f"- **Last decision:** **{dec.get('label') or ''}** — {dec['sentence']}")
    if a["nights"]:
        n = a["nights"][0]
        metric = f"{n['benchmark']} {n['metric']}" if n["benchmark"] else "task"
        lines += ["", f"**Latest decision** ({n['at']}, version `{n['version_sha']}`; {metric} and IFEval in %, "
                      "differences in points with 95% CI)", "",
                  "| subject | task | IFEval | Δ vs unedited | Δ vs random control | Δ IFEval | decision |",
                  "|---|---:|---:|---:|---:|---:|---|"]
        for r in n["rows"]:
            lines.append("| " + " | ".join([
                "unedited" if r["role"] == "baseline" else r["arm"], _md_ci(r["task"]), _md_ci(r["guard"]),
                _md_ci(r["vs_baseline"], True), _md_ci(r["vs_control"], True), _md_ci(r["guard_delta"], True),
                _md_verdict(r)]) + " |")
    if a["events"]:
        lines += ["", "**History** (newest first)", ""]
        lines += [f"- {v['at']} · {v['kind'].replace('_', ' ')} by {v['actor']}: {v['from']} → **{v['to']}**"
                  for v in a["events"][:10]]
    if a["failures"]:
        lines += ["", f"**Failures** ({a['n_failures']})", ""]
        lines += [f"- run #{f['run_id']} ({f['at']}): `{f['error_type']}` {f['summary']}" for f in a["failures"][:5]]
    return "\n".join(lines) + "\n"


CANARY_ARMS = ("zero_rebuild", "zero_rebuild_one_sided", "bare_base")  # controls that are canaries, not random


def evidence_markdown(data: dict) -> str:
    """The evidence table (the paper's Table 2 in kind) of every adapter's latest decision, in Markdown.

    One row per adapter and candidate (controls included), as the dashboard's Evidence section: the task score, the
    gain over the unedited adapter, over the best random control and over the calibrated global scalar (points, 95%
    interval, one-sided p), the IFEval change and the verdict.

    Args:
        data: :func:`flows.dashboard.data.collect` of the registry.
    """
    lines = ["| adapter | candidate | task (%) | Δ vs unedited (pts) | Δ vs best random (pts) | Δ vs global scalar "
             "(pts) | Δ IFEval (pts) | verdict |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for a in data["adapters"]:
        if not a.get("nights"):
            continue
        for r in a["nights"][0]["rows"]:
            lines.append("| " + " | ".join([
                a["name"], "unedited" if r["role"] == "baseline" else r["arm"], _md_ci(r["task"]),
                _md_ci(r["vs_baseline"], True), _md_ci(r["vs_control"], True), _md_ci(r.get("vs_scalar"), True),
                _md_ci(r["guard_delta"], True), _md_verdict(r)]) + " |")
    return "\n".join(lines) + "\n"


def evidence_rows(data: dict) -> list[dict]:
    """The evidence table's rows as plain values (``dashboard --evidence --json``), one per adapter and arm of each
    adapter's latest decision: ``task`` ``{mean, lo, hi}`` (fractions), the paired differences ``vs_baseline``,
    ``vs_control``, ``vs_scalar`` and ``guard_delta`` ``{delta, lo, hi, p, n}`` (fractions; None where not scored),
    and ``verdict`` in the Markdown table's words."""
    rows = []
    for a in data["adapters"]:
        if not a.get("nights"):
            continue
        for r in a["nights"][0]["rows"]:
            rows.append({"adapter": a["name"], "candidate": "unedited" if r["role"] == "baseline" else r["arm"],
                         "role": r["role"], "task": r["task"], "vs_baseline": r["vs_baseline"],
                         "vs_control": r["vs_control"], "vs_scalar": r.get("vs_scalar"),
                         "guard_delta": r["guard_delta"], "verdict": _md_verdict(r).strip("*")})
    return rows


def _md_ci(x: dict | None, signed: bool = False) -> str:
    if not x:
        return "–"
    if signed:
        ci = f" [{pts(x['lo'])}, {pts(x['hi'])}]" if x.get("lo") is not None else ""
        return f"{pts(x['delta'])}{ci} {fmt_p(x.get('p'))}".strip()
    ci = f" [{pct(x['lo'])}, {pct(x['hi'])}]" if x.get("lo") is not None else ""
    return f"{pct(x['mean'])}{ci}"


def _md_verdict(r: dict) -> str:
    if r["role"] == "baseline":
        return "reference"
    if r["role"] == "control":
        if r.get("policy") in CANARY_ARMS:
            return "canary"
        return "random control" + (" (best)" if r["best_control"] else "")
    if r["promoted"]:
        return "**promoted**"
    if r["passed"]:
        return "passed"
    if r.get("verdict") == "hold":
        return f"held: needs ~{r['n_needed']} docs" if r.get("n_needed") else "held for evidence"
    return "rejected"
