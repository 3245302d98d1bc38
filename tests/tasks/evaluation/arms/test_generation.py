"""generate_until_arms returns, arm for arm, what lm-eval's HFLM.generate_until returns with that adapter active."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from spectral_surgery.tasks.evaluation.arms.generation import (
    BASE_ARM,
    UnsupportedGeneration,
    _common_prefix,
    generate_until_arms,
)
from tests import tiny
from tests.benchmarks.bench_eval_generation import arm_by_arm  # the reference: HFLM once per arm

BATCH = 3  # HFLM batch size: 7 prompts make two full batches and a partial one
MAX_GEN = 20
SHOTS = "Q: 2+2?\nA: 4\n\nQ: 5+1?\nA: 6\n\n"  # a few-shot prefix shared by every prompt (found in token space)
PROMPTS = [
    "Question: what is 3 plus 4?\nAnswer:",
    "Hi",
    "The quick brown fox jumps over the lazy dog",
    "abc\n\nxyz: 12",
    "Q: 1+1?\nA:",
    "Long context " * 6 + "end.",
    "z",
]
# name -> (seed, init_scale); "same" is "baseline" again, "zero" has B = 0 (the bare base), "big" diverges at once
ADAPTERS = {"baseline": (1, 0.2), "same": (1, 0.2), "big": (3, 1.0), "other": (5, 0.2)}
ARMS = ["baseline", "same", "zero", "big", "other", BASE_ARM]


def _zero_adapter(base_dir: Path, out_dir: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=list(tiny.TARGETS_ALL), task_type="CAUSAL_LM")
    pm = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), cfg)  # PEFT's own init: B = 0
    pm.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def adapter_dirs(tiny_base, tmp_path_factory):
    root = tmp_path_factory.mktemp("arms")
    dirs = {n: tiny.save_adapter(tiny_base, root / n, seed=s, init_scale=k) for n, (s, k) in ADAPTERS.items()}
    dirs["zero"] = _zero_adapter(tiny_base, root / "zero")
    return dirs


def _hflm(base_dir: Path, adapter_dirs: dict[str, Path], eos_like: str | None = None):
    """HFLM over a PeftModel holding every adapter; ``eos_like``: EOS's output row becomes 1.05× that token's."""
    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    tok = AutoTokenizer.from_pretrained(base_dir)
    if eos_like is not None:  # wherever the model would emit this token with a positive logit, it emits EOS
        with torch.no_grad():
            w = model.lm_head.weight
            w[tok.eos_token_id] = 1.05 * w[tok.convert_tokens_to_ids(eos_like)]
    names = list(adapter_dirs)
    pm = PeftModel.from_pretrained(model, str(adapter_dirs[names[0]]), adapter_name=names[0])
    for n in names[1:]:
        pm.load_adapter(str(adapter_dirs[n]), adapter_name=n)
    return HFLM(pretrained=pm.eval(), tokenizer=tok, batch_size=BATCH)


def _requests(until: list[str], max_gen_toks: int = MAX_GEN, shots: str = SHOTS, **extra):
    from lm_eval.api.instance import Instance

    kwargs = {"until": until, "do_sample": False, "temperature": 0.0, "max_gen_toks": max_gen_toks, **extra}
    return [Instance("generate_until", {}, (shots + p, dict(kwargs)), i) for i, p in enumerate(PROMPTS)]


@pytest.fixture(scope="module")
def lm(tiny_base, adapter_dirs):
    return _hflm(tiny_base, adapter_dirs)


@pytest.fixture(scope="module")
def stops(lm):
    """Two-character stop strings taken from the middle of what the baseline writes with no stop: they fire
    mid-generation, and with a character-level tokenizer every one of them is split across two tokens."""
    raw = arm_by_arm(lm, _requests([]), ["baseline"])["baseline"]
    return [raw[0][6:8], raw[2][4:6]]


@pytest.fixture(scope="module")
def expected(lm, stops):
    return arm_by_arm(lm, _requests(stops), ARMS)


@pytest.mark.parametrize("shared_prefix", [True, False])
@pytest.mark.parametrize("reference", ["baseline", "big", BASE_ARM])
def test_every_arm_matches_hflm_and_divergences_are_counted(lm, stops, expected, reference, shared_prefix):
    requests = _requests(stops)
    got, stats = generate_until_arms(lm, requests, ARMS, reference=reference, shared_prefix=shared_prefix)
    assert got == expected
    n = len(PROMPTS)
    assert any(len(s) < MAX_GEN for s in expected["baseline"])  # the stops do cut generations
    assert {a.arm for a in stats.arms} == set(ARMS) and stats.reference == reference
    assert stats.shared_prefix_tokens == (len(SHOTS) if shared_prefix else 0)  # one token per character
    assert all(a.documents == n for a in stats.arms)
    ref = stats.arm(reference)
    assert ref.verified == ref.diverged == 0 and ref.forward_passes > 0
    for arm in ARMS:
        a = stats.arm(arm)
        if arm != reference:
            assert a.verified + a.diverged == n
            # an arm whose strings all equal the reference's may still diverge after a stop (never counted) ...
            # ... but one that diverges before it always yields a different string
            assert a.diverged >= sum(x != y for x, y in zip(got[arm], got[reference], strict=True))
    twins = {"baseline": "same", BASE_ARM: "zero"}  # identical weights: never diverge
    if reference in twins:
        assert stats.arm(twins[reference]).diverged == 0 and stats.arm(twins[reference]).verified == n
        assert stats.arm(twins[reference]).decoded_tokens == 0
        assert stats.arm("big").diverged == n  # a large random update diverges on every document ...
        assert any(g[:1] != r[:1] for g, r in zip(got["big"], got[reference], strict=True))  # ... at token one


def test_eos_and_max_gen_toks_end_arms_as_in_hflm(tiny_base, adapter_dirs, lm):
    # EOS takes the place of the character the arms write most often: some generations end on EOS early
    raw = arm_by_arm(lm, _requests([]), ARMS)
    common = Counter("".join(s for v in raw.values() for s in v)).most_common(1)[0][0]
    eos_lm = _hflm(tiny_base, adapter_dirs, eos_like=common)
    # a stop no arm writes: generation ends on EOS or max_gen_toks; no shared prefix: every row starts from scratch
    requests = _requests(["@@@@"], shots="")
    expected = arm_by_arm(eos_lm, requests, ARMS)
    lengths = [len(s) for v in expected.values() for s in v]
    assert min(lengths) < MAX_GEN and max(lengths) == MAX_GEN  # both endings occur (one token per character)
    for reference, decode_rows in (("baseline", 128), ("other", 5)):  # 5: diverged rows decode in several groups
        got, stats = generate_until_arms(eos_lm, requests, ARMS, reference=reference, batch_size=4,
                                         max_decode_rows=decode_rows)
        assert got == expected
        assert stats.forward_passes > 0


def test_refuses_sampling_and_unreproduced_kwargs(lm):
    with pytest.raises(UnsupportedGeneration, match="sampling"):
        generate_until_arms(lm, _requests(["x"], do_sample=True, temperature=0.7), ARMS, reference="baseline")
    with pytest.raises(UnsupportedGeneration, match="sampling"):
        reqs = _requests(["x"], temperature=0.7)
        for r in reqs:
            del r.arguments[1]["do_sample"]  # temperature > 0 alone means sampling in lm-eval
        generate_until_arms(lm, reqs, ARMS, reference="baseline")
    with pytest.raises(UnsupportedGeneration, match="top_k"):
        generate_until_arms(lm, _requests(["x"], top_k=5), ARMS, reference="baseline")


def test_arms_are_checked(lm):
    with pytest.raises(ValueError, match="not adapters"):
        generate_until_arms(lm, _requests(["x"]), ["baseline", "nope"], reference="baseline")
    with pytest.raises(ValueError, match="not one of the arms"):
        generate_until_arms(lm, _requests(["x"]), ["baseline", "same"], reference="big")
    with pytest.raises(ValueError, match="unique"):
        generate_until_arms(lm, _requests(["x"]), ["baseline", "baseline"], reference="baseline")


def test_common_prefix_leaves_every_prompt_a_token():
    assert _common_prefix([[1, 2, 3, 4], [1, 2, 3, 5, 6], [1, 2, 3, 4, 7]]) == [1, 2, 3]
    assert _common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == [1, 2]  # the shortest prompt still feeds one token
    assert _common_prefix([[1, 2], [3, 2]]) == []


def test_a_single_arm_is_the_reference_alone(lm, stops):
    requests = _requests(stops)
    got, stats = generate_until_arms(lm, requests, ["other"], reference="other")
    assert got == arm_by_arm(lm, requests, ["other"])
    assert stats.forward_passes == stats.arm("other").forward_passes


@pytest.mark.slow
def test_smollm2_on_ss_arith_matches_hflm(smol_base, tmp_path_factory):
    """The real model on the suite's own requests (3-shot, stops "Question:" / "\\n\\n"): every arm's strings equal."""
    from lm_eval.models.huggingface import HFLM
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.benchmarks.bench_eval_generation import suite_requests
    from tests.smol import make_lora, rescale_sigma

    root = tmp_path_factory.mktemp("smol")
    _, base_dir = smol_base
    baseline = make_lora(base_dir, root / "baseline", rel_norm=0.05, seed=0)
    dirs = {"baseline": baseline, "sharper": rescale_sigma(baseline, root / "sharper", 1.5)}
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval(),
                                   str(dirs["baseline"]), adapter_name="baseline")  # fmt: skip
    pm.load_adapter(str(dirs["sharper"]), adapter_name="sharper")
    lm = HFLM(pretrained=pm.eval(), tokenizer=AutoTokenizer.from_pretrained(base_dir), batch_size=4)
    requests = suite_requests("ss_arith", 4, lm)
    arms = ["baseline", "sharper", BASE_ARM]
    expected = arm_by_arm(lm, requests, arms)
    got, stats = generate_until_arms(lm, requests, arms, reference="baseline")
    assert got == expected
    assert stats.shared_prefix_tokens > 100  # the three shots
    assert all(s.verified + s.diverged == len(requests) for s in stats.arms if s.arm != "baseline")
