"""The expensive half of an edit, stored: decomposition and calibration sensitivities of one adapter version.

:func:`tasks.surgery.edit.prepare` costs one forward/backward pass over the calibration set; everything after it (every
policy, every control) is milliseconds. Saving its result under a key of what determines it (adapter content,
base model, targets, calibration settings and examples, engine version) means a newly configured policy, or a
changed edit parameter, needs no model pass at all: the next run loads the spectra and sensitivities from here.

The file is one safetensors file (no pickle) written atomically (temporary file, then ``os.replace``), with the
calibration hash, example count and aggregation in its metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from spectral_surgery.tasks.adapter_io import load_adapter, select_modules
from spectral_surgery.tasks.surgery.calibration import Sensitivity
from spectral_surgery.tasks.config import TargetConfig
from spectral_surgery.tasks.surgery.decompose import Spectrum
from spectral_surgery.tasks.surgery.edit import PreparedAdapter

FORMAT = "spectral-surgery/prepared/v1"
_SPECTRUM = ("U", "S", "V")
_SENS = ("per_example", "n_tokens", "signed", "magnitude", "sign_agreement")


def save_prepared(prepared: PreparedAdapter, path: str | Path) -> Path:
    """Write the spectra and sensitivities of ``prepared`` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    aggregations = {}
    for m in prepared.modules:
        sp = prepared.spectra[m.name]
        for f in _SPECTRUM:
            tensors[f"{m.name}::spectrum.{f}"] = getattr(sp, f).detach().cpu().contiguous().clone()
        s = prepared.sensitivities.get(m.name)
        if s is not None:
            for f in _SENS:
                tensors[f"{m.name}::sens.{f}"] = getattr(s, f).detach().cpu().contiguous().clone()
            aggregations[m.name] = s.aggregation
    meta = {"format": FORMAT, "calib_sha256": prepared.calib_sha256, "n_examples": str(prepared.n_examples),
            "adapter_sha256": prepared.adapter.sha256, "modules": json.dumps([m.name for m in prepared.modules]),
            "aggregations": json.dumps(aggregations), "timings": json.dumps(prepared.timings)}
    fd, tmp = tempfile.mkstemp(prefix=".prepared-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_prepared(path: str | Path, adapter_dir: str | Path, targets: TargetConfig) -> PreparedAdapter | None:
    """The :class:`PreparedAdapter` saved at ``path`` for the adapter in ``adapter_dir``, or None if unusable.

    None (never an exception) when the file is missing, unreadable, of another format, or was computed from other
    adapter content or another module selection: the caller then prepares again. The adapter itself is loaded
    (and validated) from ``adapter_dir`` as :func:`tasks.surgery.edit.prepare` would.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except Exception:  # a torn or foreign file: recompute rather than fail the adapter
        return None
    if meta.get("format") != FORMAT:
        return None
    adapter = load_adapter(adapter_dir)
    modules = select_modules(adapter, targets)
    if (meta.get("adapter_sha256") != adapter.sha256
            or json.loads(meta.get("modules", "[]")) != [m.name for m in modules]):
        return None
    aggregations = json.loads(meta.get("aggregations", "{}"))
    spectra, sens = {}, {}
    try:
        for m in modules:
            spectra[m.name] = Spectrum(*(tensors[f"{m.name}::spectrum.{f}"] for f in _SPECTRUM))
            if m.name in aggregations:
                sens[m.name] = Sensitivity(*(tensors[f"{m.name}::sens.{f}"] for f in _SENS),
                                           aggregation=aggregations[m.name])
    except KeyError:
        return None
    return PreparedAdapter(adapter=adapter, modules=modules, spectra=spectra, sensitivities=sens,
                           calib_sha256=meta["calib_sha256"], n_examples=int(meta["n_examples"]),
                           timings={"decompose": 0.0, "calibrate": 0.0, "loaded": 1.0, **_stored_timings(meta)})


def _stored_timings(meta: dict[str, str]) -> dict[str, float]:
    """The seconds the saved stages took when they were computed, as ``stored_<stage>`` (what each costs anew)."""
    try:
        saved = json.loads(meta.get("timings", "{}"))
    except ValueError:
        return {}
    return {f"stored_{k}": float(v) for k, v in saved.items()
            if not k.startswith("stored_") and k != "loaded" and isinstance(v, (int, float))}
