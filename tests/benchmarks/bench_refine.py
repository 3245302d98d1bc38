"""Per-adapter refinement benchmark (run on demand, not a test): the product's path against the naive one, in one run.

    python -m tests.benchmarks.bench_refine [--data-dir DIR] [--n-calib 128] [--task-limit N] [--guard-limit N]
        [--max-gen-toks 64] [--adapter commonsense] [--json out.json]

One demo adapter (``tasks.demo.demo_fleet``, trained with ``--train-steps`` steps unless cached: its quality does not
matter for timing) on the bundled SmolLM2-135M-Instruct, five arms: the three paper policies ``abs_select``,
``smooth_abs``, ``grad_direction`` at the calibration seed and the ``random_index`` control at TWO seeds (42 and
43), i.e. ``SurgeryConfig(random_control_seeds=(42, 43))`` planned by ``tasks.decision.arms.plan_arms``. Every
subject (the unedited adapter as ``baseline`` plus the five candidates) is scored on the adapter's family suite
(offline profile) and on the IFEval guard ``ss_ifeval`` at the same fixed limits in both paths.

* product: the base is loaded once (``tasks.model.load_base``); ``spectral_surgery.tasks.surgery.edit.prepare`` runs ONE
thin SVD per module
  and ONE calibration pass; every arm is written from the same (U, σ, V, g) by ``write_candidate``; ONE
  ``LmEvalEvaluator`` bound to the loaded base hot-swaps all six subjects, once for the task suite, once for the
  guard (what ``flows.refine_adapter`` does, minus the registry).
* naive: the baseline gets its own fresh evaluator (its own base load); then for EVERY arm the base is reloaded
  from disk, the SVD and the calibration pass are recomputed, the candidate is written, and a fresh
  ``LmEvalEvaluator`` (another base load from disk) scores it on the task suite and the guard.

Each path runs in its own child process, one after the other (so peak RSS is per path); heavy imports happen before
the clock starts in both. Model time is measured on the product path (and reported for both) by wrapping the
causal-LM class's ``forward`` (every forward: calibration, loglikelihood batches and each generation step, LoRA and
hook work included; nested calls counted once) and ``torch.autograd.backward`` (the calibration backward, including
the per-component sensitivity hooks), each with ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

ARMS_POLICIES = ("abs_select", "smooth_abs", "grad_direction")
CONTROL_SEEDS = (42, 43)
BASELINE = "baseline"


# ------------------------------------------------------------------------------------------------ measuring
class PeakRSS:
    """Samples this process's resident set size in a thread (psutil) every ``interval`` seconds."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process(os.getpid())
        self.interval, self.start = interval, self._proc.memory_info().rss
        self.peak, self._stop = self.start, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


