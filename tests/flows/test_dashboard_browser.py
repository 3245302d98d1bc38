"""The dashboard in a real browser: headless Chromium (the Debian package at /usr/bin/chromium) driven by
Playwright's Python API loads the page with the network cut off, finds every section, opens every adapter,
reports no console error, and follows a live reload. Screenshots go to ``test-artifacts/dashboard/`` at the
repository root (gitignored) for a person to look at.

Skipped, with the reason, where Chromium or Playwright is missing, unless ``CI`` is set (then it fails).
Never run ``playwright install``: the system Chromium is used.
"""

from __future__ import annotations

import os
import re
import time
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from spectral_surgery.flows.dashboard import render_dashboard
from spectral_surgery.flows.dashboard.server import start_dashboard_server
from tests.flows.dashboard_support import (SECTIONS, build_flow_registry, build_generated_registry,
                                           copy_registry)

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
LOCAL = {"127.0.0.1", "localhost"}


def _unavailable(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} not found (install the Debian package: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install playwright; no browser download "
                     "needed, the system Chromium is used)")
    with sync_playwright() as p:
        try:
            # Every request that is not to this machine goes to a dead proxy: the page must render with no network.
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS,
                                  proxy={"server": "http://127.0.0.1:9", "bypass": "127.0.0.1,localhost"})
        except Exception as exc:  # e.g. a Chromium that does not start in this sandbox
            _unavailable(f"{CHROMIUM} did not start: {type(exc).__name__}: {exc}")
        yield b
        b.close()


class Watch:
    """A page with its console errors, uncaught exceptions and every URL it requested."""

    def __init__(self, browser, width: int = 1360, height: int = 1000) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def external(self) -> list[str]:
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("file", "data", "blob"):
                continue
            if parts.scheme in ("http", "https") and parts.hostname in LOCAL:
                continue
            out.append(url)
        return out

    def shot(self, name: str, selector: str | None = None, full_page: bool = False) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        if selector:
            self.page.locator(selector).screenshot(path=str(path))
        else:
            self.page.screenshot(path=str(path), full_page=full_page)
        assert path.stat().st_size > 1000
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def flow(prefect_harness, fleet_base, tmp_path_factory):
    return build_flow_registry(tmp_path_factory.mktemp("dash_flow"), fleet_base)


def open_adapter(page, slug: str) -> None:
    """Click the adapter's summary and wait until its gzip'd body is inflated (the page's own script)."""
    page.locator(f"#{slug} > summary").click()
    page.wait_for_selector(f"#{slug}[open] .lazy[data-state=ready]", timeout=15000)


