"""A per-process model cache (not a Prefect worker): the registry handle, the base model loaded ONCE, one evaluator.

A worker (a process running flows: the CLI, a Prefect process worker, a Dask worker) keeps one loaded copy of
each base model and one evaluator bound to it, and reuses them across every adapter that shares the base.
Work that touches a shared model holds that model's lock: LoRA layers are injected into it in place, so two
threads must not use it at once (parallelism across adapters comes from processes: Dask workers, work pools).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from spectral_surgery.tasks.run_config import RunConfig

_lock = threading.Lock()
_model_locks: dict[str, threading.RLock] = {}
_evaluators: dict[tuple, Any] = {}
_registries: dict[tuple, Any] = {}


def registry(config: RunConfig):
    """The registry of ``config`` (opened and migrated once per process): ``config.registry_url``, else
    ``$SPECTRAL_SURGERY_DB`` (how a URL with a password reaches the flow), else SQLite in ``data_dir``."""
    from spectral_surgery.registry.db import env_url
    from spectral_surgery.registry.repository import Registry

    url = config.registry_url or env_url()
    key = (url, str(config.data_dir))
    with _lock:
        if key not in _registries:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            _registries[key] = Registry.open(url, config.data_dir)
        return _registries[key]


def reset() -> None:
    """Forget cached registries and evaluators (tests; a worker that changes data_dir)."""
    with _lock:
        for reg in _registries.values():
            reg.close()
        _registries.clear()
        _evaluators.clear()


@contextmanager
def model_lock(model_id: str) -> Iterator[None]:
    """Exclusive use of the shared base model ``model_id`` in this process."""
    with _lock:
        lk = _model_locks.setdefault(model_id, threading.RLock())
    with lk:
        yield


def base_model(config: RunConfig, model_id: str, revision: str | None = None):
    """(model, tokenizer) of ``model_id``: loaded once per process (float32 on CPU, float16 on CUDA as the reference)."""
    from spectral_surgery.tasks.model import load_base

    dtype = torch.float16 if config.device.startswith("cuda") else torch.float32
    return load_base(model_id, data_dir=config.data_dir, dtype=dtype, device=config.device, revision=revision)


def evaluator(config: RunConfig, model_id: str, revision: str | None = None):
    """The evaluator of ``config`` for base ``model_id``, built once per process.

    ``lm_eval`` reuses the worker's loaded base model (no second copy in memory); other evaluators (``fake``
    for tests) get only ``config.evaluator_options``.
    """
    from spectral_surgery.tasks.evaluation.evaluate import get_evaluator

    key = (config.evaluator, repr(sorted(config.evaluator_options.items())), model_id, config.device)
    with _lock:
        if key in _evaluators:
            return _evaluators[key]
    options = dict(config.evaluator_options)
    if config.evaluator == "lm_eval":
        model, tok = base_model(config, model_id, revision)
        options.update(model=model, tokenizer=tok, model_id=model_id, device=config.device)
    ev = get_evaluator(config.evaluator, **options)
    with _lock:
        return _evaluators.setdefault(key, ev)


def evaluator_identity(config: RunConfig, model_id: str) -> str:
    """The key of the evaluator :func:`evaluator` would build, without loading the base model."""
    from spectral_surgery.tasks.evaluation.evaluate import evaluator_identity as identity

    options = dict(config.evaluator_options)
    if config.evaluator == "lm_eval":
        # as evaluator(): the worker's base model, whose dtype base_model() picks from the device
        options.update(device=config.device,
                       model_dtype="float16" if config.device.startswith("cuda") else "float32")
    return identity(config.evaluator, **options)


def store_dir(config: RunConfig, adapter_name: str, version_sha: str, config_hash: str) -> Path:
    """Content-addressed artifact directory of one adapter version under one configuration."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in adapter_name)
    return config.data_dir / "store" / safe / version_sha[:12] / config_hash[:12]
