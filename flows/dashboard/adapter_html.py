"""One adapter's section of the audit dashboard: trend, latest deltas, itemised runs, spectra, sensitivities,
promotion history and failures (from one entry of ``collect()["adapters"]``)."""

from __future__ import annotations

import base64
import gzip
import math

import numpy as np

from spectral_surgery.flows.dashboard.charts_js import chart_json, heatmap_spec, matrix, multiples_spec
from spectral_surgery.flows.dashboard.fmt import (
    date_ticks,
    decision_badge,
    fmt_p,
    pct,
    pts,
    review_text,
    shorten,
    status_badge,
)
from spectral_surgery.flows.dashboard.svg import color_for, e

MAX_MULTIPLES = 16  # σ small multiples drawn per adapter (the heatmap shows every module)


def _metric_label(a: dict) -> str:
    m = a.get("metric")
    return f"{m['benchmark']} {m['metric']} (%)" if m and m.get("benchmark") else "task metric (%)"


def _trend(a: dict) -> str:
    t = a["trend"]
    if not t:
        return '<p class="muted">No decision yet.</p>'
    return ('<p class="guide">Reading guide: the green step line is what production scored after each night (it '
            'moves only on a promotion, override or rollback); grey is the unedited adapter of that night, blue the '
            'best edited candidate, light grey the random control. Triangles mark promotions.</p>'
            + chart_json("line", trend_spec(a)))


def trend_spec(a: dict) -> dict:
    """The JSON of the trend chart (:func:`flows.dashboard.svg.line_chart`'s arguments, in points; drawn by
    ``SSCharts.line``): one x per decision, oldest first, tick labels as dates."""
    t = a["trend"]
    xs = [float(i + 1) for i in range(len(t))]
    xfmt, xlab = date_ticks([p["t"] for p in t])
    ticks = _thin(xs, 8)
    few = len(t) <= 3  # lines of one or two points need their dots to be visible at all

    def series(key: str) -> list[list]:
        return [[x, _rate_pts(p[key])] for x, p in zip(xs, t)]

    titles = [f"{p['at']} · version {p['version_sha']} · production {p['production_label']}" for p in t]
    markers = [{"x": x, "y": _rate_pts(p["promoted_value"]), "color": "#009E73", "legend": "promotion",
                "title": f"{p['at']}: promoted {p['promoted_arm']} ({pct(p['promoted_value'])}%)"}
               for x, p in zip(xs, t) if p["promoted_arm"] and p["promoted_value"] is not None]
    return {"series": [
        {"name": "production (served after the night)", "points": series("production"), "color": "#009E73",
         "step": True, "dots": True, "titles": titles},
        {"name": "unedited (baseline)", "points": series("baseline"), "color": "#4B5563", "dots": few},
        {"name": "best guided candidate", "points": series("best"), "color": "#0072B2", "dash": True, "dots": few},
        {"name": "random control", "points": series("control"), "color": "#9CA3AF", "dash": True, "dots": few}],
        "x_label": xlab, "y_label": _metric_label(a), "xticks": ticks, "xlabels": [xfmt(x) for x in ticks],
        "markers": markers, "width": 620, "height": 280, "label": f"{a['name']}: task metric across nights"}


def _rate_pts(v: float | None) -> float | None:
    """A fraction in points to 3 decimals (None stays None: a gap in the line)."""
    return None if v is None else round(v * 100, 3)


def _compact(x: dict | None) -> dict | None:
    """A score ``{mean, lo, hi}`` or paired difference ``{delta, lo, hi, p, n}`` as the runs table shows it: values to
    5 decimals, 1/100 of the 0.1 points the table prints, and the p-value to 3 significant digits (what ``fmt_p``
    prints). Full floats were most of a page's bytes: their random last digits do not compress."""
    if not x:
        return None
    out = {k: round(v, 5) if type(v) is float else v for k, v in x.items() if v is not None and k != "p"}
    if type(x.get("p")) is float:
        out["p"] = float(f"{x['p']:.3g}")
    return out


def _thin(xs: list[float], n: int) -> list[float]:
    step = max(1, math.ceil(len(xs) / n))
    return xs[::step]


