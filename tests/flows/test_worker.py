"""Per-worker state (flows/worker.py): registry, base model and evaluator built once per process, keyed right."""

from __future__ import annotations

import threading

import pytest

from spectral_surgery.flows import worker
from spectral_surgery.tasks.run_config import RunConfig

FAKE = {"n_docs": 8, "rates": {"smooth_abs": 0.9}}


@pytest.fixture(autouse=True)
def _fresh():
    worker.reset()
    yield
    worker.reset()


def config(tmp_path, **kw) -> RunConfig:
    return RunConfig(**{"data_dir": tmp_path / "data", "evaluator": "fake", "evaluator_options": FAKE, **kw})


def test_the_registry_is_opened_once_per_location(tmp_path):
    cfg = config(tmp_path)
    reg = worker.registry(cfg)
    assert (tmp_path / "data" / "registry.db").is_file()  # created and migrated on first use
    assert worker.registry(config(tmp_path, concurrency=4)) is reg  # same location: same handle
    other = worker.registry(config(tmp_path, registry_url=f"sqlite:///{tmp_path / 'other.db'}"))
    assert other is not reg and str(other.engine.url).endswith("other.db")
    worker.reset()
    assert worker.registry(cfg) is not reg  # reset forgets (and closes) every handle


def test_the_evaluator_is_built_once_per_options_and_base(tmp_path):
    cfg = config(tmp_path)
    ev = worker.evaluator(cfg, "acme/base")
    assert worker.evaluator(cfg, "acme/base") is ev
    assert worker.evaluator(cfg, "acme/other") is not ev
    assert worker.evaluator(config(tmp_path, evaluator_options={"n_docs": 9}), "acme/base") is not ev
    worker.reset()
    assert worker.evaluator(cfg, "acme/base") is not ev


@pytest.mark.parametrize("options", [{}, FAKE, {"rate": 0.3, "n_docs": 5}])
def test_evaluator_identity_is_the_built_evaluators_key(tmp_path, options):
    cfg = RunConfig(data_dir=tmp_path, evaluator="fake", evaluator_options=options)
    assert worker.evaluator_identity(cfg, "acme/base") == worker.evaluator(cfg, "acme/base").key


def test_an_unknown_evaluator_is_named(tmp_path):
    cfg = RunConfig(data_dir=tmp_path, evaluator="fak")
    with pytest.raises(KeyError, match="Did you mean 'fake'"):
        worker.evaluator_identity(cfg, "acme/base")


@pytest.mark.slow  # builds the tiny base model (seconds) unless another test of the session already did
def test_the_base_model_is_loaded_once(tmp_path, tiny_base):
    cfg = config(tmp_path)
    model, tok = worker.base_model(cfg, str(tiny_base))
    again, tok2 = worker.base_model(cfg, str(tiny_base))
    assert again is model and tok2 is tok
    assert next(model.parameters()).dtype.is_floating_point and str(next(model.parameters()).dtype) == "torch.float32"


def test_model_lock_is_per_model_and_reentrant():
    with worker.model_lock("m1"):
        with worker.model_lock("m1"):  # re-entrant in the holding thread
            pass
        got = {}
        t = threading.Thread(target=lambda: got.update(
            m1=worker._model_locks["m1"].acquire(timeout=0.05), m2=_try("m2")))
        t.start()
        t.join()
    assert got == {"m1": False, "m2": True}


def _try(model_id: str) -> bool:
    with worker.model_lock(model_id):
        return True


def test_store_dir_is_content_addressed_and_safe(tmp_path):
    cfg = config(tmp_path)
    d = worker.store_dir(cfg, "team/gsm lora", "a" * 64, "b" * 64)
    assert d == tmp_path / "data" / "store" / "team_gsm_lora" / ("a" * 12) / ("b" * 12)
    assert worker.store_dir(cfg, "team/gsm lora", "a" * 64, "c" * 64) != d
    assert worker.store_dir(cfg, "x.y-z_1", "a" * 64, "b" * 64).parent.parent.name == "x.y-z_1"
    assert not d.exists()  # only a path: the caller writes
