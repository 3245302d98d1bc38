#!/usr/bin/env bash
# The evaluation benchmark on a lent GPU in one command (docs/benchmarks.md, "On a GPU"; tests/benchmarks/gpu_bench.py).
#
#   tests/benchmarks/gpu_bench.sh --prepare     HERE, once: wheels of what the bare GPU image lacks (lm-eval, datasets,
#                                               pydantic, ...; the versions this checkout runs with) into .whl/, and
#                                               SmolLM2's config + tokenizer into .gpu_bench/ (both git-ignored)
#   tests/benchmarks/gpu_bench.sh [OPTIONS]     THERE (device run, carry [".whl", ".gpu_bench"]): installs the wheels
#                                               into /tmp/site, checks the imports, runs gpu_bench.py with OPTIONS
#                                               (default: cuda, bf16 then fp32, K=8, ss_mc + ss_arith)
#   tests/benchmarks/gpu_bench.sh --device cpu --tiny ...    the same end to end on a tiny model, no wheels needed
set -euo pipefail
cd "$(dirname "$0")/../.."

# distributions the evaluation imports that the GPU image ("cuda": torch, transformers, peft, pandas, pyarrow, ...)
# does not hold (/work/.library/device/KINDS.md); pinned at --prepare to the versions installed here
NEEDED=(lm_eval datasets dill multiprocess pydantic pydantic_core annotated-types typing-inspection)
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)

if [[ "${1:-}" == "--prepare" ]]; then
  pins=$(python3 -c 'import sys; from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))' "${NEEDED[@]}")
  rm -rf .whl && mkdir -p .whl
  # shellcheck disable=SC2086
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl $pins
  python3 -m tests.benchmarks.gpu_bench --prepare
  du -sh .whl .gpu_bench
  echo "ready: run tests/benchmarks/gpu_bench.sh on the GPU machine with carry [\".whl\", \".gpu_bench\"]"
  exit 0
fi

if ! python3 -c "import lm_eval" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# every import the run needs, all missing ones named at once (add them to NEEDED, then --prepare again)
python3 - <<'PYEOF'
import importlib, sys
missing = []
for m in ("lm_eval", "lm_eval.models.huggingface", "datasets", "pydantic", "peft", "transformers",
          "tasks.evaluation.evaluate", "tests.benchmarks.bench_eval_arms", "tests.benchmarks.bench_eval_generation"):
    try:
        importlib.import_module(m)
    except ImportError as e:
        missing.append(f"{m}: {e}")
if missing:
    sys.exit("gpu_bench: missing imports:\n  " + "\n  ".join(missing))
PYEOF
exec python3 -m tests.benchmarks.gpu_bench "$@"