def forest_spec(a: dict, night: dict) -> dict | None:
    """The JSON of the latest decision's forest plot (:func:`flows.dashboard.svg.forest`'s arguments, in points;
    drawn by ``SSCharts.forest``); None when no candidate has a paired difference."""
    cands = [r for r in night["rows"] if r["role"] == "candidate"]
    tol = night["gate"].get("guard_tolerance")

    def val(x: dict | None, r: dict, what: str) -> list | None:
        if not x or x.get("delta") is None:
            return None
        color = "#009E73" if r["promoted"] else (color_for(r["policy"]) if r["passed"] else "#9CA3AF")
        tip = f"{r['arm']} {what}: {pts(x['delta'])} pts [{pts(x['lo'])}, {pts(x['hi'])}] {fmt_p(x.get('p'))}"
        lo = round(x["lo"] * 100, 3) if x.get("lo") is not None else None
        hi = round(x["hi"] * 100, 3) if x.get("hi") is not None else None
        return [round(x["delta"] * 100, 3), lo, hi, color, tip]

    panels = [
        {"title": "task: candidate − unedited", "x_label": "Δ task (pts)",
         "values": [val(r["vs_baseline"], r, "vs unedited") for r in cands]},
        {"title": "task: candidate − random control", "x_label": "Δ task (pts)",
         "values": [val(r["vs_control"], r, f"vs {r['control']}") for r in cands]},
        {"title": "IFEval: candidate − unedited", "x_label": "Δ IFEval (pts)",
         "values": [val(r["guard_delta"], r, "IFEval") for r in cands],
         "band": [-tol * 100, 0.0] if tol else None},
    ]
    panels = [p for p in panels if any(v is not None for v in p["values"])]
    if not cands or not panels:
        return None
    return {"panels": panels, "rows": [r["arm"] + (" ★" if r["promoted"] else "") for r in cands], "width": 900,
            "label": f"{a['name']}: latest decision's paired deltas"}


def _forest(a: dict, night: dict) -> str:
    spec = forest_spec(a, night)
    if spec is None:
        return ""
    return ('<p class="guide">Reading guide: dots are paired differences with 95% intervals. A candidate is promoted '
            'when its interval-backed gain is significant against BOTH the unedited adapter and the random control '
            'and its IFEval change stays inside the shaded tolerance band. Green = promoted (★), coloured = passed, '
            'grey = not promoted (the Decision column says which: held for evidence, or rejected).</p>'
            + chart_json("forest", spec))


_SCORES = ("task", "guard", "vs_baseline", "vs_control", "guard_delta")
_FIELDS = ("arm", "role", "promoted", "passed", "verdict", "n_needed", "reason", "failed", "best_control", "pairing")


def _run_row(r: dict) -> dict:
    """One subject of the runs table: its scores (:func:`_compact`) and verdict fields, empty ones left out."""
    out = {k: r[k] for k in _FIELDS if r.get(k) not in (None, False, [], "")}
    out.update({k: _compact(r[k]) for k in _SCORES if r.get(k)})
    out["color"] = color_for(r["policy"])
    return out


def runs_spec(a: dict) -> dict:
    """The JSON of the itemised runs table (``SSViews.runs`` in :mod:`flows.dashboard.views_js` draws it): per
    decision its header and every subject's scores and verdict, as :func:`flows.dashboard.data.collect` holds them."""
    return {"nights": [{
        "at": n["at"], "run_id": n["run_id"], "version_sha": n["version_sha"], "config_hash": n["config_hash"],
        "bench": f"{n['benchmark']} · guard {n['guard_benchmark']}" if n["benchmark"] else "",
        "promoted": n["promoted"], "sentence": n["sentence"], "metric": n.get("decision_metric", "task"),
        "rows": [_run_row(r) for r in n["rows"]]}
        for n in a["nights"]]}


def _runs_table(a: dict) -> str:
    return chart_json("runs", runs_spec(a)) if a["nights"] else ""


def _nice_log2(x: float) -> float:
    return next((v for v in (0.1, 0.25, 0.5, 1.0, 2.0, 4.0) if x <= v), 8.0)


