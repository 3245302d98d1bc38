"""Batch sizes from free memory: the pure sizing on injected numbers, and loglikelihood_arms / ArmsLM using it."""

from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

import spectral_surgery.tasks.evaluation.arms.lm as arms_lm_module
import spectral_surgery.tasks.evaluation.arms.loglikelihood as ll_module
from spectral_surgery.tasks.evaluation.arms import memory
from spectral_surgery.tasks.evaluation.arms.lm import ArmsLM
from spectral_surgery.tasks.evaluation.arms.loglikelihood import loglikelihood_arms
from spectral_surgery.tasks.evaluation.arms.memory import MAX_ROWS, ModelDims, generation_rows, loglikelihood_rows
from tests import tiny
from tests.tasks.evaluation.arms.test_loglikelihood import ARMS, _peft, _requests

GIB = 2**30
# SmolLM2-135M's dimensions (config.json of HuggingFaceTB/SmolLM2-135M)
SMOL = ModelDims(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64, vocab=49152,
                 dtype_bytes=2)


def test_dims_of_a_transformers_config():
    from transformers import LlamaConfig

    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3)
    assert ModelDims.of(cfg, 2) == SMOL
    assert ModelDims.of(tiny.make_model().config, 4).kv_heads == 2


def test_rows_grow_with_free_memory_and_shrink_with_row_length():
    rows = [loglikelihood_rows(free * GIB, SMOL, row_tokens=512, scored_tokens=16, arms=8) for free in (2, 8, 32, 70)]
    assert rows == sorted(rows) and rows[0] < rows[-1]
    by_len = [loglikelihood_rows(8 * GIB, SMOL, row_tokens=n, scored_tokens=16, arms=8) for n in (128, 512, 2048)]
    assert by_len == sorted(by_len, reverse=True) and by_len[0] > by_len[-1]
    assert all(r % 8 == 0 for r in rows + by_len if r >= 8)  # whole contexts: one row per arm


def test_rows_are_bounded():
    assert loglikelihood_rows(0, SMOL, row_tokens=512, scored_tokens=16, arms=8) == 1  # never zero
    assert loglikelihood_rows(10**6 * GIB, SMOL, row_tokens=8, scored_tokens=2, arms=8) == MAX_ROWS
    assert loglikelihood_rows(70 * GIB, SMOL, row_tokens=64, scored_tokens=4, arms=8, needed=20) == 20
    assert loglikelihood_rows(70 * GIB, SMOL, row_tokens=64, scored_tokens=4, arms=3, needed=3) == 3


def test_a_half_precision_model_pays_for_the_fp32_head_copy():
    """The fp32 copy of lm_head (49152 x 576 x 4 bytes = 108 MiB) is taken off the budget of a bf16 model only."""
    fp32 = ModelDims(**{**SMOL.__dict__, "dtype_bytes": 4})
    assert SMOL.head_copy_bytes() == 49152 * 576 * 4 and fp32.head_copy_bytes() == 0
    tight = SMOL.head_copy_bytes() / memory.FREE_FRACTION  # exactly the head copy: nothing left for rows
    assert loglikelihood_rows(int(tight), SMOL, row_tokens=64, scored_tokens=4, arms=1) == 1
    assert loglikelihood_rows(int(tight), fp32, row_tokens=64, scored_tokens=4, arms=1) > 1


def test_generation_rows_split_the_budget_between_verification_and_decoding():
    verify, decode = generation_rows(40 * GIB, SMOL, prompt_tokens=600, gen_tokens=256, arms=8)
    assert verify % 8 == 0 and decode > verify  # a decoding row holds a cache, not a pass's activations
    longer = generation_rows(40 * GIB, SMOL, prompt_tokens=3000, gen_tokens=256, arms=8)
    assert longer[0] < verify and longer[1] < decode
    per_row_kv = SMOL.kv_bytes(856)
    assert decode * per_row_kv <= 40 * GIB * memory.FREE_FRACTION / 2  # the caches fit their half
    assert generation_rows(0, SMOL, prompt_tokens=600, gen_tokens=256, arms=8) == (1, 1)


def test_free_bytes_is_none_off_cuda():
    assert memory.free_bytes("cpu") is None


@pytest.fixture(scope="module")
def lm():
    tok = tiny.make_tokenizer()
    return HFLM(pretrained=_peft(tiny.make_model(tok)), tokenizer=tok, batch_size=4)


