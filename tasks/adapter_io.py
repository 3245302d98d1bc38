"""Read, validate and atomically write PEFT LoRA adapters (METHOD §2 steps 1-2 and 8, §8.2, §10).

An adapter directory holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or the pickle
``adapter_model.bin``, refused unless asked for). ``load_adapter`` validates everything the edit relies on
and computes, per LoRA module, the scaling exactly as PEFT does. ``write_adapter`` writes an edited copy
that plain ``PeftModel.from_pretrained`` loads: same config bytes, same keys and dtypes, untouched tensors
byte-identical, plus ``edit_manifest.json``; it never leaves a half-written directory behind.

Over 400 lines: reading, validating and writing share the format's constants and checks; a split would part the
checks from the readers that apply them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import torch

from spectral_surgery.tasks.config import TargetConfig

CONFIG_NAME = "adapter_config.json"
SAFETENSORS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"
MANIFEST_NAME = "edit_manifest.json"
PEFT_PREFIX = "base_model.model."
_CHUNK = 1 << 20

# "<prefix>.lora_A[.<adapter>].weight": PEFT strips the adapter name when saving, other tools keep it.
_LORA_KEY = re.compile(r"^(?P<prefix>.+)\.lora_(?P<which>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


class AdapterError(ValueError):
    """Bad adapter input.

    Attributes:
        path: The file (or directory) at fault.
        field: The config field or tensor key at fault.
        reason: What is wrong.
        fix: How to fix it (appended to the message as ``; to fix: ...``), or None.
    """

    def __init__(self, path: str | Path | None, field: str, reason: str, fix: str | None = None):
        self.path = Path(path) if path is not None else None
        self.field = field
        self.reason = reason
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else "<adapter config>"
        return f"{where}: field {self.field!r}: {self.reason}" + (f"; to fix: {self.fix}" if self.fix else "")


# How to fix a damaged or incomplete adapter directory (the messages below say it where it applies)
RESAVE = "save the adapter again with PEFT's save_pretrained() (or copy it again, whole, from where it was trained)"


@dataclass(frozen=True)
class LoraModule:
    """One LoRA-adapted linear module: ``y = W0 x + scaling · B A x``.

    Attributes:
        name: Module path inside the base model (state-dict prefix minus ``base_model.model.``).
        key_A: Full state-dict key of the ``lora_A`` weight, shape (r, d_in).
        key_B: Full state-dict key of the ``lora_B`` weight, shape (d_out, r).
        r: Rank for this module (after ``rank_pattern``).
        alpha: ``lora_alpha`` for this module (after ``alpha_pattern``).
        scaling: alpha / r, or alpha / sqrt(r) with ``use_rslora``, exactly as PEFT computes it.
        layer_index: Index from ``.layers.<i>.`` in the name, or None.
    """

    name: str
    key_A: str
    key_B: str
    r: int
    alpha: float
    scaling: float
    layer_index: int | None


@dataclass
class LoraAdapter:
    """A validated adapter held in memory.

    Attributes:
        path: The adapter directory.
        config: Parsed ``adapter_config.json``.
        weights_file: The weights file read (safetensors, or pickle if allowed).
        tensors: Every tensor of the weights file, by state-dict key (CPU, original dtypes).
        modules: LoRA modules by name.
        sha256: Content hash of config + weights file (see ``sha256_path``); stable across copies.
        metadata: The safetensors header metadata (``{}`` for pickle files), written back unchanged.
    """

    path: Path
    config: dict
    weights_file: Path
    tensors: dict[str, torch.Tensor]
    modules: dict[str, LoraModule]
    sha256: str
    metadata: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- hashing


def _frame(h: "hashlib._Hash", rel: str, size: int) -> None:
    # Name and length prefix every file, so moving bytes between files or renaming one changes the hash.
    h.update(rel.encode("utf-8") + b"\0" + str(size).encode() + b"\0")


def _stream(h: "hashlib._Hash", f: BinaryIO) -> None:
    while chunk := f.read(_CHUNK):
        h.update(chunk)


def sha256_path(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a directory's files (sorted relative paths, sizes and contents).

    Reads in 1 MiB chunks, so adapters of any size hash in constant memory. A directory hash depends only
    on relative paths and contents, never on where the directory lives, so copies hash the same.
    """
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as f:
            _stream(h, f)
        return h.hexdigest()
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory to hash")
    files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    for rel, p in files:
        _frame(h, rel, p.stat().st_size)
        with p.open("rb") as f:
            _stream(h, f)
    return h.hexdigest()


