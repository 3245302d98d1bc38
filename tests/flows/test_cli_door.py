"""The door on the command line: ``register``/``check`` refuse an adapter made for another base (Qwen2 hidden 96
on a Llama base hidden 64) and an evaluation that cannot fit the base's context (``register --force`` lets the
latter through with a warning), and ``run`` exits 2 before the flow starts on a device this torch lacks, an invalid
dtype, or a context too short for the evaluation."""

from __future__ import annotations

import json

import pytest
import torch

from tests import tiny
from tests.flows.cli_support import assert_error, cli


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    root = tmp_path_factory.mktemp("door")
    qwen = tiny.save_base(root / "qwen96", arch="qwen2", hidden=96, intermediate=128)
    llama = tiny.save_base(root / "llama64", hidden=64, intermediate=128, max_positions=512)
    return {"root": root, "llama": llama, "qwen_adapter": tiny.save_adapter(qwen, root / "qwen-lora"),
            "llama_adapter": tiny.save_adapter(llama, root / "llama-lora")}


def _data(tmp_path):
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    return data


def test_register_refuses_an_adapter_made_for_another_base(door, tmp_path):
    data = _data(tmp_path)
    r = cli("register", "q", "--source", door["qwen_adapter"], "--base", door["llama"], "--family", "math",
            "--data-dir", data)
    line = assert_error(r, "'q' not registered:", "--base:", "adapter_model.safetensors",
                        "do not fit the base", "→ 96 features", "--no-check")
    assert "retrain it on" in line
    assert cli("list", "--json", "--data-dir", data).json() == []
    assert cli("register", "q", "--source", door["qwen_adapter"], "--base", door["llama"], "--family", "math",
               "--no-check", "--data-dir", data).code == 0
    rows = json.loads(cli("check", "--json", "--data-dir", data).out)
    assert not rows[0]["ok"] and rows[0]["problems"][0]["what"] == "base"


def test_register_and_check_refuse_an_evaluation_that_cannot_fit_the_context(door, tmp_path):
    """Issue 25: refused at ``register`` and ``check`` with the file, the field and the fix; ``--force`` registers
    it with a warning (a run config may lower ``max_gen_toks``), and ``check`` still reports it as a problem."""
    data = _data(tmp_path)
    argv = ("register", "l", "--source", door["llama_adapter"], "--base", door["llama"], "--family", "instruction",
            "--benchmark", "ss_ifeval", "--data-dir", data)
    line = assert_error(cli(*argv), "'l' not registered:", "config.json: max_position_embeddings is 512",
                        "'ss_ifeval'", "lower max_gen_toks", "--force")
    assert "--benchmark" in line
    assert cli("list", "--json", "--data-dir", data).json() == []
    r = cli(*argv, "--force")
    assert r.code == 0, r.err
    assert "warning:" in r.err and "max_position_embeddings is 512" in r.err and "ss_ifeval" in r.err
    checked = cli("check", "--json", "--data-dir", data)
    assert checked.code == 1
    (row,) = json.loads(checked.out)
    assert not row["ok"] and [p["what"] for p in row["problems"]] == ["benchmark"]
    assert "max_position_embeddings is 512" in row["problems"][0]["message"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")
def test_run_refuses_a_device_this_torch_lacks_before_the_flow_starts(door, tmp_path):
    data = _data(tmp_path)
    line = assert_error(cli("run", "--device", "cuda", "--evaluator", "fake", "--data-dir", data), "device 'cuda'",
                        "--device cpu")
    assert "CUDA" in line
    from spectral_surgery.registry.repository import NotFoundError, Registry

    reg = Registry.open(data_dir=data)
    with pytest.raises(NotFoundError):
        reg.get_run(1)  # the flow never started: no run row
    reg.close()


def test_run_refuses_an_invalid_device_or_dtype_before_the_flow_starts(door, tmp_path):
    data = _data(tmp_path)
    assert_error(cli("run", "--device", "gpu0", "--evaluator", "fake", "--data-dir", data), "device 'gpu0'",
                 "cpu, cuda, cuda:N")
    assert_error(cli("run", "--evaluator", "fake", "--evaluator-option", "dtype=float33", "--data-dir", data),
                 "evaluator_options.dtype: 'float33'", "bfloat16")


def test_run_refuses_an_evaluation_that_cannot_fit_the_context(door, tmp_path):
    data = _data(tmp_path)
    assert cli("register", "l", "--source", door["llama_adapter"], "--base", door["llama"], "--family",
               "instruction", "--benchmark", "ss_ifeval", "--force", "--data-dir", data).code == 0
    line = assert_error(cli("run", "--evaluator", "lm_eval", "--data-dir", data), "adapter 'l':",
                        "max_position_embeddings is 512", "'ss_ifeval' generates up to 512 tokens")
    assert "evaluator_options" in line
    # the run's own max_gen_toks is what counts: 64 tokens plus the prompts fit
    r = cli("run", "--evaluator", "lm_eval", "--evaluator-option", "max_gen_toks=600", "--data-dir", data)
    assert_error(r, "generates up to 600 tokens (evaluator_options.max_gen_toks")
