"""The offline lm-eval suites: YAMLs load, data are reproducible and correct, any first N documents are a
representative mix, scoring is right end to end."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

from spectral_surgery.tasks.evaluation.benchmarks import get_benchmark, list_benchmarks
from spectral_surgery.tasks.evaluation.suites import build_data
from spectral_surgery.tasks.evaluation.suites.mix import spread
from spectral_surgery.tasks.evaluation.suites.utils import SUITES_DIR, read_jsonl

SUITES = {"ss_arith": 1000, "ss_mc": 1000, "ss_code": 164, "ss_humaneval": 164,
          "ss_ifeval": 300}  # task -> minimum documents
VERSIONS = {"ss_arith": 2.0, "ss_mc": 2.0, "ss_code": 1.0, "ss_humaneval": 1.0, "ss_ifeval": 2.0}
MAX_FILE_BYTES = 400_000  # package data: about 280 kB for ss_arith's 1,208 rows
PREFIX = 100  # the nightly run's limit is of this order


def _test_rows(file: str) -> list[dict]:
    return [r for r in read_jsonl(SUITES_DIR / file) if r.get("split", "test") == "test"]


def _group(file: str, row: dict) -> str:
    """The template / category a row was built from (ss_ifeval: its first instruction)."""
    if file == "ss_ifeval.jsonl":
        return row["instruction_id_list"][0]
    return row["template"] if file == "ss_arith.jsonl" else row["category"]


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
        assert task.get_config("metadata")["version"] == VERSIONS[name]


def test_paper_humaneval_is_lm_evals_task_run_in_the_sandbox(task_manager):
    """The paper profile's HumanEval: lm-eval's own humaneval task's prompts, stops and budget, the same 164
    problems, but scored by the sandbox (process_results), never by HF evaluate's code_eval."""
    import yaml

    import lm_eval.tasks

    ours = task_manager.load(["ss_humaneval"])["tasks"]["ss_humaneval"]
    theirs = yaml.safe_load((Path(lm_eval.tasks.__file__).parent / "humaneval" / "humaneval.yaml").read_text()
                            .replace("!function", "fn"))
    for key in ("until", "max_gen_toks", "do_sample"):
        assert ours.config.generation_kwargs[key] == theirs["generation_kwargs"][key], key
    assert ours.config.doc_to_text == theirs["doc_to_text"] and ours.config.num_fewshot == theirs["num_fewshot"]
    docs = list(ours.eval_docs)
    assert len(docs) == 164 and docs[0]["task_id"] == "HumanEval/0"
    assert ours.config.process_results.__name__ == "process_ss_code" and not ours.config.filter_list
    assert get_benchmark("humaneval").lm_eval_task == "ss_humaneval" and get_benchmark("humaneval").executes_code


def test_local_benchmarks_point_at_suites(task_manager):
    for name in list_benchmarks():
        spec = get_benchmark(name)
        if spec.kind == "local":
            assert spec.lm_eval_task in task_manager.all_subtasks


@pytest.mark.parametrize("file", sorted(build_data.BUILDERS))
def test_data_files_regenerate_byte_identical_and_small(file):
    path = SUITES_DIR / file
    assert path.read_text(encoding="utf-8") == build_data.render(build_data.BUILDERS[file]())
    assert path.stat().st_size < MAX_FILE_BYTES


def test_arith_solutions_are_right():
    rows = read_jsonl(SUITES_DIR / "ss_arith.jsonl")
    test = [r for r in rows if r["split"] == "test"]
    assert len(test) >= 1000 and len({r["question"] for r in rows}) == len(rows)
    assert [r["split"] for r in rows[: build_data.N_ARITH_TRAIN]] == ["train"] * build_data.N_ARITH_TRAIN
    for r in rows:
        # every "a op b = c" step in the worked solution is true arithmetic, and the last number is the target
        steps = re.findall(r"(\d+) ([-+*/]) (\d+) = (\d+)", r["solution"])
        assert steps, r
        for a, op, b, c in steps:
            assert eval(f"{a} {op} {b}") == int(c), r  # noqa: S307 - digits and one operator only
        assert re.findall(r"-?\d+", r["solution"])[-1] == r["target"] == steps[-1][3]
        assert r["solution"].endswith(f"The answer is {r['target']}.")
    per_template = collections.Counter(r["template"] for r in test)
    assert len(per_template) >= 25 and min(per_template.values()) >= 30, per_template
    assert sum(len(re.findall(" = ", r["solution"])) >= 2 for r in test) > len(test) / 2  # mostly multi-step


def test_arith_train_rows_are_the_original_few_shot_examples():
    # The 3-shot prompt did not change when the test split grew (first_n sampler: the first three).
    rows = read_jsonl(SUITES_DIR / "ss_arith.jsonl")
    assert rows[0]["question"].startswith("Kate buys 4 packs of stickers with 8 stickers in each pack")
    assert rows[1]["solution"] == "12 + 6 = 18. The answer is 18."


