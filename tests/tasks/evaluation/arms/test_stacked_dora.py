"""DoRA arms in the stacked multiply: each row equals PEFT's DoRA forward with its adapter active (one layer,
log-likelihoods, greedy strings, one evaluator call), DoRA-only and mixed with plain-LoRA arms and the bare base, on
tiny Llama and Qwen2 (biased q/k/v) in fp32; what PEFT's mixed batch would have to run goes arm by arm, recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from spectral_surgery.tasks.decision.canaries import canaries
from spectral_surgery.tasks.decision.gate import ArmOutcomes
from spectral_surgery.tasks.evaluation.arms import BASE_ARM, stacked_lora
from spectral_surgery.tasks.evaluation.arms.compare import compare_results
from spectral_surgery.tasks.evaluation.arms.generation import generate_until_arms
from spectral_surgery.tasks.evaluation.arms.lm import ArmsLM
from spectral_surgery.tasks.evaluation.arms.loglikelihood import loglikelihood_arms
from spectral_surgery.tasks.evaluation.arms.stacked_lora import MixedBatch, MixedBatchRefused, StackedLora
from spectral_surgery.tasks.evaluation.evaluate import get_evaluator
from tests import tiny
from tests.benchmarks.bench_eval_generation import arm_by_arm
from tests.tasks.evaluation.arms.test_stacked_lora import _lora_layers
from tests.tasks.evaluation.arms.test_stacked_lora import _requests as _stacked_requests

TOL_LL = 1e-4  # fp32: max |ΔLL| per request against HFLM with each adapter active
TOL_LAYER = 1e-5  # fp32: max |Δ| of one layer's output against PEFT's DoRA forward
# DoRA arms of different ranks, targets and scalings (rslora), a plain-LoRA arm, and the bare base
CONFIGS = {
    "dora": dict(r=4, lora_alpha=8, target_modules=tiny.TARGETS_ALL, use_dora=True),
    "dora_rs": dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"], use_dora=True,
                    use_rslora=True),
    "plain": dict(r=8, lora_alpha=16, target_modules=["q_proj", "o_proj", "up_proj"]),
}
DORA_ONLY = ("dora", BASE_ARM, "dora_rs")
MIXED = ("plain", "dora", BASE_ARM, "dora_rs")
CONTEXTS = ("Question: what is 2+2?\nAnswer:", "Hi", "A longer context, with words and more words.\nAnswer:")
CONTINUATIONS = (" 4", " five", "x", " the time of day")
LIMIT_MC = 12
LIMIT_GEN = 3


def _randomize(pm, seed: int, scale: float = 0.3) -> None:
    """Seeded random A and B, and magnitudes away from the weight norms (PEFT's init makes ``m / ||W + sBA|| = 1``)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_magnitude_vector" in n:
                p.mul_(1 + scale * torch.randn(p.shape, generator=g))
            elif "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def _peft(configs: dict[str, dict], arch: str = "llama"):
    """A tiny model with one seeded random adapter per config (dropout as saved adapters have it), eval mode."""
    from peft import LoraConfig, get_peft_model

    names = list(configs)
    cfg = {n: LoraConfig(lora_dropout=0.05, **c) for n, c in configs.items()}
    model = tiny.make_model(arch=arch)
    with torch.no_grad():  # Qwen2's q/k/v biases start at 0: make them count (DoRA rescales W x, not the bias)
        for n, p in model.named_parameters():
            if n.endswith(".bias"):
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    pm = get_peft_model(model, cfg[names[0]], adapter_name=names[0])
    for n in names[1:]:
        pm.add_adapter(n, cfg[n])
    _randomize(pm, seed=1)
    return pm.eval()


def _requests() -> list[Instance]:
    return _stacked_requests(CONTEXTS, CONTINUATIONS)


def _hflm(lm: HFLM, requests, arm: str) -> list[tuple[float, bool]]:
    """HFLM's own scores with ``arm``'s adapter active (PEFT's DoRA forward), the bare base with adapters off."""
    if arm == BASE_ARM:
        with lm.model.disable_adapter():
            return HFLM.loglikelihood(lm, requests, disable_tqdm=True)
    lm.model.set_adapter(arm)
    return HFLM.loglikelihood(lm, requests, disable_tqdm=True)


def _max_dll(a: list[tuple[float, bool]], b: list[tuple[float, bool]]) -> float:
    assert [x[1] for x in a] == [y[1] for y in b]  # the same is-greedy flags
    return max(abs(x[0] - y[0]) for x, y in zip(a, b))


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def lm(request):
    return HFLM(pretrained=_peft(CONFIGS, request.param), tokenizer=tiny.make_tokenizer(), batch_size=4)


# ------------------------------------------------------------------------------------------ one layer
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_one_layer_equals_peft_dora_forward_row_by_row(arch):
    pm = _peft(CONFIGS, arch)
    names = ["dora_rs", "plain", BASE_ARM, "dora", "dora", "dora_rs"]  # repeated arms, the base, absent arms
    biased = 0
    for layer in _lora_layers(pm):
        x = torch.randn(len(names), 5, layer.in_features, generator=torch.Generator().manual_seed(0))
        ref = {}
        with torch.no_grad():
            for arm in MIXED:
                if arm == BASE_ARM:
                    ref[arm] = layer.get_base_layer()(x)
                else:
                    pm.set_adapter(arm)
                    ref[arm] = layer(x)  # PEFT's own forward: DoRA where the arm is DoRA on this layer
        expected = torch.stack([ref[n][i] for i, n in enumerate(names)])
        stacked = StackedLora([layer], MIXED)
        assert stacked.peft_layers == []  # DoRA is stacked
        stack = stacked.stacks[layer]
        dora = [a for a in MIXED if layer.use_dora.get(a, False)]
        assert (stack.rescale is not None) == bool(dora)
        if dora:
            plain_slots = [int(stack.slot_of[i]) for i, a in enumerate(MIXED) if a not in dora]
            assert not stack.rescale[plain_slots].any()  # the base, plain and absent arms are not rescaled
            biased += stack.bias is not None
        for grad in (True, False):  # out of place (autograd) and accumulated in place into the base output
            with stacked.installed(), stacked.rows(names), torch.set_grad_enabled(grad):
                got = layer(x)
            assert (got - expected).abs().max() <= TOL_LAYER, (arch, grad)
    assert biased == (6 if arch == "qwen2" else 0)  # Qwen2's q/k/v biases: DoRA rescales the base output without them


# ------------------------------------------------------------------------------------------ one pass
@pytest.mark.parametrize("arms", [DORA_ONLY, MIXED], ids=["dora_only", "mixed"])
def test_one_pass_equals_hflm_with_each_adapter_active(lm, arms, monkeypatch):
    requests = _requests()
    factors = []
    factor = stacked_lora.dora_factor
    monkeypatch.setattr(stacked_lora, "dora_factor",
                        lambda layer, arm: factors.append((layer, arm)) or factor(layer, arm))
    fallbacks: dict[str, str] = {}
    got = loglikelihood_arms(lm, requests, arms, batch_size=3, fallbacks=fallbacks)
    assert fallbacks == {}  # every layer stacked, DoRA arms included
    # each DoRA arm's m / ||W + sBA|| computed once per (layer, arm) for the whole pass, not per batch
    pairs = [(m, a) for m in _lora_layers(lm.model) for a in arms if m.use_dora.get(a, False)]
    assert len(factors) == len(set(factors)) == len(pairs) and set(factors) == set(pairs)
    for arm in arms:
        assert _max_dll(got[arm], _hflm(lm, requests, arm)) <= TOL_LL, arm
    for arm in arms:  # every arm is its own adapter: none is served another's scores
        others = [a for a in arms if a != arm]
        assert all(max(abs(x[0] - y[0]) for x, y in zip(got[arm], got[o])) > 1e-2 for o in others), arm


def test_greedy_generation_equals_hflm_per_arm(monkeypatch):
    lm = HFLM(pretrained=_peft(CONFIGS), tokenizer=tiny.make_tokenizer(), batch_size=3)
    gen = {"until": ["\n\n", "."], "do_sample": False, "temperature": 0.0, "max_gen_toks": 12}
    prompts = ["Q: 2+3?\nA:", "Hello there", "The quick brown fox", "z"]
    requests = [Instance("generate_until", {}, (p, dict(gen)), i) for i, p in enumerate(prompts)]
    expected = arm_by_arm(lm, requests, MIXED)
    assert len({tuple(v) for v in expected.values()}) == len(MIXED)  # the arms write different strings
    for reference in ("dora", BASE_ARM, "plain"):
        fallbacks: dict[str, str] = {}
        got, stats = generate_until_arms(lm, requests, MIXED, reference=reference, fallbacks=fallbacks)
        assert got == expected and fallbacks == {}, reference
        assert stats.arm(reference).forward_passes > 0


# ------------------------------------------------------------------------------------------ arm by arm, recorded
@pytest.mark.parametrize("case", ["dora_embedding", "lora_multiply_peft"])
def test_dora_that_needs_pefts_mixed_batch_goes_arm_by_arm_recorded(case):
    """PEFT's mixed batch refuses DoRA: a DoRA arm on a layer that is not stacked (an embedding) or with
    ``lora_multiply="peft"`` is scored by HFLM with each adapter active, the reason recorded, never an error."""
    configs = {"plain": CONFIGS["plain"], "dora": CONFIGS["dora"]}
    multiply = "peft"
    if case == "dora_embedding":
        configs["dora"] = dict(r=2, lora_alpha=4, target_modules=["q_proj", "embed_tokens"], use_dora=True)
        multiply = "stacked"
    pm = _peft(configs)
    arms = ["plain", "dora", BASE_ARM]
    with pytest.raises(MixedBatchRefused, match=r"DoRA arms \['dora'\] on LoRA layers left to PEFT's mixed batch"):
        MixedBatch(pm, arms, multiply)
    MixedBatch(pm, ["plain", BASE_ARM], multiply)  # without the DoRA arm the mixed batch is fine
    lm = ArmsLM(pm, tiny.make_tokenizer(), arms=arms, batch_size=4, lora_multiply=multiply)
    requests = _requests()
    scores = {}
    for arm in arms:
        lm.serve(arm)
        scores[arm] = lm.loglikelihood(requests)
    assert lm.fallbacks["loglikelihood"].startswith("arm by arm: DoRA arms ['dora']")
    for arm in arms:
        assert _max_dll(scores[arm], _hflm(lm, requests, arm)) <= TOL_LL, arm  # HFLM's own: equal to float order
    gen = {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 5}
    reqs = [Instance("generate_until", {}, (c, dict(gen)), i) for i, c in enumerate(["Q: 2+3?\nA:", "Hello"])]
    texts = lm._generate_all(reqs)
    assert lm.fallbacks["generate_until"].startswith("arm by arm: DoRA arms ['dora']")
    for arm in arms:
        with lm.active(arm):
            assert texts[arm] == HFLM.generate_until(lm, reqs, disable_tqdm=True), arm
    assert len({tuple(t) for t in texts.values()}) == len(arms)


# ------------------------------------------------------------------------------------------ end to end
def _save_dora(base_dir: Path, out_dir: Path, seed: int, scale: float = 0.3) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=tiny.TARGETS_ALL, lora_dropout=0.05, use_dora=True,
                     task_type="CAUSAL_LM")
    pm = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), cfg)
    _randomize(pm, seed, scale)
    pm.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def subjects(tiny_base, tmp_path_factory):
    """A DoRA baseline, its byte copy as the zero rebuild (the product's write path refuses DoRA), another DoRA
    adapter, a plain-LoRA one of another config and the bare base."""
    root = tmp_path_factory.mktemp("dora_subjects")
    baseline = _save_dora(tiny_base, root / "baseline", seed=4)  # answers 1 of the first 12 ss_mc unlike the base
    zero = Path(shutil.copytree(baseline, root / "zero"))
    other = _save_dora(tiny_base, root / "other", seed=5)
    plain = tiny.save_adapter(tiny_base, root / "plain", r=8, alpha=16, targets=["q_proj", "v_proj"], seed=7)
    return {"baseline": baseline, "zero_rebuild": zero, "other": other, "plain": plain, "bare": None}


