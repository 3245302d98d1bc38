"""Generation benchmark (run on demand, not a timed test): HFLM arm by arm vs ``generate_until_arms``.

    python -m tests.benchmarks.bench_eval_generation [--limit 16] [--arms 4 8] [--reps 1] [--threads 1]

On the bundled SmolLM2-135M-Instruct, the arms are those of :mod:`tests.benchmarks.bench_eval` (a LoRA baseline
and its σ-edited candidates: four policies and the random control, with seeded stand-in sensitivities), three
more random controls and the bare base; the requests are ``ss_arith``'s own, built by lm-eval from the suite's
YAML (3-shot, ``until`` = ``Question:`` / ``\\n\\n``, 48 tokens at most). For each K, in one process and
interleaved (arm by arm, then all arms, ``--reps`` times): lm-eval's ``HFLM.generate_until`` once per arm with
that adapter active (what ``LmEvalEvaluator`` runs), and :func:`tasks.evaluation.arms.generation.
generate_until_arms` with the baseline as the reference. Reported: the median wall-time ratio, the strings that
differ between the paths (must be 0), the divergence rate of the non-reference arms and the forward passes.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

ARM_ORDER = ("baseline", "abs_select", "random_index", "__base__", "smooth_abs", "grad_direction", "double_smooth",
             "random_index_2", "random_index_3", "random_index_4")  # fmt: skip  -- the first K arms of a K-arm run


def suite_requests(benchmark: str, limit: int, lm, *, chat: bool = False) -> list:
    """lm-eval's own ``Instance``s of an offline suite's first ``limit`` documents, as ``simple_evaluate`` builds
    them (few-shot context, generation kwargs; chat-templated with ``lm``'s template when ``chat``)."""
    from lm_eval.tasks import TaskManager

    from spectral_surgery.tasks.evaluation.benchmarks import get_benchmark
    from spectral_surgery.tasks.evaluation.evaluate import SUITES_DIR

    name = get_benchmark(benchmark).lm_eval_task
    task = TaskManager(include_path=str(SUITES_DIR), include_defaults=False).load([name])["tasks"][name]
    task.set_fewshot_seed(seed=1234)  # simple_evaluate's default fewshot_random_seed
    task.build_all_requests(limit=limit, rank=0, world_size=1, apply_chat_template=chat,
                            chat_template=lm.apply_chat_template if chat else None,
                            tokenizer_name=lm.tokenizer_name if chat else "")  # fmt: skip
    return list(task.instances)


def build_arms(base_dir: Path, work: Path, seed: int) -> dict[str, Path | None]:
    """Adapter dir per arm name (None: the bare base), in :data:`ARM_ORDER`."""
    import torch

    from spectral_surgery.tasks.config import EditConfig
    from spectral_surgery.tasks.surgery.policies import apply_policy
    from tests.benchmarks.bench_eval import build_subjects
    from tests.smol import edit_sigmas

    dirs: dict[str, Path | None] = dict(build_subjects(base_dir, work, seed))
    for k in (2, 3, 4):  # more random controls (the product runs three seeds)
        gen = torch.Generator().manual_seed(seed + 99 * k)
        dirs[f"random_index_{k}"] = edit_sigmas(
            dirs["baseline"], work / f"random_index_{k}",
            lambda _n, s, gen=gen: apply_policy("random_index", s, s.abs(), s, EditConfig(), generator=gen),
            {"policy": "random_index", "seed": seed + 99 * k})
    dirs["__base__"] = None
    return {a: dirs[a] for a in ARM_ORDER}


def arm_by_arm(lm, requests, arms) -> dict[str, list[str]]:
    """``HFLM.generate_until`` once per arm, with that adapter active (the bare base: adapters disabled)."""
    out = {}
    for arm in arms:
        if arm == "__base__":
            with lm.model.disable_adapter():
                out[arm] = lm.generate_until(requests, disable_tqdm=True)
        else:
            lm.model.set_adapter(arm)
            out[arm] = lm.generate_until(requests, disable_tqdm=True)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", default="ss_arith", help="A generative offline suite (default ss_arith).")
    ap.add_argument("--limit", type=int, default=16, help="First N documents (default 16).")
    ap.add_argument("--arms", type=int, nargs="+", default=[4, 8], help=f"K values, at most {len(ARM_ORDER)}.")
    ap.add_argument("--reps", type=int, default=1, help="Interleaved repetitions per K (median ratio).")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1).")
    ap.add_argument("--chat", action="store_true", help="Apply the tokenizer's chat template to the prompts.")
    ap.add_argument("--data-dir", default=None, help="Model cache (default: the product's data dir).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu / cuda (default cpu).")
    ap.add_argument("--dtype", default="float32", help="Model dtype: float32, bfloat16, float16 (default float32).")
    ap.add_argument("--base-dir", default=None, help="A saved base model (default: the bundled SmolLM2).")
    args = ap.parse_args(argv)

    import torch
    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spectral_surgery.tasks.config import default_data_dir
    from spectral_surgery.tasks.evaluation.arms.generation import generate_until_arms
    from tests.smol import bundled_base_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    base_dir = Path(args.base_dir) if args.base_dir else bundled_base_dir(
        Path(args.data_dir) if args.data_dir else default_data_dir())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_eval_generation-") as tmp:
        dirs = build_arms(base_dir, Path(tmp), args.seed)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, args.dtype)).eval()
        tok = AutoTokenizer.from_pretrained(base_dir)
        names = [a for a, d in dirs.items() if d is not None]
        pm = PeftModel.from_pretrained(model, str(dirs[names[0]]), adapter_name=names[0])
        for a in names[1:]:
            pm.load_adapter(str(dirs[a]), adapter_name=a)
        lm = HFLM(pretrained=pm.to(args.device).eval(), tokenizer=tok, batch_size=args.batch_size)
        requests = suite_requests(args.benchmark, args.limit, lm, chat=args.chat)
        print(f"base: {base_dir} | torch {torch.__version__}, {torch.get_num_threads()} thread(s) | "
              f"{args.benchmark}: {len(requests)} documents, batch {args.batch_size}, {args.dtype} on {args.device}\n")
        print("| K | arm by arm (s) | all arms (s) | ratio | strings differing | divergence rate | forward passes |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for k in args.arms:
            arms = list(ARM_ORDER[:k])
            t_ref, t_new, differ = [], [], 0
            for _ in range(args.reps):
                t = time.perf_counter()
                expected = arm_by_arm(lm, requests, arms)
                t_ref.append(time.perf_counter() - t)
                t = time.perf_counter()
                got, stats = generate_until_arms(lm, requests, arms, reference="baseline")
                t_new.append(time.perf_counter() - t)
                differ = max(differ, sum(x != y for a in arms for x, y in zip(got[a], expected[a], strict=True)))
            others = [s for s in stats.arms if s.arm != "baseline"]
            rate = sum(s.diverged for s in others) / sum(s.verified + s.diverged for s in others)
            ref, new = statistics.median(t_ref), statistics.median(t_new)
            print(f"| {k} | {ref:.1f} | {new:.1f} | {ref / new:.2f}× | {differ} / {k * len(requests)} | "
                  f"{rate:.1%} | {stats.forward_passes} |", flush=True)  # fmt: skip
            rows.append({"benchmark": args.benchmark, "k": k, "dtype": args.dtype, "device": args.device,
                         "arm_by_arm_s": ref, "one_pass_s": new, "ratio": ref / new, "strings_differing": differ,
                         "strings": k * len(requests), "divergence_rate": rate})
        per_arm = ", ".join(f"{s.arm} {s.diverged}/{s.documents}" for s in stats.arms if s.arm != "baseline")
        print(f"\nshared prompt prefix: {stats.shared_prefix_tokens} tokens; diverged per arm (last run): {per_arm}")
    return rows

if __name__ == "__main__":
    main()
