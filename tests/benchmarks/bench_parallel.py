"""Parallelism benchmark (run on demand, not a timed test): the demo fleet refined with one worker against N Dask
worker processes, in one run.

    python -m tests.benchmarks.bench_parallel [--budget smallest] [--data-dir DIR] [--workers 2] [--json out.json]

The demo fleet (LoRA adapters on the bundled SmolLM2-135M-Instruct, trained or reused from ``DIR``) is
registered in two FRESH SQLite registries that share only the model cache; the real nightly flow
(``flows.refine_fleet.run_nightly``, real lm-eval evaluator, the budget's limits) then refines the whole fleet
once in each:

* serial: ``task_runner: thread``, ``concurrency: 1`` (the CPU default): one adapter after another in this process;
* parallel: ``task_runner: dask``, ``concurrency: N`` with the default ``dask_workers: processes``: a LocalCluster
  of N worker processes, each loading its own copy of the base model.

Reported: the wall time of each, the speed-up (serial / parallel), the peak resident memory of the whole process
tree (this process and every worker, sampled every 0.2 s), the torch threads per process, and whether both runs
reached the same verdicts and promoted the same policies (they must: results depend on content, never on where
they were computed). On a machine with C cores each worker's torch uses C threads by default, so on a small CPU
the workers compete for the same cores; the ratio says what parallelism is worth there.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path


class PeakRSS:
    """Peak of the summed RSS of this process and all its descendants, sampled in a daemon thread."""

    def __init__(self, every: float = 0.2):
        import psutil

        self.every, self.peak, self._proc, self._stop = every, 0, psutil.Process(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self._proc, *self._proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.every)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _outcome(summary: dict) -> dict[str, tuple]:
    return {r["adapter"]: (r.get("status"), r.get("verdict"), r.get("promoted")) for r in summary["results"]}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="smallest", help="Demo budget preset (smallest, small, default, large).")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="Where the base model cache and the demo fleet live (reused across runs).")
    ap.add_argument("--workers", type=int, default=2, help="Dask worker processes of the parallel run.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    ap.add_argument("--runs", default="serial,parallel", help="Which runs, in order (default serial,parallel).")
    args = ap.parse_args(argv)

    import torch

    from spectral_surgery.flows import worker
    from spectral_surgery.flows.demo import BUDGETS, demo_config
    from spectral_surgery.flows.refine_fleet import run_nightly
    from spectral_surgery.tasks.demo.demo_fleet import build_demo_fleet
    from spectral_surgery.tasks.model import BUNDLED_MODEL, resolve_base

    budget = BUDGETS[args.budget]
    cache = (args.data_dir or Path(tempfile.gettempdir()) / "spectral-surgery-bench").expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    base_dir = resolve_base(BUNDLED_MODEL, data_dir=cache)
    fleet = build_demo_fleet(base_dir, cache, steps=budget.steps, n_train=budget.n_train, on_progress=print)
    every = {"serial": {"task_runner": "thread", "concurrency": 1},
             "parallel": {"task_runner": "dask", "concurrency": args.workers, "dask_workers": "processes"}}
    runs = {k: every[k] for k in args.runs.split(",")}
    times, peaks, outcomes, dirs = {}, {}, {}, []
    try:
        for label, update in runs.items():
            run_dir = Path(tempfile.mkdtemp(prefix=f"bench-parallel-{label}-"))
            dirs.append(run_dir)
            (run_dir / "models").symlink_to(cache / "models", target_is_directory=True)
            cfg = demo_config(run_dir, budget).model_copy(update=update)
            reg = worker.registry(cfg)
            for a in fleet:
                reg.register_adapter(f"demo-{a['name']}", str(a["path"]), BUNDLED_MODEL, a["task_family"],
                                     config={"calib": str(a["calib_path"])})
            worker.reset()  # the serial run loads its base model inside the measurement, as each worker does
            with PeakRSS() as mem:
                t = time.perf_counter()
                summary = run_nightly(cfg)
                times[label] = time.perf_counter() - t
            peaks[label] = mem.peak
            outcomes[label] = _outcome(summary)
            workers = sorted({r.get("worker") for r in summary["results"]})
            print(f"{label}: {times[label]:.1f} s, peak RSS {mem.peak / 2**30:.2f} GiB, {summary['completed']} "
                  f"refined, {summary['failed']} failed, worker processes {workers}")
            worker.reset()
        if len(times) < 2:
            result = {"seconds": times, "peak_rss_gib": {k: v / 2**30 for k, v in peaks.items()}, "outcomes": outcomes}
            if args.json:
                args.json.write_text(json.dumps(result, indent=2, default=str))
            return result
        result = {"budget": args.budget, "adapters": len(fleet), "workers": args.workers,
                  "cpu_count": os.cpu_count(), "torch_threads_per_process": torch.get_num_threads(),
                  "seconds": times, "speedup_serial_over_parallel": times["serial"] / times["parallel"],
                  "peak_rss_gib": {k: v / 2**30 for k, v in peaks.items()},
                  "same_outcomes": outcomes["serial"] == outcomes["parallel"], "outcomes": outcomes}
        print(f"serial / parallel = {times['serial']:.1f} s / {times['parallel']:.1f} s = "
              f"{result['speedup_serial_over_parallel']:.2f}x on {os.cpu_count()} CPUs; peak RSS "
              f"{result['peak_rss_gib']['serial']:.2f} vs {result['peak_rss_gib']['parallel']:.2f} GiB; "
              f"same verdicts: {result['same_outcomes']}")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, default=str))
        return result
    finally:
        worker.reset()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