def _spectrum(a: dict) -> str:
    sp = a["spectrum"]
    if not sp:
        return ""
    panels, biggest = [], 0.0
    n_cols = max((len(r) for c in sp["candidates"] for r in (*c["before"], *c["after"])), default=0)
    for c in sp["candidates"]:
        before, after = matrix(c["before"], n_cols), matrix(c["after"], n_cols)
        with np.errstate(divide="ignore", invalid="ignore"):  # σ≈0 and missing values are grey cells
            ratio = np.where((before > 1e-12) & (after > 0), np.log2(after / before), np.nan)
        if np.isfinite(ratio).any():
            biggest = max(biggest, float(np.nanmax(np.abs(ratio))))
        panels.append((c["arm"], ratio))
    lim = _nice_log2(biggest or 0.1)
    heat = chart_json("heatmap", heatmap_spec(
        panels, sp["modules"], col_label="component k (σ descending)", vmin=-lim, vmax=lim, cmap="diverging",
        cbar_label="σ'/σ", cbar_ratio=True, label=f"{a['name']}: σ'/σ per module and component"))
    focus = next((c for c in sp["candidates"] if c["arm"] == sp["focus"]), sp["candidates"][0])
    mods = list(zip(sp["modules"], focus["before"], focus["after"]))[:MAX_MULTIPLES]
    color = color_for(focus["policy"])
    multiples = chart_json("multiples", multiples_spec(
        [(name, [("σ before", "#4B5563", b), (f"σ' {focus['arm']}", color, af)]) for name, b, af in mods],
        x_label="component k", y_label="singular value σ",
        label=f"{a['name']}: singular values before and after ({focus['arm']})",
        legend_items=[("σ before (unedited)", "#4B5563", "line"), (f"σ' after {focus['arm']}", color, "line")]))
    more = (f'<p class="muted">First {MAX_MULTIPLES} of {len(sp["modules"])} modules; the heatmap shows all.</p>'
            if len(sp["modules"]) > MAX_MULTIPLES else "")
    return ('<p class="guide">Reading guide: each cell is one singular value\'s factor σ\'/σ after the edit (red = '
            'amplified, blue = suppressed, white = unchanged, grey = σ≈0), per module (rows) and component (columns, '
            f'largest σ first), for every candidate of the latest decision (version {e(sp["version_sha"])}). The line '
            f'charts show σ before and after for {e(focus["arm"])} per module.</p>' + heat + multiples + more)


def _sensitivity(a: dict) -> str:
    se = a["sensitivity"]
    if not se:
        return ""
    mag = np.abs(matrix(se["magnitude"]))
    top = np.nanmax(np.where(np.isnan(mag), -np.inf, mag), axis=1, keepdims=True) if mag.size else mag
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(top > 0, mag / top, np.nan)  # |g| ÷ its module's max; a module with no signal is grey
    h1 = chart_json("heatmap", heatmap_spec(
        [("|g| ÷ module max", mag)], se["modules"], col_label="component k", vmin=0, vmax=1, cmap="viridis",
        cbar_label="relative |g|", label=f"{a['name']}: sensitivity magnitude", max_width=560))
    h2 = chart_json("heatmap", heatmap_spec(
        [("sign agreement", se["sign_agreement"])], se["modules"], col_label="component k", vmin=0, vmax=1,
        cmap="viridis", cbar_label="fraction agreeing", label=f"{a['name']}: sign agreement", max_width=560))
    return ('<p class="guide">Reading guide: |g| is how strongly the calibration loss responds to each singular '
            'value (normalised per module; bright = the components the |g| policies amplify). Sign agreement is the '
            'fraction of calibration examples whose gradient points the same way as the aggregate: near 1 = a '
            'consistent signal, near 0.5 = examples disagree (a noisy direction).</p>'
            f'<div class="row">{h1}{h2}</div>')


