"""loglikelihood_arms equals lm-eval's HFLM.loglikelihood with each adapter active, on tiny Llama and Qwen2 models."""

from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from spectral_surgery.tasks.evaluation.arms import BASE_ARM
from spectral_surgery.tasks.evaluation.arms.loglikelihood import loglikelihood_arms, window
from tests import tiny

TOL_LL = 1e-4  # max |ΔLL| per request against HFLM (fp32; measured ~1e-5: only the summation order differs)
ADAPTERS = ("arm1", "arm2", "arm3")  # names that PEFT does not confuse with its "lora_" prefix
ARMS = ("arm1", BASE_ARM, "arm2", "arm3")
CONTEXTS = ("Question: what is 2+2?\nAnswer:", "Hi", "", "A much longer context, with words and more words, "
            "and a clause or two to make it the longest of them all.\nAnswer:")
CONTINUATIONS = (" 4", " five", "x", " the time of day", " 4")  # one-token, multi-token, a duplicate


def _qwen2(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).eval()


def _peft(model):
    """The model with three seeded random LoRA adapters named ADAPTERS (all seven projections)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=tiny.TARGETS_ALL, lora_dropout=0.0)
    pm = get_peft_model(model, cfg, adapter_name=ADAPTERS[0])
    for name in ADAPTERS[1:]:
        pm.add_adapter(name, cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return pm.eval()


def _greedy(pm, tok, context: str, arm: str, n: int = 3) -> str:
    """The arm's own greedy n-token continuation of ``context`` (so that some requests are greedy for some arm)."""
    ids = tok(context, return_tensors="pt").input_ids
    with torch.no_grad(), pm.disable_adapter() if arm == BASE_ARM else _set(pm, arm):
        for _ in range(n):
            ids = torch.cat([ids, pm(ids).logits[:, -1:].argmax(-1)], 1)
    return tok.decode(ids[0, -n:])


class _set:
    def __init__(self, pm, arm):
        self.pm, self.arm = pm, arm

    def __enter__(self):
        self.pm.set_adapter(self.arm)

    def __exit__(self, *exc):
        return False


def _reference(lm: HFLM, requests, arm: str) -> list[tuple[float, bool]]:
    pm = lm.model
    if arm == BASE_ARM:
        with pm.disable_adapter():
            return lm.loglikelihood(requests, disable_tqdm=True)
    pm.set_adapter(arm)
    return lm.loglikelihood(requests, disable_tqdm=True)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def lm(request):
    tok = tiny.make_tokenizer()
    model = tiny.make_model(tok) if request.param == "llama" else _qwen2(tok)
    pm = _peft(model)
    return HFLM(pretrained=pm, tokenizer=tok, batch_size=4)


def _requests(lm: HFLM) -> list[Instance]:
    reqs = []
    for ctx in CONTEXTS:
        conts = list(CONTINUATIONS)
        if ctx:
            conts += [_greedy(lm.model, lm.tokenizer, ctx, arm) for arm in ARMS]
        reqs += [Instance("loglikelihood", {}, (ctx, c), len(reqs)) for c in conts]
    return reqs


@pytest.mark.parametrize("max_length", [None, 24])  # 24: long contexts are truncated on the left, as HFLM does
@pytest.mark.parametrize("batch_size", [1, 3])  # 3: rows of several contexts and arms padded to one width
def test_every_arm_equals_hflm_with_that_adapter_active(lm, max_length, batch_size):
    lm._max_length = max_length
    try:
        requests = _requests(lm)
        got = loglikelihood_arms(lm, requests, ARMS, batch_size=batch_size)
        greedy_somewhere = False
        for arm in ARMS:
            ref = _reference(lm, requests, arm)
            assert len(got[arm]) == len(ref)
            assert max(abs(x[0] - y[0]) for x, y in zip(ref, got[arm])) <= TOL_LL, arm
            assert [x[1] for x in ref] == [y[1] for y in got[arm]], arm
            greedy_somewhere |= any(x[1] for x in ref)
        assert greedy_somewhere  # the is_greedy comparison saw both values
        # every arm really is its own adapter (mixed batches honour adapter_names)
        for a in ARMS[1:]:
            assert max(abs(x[0] - y[0]) for x, y in zip(got[ARMS[0]], got[a])) > 1e-2, a
    finally:
        lm._max_length = None


def test_unknown_arm_and_refused_requests(lm):
    with pytest.raises(KeyError, match="not adapters"):
        loglikelihood_arms(lm, _requests(lm)[:2], ["arm1", "nope"], batch_size=2)
    with pytest.raises(ValueError, match="continuation of 0 tokens"):
        window([1, 2], [], 10)
    assert window([5, 6, 7, 8], [9, 10], 3) == (7, 8)  # (ctx + cont)[-(3 + 1):] minus the continuation