def content_sha256(parts: Iterable[tuple[str, bytes]]) -> str:
    """Same framing as ``sha256_path`` on a directory holding exactly these (name, bytes) files: the hash
    :func:`adapter_content_sha256` gives a directory of ``adapter_config.json`` and a weights file."""
    h = hashlib.sha256()
    for rel, data in sorted(parts):
        _frame(h, rel, len(data))
        h.update(data)
    return h.hexdigest()


def adapter_content_sha256(path: str | Path) -> str:
    """Content hash of an adapter directory without parsing it: the same value as ``load_adapter(path).sha256``.

    Only ``adapter_config.json`` and the weights file count, so a README edit is not a new version.
    """
    path = Path(path)
    weights = [path / n for n in (SAFETENSORS_NAME, PICKLE_NAME) if (path / n).is_file()]
    if not (path / CONFIG_NAME).is_file():
        raise AdapterError(path / CONFIG_NAME, CONFIG_NAME, "missing: not a PEFT adapter directory", RESAVE)
    if not weights:
        raise AdapterError(path / SAFETENSORS_NAME, SAFETENSORS_NAME, "no adapter weights file found", RESAVE)
    return content_sha256([(CONFIG_NAME, (path / CONFIG_NAME).read_bytes()),
                           (weights[0].name, weights[0].read_bytes())])


def package_versions() -> dict[str, str]:
    """Versions of the libraries that determine an edit's result (recorded in every manifest).

    Read once per process: each lookup scans the installed distributions (about 50 ms for the list, paid by every
    candidate written before), and a process runs with the libraries it imported at start, whatever is installed
    later.
    """
    return dict(_package_versions())


