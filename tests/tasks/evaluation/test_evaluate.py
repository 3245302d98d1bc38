"""LmEvalEvaluator end to end on the tiny random model with the offline suites; FakeEvaluator; registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from spectral_surgery.tasks.evaluation.doc_compare import differing_docs
from spectral_surgery.tasks.evaluation.evaluate import (
    BARE_BASE,
    EvalResult,
    FakeEvaluator,
    LmEvalEvaluator,
    continuous_scores_from_samples,
    doc_rows,
    get_evaluator,
    mean_stderr,
    register_evaluator,
    split_doc_rows,
)
from spectral_surgery.tasks.evaluation.benchmarks import get_benchmark
from tests import tiny

LIMIT_MC = 8
LIMIT_GEN = 4
MAX_GEN_TOKS = 8  # the tiny model's context is 512 tokens; short generations keep the tests fast


@pytest.fixture(scope="module")
def other_adapter(tiny_base, tmp_path_factory):
    """A second adapter on the tiny base with different random weights."""
    return tiny.save_adapter(tiny_base, tmp_path_factory.mktemp("other_adapter"), seed=2)


@pytest.fixture(scope="module")
def evaluator():
    return get_evaluator("lm_eval", batch_size=8, device="cpu", max_gen_toks=MAX_GEN_TOKS, reference_scores=True)


@pytest.fixture(scope="module")
def mc_run(evaluator, tiny_base, tiny_adapter, other_adapter, tmp_path_factory):
    """ss_mc on three subjects, with lm-eval's request cache made to explode if anything touches it."""
    import lm_eval.api.task as lm_task

    out = tmp_path_factory.mktemp("eval_mc")
    mp = pytest.MonkeyPatch()

    def no_save(**kw):
        raise AssertionError("lm-eval request cache must never be written")

    def no_load(file_name, cache=False):
        assert cache is False, "lm-eval request cache must never be read"

    mp.setattr(lm_task, "save_to_cache", no_save)
    mp.setattr(lm_task, "load_from_cache", no_load)
    try:
        subjects = {"baseline": tiny_adapter, "other": other_adapter, "bare": None}
        res = evaluator.evaluate(str(tiny_base), subjects, "ss_mc", limit=LIMIT_MC, out_dir=out)
    finally:
        mp.undo()
    return res, out


def _samples(r: EvalResult) -> list[dict]:
    return [json.loads(line) for line in Path(r.samples_path).read_text().splitlines()]


def _check_common(res: dict[str, EvalResult], benchmark: str, metric: str, n: int) -> None:
    ids = [str(i) for i in range(n)]
    for name, r in res.items():
        assert r.subject == name and r.benchmark == benchmark and r.metric == metric and r.higher_is_better
        assert r.n == n and r.doc_ids == ids and len(r.outcomes) == n
        assert 0.0 <= r.value <= 1.0 and all(0.0 <= o <= 1.0 for o in r.outcomes)
        assert r.value == pytest.approx(sum(r.outcomes) / n)
        assert r.stderr == pytest.approx(mean_stderr(r.outcomes))
        rows = _samples(r)
        assert Path(r.samples_path).name == f"{benchmark}.jsonl" and Path(r.samples_path).parent.name == name
        assert [str(s["doc_id"]) for s in rows] == ids
        assert [float(s[metric]) for s in rows] == r.outcomes


def test_mc_end_to_end(mc_run):
    res, out = mc_run
    assert list(res) == ["baseline", "other", "bare"]
    _check_common(res, "ss_mc", "acc", LIMIT_MC)
    # Same documents and prompts for everyone ...
    for a, b in zip(_samples(res["baseline"]), _samples(res["other"])):
        assert a["doc_hash"] == b["doc_hash"] and a["arguments"] == b["arguments"]
    # ... but the adapters really change the model: per-choice loglikelihoods differ.
    lls = {k: [[c[0][0] for c in s["resps"]] for s in _samples(r)] for k, r in res.items()}
    assert lls["baseline"] != lls["other"] and lls["baseline"] != lls["bare"] and lls["other"] != lls["bare"]
    # the continuous score is the gold answer's raw log-likelihood margin: positive exactly when solved (acc)
    for k, r in res.items():
        assert r.scores is not None and len(r.scores) == LIMIT_MC
        assert [1.0 if x > 0 else 0.0 for x in r.scores] == r.outcomes
        for row, x, ll in zip(_samples(r), r.scores, lls[k]):
            gold = int(row["target"])
            assert x == pytest.approx(ll[gold] - max(v for i, v in enumerate(ll) if i != gold), abs=1e-9)


