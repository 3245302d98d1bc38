"""The adapter section's itemised runs table, built by the page's script from compact JSON when the section opens.

:func:`flows.dashboard.adapter_html.runs_spec` writes, per decision, its header fields and every subject's scores
(fractions, as :func:`flows.dashboard.data.collect` holds them); :data:`VIEWS_JS` (``SSViews.runs``) writes the
same table :mod:`flows.dashboard.fmt` would: percentages and signed points to one decimal, ``[lo, hi]`` intervals
on a muted line, p-values, verdict badges. Why: a 1,000-adapter page built those tables in Python, in gzip'd
sections that are rarely opened (docs/fleet.md); the JSON is a fraction of the HTML.
"""

from __future__ import annotations

__all__ = ["VIEWS_JS"]

# Mirrors fmt.py (pct, pts, fmt_p, ci_cell, shorten): the cells, badges and tooltips the Python table had.
VIEWS_JS = r"""
var SSViews=(function(){
function esc(s){return String(s).replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;')
.replace(/"/g,'&quot;').replace(/'/g,'&#x27;');}
function fin(v){return typeof v==='number'&&isFinite(v);}
function pct(v){return fin(v)?(v*100).toFixed(1):'\u2013';}
function pts(v){if(!fin(v))return '\u2013';var s=(v*100).toFixed(1);if(s.charAt(0)!=='-')s='+'+s;
return s.replace('-','\u2212');}
function fmtP(p){return fin(p)?(p<0.001?'p<0.001':'p='+String(parseFloat(p.toPrecision(3)))):'';}
function ci(x,signed){if(!x)return '\u2013';var f=signed?pts:pct,extra=[];
if(x.lo!==null&&x.lo!==undefined)extra.push('['+f(x.lo)+', '+f(x.hi)+']');
if(signed&&x.p!==null&&x.p!==undefined)extra.push(fmtP(x.p));
return f(signed?x.delta:x.mean)+(extra.length?'<small>'+extra.join(' ')+'</small>':'');}
function shorten(t,n){t=t||'';return t.length<=n?t:t.slice(0,n-1)+'\u2026';}
function num(n){return Number(n).toLocaleString('en-US');}
function verdict(r){var t=' title="'+esc(r.reason||'')+'"';
if(r.role==='baseline')return '<span class="muted">reference</span>';
if(r.role==='control')return '<span class="badge b-mut">random control'+(r.best_control?' (best)':'')+'</span>';
if(r.promoted)return '<span class="badge b-ok"'+t+'>promoted</span>';
if(r.passed)return '<span class="badge b-info"'+t+'>passed</span>';
if(r.verdict==='hold')return '<span class="badge b-warn"'+t+'>held'+(r.n_needed?': needs ~'+num(r.n_needed)+' docs':'')+
'</span>';return '<span class="badge b-bad"'+t+'>rejected</span> <span class="muted">'+esc((r.failed||[]).join(', '))+
'</span>';}
function vsUnedited(r,metric){var x=r.vs_baseline,t=r.pairing?' title="pairing vs unedited: '+esc(r.pairing)+'"':'';
if(metric!=='continuous'||!x)return '<td class="num"'+t+'>'+ci(x,true)+'</td>';
function s3(v){return (v>=0?'+':'')+v.toFixed(3);}
var band=fin(x.lo)&&fin(x.hi)?'['+s3(x.lo)+', '+s3(x.hi)+'] ':'';
return '<td class="num"'+t+'>'+s3(x.delta)+' nats<small>'+band+(fin(x.p)?fmtP(x.p):'')+'</small></td>';}
function runs(s){var out=['<div class="scroll"><table><thead><tr><th>Subject</th>'+
'<th class="num">Task (%) [95% CI]</th>'+
'<th class="num">IFEval (%) [95% CI]</th><th class="num">\u0394 vs unedited (pts) [CI] p</th><th class="num">'+
'\u0394 vs random control (pts) [CI] p</th><th class="num">\u0394 IFEval (pts) [CI] p</th><th>Decision</th></tr>'+
'</thead><tbody>'];
s.nights.forEach(function(n){out.push('<tr class="night"><th colspan="7">'+esc(n.at)+' \u00b7 run #'+n.run_id+
' \u00b7 version '+esc(n.version_sha)+' \u00b7 config '+esc(n.config_hash)+' \u00b7 '+esc(n.bench)+' \u2014 '+
'<span class="'+(n.promoted?'':'muted')+'">'+esc(shorten(n.sentence,220))+'</span></th></tr>');
n.rows.forEach(function(r){out.push('<tr><td><span style="color:'+r.color+'">\u25a0</span> '+
(r.role!=='baseline'?esc(r.arm):'unedited (baseline)')+'</td><td class="num">'+ci(r.task)+'</td><td class="num">'+
ci(r.guard)+'</td>'+vsUnedited(r,n.metric)+'<td class="num">'+ci(r.vs_control,true)+'</td><td class="num">'+
ci(r.guard_delta,true)+'</td><td>'+verdict(r)+'</td></tr>');});});
out.push('</tbody></table></div>');return out.join('');}
return {runs:runs,ci:ci,pct:pct,pts:pts};})();
"""
