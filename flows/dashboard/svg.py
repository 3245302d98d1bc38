"""Chart primitives of the audit dashboard: inline SVG strings, written here, with no script and no asset.

Every chart has axes with tick labels, axis titles with units and a legend where it draws more than one thing.
Heatmap cells are a tiny PNG embedded as a data URI inside the SVG (one pixel per cell, scaled up without
smoothing): a 32 × 16 heatmap costs a few hundred bytes instead of 512 ``<rect>`` elements, which keeps a page
of hundreds of adapters small. Colours are the Okabe-Ito palette (distinguishable with colour-blindness);
heatmaps use viridis (sequential) and a blue-white-red map (diverging).

Over 400 lines: a catalogue of independent chart primitives, one function each.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Callable, Sequence
from html import escape

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#000000")
FIXED = {"baseline": "#4B5563", "smooth_abs": "#0072B2", "abs_select": "#E69F00", "grad_direction": "#D55E00",
         "random_index": "#9CA3AF", "production": "#009E73", "failed": "#D55E00", "completed": "#0072B2",
         "promoted": "#009E73", "running": "#9CA3AF"}
FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif"'
# Colour-map anchors (RGB), shared by the static heatmaps here and the page's script (charts_js); MISSING: a NaN cell
VIRIDIS = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
DIVERGING = ((33, 102, 172), (103, 169, 207), (247, 247, 247), (239, 138, 98), (178, 24, 43))
MISSING = (229, 231, 235)


def color_for(name: str) -> str:
    """A stable colour per policy / series name (fixed for the paper's policies)."""
    base = name.rsplit("-s", 1)[0] if name.startswith("random_index") else name
    if base in FIXED:
        return FIXED[base]
    return PALETTE[sum(map(ord, base)) % (len(PALETTE) - 1)]


def e(text: object) -> str:
    """Escape text for SVG/HTML content and attributes."""
    return escape(str(text), quote=True)


def _finite(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


# ---------------------------------------------------------------------------------------------- scales
def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 × 10^k)."""
    if not (_finite(lo) and _finite(hi)) or hi <= lo:
        return [lo] if _finite(lo) else [0.0]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks, k = [], 0
    while start + k * step <= hi + step * 1e-9:
        ticks.append(round(start + k * step, 12))
        k += 1
    return ticks


def extent(values: Sequence[float], *, include: Sequence[float] = (), pad: float = 0.06) -> tuple[float, float]:
    """[min, max] of the finite values (and ``include``), padded by ``pad`` of the span; never empty."""
    vals = [v for v in [*values, *include] if _finite(v)]
    if not vals:
        return 0.0, 1.0
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * (abs(lo) or 1) * 0.1 - 0.01, hi + 0.5 * (abs(hi) or 1) * 0.1 + 0.01
    span = hi - lo
    return lo - pad * span, hi + pad * span


def fmt_tick(v: float, ticks: Sequence[float]) -> str:
    """A tick label with the fewest decimals (up to 4) that still shows every tick of ``ticks`` exactly."""
    decimals = next((d for d in range(5) if all(abs(round(t, d) - t) < 1e-9 for t in ticks)), 4)
    s = f"{v:.{decimals}f}"
    return "0" if float(s) == 0 else s.replace("-", "−")


class Frame:
    """A plot area inside an SVG: data → pixel mapping, axes, grid and titles."""

    def __init__(self, width: int, height: int, xlim: tuple[float, float], ylim: tuple[float, float], *,
                 left: int = 58, right: int = 16, top: int = 30, bottom: int = 46) -> None:
        self.w, self.h = width, height
        self.l, self.r, self.t, self.b = left, right, top, bottom
        self.xlim, self.ylim = xlim, ylim

    def x(self, v: float) -> float:
        lo, hi = self.xlim
        return self.l + (v - lo) / ((hi - lo) or 1) * (self.w - self.l - self.r)

    def y(self, v: float) -> float:
        lo, hi = self.ylim
        return self.h - self.b - (v - lo) / ((hi - lo) or 1) * (self.h - self.t - self.b)

    def axes(self, x_label: str, y_label: str, *, xticks: Sequence[float] | None = None,
             yticks: Sequence[float] | None = None, xfmt: Callable[[float], str] | None = None,
             yfmt: Callable[[float], str] | None = None) -> list[str]:
        """Grid, axis lines, tick labels and axis titles."""
        xticks = [t for t in (xticks if xticks is not None else nice_ticks(*self.xlim))
                  if self.xlim[0] - 1e-9 <= t <= self.xlim[1] + 1e-9]
        yticks = [t for t in (yticks if yticks is not None else nice_ticks(*self.ylim))
                  if self.ylim[0] - 1e-9 <= t <= self.ylim[1] + 1e-9]
        xf = xfmt or (lambda v: fmt_tick(v, xticks))
        yf = yfmt or (lambda v: fmt_tick(v, yticks))
        x0, x1, y0, y1 = self.l, self.w - self.r, self.h - self.b, self.t
        out = [f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fff"/>']
        for t in yticks:
            py = self.y(t)
            out.append(f'<line x1="{x0}" x2="{x1}" y1="{py:.1f}" y2="{py:.1f}" stroke="#e5e7eb"/>')
            out.append(f'<text x="{x0 - 6}" y="{py + 4:.1f}" text-anchor="end" font-size="11" fill="#374151">'
                       f'{e(yf(t))}</text>')
        for t in xticks:
            px = self.x(t)
            out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y1}" y2="{y0}" stroke="#f0f1f3"/>')
            out.append(f'<text x="{px:.1f}" y="{y0 + 16}" text-anchor="middle" font-size="11" fill="#374151">'
                       f'{e(xf(t))}</text>')
        out.append(f'<path d="M{x0},{y1}V{y0}H{x1}" fill="none" stroke="#6b7280"/>')
        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{self.h - 8}" text-anchor="middle" font-size="12" '
                   f'fill="#111827">{e(x_label)}</text>')
        cy = (y0 + y1) / 2
        out.append(f'<text transform="translate(14,{cy:.1f}) rotate(-90)" text-anchor="middle" font-size="12" '
                   f'fill="#111827">{e(y_label)}</text>')
        return out

    def hline(self, v: float, color: str = "#6b7280", dash: str = "4 3") -> str:
        py = self.y(v)
        return (f'<line x1="{self.l}" x2="{self.w - self.r}" y1="{py:.1f}" y2="{py:.1f}" stroke="{color}" '
                f'stroke-dasharray="{dash}"/>')

    def vline(self, v: float, color: str = "#6b7280", dash: str = "4 3") -> str:
        px = self.x(v)
        return (f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{self.t}" y2="{self.h - self.b}" stroke="{color}" '
                f'stroke-dasharray="{dash}"/>')


def svg(width: int, height: int, body: Sequence[str], label: str) -> str:
    """Wrap elements in a responsive ``<svg>`` with an accessible name."""
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{e(label)}" {FONT}><title>{e(label)}</title>{"".join(body)}</svg>')


def legend(items: Sequence[tuple[str, str, str]], x: float, y: float, max_width: float) -> list[str]:
    """A one-or-more-line legend: ``(label, colour, shape)`` with shape ``line``, ``dash``, ``dot`` or ``box``."""
    out, cx, cy = [], x, y
    for label, color, shape in items:
        w = 22 + 6.6 * len(label) + 14
        if cx + w > x + max_width and cx > x:
            cx, cy = x, cy + 16
        if shape in ("line", "dash"):
            dash = ' stroke-dasharray="5 3"' if shape == "dash" else ""
            out.append(f'<line x1="{cx:.0f}" x2="{cx + 16:.0f}" y1="{cy - 4}" y2="{cy - 4}" stroke="{color}" '
                       f'stroke-width="2.5"{dash}/>')
        elif shape == "dot":
            out.append(f'<circle cx="{cx + 8:.0f}" cy="{cy - 4}" r="4.5" fill="{color}"/>')
        elif shape == "tri":
            out.append(f'<path d="M{cx + 8:.0f},{cy - 10}l6,10h-12z" fill="{color}"/>')
        else:
            out.append(f'<rect x="{cx:.0f}" y="{cy - 10}" width="14" height="11" fill="{color}"/>')
        out.append(f'<text x="{cx + 21:.0f}" y="{cy}" font-size="11.5" fill="#111827">{e(label)}</text>')
        cx += w
    return out


# ---------------------------------------------------------------------------------------------- charts
def line_chart(series: Sequence[dict], *, x_label: str, y_label: str, width: int = 620, height: int = 280,
               xfmt: Callable[[float], str] | None = None, yfmt: Callable[[float], str] | None = None,
               xticks: Sequence[float] | None = None, markers: Sequence[dict] = (), label: str = "line chart",
               include_y: Sequence[float] = ()) -> str:
    """Lines over a shared numeric x axis.

    Args:
        series: ``{"name", "points": [(x, y)], "color"?, "dash"?: bool, "step"?: bool, "dots"?: bool}``;
            points with a None/NaN y break the line.
        markers: ``{"x", "y", "color", "title", "shape": "tri"|"dot"|"x"}`` drawn on top (e.g. promotions).
        include_y: Values the y range must include (e.g. 0).
    """
    xs = [p[0] for s in series for p in s["points"] if _finite(p[0])]
    ys = [p[1] for s in series for p in s["points"] if _finite(p[1])] + [m["y"] for m in markers if _finite(m["y"])]
    xlim = extent(xs, pad=0.04) if xs else (0.0, 1.0)
    f = Frame(width, height, xlim, extent(ys, include=include_y, pad=0.08), top=44)
    body = f.axes(x_label, y_label, xticks=xticks, xfmt=xfmt, yfmt=yfmt)
    for s in series:
        color = s.get("color") or color_for(s["name"])
        dash = ' stroke-dasharray="6 4"' if s.get("dash") else ""
        segs, cur = [], []
        prev = None
        for x, y in s["points"]:
            if not (_finite(x) and _finite(y)):
                if cur:
                    segs.append(cur)
                cur, prev = [], None
                continue
            if s.get("step") and prev is not None:
                cur.append((f.x(x), f.y(prev)))
            cur.append((f.x(x), f.y(y)))
            prev = y
        if cur:
            segs.append(cur)
        for seg in segs:
            d = "M" + "L".join(f"{px:.1f},{py:.1f}" for px, py in seg)
            body.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        if s.get("dots", True):
            for x, y in s["points"]:
                if _finite(x) and _finite(y):
                    title = s.get("titles", {}).get(x) if isinstance(s.get("titles"), dict) else None
                    tip = f"<title>{e(title)}</title>" if title else ""
                    body.append(f'<circle cx="{f.x(x):.1f}" cy="{f.y(y):.1f}" r="2.6" fill="{color}">{tip}</circle>')
    for m in markers:
        if not (_finite(m["x"]) and _finite(m["y"])):
            continue
        px, py = f.x(m["x"]), f.y(m["y"])
        tip = f"<title>{e(m.get('title', ''))}</title>"
        if m.get("shape", "tri") == "tri":
            body.append(f'<path d="M{px:.1f},{py - 8:.1f}l6,10h-12z" fill="{m.get("color", "#009E73")}" '
                        f'stroke="#fff" stroke-width="0.8">{tip}</path>')
        else:
            body.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="5" fill="none" stroke="{m.get("color", "#111")}" '
                        f'stroke-width="2">{tip}</circle>')
    items = [(s["name"], s.get("color") or color_for(s["name"]), "dash" if s.get("dash") else "line") for s in series]
    items += [(m, c, "tri") for m, c in dict.fromkeys((m.get("legend"), m.get("color", "#009E73"))
                                                      for m in markers if m.get("legend"))]
    body += legend(items, f.l, 16, width - f.l - f.r)
    return svg(width, height, body, label)


def scatter_chart(points: Sequence[dict], *, x_label: str, y_label: str, width: int = 560, height: int = 420,
                  summaries: Sequence[dict] = (), diagonal: bool = False, zero_lines: bool = True,
                  legend_items: Sequence[tuple[str, str, str]] = (), label: str = "scatter chart",
                  corner_notes: Sequence[tuple[str, str]] = (), vlines: Sequence[tuple[float, str]] = ()) -> str:
    """Points (``{"x", "y", "color", "title", "ring"?: bool}``), optional per-group summary crosses
    (``{"x", "xlo", "xhi", "y", "ylo", "yhi", "color", "title"}``: mean with 95% intervals), optional y = x line.

    Args:
        corner_notes: ``(position, text)`` with position ``tl``/``tr``/``bl``/``br``: region reading hints.
        vlines: ``(x, colour)`` dashed reference lines (kept inside the x range).
    """
    xs = [p["x"] for p in points] + [v for s in summaries for v in (s["xlo"], s["xhi"])] + [x for x, _ in vlines]
    ys = [p["y"] for p in points] + [v for s in summaries for v in (s["ylo"], s["yhi"])]
    xlim, ylim = extent(xs, include=[0.0] if zero_lines else []), extent(ys, include=[0.0] if zero_lines else [])
    if diagonal:  # same range on both axes so the diagonal is at 45°
        lo, hi = min(xlim[0], ylim[0]), max(xlim[1], ylim[1])
        xlim = ylim = (lo, hi)
    f = Frame(width, height, xlim, ylim, top=30 + 16 * math.ceil(len(legend_items) / 4))
    body = f.axes(x_label, y_label)
    if zero_lines:
        body += [f.hline(0.0), f.vline(0.0)]
    body += [f.vline(x, color, "6 3") for x, color in vlines]
    if diagonal:
        lo, hi = xlim
        body.append(f'<line x1="{f.x(lo):.1f}" y1="{f.y(lo):.1f}" x2="{f.x(hi):.1f}" y2="{f.y(hi):.1f}" '
                    f'stroke="#111827" stroke-dasharray="6 4"/>')
    for pos, text in corner_notes:
        tx = f.l + 8 if pos[1] == "l" else f.w - f.r - 8
        ty = f.t + 16 if pos[0] == "t" else f.h - f.b - 8
        anchor = "start" if pos[1] == "l" else "end"
        body.append(f'<text x="{tx}" y="{ty}" text-anchor="{anchor}" font-size="11" fill="#6b7280" '
                    f'font-style="italic">{e(text)}</text>')
    for p in points:
        if not (_finite(p["x"]) and _finite(p["y"])):
            continue
        ring = ' stroke="#111827" stroke-width="1.6"' if p.get("ring") else ' stroke="#fff" stroke-width="0.6"'
        body.append(f'<circle cx="{f.x(p["x"]):.1f}" cy="{f.y(p["y"]):.1f}" r="4" fill="{p["color"]}" '
                    f'fill-opacity="0.75"{ring}><title>{e(p.get("title", ""))}</title></circle>')
    for s in summaries:
        if not (_finite(s["x"]) and _finite(s["y"])):
            continue
        cx, cy, c = f.x(s["x"]), f.y(s["y"]), s["color"]
        if _finite(s.get("xlo")) and _finite(s.get("xhi")):
            body.append(f'<line x1="{f.x(s["xlo"]):.1f}" x2="{f.x(s["xhi"]):.1f}" y1="{cy:.1f}" y2="{cy:.1f}" '
                        f'stroke="{c}" stroke-width="2.5"/>')
        if _finite(s.get("ylo")) and _finite(s.get("yhi")):
            body.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{f.y(s["ylo"]):.1f}" y2="{f.y(s["yhi"]):.1f}" '
                        f'stroke="{c}" stroke-width="2.5"/>')
        body.append(f'<rect x="{cx - 6:.1f}" y="{cy - 6:.1f}" width="12" height="12" fill="{c}" stroke="#111827" '
                    f'stroke-width="1.5"><title>{e(s.get("title", ""))}</title></rect>')
    body += legend(legend_items, f.l, 18, width - f.l - f.r)
    return svg(width, height, body, label)


def stacked_bars(labels: Sequence[str], stacks: Sequence[tuple[str, str, Sequence[float]]], *, x_label: str,
                 y_label: str, width: int = 620, height: int = 240, label: str = "bar chart") -> str:
    """Vertical stacked bars, one per label; ``stacks`` are ``(name, colour, values per label)``."""
    n = max(len(labels), 1)
    totals = [sum(s[2][i] for s in stacks) for i in range(len(labels))]
    f = Frame(width, height, (0, n), (0, max(totals + [1]) * 1.08), top=34)
    step = max(1, math.ceil(n / 10))
    xt = [i + 0.5 for i in range(0, len(labels), step)]
    body = f.axes(x_label, y_label, xticks=xt, xfmt=lambda v: labels[int(v)],
                  yticks=[t for t in nice_ticks(0, max(totals + [1])) if float(t).is_integer()] or None)
    bw = min(48.0, max(2.0, (f.x(1) - f.x(0)) * 0.7))
    for i in range(len(labels)):
        base = 0.0
        for name, color, values in stacks:
            v = values[i]
            if v:
                y0, y1 = f.y(base), f.y(base + v)
                body.append(f'<rect x="{f.x(i + 0.5) - bw / 2:.1f}" y="{y1:.1f}" width="{bw:.1f}" '
                            f'height="{max(y0 - y1, 0.5):.1f}" fill="{color}"><title>{e(labels[i])}: {v:g} '
                            f'{e(name)}</title></rect>')
            base += v
    body += legend([(name, color, "box") for name, color, _ in stacks], f.l, 16, width - f.l - f.r)
    return svg(width, height, body, label)


def forest(panels: Sequence[dict], rows: Sequence[str], *, width: int = 900, label: str = "forest plot") -> str:
    """Side-by-side interval plots sharing one row per candidate.

    Args:
        panels: ``{"title", "x_label", "values": [(est, lo, hi, colour, tooltip) | None per row],
            "ref": x of the reference line (0), "band": optional (lo, hi) shaded band}``.
        rows: Row labels.
    """
    row_h, top, bottom, left = 24, 40, 44, 150
    height = top + bottom + row_h * max(len(rows), 1)
    pw = (width - left - 10) / max(len(panels), 1)
    body = []
    for i, name in enumerate(rows):
        cy = top + row_h * (i + 0.5)
        body.append(f'<text x="{left - 8}" y="{cy + 4:.1f}" text-anchor="end" font-size="12" fill="#111827">'
                    f'{e(name)}</text>')
    for k, p in enumerate(panels):
        vals = [v for v in p["values"] if v is not None]
        xs = [x for est, lo, hi, *_ in vals for x in (est, lo, hi) if _finite(x)]
        x0 = left + k * pw
        f = Frame(int(pw), height, extent(xs, include=[p.get("ref", 0.0)]), (0, 1), left=14, right=14, top=top,
                  bottom=bottom)
        g = [f'<g transform="translate({x0:.1f},0)">']
        g += f.axes(p["x_label"], "", yticks=[])
        g.append(f'<text x="{f.w / 2:.1f}" y="{top - 14}" text-anchor="middle" font-size="12.5" font-weight="600" '
                 f'fill="#111827">{e(p["title"])}</text>')
        if p.get("band"):
            b0, b1 = p["band"]
            g.append(f'<rect x="{f.x(b0):.1f}" y="{top}" width="{f.x(b1) - f.x(b0):.1f}" '
                     f'height="{height - top - bottom}" fill="#fde68a" fill-opacity="0.35"/>')
        g.append(f.vline(p.get("ref", 0.0), "#111827"))
        for i, v in enumerate(p["values"]):
            if v is None:
                continue
            est, lo, hi, color, tip = v
            cy = top + row_h * (i + 0.5)
            if _finite(lo) and _finite(hi):
                g.append(f'<line x1="{f.x(lo):.1f}" x2="{f.x(hi):.1f}" y1="{cy:.1f}" y2="{cy:.1f}" stroke="{color}" '
                         f'stroke-width="2.5"/>')
            if _finite(est):
                g.append(f'<circle cx="{f.x(est):.1f}" cy="{cy:.1f}" r="5" fill="{color}" stroke="#fff">'
                         f'<title>{e(tip)}</title></circle>')
        g.append("</g>")
        body += g
    return svg(width, height, body, label)


def sparkline(values: Sequence[float | None], *, marks: Sequence[int] = (), width: int = 130, height: int = 30,
              color: str = "#009E73", label: str = "trend") -> str:
    """A tiny line of the last values (no axes: the row's numbers are beside it); ``marks`` index dots."""
    pts = [(i, v) for i, v in enumerate(values) if _finite(v)]
    if not pts:
        return '<span class="muted">–</span>'
    lo, hi = extent([v for _, v in pts], pad=0.1)
    n = max(len(values) - 1, 1)
    xy = [(2 + i / n * (width - 4), height - 3 - (v - lo) / (hi - lo) * (height - 6)) for i, v in pts]
    body = [f'<path d="M{"L".join(f"{x:.1f},{y:.1f}" for x, y in xy)}" fill="none" stroke="{color}" '
            f'stroke-width="1.6"/>']
    idx = {i for i in marks}
    body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.4" fill="#111827"/>' for (i, _), (x, y) in zip(pts, xy)
             if i in idx]
    return (f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{e(label)}"><title>{e(label)}</title>{"".join(body)}</svg>')


# --------------------------------------------------------------------------------------------- heatmaps
def _lerp(anchors: Sequence[tuple[int, int, int]], t: float) -> tuple[int, int, int]:
    t = min(max(t, 0.0), 1.0) * (len(anchors) - 1)
    i = min(int(t), len(anchors) - 2)
    a, b, u = anchors[i], anchors[i + 1], t - i
    return tuple(round(a[k] + (b[k] - a[k]) * u) for k in range(3))  # type: ignore[return-value]


def colormap(name: str) -> Callable[[float], tuple[int, int, int]]:
    """``viridis`` (t in [0, 1]) or ``diverging`` (t in [0, 1], 0.5 = white), from a 256-entry table."""
    table = _TABLES.get(name)
    if table is None:
        anchors = VIRIDIS if name == "viridis" else DIVERGING
        table = _TABLES[name] = [_lerp(anchors, i / 255) for i in range(256)]
    return lambda t: table[min(255, max(0, int(t * 255 + 0.5)))]


_TABLES: dict[str, list[tuple[int, int, int]]] = {}


def png_data_uri(pixels: Sequence[Sequence[tuple[int, int, int]]]) -> str:
    """An 8-bit RGB PNG of ``pixels`` (rows of (r, g, b)) as a ``data:`` URI (zlib + the PNG chunk framing)."""
    h, w = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(c for px in row for c in px) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def heatmap_panels(panels: Sequence[tuple[str, Sequence[Sequence[float | None]]]], row_labels: Sequence[str], *,
                   col_label: str, vmin: float, vmax: float, cmap: str, cbar_label: str,
                   cbar_fmt: Callable[[float], str] | None = None, cell_w: int = 0, cell_h: int = 0,
                   label: str = "heatmap", col_labels: Sequence[str] | None = None, max_width: int = 940) -> str:
    """One or more heatmaps side by side sharing row labels, with a colour bar.

    Args:
        panels: ``(title, matrix)``; ``matrix[i][j]`` is row i, column j (ragged rows and None are grey).
        col_labels: Column tick labels (default: 1-based indices, thinned).
    """
    cm = colormap(cmap)
    n_rows = max(len(row_labels), 1)
    n_cols = max((len(r) for _, m in panels for r in m), default=1) or 1
    left = 12 + 7 * max((len(s) for s in row_labels), default=4)
    avail = max_width - left - 90 - 18 * len(panels)
    cw = cell_w or max(3, min(26, int(avail / max(len(panels), 1) / n_cols)))
    ch = cell_h or max(6, min(20, int(360 / n_rows)))
    gw, ph = cw * n_cols, ch * n_rows
    pw = max(gw, max((int(6.8 * len(t)) + 6 for t, _ in panels), default=0))  # room for each panel's title
    # Column labels wider than a cell (module names) are written vertically instead of over each other.
    longest = max((len(str(c)) for c in col_labels), default=0) if col_labels else 0
    vertical = col_labels is not None and 6.2 * longest > cw
    top, bottom = 30, (40 + int(6.2 * longest) if vertical else 40)
    width = left + len(panels) * (pw + 18) + 80
    height = top + ph + bottom
    body = []
    step = max(1, math.ceil(n_rows * 12 / ph)) if ph else 1
    for i, name in enumerate(row_labels):
        if i % step == 0:
            body.append(f'<text x="{left - 6}" y="{top + ch * (i + 0.5) + 4:.1f}" text-anchor="end" font-size="11" '
                        f'fill="#111827">{e(name)}</text>')
    col_step = max(1, math.ceil(n_cols * (14 if vertical else 22) / gw))
    for k, (title, matrix) in enumerate(panels):
        x0 = left + k * (pw + 18)
        scale = 1.0 / ((vmax - vmin) or 1)
        pixels = [[cm((v - vmin) * scale) if v is not None and v == v else MISSING  # v == v: not NaN
                   for v in (list(matrix[i]) + [None] * (n_cols - len(matrix[i])) if i < len(matrix) else
                             [None] * n_cols)] for i in range(n_rows)]
        body.append(f'<text x="{x0 + gw / 2:.1f}" y="{top - 10}" text-anchor="middle" font-size="12" '
                    f'font-weight="600" fill="#111827">{e(title)}</text>')
        body.append(f'<image x="{x0}" y="{top}" width="{gw}" height="{ph}" preserveAspectRatio="none" '
                    f'style="image-rendering:pixelated" href="{png_data_uri(pixels)}"/>')
        body.append(f'<rect x="{x0}" y="{top}" width="{gw}" height="{ph}" fill="none" stroke="#6b7280"/>')
        for j in range(0, n_cols, col_step):
            text = col_labels[j] if col_labels else str(j + 1)
            if vertical:
                body.append(f'<text transform="translate({x0 + cw * (j + 0.5) + 3.5:.1f},{top + ph + 6}) rotate(-90)" '
                            f'text-anchor="end" font-size="10.5" fill="#374151">{e(text)}</text>')
            else:
                body.append(f'<text x="{x0 + cw * (j + 0.5):.1f}" y="{top + ph + 14}" text-anchor="middle" '
                            f'font-size="10.5" fill="#374151">{e(text)}</text>')
    span = len(panels) * (pw + 18) - 18
    body.append(f'<text x="{left + span / 2:.1f}" y="{height - 8}" text-anchor="middle" font-size="12" '
                f'fill="#111827">{e(col_label)}</text>')
    # colour bar
    cx = left + len(panels) * (pw + 18) + 4
    bar = [[cm(1 - i / 63)] for i in range(64)]
    body.append(f'<image x="{cx}" y="{top}" width="12" height="{ph}" preserveAspectRatio="none" '
                f'href="{png_data_uri(bar)}"/>')
    body.append(f'<rect x="{cx}" y="{top}" width="12" height="{ph}" fill="none" stroke="#6b7280"/>')
    ticks = nice_ticks(vmin, vmax, 4 if ph > 80 else 2)
    fmt = cbar_fmt or (lambda v: fmt_tick(v, ticks))
    for t in ticks:
        py = top + ph - (t - vmin) / ((vmax - vmin) or 1) * ph
        body.append(f'<text x="{cx + 16}" y="{py + 4:.1f}" font-size="10.5" fill="#374151">{e(fmt(t))}</text>')
    body.append(f'<text transform="translate({width - 6},{top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" '
                f'font-size="11" fill="#111827">{e(cbar_label)}</text>')
    return svg(width, height, body, label)


def small_multiples(panels: Sequence[tuple[str, Sequence[tuple[str, str, Sequence[float]]]]], *, x_label: str,
                    y_label: str, cols: int = 4, cell: tuple[int, int] = (210, 120), label: str = "small multiples",
                    legend_items: Sequence[tuple[str, str, str]] = ()) -> str:
    """A grid of small line charts, one per panel, each with its own y range (labelled at min and max).

    Args:
        panels: ``(title, [(series name, colour, values by index 1..n)])``.
    """
    cols = max(1, min(cols, len(panels)))
    rows = math.ceil(len(panels) / cols)
    cw, chh = cell
    top = 26
    width, height = cols * cw, top + rows * chh + 22
    body = legend(legend_items, 8, 16, width - 16)
    body.append(f'<text x="{width / 2:.0f}" y="{height - 6}" text-anchor="middle" font-size="12" fill="#111827">'
                f'{e(x_label)} (x) · {e(y_label)} (y), each panel on its own y scale</text>')
    for k, (title, series) in enumerate(panels):
        ox, oy = (k % cols) * cw, top + (k // cols) * chh
        vals = [v for _, _, vs in series for v in vs if _finite(v)]
        n = max((len(vs) for _, _, vs in series), default=1)
        top_v = max(vals, default=1.0) or 1.0
        f = Frame(cw, chh, (0.5, n + 0.5), (0.0, top_v * 1.08), left=44, right=8, top=18, bottom=22)
        xt = sorted({1, n} | ({(n + 1) // 2} if n > 2 else set()))
        g = [f'<g transform="translate({ox},{oy})">']
        g += f.axes("", "", xticks=xt, yticks=[0.0, top_v], xfmt=lambda v: str(int(v)), yfmt=lambda v: f"{v:.3g}")
        g.append(f'<text x="{f.l + 2}" y="12" font-size="11.5" font-weight="600" fill="#111827">{e(title)}</text>')
        for name, color, vs in series:
            pts = [(f.x(i + 1), f.y(v)) for i, v in enumerate(vs) if _finite(v)]
            if pts:
                g.append(f'<path d="M{"L".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="none" stroke="{color}" '
                         f'stroke-width="1.8"/>')
                if len(pts) <= 8:  # markers only where they help reading a short line
                    g += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{color}"/>' for x, y in pts]
        g.append("</g>")
        body += g
    return svg(width, height, body, label)