def _evaluate(tiny_base, subjects, bench, limit, out, arms_pass):
    ev = get_evaluator("lm_eval", batch_size=4, device="cpu", max_gen_toks=6, arms_pass=arms_pass)
    return ev.evaluate(str(tiny_base), subjects, bench, limit=limit, out_dir=out), ev


def _canaries(res):
    arm = {k: ArmOutcomes(k, k, False, r.outcomes) for k, r in res.items()}
    return canaries(arm["baseline"], arm["zero_rebuild"], arm["bare"])


@pytest.fixture(scope="module")
def mc_reference(tiny_base, subjects, tmp_path_factory):
    return _evaluate(tiny_base, subjects, "ss_mc", LIMIT_MC, tmp_path_factory.mktemp("ref"), "arm_by_arm")[0]


def test_evaluator_one_pass_gives_the_arm_by_arm_outcomes_with_dora_arms(tiny_base, subjects, mc_reference,
                                                                         tmp_path):
    got, ev = _evaluate(tiny_base, subjects, "ss_mc", LIMIT_MC, tmp_path, "one_pass")
    cmp = compare_results(mc_reference, got)
    assert cmp.documents == LIMIT_MC * len(subjects) and cmp.mismatches == (), cmp.mismatches
    assert cmp.max_abs_dll is not None and cmp.max_abs_dll <= TOL_LL
    assert all(r.scoring.path == "one_pass" and r.scoring.fallbacks == () for r in got.values())
    record, flags = _canaries(got)
    assert flags == () and record["bare_base"]["n_differ"] > 0  # the canaries hold on the correct path
    gen_subjects = {k: subjects[k] for k in ("baseline", "other", "plain", "bare")}
    ref, _ = _evaluate(tiny_base, gen_subjects, "ss_arith", LIMIT_GEN, tmp_path / "gen_ref", "arm_by_arm")
    gen, ev = _evaluate(tiny_base, gen_subjects, "ss_arith", LIMIT_GEN, tmp_path / "gen", "one_pass")
    cmp = compare_results(ref, gen)
    assert cmp.mismatches == () and cmp.responses_differing == 0
    assert ev.last_scoring.fallbacks == ()  # greedy, DoRA stacked: verified in one pass, not arm by arm


def test_a_broken_stacked_dora_multiply_trips_the_bare_base_canary(tiny_base, subjects, monkeypatch, tmp_path):
    """Every row gets the first arm's (the DoRA baseline's) rescale and delta: the bare base scores as the
    baseline."""
    monkeypatch.setattr("spectral_surgery.tasks.evaluation.arms.stacked_lora.row_slots",
                        lambda stack, rows: stack.slot_of[torch.zeros_like(rows)])
    got, ev = _evaluate(tiny_base, subjects, "ss_mc", LIMIT_MC, tmp_path, "one_pass")
    record, flags = _canaries(got)
    assert not record["bare_base"]["ok"] and any("adapter not applied" in f for f in flags)
    assert ev.last_scoring.fallbacks == ()
