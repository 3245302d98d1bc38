"""The one-pass path on a bf16 model: scores from fp32 logits, and what bf16 logits would have decided instead."""

from __future__ import annotations

import copy

import pytest
import torch

from spectral_surgery.tasks.evaluation.arms.compare import compare_results
from spectral_surgery.tasks.evaluation.arms.precision import Fp32Head, fp32_head, fp32_logits
from spectral_surgery.tasks.evaluation.evaluate import get_evaluator
from tests import smol, tiny

LIMIT_MC = 24
TOL_LL_VS_FP32 = 0.1  # max |ΔLL|, bf16 one pass vs the fp32 arm-by-arm reference (measured 0.029; HFLM bf16: 0.23)
BF16_TIE_GAP = 0.25  # a top-2 gap HFLM's bf16 logits cannot resolve (LL sums of a few nats, bf16 spacing 2^-8 relative)


def test_fp32_head_is_the_fp32_projection_of_the_upcast_hidden_states():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True).to(torch.bfloat16)
    h = torch.randn(3, 5, 16).to(torch.bfloat16)
    exact = h.double() @ head.weight.double().T + head.bias.double()
    got = fp32_head(head)(h)
    assert got.dtype == torch.float32
    assert (got.double() - exact).abs().max() < 1e-5
    assert (head(h).double() - exact).abs().max() > 1e-3  # bf16 logits are rounded (what the upcast avoids)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # HFLM's mixed precision does not recast the projection
        assert fp32_head(head)(h).dtype == torch.float32


def test_bf16_logits_tie_where_the_model_has_a_preference_and_the_fp32_head_resolves_it():
    """Token 7's row is token 3's with one weight raised by 2^-6: it scores ~0.04 above token 3 at every position,
    both at the top near 60, where bf16 logits are spaced 0.25. bf16 logits mostly round the two to the same value,
    and argmax then returns the lower id (3) whatever the model prefers; the fp32 head ranks them as the weights do."""
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(10, 32, generator=g) * 0.2
    weight[3] = torch.rand(32, generator=g) * 0.5 + 0.5
    weight[3, 0] = 1.0
    weight[7] = weight[3]
    weight[7, 0] = 1.0 + 2**-6  # exact in bf16
    head = torch.nn.Linear(32, 10, bias=False).to(torch.bfloat16)
    with torch.no_grad():
        head.weight.copy_(weight)
    h = (torch.rand(64, 32, generator=g) * 3 + 1).to(torch.bfloat16)
    assert (fp32_head(head)(h).argmax(-1) == 7).all()
    logits = head(h).float()
    tied = logits[:, 3] == logits[:, 7]
    assert tied.float().mean() > 0.5
    assert (logits.argmax(-1)[tied] == 3).all()


def test_fp32_logits_swaps_the_head_of_a_half_model_only_inside_the_block():
    tok = tiny.make_tokenizer()
    model = tiny.make_model(tok)
    with fp32_logits(model) as swapped:
        assert not swapped  # an fp32 model runs as it is
    half = copy.deepcopy(model).to(torch.bfloat16)
    head = half.get_output_embeddings()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), fp32_logits(half) as swapped:
        assert swapped and isinstance(half.get_output_embeddings(), Fp32Head)
        logits = half(ids).logits
    assert logits.dtype == torch.float32 and half.get_output_embeddings() is head
    with torch.no_grad():
        hidden = half.model(ids).last_hidden_state
    assert torch.equal(logits, fp32_head(head)(hidden))


@pytest.fixture(scope="module")
def subjects(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("precision_subjects")
    baseline = tiny.save_adapter(tiny_base, root / "baseline", seed=3)
    return {"baseline": baseline, "cand": smol.rescale_sigma(baseline, root / "cand", 0.5),
            "other": tiny.save_adapter(tiny_base, root / "other", seed=5), "bare": None}


def _evaluate(tiny_base, subjects, out, dtype, arms_pass):
    ev = get_evaluator("lm_eval", batch_size=4, device="cpu", dtype=dtype, arms_pass=arms_pass)
    return ev.evaluate(str(tiny_base), subjects, "ss_mc", limit=LIMIT_MC, out_dir=out)


def test_bf16_one_pass_gives_the_fp32_outcomes_and_differs_from_hflm_bf16_only_on_its_ties(tiny_base, subjects,
                                                                                             tmp_path):
    """The model in bf16, the scores from fp32 logits: the outcomes of the fp32 reference, |ΔLL| within the bf16
    hidden states' error. lm-eval's HFLM in bf16 (bf16 logits, bf16 log-softmax) is not that reference: where the
    two disagree, HFLM's own top-2 gap is below what bf16 resolves (measured: exact ties, gap 0.0, on 2 of 96)."""
    fp32 = _evaluate(tiny_base, subjects, tmp_path / "fp32", "float32", "arm_by_arm")
    one = _evaluate(tiny_base, subjects, tmp_path / "one", "bfloat16", "one_pass")
    hflm_bf16 = _evaluate(tiny_base, subjects, tmp_path / "hflm", "bfloat16", "arm_by_arm")
    cmp = compare_results(fp32, one)
    assert cmp.documents == LIMIT_MC * len(subjects)
    assert cmp.mismatches == (), cmp.mismatches
    assert 0 < cmp.max_abs_dll <= TOL_LL_VS_FP32  # > 0: the model really ran in bf16
    for m in compare_results(hflm_bf16, one).mismatches:
        assert m.gap_reference is not None and m.gap_reference <= BF16_TIE_GAP, m
