"""The demo's default budget from measured per-document costs and the real night's discordance (run on demand).

    python -m tests.benchmarks.bench_budget perdoc ADAPTER_DIR --data-dir DIR [--suites ...] [--json perdoc.json]
    python -m tests.benchmarks.bench_budget table perdoc.json [--target 3] [--max-seconds 3846] [--trade ss_ifeval]

``perdoc`` measures what one-pass scoring costs per document (process CPU seconds, torch on ONE thread, so other
processes on the cores do not count): on the bundled SmolLM2-135M-Instruct, a real demo adapter (e.g. demo-math's)
and the arms a decision builds from it (:func:`tests.benchmarks.bench_eval_arms.build_arms`: bare base, zero
rebuild, σ-edits), scored by :class:`tasks.evaluation.evaluate.LmEvalEvaluator` with ``arms_pass="one_pass"`` at
two document counts per suite: ``ss_mc``, ``ss_arith`` and ``ss_ifeval`` at the 10 task arms of a default decision,
and ``ss_ifeval`` at 3 arms (a guard). Two counts give the fixed seconds (adapter loading, lm-eval set-up) apart.

``table`` builds the default night's cost model (:func:`cost_model`: the five demo adapters, each its visit, its
suite at 10 arms and its guard arms), forecasts a night at any budget (:func:`forecast`), recovers the discordant
rate ψ that the real default night's candidates had on ``ss_mc`` from its printed evidence (:data:`EVIDENCE`,
:func:`discordant_count`), and sizes ``ss_mc`` so that the gate's MDE (:func:`tasks.decision.power.gate_mde`: Holm
over the 4 promotable candidates, the worst reference, power 0.8) is at most ``--target`` points for every
candidate of ``demo-commonsense``, within ``--max-seconds``. It prints, per plan (the old default, the current
one, ss_mc sized): adapter, suite, documents, ψ, MDE and forecast seconds. Re-run both after the next speed-up.
"""

from __future__ import annotations

import argparse
import json
import shutil
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

    from spectral_surgery.tasks.decision.stats import newcombe_paired_ci

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
    """Cost line through (docs, seconds) measurements of the FIRST n documents at two n (one n: all per document).

    The line's intercept is the fixed part. Documents differ (an IFEval prompt that runs to ``max_gen_toks`` and
    makes arms diverge costs several times a short one), so when the later documents cost more than the line
    allows (a negative intercept), the mean over every measured document is the per-document cost instead.
    """
    points = sorted(points)
    n1, s1 = points[-1]
    if len(points) == 1 or points[0][0] == n1:
        return StageCost(benchmark, 0.0, s1 / n1)
    n0, s0 = points[0]
    slope = (s1 - s0) / (n1 - n0)
    fixed = s1 - slope * n1
    return StageCost(benchmark, fixed, slope) if fixed >= 0 and slope >= 0 else StageCost(benchmark, 0.0, s1 / n1)


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


# ------------------------------------------------------------------------------------------------- costs
# Non-scoring seconds of one adapter's visit (Prefect, loading, SVD, calibration, edits, the scalar's γ search, the
# gate): the measured one-pass nightly of docs/evaluation.md (two demo adapters, n_calib 32: 415.8 s wall, 406.0 s
# CPU, 265.8 s of it scoring) gives (415.8 − 265.8)·406.0/415.8 / 2 = 73.2 CPU s per adapter, of which calibration
# was 14.1 s at 32 examples (docs/decisions.md, ``cost_by_data``); calibration grows with its examples.
VISIT_SECONDS, VISIT_N_CALIB, CALIB_SECONDS = (415.8 - 265.8) * 406.0 / 415.8 / 2, 32, 14.1


def visit_seconds(n_calib: int) -> float:
    """Non-scoring CPU seconds of one adapter's visit at ``n_calib`` calibration examples (see above)."""
    return VISIT_SECONDS + CALIB_SECONDS * (n_calib / VISIT_N_CALIB - 1)


# Earlier measurements of the same kind (docs/evaluation.md, bench_eval_arms one pass, K = 10, one thread, CPU s),
# used only for a (suite, arms) that ``perdoc`` did not measure; one size each, so all of it counts per document.
EARLIER = ({"benchmark": MC, "arms": 10, "docs": 60, "cpu_seconds": 65.9},
           {"benchmark": "ss_arith", "arms": 10, "docs": 16, "cpu_seconds": 64.9})