def test_loglikelihood_auto_sizes_each_batch_from_the_injected_free_memory(lm, monkeypatch):
    """With free memory injected, each batch's row count is loglikelihood_rows for its first (longest) row, and the
    scores are those of a fixed batch size."""
    requests = _requests(lm)
    fixed = loglikelihood_arms(lm, requests, ARMS, batch_size=1)
    dims = ModelDims.of(lm.model.config, 4)
    budget = 6 * dims.activation_bytes(40, 40) / memory.FREE_FRACTION  # room for a few rows of ~40 tokens
    sizes = []

    def spy(free, dims, **kw):
        sizes.append(loglikelihood_rows(free, dims, **kw))
        return sizes[-1]

    monkeypatch.setattr(ll_module, "free_bytes", lambda device: int(budget))
    monkeypatch.setattr(ll_module, "loglikelihood_rows", spy)
    got = loglikelihood_arms(lm, requests, ARMS, batch_size="auto")
    assert sum(sizes) == len(ARMS) * len({r.args[0] for r in requests}) and len(set(sizes)) > 1  # rows per batch vary
    for arm in ARMS:
        assert max(abs(x[0] - y[0]) for x, y in zip(fixed[arm], got[arm])) <= 1e-4
        assert [x[1] for x in fixed[arm]] == [y[1] for y in got[arm]]


def test_auto_off_cuda_uses_the_default_rows_and_arms_lm_accepts_it(lm, monkeypatch):
    seen = []
    monkeypatch.setattr(ll_module, "loglikelihood_rows", lambda *a, **k: seen.append(k) or 1)
    got = loglikelihood_arms(lm, _requests(lm)[:4], ARMS, batch_size="auto")  # cpu: DEFAULT_ROWS, no sizing
    assert seen == [] and len(got[ARMS[0]]) == 4
    alm = ArmsLM(lm.model, lm.tokenizer, arms=ARMS, batch_size="auto")
    gen = {"until": ["\n\n"], "do_sample": False, "max_gen_toks": 7}
    reqs = [Instance("generate_until", {}, ("Q: 2+3?\nA:", dict(gen)), 0)]
    assert alm._generation_rows(reqs) == (memory.DEFAULT_ROWS, 128)
    monkeypatch.setattr(arms_lm_module, "free_bytes", lambda device: 4 * GIB)
    dims = ModelDims.of(lm.model.config, 4)
    prompt = len(alm.tok_encode("Q: 2+3?\nA:"))
    assert alm._generation_rows(reqs) == generation_rows(4 * GIB, dims, prompt_tokens=prompt, gen_tokens=7,
                                                         arms=len(ARMS))
    texts = alm._generate_all(reqs)  # sized rows reach generate_until_arms: no fallback for an "auto" HFLM
    assert "generate_until" not in alm.fallbacks and set(texts) == set(ARMS)


def test_loglikelihood_refuses_a_bad_batch_size(lm):
    with pytest.raises(ValueError, match="int >= 1 or 'auto'"):
        loglikelihood_arms(lm, _requests(lm)[:2], ARMS, batch_size=0)
    with pytest.raises(ValueError, match="'auto'"):
        from spectral_surgery.tasks.evaluation.evaluate import LmEvalEvaluator

        LmEvalEvaluator(batch_size="max")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_auto_reads_free_memory_and_bf16_one_pass_keeps_the_fp32_outcomes(tiny_base, tmp_path, monkeypatch):
    from spectral_surgery.tasks.evaluation.arms.compare import compare_results
    from spectral_surgery.tasks.evaluation.evaluate import get_evaluator

    subjects = {"baseline": tiny.save_adapter(tiny_base, tmp_path / "a", seed=3), "bare": None,
                "other": tiny.save_adapter(tiny_base, tmp_path / "b", seed=5)}
    sized = []
    monkeypatch.setattr(ll_module, "loglikelihood_rows",
                        lambda free, dims, **k: sized.append(free) or loglikelihood_rows(free, dims, **k))
    res = {}
    for dtype, arms_pass, bs in (("float32", "arm_by_arm", 8), ("bfloat16", "one_pass", "auto")):
        ev = get_evaluator("lm_eval", batch_size=bs, device="cuda", dtype=dtype, arms_pass=arms_pass)
        res[dtype] = ev.evaluate(str(tiny_base), subjects, "ss_mc", limit=24, out_dir=tmp_path / dtype)
    assert sized and all(free > 0 for free in sized)  # free memory was read and used
    cmp = compare_results(res["float32"], res["bfloat16"])
    assert cmp.mismatches == () and cmp.max_abs_dll <= 0.1