def test_static_page_in_chromium(browser, flow, tmp_path):
    reg, _ = flow
    out = render_dashboard(reg, tmp_path / "dashboard.html")
    w = Watch(browser)
    try:
        page = w.page
        page.goto(out.as_uri(), wait_until="load")
        for sid in SECTIONS:
            assert page.locator(f"#{sid}").is_visible(), f"section #{sid} is not visible"
        assert page.locator("nav a").count() == len(SECTIONS)
        assert page.locator("#fleet-table tbody tr").count() == 4
        # Charts are laid out (non-empty boxes), with text (axes, legends) rendered.
        for label in ("adapter versions per nightly run", "Reward vs risk per policy",
                      "Guided policy gain vs random control gain", "principal direction similarity"):
            box = page.locator(f'svg[aria-label="{label}"]').bounding_box()
            assert box and box["width"] > 200 and box["height"] > 100, label
        w.shot("static-top")
        w.shot("static-diagnostics", "#diagnostics")
        # The fleet filter hides the rows that do not match.
        page.fill("#fleet-filter", "failed")
        visible = [r for r in page.locator("#fleet-table tbody tr").all() if r.is_visible()]
        assert len(visible) == 1 and "ad-bad" in visible[0].inner_text()
        page.fill("#fleet-filter", "")
        # Every adapter section opens and inflates; sections with decisions have their charts.
        charts = {}
        for slug in ("adapter-ad-win", "adapter-ad-mixed", "adapter-ad-bad", "adapter-ad-gone"):
            open_adapter(page, slug)
            charts[slug] = page.locator(f"#{slug} svg.chart").count()
        assert charts["adapter-ad-win"] >= 6 and charts["adapter-ad-mixed"] >= 6  # trend, forest, σ, |g|, agreement
        # The σ and sensitivity charts, shipped as JSON, are drawn by the page on opening.
        for label, texts in (("singular values before and after", ["singular value σ", "σ before (unedited)"]),
                             ("σ'/σ per module and component", ["σ'/σ", "component k (σ descending)"]),
                             ("sensitivity magnitude", ["relative |g|"]), ("sign agreement", ["fraction agreeing"])):
            chart = page.locator(f'#adapter-ad-win svg.chart[aria-label*="{label}"]')
            assert chart.count() == 1, label
            drawn = chart.locator("text").all_text_contents()
            assert all(any(t in d for d in drawn) for t in texts), (label, drawn)
        images = page.locator("#adapter-ad-win svg.chart image")
        assert images.count() >= 6 and all(images.nth(i).get_attribute("href").startswith("data:image/png;base64,")
                                           for i in range(images.count()))
        assert page.locator("#adapter-ad-win script.js-chart").count() == 0  # every placeholder replaced
        # The runs table, drawn from JSON: scores with intervals, p-values and verdicts.
        runs = page.locator("#adapter-ad-win table").first.inner_text()
        assert "unedited (baseline)" in runs and "p<0.001" in runs and "promoted" in runs
        assert "rejected" in runs or "held" in runs
        assert page.locator("#fleet-table svg.spark").count() == 2  # the two adapters with a production score
        body = page.locator("#adapter-ad-mixed").inner_text()
        for text in ("Runs and candidates", "Singular values before → after", "Sensitivity profile",
                     "manual override", "rollback", "alice", "bob"):
            assert text in body, text
        assert "Failures (2)" in page.locator("#adapter-ad-bad").inner_text()
        w.shot("static-adapter-ad-win", "#adapter-ad-win")
        w.shot("static-adapter-ad-mixed", "#adapter-ad-mixed")
        w.shot("static-full", full_page=True)
        # A link to an adapter (URL hash) opens its section.
        page.goto(out.as_uri() + "#adapter-ad-win", wait_until="load")
        page.wait_for_selector("#adapter-ad-win[open] .lazy[data-state=ready]", timeout=15000)
        assert w.errors == [], w.errors
        assert w.external() == [], w.external()
    finally:
        w.close()


def _drawn(svg_text: str) -> dict:
    """What a chart shows: its size, accessible name, non-empty texts and how many images, paths and dots."""
    return {"viewBox": re.search(r'viewBox="([^"]+)"', svg_text).group(1),
            "label": unescape(re.search(r'aria-label="([^"]*)"', svg_text).group(1)),
            "texts": [t for t in (unescape(re.sub(r"<[^>]+>", "", x))
                                  for x in re.findall(r"<text[^>]*>(.*?)</text>", svg_text, re.S)) if t],
            "images": svg_text.count("<image"), "paths": svg_text.count("<path"),
            "dots": svg_text.count("<circle")}


def test_the_page_draws_the_charts_python_would(browser, flow, tmp_path):
    """The page's script (flows/dashboard/charts_js.py) mirrors flows/dashboard/svg.py: for each σ / sensitivity
    chart of a real adapter, the SVG Chromium draws from the shipped JSON has the size, texts (titles, ticks,
    legend, colour bar) and marks that the Python primitive writes from the same values."""
    import spectral_surgery.flows.dashboard.svg as sv
    from tests.flows.dashboard_support import chart_specs, unpack_sections

    reg, _ = flow
    out = render_dashboard(reg, tmp_path / "dashboard.html")
    specs = [(k, s) for k, s in chart_specs(unpack_sections(out.read_text(encoding="utf-8"))["adapter-ad-win"])
             if k != "runs"]
    assert sorted(k for k, _ in specs) == ["forest", "heatmap", "heatmap", "heatmap", "line", "multiples"]
    w = Watch(browser)
    try:
        w.page.goto(out.as_uri(), wait_until="load")
        for kind, spec in specs:
            js = w.page.evaluate(f"s => SSCharts.{kind}(s)", spec)
            if kind == "line":
                labels = dict(zip(spec["xticks"], spec["xlabels"]))
                py = sv.line_chart(
                    [{**se, "points": [tuple(p) for p in se["points"]],
                      "titles": dict(zip([p[0] for p in se["points"]], se.get("titles") or []))}
                     for se in spec["series"]], x_label=spec["x_label"], y_label=spec["y_label"],
                    xticks=spec["xticks"], xfmt=lambda v: labels.get(v, ""), markers=spec["markers"],
                    width=spec["width"], height=spec["height"], label=spec["label"])
            elif kind == "forest":
                py = sv.forest([{**p, "values": [tuple(v) if v else None for v in p["values"]],
                                 "band": tuple(p["band"]) if p.get("band") else None} for p in spec["panels"]],
                               spec["rows"], width=spec["width"], label=spec["label"])
            elif kind == "heatmap":
                py = sv.heatmap_panels(
                    [(t, m) for t, m in spec["panels"]], spec["rows"], col_label=spec["col_label"],
                    vmin=spec["vmin"], vmax=spec["vmax"], cmap=spec["cmap"], cbar_label=spec["cbar_label"],
                    cbar_fmt=(lambda t: f"×{2 ** t:.2g}") if spec["cbar_ratio"] else None, label=spec["label"],
                    max_width=spec["max_width"])
            else:
                py = sv.small_multiples([(t, [tuple(x) for x in series]) for t, series in spec["panels"]],
                                        x_label=spec["x_label"], y_label=spec["y_label"], label=spec["label"],
                                        legend_items=[tuple(i) for i in spec["legend"]])
            assert _drawn(js) == _drawn(py), spec["label"]
        for values, marks in (([0.41, 0.43, None, 0.47], [1]), ([0.5], []), ([0.3, 0.3], [0, 1])):  # sparklines
            js = w.page.evaluate("a => SSCharts.spark(a[0], a[1], 'trend')", [values, marks])
            py = sv.sparkline(values, marks=marks, label="trend")
            assert re.sub(r"\d+\.\d", "#", js) == re.sub(r"\d+\.\d", "#", py)  # same marks (coordinates ±0.1)
        assert w.errors == [], w.errors
    finally:
        w.close()