def suite_costs(perdoc: dict, earlier=EARLIER) -> dict[tuple[str, int], StageCost]:
    """Per (benchmark, arms), the line through :func:`perdoc`'s (documents, CPU seconds) measurements; a (benchmark,
    arms) it lacks comes from ``earlier``."""
    pts: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for r in perdoc["rows"]:
        pts.setdefault((r["benchmark"], r["arms"]), []).append((r["docs"], r["cpu_seconds"]))
    for r in earlier:
        if (r["benchmark"], r["arms"]) not in pts:
            pts[(r["benchmark"], r["arms"])] = [(r["docs"], r["cpu_seconds"])]
    return {key: fit_stage(p, key[0]) for key, p in pts.items()}


# The default night (docs/demo.md): per adapter, its family and suite (every one of its 10 task arms scored there),
# and the arms its guard scored in the real default night: 9 on the three adapters whose suite is not the guard
# (2 + 2 + 5; 3 each here), none on the untrained adapter (rejected on task evidence), and none apart on the
# instruction adapter, whose suite is the guard's.
DEFAULT_NIGHT = (
    ("demo-math", "math", "ss_arith", 3),
    ("demo-commonsense", "commonsense", MC, 3),
    ("demo-instruction", "instruction", "ss_ifeval", 0),
    ("demo-commonsense-x3", "commonsense", MC, 3),
    ("demo-math-untrained", "math", "ss_arith", 0),
)
TASK_ARMS, GUARD = 10, "ss_ifeval"
OLD_DEFAULT = (60, {MC: 200}, 30)  # task_limit, task_limits, guard_limit of the night measured at 3,846 s (64 min)
M_DEFAULT = 4  # promotable candidates of the default ladder: abs_select, smooth_abs, grad_direction, global_scalar


def cost_model(perdoc: dict, n_calib: int = 128, night=DEFAULT_NIGHT, overhead: float = 0.0) -> list[AdapterCost]:
    """The night's cost model in single-thread CPU seconds: per adapter its visit, its suite at 10 arms, its guard.

    The guard's arms are scored together (one pass over them); measured at ``k`` arms (:func:`perdoc`), a night's
    ``g`` guard arms cost ``g/k`` of it. ``overhead``: seconds the nightly flow adds to each evaluation (stores,
    registry, lm-eval set-up) beyond what ``perdoc`` times (:func:`flow_overhead`).
    """
    suites = suite_costs(perdoc)
    guard_k = min(k for b, k in suites if b == GUARD)
    g1 = suites[(GUARD, guard_k)]
    costs = []
    for name, family, bench, guard_arms in night:
        guard = None if not guard_arms else StageCost(GUARD, g1.fixed * guard_arms / guard_k + overhead,
                                                      g1.per_doc * guard_arms / guard_k)
        task = suites[(bench, TASK_ARMS)]
        costs.append(AdapterCost(name, family, visit_seconds(n_calib),
                                 StageCost(bench, task.fixed + overhead, task.per_doc), guard))
    return costs


# A measured night to calibrate against: docs/evaluation.md's one-pass nightly (demo-math + demo-commonsense, 30
# documents of each suite, guard 15, n_calib 32) spent 265.8 s wall, × its CPU share 406.0/415.8, scoring.
SMALL_NIGHT = {"adapters": ("demo-math", "demo-commonsense"), "task_limit": 30, "guard_limit": 15,
               "scoring_seconds": 265.8 * 406.0 / 415.8}


def flow_overhead(perdoc: dict, night=SMALL_NIGHT) -> tuple[float, float]:
    """``(forecast scoring seconds of the measured night without overhead, overhead per evaluation)``: what the
    flow adds per evaluation so that the model gives back the night's measured scoring seconds (never negative)."""
    small = [a for a in cost_model(perdoc, 32) if a.name in night["adapters"]]
    scoring = forecast(small, night["task_limit"], {}, night["guard_limit"])["total"] - sum(a.other for a in small)
    evaluations = sum(1 + (a.guard is not None) for a in small)
    return scoring, max(0.0, (night["scoring_seconds"] - scoring) / evaluations)