class ModelClock:
    """Wall time inside the causal LM's ``forward`` and inside ``torch.autograd.backward``, by phase.

    ``install(cls)`` replaces ``cls.forward`` (so direct ``.forward`` calls from PEFT's tuner and ``__call__``
    from lm-eval/generate are both seen) and ``torch.autograd.backward`` (what ``Tensor.backward`` calls).
    """

    def __init__(self) -> None:
        self.forward_s = self.backward_s = 0.0
        self.n_forward = self.n_backward = 0
        self._depth = 0
        self.phases: dict[str, dict[str, float]] = {}

    def install(self, model_cls: type) -> None:
        import torch

        orig_fwd, orig_bwd = model_cls.forward, torch.autograd.backward

        @functools.wraps(orig_fwd)  # generate() inspects forward's signature; wraps keeps it
        def forward(*args: Any, **kwargs: Any) -> Any:
            if self._depth:
                return orig_fwd(*args, **kwargs)
            self._depth += 1
            t = time.perf_counter()
            try:
                return orig_fwd(*args, **kwargs)
            finally:
                self.forward_s += time.perf_counter() - t
                self.n_forward += 1
                self._depth -= 1

        @functools.wraps(orig_bwd)
        def backward(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return orig_bwd(*args, **kwargs)
            finally:
                self.backward_s += time.perf_counter() - t
                self.n_backward += 1

        model_cls.forward = forward
        torch.autograd.backward = backward

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Add this block's wall, forward and backward seconds to phase ``name``."""
        t, f, b = time.perf_counter(), self.forward_s, self.backward_s
        try:
            yield
        finally:
            p = self.phases.setdefault(name, {"wall_s": 0.0, "forward_s": 0.0, "backward_s": 0.0, "count": 0})
            p["wall_s"] += time.perf_counter() - t
            p["forward_s"] += self.forward_s - f
            p["backward_s"] += self.backward_s - b
            p["count"] += 1


# ------------------------------------------------------------------------------------------------ the two paths
def _scores(results: dict) -> dict[str, dict]:
    return {name: {"value": r.value, "n": r.n, "outcomes": r.outcomes} for name, r in results.items()}


def _evaluator(plan: dict, **model: Any):
    from spectral_surgery.tasks.evaluation.evaluate import get_evaluator

    return get_evaluator("lm_eval", device="cpu", batch_size=plan["eval_batch_size"],
                         max_gen_toks=plan["max_gen_toks"], **model)  # fmt: skip


def product_path(plan: dict, clock: ModelClock, out: Path) -> dict:
    """Base once, prepare once, every arm from the same spectra, one evaluator over all subjects."""
    from spectral_surgery.tasks.adapter_io import adapter_content_sha256
    from spectral_surgery.tasks.surgery.calibration import load_calibration
    from spectral_surgery.tasks.config import SurgeryConfig
    from spectral_surgery.tasks.surgery.edit import prepare, write_candidate
    from spectral_surgery.tasks.model import load_base

    surgery = SurgeryConfig.model_validate(plan["surgery"])
    with clock.phase("load base"):
        model, tok = load_base(plan["model_id"], data_dir=Path(plan["data_dir"]))
    with clock.phase("decompose + calibrate"):
        examples = load_calibration(plan["calib_path"], surgery.calib)
        prepared = prepare(model, tok, plan["adapter_dir"], examples, surgery)
    subjects: dict[str, Path] = {BASELINE: Path(plan["adapter_dir"])}
    shas = {}
    with clock.phase("write candidates"):
        for arm in plan["arms"]:
            path, _ = write_candidate(prepared, arm["policy"], surgery, out / arm["name"], seed=arm["seed"])
            subjects[arm["name"]] = path
            shas[arm["name"]] = adapter_content_sha256(path)
    scores = {}
    ev = _evaluator(plan, model=model, tokenizer=tok, model_id=plan["model_id"])
    for kind, bench, limit in (("task", plan["task"], plan["task_limit"]),
                               ("guard", plan["guard"], plan["guard_limit"])):
        with clock.phase(f"evaluate {kind}"):
            scores[kind] = _scores(ev.evaluate(plan["model_id"], subjects, bench, limit=limit, out_dir=out / "eval"))
    return {"candidate_sha256": shas, "scores": scores, "base_loads": 1 + ev.base_loads,
            "prepare_timings": prepared.timings}  # fmt: skip


def naive_path(plan: dict, clock: ModelClock, out: Path) -> dict:
    """Per candidate: reload the base, recompute SVD + calibration, write, evaluate with a fresh evaluator."""
    from spectral_surgery.tasks.adapter_io import adapter_content_sha256
    from spectral_surgery.tasks.surgery.calibration import load_calibration
    from spectral_surgery.tasks.config import SurgeryConfig
    from spectral_surgery.tasks.surgery.edit import prepare, write_candidate
    from spectral_surgery.tasks.model import load_base

    surgery = SurgeryConfig.model_validate(plan["surgery"])
    scores: dict[str, dict] = {"task": {}, "guard": {}}
    shas, loads = {}, 0

    def evaluate(name: str, path: Path) -> int:
        ev = _evaluator(plan)  # fresh: loads the base from disk on its first evaluate
        for kind, bench, limit in (("task", plan["task"], plan["task_limit"]),
                                   ("guard", plan["guard"], plan["guard_limit"])):  # fmt: skip
            with clock.phase(f"evaluate {kind}"):
                res = ev.evaluate(plan["base_dir"], {name: path}, bench, limit=limit, out_dir=out / "eval")
            scores[kind].update(_scores(res))
        n = ev.base_loads
        del ev
        gc.collect()
        return n

    loads += evaluate(BASELINE, Path(plan["adapter_dir"]))
    for arm in plan["arms"]:
        with clock.phase("load base"):
            model, tok = load_base(plan["model_id"], data_dir=Path(plan["data_dir"]), cache=False)
        loads += 1
        with clock.phase("decompose + calibrate"):
            examples = load_calibration(plan["calib_path"], surgery.calib)
            prepared = prepare(model, tok, plan["adapter_dir"], examples, surgery)
        with clock.phase("write candidates"):
            path, _ = write_candidate(prepared, arm["policy"], surgery, out / arm["name"], seed=arm["seed"])
            shas[arm["name"]] = adapter_content_sha256(path)
        del model, tok, prepared
        gc.collect()
        loads += evaluate(arm["name"], path)
    return {"candidate_sha256": shas, "scores": scores, "base_loads": loads}


def run_child(kind: str, plan_file: Path, result_file: Path) -> None:
    """Run one path in this (fresh) process and write its measurements to ``result_file``."""
    import lm_eval.models.huggingface  # noqa: F401  (imports are not part of either path's time)
    import peft  # noqa: F401
    import torch
    import transformers
    from lm_eval import simple_evaluate  # noqa: F401

    import spectral_surgery.tasks.surgery.edit  # noqa: F401
    import spectral_surgery.tasks.evaluation.evaluate  # noqa: F401

    plan = json.loads(plan_file.read_text())
    arch = json.loads((Path(plan["base_dir"]) / "config.json").read_text())["architectures"][0]
    clock = ModelClock()
    clock.install(getattr(transformers, arch))
    out = Path(plan["work_dir"]) / kind
    gc.collect()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        res = (product_path if kind == "product" else naive_path)(plan, clock, out)
        wall = time.perf_counter() - t0
    res.update(path=kind, wall_s=wall, forward_s=clock.forward_s, backward_s=clock.backward_s,
               n_forward=clock.n_forward, n_backward=clock.n_backward, phases=clock.phases,
               rss_start_bytes=rss.start, rss_peak_bytes=rss.peak, torch_threads=torch.get_num_threads())  # fmt: skip
    result_file.write_text(json.dumps(res, indent=1))


# ------------------------------------------------------------------------------------------------ driver
def make_plan(args: argparse.Namespace) -> dict:
    """Resolve the base, build (or reuse) the demo adapter and plan the arms and benchmarks."""
    from spectral_surgery.tasks.decision.arms import plan_arms
    from spectral_surgery.tasks.evaluation.benchmarks import guard_benchmark, resolve_benchmark
    from spectral_surgery.tasks.run_config import LadderConfig, RunConfig
    from spectral_surgery.tasks.config import CalibConfig, SurgeryConfig
    from spectral_surgery.tasks.demo.demo_fleet import DEMO_FLEET, build_demo_fleet
    from spectral_surgery.tasks.model import BUNDLED_MODEL, resolve_base

    data_dir = Path(args.data_dir).absolute()
    base_dir = resolve_base(BUNDLED_MODEL, data_dir=data_dir)
    spec = next((s for s in DEMO_FLEET if s.name == args.adapter), None)
    if spec is None:
        raise SystemExit(f"--adapter {args.adapter!r}: not a demo adapter ({', '.join(s.name for s in DEMO_FLEET)})")
    (entry,) = build_demo_fleet(base_dir, data_dir, steps=args.train_steps, fleet=[spec], n_calib=args.n_calib,
                                on_progress=lambda m: print("  fleet:", m, file=sys.stderr))  # fmt: skip
    surgery = SurgeryConfig(policies=ARMS_POLICIES, random_control_seeds=CONTROL_SEEDS,
                            calib=CalibConfig(n_samples=args.n_calib))  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-refine-", dir=data_dir))
    # The five arms above and no ladder: the two paths compare the policies and the random controls only.
    config = RunConfig(data_dir=work, surgery=surgery,
                       ladder=LadderConfig(global_scalar=False, zero_rebuild=False, bare_base=False))
    arms = [{"name": a.name, "policy": a.policy, "seed": a.seed, "is_control": a.is_control}
            for a in plan_arms(config, surgery)]  # fmt: skip
    return {"data_dir": str(data_dir), "model_id": BUNDLED_MODEL, "base_dir": str(base_dir), "adapter": spec.name,
            "adapter_dir": str(entry["path"]), "calib_path": str(entry["calib_path"]),
            "adapter_reused": entry["reused"],
            "surgery": surgery.model_dump(mode="json"), "arms": arms, "work_dir": str(work),
            "task": resolve_benchmark(spec.task_family, profile="offline").name,
            "guard": guard_benchmark("offline").name, "task_limit": args.task_limit, "guard_limit": args.guard_limit,
            "max_gen_toks": args.max_gen_toks, "eval_batch_size": args.eval_batch_size}  # fmt: skip


def compare(plan: dict, prod: dict, naive: dict) -> dict:
    """Ratios, shares and the check that both paths produced the same candidates and the same scores."""
    same_cands = prod["candidate_sha256"] == naive["candidate_sha256"]
    same_scores = all(prod["scores"][k][s]["outcomes"] == naive["scores"][k][s]["outcomes"]
                      for k in ("task", "guard") for s in prod["scores"][k])  # fmt: skip
    model_s = prod["forward_s"] + prod["backward_s"]
    return {"speedup": naive["wall_s"] / prod["wall_s"], "product_model_share": model_s / prod["wall_s"],
            "naive_model_share": (naive["forward_s"] + naive["backward_s"]) / naive["wall_s"],
            "identical_candidates": same_cands, "identical_scores": same_scores}  # fmt: skip


def _mib(b: int) -> str:
    return f"{b / 2**20:,.0f}"


def table(plan: dict, prod: dict, naive: dict, cmp: dict) -> str:
    """The markdown report."""
    rows = [("wall time (s)", f"{prod['wall_s']:.1f}", f"{naive['wall_s']:.1f}"),
            ("  of which model forward (s)", f"{prod['forward_s']:.1f}", f"{naive['forward_s']:.1f}"),
            ("  of which calibration backward (s)", f"{prod['backward_s']:.1f}", f"{naive['backward_s']:.1f}"),
            ("model forward+backward share", f"{cmp['product_model_share']:.1%}", f"{cmp['naive_model_share']:.1%}"),
            ("forward calls / backward calls", f"{prod['n_forward']} / {prod['n_backward']}",
             f"{naive['n_forward']} / {naive['n_backward']}"),
            ("base model loads from disk", str(prod["base_loads"]), str(naive["base_loads"])),
            ("peak RSS (MiB)", _mib(prod["rss_peak_bytes"]), _mib(naive["rss_peak_bytes"])),
            ("peak RSS above start (MiB)", _mib(prod["rss_peak_bytes"] - prod["rss_start_bytes"]),
             _mib(naive["rss_peak_bytes"] - naive["rss_start_bytes"]))]  # fmt: skip
    for name in prod["phases"]:
        p, n = prod["phases"][name], naive["phases"].get(name, {"wall_s": 0.0, "count": 0})
        rows.append((f"phase: {name} (s, ×count)", f"{p['wall_s']:.1f} ×{p['count']}",
                     f"{n['wall_s']:.1f} ×{n['count']}"))
    lines = [f"Adapter `{plan['adapter']}` on SmolLM2-135M-Instruct (fp32, CPU, {prod['torch_threads']} torch "
             f"threads); calibration N={plan['surgery']['calib']['n_samples']}; arms: "
             f"{', '.join(a['name'] for a in plan['arms'])}; "
             f"subjects: baseline + {len(plan['arms'])}; task `{plan['task']}` limit {plan['task_limit']}, guard "
             f"`{plan['guard']}` limit {plan['guard_limit']}, max_gen_toks {plan['max_gen_toks']}, eval batch "
             f"{plan['eval_batch_size']}.", "",
             "| measure | product path | naive path |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["",
              f"**Speed-up (naive / product): {cmp['speedup']:.2f}×**; product path time in model forward+backward: "
              f"**{cmp['product_model_share']:.1%}**; identical candidates in both paths: "
              f"{cmp['identical_candidates']}; "
              f"identical per-document scores: {cmp['identical_scores']}."]  # fmt: skip
    scores = [f"{s}: task {prod['scores']['task'][s]['value']:.3f}, guard {prod['scores']['guard'][s]['value']:.3f}"
              for s in prod["scores"]["task"]]  # fmt: skip
    lines += ["", "Scores (product path): " + "; ".join(scores) + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="/tmp/bench-refine-data", help="data dir (model cache, demo fleet, outputs)")
    ap.add_argument("--adapter", default="commonsense", help="demo adapter: math, commonsense or instruction")
    ap.add_argument("--train-steps", type=int, default=2, help="demo adapter training steps when not cached")
    ap.add_argument("--n-calib", type=int, default=128)
    ap.add_argument("--task-limit", type=int, default=24)
    ap.add_argument("--guard-limit", type=int, default=4)
    ap.add_argument("--max-gen-toks", type=int, default=64, help="cap of generated tokens (guard), both paths")
    ap.add_argument("--eval-batch-size", type=int, default=8)
    ap.add_argument("--json", help="write all measurements here")
    ap.add_argument("--child", nargs=3, metavar=("PATH", "PLAN", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        run_child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    plan = make_plan(args)
    work = Path(plan["work_dir"])
    (work / "plan.json").write_text(json.dumps(plan, indent=1))
    results = {}
    for kind in ("product", "naive"):
        print(f"running the {kind} path ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "tests.benchmarks.bench_refine", "--child", kind,
                        str(work / "plan.json"), str(work / f"{kind}.json")], check=True)  # fmt: skip
        results[kind] = json.loads((work / f"{kind}.json").read_text())
    cmp = compare(plan, results["product"], results["naive"])
    print(table(plan, results["product"], results["naive"], cmp))
    if args.json:
        Path(args.json).write_text(json.dumps({"plan": plan, "comparison": cmp, **results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