def _mc_row(lls, target, choices):
    """A logged multiple-choice sample as lm-eval writes it (JSON round trip: tuples become lists)."""
    return {"doc_id": 0, "filter": "none", "target": target, "acc": 0.0,
            "arguments": [["Question: q\nAnswer:", " " + c] for c in choices],
            "resps": [[[ll, False]] for ll in lls], "filtered_resps": [[ll, False] for ll in lls]}


def test_continuous_scores_from_crafted_rows():
    """Margins by hand: acc on raw log-likelihoods, acc_norm per character of the choice (lm-eval's argmax)."""
    import dataclasses

    spec = get_benchmark("ss_mc")  # metric acc
    row = _mc_row([-2.0, -1.5, -4.0, -3.0], 1, ["ab", "abcdef", "a", "abc"])
    assert continuous_scores_from_samples([row], spec) == [pytest.approx(-1.5 - -2.0)]  # gold best by 0.5 nats
    wrong = _mc_row([-2.0, -1.5, -4.0, -3.0], 0, ["ab", "abcdef", "a", "abc"])
    assert continuous_scores_from_samples([wrong], spec) == [pytest.approx(-2.0 - -1.5)]
    # acc_norm: ll / len(choice) = -1.0, -0.25, -4.0, -1.0 -> gold 1 beats the best wrong (-1.0) by 0.75
    norm = dataclasses.replace(spec, metric="acc_norm")
    assert continuous_scores_from_samples([row], norm) == [pytest.approx(-0.25 - -1.0)]
    # several gold answers: the best gold against the best wrong one
    multi = _mc_row([-2.0, -1.5, -4.0, -3.0], [2, 3], ["ab", "abcdef", "a", "abc"])
    assert continuous_scores_from_samples([multi], spec) == [pytest.approx(-3.0 - -1.5)]
    # generative rows (a string target, one response) and other metrics have no margin
    gen = {"doc_id": 0, "filter": "none", "target": "42", "filtered_resps": ["42"], "resps": [["42"]]}
    assert continuous_scores_from_samples([gen], get_benchmark("ss_arith")) is None
    assert continuous_scores_from_samples([gen], spec) is None


def test_stored_rows_are_triples_and_old_pairs_read_as_no_score():
    r = EvalResult("s", "ss_mc", "acc", 0.5, 2, 0.5, True, ["0", "1"], [1.0, 0.0], None, [0.25, -1.5])
    assert doc_rows(r) == [["0", 1.0, 0.25], ["1", 0.0, -1.5]]
    assert split_doc_rows(doc_rows(r)) == (["0", "1"], [1.0, 0.0], [0.25, -1.5])
    old = EvalResult("s", "ss_mc", "acc", 0.5, 2, 0.5, True, ["0", "1"], [1.0, 0.0], None)  # no scores (default)
    assert old.scores is None and doc_rows(old) == [["0", 1.0], ["1", 0.0]]
    assert split_doc_rows([["0", 1.0], ["1", 0.0]]) == (["0", "1"], [1.0, 0.0], None)  # rows written before scores
    assert split_doc_rows([["0", 1.0, 0.3], ["1", 0.0]])[2] is None  # a partial set of scores is no score


def test_bare_base_matches_unwrapped_model(evaluator, tiny_base, mc_run, tmp_path):
    """None = base with every adapter disabled; identical to the base when no adapter is loaded at all."""
    res, _ = mc_run
    alone = evaluator.evaluate(str(tiny_base), {"bare": None}, "ss_mc", limit=LIMIT_MC, out_dir=tmp_path)
    a = [c[0][0] for s in _samples(alone["bare"]) for c in s["resps"]]
    b = [c[0][0] for s in _samples(res["bare"]) for c in s["resps"]]
    assert a == pytest.approx(b, abs=1e-5)