def test_mc_items_are_well_formed():
    rows = read_jsonl(SUITES_DIR / "ss_mc.jsonl")
    assert len(rows) >= 1000 and len({r["question"] for r in rows}) == len(rows)
    for r in rows:
        assert len(r["choices"]) == 4 and len(set(r["choices"])) == 4 and 0 <= r["gold"] < 4
        if ":" in r["question"]:  # the listed options are the choices, in order
            assert r["question"].endswith(f"{', '.join(r['choices'][:3])} or {r['choices'][3]}?"), r
    golds = collections.Counter(r["gold"] for r in rows)
    assert max(golds.values()) - min(golds.values()) <= 1  # the answer position cycles through A-D
    assert len({r["category"] for r in rows}) >= 12


def _mc_right_answer(question: str, choices: list[str]) -> str | None:
    """The right choice, computed, for the kinds of ss_mc question that can be computed; else None."""
    if m := re.fullmatch(r"What is (\d+) (\+|-|times) (\d+)\?", question):
        a, op, b = int(m[1]), m[2], int(m[3])
        return str({"+": a + b, "-": a - b, "times": a * b}[op])
    if m := re.fullmatch(r"Which number is the (largest|smallest): .*", question):
        return str((max if m[1] == "largest" else min)(int(c) for c in choices))
    if m := re.fullmatch(r"Which sum is the (largest|smallest): .*", question):
        return (max if m[1] == "largest" else min)(choices, key=lambda c: eval(c))  # noqa: S307 - "a + b"
    if m := re.fullmatch(r"Which word comes (first|last) in alphabetical order: .*", question):
        return (min if m[1] == "first" else max)(choices)
    if m := re.fullmatch(r"Which number is exactly halfway between (\d+) and (\d+)\?", question):
        return str((int(m[1]) + int(m[2])) // 2)
    if m := re.fullmatch(r"If it is (\d+) o'clock now, what time will it be in (\d+) hours\?", question):
        return f"{(int(m[1]) + int(m[2]) - 1) % 12 + 1} o'clock"
    return None


def test_mc_computable_answers_are_right():
    from spectral_surgery.tasks.evaluation.suites import mc_tables

    factors = {(small, large): f for large, small, f in mc_tables.UNITS}
    days, months = mc_tables.DAYS, mc_tables.MONTHS
    checked = 0
    for r in read_jsonl(SUITES_DIR / "ss_mc.jsonl"):
        q, right = r["question"], r["choices"][r["gold"]]
        expected = _mc_right_answer(q, r["choices"])
        if m := re.fullmatch(r"How many (.+) are in (\d+) (.+)\?", q):
            expected = str(int(m[2]) * factors[(m[1], m[3])])
        elif m := re.fullmatch(r"What day of the week is it (\d) days after (\w+)\?", q):
            expected = days[(days.index(m[2]) + int(m[1])) % 7]
        elif m := re.fullmatch(r"Which month is (\d) months after (\w+)\?", q):
            expected = months[(months.index(m[2]) + int(m[1])) % 12]
        if expected is not None:
            assert right == expected, r
            checked += 1
    assert checked > 400


def test_mc_tables_are_unambiguous():
    """A word is in one antonym pair, a thing in one category, a capital in one country: one right choice."""
    from spectral_surgery.tasks.evaluation.suites import mc_tables as t

    words = [w for pairs in t.OPPOSITES.values() for pair in pairs for w in pair]
    members = [m for ms in t.CATEGORIES.values() for m in ms]
    assert len(set(words)) == len(words) and len(set(members)) == len(members)
    assert len({c for _, c in t.CAPITALS}) == len(t.CAPITALS) and not set(t.NOT_CAPITAL.values()) & {
        c for _, c in t.CAPITALS}  # fmt: skip
    near = set(t.NEAR_OPPOSITES)
    for r in read_jsonl(SUITES_DIR / "ss_mc.jsonl"):
        if m := re.fullmatch(r"What is the opposite of '(\w+)'\?", r["question"]):
            assert not {(m[1], c) for c in r["choices"]} & near, r


def test_ifeval_rows_use_ifeval_format():
    from spectral_surgery.tasks.evaluation.nltk_data import ensure_punkt_tab

    ensure_punkt_tab()
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT

    rows = read_jsonl(SUITES_DIR / "ss_ifeval.jsonl")
    assert len(rows) >= 300 and len({r["key"] for r in rows}) == len({r["prompt"] for r in rows}) == len(rows)
    used = set()
    for r in rows:
        assert len(r["instruction_id_list"]) == len(r["kwargs"]) >= 1
        for iid, kw in zip(r["instruction_id_list"], r["kwargs"]):
            desc = INSTRUCTION_DICT[iid](iid).build_description(**kw)
            assert desc in r["prompt"]
            used.add(iid)
    assert used == set(INSTRUCTION_DICT)  # every instruction lm-eval's IFEval scorer knows


def test_ifeval_scoring_is_lm_evals_own():
    from spectral_surgery.tasks.evaluation.suites.utils import process_ss_ifeval

    doc = read_jsonl(SUITES_DIR / "ss_ifeval.jsonl")[0]
    assert doc["instruction_id_list"] == ["punctuation:no_comma"]
    ok = process_ss_ifeval(doc, ["We walked up the trail and saw the lake. It was calm."])
    bad = process_ss_ifeval(doc, ["We walked, and we saw the lake."])
    assert ok["prompt_level_strict_acc"] is True and bad["prompt_level_strict_acc"] is False
    assert set(ok) == {"prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
                       "inst_level_loose_acc"}  # fmt: skip


def test_every_ifeval_doc_scores_through_lm_eval_dataset(task_manager):
    # The docs as lm-eval hands them over (datasets merges all kwargs dicts into one struct, None-filled)
    # are accepted by IFEval's checkers, and a response that follows nothing fails most prompts.
    from spectral_surgery.tasks.evaluation.suites.utils import process_ss_ifeval

    task = task_manager.load(["ss_ifeval"])["tasks"]["ss_ifeval"]
    docs = list(task.eval_docs)
    scores = [process_ss_ifeval(d, ["Hello, World"])["prompt_level_strict_acc"] for d in docs]
    assert len(docs) >= 300 and sum(scores) < len(docs) / 2


# ------------------------------------------------------------------- document order: limit=N is a fair sample
@pytest.mark.parametrize("file", sorted(build_data.BUILDERS))
def test_first_documents_are_a_representative_mix(file):
    """The first ``PREFIX`` test documents hold every template / category in about its overall share."""
    rows = _test_rows(file)
    whole = collections.Counter(_group(file, r) for r in rows)
    first = collections.Counter(_group(file, r) for r in rows[:PREFIX])
    for g, n in whole.items():
        expected = PREFIX * n / len(rows)
        assert abs(first[g] - expected) <= 1.5, (g, first[g], expected)
    # and the order is not simply the generation order: neighbours rarely share a group
    same = sum(_group(file, a) == _group(file, b) for a, b in zip(rows, rows[1:]))
    assert same < 0.1 * len(rows)


def test_spread_keeps_every_prefix_proportional():
    rows = [("a", i) for i in range(60)] + [("b", i) for i in range(30)] + [("c", i) for i in range(10)]
    out = spread(rows, lambda r: r[0], seed=3)
    assert sorted(out) == sorted(rows) and out == spread(rows, lambda r: r[0], seed=3)
    assert out == spread(rows[90:] + rows[:90], lambda r: r[0], seed=3)  # the order of the groups does not matter
    for n in range(1, len(out) + 1):
        counts = collections.Counter(g for g, _ in out[:n])
        for g, total in (("a", 60), ("b", 30), ("c", 10)):
            assert abs(counts[g] - n * total / 100) < 2, (n, g)


@pytest.mark.parametrize("name,file", [("ss_arith", "ss_arith.jsonl"), ("ss_mc", "ss_mc.jsonl"),
                                       ("ss_ifeval", "ss_ifeval.jsonl")])  # fmt: skip
def test_lm_eval_documents_are_the_file_order(task_manager, name, file):
    # lm-eval's limit=N takes the first N of eval_docs, which must be the file's test rows in order.
    task = task_manager.load([name])["tasks"][name]
    field = "prompt" if name == "ss_ifeval" else "question"
    assert [d[field] for d in task.eval_docs] == [r[field] for r in _test_rows(file)]


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


def test_oracle_scores_perfectly_through_lm_eval(task_manager, code_sandbox):
    from lm_eval import simple_evaluate

    from spectral_surgery.tasks.evaluation.suites.utils import load_ss_code

    arith = read_jsonl(SUITES_DIR / "ss_arith.jsonl")
    code = list(load_ss_code()["test"])
    mc = read_jsonl(SUITES_DIR / "ss_mc.jsonl")
    answers = {f"Question: {r['question']}\nAnswer:": " " + r["solution"] for r in arith}
    answers |= {r["prompt"]: r["canonical_solution"] for r in code}
    gold = {f"Question: {r['question']}\nAnswer:": r["choices"][r["gold"]] for r in mc}
    lm = _OracleLM(answers, gold)
    for task, metric, limit in (("ss_arith", "exact_match,last-number", 20), ("ss_mc", "acc,none", 20),
                                ("ss_code", "pass@1,none", 4), ("ss_humaneval", "pass@1,none", 4)):  # fmt: skip
        res = simple_evaluate(model=lm, tasks=[task], limit=limit, task_manager=task_manager,
                              confirm_run_unsafe_code=True, bootstrap_iters=0)  # fmt: skip
        assert res["results"][task][metric] == 1.0, task
        if task not in ("ss_code", "ss_humaneval"):  # limit=N evaluated exactly the first N test rows of the file
            assert [s["doc"]["question"] for s in res["samples"][task]] == [
                r["question"] for r in _test_rows(f"{task}.jsonl")[:limit]]  # fmt: skip
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
