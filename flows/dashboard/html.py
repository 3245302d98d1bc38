"""The audit dashboard's HTML: one self-contained page from :func:`flows.dashboard.data.collect`'s dict.

No network at all: no CDN script, no web font, no external image. The fleet-wide charts are inline SVG from
:mod:`flows.dashboard.svg`; everything drawn per adapter (a fleet row's sparkline; a section's trend, forest plot,
runs table, σ and sensitivity charts) ships as compact JSON and is drawn by the page's script when it is shown
(:mod:`flows.dashboard.charts_js`, :mod:`flows.dashboard.views_js`), so a page's Python work and size stay small
per adapter. The only script is written there and here (open the adapter named in the URL hash, inflate and draw a
section, filter and page the long tables, and in served mode poll ``/version`` and reload when the registry
changed).
Adapter sections are collapsed ``<details>`` so the page stays quick with hundreds of adapters; the fleet, evidence
and failures tables show :data:`PAGE_ROWS` rows at a time (a filter box searches all of them; the fleet table also
has family and verdict drop-downs), so a fleet of thousands stays one usable page.

Over 400 lines: one page's markup in the order it renders; the per-adapter pages are already apart (adapter_html).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import spectral_surgery.flows.dashboard.svg as sv
from spectral_surgery.flows.dashboard.adapter_html import adapter_section
from spectral_surgery.flows.dashboard.charts_js import CHARTS_JS
from spectral_surgery.flows.dashboard.views_js import VIEWS_JS
from spectral_surgery.flows.dashboard.fmt import ci_cell, decision_badge, pct, pts, shorten, status_badge
from spectral_surgery.flows.dashboard.svg import color_for, e
from spectral_surgery.tasks.decision.fleet_report import MeanCI, cost_text

_CSS = """
:root{--fg:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc;--ok:#047857;--bad:#b91c1c;--warn:#b45309}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,
sans-serif;color:var(--fg);background:var(--bg)}header{background:#0f172a;color:#f8fafc;padding:14px 24px;display:flex;
gap:24px;align-items:baseline;flex-wrap:wrap}header h1{font-size:20px;margin:0}header .meta{color:#cbd5e1;\
font-size:12.5px}
nav{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid var(--line);padding:8px 24px;display:flex;
gap:18px;flex-wrap:wrap}nav a{color:#1d4ed8;text-decoration:none;font-weight:500}main{max-width:1320px;margin:0 auto;
padding:8px 24px 60px}section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 18px;
margin:18px 0}h2{font-size:18px;margin:4px 0 10px}h3{font-size:15.5px;margin:18px 0 6px}h4{font-size:14px;margin:16px \
0 4px}
.guide{color:#374151;background:#f1f5f9;border-left:3px solid #94a3b8;padding:6px 10px;margin:6px 0 10px;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-bottom:8px}.card{border:1px solid var(--line);border-radius:6px;
padding:8px 14px;min-width:130px}.card b{display:block;font-size:22px}.card span{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{border-bottom:1px solid var(--line);padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f9fafb;position:sticky;top:38px;z-index:1;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.muted{color:var(--muted)}
.badge{display:inline-block;padding:0 7px;border-radius:9px;font-size:12px;font-weight:600;white-space:nowrap}
.b-ok{background:#d1fae5;color:#065f46}.b-bad{background:#fee2e2;color:#991b1b}.b-info{background:#dbeafe;color:#1e40af}
.b-mut{background:#f3f4f6;color:#374151}.b-warn{background:#fef3c7;color:#92400e}
details.adapter{border:1px solid var(--line);border-radius:6px;margin:6px 0;background:#fff}
details.adapter>summary{cursor:pointer;padding:7px 12px;display:flex;gap:14px;flex-wrap:wrap;align-items:center}
details.adapter[open]>summary{background:#f1f5f9;border-bottom:1px solid var(--line)}details.adapter .body{padding:4px \
14px 14px}
.chart{max-width:100%;height:auto;display:block;margin:4px 0}.row{display:flex;gap:18px;flex-wrap:wrap;\
align-items:flex-start}
.sentence{font-size:13px;margin:4px 0}pre{white-space:pre-wrap;font-size:12px;background:#f9fafb;border:1px solid \
var(--line);
padding:8px;max-height:320px;overflow:auto}input[type=search]{padding:5px 8px;border:1px solid #cbd5e1;\
border-radius:5px;
min-width:260px}tr.night th{background:#eef2ff;position:static;font-weight:500}#live{font-size:12px}\
.scroll{overflow-x:auto}.scroll th{position:static}
td.num small{display:block;color:var(--muted);font-size:11.5px}
td.nw{white-space:nowrap}th.num{white-space:normal}td.num small{white-space:normal}
.pager{margin:8px 0;display:flex;gap:10px;align-items:center}.pager .info{color:var(--muted)}
"""

_JS = """
(function(){
var KEY='spectral-surgery-dashboard';
function inflate(el){
if(!el||el.getAttribute('data-state'))return Promise.resolve();el.setAttribute('data-state','loading');
var b=atob(el.getAttribute('data-gz')),u=new Uint8Array(b.length);for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);
return new Response(new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip'))).text().then(function(h){
el.innerHTML=h;SSCharts.draw(el);el.removeAttribute('data-gz');el.setAttribute('data-state','ready');});}
document.querySelectorAll('.lazy[data-state=ready]').forEach(function(el){SSCharts.draw(el);});
function opened(d){return d.open?inflate(d.querySelector(':scope>.body>.lazy')):Promise.resolve();}
document.querySelectorAll('details.adapter').forEach(function(d){d.addEventListener('toggle',function(){opened(d);});});
function openTarget(){var id=decodeURIComponent(location.hash.slice(1));if(!id)return;var \
el=document.getElementById(id);
if(!el)return;for(var d=el;d;d=d.parentElement){if(d.tagName==='DETAILS'){d.open=true;}}
var det=el.closest('details.adapter');(det?opened(det):Promise.resolve()).then(function(){el.scrollIntoView();});}
window.addEventListener('hashchange',openTarget);
var st=null;try{st=JSON.parse(sessionStorage.getItem(KEY)||'null');sessionStorage.removeItem(KEY);}catch(err){}
if(st){Promise.all(st.open.map(function(id){var d=document.getElementById(id);if(!d)return null;d.open=true;
return d.classList.contains('adapter')?opened(d):null;})).then(function(){window.scrollTo(0,st.y);});}
else{openTarget();}
document.querySelectorAll('table[data-page]').forEach(function(t){
var size=parseInt(t.getAttribute('data-page'),10),rows=Array.prototype.slice.call(t.tBodies[0].rows),page=0,q='';
var keys=rows.map(function(r){return(r.getAttribute('data-search')||r.textContent).toLowerCase();});
var nav=document.getElementById(t.id+'-pager'),f=document.querySelector('input[data-filter="'+t.id+'"]');
var sel=Array.prototype.slice.call(document.querySelectorAll('select[data-filter="'+t.id+'"]'));
function match(r,i){return keys[i].indexOf(q)>=0&&sel.every(function(s){
return !s.value||r.getAttribute('data-'+s.getAttribute('data-attr'))===s.value;});}
function draw(){var hit=[];
rows.forEach(function(r,i){if(match(r,i))hit.push(r);else r.style.display='none';});
var pages=Math.max(1,Math.ceil(hit.length/size));page=Math.min(page,pages-1);
var lo=page*size,hi=Math.min(hit.length,lo+size);
hit.forEach(function(r,i){r.style.display=i>=lo&&i<hi?'':'none';if(i>=lo&&i<hi)SSCharts.draw(r);});if(!nav)return;
nav.querySelector('.info').textContent=(hit.length?(lo+1)+'\u2013'+hi:'0')+' of '+hit.length+
(hit.length<rows.length?' (filtered from '+rows.length+')':'');nav.querySelector('.prev').disabled=page===0;
nav.querySelector('.next').disabled=page>=pages-1;nav.style.display=rows.length>size?'':'none';}
if(nav){nav.querySelector('.prev').addEventListener('click',function(){page--;draw();});
nav.querySelector('.next').addEventListener('click',function(){page++;draw();});}
if(f)f.addEventListener('input',function(){q=f.value.toLowerCase();page=0;draw();});
sel.forEach(function(s){s.addEventListener('change',function(){page=0;draw();});});draw();});
var body=document.body,every=parseFloat(body.getAttribute('data-interval')||'0')*1000;
if(body.getAttribute('data-live')!=='1'||!every)return;var badge=document.getElementById('live');
function save(){var open=[];document.querySelectorAll('details[open]').forEach(function(d){if(d.id)open.push(d.id);});
sessionStorage.setItem(KEY,JSON.stringify({open:open,y:window.scrollY}));}
function poll(){fetch('version',{cache:'no-store'}).then(function(r){return r.json();}).then(function(j){
if(j.version!==body.getAttribute('data-version')){save();location.reload();return;}
badge.textContent='live \\u00b7 checked '+new Date().toLocaleTimeString();setTimeout(poll,every);}).catch(function(){
badge.textContent='live \\u00b7 server unreachable, retrying';setTimeout(poll,every*2);});}
setTimeout(poll,every);
})();
"""


# --------------------------------------------------------------------------------------------- formatting
PAGE_ROWS = 50  # rows of a long table shown at once (the rest a click away, or found by its filter)


def _pager(table_id: str, placeholder: str) -> tuple[str, str]:
    """The filter box above a paged table and the pager below it (``_JS`` wires both to ``table#table_id``)."""
    box = (f'<p><input type="search" id="{table_id.removesuffix("-table")}-filter" data-filter="{table_id}" '
           f'placeholder="{e(placeholder)}" aria-label="{e(placeholder)}"></p>')
    nav = (f'<div class="pager" id="{table_id}-pager"><button type="button" class="prev">&larr; previous</button> '
           f'<span class="info"></span> <button type="button" class="next">next &rarr;</button></div>')
    return box, nav


VERDICTS = [("promote", "promoted"), ("review", "awaiting review"), ("hold", "held"), ("reject", "rejected"),
            ("none", "no decision yet")]  # the fleet table's verdict filter: (data-verdict, label)


def verdict_key(dec: dict | None) -> str:
    """The fleet table's verdict of an adapter's last decision (a key of :data:`VERDICTS`)."""
    if dec is None:
        return "none"
    verdict = dec.get("verdict") or ("promote" if dec.get("promoted") else "reject")
    review = dec.get("review")
    return "review" if verdict == "promote" and review and review["state"] == "pending" else verdict


def _select(table_id: str, attr: str, every: str, options: Sequence[tuple[str, str]]) -> str:
    """A drop-down filter of ``table#table_id`` on its rows' ``data-<attr>`` (``_JS`` wires it)."""
    opts = "".join(f'<option value="{e(v)}">{e(label)}</option>' for v, label in options)
    return (f' <select id="{table_id.removesuffix("-table")}-{attr}" data-filter="{table_id}" data-attr="{attr}" '
            f'aria-label="{e(every)}"><option value="">{e(every)}</option>{opts}</select>')


def _spark(name: str, trend: list[dict]) -> str:
    """The production score's sparkline as data (``SSCharts.spark`` draws it when its row is first shown)."""
    values = [None if t["production"] is None else round(t["production"], 5) for t in trend]
    if not any(v is not None for v in values):
        return '<span class="muted">–</span>'
    marks = [i for i, t in enumerate(trend) if t["promoted_arm"]]
    label = f"{name}: production task score over {len(trend)} nights"
    return (f'<span class="spark" data-v="{json.dumps(values, separators=(",", ":"))}" '
            f'data-m="{json.dumps(marks, separators=(",", ":"))}" aria-label="{e(label)}"></span>')


def _fleet(data: dict) -> str:
    s = data["summary"]
    cards = [("adapters", s["adapters"]), ("enabled", s["enabled"]), ("serving an edit", s["edited_in_production"]),
             ("promotions", s["promotions"]), ("manual overrides", s["overrides"]), ("rollbacks", s["rollbacks"]),
             ("awaiting review", s.get("awaiting_review", 0)), ("failing now", s["failing"])]
    out = ['<section id="fleet"><h2>Fleet</h2><div class="cards">']
    out += [f'<div class="card"><b>{v}</b><span>{e(k)}</span></div>' for k, v in cards]
    out.append("</div>")
    runs = data["runs"]
    if runs:
        labels = [f"#{r['id']}" for r in runs]
        out.append('<h3>Nightly runs</h3><p class="guide">One bar per refinement run (last '
                   f'{len(runs)}): adapter versions refined and promoted, and refinements that failed. '
                   'A red segment means an adapter kept serving what it served before that night.</p>')
        out.append(sv.stacked_bars(labels, [
            ("refined, not promoted", sv.FIXED["completed"], [r["completed"] - r["promoted"] for r in runs]),
            ("refined and promoted", sv.FIXED["promoted"], [r["promoted"] for r in runs]),
            ("failed", sv.FIXED["failed"], [r["failed"] for r in runs]),
            ("still running", sv.FIXED["running"], [r["running"] for r in runs])],
            x_label="refinement run (id)", y_label="adapter versions", label="adapter versions per nightly run"))
    out.append('<h3>Adapters</h3><p class="guide">Production is what each adapter serves now (an edited candidate '
               '"policy @ version", or "unedited"). The trend line is the task score production had after each '
               'night (dots: promotions). Click a name for its evidence.</p>')
    box, nav = _pager("fleet-table", "Filter adapters (name, family, status)…")
    families = sorted({a["family"] for a in data["adapters"]})
    out.append(box.replace("</p>", _select("fleet-table", "family", "every family", [(f, f) for f in families])
                           + _select("fleet-table", "verdict", "every verdict", VERDICTS) + "</p>"))
    out.append(f'<table id="fleet-table" data-page="{PAGE_ROWS}"><thead><tr><th>Adapter</th>'
               '<th>Family / benchmark</th><th>Production</th>'
               '<th class="num">Task now (%)</th><th>Task trend</th><th>Last run</th><th>Last decision</th>'
               '<th class="num">Failures</th></tr></thead><tbody>')
    for a in data["adapters"]:
        prod = a["production"]
        run = a["last_run"]
        dec = a["last_decision"]
        trend = a["trend"]
        spark = _spark(a["name"], trend)
        bench = a["metric"]["benchmark"] if a["metric"] else (a["benchmark_override"] or "")
        if dec is None:
            dec_html = '<span class="muted">no decision yet</span>'
        else:
            dec_html = (
                f'{decision_badge(dec)} <span title="{e(dec["sentence"])}">{e(shorten(dec["sentence"], 120))}</span>'
            )
        run_html = (f'{status_badge(run["status"])} <span class="muted">#{run["run_id"]} · '
                    f'{e(run["ended"] or run["started"] or "")}</span>' if run else status_badge(None))
        if run and run["status"] == "failed":
            run_html += f'<br><span class="muted" title="{e(run["error"])}">{e(shorten(run["error"], 90))}</span>'
        prod_html = (f'{e(prod["label"])}' + (' <span class="muted">(implicit)</span>' if prod["implicit"] else
                                                f' <span class="muted">since {e(prod["since"])}</span>')
                     if prod else '<span class="muted">no version recorded</span>')
        if a["fetch_error"]:
            prod_html += (f'<br><span class="badge b-bad">source not fetched</span> '
                          f'<span class="muted" title="{e(a["fetch_error"])}">'
                          f'{e(shorten(a["fetch_error"], 90))}</span>')
        disabled = "" if a["enabled"] else ' <span class="badge b-mut">disabled</span>'
        search = " ".join([a["name"], a["family"], run["status"] if run else "never", bench]).lower()
        out.append(
            f'<tr data-search="{e(search)}" data-family="{e(a["family"])}" data-verdict="{verdict_key(dec)}">'
            f'<td><a href="#{e(a["slug"])}">{e(a["name"])}</a>{disabled}</td>'
            f'<td>{e(a["family"])}<br><span class="muted">{e(bench)}</span></td><td>{prod_html}</td>'
            f'<td class="num">{pct(prod["value"]) if prod else "–"}</td><td>{spark}</td><td>{run_html}</td>'
            f'<td>{dec_html}</td><td class="num">{a["n_failures"] or ""}</td></tr>')
    out.append(f"</tbody></table>{nav}</section>")
    return "".join(out)


def _evidence(data: dict) -> str:
    """The paper's Table 2 in kind for the fleet's latest decisions: adapter × candidate (and each control), the gain
    over the unedited adapter with its 95% interval and p, over the best random control and over the calibrated
    global scalar, the IFEval change, and the verdict."""
    rows = []
    for a in data["adapters"]:
        if not a.get("nights"):
            continue
        night = a["nights"][0]
        for r in night["rows"]:
            if r["role"] == "baseline":
                continue
            rows.append(f'<tr><td>{e(a["name"])}</td><td><span style="color:{color_for(r["policy"])}">■</span> '
                        f'{e(r["arm"])}</td><td class="num">{ci_cell(r["task"])}</td>'
                        f'<td class="num">{ci_cell(r["vs_baseline"], signed=True)}</td>'
                        f'<td class="num">{ci_cell(r["vs_control"], signed=True)}</td>'
                        f'<td class="num">{ci_cell(r.get("vs_scalar"), signed=True)}</td>'
                        f'<td class="num">{ci_cell(r["guard_delta"], signed=True)}</td><td>{_row_verdict(r)}</td></tr>')
    if not rows:
        return ""
    box, nav = _pager("evidence-table", "Filter rows (adapter, candidate, verdict)…")
    return ('<section id="evidence"><h2>Evidence of the latest decisions</h2><p class="guide">Reading guide: the '
            "paper's Table 2 in kind, one row per adapter and candidate (controls included) of each adapter's latest "
            'decision. Δ are points on the task metric with 95% intervals and one-sided p-values: vs the unedited '
            'adapter, vs the best random control, vs the calibrated global scalar (a gain that does not beat it is a '
            'global rescale); Δ IFEval is the guard. A candidate is promoted only when it beats all three and the '
            'guard holds; "held" means the interval still holds both no gain and the smallest gain worth having.</p>'
            f'{box}<div class="scroll"><table id="evidence-table" data-page="{PAGE_ROWS}"><thead><tr><th>Adapter</th>'
            '<th>Candidate</th><th class="num">Task (%)</th>'
            '<th class="num">Δ vs unedited (pts) [CI] p</th><th class="num">Δ vs best random (pts) [CI] p</th>'
            '<th class="num">Δ vs global scalar (pts) [CI] p</th><th class="num">Δ IFEval (pts) [CI] p</th>'
            f'<th>Verdict</th></tr></thead><tbody>{"".join(rows)}</tbody></table></div>{nav}</section>')


def _what_wins(data: dict) -> str:
    """Per task family × edit over each adapter's latest decision (:func:`tasks.decision.fleet_report.what_wins`)."""
    def cell(x: MeanCI) -> str:
        if x.mean is None:
            return "–"
        ci = "" if x.lo is None else f"<small>[{pts(x.lo / 100)}, {pts(x.hi / 100)}]</small>"
        return f"{pts(x.mean / 100)}{ci}"

    rows = []
    for r in data.get("what_wins", []):
        secs = "–" if r.seconds_per_adapter is None else f"{r.seconds_per_adapter:.0f}"
        rows.append(f'<tr><td>{e(r.family)}</td><td><span style="color:{color_for(r.edit)}">■</span> '
                    f'{e(r.edit)}</td><td class="num">{r.adapters}</td><td class="num">{r.promoted}</td>'
                    f'<td class="num">{r.passed} / {r.held} / {r.rejected}</td>'
                    f'<td class="num">{cell(r.delta_pts)}</td><td class="num">{cell(r.guard_pts)}</td>'
                    f'<td>{e(r.data or "–")}</td><td class="num">{e(cost_text(r.cost))}</td>'
                    f'<td class="num">{secs}</td></tr>')
    if not rows:
        return ""
    return ('<section id="what-wins"><h2>What wins, for which adapters</h2><p class="guide">Reading guide: per task '
            "family and edit, over each adapter's latest decision: how many adapters tried it, how often it was "
            'promoted, passed / held / rejected, its mean gain over the unedited adapter and its IFEval change '
            '(points, 95% Student-t interval across adapters), whether it needs the calibration pass, what it '
            'costs one adapter alone (mean seconds: prepare = decomposition, plus calibration for an edit that needs '
            'data, + write + evaluate), and the seconds per adapter of the runs that decided (all edits of a run '
            'together).</p><div class="scroll"><table><thead><tr><th>Family</th>'
            '<th>Edit</th><th class="num">Adapters</th><th class="num">Promoted</th>'
            '<th class="num">Pass / hold / reject</th><th class="num">Δ vs unedited (pts)</th>'
            '<th class="num">Δ IFEval (pts)</th><th>Data</th><th class="num">s / edit (prep + write + eval)</th>'
            '<th class="num">s / adapter run</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def _row_verdict(r: dict) -> str:
    if r["role"] == "control":
        if r.get("policy") in ("zero_rebuild", "zero_rebuild_one_sided", "bare_base"):
            return '<span class="muted">canary</span>'
        return '<span class="muted">control' + (" (best random)" if r.get("best_control") else "") + "</span>"
    if r.get("promoted"):
        return '<span class="badge b-ok">promoted</span>'
    if r.get("verdict") == "hold":
        need = f": needs ~{r['n_needed']:,} docs" if r.get("n_needed") else ""
        return f'<span class="badge b-warn">held{need}</span>'
    if r.get("passed"):
        return '<span class="badge b-info">passed</span>'
    return '<span class="badge b-bad">rejected</span>'


def _night(data: dict) -> str:
    """The latest windowed night: each adapter's forecast against what it took, and why it started or waited."""
    night = data.get("night")
    if not night:
        return ""
    from spectral_surgery.tasks.night_plan import clock

    err = "" if night["error"] is None else f" Forecast error over the adapters that ran: {night['error']:+.0%}."
    out = [f'<section id="night"><h2>Last night against its window</h2><p class="guide">Run #{night["run_id"]}: '
           f'each adapter\'s forecast (from the recorded cost of past nights) against what it took; a deferred '
           f'adapter waits for the next night, first in line.{err}</p>',
           "<table><thead><tr><th>Adapter</th><th>Status</th><th>Forecast</th><th>Actual</th><th>Error</th>"
           "<th>Plan</th></tr></thead><tbody>"]
    for r in night["rows"]:
        out.append(f'<tr><td>{e(r["adapter"])}</td><td>{status_badge(r["status"])}</td>'
                   f'<td>{clock(r["forecast_s"])}</td>'
                   f'<td>{"–" if r["actual_s"] is None else clock(r["actual_s"])}</td>'
                   f'<td>{"–" if r["error"] is None else format(r["error"], "+.0%")}</td>'
                   f'<td>{e(shorten(r["reason"] or "", 200))}</td></tr>')
    out.append("</tbody></table></section>")
    return "".join(out)


def _failures(data: dict) -> str:
    out = ['<section id="failures"><h2>Failures</h2><p class="guide">Adapter refinements whose latest attempt '
           'failed, and adapters whose source could not be fetched on the last scan (run "scan"), newest first, with '
           'the error the flow recorded (expand for the traceback). A failed adapter keeps its current production '
           'version.</p>']
    if not data["failures"]:
        return "".join(out) + '<p class="muted">No failed refinements.</p></section>'
    box, nav = _pager("failures-table", "Filter failures (adapter, error)…")
    out.append(f'{box}<table id="failures-table" data-page="{PAGE_ROWS}"><thead><tr><th>Adapter</th><th>Run</th>'
               "<th>When</th><th>Version</th><th>Error</th></tr></thead><tbody>")
    for f in data["failures"]:
        out.append(f'<tr><td><a href="#{e(f["slug"])}">{e(f["adapter"])}</a></td>'
                   f'<td>{"#" + str(f["run_id"]) if f["run_id"] else "scan"}</td>'
                   f'<td>{e(f["at"] or "")}</td><td>{e(f["version_sha"])}</td><td><b>{e(f["error_type"] or "")}</b> '
                   f'{e(shorten(f["summary"], 200))}<details><summary class="muted">traceback</summary>'
                   f'<pre>{e(f["message"][-4000:])}</pre></details></td></tr>')
    out.append(f"</tbody></table>{nav}</section>")
    return "".join(out)


# ------------------------------------------------------------------------------------------ diagnostics
def _tolerance(data: dict) -> float | None:
    for a in data["adapters"]:
        for n in a["nights"]:
            if "guard_tolerance" in n["gate"]:
                return float(n["gate"]["guard_tolerance"])
    return None


def _reward_risk(data: dict) -> str:
    rr = data["diagnostics"]["reward_risk"]
    out = ['<h3 id="reward-risk">Reward vs risk <span class="muted">(paper Fig. 4)</span></h3>',
           '<p class="guide">Reading guide: each dot is one adapter\'s latest candidate under a policy (ringed: the '
           'one promoted); squares are each policy\'s mean with 95% intervals across adapters. Up = larger task gain '
           'over the unedited adapter; right = larger IFEval drop. A safe default sits up and to the left; a policy '
           'that drifts right pays an "alignment tax" and is stopped by the guard (dashed line: the tolerance).</p>']
    pts_ = [p for p in rr["points"] if p["risk"] is not None]
    if not pts_:
        return "".join(out) + '<p class="muted">No decision with an IFEval guard yet.</p>'
    points = [{"x": p["risk"] * 100, "y": p["gain"] * 100, "color": color_for(p["policy"]), "ring": p["promoted"],
               "title": f"{p['adapter']} · {p['policy']}: task {pts(p['gain'])} pts, IFEval drop "
                        f"{pct(p['risk'])} pts"} for p in pts_]
    summaries = [{"x": s["risk"] * 100 if s["risk"] is not None else None,
                  "xlo": s["risk_lo"] * 100 if s["risk_lo"] is not None else None,
                  "xhi": s["risk_hi"] * 100 if s["risk_hi"] is not None else None,
                  "y": s["gain"] * 100, "ylo": s["gain_lo"] * 100 if s["gain_lo"] is not None else None,
                  "yhi": s["gain_hi"] * 100 if s["gain_hi"] is not None else None, "color": color_for(s["policy"]),
                  "title": f"{s['policy']} (n={s['n']}): mean gain {pts(s['gain'])} pts, mean IFEval drop "
                           f"{pct(s['risk'])} pts"} for s in rr["policies"] if s["risk"] is not None]
    items = [(f"{s['policy']} (n={s['n']})", color_for(s["policy"]), "dot") for s in rr["policies"]]
    tol = _tolerance(data)
    vlines = [(tol * 100, "#b45309")] if tol is not None else []
    if tol is not None:
        items.append((f"guard tolerance ({tol * 100:.1f} pts)", "#b45309", "dash"))
    chart = sv.scatter_chart(points, summaries=summaries, x_label="risk: IFEval drop vs unedited (pts; right = worse)",
                             y_label="reward: task gain vs unedited (pts)", legend_items=items, vlines=vlines,
                             corner_notes=[("tl", "high reward · low risk"), ("tr", "alignment tax"),
                                           ("br", "harmful")], label="Reward vs risk per policy")
    rows = "".join(f'<tr><td class="nw"><span style="color:{color_for(s["policy"])}">■</span> {e(s["policy"])}</td>'
                   f'<td class="num">{s["n"]}</td><td class="num">{pts(s["gain"])} <span '
                   f'class=muted>[{pts(s["gain_lo"])}'
                   f', {pts(s["gain_hi"])}]</span></td><td class="num">{pts(s["risk"])} <span class=muted>'
                   f'[{pts(s["risk_lo"])}, {pts(s["risk_hi"])}]</span></td></tr>' for s in rr["policies"])
    return "".join(out) + (f'<div class="row">{chart}<table style="max-width:460px"><thead><tr><th>Policy</th>'
                           '<th class="num">adapters</th><th class="num">mean gain (pts) [95% CI]</th>'
                           '<th class="num">mean IFEval drop '
                           f'(pts)</th></tr></thead><tbody>{rows}</tbody></table></div>')


def _guided_random(data: dict) -> str:
    gr = data["diagnostics"]["guided_random"]
    out = ['<h3 id="guided-random">Guided vs random <span class="muted">(paper Fig. 3)</span></h3>',
           '<p class="guide">Reading guide: each dot is one adapter\'s latest decision for one policy: x = what the '
           'random control (random_index, best seed) gained over the unedited adapter, y = what the guided policy '
           'gained. Above the diagonal the sensitivity signal adds something beyond a generic spectral perturbation; '
           'on or below it, the gain is no better than random and the gate refuses it.</p>']
    if not gr["points"]:
        return "".join(out) + '<p class="muted">No decision with a random control yet.</p>'
    points = [{"x": p["x"] * 100, "y": p["y"] * 100, "color": color_for(p["policy"]),
               "title": f"{p['adapter']} · {p['policy']}: {pts(p['y'])} pts vs {p['control']} {pts(p['x'])} pts"}
              for p in gr["points"]]
    items = [(f"{s['policy']}: {s['above']}/{s['n']} above", color_for(s["policy"]), "dot") for s in gr["policies"]]
    chart = sv.scatter_chart(points, diagonal=True, legend_items=items + [("y = x", "#111827", "dash")],
                             x_label="random control's gain vs unedited (pts)",
                             y_label="guided policy's gain vs unedited (pts)",
                             corner_notes=[("tl", "guided beats random"), ("br", "random beats guided")],
                             label="Guided policy gain vs random control gain")
    rows = "".join(f'<tr><td class="nw"><span style="color:{color_for(s["policy"])}">■</span> {e(s["policy"])}</td>'
                   f'<td class="num">{s["above"]}/{s["n"]}</td><td class="num">{pts(s["mean_margin"])}</td></tr>'
                   for s in gr["policies"])
    return "".join(out) + (f'<div class="row">{chart}<table style="max-width:420px"><thead><tr><th>Policy</th>'
                           '<th class="num">above diagonal</th><th class="num">mean margin over random (pts)</th>'
                           f'</tr></thead><tbody>{rows}</tbody></table></div>')


def _alignment(data: dict, choices: Sequence[str] | None) -> str:
    al = data.get("alignment")
    out = ['<h3 id="alignment">Subspace alignment across layers <span class="muted">(paper Fig. 1)</span></h3>',
           '<p class="guide">Reading guide: for each residual-writing LoRA module (o_proj, down_proj) of one '
           'adapter, U holds the output directions of B·A. Left: |u₁ᵀu₁\'|, how parallel two modules\' leading '
           'directions are; right: the top-m subspace overlap ‖U_mᵀU\'_m‖²/m (1 = same subspace). Bright '
           'off-diagonal blocks mean the adapter writes to a shared, layer-invariant part of the residual stream '
           '(the reason Spectral Surgery keeps U and V and edits only σ); values near the random baseline mean '
           'no shared structure.</p>']
    if choices:
        current = (al or {}).get("adapter")
        opts = "".join(f'<option{" selected" if c == current else ""}>{e(c)}</option>' for c in choices)
        out.append(f'<form method="get" action="./#alignment"><label>Adapter: <select name="alignment">{opts}'
                   '</select></label> <button type="submit">Compute</button></form>')
    if not al:
        return "".join(out) + '<p class="muted">No adapter version with files on this machine.</p>'
    if al.get("error"):
        return "".join(out) + f'<p class="muted">Not available for {e(al.get("adapter", ""))}: {e(al["error"])}</p>'
    mods = al["modules"]
    out.append(f'<p>Adapter <b>{e(al["adapter"])}</b> @ {e(al["version_sha"])}: {len(mods)} modules, output dim '
               f'd = {al["d"]}, m = {al["m"]}. Random baselines: |u₁ᵀu₁\'| ≈ {al["random_principal"]:.3f}, '
               f'overlap ≈ m/d = {al["random_overlap"]:.3f}.</p>')
    out.append('<div class="row">')
    out.append(sv.heatmap_panels([("principal-direction similarity |u₁ᵀu₁'|", al["principal"])], mods,
                                 col_labels=mods, col_label="module", vmin=0, vmax=1, cmap="viridis",
                                 cbar_label="|cosine|", label="principal direction similarity", cell_w=0,
                                 max_width=620))
    out.append(sv.heatmap_panels([(f"top-{al['m']} subspace overlap", al["overlap"])], mods, col_labels=mods,
                                 col_label="module", vmin=0, vmax=1, cmap="viridis",
                                 cbar_label="overlap ‖UᵀU'‖²/m", label="top-m subspace overlap", max_width=620))
    out.append("</div>")
    intra = al.get("intra_layer") or []
    if intra:
        xs = [float(r["layer"]) for r in intra]
        out.append(sv.line_chart([
            {"name": "o_proj ↔ down_proj overlap (same layer)", "points": list(zip(xs, [r["overlap"] for r in intra])),
             "color": "#0072B2"},
            {"name": "o_proj ↔ down_proj |u₁ᵀu₁'|", "points": list(zip(xs, [r["principal"] for r in intra])),
             "color": "#E69F00"},
            {"name": "random overlap m/d", "points": [(x, al["random_overlap"]) for x in xs], "color": "#6b7280",
             "dash": True, "dots": False}],
            x_label="layer", y_label="similarity (0–1)", xticks=xs, xfmt=lambda v: str(int(v)), include_y=[0.0, 1.0],
            label="module synergy: o_proj vs down_proj per layer", height=260))
    return "".join(out)


# -------------------------------------------------------------------------------------------------- page
def render_html(data: dict, *, live: bool = False, version: str = "", interval_s: float = 5.0,
                alignment_choices: Sequence[str] | None = None) -> str:
    """The whole page.

    Args:
        data: :func:`flows.dashboard.data.collect`'s dict (plus ``alignment``).
        live: Served by :mod:`flows.dashboard.server`: poll ``version`` and reload when it changes.
        version: The registry fingerprint this page shows.
        interval_s: Poll interval of the live page.
        alignment_choices: Adapter names offered for the alignment diagnostic (served mode only).
    """

    s = data["summary"]
    live_badge = (f'<span id="live" class="badge b-ok">live · every {interval_s:g} s</span>' if live else
                  '<span class="badge b-mut">static snapshot</span>')
    head = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">'
            f'<title>Spectral Surgery · audit dashboard</title><style>{_CSS}</style></head>'
            f'<body data-live="{1 if live else 0}" data-version="{e(version)}" data-interval="{interval_s:g}">'
            f'<header><h1>Spectral Surgery · audit dashboard</h1><span class="meta">{s["adapters"]} adapters · '
            f'generated {e(data["generated_at"])} · registry {e(data["registry_url"])}</span>{live_badge}</header>'
            '<nav><a href="#fleet">Fleet</a><a href="#evidence">Evidence</a><a href="#failures">Failures</a><a '
            'href="#diagnostics">Diagnostics</a>'
            '<a href="#reward-risk">Reward vs risk</a><a href="#guided-random">Guided vs random</a>'
            '<a href="#alignment">Subspace alignment</a><a href="#adapters">Adapters</a></nav><main>')
    parts = [head, _fleet(data), _evidence(data), _what_wins(data), _night(data), _failures(data),
             '<section id="diagnostics"><h2>Diagnostics from the fleet</h2>', _reward_risk(data),
             _guided_random(data), _alignment(data, alignment_choices), "</section>",
             f'<section id="adapters"><h2>Adapters</h2><p class="guide">One collapsed section per adapter: click to '
             f'open. Numbers are on the task metric\'s scale in % (differences in points); intervals are 95%. The '
             f'last {data["detail_runs"]} decisions are itemised, the last {data["history"]} are in the trend.</p>']
    parts += [adapter_section(a) for a in data["adapters"]]
    parts.append(f"</section></main><script>{VIEWS_JS}{CHARTS_JS}{_JS}</script></body></html>")
    return "".join(parts)
