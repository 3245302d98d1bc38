"""The offline lm-eval suites: YAMLs load, data are reproducible and small, scoring is right end to end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.benchmarks import get_benchmark, list_benchmarks
from tasks.suites import build_data
from tasks.suites.utils import SUITES_DIR, read_jsonl

SUITES = {"ss_arith": 200, "ss_mc": 200, "ss_code": 164, "ss_ifeval": 100}  # task -> minimum documents


@pytest.fixture(scope="module")
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(SUITES_DIR), include_defaults=False)


def test_every_yaml_loads(task_manager):
    yamls = sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))
    assert yamls == sorted(SUITES)
    # TaskIndex skips a broken YAML silently, so check each is indexed AND builds.
    assert sorted(task_manager.all_subtasks) == yamls
    loaded = task_manager.load(yamls)["tasks"]
    for name, minimum in SUITES.items():
        task = loaded[name]
        assert len(list(task.eval_docs)) >= minimum, name
        assert task.get_config("metadata")["version"] == 1.0


def test_local_benchmarks_point_at_suites(task_manager):
    for name in list_benchmarks():
        spec = get_benchmark(name)
        if spec.kind == "local":
            assert spec.lm_eval_task in task_manager.all_subtasks


@pytest.mark.parametrize("file", sorted(build_data.BUILDERS))
def test_data_files_regenerate_byte_identical_and_small(file):
    path = SUITES_DIR / file
    assert path.read_text(encoding="utf-8") == build_data.render(build_data.BUILDERS[file]())
    assert path.stat().st_size < 200_000


def test_arith_solutions_are_right():
    rows = read_jsonl(SUITES_DIR / "ss_arith.jsonl")
    assert sum(r["split"] == "test" for r in rows) >= 200 and len({r["question"] for r in rows}) == len(rows)
    for r in rows:
        # every "a op b = c" step in the worked solution is true arithmetic, and the last number is the target
        for a, op, b, c in re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", r["solution"]):
            assert eval(f"{a} {op} {b}") == int(c), r  # noqa: S307 - digits and one operator only
        assert re.findall(r"-?\d+", r["solution"])[-1] == r["target"]


def test_mc_items_are_well_formed():
    rows = read_jsonl(SUITES_DIR / "ss_mc.jsonl")
    assert len(rows) >= 200
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and 0 <= r["gold"] < 4
    golds = [r["gold"] for r in rows]
    assert min(golds.count(i) for i in range(4)) > len(rows) / 8  # answers spread over positions


def test_ifeval_rows_use_ifeval_format():
    from tasks.nltk_data import ensure_punkt_tab

    ensure_punkt_tab()
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    rows = read_jsonl(SUITES_DIR / "ss_ifeval.jsonl")
    assert len(rows) >= 100 and len({r["key"] for r in rows}) == len(rows)
    used = set()
    for r in rows:
        assert len(r["instruction_id_list"]) == len(r["kwargs"]) >= 1
        for iid, kw in zip(r["instruction_id_list"], r["kwargs"]):
            desc = INSTRUCTION_DICT[iid](iid).build_description(**kw)
            assert desc in r["prompt"]
            used.add(iid)
    assert len(used) >= 20


def test_ifeval_scoring_is_lm_evals_own():
    from tasks.suites.utils import process_ss_ifeval

    doc = read_jsonl(SUITES_DIR / "ss_ifeval.jsonl")[0]
    assert doc["instruction_id_list"] == ["punctuation:no_comma"]
    ok = process_ss_ifeval(doc, ["We walked up the trail and saw the lake. It was calm."])
    bad = process_ss_ifeval(doc, ["We walked, and we saw the lake."])
    assert ok["prompt_level_strict_acc"] is True and bad["prompt_level_strict_acc"] is False
    assert set(ok) == {"prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
                       "inst_level_loose_acc"}  # fmt: skip


# ------------------------------------------------------------------- oracle model through lm-eval itself
class _OracleLM:
    """An lm-eval LM that knows the answers: gold solutions for generation, gold choice highest loglik."""

    def __new__(cls, *a, **k):
        from lm_eval.api.model import LM

        # Built lazily so importing this test module does not import lm-eval.
        class Oracle(LM):
            def __init__(self, answers: dict[str, str], mc: dict[str, str]):
                super().__init__()
                self.answers, self.mc = answers, mc

            def _find(self, context: str, table: dict[str, str]) -> str:
                hits = [(context.rfind(k), v) for k, v in table.items() if k in context]
                return max(hits)[1] if hits else ""

            def generate_until(self, requests):
                return [self._find(r.args[0], self.answers) for r in requests]

            def loglikelihood(self, requests):
                out = []
                for r in requests:
                    ctx, cont = r.args
                    out.append((0.0 if cont.strip() == self._find(ctx, self.mc) else -10.0, False))
                return out

            def loglikelihood_rolling(self, requests):
                raise NotImplementedError

        return Oracle(*a, **k)


def test_oracle_scores_perfectly_through_lm_eval(task_manager):
    from lm_eval import simple_evaluate

    from tasks.suites.utils import load_ss_code

    arith = read_jsonl(SUITES_DIR / "ss_arith.jsonl")
    code = list(load_ss_code()["test"])
    mc = read_jsonl(SUITES_DIR / "ss_mc.jsonl")
    answers = {f"Question: {r['question']}\nAnswer:": " " + r["solution"] for r in arith}
    answers |= {r["prompt"]: r["canonical_solution"] for r in code}
    gold = {f"Question: {r['question']}\nAnswer:": r["choices"][r["gold"]] for r in mc}
    lm = _OracleLM(answers, gold)
    for task, metric, limit in (("ss_arith", "exact_match,last-number", 20), ("ss_mc", "acc,none", 20),
                                ("ss_code", "pass@1,none", 4)):  # fmt: skip
        res = simple_evaluate(model=lm, tasks=[task], limit=limit, task_manager=task_manager,
                              confirm_run_unsafe_code=True, bootstrap_iters=0)  # fmt: skip
        assert res["results"][task][metric] == 1.0, task
    # and a model that is always wrong scores zero
    wrong = _OracleLM({k: " The answer is -1." for k in answers}, {k: "nothing" for k in gold})
    res = simple_evaluate(model=wrong, tasks=["ss_arith"], limit=10, task_manager=task_manager, bootstrap_iters=0)
    assert res["results"]["ss_arith"]["exact_match,last-number"] == 0.0


def test_fewshot_prompt_shape(task_manager):
    task = task_manager.load(["ss_arith"])["tasks"]["ss_arith"]
    doc = next(iter(task.eval_docs))
    ctx = task.fewshot_context(doc, num_fewshot=3)
    assert ctx.count("Question:") == 4 and ctx.count("The answer is") == 3 and ctx.endswith("Answer:")


def test_suite_files_are_package_data():
    # pyproject's package-data globs ("*.yaml", "*.jsonl") only match files directly in the package dir.
    assert (SUITES_DIR / "__init__.py").is_file()
    for p in SUITES_DIR.iterdir():
        if p.suffix in (".yaml", ".jsonl"):
            assert p.parent == Path(SUITES_DIR)