def test_200_adapter_page_in_chromium(browser, fleet_base, tmp_path_factory, tmp_path):
    reg, _ = build_generated_registry(tmp_path_factory.mktemp("dash_fleet"), fleet_base)
    out = render_dashboard(reg, tmp_path / "fleet.html")
    w = Watch(browser)
    try:
        page = w.page
        t0 = time.perf_counter()
        page.goto(out.as_uri(), wait_until="load")
        load_s = time.perf_counter() - t0
        print(f"\nChromium loaded the 200-adapter page ({out.stat().st_size / 1e6:.1f} MB) in {load_s:.2f}s")
        assert page.locator("#fleet-table tbody tr").count() == 200
        assert page.locator("details.adapter").count() == 200
        for sid in SECTIONS:
            assert page.locator(f"#{sid}").is_visible(), sid
        page.fill("#fleet-filter", "fleet-01")
        assert len(page.locator("#fleet-table tbody tr").evaluate_all(VISIBLE_NAMES)) == 10
        page.fill("#fleet-filter", "")
        open_adapter(page, "adapter-fleet-real")
        assert page.locator("#adapter-fleet-real svg.chart").count() >= 6
        w.shot("fleet200-top")
        w.shot("fleet200-diagnostics", "#diagnostics")
        w.shot("fleet200-adapter", "#adapter-fleet-real")
        assert w.errors == [], w.errors
        assert w.external() == [], w.external()
    finally:
        w.close()


def test_served_page_reloads_itself_when_the_registry_changes(browser, flow, tmp_path):
    reg = copy_registry(flow[0], tmp_path / "registry")
    server = start_dashboard_server(reg, port=0, interval_s=0.3, cache_dir=tmp_path / "cache")
    w = Watch(browser)
    try:
        page = w.page
        page.goto(server.url, wait_until="load")
        old = page.evaluate("document.body.dataset.version")
        assert old == server.version and page.locator("#live").is_visible()
        open_adapter(page, "adapter-ad-mixed")
        # (ad-mixed: ad-win's first version was overwritten in place, so rolling ad-win back is refused)
        reg.rollback("ad-mixed", actor="carol", reason="browser reload test")
        deadline = time.monotonic() + 30
        new = old
        while new == old:  # the page polls /version and reloads itself
            assert time.monotonic() < deadline, "the page did not reload within 30 s of the registry change"
            time.sleep(0.2)
            try:
                new = page.evaluate("document.body.dataset.version")
            except Exception:  # the page is mid-reload
                pass
        page.wait_for_load_state("load")
        assert new == server.version
        # The open section stays open across the reload and shows the change.
        page.wait_for_selector("#adapter-ad-mixed[open] .lazy[data-state=ready]", timeout=15000)
        assert "carol" in page.locator("#adapter-ad-mixed").inner_text()
        w.shot("served-after-reload")
        w.shot("served-adapter-ad-mixed", "#adapter-ad-mixed")
        assert w.errors == [], w.errors
        assert w.external() == [], w.external()
        assert any(urlsplit(u).path == "/version" for u in w.requests)
    finally:
        w.close()
        server.shutdown()
        reg.close()


