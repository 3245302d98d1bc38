"""arms_pass="vllm": the refusal without vllm, the request building and fan-out (no vllm needed), and on a machine
with vllm and CUDA, the engine's arms against lm-eval's vLLM backend with each adapter as its lora_local_path."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from spectral_surgery.tasks.evaluation.arms.vllm_arms import (
    VLLM_MISSING,
    FanOut,
    LoraArm,
    engine_options,
    fan_out,
    lora_arms,
    max_lora_rank,
    split,
    vllm_installed,
)
from spectral_surgery.tasks.evaluation.evaluate import LmEvalEvaluator, evaluator_identity
from spectral_surgery.tasks.run_config import RunConfig
from tests import tiny

needs_vllm = pytest.mark.skipif(not vllm_installed(), reason="vllm is not installed")


def _adapter_dir(path, r):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": 2 * r}))
    return path


@pytest.mark.skipif(vllm_installed(), reason="vllm is installed here")
def test_without_vllm_the_option_is_refused_at_validation_naming_the_fix(tmp_path):
    with pytest.raises(ValidationError, match="evaluator_options.arms_pass: " + VLLM_MISSING):
        RunConfig(data_dir=tmp_path, evaluator_options={"arms_pass": "vllm"})
    with pytest.raises(ValueError, match=VLLM_MISSING):
        LmEvalEvaluator(arms_pass="vllm")
    with pytest.raises(ValueError, match=VLLM_MISSING):
        evaluator_identity("lm_eval", arms_pass="vllm")  # a run's keys are computed before any model loads
    RunConfig(data_dir=tmp_path, evaluator_options={"arms_pass": "one_pass"})


def test_arms_number_adapters_and_leave_the_bare_base_without_a_lora(tmp_path):
    a, b = _adapter_dir(tmp_path / "a", 8), _adapter_dir(tmp_path / "b", 24)
    arms = lora_arms({"baseline": a, "bare": None, "cand": b}, first_id=5)
    assert arms == [LoraArm("baseline", 5, str(a)), LoraArm("bare", 0, None), LoraArm("cand", 6, str(b))]
    assert max_lora_rank(arms) == 32  # the smallest vLLM rank holding r 24
    assert engine_options(arms, dtype="bfloat16", batch_size="auto") == {
        "dtype": "bfloat16", "batch_size": "auto", "enable_lora": True, "max_loras": 2, "max_cpu_loras": 2,
        "max_lora_rank": 32}
    assert engine_options(lora_arms({"bare": None}, 1), dtype="float32", batch_size=8)["enable_lora"] is False
    with pytest.raises(ValueError, match="start at 1"):
        lora_arms({"a": a}, first_id=0)
    with pytest.raises(ValueError, match="rank 1024 exceeds"):
        max_lora_rank([LoraArm("big", 1, str(_adapter_dir(tmp_path / "big", 1024)))])


def test_fan_out_is_arm_major_and_split_undoes_it():
    prompts, params = [[1, 2], [3]], ["p0", "p1"]
    got = fan_out(prompts, params, ["L1", None, "L3"])
    assert got == ([[1, 2], [3]] * 3, ["p0", "p1"] * 3, ["L1", "L1", None, None, "L3", "L3"])
    assert split(list(range(6)), 3) == [[0, 1], [2, 3], [4, 5]]
    with pytest.raises(ValueError, match="equal shares"):
        split(list(range(5)), 3)


def test_fan_out_makes_each_engine_call_once_for_every_arm():
    """An lm-eval-like method making two engine calls per run: three arms' runs cost two engine calls, and each arm
    gets the outputs computed with its own LoRA request."""
    engine_prompts = []

    def engine(prompts, params, loras):  # what a real engine returns: one output per prompt, for its LoRA
        engine_prompts.append(len(prompts))
        return [(tuple(p), s, lora) for p, s, lora in zip(prompts, params, loras)]

    fan = FanOut(engine, ["L1", None, "L3"])

    def method():  # lm-eval's chunking: the same requests give the same calls
        return fan.call([[1], [2]], ["s", "s"]) + fan.call([[3]], ["t"])

    results = fan.run(method)
    assert fan.engine_calls == 2 and engine_prompts == [6, 3]
    calls = ((1, "s"), (2, "s"), (3, "t"))
    assert results == [[((p,), s, lora) for p, s in calls] for lora in ("L1", None, "L3")]


def test_fan_out_refuses_a_run_that_chunks_unlike_the_first():
    fan = FanOut(lambda p, s, l: list(zip(p, l)), ["A", "B"])
    calls = iter([1, 2])
    with pytest.raises(RuntimeError, match="more engine calls"):
        fan.run(lambda: [fan.call([[0]], ["s"]) for _ in range(next(calls))])
    with pytest.raises(RuntimeError, match="outside FanOut.run"):
        fan.call([[0]], ["s"])


@needs_vllm
@pytest.mark.skipif(not torch.cuda.is_available(), reason="vLLM needs a GPU")
def test_vllm_arms_equal_lm_eval_vllm_per_adapter(tmp_path):
    """Each subject's ss_mc log-likelihoods from the shared engine equal lm-eval's VLLM with that adapter alone."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.vllm_causallms import VLLM
    from vllm.lora.request import LoRARequest

    base = tiny.save_base(tmp_path / "base")
    subjects = {"a": tiny.save_adapter(base, tmp_path / "a", seed=3), "bare": None,
                "b": tiny.save_adapter(base, tmp_path / "b", seed=5)}
    ev = LmEvalEvaluator(arms_pass="vllm", dtype="float32", vllm_options={"gpu_memory_utilization": 0.3,
                                                                         "enforce_eager": True})
    got = ev.evaluate(str(base), subjects, "ss_mc", limit=8, out_dir=tmp_path / "out")
    assert ev.last_scoring.path == "vllm" and ev.last_scoring.arms == 3
    lm, _ = ev._vllm[str(base)]
    pairs = [("Q: 1+1?\nA:", " 2"), ("Hi", " there")]
    reqs = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    for i, (subject, path) in enumerate(subjects.items()):
        lm.serve(subject)
        mine = lm.loglikelihood(reqs)
        lm.lora_request = None if path is None else LoRARequest(f"solo-{subject}", 900 + i, str(path))
        alone = VLLM.loglikelihood(lm, reqs)
        assert [round(x[0], 3) for x in mine] == [round(y[0], 3) for y in alone], subject
        assert len(got[subject].outcomes) == 8