@functools.cache
def _package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for dist in ("torch", "transformers", "peft", "safetensors", "accelerate", "huggingface_hub", "lm-eval"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["spectral-surgery"] = _own_version()
    return out


def _own_version() -> str:
    try:
        return importlib_metadata.version("spectral-surgery")
    except importlib_metadata.PackageNotFoundError:
        # Running from a source checkout that was never pip-installed: read the version from pyproject.
        import tomllib

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        try:
            return str(tomllib.loads(pyproject.read_text())["project"]["version"]) + "+source"
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "unknown"


# --------------------------------------------------------------------------- scaling


def _get_pattern_key(pattern_keys: Iterable[str], key_to_match: str) -> str:
    """PEFT's ``get_pattern_key``: the first pattern that regex-matches a dotted suffix of the key."""
    pattern_keys = list(pattern_keys)
    if not pattern_keys:  # no rank_pattern/alpha_pattern (most adapters): PEFT returns the key itself
        return key_to_match
    # PEFT's own matching (so scalings agree with PEFT), imported here: peft takes seconds to import, and reading or
    # hashing an adapter (the nightly scan, `list`) needs none of it
    try:
        from peft.utils.other import get_pattern_key
    except ImportError:  # pragma: no cover - only for PEFT versions that moved the helper
        get_pattern_key = None
    if get_pattern_key is not None:
        return get_pattern_key(pattern_keys, key_to_match)
    for key in pattern_keys:  # pragma: no cover - same semantics as peft.utils.other.get_pattern_key
        if re.match(rf"(.*\.)?({key})$", key_to_match):
            return key
    return key_to_match


def _check_rank(value: Any, path: Path | None, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdapterError(path, field_name, f"rank must be a positive integer, got {value!r}",
                           f"set {field_name} to the rank the adapter was trained with (the rows of its lora_A)")
    if value <= 0:
        raise AdapterError(path, field_name,
                           f"rank must be a positive integer, got {value} (rank 0 has no LoRA update)",
                           f"set {field_name} to the rank the adapter was trained with (the rows of its lora_A)")
    return value


def _check_alpha(value: Any, path: Path | None, field_name: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AdapterError(path, field_name, f"alpha must be a finite number, got {value!r}",
                           f"set {field_name} to the number the adapter was trained with (PEFT's default is 8)")
    return value


def _pattern(config: dict, name: str, path: Path | None) -> dict:
    pat = config.get(name) or {}
    if not isinstance(pat, dict):
        raise AdapterError(path, name, f"must be an object mapping module patterns to values, got {type(pat).__name__}",
                           f'write {name} as a mapping such as {{"q_proj": 8}}, or remove it')
    return pat


def lora_scaling(config: dict, module_name: str, *, path: Path | None = None) -> tuple[int, float, float]:
    """Rank, alpha and scaling of one module, exactly as PEFT's ``LoraModel`` computes them.

    ``rank_pattern``/``alpha_pattern`` keys are matched with PEFT's own ``get_pattern_key`` against the
    module's full name in the base model (e.g. ``model.layers.1.self_attn.o_proj``); the first matching
    key wins. Scaling is ``alpha / r``, or ``alpha / sqrt(r)`` with ``use_rslora`` (as
    ``LoraLayer.update_layer``). ``rank``/``alpha`` are accepted when ``r``/``lora_alpha`` are missing, as
    the reference does (METHOD §8.2).

    Args:
        config: The parsed ``adapter_config.json``.
        module_name: Module path inside the base model.
        path: The config file, named in errors.

    Returns:
        (r, alpha, scaling).

    Raises:
        AdapterError: a rank is missing, not an integer or not positive, or an alpha is not a number.
    """
    r_field = "r" if config.get("r") is not None else "rank"
    a_field = "lora_alpha" if config.get("lora_alpha") is not None else "alpha"
    if config.get(r_field) is None:
        raise AdapterError(path, "r", "missing (neither 'r' nor the fallback 'rank' is set)",
                           "set r to the rank the adapter was trained with (the rows of its lora_A)")
    if config.get(a_field) is None:
        raise AdapterError(path, "lora_alpha", "missing (neither 'lora_alpha' nor the fallback 'alpha' is set)",
                           "set lora_alpha to the number the adapter was trained with (PEFT's default is 8)")
    rank_pattern = _pattern(config, "rank_pattern", path)
    alpha_pattern = _pattern(config, "alpha_pattern", path)
    r_key = _get_pattern_key(rank_pattern.keys(), module_name)
    a_key = _get_pattern_key(alpha_pattern.keys(), module_name)
    r_src = f"rank_pattern[{r_key!r}]" if r_key in rank_pattern else r_field
    a_src = f"alpha_pattern[{a_key!r}]" if a_key in alpha_pattern else a_field
    r = _check_rank(rank_pattern.get(r_key, config[r_field]), path, r_src)
    alpha = _check_alpha(alpha_pattern.get(a_key, config[a_field]), path, a_src)
    scaling = alpha / math.sqrt(r) if config.get("use_rslora", False) else alpha / r
    return r, float(alpha), float(scaling)


# --------------------------------------------------------------------------- loading


def _read_config(path: Path) -> dict:
    if not path.is_dir():
        raise AdapterError(path, "path", "adapter directory does not exist" if not path.exists() else "not a directory",
                           "give an existing adapter directory (the folder holding adapter_config.json)")
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise AdapterError(cfg_path, CONFIG_NAME, "missing: a PEFT adapter directory needs adapter_config.json",
                           RESAVE)
    try:
        config = json.loads(cfg_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterError(cfg_path, "<json>", f"invalid JSON: {e}", RESAVE) from e
    if not isinstance(config, dict):
        raise AdapterError(cfg_path, "<json>", f"top level must be an object, got {type(config).__name__}", RESAVE)
    peft_type = config.get("peft_type")
    if peft_type is not None and str(peft_type).upper() != "LORA":
        raise AdapterError(cfg_path, "peft_type", f"{peft_type!r} is not LoRA; only LoRA adapters can be edited",
                           "register a LoRA adapter (peft_type LORA) instead")
    if config.get("use_dora"):
        raise AdapterError(cfg_path, "use_dora",
                           "DoRA adapters are not supported (the magnitude vector is not spectral)",
                           "train it as plain LoRA (LoraConfig(use_dora=False))")
    return config


def _read_tensors(path: Path, allow_pickle: bool) -> tuple[Path, bytes, dict[str, torch.Tensor], dict[str, str]]:
    st, pkl = path / SAFETENSORS_NAME, path / PICKLE_NAME
    if st.is_file():
        data = st.read_bytes()
        try:
            from safetensors.torch import load as st_load

            tensors = st_load(data)  # validates header, dtypes and offsets against the buffer length
            # load() drops the header's "__metadata__"; read it from the (now validated) header ourselves.
            header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
            meta = dict(header.get("__metadata__") or {})
        except Exception as e:  # SafetensorError, or anything a garbage header provokes
            raise AdapterError(st, "<safetensors>", f"corrupt or truncated safetensors file: {e}", RESAVE) from e
        return st, data, tensors, meta
    if pkl.is_file():
        if not allow_pickle:
            raise AdapterError(
                pkl, "allow_pickle",
                "pickle weights can run code when loaded; convert to safetensors or pass allow_pickle=True"
            )
        data = pkl.read_bytes()
        try:
            obj = torch.load(pkl, map_location="cpu", weights_only=True)
        except Exception as e:
            raise AdapterError(pkl, "<pickle>", f"cannot be read with torch.load(weights_only=True): {e}",
                               RESAVE) from e
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise AdapterError(pkl, "<pickle>", "expected a flat state dict of tensors", RESAVE)
        return pkl, data, {str(k): v for k, v in obj.items()}, {}
    raise AdapterError(path / SAFETENSORS_NAME, SAFETENSORS_NAME,
                       f"no weights file ({SAFETENSORS_NAME} or {PICKLE_NAME})", RESAVE)


def _parse_modules(config: dict, cfg_path: Path, wfile: Path,
                   tensors: dict[str, torch.Tensor]) -> dict[str, LoraModule]:
    pairs: dict[str, dict[str, str]] = {}
    for key in tensors:
        if "lora_magnitude_vector" in key:
            raise AdapterError(wfile, key, "DoRA magnitude vector found; DoRA adapters are not supported",
                           "train it as plain LoRA (LoraConfig(use_dora=False))")
        m = _LORA_KEY.match(key)
        if m is None:
            continue  # embedding LoRA, lora_B bias, modules_to_save: kept as they are, never edited
        name = m["prefix"].removeprefix(PEFT_PREFIX)
        slot = pairs.setdefault(name, {})
        if m["which"] in slot:
            raise AdapterError(wfile, key,
                               f"duplicate lora_{m['which']} for module {name!r} (also {slot[m['which']]!r})", RESAVE)
        slot[m["which"]] = key
    modules: dict[str, LoraModule] = {}
    for name, slot in sorted(pairs.items()):
        for have, miss in (("A", "B"), ("B", "A")):
            if have in slot and miss not in slot:
                raise AdapterError(wfile, slot[have], f"lora_{miss} for module {name!r} is missing", RESAVE)
        A, B = tensors[slot["A"]], tensors[slot["B"]]
        r, alpha, scaling = lora_scaling(config, name, path=cfg_path)
        if A.ndim != 2 or B.ndim != 2:
            raise AdapterError(wfile, slot["A"] if A.ndim != 2 else slot["B"],
                               "only Linear LoRA (2-D A and B) is supported",
                               "target Linear layers only (q_proj, v_proj, ...; not convolutions or embeddings)")
        if A.shape[0] != r:
            raise AdapterError(wfile, slot["A"],
                               f"lora_A has shape {tuple(A.shape)}, expected (r={r}, d_in) from the config",
                               f"set r (or rank_pattern) in {CONFIG_NAME} to the trained rank, or {RESAVE}")
        if B.shape[1] != r:
            raise AdapterError(wfile, slot["B"],
                               f"lora_B has shape {tuple(B.shape)}, expected (d_out, r={r}) from the config",
                               f"set r (or rank_pattern) in {CONFIG_NAME} to the trained rank, or {RESAVE}")
        lm = _LAYER.search(name)
        modules[name] = LoraModule(name, slot["A"], slot["B"], r, alpha, scaling, int(lm[1]) if lm else None)
    return modules


def lora_modules(config: dict, tensors: dict[str, torch.Tensor], *, config_path: Path | None = None,
                 weights_path: Path | None = None) -> dict[str, LoraModule]:
    """The linear LoRA modules of in-memory ``tensors`` under ``config``, checked as :func:`load_adapter` checks them.

    Raises:
        AdapterError: a module without A or B, shapes that disagree with each other or the configured rank.
    """
    return _parse_modules(config, config_path, weights_path, tensors)


def _check_finite(wfile: Path, tensors: dict[str, torch.Tensor]) -> None:
    for key, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise AdapterError(wfile, key, "contains NaN or Inf",
                               "export it again from a checkpoint whose weights are finite (the training diverged "
                               "or the file is damaged)")


def load_adapter(path: str | Path, *, allow_pickle: bool = False) -> LoraAdapter:
    """Read and validate a PEFT LoRA adapter directory.

    Args:
        path: Directory with ``adapter_config.json`` and ``adapter_model.safetensors`` (or ``.bin``).
        allow_pickle: Read ``adapter_model.bin`` (with ``torch.load(weights_only=True)``) when there is no
            safetensors file. Off by default: pickles from untrusted sources are unsafe.

    Returns:
        The adapter with every tensor on the CPU in its stored dtype, and a table of LoRA modules.

    Raises:
        AdapterError: missing directory/config/weights, invalid JSON, non-LoRA ``peft_type``, DoRA, refused
            pickle, corrupt safetensors, a module without A or B, shapes that disagree with each other or
            with the configured rank, rank 0, or NaN/Inf in any tensor. The message names file and field.
    """
    path = Path(path).expanduser()
    config = _read_config(path)
    cfg_path = path / CONFIG_NAME
    wfile, data, tensors, meta = _read_tensors(path, allow_pickle)
    modules = _parse_modules(config, cfg_path, wfile, tensors)
    if not modules:
        raise AdapterError(wfile, "lora_A", "no LoRA (lora_A/lora_B) weight pairs found",
                           f"give a LoRA adapter; if it is one, {RESAVE}")
    _check_finite(wfile, tensors)
    sha = content_sha256([(CONFIG_NAME, cfg_path.read_bytes()), (wfile.name, data)])
    return LoraAdapter(path, config, wfile, tensors, modules, sha, meta)


def select_modules(adapter: LoraAdapter, targets: TargetConfig) -> list[LoraModule]:
    """Modules to edit (by last dotted name and layer range), in order (layer index, name).

    Raises:
        AdapterError: no module of the adapter is selected.
    """
    chosen = [m for m in adapter.modules.values() if targets.selects(m.name, m.layer_index)]
    if not chosen:
        have = sorted({m.name.rsplit(".", 1)[-1] for m in adapter.modules.values()})
        raise AdapterError(
            adapter.path / CONFIG_NAME,
            "target_modules",
            f"no LoRA module matches targets {list(targets.target_modules)} in layers "
            f"[{targets.layer_min}, {targets.layer_max}]; the adapter has {have}",
            f"choose targets among {have} (surgery.targets.target_modules, or edit --targets)",
        )
    return sorted(chosen, key=lambda m: (-1 if m.layer_index is None else m.layer_index, m.name))


def _features(module: torch.nn.Module) -> tuple[int, int] | None:
    base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
    if isinstance(getattr(base, "in_features", None), int) and isinstance(getattr(base, "out_features", None), int):
        return base.in_features, base.out_features  # nn.Linear and quantized linears (packed weights)
    if type(base).__name__ == "Conv1D" and getattr(base, "weight", None) is not None:
        return tuple(base.weight.shape)  # transformers Conv1D stores (in, out)
    return None


def check_base_compat(adapter: LoraAdapter, model: torch.nn.Module) -> None:
    """Check that every LoRA module's target exists in ``model`` and its A/B shapes fit it.

    Args:
        adapter: The loaded adapter.
        model: The base model (a ``PeftModel`` wrapping it is also accepted).

    Raises:
        AdapterError: a module is not in the model, is not a linear layer, or has other in/out features.
    """
    named = dict(model.named_modules())
    fix = (f"register it on the base model it was trained on (--base; {CONFIG_NAME} names "
           f"{adapter.config.get('base_model_name_or_path')!r})")
    for m in adapter.modules.values():
        target = named.get(m.name) or named.get(PEFT_PREFIX + m.name)
        if target is None:
            raise AdapterError(adapter.weights_file, m.key_A, f"module {m.name!r} does not exist in the base model",
                               fix)
        feats = _features(target)
        if feats is None:
            raise AdapterError(adapter.weights_file, m.key_A,
                               f"{m.name!r} is a {type(target).__name__}, not a linear layer", fix)
        d_in, d_out = feats
        A, B = adapter.tensors[m.key_A], adapter.tensors[m.key_B]
        if A.shape[1] != d_in:
            raise AdapterError(adapter.weights_file, m.key_A, f"d_in {A.shape[1]} != in_features {d_in} of {m.name!r}",
                               fix)
        if B.shape[0] != d_out:
            raise AdapterError(adapter.weights_file, m.key_B,
                               f"d_out {B.shape[0]} != out_features {d_out} of {m.name!r}", fix)


# --------------------------------------------------------------------------- writing


def fsync_path(path: Path) -> None:
    """Flush a file's or directory's entry to disk (a directory: after renaming into it), where the OS allows."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def _merged_tensors(adapter: LoraAdapter, replaced: dict[str, torch.Tensor], out_dir: Path, *,
                    reshape: bool = False) -> dict[str, torch.Tensor]:  # fmt: skip
    out = dict(adapter.tensors)
    for key, new in replaced.items():
        if key not in adapter.tensors:
            raise AdapterError(out_dir, key, f"replacement for a key that is not in {adapter.weights_file.name}")
        old = adapter.tensors[key]
        if not isinstance(new, torch.Tensor) or (not reshape and tuple(new.shape) != tuple(old.shape)):
            shape = tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__
            raise AdapterError(out_dir, key, f"replacement has shape {shape}, the adapter's tensor {tuple(old.shape)}")
        # Cast to the stored dtype so the edited adapter loads exactly like the original (METHOD §10).
        new = new.detach().to(device="cpu", dtype=old.dtype).contiguous()
        if new.is_floating_point() and not bool(torch.isfinite(new).all()):
            raise AdapterError(out_dir, key, "replacement contains NaN or Inf (after casting to the stored dtype)")
        out[key] = new
    return out


def _write_weights(tensors: dict[str, torch.Tensor], metadata: dict[str, str], dest: Path) -> None:
    if dest.name == PICKLE_NAME:  # keep the input's format (only reachable with allow_pickle=True)
        torch.save(tensors, dest)
        return
    from safetensors.torch import save

    data = save(tensors, metadata=metadata or None)
    with dest.open("wb") as f:
        f.write(data)


def _fill(tmp: Path, adapter: LoraAdapter, tensors: dict[str, torch.Tensor], manifest_text: str,
          config_text: str | None = None) -> None:  # fmt: skip
    src = adapter.path
    if not (src / CONFIG_NAME).is_file():
        raise AdapterError(src / CONFIG_NAME, CONFIG_NAME, "source adapter config disappeared before writing")
    skip = {SAFETENSORS_NAME, PICKLE_NAME, MANIFEST_NAME}
    for p in sorted(src.iterdir()):
        # Top-level files only: subdirectories (other adapters, checkpoints) do not belong to this adapter.
        if p.is_file() and p.name not in skip:
            shutil.copyfile(p, tmp / p.name)
    if config_text is not None:
        (tmp / CONFIG_NAME).write_text(config_text, encoding="utf-8")
    _write_weights(tensors, adapter.metadata, tmp / adapter.weights_file.name)
    (tmp / MANIFEST_NAME).write_text(manifest_text, encoding="utf-8")
    for p in tmp.iterdir():
        fsync_path(p)
    fsync_path(tmp)


def write_adapter(
    adapter: LoraAdapter,
    replaced: dict[str, torch.Tensor],
    out_dir: str | Path,
    manifest: dict,
    *,
    config: dict | None = None,
    removed: Iterable[str] = (),
) -> Path:
    """Write ``adapter`` with some tensors replaced to ``out_dir``, atomically.

    Everything is written to a fresh temporary directory beside ``out_dir`` and fsynced; it is then renamed
    into place. An existing ``out_dir`` is renamed aside first, the new one renamed in, the old deleted; if
    that rename fails the old directory is put back. A crash leaves either the old ``out_dir`` or the new
    one (at worst, a hidden ``.<name>.old-*``/``.<name>.tmp-*`` sibling after a hard kill), never a mix.

    The output has the same ``adapter_config.json`` (byte copy), the same keys, dtypes and safetensors
    metadata, untouched tensors byte-identical, the other top-level files of the adapter directory copied
    as they are, and ``edit_manifest.json`` (indented JSON, sorted keys).

    A rank-changing edit (ε-PARA) passes the new ``config`` (written as indented JSON instead of the byte copy)
    and the ``removed`` keys; replacements may then change shape, and the result is checked exactly as
    :func:`load_adapter` would read it under the new config (every module's A/B pair and rank).

    Args:
        adapter: The loaded source adapter (its directory must still exist for the file copies).
        replaced: State-dict key -> new tensor, same shape as the stored one (unless ``config`` is given);
            cast to the stored dtype.
        out_dir: Destination directory (may be the source directory itself).
        manifest: JSON-serialisable description of the edit.
        config: A new ``adapter_config.json`` (e.g. with ``rank_pattern``/``alpha_pattern``/``exclude_modules``).
        removed: State-dict keys to leave out of the written weights (only with ``config``).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        AdapterError: a replacement's key is unknown, its shape differs (or disagrees with the new config) or it
            is not finite, a removed key is unknown, ``removed`` without ``config``, or the manifest or config
            is not JSON-serialisable. Nothing is written in that case.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    try:
        manifest_text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except (TypeError, ValueError) as e:
        raise AdapterError(out_dir / MANIFEST_NAME, "manifest", f"not JSON-serialisable: {e}") from e
    removed = tuple(removed)
    if removed and config is None:
        raise AdapterError(out_dir, removed[0], "removing tensors needs the new config that excludes their modules")
    tensors = _merged_tensors(adapter, replaced, out_dir, reshape=config is not None)
    config_text = None
    if config is not None:
        for key in removed:
            if tensors.pop(key, None) is None:
                raise AdapterError(out_dir, key, f"cannot remove a key that is not in {adapter.weights_file.name}")
        try:
            config_text = json.dumps(config, indent=2, sort_keys=False, allow_nan=False) + "\n"
        except (TypeError, ValueError) as e:
            raise AdapterError(out_dir / CONFIG_NAME, "config", f"not JSON-serialisable: {e}") from e
        modules = _parse_modules(config, out_dir / CONFIG_NAME, out_dir / adapter.weights_file.name, tensors)
        if not modules:
            raise AdapterError(out_dir / adapter.weights_file.name, "lora_A", "the edit removed every LoRA module")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the published adapter should be readable like any other
    old: Path | None = None
    try:
        _fill(tmp, adapter, tensors, manifest_text, config_text)
        if out_dir.exists():
            old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None and not out_dir.exists():
            with contextlib.suppress(OSError):
                os.replace(old, out_dir)  # the new one never arrived: put the old one back
                old = None
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(OSError):
            fsync_path(out_dir.parent)  # make the renames durable
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out_dir
