"""Dashboard benchmark (run on demand, not a timed test): render a large generated registry, against a budget.

    python -m tests.benchmarks.bench_dashboard [--adapters 200] [--nights 30] [--reps 3] [--json out.json]

A registry of ``adapters`` × ``nights`` (every night a decision with its evaluations, promotions, overrides,
rollbacks and failures) is generated with the test suite's generator, then ``render_dashboard`` runs ``reps``
times. Reported: the render times, the page size, and the share of the 5 s budget (issue 6) the best render used.
Its functional checks (every adapter on the page, self-contained) are in tests/flows/test_dashboard.py.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

BUDGET_S = 5.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--adapters", type=int, default=200)
    ap.add_argument("--nights", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from spectral_surgery.flows.dashboard import render_dashboard
    from tests import tiny
    from tests.flows.dashboard_support import build_generated_registry

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = tiny.save_base(root / "base")
        t0 = time.perf_counter()
        reg, counts = build_generated_registry(root / "fleet", base, adapters=args.adapters, nights=args.nights)
        generated = time.perf_counter() - t0
        times = []
        for i in range(args.reps):
            t = time.perf_counter()
            out = render_dashboard(reg, root / f"dashboard-{i}.html")
            times.append(time.perf_counter() - t)
        size_mb = out.stat().st_size / 1e6
        reg.close()
    result = {"adapters": args.adapters, "nights": args.nights, "decisions": counts["decisions"],
              "evaluations": counts["evaluations"], "generate_s": round(generated, 1),
              "render_s": [round(x, 2) for x in times], "best_render_s": round(min(times), 2),
              "page_mb": round(size_mb, 1), "budget_s": BUDGET_S, "share_of_budget": round(min(times) / BUDGET_S, 3)}
    print(f"{args.adapters} adapters x {args.nights} nights ({counts['decisions']} decisions, "
          f"{counts['evaluations']} evaluations; generated in {generated:.1f} s): render "
          f"{', '.join(f'{x:.2f} s' for x in times)}; page {size_mb:.1f} MB; best = "
          f"{min(times) / BUDGET_S:.0%} of the {BUDGET_S:g} s budget")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
