"""The stacked multi-arm LoRA multiply equals PEFT's mixed batch and each adapter alone, and leaves PEFT untouched."""

from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from spectral_surgery.tasks.evaluation.arms import BASE_ARM
from spectral_surgery.tasks.evaluation.arms import stacked_lora
from spectral_surgery.tasks.evaluation.arms.loglikelihood import loglikelihood_arms
from spectral_surgery.tasks.evaluation.arms.stacked_lora import StackedLora, unsupported
from tests import tiny

TOL_LL = 1e-4  # fp32: max |ΔLL| per request against PEFT's mixed batch and against HFLM arm by arm (~1e-6 measured)
TOL_LAYER = 1e-5  # fp32: max |Δ| of one layer's output against PEFT's mixed batch
# arms of different ranks, target modules and scalings (rslora), and the bare base among them
CONFIGS = {
    "wide": dict(r=4, lora_alpha=8, target_modules=tiny.TARGETS_ALL),
    "narrow": dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    "rs": dict(r=2, lora_alpha=4, target_modules=["o_proj", "down_proj", "q_proj"], use_rslora=True),
}
ARMS = ("wide", BASE_ARM, "narrow", "rs")
CONTEXTS = ("Question: what is 2+2?\nAnswer:", "Hi", "A longer context, with words and more words, and a clause "
            "or two to make it the longest.\nAnswer:")
CONTINUATIONS = (" 4", " five", "x", " the time of day")


def _peft(configs: dict[str, dict], dropout: float = 0.05):
    """A tiny Llama with one seeded random LoRA adapter per config (dropout as saved adapters have it), eval mode."""
    from peft import LoraConfig, get_peft_model

    names = list(configs)
    cfg = {n: LoraConfig(lora_dropout=dropout, **c) for n, c in configs.items()}
    pm = get_peft_model(tiny.make_model(), cfg[names[0]], adapter_name=names[0])
    for n in names[1:]:
        pm.add_adapter(n, cfg[n])
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return pm.eval()


@pytest.fixture(scope="module")
def lm():
    return HFLM(pretrained=_peft(CONFIGS), tokenizer=tiny.make_tokenizer(), batch_size=4)


def _lora_layers(pm):
    from peft.tuners.lora import LoraLayer

    return [m for m in pm.modules() if isinstance(m, LoraLayer)]


def _requests(contexts=CONTEXTS, continuations=CONTINUATIONS) -> list[Instance]:
    return [Instance("loglikelihood", {}, (ctx, c), i)
            for i, (ctx, c) in enumerate((ctx, c) for ctx in contexts for c in continuations)]


def _hflm(lm: HFLM, requests, arm: str) -> list[tuple[float, bool]]:
    if arm == BASE_ARM:
        with lm.model.disable_adapter():
            return lm.loglikelihood(requests, disable_tqdm=True)
    lm.model.set_adapter(arm)
    return lm.loglikelihood(requests, disable_tqdm=True)


