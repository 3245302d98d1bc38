"""The demo's default budget from measured costs and discordance (run on demand, not a timed test).

    python -m tests.benchmarks.bench_budget measure [--sizes 6,60,5/16,300,10] [--data-dir DIR] [--json costs.json]
    python -m tests.benchmarks.bench_budget table costs.json [--target 3] [--max-seconds 3846]

``measure`` runs the real nightly (one-pass scoring, the default ladder, n_calib 128, the default demo fleet on
the bundled SmolLM2-135M-Instruct, torch on ONE thread) twice in one registry, at two small budgets
``task_limit,ss_mc,guard``; the second run reuses the first's calibration and candidates (they are keyed by what
determines them, not by the limits) and scores every arm again at the larger limits. Recorded per adapter and
evaluation kind (task, guard): the benchmark, documents per arm, arms scored and the seconds scoring them (the
evaluations' recorded seconds); per run its wall and CPU seconds; and from the gate's recorded statistics, every
promotable candidate's discordant rate ψ (documents where it and the reference differ, over n) against each
reference it must beat (baseline, best random control, global scalar), and m, the candidates Holm corrects over.

``table`` turns that into a per-document cost model (per adapter and kind: seconds = a + b·docs, fitted through the
two runs; non-scoring seconds per adapter from the first run, calibration and editing included), all in
single-thread CPU seconds (each run's wall seconds times its CPU/wall share, so other processes on the cores do not
count), forecasts the whole nightly at any budget, and sizes ``ss_mc`` so that the gate's MDE
(:func:`tasks.decision.power.gate_mde`: Holm over m, the worst reference, power 0.8) at the measured ψ is at most
``--target`` points. It prints, for the old and the proposed default: family, benchmark, docs, ψ, MDE, forecast
seconds. Re-run both after the next speed-up.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MC = "ss_mc"
MC_DOCS = 1205  # the suite's size: no budget can score more

# ψ of the REAL default night: docs/demo.md's evidence table of the default demo nightly (2026-12-03, commit 97d0fb2,
# 200 ss_mc documents, real candidates of the 36-step adapters). Per (adapter, candidate, reference): the arms'
# task means (%), the gain's 95% Newcombe interval (pts) and the one-sided exact McNemar p, as printed there.
# :func:`discordant_count` recovers the discordant documents from them (the registry of that run is not kept).
EVIDENCE_N = 200
EVIDENCE = (  # adapter, candidate, reference, mean_candidate, mean_reference, ci_low, ci_high, p
    ("demo-commonsense", "abs_select", "baseline", 37.0, 38.0, -2.7, 0.7, 1.0),
    ("demo-commonsense", "abs_select", "global_scalar", 37.0, 41.5, -8.6, -0.4, 0.994),
    ("demo-commonsense", "smooth_abs", "baseline", 37.0, 38.0, -2.7, 0.7, 1.0),
    ("demo-commonsense", "smooth_abs", "global_scalar", 37.0, 41.5, -8.6, -0.4, 0.994),
    ("demo-commonsense", "grad_direction", "baseline", 39.5, 38.0, -2.2, 5.1, 0.291),
    ("demo-commonsense", "grad_direction", "global_scalar", 39.5, 41.5, -4.9, 0.9, 0.965),
    ("demo-commonsense", "global_scalar", "baseline", 41.5, 38.0, -0.4, 7.4, 0.0592),
    ("demo-commonsense-x3", "abs_select", "baseline", 26.0, 27.5, -4.4, 1.3, 0.938),
    ("demo-commonsense-x3", "abs_select", "global_scalar", 26.0, 38.0, -19.6, -4.2, 0.999),
    ("demo-commonsense-x3", "smooth_abs", "baseline", 25.5, 27.5, -4.7, 0.7, 0.984),
    ("demo-commonsense-x3", "smooth_abs", "global_scalar", 25.5, 38.0, -20.0, -4.8, 1.0),
    ("demo-commonsense-x3", "grad_direction", "baseline", 28.0, 27.5, -5.8, 6.8, 0.5),
    ("demo-commonsense-x3", "grad_direction", "global_scalar", 28.0, 38.0, -17.5, -2.3, 0.996),
    ("demo-commonsense-x3", "global_scalar", "baseline", 38.0, 27.5, 3.0, 17.8, 0.00432),
)  # the best random control's columns equal the baseline's on both adapters (that table): the same ψ


def discordant_count(n: int, mean_a: float, mean_b: float, ci_low: float, ci_high: float, p_value: float) -> int:
    """The discordant documents ``n10 + n01`` of a printed exact McNemar comparison of arm a vs arm b.

    Every D of the right parity gives a 2x2 table with those means; the one whose exact one-sided p-value
    (:func:`tasks.decision.stats.mcnemar_exact`'s binomial test) and Newcombe interval
    (:func:`tasks.decision.stats.newcombe_paired_ci`) are closest to the printed ones (points, 3-digit p) wins.

    Args:
        n: Documents.
        mean_a: Arm a's accuracy in %.
        mean_b: Arm b's accuracy in %.
        ci_low: Lower end of the gain's 95% interval, points.
        ci_high: Upper end, points.
        p_value: One-sided p of "a better than b".

    Returns:
        ``n10 + n01``.
    """
    import math

    from scipy import stats as sps

    from tasks.decision.stats import newcombe_paired_ci

    sa, sb = round(mean_a * n / 100), round(mean_b * n / 100)
    diff = sa - sb
    best: tuple[float, int] | None = None
    for d in range(abs(diff), n + 1, 2):
        n10, n01 = (d + diff) // 2, (d - diff) // 2
        n11 = sa - n10
        n00 = n - n11 - n10 - n01
        if n11 < 0 or n00 < 0:
            continue
        p = 1.0 if d == 0 else float(sps.binomtest(n10, d, 0.5, alternative="greater").pvalue)
        lo, hi = newcombe_paired_ci(n11, n10, n01, n00, 0.95)
        err = abs(math.log(max(p, 1e-12) / max(p_value, 1e-12))) + abs(100 * lo - ci_low) + abs(100 * hi - ci_high)
        if best is None or err < best[0]:
            best = (err, d)
    if best is None:
        raise ValueError(f"no 2x2 table of {n} documents has means {mean_a}% and {mean_b}%")
    return best[1]


def evidence_psi(evidence=EVIDENCE, n: int = EVIDENCE_N) -> dict[tuple[str, str], dict[str, float]]:
    """ψ per (adapter, candidate) against each reference, from printed evidence rows (see :data:`EVIDENCE`)."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for adapter, cand, ref, ma, mb, lo, hi, p in evidence:
        out.setdefault((adapter, cand), {})[ref] = discordant_count(n, ma, mb, lo, hi, p) / n
    return out


# --------------------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class StageCost:
    """Seconds of scoring every arm of one adapter on one evaluation kind: ``fixed + per_doc·docs``."""

    benchmark: str
    fixed: float
    per_doc: float


@dataclass(frozen=True)
class AdapterCost:
    """One adapter of the nightly: its family, non-scoring seconds (calibration, edits, loading) and stage costs."""

    name: str
    family: str
    other: float
    task: StageCost
    guard: StageCost | None


def fit_stage(points: list[tuple[int, float]], benchmark: str) -> StageCost:
    """Line through (docs, seconds) measurements: two sizes give the fixed part; one gives all of it per document."""
    points = sorted(points)
    if len(points) == 1 or points[-1][0] == points[0][0]:
        n, s = points[-1]
        return StageCost(benchmark, 0.0, s / n)
    (n0, s0), (n1, s1) = points[0], points[-1]
    slope = max(0.0, (s1 - s0) / (n1 - n0))
    return StageCost(benchmark, max(0.0, s1 - slope * n1), slope)


def docs_of(benchmark: str, kind: str, task_limit: int, task_limits: dict[str, int], guard_limit: int) -> int:
    """Documents a budget gives one evaluation (as ``RunConfig``: per-benchmark limits first, then task_limit)."""
    return guard_limit if kind == "guard" else task_limits.get(benchmark, task_limit)


def forecast(costs: list[AdapterCost], task_limit: int, task_limits: dict[str, int], guard_limit: int
             ) -> dict[str, float]:
    """Forecast seconds of one nightly per adapter (and ``"total"``) at a budget, from the cost model."""
    out: dict[str, float] = {}
    for a in costs:
        s = a.other + a.task.fixed + a.task.per_doc * docs_of(a.task.benchmark, "task", task_limit, task_limits, 0)
        if a.guard is not None:
            s += a.guard.fixed + a.guard.per_doc * guard_limit
        out[a.name] = s
    out["total"] = sum(out.values())
    return out


# ------------------------------------------------------------------------------------------------- measure
def _record(reg, names: list[str], families: dict[str, str], seen: set[int]) -> dict:
    """Per adapter: (kind -> benchmark, docs, arms, seconds) of the evaluations not in ``seen``; ψ and m of its
    decision's promotable candidates."""
    out = {}
    for name in names:
        rows: dict[str, dict] = {}
        for v in reg.list_versions(name):
            for e in reg.list_evaluations(v.id):
                if e.id in seen:
                    continue
                seen.add(e.id)
                r = rows.setdefault(e.kind, {"benchmark": e.benchmark, "docs": 0, "arms": 0, "seconds": 0.0})
                r["docs"] = max(r["docs"], e.n or 0)
                r["arms"] += 1
                r["seconds"] += e.seconds or 0.0
        calib = [float((c.seconds_json or {}).get("calibrate", 0.0)) for v in reg.list_versions(name)
                 for c in reg.list_candidates(v.id)]
        out[name] = {"family": families[name], "kinds": rows, "calibrate_seconds": max(calib, default=0.0)}
    return out


def _psis(reg, names: list[str], cfg) -> dict:
    """Per adapter: m and, per promotable candidate, ψ against each reference, from the recorded decision."""
    from flows.refine_adapter import adapter_config_hash

    out = {}
    for name in names:
        adapter = reg.get_adapter(name)
        version = reg.list_versions(name)[0]
        decision = reg.decision_of_run(version.id, adapter_config_hash(cfg, adapter))
        stats = (decision.statistics_json or {}) if decision else {}
        promotable = [v for v in stats.get("verdicts", []) if v.get("p_adjusted") is not None]
        cands = {}
        for v in promotable:
            refs = {}
            for ref in ("vs_baseline", "vs_control", "vs_scalar"):
                t = v.get(ref)
                if t and t.get("n_a_only") is not None and t.get("n"):
                    refs[ref] = {"psi": (t["n_a_only"] + t["n_b_only"]) / t["n"], "delta": t["delta"], "n": t["n"]}
            cands[v["name"]] = refs
        out[name] = {"m": len(promotable), "verdict": stats.get("verdict"), "candidates": cands}
    return out


def measure(args: argparse.Namespace, ap: argparse.ArgumentParser) -> dict:
    import torch

    torch.set_num_threads(1)
    args.budget, args.task_limit = "default", None
    budget, cache, fleet, names = prepare_fleet(ap, args)
    from flows import worker
    from flows.demo import demo_config, with_overrides

    budget = with_overrides(budget, n_calib=args.n_calib)
    from flows.refine_fleet import run_nightly
    from tasks.model import BUNDLED_MODEL

    for entry in args.extra or ():  # a built fleet entry (e.g. a smoke-trained one): costs do not depend on training
        spec = json.loads((entry / "fleet.json").read_text())["spec"]
        fleet.append({"name": f"{spec['name']}-{spec['steps']}steps", "task_family": spec["family"],
                      "path": entry / "adapter", "calib_path": entry / "calib.jsonl"})
        names.append(f"demo-{fleet[-1]['name']}")
    families = {f"demo-{a['name']}": a["task_family"] for a in fleet}
    run_dir = Path(tempfile.mkdtemp(prefix="bench-budget-"))
    result: dict = {"adapters": names, "threads": torch.get_num_threads(), "n_calib": budget.n_calib, "runs": []}
    seen: set[int] = set()
    try:
        (run_dir / "models").symlink_to(cache / "models", target_is_directory=True)
        reg = None
        for size in args.sizes.split("/"):
            task, mc, guard = (int(x) for x in size.split(","))
            b = with_overrides(budget, task_limit=task, task_limits=((MC, mc),), guard_limit=guard)
            cfg = demo_config(run_dir, b)
            if reg is None:
                reg = worker.registry(cfg)
                for a in fleet:
                    reg.register_adapter(f"demo-{a['name']}", str(a["path"]), BUNDLED_MODEL, a["task_family"],
                                         config={"calib": str(a["calib_path"]), **a.get("overrides", {})})
            t, c = time.perf_counter(), time.process_time()
            summary = run_nightly(cfg)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            run = {"task_limit": task, MC: mc, "guard_limit": guard, "seconds": wall, "cpu_seconds": cpu,
                   "failed": summary["failed"], "adapters": _record(reg, names, families, seen),
                   "decisions": _psis(reg, names, cfg)}
            run["scoring_seconds"] = sum(k["seconds"] for a in run["adapters"].values() for k in a["kinds"].values())
            result["runs"].append(run)
            print(f"run {size}: {wall:.0f} s wall, {cpu:.0f} s CPU, {run['scoring_seconds']:.0f} s scoring, "
                  f"failed {summary['failed']}", flush=True)
            if args.json:
                args.json.write_text(json.dumps(result, indent=2))
    finally:
        worker.reset()
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


# --------------------------------------------------------------------------------------------------- table
def cost_model(result: dict, n_calib: int = 128) -> list[AdapterCost]:
    """Per adapter, the cost model in single-thread CPU seconds (see the module docstring); calibration (measured
    per adapter) is scaled from the runs' ``n_calib`` examples to ``n_calib``, the rest of the non-scoring seconds
    is split evenly."""
    runs = result["runs"]
    share = [min(1.0, r["cpu_seconds"] / r["seconds"]) for r in runs]
    first = runs[0]
    calib = {n: a.get("calibrate_seconds", 0.0) for n, a in first["adapters"].items()}
    rest = (first["seconds"] - first["scoring_seconds"] - sum(calib.values())) / len(first["adapters"])
    scale = n_calib / result.get("n_calib", n_calib)
    costs = []
    for name in result["adapters"]:
        stages = {}
        for kind in ("task", "guard"):
            pts = [(r["adapters"][name]["kinds"][kind]["docs"], s * r["adapters"][name]["kinds"][kind]["seconds"])
                   for r, s in zip(runs, share) if kind in r["adapters"][name]["kinds"]]
            bench = next((r["adapters"][name]["kinds"][kind]["benchmark"] for r in runs
                          if kind in r["adapters"][name]["kinds"]), None)
            stages[kind] = fit_stage(pts, bench) if pts else None
        other = share[0] * (rest + calib[name] * scale)
        costs.append(AdapterCost(name, first["adapters"][name]["family"], other, stages["task"], stages["guard"]))
    return costs


def measured_psi(result: dict, benchmark: str = MC) -> tuple[int, dict[str, list[float]]]:
    """m and, per candidate name, its worst-reference ψ on ``benchmark`` in each adapter scored on it (last run)."""
    last = result["runs"][-1]
    m, worst = 1, {}
    for name, d in last["decisions"].items():
        if last["adapters"][name]["kinds"]["task"]["benchmark"] != benchmark:
            continue
        m = max(m, d["m"])
        for cand, refs in d["candidates"].items():
            worst.setdefault(cand, []).append(max(r["psi"] for r in refs.values()))
    return m, worst


def table(result: dict, target: float, max_seconds: float, alpha: float = 0.05, power: float = 0.8) -> dict:
    from flows.demo import BUDGETS
    from tasks.decision.power import gate_mde, gate_sample_size

    costs = cost_model(result)
    m, worst = measured_psi(result)
    flat = [p for ps in worst.values() for p in ps]
    psi = statistics.median(flat)
    old = BUDGETS["default"]
    need = min(MC_DOCS, gate_sample_size(target, [psi], alpha, power, m))
    plans = {"old default": (old.task_limit, dict(old.task_limits), old.guard_limit),
             f"ss_mc at MDE <= {100 * target:g} pts": (old.task_limit, {**dict(old.task_limits), MC: need},
                                                        old.guard_limit)}
    print(f"ψ on {MC} (worst reference per candidate, {len(flat)} candidate-adapters, m = {m}): "
          + ", ".join(f"{c} {'/'.join(f'{100 * p:.1f}%' for p in ps)}" for c, ps in worst.items())
          + f"; median {100 * psi:.1f}%")
    out = {"m": m, "psi_median": psi, "psi": worst, "plans": {}}
    for label, (task, limits, guard) in plans.items():
        f = forecast(costs, task, limits, guard)
        print(f"\n{label}: task_limit {task}, {limits}, guard {guard}: forecast {f['total']:.0f} s "
              f"({f['total'] / 60:.1f} min; limit {max_seconds:.0f} s)")
        print("| adapter | family | benchmark | docs | ψ | MDE (pts) | forecast s |")
        print("|---|---|---|---:|---:|---:|---:|")
        for a in costs:
            n = docs_of(a.task.benchmark, "task", task, limits, guard)
            p = max((p for c in worst.values() for p in c), default=None) if a.task.benchmark == MC else None
            mde = f"{100 * gate_mde(n, [psi], alpha, power, m):.1f}" if a.task.benchmark == MC else "–"
            print(f"| {a.name} | {a.family} | {a.task.benchmark} | {n} | "
                  f"{'–' if p is None else f'{100 * psi:.1f}%'} | {mde} | {f[a.name]:.0f} |")
        out["plans"][label] = {"task_limit": task, "task_limits": limits, "guard_limit": guard, "forecast": f}
    return out


def prepare_fleet(ap, args):  # imported lazily: the model stack is heavy and `table` does not need it
    from tests.benchmarks.bench_sequential import prepare_fleet as prep

    return prep(ap, args)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="Time two small real nightlies on the demo fleet; record ψ.")
    m.add_argument("--sizes", default="6,60,5/16,300,10",
                   help="Budgets 'task_limit,ss_mc,guard' of the runs, separated by '/'.")
    m.add_argument("--data-dir", type=Path, default=None, help="Model cache and demo fleet (reused across runs).")
    m.add_argument("--adapters", default=None, help="Demo adapters (comma-separated; default: the whole fleet).")
    m.add_argument("--extra", type=Path, action="append",
                   help="Also refine this built fleet entry (a directory with adapter/, calib.jsonl, fleet.json).")
    m.add_argument("--n-calib", type=int, default=None,
                   help="Calibration examples of the runs (default: the budget's 128; the forecast scales it back).")
    m.add_argument("--json", type=Path, default=None, help="Write the measurements here (after each run).")
    t = sub.add_parser("table", help="Cost model, forecasts and the ss_mc budget from measure's JSON.")
    t.add_argument("costs", type=Path)
    t.add_argument("--target", type=float, default=3.0, help="MDE to reach on ss_mc, in points.")
    t.add_argument("--max-seconds", type=float, default=3846.0,
                   help="Nightly time not to exceed (the old default's measured 3,846 s on 2 cores).")
    args = ap.parse_args(argv)
    if args.cmd == "measure":
        return measure(args, ap)
    return table(json.loads(args.costs.read_text()), args.target / 100, args.max_seconds)


if __name__ == "__main__":
    main()
