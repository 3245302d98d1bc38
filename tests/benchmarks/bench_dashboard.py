"""Dashboard benchmark (run on demand, not a timed test): render a large generated registry, against a budget.

    python -m tests.benchmarks.bench_dashboard [--adapters 200] [--nights 30] [--full-spectra-nights 2] [--reps 3]
        [--registry DIR] [--chromium] [--json out.json]

A registry of ``adapters`` × ``nights`` (every night a decision with its evaluations, promotions, overrides,
rollbacks and failures; the latest ``full-spectra-nights`` with spectra and sensitivities of every module) is
generated with the test suite's generator, then ``render_dashboard`` runs ``reps`` times. Reported: the render
times (wall, and this process's CPU seconds, which a machine shared with other jobs inflates less), the page size
and the share of the 5 s budget (issue 6) the best render used; with ``--chromium``, the seconds headless Chromium
(``/usr/bin/chromium`` through Playwright, network cut off) takes to load the page and to open one adapter's section
(inflate it and draw its charts).

The full history of docs/fleet.md is ``--adapters 1000 --nights 3 --full-spectra-nights 1`` (what
``tests/flows/test_dashboard_browser.py`` renders). ``--registry DIR`` keeps the generated registry in ``DIR`` and
reuses it when it is there, so two versions of the code can be timed on the same rows, one after the other
(``PYTHONPATH`` picks the version). The first render of a process also imports torch for the alignment
diagnostic: compare the later reps.
Its functional checks (every adapter on the page, self-contained) are in tests/flows/test_dashboard.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

BUDGET_S = 5.0
CHROMIUM = "/usr/bin/chromium"


def _registry(root: Path, args: argparse.Namespace):
    """``(registry, counts, seconds to generate)``: generated under ``root``, or reused from it."""
    from spectral_surgery.registry.repository import Registry
    from tests import tiny
    from tests.flows.dashboard_support import generate_fleet

    counts_file = root / "counts.json"
    if counts_file.is_file():
        return Registry.open(None, root / "data"), json.loads(counts_file.read_text()), 0.0
    root.mkdir(parents=True, exist_ok=True)
    base = tiny.save_base(root / "base")
    real = tiny.save_adapter(base, root / "fleet-real", seed=7)
    reg = Registry.open(None, root / "data")
    t0 = time.perf_counter()
    counts = generate_fleet(reg, adapters=args.adapters, nights=args.nights,
                            full_spectra_nights=args.full_spectra_nights, real_adapter=("fleet-real", real))
    generated = time.perf_counter() - t0
    counts_file.write_text(json.dumps(counts))
    return reg, counts, generated


def chromium_load(page_path: Path, slug: str = "adapter-fleet-real") -> dict:
    """Seconds headless Chromium takes to load ``page_path`` and to open the adapter section ``slug``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"],
                                    proxy={"server": "http://127.0.0.1:9", "bypass": "127.0.0.1,localhost"})
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            t0 = time.perf_counter()
            page.goto(page_path.as_uri(), wait_until="load", timeout=600_000)  # a loaded machine is slow
            load_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            page.locator(f"#{slug} > summary").click()
            page.wait_for_selector(f"#{slug}[open] .lazy[data-state=ready]", timeout=600_000)
            open_s = time.perf_counter() - t0
            charts = page.locator(f"#{slug} svg.chart").count()
        finally:
            browser.close()
    return {"load_s": round(load_s, 2), "open_section_s": round(open_s, 2), "charts_in_section": charts}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapters", type=int, default=200)
    ap.add_argument("--nights", type=int, default=30)
    ap.add_argument("--full-spectra-nights", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--registry", type=Path, help="keep (or reuse) the generated registry here")
    ap.add_argument("--chromium", action="store_true", help="also time loading the page in headless Chromium")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from spectral_surgery.flows.dashboard import render_dashboard

    with tempfile.TemporaryDirectory() as tmp:
        root = args.registry or Path(tmp) / "fleet"
        reg, counts, generated = _registry(root, args)
        times, cpu = [], []
        for i in range(args.reps):
            t, c = time.perf_counter(), time.process_time()
            out = render_dashboard(reg, Path(tmp) / "site" / f"dashboard-{i}.html")
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        size_mb = out.stat().st_size / 1e6
        reg.close()
        browser = chromium_load(out) if args.chromium else None
    result = {"adapters": args.adapters, "nights": args.nights, "full_spectra_nights": args.full_spectra_nights,
              "decisions": counts["decisions"], "evaluations": counts["evaluations"],
              "generate_s": round(generated, 1), "render_s": [round(x, 2) for x in times],
              "best_render_s": round(min(times), 2), "render_cpu_s": [round(x, 2) for x in cpu],
              "page_mb": round(size_mb, 1), "budget_s": BUDGET_S,
              "share_of_budget": round(min(times) / BUDGET_S, 3), "chromium": browser}
    print(f"{args.adapters} adapters x {args.nights} nights ({counts['decisions']} decisions, "
          f"{counts['evaluations']} evaluations; generated in {generated:.1f} s): render "
          f"{', '.join(f'{x:.2f} s' for x in times)} (CPU {', '.join(f'{x:.2f} s' for x in cpu)}); "
          f"page {size_mb:.1f} MB; best = "
          f"{min(times) / BUDGET_S:.0%} of the {BUDGET_S:g} s budget"
          + (f"; Chromium: load {browser['load_s']:.2f} s, open a section {browser['open_section_s']:.2f} s "
             f"({browser['charts_in_section']} charts)" if browser else ""))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