def _max_dll(a: list[tuple[float, bool]], b: list[tuple[float, bool]]) -> float:
    assert [x[1] for x in a] == [y[1] for y in b]  # the same is-greedy flags
    return max(abs(x[0] - y[0]) for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------ one layer
def test_one_layer_equals_peft_mixed_batch_row_by_row():
    pm = _peft(CONFIGS)
    names = ["rs", "wide", BASE_ARM, "narrow", "wide", "rs"]  # repeated arms, the base, an arm the layer lacks
    for layer in _lora_layers(pm):
        x = torch.randn(len(names), 5, layer.in_features, generator=torch.Generator().manual_seed(0))
        stacked = StackedLora([layer], ARMS)
        assert stacked.peft_layers == []
        ref = layer(x, adapter_names=names)
        for grad in (True, False):  # out of place (autograd) and accumulated in place into the base output
            with stacked.installed(), stacked.rows(names), torch.set_grad_enabled(grad):
                got = layer(x)
            assert (got - ref).abs().max() <= TOL_LAYER, grad
        mine = [a for a in ARMS if a in layer.lora_A]
        assert stacked.stacks[layer].a_t.shape[0] == len(mine) + 1  # slot 0: the zero arm
        assert stacked.stacks[layer].a_t.shape[2] == max(layer.r[a] for a in mine)  # padded to the largest rank


# ------------------------------------------------------------------------------------------ one pass
@pytest.mark.parametrize("batch_size", [3, 8])  # rows of several contexts and arms, right-padded to one width
def test_one_pass_equals_peft_mixed_batch_and_each_adapter_alone(lm, monkeypatch, batch_size):
    requests = _requests()
    calls = []
    delta = stacked_lora.add_lora_delta
    monkeypatch.setattr(stacked_lora, "add_lora_delta", lambda *a: calls.append(1) or delta(*a))
    fallbacks: dict[str, str] = {}
    got = loglikelihood_arms(lm, requests, ARMS, batch_size=batch_size, fallbacks=fallbacks)
    assert calls and fallbacks == {}  # the stacked path ran, every layer stacked
    n_stacked = len(calls)
    peft = loglikelihood_arms(lm, requests, ARMS, batch_size=batch_size, lora_multiply="peft")
    assert len(calls) == n_stacked  # the PEFT path does not touch the stacked multiply
    for arm in ARMS:
        assert _max_dll(got[arm], peft[arm]) <= TOL_LL, arm
        assert _max_dll(got[arm], _hflm(lm, requests, arm)) <= TOL_LL, arm
    for arm in ARMS[1:]:  # every arm is its own adapter
        assert max(abs(x[0] - y[0]) for x, y in zip(got[ARMS[0]], got[arm])) > 1e-2, arm
    assert all("forward" not in layer.__dict__ for layer in _lora_layers(lm.model))  # uninstalled


# ------------------------------------------------------------------------------------------ install / restore
def test_installed_restores_the_forward_on_exit_and_on_an_exception():
    from peft.tuners.lora.layer import Linear

    pm = _peft(CONFIGS)
    layers = _lora_layers(pm)
    peft_forward = Linear.forward
    x = torch.randn(2, 3, 32)
    stacked = StackedLora(layers, ARMS)
    with stacked.installed():
        assert all("forward" in layer.__dict__ for layer in layers)
        assert Linear.forward is peft_forward  # PEFT's class is untouched: only these instances
        with pytest.raises(RuntimeError, match="outside StackedLora.rows"):
            layers[0](x)
    assert all("forward" not in layer.__dict__ for layer in layers)
    with pytest.raises(ZeroDivisionError), stacked.installed(), stacked.rows(["wide", "rs"]):
        1 / 0
    assert all("forward" not in layer.__dict__ for layer in layers)
    assert Linear.forward is peft_forward
    with pytest.raises(KeyError, match="unknown arms"), stacked.rows(["nope"]):
        pass


# ------------------------------------------------------------------------------------------ fallbacks
def test_lora_bias_keeps_peft_mixed_batch_recorded_and_scores_stay_exact():
    configs = {"wide": CONFIGS["wide"], "biased": dict(r=4, lora_alpha=8, target_modules=["q_proj"], lora_bias=True)}
    arms = ("wide", "biased", BASE_ARM)
    pm = _peft(configs)
    stacked = StackedLora(_lora_layers(pm), arms)
    q_layers = [m for n, m in pm.named_modules() if n.endswith("q_proj") and m in stacked.peft_layers]
    assert len(stacked.peft_layers) == len(q_layers) == 2  # the q_proj of both decoder layers, nothing else
    lm = HFLM(pretrained=pm, tokenizer=tiny.make_tokenizer(), batch_size=4)
    requests = _requests()
    fallbacks: dict[str, str] = {}
    got = loglikelihood_arms(lm, requests, arms, batch_size=3, fallbacks=fallbacks)
    assert fallbacks["lora_multiply"] == "PEFT's mixed batch on 2 of 14 LoRA layers: lora_bias on arm 'biased' (2)"
    for arm in arms:
        assert _max_dll(got[arm], _hflm(lm, requests, arm)) <= TOL_LL, arm


def test_what_is_not_stacked_says_why():
    """Embeddings, lora_bias, active dropout, merged weights keep PEFT's mixed batch; DoRA on a linear layer is
    stacked (tests/tasks/evaluation/arms/test_stacked_dora.py), DoRA on an embedding is not."""
    from peft import LoraConfig, get_peft_model

    def layers(**cfg):
        pm = get_peft_model(tiny.make_model(), LoraConfig(r=2, **cfg), adapter_name="one")
        return pm, {n.rsplit(".", 1)[-1]: m for n, m in pm.named_modules() if hasattr(m, "lora_A")}

    _, got = layers(target_modules=["q_proj", "embed_tokens"])
    assert "Embedding" in unsupported(got["embed_tokens"], ["one"]) and unsupported(got["q_proj"], ["one"]) is None
    _, got = layers(target_modules=["q_proj", "embed_tokens"], use_dora=True)
    assert unsupported(got["q_proj"], ["one"]) is None
    assert "Embedding" in unsupported(got["embed_tokens"], ["one"])
    _, got = layers(target_modules=["q_proj"], lora_bias=True)
    assert unsupported(got["q_proj"], ["one"]) == "lora_bias on arm 'one'"
    pm, got = layers(target_modules=["q_proj"], lora_dropout=0.1)
    pm.train()
    assert unsupported(got["q_proj"], ["one"]) == "dropout active (training mode) on arm 'one'"
    pm.eval()
    assert unsupported(got["q_proj"], ["one"]) is None  # dropout is the identity at eval
    got["q_proj"].merge(adapter_names=["one"])
    assert unsupported(got["q_proj"], ["one"]) == "adapter weights merged into the base"
