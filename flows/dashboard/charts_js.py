"""The per-adapter charts, drawn by the page's script: an adapter section's when it is opened, a fleet row's
sparkline when its row is first shown.

A section's trend, forest plot, σ heatmaps, σ small multiples and sensitivity heatmaps are shipped as compact JSON
(``<script type="application/json" class="js-chart" data-chart="line|forest|heatmap|multiples|runs">``) inside
its gzip'd body, and :data:`CHARTS_JS` turns each into the same inline SVG that :func:`flows.dashboard.svg.line_chart`,
:func:`~flows.dashboard.svg.forest`, :func:`~flows.dashboard.svg.heatmap_panels` and
:func:`~flows.dashboard.svg.small_multiples` write (same layout, colour maps, ticks, labels and accessible names;
heatmap cells are a PNG drawn on a canvas); ``runs`` is the itemised table (:mod:`flows.dashboard.views_js`). A fleet
row's ``<span class="spark" data-v=...>`` becomes :func:`flows.dashboard.svg.sparkline`'s SVG. Why: building those
SVGs and tables in Python for every adapter was most of the time a 1,000-adapter page took to render, for sections
nobody opens and rows on pages nobody turns to (docs/fleet.md). :func:`heatmap_spec`, :func:`multiples_spec` and
``adapter_html``'s ``*_spec`` functions build the JSON; their keys mirror the Python primitives' arguments.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import orjson

from spectral_surgery.flows.dashboard.svg import DIVERGING, MISSING, VIRIDIS, e

__all__ = ["CHARTS_JS", "chart_json", "heatmap_spec", "matrix", "multiples_spec"]


def matrix(rows: Sequence[Sequence[float | None]] | np.ndarray, n_cols: int | None = None) -> np.ndarray:
    """``rows`` as a float array padded with NaN (ragged rows and None are NaN: grey cells, gaps in lines)."""
    if isinstance(rows, np.ndarray):
        return rows.astype(float, copy=False)
    width = max((len(r) for r in rows), default=0) if n_cols is None else n_cols
    out = np.full((len(rows), width), np.nan)
    for i, r in enumerate(rows):
        if len(r):
            out[i, :len(r)] = np.asarray(r, dtype=float)  # None -> NaN
    return out


def _sig(m: np.ndarray, digits: int = 4) -> np.ndarray:
    """``m`` rounded to ``digits`` significant digits of its largest value (a 210-pixel panel shows no more)."""
    top = np.nanmax(np.abs(m)) if np.isfinite(m).any() else 0.0
    return np.round(m, max(0, digits - 1 - int(np.floor(np.log10(top)))) if top > 0 else digits)


def heatmap_spec(panels: Sequence[tuple[str, Sequence[Sequence[float | None]] | np.ndarray]],
                 row_labels: Sequence[str], *, col_label: str, vmin: float, vmax: float, cmap: str,
                 cbar_label: str, label: str, cbar_ratio: bool = False, max_width: int = 940,
                 digits: int = 3) -> dict:
    """The JSON of :func:`flows.dashboard.svg.heatmap_panels` (same arguments; values rounded to ``digits``
    decimals, finer than the 256 colours of the map).

    Args:
        cbar_ratio: Colour-bar ticks are log2 values written as factors (``×1.4``), as the σ'/σ heatmap's.
    """
    return {"panels": [[t, np.round(matrix(m), digits)] for t, m in panels], "rows": list(row_labels),
            "col_label": col_label, "vmin": vmin, "vmax": vmax, "cmap": cmap, "cbar_label": cbar_label,
            "cbar_ratio": cbar_ratio, "label": label, "max_width": max_width}


def multiples_spec(panels: Sequence[tuple[str, Sequence[tuple[str, str, Sequence[float]]]]], *, x_label: str,
                   y_label: str, label: str, legend_items: Sequence[tuple[str, str, str]] = ()) -> dict:
    """The JSON of :func:`flows.dashboard.svg.small_multiples` (same arguments; values to 4 significant digits of
    each panel's largest)."""
    out = []
    for title, series in panels:
        m = _sig(matrix([vs for _, _, vs in series]))
        out.append([title, [[n, c, m[i, :len(vs)]] for i, (n, c, vs) in enumerate(series)]])
    return {"panels": out, "x_label": x_label, "y_label": y_label, "label": label,
            "legend": [list(i) for i in legend_items]}


def chart_json(kind: str, spec: dict) -> str:
    """The inert element the page's script replaces with the chart (``kind``: ``heatmap`` or ``multiples``).

    NaN is written as null (a grey cell, a gap in a line); arrays are serialised by orjson in C, because a
    1,000-adapter page holds millions of values.
    """
    text = orjson.dumps(spec, option=orjson.OPT_SERIALIZE_NUMPY).decode("utf-8").replace("</", "<\\/")
    return f'<script type="application/json" class="js-chart" data-chart="{e(kind)}">{text}</script>'


def _rgb(anchors) -> str:
    return json.dumps([list(a) for a in anchors], separators=(",", ":"))


# Mirrors svg.py: nice_ticks, extent, fmt_tick, Frame, legend, svg, line_chart, forest, sparkline, heatmap_panels,
# small_multiples.
CHARTS_JS = """
var SSCharts=(function(){
var ANCH={viridis:%(viridis)s,diverging:%(diverging)s},MISS=%(missing)s,TAB={};
var FONT='font-family="system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif"';
function esc(s){return String(s).replace(/&/g,'&amp;').replace(/</g,'&lt;').replace(/>/g,'&gt;')
.replace(/"/g,'&quot;').replace(/'/g,'&#x27;');}
function fin(v){return typeof v==='number'&&isFinite(v);}
function f1(v){return v.toFixed(1);}
function g(v,p){if(v===0||!fin(v))return String(v);var t=v.toExponential(p-1).split('e'),x=parseInt(t[1],10);
if(x>=-4&&x<p)return String(parseFloat(v.toPrecision(p)));var m=t[0].indexOf('.')<0?t[0]:t[0].replace(/0+$/,'')
.replace(/\\.$/,'');return m+'e'+(x<0?'-':'+')+(Math.abs(x)<10?'0':'')+Math.abs(x);}
function lerp(a,t){t=Math.min(Math.max(t,0),1)*(a.length-1);var i=Math.min(Math.floor(t),a.length-2),u=t-i;
return [0,1,2].map(function(k){return Math.round(a[i][k]+(a[i+1][k]-a[i][k])*u);});}
function cmap(n){var t=TAB[n];if(!t){t=TAB[n]=[];var a=n==='viridis'?ANCH.viridis:ANCH.diverging;
for(var i=0;i<256;i++)t.push(lerp(a,i/255));}
return function(x){return t[Math.min(255,Math.max(0,Math.floor(x*255+0.5)))];};}
function nice(lo,hi,n){if(!(fin(lo)&&fin(hi))||hi<=lo)return [fin(lo)?lo:0];var raw=(hi-lo)/Math.max(n,1),
mag=Math.pow(10,Math.floor(Math.log10(raw))),step=[1,2,2.5,5,10].map(function(m){return m*mag;})
.filter(function(s){return s>=raw;})[0],start=Math.ceil(lo/step-1e-9)*step,out=[];
for(var k=0;start+k*step<=hi+step*1e-9;k++)out.push(Math.round((start+k*step)*1e12)/1e12);return out;}
function fmtTick(v,ticks){var d=0;while(d<4&&!ticks.every(function(t){
return Math.abs(Math.round(t*Math.pow(10,d))/Math.pow(10,d)-t)<1e-9;}))d++;var s=v.toFixed(d);
return parseFloat(s)===0?'0':s.replace('-','\\u2212');}
function svg(w,h,body,label){return '<svg class="chart" viewBox="0 0 '+w+' '+h+'" width="'+w+'" height="'+h+
'" role="img" aria-label="'+esc(label)+'" '+FONT+'><title>'+esc(label)+'</title>'+body.join('')+'</svg>';}
function png(px){var h=px.length,w=px[0].length,c=document.createElement('canvas');c.width=w;c.height=h;
var x=c.getContext('2d'),im=x.createImageData(w,h);for(var i=0;i<h;i++)for(var j=0;j<w;j++){var o=(i*w+j)*4;
im.data[o]=px[i][j][0];im.data[o+1]=px[i][j][1];im.data[o+2]=px[i][j][2];im.data[o+3]=255;}
x.putImageData(im,0,0);return c.toDataURL('image/png');}
function heatmap(s){var cm=cmap(s.cmap),rows=s.rows,P=s.panels,nr=Math.max(rows.length,1),nc=1;
P.forEach(function(p){p[1].forEach(function(r){nc=Math.max(nc,r.length);});});
var left=12+7*Math.max.apply(null,rows.map(function(r){return r.length;}).concat([rows.length?0:4]));
var avail=s.max_width-left-90-18*P.length,cw=Math.max(3,Math.min(26,Math.floor(avail/Math.max(P.length,1)/nc)));
var ch=Math.max(6,Math.min(20,Math.floor(360/nr))),gw=cw*nc,ph=ch*nr,pw=gw;
P.forEach(function(p){pw=Math.max(pw,Math.floor(6.8*p[0].length)+6);});
var top=30,bottom=40,width=left+P.length*(pw+18)+80,height=top+ph+bottom,b=[],vmin=s.vmin,vmax=s.vmax;
var step=ph?Math.max(1,Math.ceil(nr*12/ph)):1,cstep=Math.max(1,Math.ceil(nc*22/gw));
rows.forEach(function(n,i){if(i%%step===0)b.push('<text x="'+(left-6)+'" y="'+f1(top+ch*(i+0.5)+4)+
'" text-anchor="end" font-size="11" fill="#111827">'+esc(n)+'</text>');});
P.forEach(function(p,k){var x0=left+k*(pw+18),sc=1/((vmax-vmin)||1),m=p[1],px=[];
for(var i=0;i<nr;i++){var r=i<m.length?m[i]:[],row=[];for(var j=0;j<nc;j++){var v=j<r.length?r[j]:null;
row.push(fin(v)?cm((v-vmin)*sc):MISS);}px.push(row);}
b.push('<text x="'+f1(x0+gw/2)+'" y="'+(top-10)+'" text-anchor="middle" font-size="12" font-weight="600" '+
'fill="#111827">'+esc(p[0])+'</text>');
b.push('<image x="'+x0+'" y="'+top+'" width="'+gw+'" height="'+ph+'" preserveAspectRatio="none" '+
'style="image-rendering:pixelated" href="'+png(px)+'"/>');
b.push('<rect x="'+x0+'" y="'+top+'" width="'+gw+'" height="'+ph+'" fill="none" stroke="#6b7280"/>');
for(var j=0;j<nc;j+=cstep)b.push('<text x="'+f1(x0+cw*(j+0.5))+'" y="'+(top+ph+14)+
'" text-anchor="middle" font-size="10.5" fill="#374151">'+(j+1)+'</text>');});
var span=P.length*(pw+18)-18,cx=left+P.length*(pw+18)+4,bar=[];
b.push('<text x="'+f1(left+span/2)+'" y="'+(height-8)+'" text-anchor="middle" font-size="12" fill="#111827">'+
esc(s.col_label)+'</text>');
for(var i=0;i<64;i++)bar.push([cm(1-i/63)]);
b.push('<image x="'+cx+'" y="'+top+'" width="12" height="'+ph+'" preserveAspectRatio="none" href="'+png(bar)+'"/>');
b.push('<rect x="'+cx+'" y="'+top+'" width="12" height="'+ph+'" fill="none" stroke="#6b7280"/>');
var ticks=nice(vmin,vmax,ph>80?4:2);ticks.forEach(function(t){var py=top+ph-(t-vmin)/((vmax-vmin)||1)*ph;
b.push('<text x="'+(cx+16)+'" y="'+f1(py+4)+'" font-size="10.5" fill="#374151">'+
esc(s.cbar_ratio?'\\u00d7'+g(Math.pow(2,t),2):fmtTick(t,ticks))+'</text>');});
b.push('<text transform="translate('+(width-6)+','+f1(top+ph/2)+') rotate(-90)" text-anchor="middle" '+
'font-size="11" fill="#111827">'+esc(s.cbar_label)+'</text>');return svg(width,height,b,s.label);}
function legend(items,x,y,maxw){var out=[],cx=x,cy=y;items.forEach(function(it){var w=22+6.6*it[0].length+14;
if(cx+w>x+maxw&&cx>x){cx=x;cy+=16;}if(it[2]==='line'||it[2]==='dash')out.push('<line x1="'+Math.round(cx)+
'" x2="'+Math.round(cx+16)+'" y1="'+(cy-4)+'" y2="'+(cy-4)+'" stroke="'+it[1]+'" stroke-width="2.5"'+
(it[2]==='dash'?' stroke-dasharray="5 3"':'')+'/>');else if(it[2]==='dot')out.push('<circle cx="'+Math.round(cx+8)+
'" cy="'+(cy-4)+'" r="4.5" fill="'+it[1]+'"/>');else if(it[2]==='tri')out.push('<path d="M'+Math.round(cx+8)+','+
(cy-10)+'l6,10h-12z" fill="'+it[1]+'"/>');else out.push('<rect x="'+Math.round(cx)+'" y="'+(cy-10)+
'" width="14" height="11" fill="'+it[1]+'"/>');out.push('<text x="'+Math.round(cx+21)+'" y="'+cy+
'" font-size="11.5" fill="#111827">'+esc(it[0])+'</text>');cx+=w;});return out;}
function extent(vals,inc,pad){var v=vals.concat(inc).filter(fin);if(!v.length)return [0,1];
var lo=Math.min.apply(null,v),hi=Math.max.apply(null,v);if(hi-lo<1e-12){lo=lo-0.5*(Math.abs(lo)||1)*0.1-0.01;
hi=hi+0.5*(Math.abs(hi)||1)*0.1+0.01;}var sp=hi-lo;return [lo-pad*sp,hi+pad*sp];}
function frame(w,h,xl,yl,l,r,t,b){return {w:w,h:h,l:l,r:r,t:t,b:b,xl:xl,yl:yl,
x:function(v){return l+(v-xl[0])/((xl[1]-xl[0])||1)*(w-l-r);},
y:function(v){return h-b-(v-yl[0])/((yl[1]-yl[0])||1)*(h-t-b);}};}
function axes(f,xlab,ylab,xt,yt,xf){function inside(lim){return function(t){return lim[0]-1e-9<=t&&t<=lim[1]+1e-9;};}
xt=(xt||nice(f.xl[0],f.xl[1],5)).filter(inside(f.xl));yt=(yt||nice(f.yl[0],f.yl[1],5)).filter(inside(f.yl));
xf=xf||function(v){return fmtTick(v,xt);};var x0=f.l,x1=f.w-f.r,y0=f.h-f.b,y1=f.t;
var out=['<rect x="'+x0+'" y="'+y1+'" width="'+(x1-x0)+'" height="'+(y0-y1)+'" fill="#fff"/>'];
yt.forEach(function(t){var py=f.y(t);out.push('<line x1="'+x0+'" x2="'+x1+'" y1="'+f1(py)+'" y2="'+f1(py)+
'" stroke="#e5e7eb"/>','<text x="'+(x0-6)+'" y="'+f1(py+4)+'" text-anchor="end" font-size="11" fill="#374151">'+
esc(fmtTick(t,yt))+'</text>');});
xt.forEach(function(t){var px=f.x(t);out.push('<line x1="'+f1(px)+'" x2="'+f1(px)+'" y1="'+y1+'" y2="'+y0+
'" stroke="#f0f1f3"/>','<text x="'+f1(px)+'" y="'+(y0+16)+'" text-anchor="middle" font-size="11" fill="#374151">'+
esc(xf(t))+'</text>');});
out.push('<path d="M'+x0+','+y1+'V'+y0+'H'+x1+'" fill="none" stroke="#6b7280"/>','<text x="'+f1((x0+x1)/2)+
'" y="'+(f.h-8)+'" text-anchor="middle" font-size="12" fill="#111827">'+esc(xlab)+'</text>',
'<text transform="translate(14,'+f1((y0+y1)/2)+') rotate(-90)" text-anchor="middle" font-size="12" fill="#111827">'+
esc(ylab)+'</text>');return out;}
function vline(f,v,c){var px=f.x(v);return '<line x1="'+f1(px)+'" x2="'+f1(px)+'" y1="'+f.t+'" y2="'+(f.h-f.b)+
'" stroke="'+c+'" stroke-dasharray="4 3"/>';}
function line(s){var xs=[],ys=[],W=s.width,H=s.height;s.series.forEach(function(se){se.points.forEach(function(p){
if(fin(p[0]))xs.push(p[0]);if(fin(p[1]))ys.push(p[1]);});});s.markers.forEach(function(m){if(fin(m.y))ys.push(m.y);});
var f=frame(W,H,xs.length?extent(xs,[],0.04):[0,1],extent(ys,s.include_y||[],0.08),58,16,44,46);
var b=axes(f,s.x_label,s.y_label,s.xticks,null,s.xlabels?function(v){var i=s.xticks.indexOf(v);
return i>=0?s.xlabels[i]:'';}:null);
s.series.forEach(function(se){var segs=[],cur=[],prev=null,dash=se.dash?' stroke-dasharray="6 4"':'';
se.points.forEach(function(p){if(!(fin(p[0])&&fin(p[1]))){if(cur.length)segs.push(cur);cur=[];prev=null;return;}
if(se.step&&prev!==null)cur.push([f.x(p[0]),f.y(prev)]);cur.push([f.x(p[0]),f.y(p[1])]);prev=p[1];});
if(cur.length)segs.push(cur);segs.forEach(function(g){b.push('<path d="M'+g.map(function(a){return f1(a[0])+','+
f1(a[1]);}).join('L')+'" fill="none" stroke="'+se.color+'" stroke-width="2"'+dash+'/>');});
if(se.dots)se.points.forEach(function(p,i){if(!(fin(p[0])&&fin(p[1])))return;var t=se.titles&&se.titles[i];
b.push('<circle cx="'+f1(f.x(p[0]))+'" cy="'+f1(f.y(p[1]))+'" r="2.6" fill="'+se.color+'">'+
(t?'<title>'+esc(t)+'</title>':'')+'</circle>');});});
var seen={},items=s.series.map(function(se){return [se.name,se.color,se.dash?'dash':'line'];});
s.markers.forEach(function(m){if(!(fin(m.x)&&fin(m.y)))return;var px=f.x(m.x),py=f.y(m.y);
b.push('<path d="M'+f1(px)+','+f1(py-8)+'l6,10h-12z" fill="'+m.color+'" stroke="#fff" stroke-width="0.8"><title>'+
esc(m.title)+'</title></path>');});
s.markers.forEach(function(m){var k=m.legend+'|'+m.color;
if(m.legend&&!seen[k]){seen[k]=1;items.push([m.legend,m.color,'tri']);}});
return svg(W,H,b.concat(legend(items,f.l,16,W-f.l-f.r)),s.label);}
function forest(s){var rh=24,top=40,bottom=44,left=150,W=s.width,n=Math.max(s.rows.length,1),H=top+bottom+rh*n,
pw=(W-left-10)/Math.max(s.panels.length,1),b=[];
s.rows.forEach(function(r,i){b.push('<text x="'+(left-8)+'" y="'+f1(top+rh*(i+0.5)+4)+
'" text-anchor="end" font-size="12" fill="#111827">'+esc(r)+'</text>');});
s.panels.forEach(function(p,k){var xs=[];p.values.forEach(function(v){if(v)v.slice(0,3).forEach(function(x){
if(fin(x))xs.push(x);});});var x0=left+k*pw,f=frame(Math.floor(pw),H,extent(xs,[0],0.06),[0,1],14,14,top,bottom);
b.push('<g transform="translate('+f1(x0)+',0)">');b=b.concat(axes(f,p.x_label,'',null,[]));
b.push('<text x="'+f1(f.w/2)+'" y="'+(top-14)+'" text-anchor="middle" font-size="12.5" font-weight="600" '+
'fill="#111827">'+esc(p.title)+'</text>');
if(p.band)b.push('<rect x="'+f1(f.x(p.band[0]))+'" y="'+top+'" width="'+f1(f.x(p.band[1])-f.x(p.band[0]))+
'" height="'+(H-top-bottom)+'" fill="#fde68a" fill-opacity="0.35"/>');b.push(vline(f,0,'#111827'));
p.values.forEach(function(v,i){if(!v)return;var cy=top+rh*(i+0.5);if(fin(v[1])&&fin(v[2]))b.push('<line x1="'+
f1(f.x(v[1]))+'" x2="'+f1(f.x(v[2]))+'" y1="'+f1(cy)+'" y2="'+f1(cy)+'" stroke="'+v[3]+'" stroke-width="2.5"/>');
if(fin(v[0]))b.push('<circle cx="'+f1(f.x(v[0]))+'" cy="'+f1(cy)+'" r="5" fill="'+v[3]+'" stroke="#fff"><title>'+
esc(v[4])+'</title></circle>');});b.push('</g>');});return svg(W,H,b,s.label);}
function spark(v,marks,label){var W=130,H=30,pts=[];v.forEach(function(y,i){if(fin(y))pts.push([i,y]);});
if(!pts.length)return '<span class="muted">\u2013</span>';var e=extent(pts.map(function(p){return p[1];}),[],0.1),
n=Math.max(v.length-1,1),xy=pts.map(function(p){return [2+p[0]/n*(W-4),H-3-(p[1]-e[0])/(e[1]-e[0])*(H-6)];});
var b=['<path d="M'+xy.map(function(a){return f1(a[0])+','+f1(a[1]);}).join('L')+
'" fill="none" stroke="#009E73" stroke-width="1.6"/>'];pts.forEach(function(p,i){if(marks.indexOf(p[0])>=0)
b.push('<circle cx="'+f1(xy[i][0])+'" cy="'+f1(xy[i][1])+'" r="2.4" fill="#111827"/>');});
return '<svg class="spark" viewBox="0 0 '+W+' '+H+'" width="'+W+'" height="'+H+'" role="img" aria-label="'+
esc(label)+'"><title>'+esc(label)+'</title>'+b.join('')+'</svg>';}
function multiples(s){var P=s.panels,cols=Math.max(1,Math.min(4,P.length)),rows=Math.ceil(P.length/cols),
cw=210,chh=120,top=26,width=cols*cw,height=top+rows*chh+22,b=legend(s.legend,8,16,width-16);
b.push('<text x="'+Math.round(width/2)+'" y="'+(height-6)+'" text-anchor="middle" font-size="12" fill="#111827">'+
esc(s.x_label)+' (x) \\u00b7 '+esc(s.y_label)+' (y), each panel on its own y scale</text>');
P.forEach(function(p,k){var ox=(k%%cols)*cw,oy=top+Math.floor(k/cols)*chh,vals=[],n=1;
p[1].forEach(function(se){n=Math.max(n,se[2].length);se[2].forEach(function(v){if(fin(v))vals.push(v);});});
var tv=(vals.length?Math.max.apply(null,vals):1)||1,L=44,R=8,T=18,B=22,xl=[0.5,n+0.5],yl=[0,tv*1.08];
function X(v){return L+(v-xl[0])/((xl[1]-xl[0])||1)*(cw-L-R);}
function Y(v){return chh-B-(v-yl[0])/((yl[1]-yl[0])||1)*(chh-T-B);}
var xt=[1,n];if(n>2)xt.push(Math.floor((n+1)/2));xt=xt.filter(function(v,i){return xt.indexOf(v)===i;})
.sort(function(a,b){return a-b;});var x0=L,x1=cw-R,y0=chh-B,y1=T;
var q=['<g transform="translate('+ox+','+oy+')">','<rect x="'+x0+'" y="'+y1+'" width="'+(x1-x0)+'" height="'+
(y0-y1)+'" fill="#fff"/>'];
[0,tv].forEach(function(t){var py=Y(t);q.push('<line x1="'+x0+'" x2="'+x1+'" y1="'+f1(py)+'" y2="'+f1(py)+
'" stroke="#e5e7eb"/>','<text x="'+(x0-6)+'" y="'+f1(py+4)+'" text-anchor="end" font-size="11" fill="#374151">'+
esc(g(t,3))+'</text>');});
xt.forEach(function(t){var px=X(t);q.push('<line x1="'+f1(px)+'" x2="'+f1(px)+'" y1="'+y1+'" y2="'+y0+
'" stroke="#f0f1f3"/>','<text x="'+f1(px)+'" y="'+(y0+16)+'" text-anchor="middle" font-size="11" fill="#374151">'+
t+'</text>');});
q.push('<path d="M'+x0+','+y1+'V'+y0+'H'+x1+'" fill="none" stroke="#6b7280"/>');
q.push('<text x="'+(L+2)+'" y="12" font-size="11.5" font-weight="600" fill="#111827">'+esc(p[0])+'</text>');
p[1].forEach(function(se){var pts=[];se[2].forEach(function(v,i){if(fin(v))pts.push([X(i+1),Y(v)]);});
if(!pts.length)return;q.push('<path d="M'+pts.map(function(a){return f1(a[0])+','+f1(a[1]);}).join('L')+
'" fill="none" stroke="'+se[1]+'" stroke-width="1.8"/>');if(pts.length<=8)pts.forEach(function(a){
q.push('<circle cx="'+f1(a[0])+'" cy="'+f1(a[1])+'" r="2" fill="'+se[1]+'"/>');});});
q.push('</g>');b=b.concat(q);});return svg(width,height,b,s.label);}
var KINDS={heatmap:heatmap,multiples:multiples,line:line,forest:forest,runs:function(s){return SSViews.runs(s);}};
function draw(root){root.querySelectorAll('script.js-chart').forEach(function(el){var s=JSON.parse(el.textContent),
t=document.createElement('template');t.innerHTML=KINDS[el.getAttribute('data-chart')](s);el.replaceWith(t.content);});
root.querySelectorAll('.spark[data-v]').forEach(function(el){var t=document.createElement('template');
t.innerHTML=spark(JSON.parse(el.getAttribute('data-v')),JSON.parse(el.getAttribute('data-m')||'[]'),
el.getAttribute('aria-label')||'trend');el.replaceWith(t.content);});}
return {draw:draw,heatmap:heatmap,multiples:multiples,line:line,forest:forest,spark:spark};})();
""" % {"viridis": _rgb(VIRIDIS), "diverging": _rgb(DIVERGING), "missing": json.dumps(list(MISSING))}