# The first word of each visible row among the first ``limit`` (visible as Playwright's is_visible() has it: a
# non-empty box and not visibility:hidden), in one call: a locator call per row is a round trip to Chromium, and a
# thousand of them were most of the 1,000-adapter test's time on a busy machine.
VISIBLE_NAMES = """(rows, limit) => rows.slice(0, limit ?? rows.length).filter(r => {
  const b = r.getBoundingClientRect();
  return b.width > 0 && b.height > 0 && getComputedStyle(r).visibility !== "hidden";
}).map(r => r.innerText.trim().split(/\\s+/)[0])"""
WIDTH = 1280  # the narrowest desktop the dashboard must fit with no clipped column (issue 27 §5)
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth, out = [];
  if (document.documentElement.scrollWidth > width) out.push('page ' + document.documentElement.scrollWidth);
  document.querySelectorAll('table').forEach((t) => {
    const r = t.getBoundingClientRect(), box = t.parentElement.getBoundingClientRect();
    if (!r.width) return;  // not shown (a closed adapter section)
    if (r.right > width + 1 || t.scrollWidth > box.width + 1 || r.right > box.right + 1)
      out.push((t.id || t.closest('section').id) + ' ' + Math.round(r.right) + '/' + Math.round(box.right));
  });
  return out;
}"""


def test_1000_adapter_page_is_paged_and_fits_1280px_in_chromium(browser, fleet_base, tmp_path):
    """1,000 adapters: the long tables show 50 rows at a time (the filter searches all of them), and at 1,280 px no
    table is wider than the page or its box (no clipped column). The render and load times are printed (measured:
    docs/fleet.md, with ``tests/benchmarks/bench_dashboard.py``)."""
    from spectral_surgery.registry.repository import Registry
    from tests.flows.dashboard_support import generate_fleet
    from tests import tiny

    reg = Registry.open(None, tmp_path / "data")
    generate_fleet(reg, adapters=1000, nights=3, full_spectra_nights=1,
                   real_adapter=("fleet-real", tiny.save_adapter(fleet_base, tmp_path / "real", seed=7)))
    t0 = time.perf_counter()
    out = render_dashboard(reg, tmp_path / "fleet1000.html")
    render_s = time.perf_counter() - t0
    w = Watch(browser, width=WIDTH, height=900)
    try:
        page = w.page
        t0 = time.perf_counter()
        page.goto(out.as_uri(), wait_until="load")
        load_s = time.perf_counter() - t0
        print(f"\n1,000 adapters: rendered in {render_s:.2f} s ({out.stat().st_size / 1e6:.1f} MB), Chromium loaded it "
              f"in {load_s:.2f} s")
        rows = page.locator("#fleet-table tbody tr")
        assert rows.count() == 1000
        assert len(rows.evaluate_all(VISIBLE_NAMES, 60)) == 50
        info = page.locator("#fleet-table-pager .info")
        assert info.inner_text() == "1–50 of 1000"
        page.click("#fleet-table-pager .next")
        assert info.inner_text() == "51–100 of 1000" and rows.nth(50).is_visible() and not rows.nth(0).is_visible()
        page.fill("#fleet-filter", "fleet-09")  # fleet-090 … fleet-099 and fleet-0900 …: the filter spans all pages
        shown = rows.evaluate_all(VISIBLE_NAMES)
        assert shown and all(name.startswith("fleet-09") for name in shown) and len(shown) <= 50
        page.fill("#fleet-filter", "")
        assert info.inner_text() == "1–50 of 1000"
        assert page.locator("#evidence-table-pager .info").inner_text().endswith(
            f"of {page.locator('#evidence-table tbody tr').count()}")
        for sid in SECTIONS:
            assert page.locator(f"#{sid}").is_visible(), sid
        open_adapter(page, "adapter-fleet-real")
        assert page.evaluate(OVERFLOW) == []
        w.shot("fleet1000-1280-top")
        w.shot("fleet1000-1280-evidence", "#evidence")
        assert w.errors == [], w.errors
        assert w.external() == [], w.external()
    finally:
        w.close()
        reg.close()