def _events(a: dict) -> str:
    if not a["events"]:
        return '<p class="muted">No promotion, override or rollback yet: production is the unedited version.</p>'
    cls = {"promotion": "b-ok", "approval": "b-ok", "manual_override": "b-warn", "rollback": "b-bad"}
    rows = "".join(f'<tr><td>{e(v["at"])}</td><td><span class="badge {cls.get(v["kind"], "b-mut")}">'
                   f'{e(v["kind"].replace("_", " "))}</span></td><td>{e(v["actor"])}</td><td>{e(v["from"])} → '
                   f'<b>{e(v["to"])}</b></td><td title="{e(v["reason"])}">{e(shorten(v["reason"], 160))}</td></tr>'
                   for v in a["events"])
    return ('<table><thead><tr><th>When</th><th>Kind</th><th>Actor</th><th>From → to</th><th>Reason</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _failures(a: dict) -> str:
    if not a["failures"]:
        return ""
    rows = "".join(f'<tr><td>{"#" + str(f["run_id"]) if f["run_id"] else "scan"}</td><td>{e(f["at"] or "")}</td>'
                   f'<td>{e(f["version_sha"])}</td>'
                   f'<td><b>{e(f["error_type"] or "")}</b> {e(shorten(f["summary"], 200))}<details><summary '
                   f'class="muted">traceback</summary><pre>{e(f["message"][-4000:])}</pre></details></td></tr>'
                   for f in a["failures"])
    return (f'<h4>Failures ({a["n_failures"]})</h4><table><thead><tr><th>Run</th><th>When</th><th>Version</th>'
            f"<th>Error</th></tr></thead><tbody>{rows}</tbody></table>")


def pack(html: str) -> str:
    """``html`` gzip-compressed and base64-encoded, for a lazy section the page inflates when it is opened.

    Level 3: a quarter of level 6's time for ~10% more bytes (a section's σ values are noise to gzip; at 1,000
    adapters level 6 was a fifth of the render)."""
    return base64.b64encode(gzip.compress(html.encode("utf-8"), compresslevel=3, mtime=0)).decode("ascii")


def adapter_section(a: dict, *, lazy: bool = True) -> str:
    """The collapsed ``<details id=slug>`` section of one adapter.

    Args:
        a: One entry of ``collect()["adapters"]``.
        lazy: Ship the section's body gzip-compressed (``<div class="lazy" data-gz=...>``); the page's script
            inflates it with the browser's ``DecompressionStream`` on first opening. Charts compress ~8×, and a
            page of 200 adapters builds 200 closed sections instead of thousands of SVG nodes. Either way the σ
            and sensitivity charts are JSON the page's script draws (:mod:`flows.dashboard.charts_js`).
    """
    prod = a["production"]
    dec = a["last_decision"]
    run = a["last_run"]
    badge = ""
    if dec is not None:
        badge = decision_badge(dec)
    summary = (f'<summary><b>{e(a["name"])}</b><span class="muted">{e(a["family"])}</span>'
               f'<span>production: {e(prod["label"]) if prod else "–"}</span>{badge}'
               f'{status_badge(run["status"]) if run else ""}'
               + (f'<span class="badge b-bad">{a["n_failures"]} failed</span>' if a["n_failures"] else "")
               + "</summary>")
    lv = a["latest_version"]
    meta = (f'<p class="muted">source {e(a["source_uri"])} · base {e(a["base_model"])} · {a["n_versions"]} '
            f'version(s), latest {e(lv["sha"]) if lv else "–"} seen {e(lv["seen"]) if lv else "–"}'
            + (f' · last run #{run["run_id"]} {e(run["status"])}' if run else "") + "</p>")
    sentence = f'<p class="sentence"><b>Last decision:</b> {e(dec["sentence"])}</p>' if dec else ""
    shown = [r for r in (a.get("review"), (dec or {}).get("review"), *a.get("superseded_reviews", ())) if r]
    sentence += "".join(f'<p class="sentence review">{review_text(r)}</p>'
                        for i, r in enumerate(shown) if r["id"] not in [x["id"] for x in shown[:i]])
    parts = ["<h4>Task metric across nights</h4>", _trend(a)]
    if a["nights"]:
        parts += ["<h4>Latest decision: paired differences</h4>", _forest(a, a["nights"][0]),
                  f"<h4>Runs and candidates (last {len(a['nights'])})</h4>", _runs_table(a)]
    if a["spectrum"]:
        parts += ["<h4>Singular values before → after</h4>", _spectrum(a)]
    if a["sensitivity"]:
        parts += ["<h4>Sensitivity profile</h4>", _sensitivity(a)]
    parts += ["<h4>Promotion, override and rollback history</h4>", _events(a), _failures(a)]
    inner = "".join(parts)
    body = (f'<div class="lazy" data-gz="{pack(inner)}"><noscript>This section needs JavaScript to unpack.'
            f'</noscript></div>' if lazy else f'<div class="lazy" data-state="ready">{inner}</div>')
    return (f'<details class="adapter" id="{e(a["slug"])}">{summary}<div class="body">{meta}{sentence}{body}'
            "</div></details>")
