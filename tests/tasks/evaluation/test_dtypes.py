"""tasks/evaluation/dtypes.py: the base model's dtype from the evaluator's setting, and the worker honouring it
(no CUDA needed: the device's bf16 support is an argument)."""

from __future__ import annotations

import pytest
import torch

from spectral_surgery.flows import worker
from spectral_surgery.tasks.evaluation.dtypes import DTYPES, model_dtype_name
from spectral_surgery.tasks.run_config import RunConfig


@pytest.mark.parametrize(("setting", "device", "cuda_bf16", "expected"), [
    ("auto", "cuda", True, "bfloat16"),
    (None, "cuda:1", True, "bfloat16"),
    ("auto", "cuda", False, "float32"),  # a GPU without bf16 runs in float32, as the evaluator does
    ("auto", "cpu", True, "float32"),
    ("float16", "cuda", True, "float16"),
    ("float16", "cpu", False, "float16"),
    ("bfloat16", "cpu", False, "bfloat16"),
    ("float32", "cuda", True, "float32"),
])
def test_model_dtype_name(setting, device, cuda_bf16, expected):
    assert model_dtype_name(setting, device, cuda_bf16=cuda_bf16) == expected
    assert isinstance(getattr(torch, expected), torch.dtype)


def test_unknown_dtype_names_the_field_and_the_choices(tmp_path):
    with pytest.raises(ValueError, match=r"evaluator_options\.dtype: 'fp17'.*auto, float32, float16, bfloat16"):
        model_dtype_name("fp17", "cuda", cuda_bf16=True)
    with pytest.raises(ValueError, match=r"evaluator_options\.dtype: 'half'"):  # refused where the config is read
        RunConfig(data_dir=tmp_path, evaluator="lm_eval", evaluator_options={"dtype": "half"})
    assert DTYPES[0] == "auto"


def _config(tmp_path, device: str, **options) -> RunConfig:
    return RunConfig(data_dir=tmp_path, evaluator="lm_eval", device=device, evaluator_options=options)


def test_the_worker_loads_the_base_in_the_evaluators_dtype(tmp_path, monkeypatch):
    """Before: float16 on CUDA whatever evaluator_options.dtype said. The worker's base (and the evaluation key
    that names its dtype) now follow the setting; CUDA's bf16 support is stubbed, no GPU needed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert worker.base_dtype(_config(tmp_path, "cuda")) == "bfloat16"
    assert worker.base_dtype(_config(tmp_path, "cuda", dtype="float16")) == "float16"
    assert worker.base_dtype(_config(tmp_path, "cuda:0", dtype="float32")) == "float32"
    assert worker.base_dtype(_config(tmp_path, "cpu")) == "float32"
    assert "dtype=bfloat16" in worker.evaluator_identity(_config(tmp_path, "cuda"), "acme/base")
    assert "dtype=float16" in worker.evaluator_identity(_config(tmp_path, "cuda", dtype="float16"), "acme/base")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert worker.base_dtype(_config(tmp_path, "cuda")) == "float32"


def test_the_worker_passes_the_dtype_to_load_base(tmp_path, monkeypatch):
    import spectral_surgery.tasks.model

    seen = {}
    monkeypatch.setattr(spectral_surgery.tasks.model, "load_base", lambda model_id,
                        **kw: seen.update(kw) or ("model", "tok"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert worker.base_model(_config(tmp_path, "cuda", dtype="bfloat16"), "acme/base") == ("model", "tok")
    assert seen["dtype"] is torch.bfloat16 and seen["device"] == "cuda"
    worker.base_model(_config(tmp_path, "cpu"), "acme/base")
    assert seen["dtype"] is torch.float32