# --------------------------------------------------------------------------------------------------- table
def worst_psi(psi: dict[tuple[str, str], dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per adapter, per promotable candidate: ψ against the reference the gate finds hardest (the largest)."""
    out: dict[str, dict[str, float]] = {}
    for (adapter, cand), refs in psi.items():
        out.setdefault(adapter, {})[cand] = max(refs.values())
    return out


def fitting_docs(costs: list[AdapterCost], task_limit: int, task_limits: dict[str, int], guard_limit: int,
                 benchmark: str, max_seconds: float) -> int:
    """Most documents of ``benchmark`` a night can score within ``max_seconds``, the rest of the budget fixed."""
    rest = forecast(costs, task_limit, {**task_limits, benchmark: 0}, guard_limit)["total"]
    per_doc = sum(a.task.per_doc for a in costs if a.task.benchmark == benchmark)
    return max(0, int((max_seconds - rest) // per_doc)) if per_doc > 0 else MC_DOCS


def table(perdoc_result: dict, target: float, max_seconds: float, alpha: float = 0.05, power: float = 0.8,
          size_for: str = "demo-commonsense", trade: str = "ss_ifeval") -> dict:
    """Print the plans (the old default; ss_mc sized for ``target``) and return them (see the module docstring)."""
    from spectral_surgery.flows.demo import BUDGETS
    from spectral_surgery.tasks.decision.power import gate_mde, gate_sample_size

    raw, overhead = flow_overhead(perdoc_result)
    costs = cost_model(perdoc_result, overhead=overhead)
    print(f"calibration: the measured small one-pass night scored for {SMALL_NIGHT['scoring_seconds']:.0f} CPU s; "
          f"per-document costs alone give {raw:.0f} s: the flow adds {overhead:.1f} s per evaluation (3 guard arms "
          "per adapter assumed; its guard arms are not recorded)")
    worst = worst_psi(evidence_psi())
    for adapter, cands in worst.items():
        print(f"ψ on {MC}, {adapter} (the real default night, worst reference per candidate): "
              + ", ".join(f"{c} {100 * p:.1f}%" for c, p in cands.items()))
    psi = max(worst[size_for].values())  # every candidate of the trained adapter decides at MDE <= target
    need = min(MC_DOCS, gate_sample_size(target, [psi], alpha, power, M_DEFAULT))
    task, limits, guard = OLD_DEFAULT
    fits = fitting_docs(costs, task, limits, guard, MC, max_seconds)
    print(f"\n{MC} needs {need} documents for MDE <= +{100 * target:g} pts at ψ {100 * psi:.1f}% (Holm over "
          f"{M_DEFAULT}, power {power}); {fits} fit in {max_seconds:.0f} s with the rest of the old default")
    # what ss_mc needs beyond what fits is taken from ``trade``'s documents (the suite whose decisions gain least)
    traded = min(task, fitting_docs(costs, task, {**limits, MC: need}, guard, trade, max_seconds))
    now = BUDGETS["default"]
    plans = {"old default": OLD_DEFAULT, f"{MC} within the old time": (task, {**limits, MC: min(need, fits)}, guard),
             f"{MC} sized, {trade} traded": (task, {**limits, MC: need, trade: traded}, guard),
             "current default": (now.task_limit, dict(now.task_limits), now.guard_limit)}
    out: dict = {"psi": worst, "size_psi": psi, "m": M_DEFAULT, "need": need, "fits": fits, "plans": {}}
    for label, (task, lim, guard) in plans.items():
        f = forecast(costs, task, lim, guard)
        print(f"\n{label}: task_limit {task}, {lim}, guard {guard}: forecast {f['total']:.0f} s "
              f"({f['total'] / 60:.1f} min; limit {max_seconds:.0f} s: "
              f"{'within' if f['total'] <= max_seconds else 'OVER'})")
        print("| adapter | suite | docs | ψ (worst candidate) | MDE (pts) | forecast s |")
        print("|---|---|---:|---:|---:|---:|")
        for a in costs:
            n = docs_of(a.task.benchmark, "task", task, lim, guard)
            p = max(worst[a.name].values()) if a.name in worst else None
            mde = "–" if p is None else f"+{100 * gate_mde(n, [p], alpha, power, M_DEFAULT):.1f}"
            print(f"| {a.name} | {a.task.benchmark} | {n} | {'–' if p is None else f'{100 * p:.1f}%'} | {mde} | "
                  f"{f[a.name]:.0f} |")
        out["plans"][label] = {"task_limit": task, "task_limits": lim, "guard_limit": guard, "forecast": f}
    out["overhead"] = overhead
    print("\nCPU s per document, all arms of one adapter (fixed s): " + "; ".join(
        f"{b} ×{k}: {c.per_doc:.2f} ({c.fixed:.1f})" for (b, k), c in suite_costs(perdoc_result).items())
          + f"; visit {visit_seconds(128):.0f} s per adapter at n_calib 128")
    return out


def perdoc(args: argparse.Namespace) -> dict:
    """Per-document cost of one-pass scoring of K arms of a real demo adapter, per suite at two sizes (CPU seconds).

    The arms are a decision's: the adapter (baseline), the bare base, its zero rebuild and σ-edits by the registered
    policies (:func:`tests.benchmarks.bench_eval_arms.build_arms`' recipe, on ``--adapter`` instead of a random LoRA):
    what scoring costs does not depend on which σ' a policy picks.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spectral_surgery.tasks.evaluation.evaluate import LmEvalEvaluator
    from tests.benchmarks.bench_eval_arms import build_arms

    torch.set_num_threads(1)
    base_dir = args.data_dir / "models" / "smollm2-135m-instruct"
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(base_dir)
    ev = LmEvalEvaluator(model=model, tokenizer=tok, model_id="smol", device="cpu", batch_size=16,
                         max_gen_toks=96, arms_pass="one_pass")
    out: dict = {"adapter": str(args.adapter), "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench_budget-") as tmp:
        work = Path(tmp) / "adapters"
        shutil.copytree(args.adapter, work / "baseline")  # build_arms edits the baseline it finds there
        for item in args.suites.split("/"):
            bench, k, sizes = item.split(":")
            arms = build_arms(base_dir, work, int(k), 0)
            for n in (int(x) for x in sizes.split(",")):
                t, c = time.perf_counter(), time.process_time()
                ev.evaluate("smol", arms, bench, limit=n, out_dir=Path(tmp) / "samples" / f"{bench}-{k}-{n}")
                row = {"benchmark": bench, "arms": int(k), "docs": n, "seconds": time.perf_counter() - t,
                       "cpu_seconds": time.process_time() - c}
                out["rows"].append(row)
                print(row, flush=True)
                if args.json:
                    args.json.write_text(json.dumps(out, indent=2))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("perdoc", help="CPU seconds of one-pass scoring of K arms of a demo adapter, per suite.")
    d.add_argument("adapter", type=Path, help="A PEFT adapter directory (a demo fleet entry's adapter/).")
    d.add_argument("--suites", default="ss_mc:10:10,40/ss_ifeval:10:2,5/ss_arith:10:2,5/ss_ifeval:3:2,5",
                   help="'benchmark:K:docs,docs' items separated by '/'.")
    d.add_argument("--data-dir", type=Path, required=True, help="Where models/smollm2-135m-instruct is cached.")
    d.add_argument("--json", type=Path, default=None)
    t = sub.add_parser("table", help="Cost model, forecasts and the ss_mc budget from measure's JSON.")
    t.add_argument("costs", type=Path, help="perdoc's JSON.")
    t.add_argument("--target", type=float, default=3.0, help="MDE to reach on ss_mc, in points.")
    t.add_argument("--max-seconds", type=float, default=3846.0,
                   help="Nightly time not to exceed (the old default's measured 3,846 s on 2 cores).")
    t.add_argument("--trade", default="ss_ifeval", help="Suite whose documents pay for ss_mc's when they do not fit.")
    args = ap.parse_args(argv)
    if args.cmd == "perdoc":
        return perdoc(args)
    return table(json.loads(args.costs.read_text()), args.target / 100, args.max_seconds, trade=args.trade)


if __name__ == "__main__":
    main()