def _check_reference_logprob(base_dir, adapter_dir, row: dict, score: float) -> None:
    """Mean log-prob of " " + solution after the logged prompt, by a plain forward pass of base + adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter_dir)).eval()
    ctx, cont = row["arguments"][0][0], " " + row["doc"]["solution"].strip()
    whole = tok(ctx + cont, add_special_tokens=False)["input_ids"]
    n_cont = len(whole) - len(tok(ctx, add_special_tokens=False)["input_ids"])
    # lm-eval keeps the last max_length + 1 tokens (the tiny model's context is 512) and scores the continuation
    window = whole[-(model.config.max_position_embeddings + 1):]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([window[:-1]])).logits[0].double(), -1)
    lp = [float(logp[i - 1, window[i]]) for i in range(len(window) - n_cont, len(window))]
    assert score == pytest.approx(sum(lp) / len(lp), abs=1e-4)


@pytest.mark.parametrize(
    ("bench", "metric", "filter_name"),
    [("ss_arith", "exact_match", "last-number"), ("ss_ifeval", "prompt_level_strict_acc", "none"),
     ("ss_code", "pass@1", "none")],
)  # fmt: skip
def test_generative_suites(evaluator, tiny_base, tiny_adapter, other_adapter, tmp_path, bench, metric, filter_name,
                           code_sandbox):
    # (not "benchmark": pytest-benchmark owns that fixture name)
    subjects = {"baseline": tiny_adapter, "other": other_adapter}
    res = evaluator.evaluate(str(tiny_base), subjects, bench, limit=LIMIT_GEN, out_dir=tmp_path)
    _check_common(res, bench, metric, LIMIT_GEN)
    if bench == "ss_arith":  # the reference solution's teacher-forced mean token log-prob, checked by hand below
        for r in res.values():
            assert r.scores is not None and len(r.scores) == LIMIT_GEN and all(x < 0 for x in r.scores)
            assert [s["reference_logprob"] for s in _samples(r)] == r.scores
        assert res["baseline"].scores != res["other"].scores
        _check_reference_logprob(tiny_base, tiny_adapter, _samples(res["baseline"])[0], res["baseline"].scores[0])
    else:
        assert all(r.scores is None for r in res.values())  # no reference answer: no continuous score
    for r in res.values():
        rows = _samples(r)
        assert all(s["filter"] == filter_name for s in rows)
        # Greedy generations were capped by the evaluator's max_gen_toks (char-level tokenizer: 1 token = 1 char).
        assert all(len(s["resps"][0][0]) <= MAX_GEN_TOKS for s in rows)


def _lls(r: EvalResult) -> list[float]:
    return [c[0][0] for s in _samples(r) for c in s["resps"]]


def test_same_config_adapters_are_swapped_in_place_with_the_same_results(tiny_base, tiny_adapter, other_adapter,
                                                                        tmp_path_factory):
    """arm_by_arm: subjects sharing a config reuse one set of LoRA layers (weights swapped in place); the scores are
    exactly those of each adapter injected alone, and an adapter with another config gets layers of its own."""
    third = tiny.save_adapter(tiny_base, tmp_path_factory.mktemp("r8"), r=8, alpha=16, seed=3)
    swapped = get_evaluator("lm_eval", batch_size=8, device="cpu", arms_pass="arm_by_arm")
    subjects = {"a": tiny_adapter, "b": other_adapter, "c": third, "a-again": tiny_adapter}
    res = swapped.evaluate(str(tiny_base), subjects, "ss_mc", limit=LIMIT_MC, out_dir=tmp_path_factory.mktemp("sw"))
    assert swapped._adapter_seq == 2  # a and b (and a again) share layers; c (r 8) has its own
    assert _lls(res["a"]) == _lls(res["a-again"])
    for name, path in (("a", tiny_adapter), ("b", other_adapter), ("c", third)):
        alone = get_evaluator("lm_eval", batch_size=8, device="cpu", arms_pass="arm_by_arm").evaluate(
            str(tiny_base), {name: path}, "ss_mc", limit=LIMIT_MC, out_dir=tmp_path_factory.mktemp("alone"))
        assert _lls(alone[name]) == pytest.approx(_lls(res[name]), abs=1e-6), name
        assert alone[name].outcomes == res[name].outcomes


def test_bare_base_between_adapters_disables_them_and_the_next_subject_gets_its_adapter_back(
    evaluator, tiny_base, tiny_adapter, other_adapter, mc_run, tmp_path
):
    """The adapter-applied canary: BARE_BASE scored between adapters runs the base with every LoRA layer
    disabled (the same numbers as the base model evaluated on its own, never wrapped), and the subjects after
    it get their adapters back with exactly the numbers they have without a bare base in between."""
    first, _ = mc_run
    subjects = {"a": tiny_adapter, "bare": BARE_BASE, "a-again": tiny_adapter, "other": other_adapter}
    res = evaluator.evaluate(str(tiny_base), subjects, "ss_mc", limit=LIMIT_MC, out_dir=tmp_path / "mid")
    assert _lls(res["a"]) == _lls(res["a-again"])
    assert _lls(res["a"]) == pytest.approx(_lls(first["baseline"]), abs=1e-6)
    assert _lls(res["other"]) == pytest.approx(_lls(first["other"]), abs=1e-6)
    # the bare base on its own: a fresh evaluator on a base model that was never wrapped by PEFT
    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    alone = LmEvalEvaluator(model=model, tokenizer=tiny.make_tokenizer(), model_id="tiny", device="cpu").evaluate(
        "tiny", {"bare": BARE_BASE}, "ss_mc", limit=LIMIT_MC, out_dir=tmp_path / "alone")  # fmt: skip
    assert _lls(res["bare"]) == pytest.approx(_lls(alone["bare"]), abs=1e-5)
    assert res["bare"].outcomes == alone["bare"].outcomes
    # the gate's check: the baseline differs from the bare base on some (here: every) document
    assert differing_docs(res["a"], res["bare"], by="response") == res["a"].doc_ids
    assert differing_docs(res["a"], res["a-again"], by="response") == []
    assert differing_docs(res["bare"], alone["bare"], by="response", rel_tol=1e-5) == []


def test_base_loaded_once(evaluator, mc_run):
    # Runs after the module's other evaluations (file order): one load for every call above.
    assert evaluator.base_loads == 1


def test_preloaded_model_is_used(tiny_base, tiny_adapter, tmp_path):
    model, tok = tiny.make_model(), tiny.make_tokenizer()
    ev = LmEvalEvaluator(model=model, tokenizer=tok, model_id="tiny", device="cpu")
    res = ev.evaluate("tiny", {"a": tiny_adapter}, "ss_mc", limit=2, out_dir=tmp_path)
    assert ev.base_loads == 0 and res["a"].n == 2
    # The adapters were unloaded again: the caller's model has no LoRA layers left.
    assert not any("lora_" in n for n, _ in model.named_parameters())


def test_chosen_documents_score_as_in_the_full_run(evaluator, tiny_base, other_adapter, mc_run, tmp_path):
    """docs= (lm-eval's samples=) evaluates exactly those indices, each scored as the first-N run scores it."""
    res, _ = mc_run
    chosen = [LIMIT_MC - 1, 1, 3]
    part = evaluator.evaluate(str(tiny_base), {"other": other_adapter, "bare": None}, "ss_mc", limit=None,
                              docs=chosen, out_dir=tmp_path)
    for name in ("other", "bare"):
        assert part[name].doc_ids == [str(i) for i in sorted(chosen)] and part[name].n == 3
        assert part[name].outcomes == [res[name].outcomes[i] for i in sorted(chosen)]
        full = {s["doc_id"]: [c[0][0] for c in s["resps"]] for s in _samples(res[name])}
        for s in _samples(part[name]):
            assert [c[0][0] for c in s["resps"]] == pytest.approx(full[s["doc_id"]], abs=1e-5)
    with pytest.raises(ValueError, match="not both"):
        evaluator.evaluate(str(tiny_base), {"bare": None}, "ss_mc", limit=2, docs=[0], out_dir=tmp_path)
    with pytest.raises(ValueError, match="distinct non-negative"):
        evaluator.evaluate(str(tiny_base), {"bare": None}, "ss_mc", limit=None, docs=[1, 1], out_dir=tmp_path)


def test_input_errors(evaluator, tiny_base, tiny_adapter, tmp_path):
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        evaluator.evaluate(str(tiny_base), {"x": tmp_path}, "ss_mc", limit=2, out_dir=tmp_path)
    with pytest.raises(ValueError, match="subject name"):
        evaluator.evaluate(str(tiny_base), {"../x": tiny_adapter}, "ss_mc", limit=2, out_dir=tmp_path)
    with pytest.raises(ValueError, match="limit"):
        evaluator.evaluate(str(tiny_base), {"x": tiny_adapter}, "ss_mc", limit=0, out_dir=tmp_path)
    with pytest.raises(KeyError, match="ss_mc"):
        evaluator.evaluate(str(tiny_base), {"x": tiny_adapter}, "ss_mcq", limit=2, out_dir=tmp_path)


def test_key_names_versions_and_settings(evaluator):
    assert "lm_eval=0.4" in evaluator.key and f"max_gen_toks={MAX_GEN_TOKS}" in evaluator.key
    assert "suites=" in evaluator.key
    # the reference answers' extra pass is opt-in and keyed; off, the keys are those of evaluations made before it
    assert ";reference_scores" in evaluator.key and "reference_scores" not in LmEvalEvaluator.identity()


# ------------------------------------------------------------------------------------------- fake
def test_fake_is_deterministic_and_content_addressed(tiny_base, tiny_adapter, other_adapter, tmp_path):
    ev = get_evaluator("fake")
    subjects = {"baseline": tiny_adapter, "other": other_adapter, "again": tiny_adapter, "bare": None}
    r1 = ev.evaluate(str(tiny_base), subjects, "ss_mc", limit=40, out_dir=tmp_path / "1")
    r2 = FakeEvaluator().evaluate(str(tiny_base), subjects, "ss_mc", limit=40, out_dir=tmp_path / "2")
    assert {k: v.outcomes for k, v in r1.items()} == {k: v.outcomes for k, v in r2.items()}
    assert r1["baseline"].outcomes == r1["again"].outcomes  # same weights file, same outcomes
    assert r1["baseline"].outcomes != r1["other"].outcomes
    assert 0 < sum(r1["baseline"].outcomes) < 40  # not a constant
    assert all(r.doc_ids == [str(i) for i in range(40)] for r in r1.values())
    assert [json.loads(x)["acc"] for x in Path(r1["other"].samples_path).read_text().splitlines()] == r1[
        "other"
    ].outcomes
    for r in r1.values():  # a continuous margin whose sign is the outcome, deterministic and content-addressed
        assert [1.0 if x > 0 else 0.0 for x in r.scores] == r.outcomes and len(set(r.scores)) == 40
    assert r1["baseline"].scores == r1["again"].scores == r2["baseline"].scores
    assert r1["baseline"].scores != r1["other"].scores != r1["bare"].scores


def test_fake_bare_base(tiny_base, tiny_adapter, tmp_path):
    ev = FakeEvaluator()
    subjects = {"a": tiny_adapter, "bare": BARE_BASE, "a-again": tiny_adapter}
    res = ev.evaluate(str(tiny_base), subjects, "ss_mc", limit=40, out_dir=tmp_path / "mid")
    alone = ev.evaluate(str(tiny_base), {"bare": BARE_BASE}, "ss_mc", limit=40, out_dir=tmp_path / "alone")
    assert res["bare"].outcomes == alone["bare"].outcomes and res["a"].outcomes == res["a-again"].outcomes
    assert differing_docs(res["a"], res["bare"], by="response")  # no logged responses: outcomes decide
    other_base = ev.evaluate("another/base", {"bare": BARE_BASE}, "ss_mc", limit=40, out_dir=tmp_path / "o")
    assert other_base["bare"].outcomes != alone["bare"].outcomes  # the bare base is keyed by the base model


def test_fake_rates_and_default_size(tiny_base, tiny_adapter, tmp_path):
    ev = FakeEvaluator(n_docs=30, rates={"good": 1.0, "bad": 0.0})
    subjects = {"good": tiny_adapter, "bad": tiny_adapter}
    res = ev.evaluate(str(tiny_base), subjects, "ifeval", limit=None, out_dir=tmp_path)
    assert res["good"].value == 1.0 and res["bad"].value == 0.0 and res["good"].n == 30
    assert res["good"].metric == "prompt_level_strict_acc"
    assert ev.key != FakeEvaluator().key
    some = ev.evaluate(str(tiny_base), subjects, "ss_mc", limit=None, docs=[7, 2], out_dir=tmp_path / "d")
    first = ev.evaluate(str(tiny_base), subjects, "ss_mc", limit=8, out_dir=tmp_path / "e")
    assert some["bad"].doc_ids == ["2", "7"]
    for r in (FakeEvaluator(rate=0.5),):  # mixed outcomes: document i scores the same in any call
        a = r.evaluate(str(tiny_base), {"x": tiny_adapter}, "ss_mc", limit=None, docs=[5, 30], out_dir=tmp_path / "f")
        b = r.evaluate(str(tiny_base), {"x": tiny_adapter}, "ss_mc", limit=31, out_dir=tmp_path / "g")
        assert a["x"].outcomes == [b["x"].outcomes[5], b["x"].outcomes[30]]
    assert first["good"].n == 8
    per_bench = FakeEvaluator(n_docs=30, rates={"good": 1.0, "ss_mc/good": 0.0})  # benchmark-specific wins
    assert per_bench.evaluate(str(tiny_base), subjects, "ifeval", limit=None,
                              out_dir=tmp_path / "b")["good"].value == 1.0
    assert per_bench.evaluate(str(tiny_base), subjects, "ss_mc", limit=None,
                              out_dir=tmp_path / "c")["good"].value == 0.0


# --------------------------------------------------------------------------------------- registry
def test_registry_duplicates_and_suggestions():
    with pytest.raises(ValueError, match="already registered"):
        register_evaluator("fake")(object)
    with pytest.raises(KeyError, match="Did you mean 'lm_eval'"):
        get_evaluator("lm-eval")


def test_mean_stderr():
    assert mean_stderr([1.0]) is None
    assert mean_stderr([0.0, 1.0]) == pytest.approx(0.5)
