"""ArmsLM and LmEvalEvaluator(arms_pass="one_pass") against the arm-by-arm path, and the canaries on the new path."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from spectral_surgery.tasks.decision.gate import ArmOutcomes
from spectral_surgery.tasks.decision.canaries import canaries
from spectral_surgery.tasks.evaluation.arms import BASE_ARM
from spectral_surgery.tasks.evaluation.arms.compare import compare_results
from spectral_surgery.tasks.evaluation.arms.lm import ArmsLM
from spectral_surgery.tasks.evaluation.evaluate import LmEvalEvaluator, evaluator_identity, get_evaluator
from tests import smol, tiny

LIMIT_MC = 12
LIMIT_GEN = 3
MAX_GEN_TOKS = 6


@pytest.fixture(scope="module")
def subjects(tiny_base, tmp_path_factory):
    """baseline, an edited candidate, the zero rebuild (σ unchanged through the write path), another adapter, one of
    another config (r 8: LoRA layers of its own; the others share the baseline's modules) and the bare base.
    The baseline (seed 3) answers 2 of the first 12 ss_mc documents unlike the bare base: the adapter-applied
    canary holds on the correct path."""
    root = tmp_path_factory.mktemp("arms_subjects")
    baseline = tiny.save_adapter(tiny_base, root / "baseline", seed=3)
    zero = smol.edit_sigmas(baseline, root / "zero", lambda _n, s: s, {"edit": "zero rebuild"})
    cand = smol.rescale_sigma(baseline, root / "cand", 0.5)
    other = tiny.save_adapter(tiny_base, root / "other", seed=5)
    r8 = tiny.save_adapter(tiny_base, root / "r8", r=8, alpha=16, targets=["q_proj", "v_proj"], seed=7)
    return {"baseline": baseline, "cand": cand, "zero_rebuild": zero, "other": other, "r8": r8, "bare": None}


def _evaluate(tiny_base, subjects, bench, limit, out, arms_pass, **kw):
    ev = get_evaluator("lm_eval", batch_size=4, device="cpu", max_gen_toks=MAX_GEN_TOKS, arms_pass=arms_pass, **kw)
    return ev.evaluate(str(tiny_base), subjects, bench, limit=limit, out_dir=out), ev


@pytest.fixture(scope="module")
def mc_reference(tiny_base, subjects, tmp_path_factory):
    return _evaluate(tiny_base, subjects, "ss_mc", LIMIT_MC, tmp_path_factory.mktemp("ref"), "arm_by_arm")[0]


def _canaries(res):
    arm = {k: ArmOutcomes(k, k, False, r.outcomes) for k, r in res.items()}
    return canaries(arm["baseline"], arm["zero_rebuild"], arm["bare"])


# ------------------------------------------------------------------------------------------ end to end
def test_one_pass_gives_the_arm_by_arm_outcomes_on_ss_mc(tiny_base, subjects, mc_reference, tmp_path):
    got, ev = _evaluate(tiny_base, subjects, "ss_mc", LIMIT_MC, tmp_path, "one_pass")
    cmp = compare_results(mc_reference, got)
    assert cmp.documents == LIMIT_MC * len(subjects)
    assert cmp.mismatches == (), cmp.mismatches
    assert cmp.max_abs_dll is not None and cmp.max_abs_dll <= 1e-4
    for name, r in got.items():
        assert r.outcomes == mc_reference[name].outcomes and r.doc_ids == mc_reference[name].doc_ids
        assert r.value == pytest.approx(mc_reference[name].value)
        assert r.scoring.path == "one_pass" and r.scoring.arms == len(subjects) and r.scoring.fallbacks == ()
    assert ev.last_scoring.shared_seconds > 0
    assert mc_reference["baseline"].scoring.path == "arm_by_arm"
    record, flags = _canaries(got)
    assert flags == ()  # the zero rebuild matches the baseline; the baseline differs from the bare base
    assert record["bare_base"]["n_differ"] > 0


def test_on_result_gets_every_subject_with_the_shared_seconds_split(tiny_base, subjects, tmp_path):
    seen = []
    ev = get_evaluator("lm_eval", batch_size=4, device="cpu", arms_pass="one_pass")
    ev.evaluate(str(tiny_base), {"baseline": subjects["baseline"], "bare": None}, "ss_mc", limit=4, out_dir=tmp_path,
                on_result=lambda r, s: seen.append((r.subject, s, r.scoring)))
    assert [n for n, _, _ in seen] == ["baseline", "bare"]
    shared = ev.last_scoring.shared_seconds
    assert shared > 0 and all(sc.shared_seconds == shared for _, _, sc in seen)
    assert all(s >= shared / 2 for _, s, _ in seen)  # each gets its own time plus an equal share of the pass


def test_one_pass_generation_verifies_against_the_first_subject_with_the_same_outputs(tiny_base, subjects, tmp_path):
    chosen = {k: subjects[k] for k in ("baseline", "cand", "zero_rebuild", "other", "bare")}
    ref, _ = _evaluate(tiny_base, chosen, "ss_arith", LIMIT_GEN, tmp_path / "ref", "arm_by_arm")
    got, ev = _evaluate(tiny_base, chosen, "ss_arith", LIMIT_GEN, tmp_path / "one", "one_pass")
    cmp = compare_results(ref, got)
    assert cmp.mismatches == () and cmp.responses_differing == 0
    assert ev.last_scoring.fallbacks == ()  # greedy: verified, not arm by arm
    diverged = {s: (d, n) for s, d, n in ev.last_scoring.diverged}
    assert set(diverged) == {"cand", "zero_rebuild", "other", "bare"}
    assert all(n == LIMIT_GEN for _, n in diverged.values())
    assert diverged["zero_rebuild"] == (0, LIMIT_GEN)  # σ unchanged: never leaves the baseline's greedy path


def test_a_setting_the_verifier_refuses_falls_back_arm_by_arm_recorded(arms_lm):
    """A repetition penalty changes greedy argmaxes: generate_until_arms refuses it and every arm is generated by HFLM
    with its adapter active, the reason recorded; outputs stay HFLM's."""
    gen = {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 5, "repetition_penalty": 1.3}
    reqs = [Instance("generate_until", {}, (c, dict(gen)), i) for i, c in enumerate(["Q: 2+3?\nA:", "Hello"])]
    texts = arms_lm._generate_all(reqs)
    assert "generate_until" in arms_lm.fallbacks and arms_lm.fallbacks["generate_until"].startswith("arm by arm: ")
    for arm in arms_lm.arms:
        with arms_lm.active(arm):
            assert texts[arm] == HFLM.generate_until(arms_lm, reqs, disable_tqdm=True), arm
    arms_lm.fallbacks.pop("generate_until")


def test_arms_pass_is_part_of_the_key_and_validated():
    one = evaluator_identity("lm_eval", arms_pass="one_pass")
    ref = evaluator_identity("lm_eval", arms_pass="arm_by_arm")
    assert one != ref and one.endswith(";arms=one_pass") and "arms=" not in ref
    assert evaluator_identity("lm_eval") == one  # the default
    with pytest.raises(ValueError, match="did you mean 'one_pass'"):
        LmEvalEvaluator(arms_pass="onepass")
    assert evaluator_identity("lm_eval", lora_multiply="stacked") == one  # the default keeps the one pass's key
    assert evaluator_identity("lm_eval", lora_multiply="peft") == one + ";lora=peft"
    assert evaluator_identity("lm_eval", arms_pass="arm_by_arm", lora_multiply="peft") == ref  # no LoRA multiply
    with pytest.raises(ValueError, match="did you mean 'stacked'"):
        LmEvalEvaluator(lora_multiply="stack")


# ----------------------------------------------------------------------------- canaries on a broken path
@contextmanager
def _ignoring_adapter_names(monkeypatch):
    """Break the one pass with PEFT's mixed batch (``lora_multiply="peft"``): the LoRA layers never see
    adapter_names, every row runs the active adapter (the first subject)."""
    monkeypatch.setattr("spectral_surgery.tasks.evaluation.arms.stacked_lora._inject_adapter_names",
                        lambda m, args, kw, **_: (args, kw))
    yield


def test_ignoring_adapter_names_trips_the_bare_base_canary(tiny_base, subjects, monkeypatch, tmp_path):
    with _ignoring_adapter_names(monkeypatch):
        got, ev = _evaluate(tiny_base, subjects, "ss_mc", LIMIT_MC, tmp_path, "one_pass", lora_multiply="peft")
    record, flags = _canaries(got)
    assert not record["bare_base"]["ok"] and any("adapter not applied" in f for f in flags)
    assert ev.key.endswith(";arms=one_pass;lora=peft")


def test_stacked_multiply_serving_the_first_arms_delta_to_every_row_trips_the_bare_base_canary(
        tiny_base, subjects, monkeypatch, tmp_path):
    """Break the stacked LoRA multiply (the default): every row gets the first subject's (the baseline's) delta, so
    the bare base scores as the baseline."""
    monkeypatch.setattr("spectral_surgery.tasks.evaluation.arms.stacked_lora.row_slots",
                        lambda stack, rows: stack.slot_of[torch.zeros_like(rows)])
    got, ev = _evaluate(tiny_base, subjects, "ss_mc", LIMIT_MC, tmp_path, "one_pass")
    record, flags = _canaries(got)
    assert not record["bare_base"]["ok"] and any("adapter not applied" in f for f in flags)
    assert ev.last_scoring.fallbacks == ()  # the broken path is the stacked one: no layer fell back to PEFT's


def test_stacked_multiply_serving_the_next_arms_delta_trips_the_zero_rebuild_canary(
        tiny_base, subjects, monkeypatch, mc_reference, tmp_path):
    """Break the stacked LoRA multiply: every row gets the next arm's delta (the zero rebuild gets 'other')."""
    monkeypatch.setattr("spectral_surgery.tasks.evaluation.arms.stacked_lora.row_slots",
                        lambda stack, rows: stack.slot_of[(rows + 1) % len(stack.slot_of)])
    got, _ = _evaluate(tiny_base, subjects, "ss_mc", LIMIT_MC, tmp_path, "one_pass")
    record, flags = _canaries(got)
    assert not record["zero_rebuild"]["ok"] and any("zero-rebuild canary" in f for f in flags)
    assert compare_results(mc_reference, got).mismatches


def test_serving_the_wrong_arm_trips_the_zero_rebuild_canary(tiny_base, subjects, monkeypatch, mc_reference,
                                                              tmp_path):
    serve = ArmsLM.serve

    def shifted(self, arm):  # every arm gets the next arm's responses
        serve(self, self.arms[(self.arms.index(arm) + 1) % len(self.arms)])

    monkeypatch.setattr(ArmsLM, "serve", shifted)
    got, _ = _evaluate(tiny_base, subjects, "ss_mc", LIMIT_MC, tmp_path, "one_pass")
    record, flags = _canaries(got)
    assert not record["zero_rebuild"]["ok"] and any("zero-rebuild canary" in f for f in flags)
    assert compare_results(mc_reference, got).mismatches  # and the comparison with the reference sees it


# ------------------------------------------------------------------------------------------ ArmsLM itself
@pytest.fixture(scope="module")
def arms_lm(tiny_base, subjects):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    pm = PeftModel.from_pretrained(model, str(subjects["baseline"]), adapter_name="s1")
    pm.load_adapter(str(subjects["other"]), adapter_name="s2")
    return ArmsLM(pm.eval(), tiny.make_tokenizer(), arms=["s1", BASE_ARM, "s2"], batch_size=2)


def test_model_work_happens_once_and_each_arm_is_served(arms_lm, monkeypatch):
    reqs = [Instance("loglikelihood", {}, ("Question: 1+1?\nAnswer:", c), i) for i, c in enumerate([" 2", " 3"])]
    first = arms_lm.loglikelihood(reqs)
    scored = dict(arms_lm.requests_scored)
    calls = []
    monkeypatch.setattr("spectral_surgery.tasks.evaluation.arms.lm.loglikelihood_arms", lambda *a, **k: calls.append(a))
    served = {}
    for arm in arms_lm.arms:
        arms_lm.serve(arm)
        served[arm] = arms_lm.loglikelihood(reqs)
    assert calls == [] and arms_lm.requests_scored == scored  # answered from the cache
    assert served["s1"] == first and served["s1"] != served["s2"] != served[BASE_ARM]
    arms_lm.serve("s1")
    with pytest.raises(KeyError, match="unknown arm"):
        arms_lm.serve("nope")


def test_rolling_falls_back_to_the_served_arm_and_is_recorded(arms_lm):
    req = [Instance("loglikelihood_rolling", {}, ("The clock shows the time of day.",), 0)]
    for arm in arms_lm.arms:
        arms_lm.serve(arm)
        with arms_lm.active(arm):
            ref = HFLM.loglikelihood_rolling(arms_lm, req, disable_tqdm=True)
        arms_lm.model.set_adapter("s2" if arm == "s1" else "s1")  # the fallback must set the served arm itself
        assert arms_lm.loglikelihood_rolling(req) == pytest.approx(ref, abs=1e-6)
    assert "loglikelihood_rolling" in arms_lm.fallbacks
    arms_lm.serve("s1")


def test_generate_all_is_hflm_per_arm(arms_lm):
    gen = {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 5}
    reqs = [Instance("generate_until", {}, (c, dict(gen)), i) for i, c in enumerate(["Q: 2+3?\nA:", "Hello"])]
    texts = arms_lm._generate_all(reqs)
    for arm in arms_lm.arms:
        with arms_lm.active(arm):
            assert texts[arm] == HFLM.generate_until(arms_lm, reqs, disable_tqdm=True), arm
    assert len({tuple(t) for t in texts.values()}) > 1  # the arms really generate differently
    torch.manual_seed(0)
