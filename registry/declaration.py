"""Checks of an adapter's declaration against what the nightly run can do, before the registry stores it.

:meth:`registry.repository.Registry.register_adapter` calls :func:`check_declaration` before it opens its
transaction, so a typo (``--family mth``, a misspelt policy, a calibration file that is not there) is refused at
``register`` with one line naming the field and the closest valid names, instead of failing in the nightly run
after the calibration pass. Every refusal is a :class:`DeclarationError` (a ``RegistryError``).

The names come from the registries the run uses (``tasks.evaluation.benchmarks``,
``spectral_surgery.tasks.surgery.policies``, ``tasks.surgery.calib_data``), imported lazily: those modules import torch,
and the CLI's other commands should not pay for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from spectral_surgery.registry.validation import RegistryError

# The keys of an adapter's ``config`` the nightly run reads (flows/refine_adapter.py): anything else would be
# stored and silently ignored.
OVERRIDE_KEYS = ("surgery", "calib")


class DeclarationError(RegistryError):
    """An adapter declaration the nightly run could not carry out; the message names the field and the fix."""


def hint(value: Any, known: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the names of ``known`` close to ``value`` (empty if none is close)."""
    close = difflib.get_close_matches(str(value), list(known), n=3)
    return f" Did you mean {' or '.join(map(repr, close))}?" if close else ""


def _unknown(field: str, what: str, value: Any, known: Sequence[str]) -> DeclarationError:
    return DeclarationError(f"{field} {value!r} is not a known {what}.{hint(value, known)} "
                            f"Known: {', '.join(sorted(known))}")


def check_declaration(task_family: str, benchmark_override: str | None, config: Any) -> None:
    """Refuse a declaration the run could not carry out (every check of this module, in field order).

    Raises:
        DeclarationError: naming the first bad field.
    """
    check_family(task_family)
    check_benchmark(benchmark_override)
    check_overrides(config)


def check_family(value: str) -> str:
    """``value`` if it is a task family of :data:`tasks.evaluation.benchmarks.FAMILIES`."""
    from spectral_surgery.tasks.evaluation.benchmarks import FAMILIES

    if value not in FAMILIES:
        raise _unknown("task_family", "task family", value, FAMILIES)
    return value


def check_benchmark(value: str | None) -> str | None:
    """``value`` if it is ``None`` or a registered benchmark name."""
    from spectral_surgery.tasks.evaluation.benchmarks import list_benchmarks

    if value is not None and value not in list_benchmarks():
        raise _unknown("benchmark_override", "benchmark", value, list_benchmarks())
    return value


def check_overrides(config: Any) -> Any:
    """``config`` if it is ``None`` or overrides the run reads: ``{"surgery": {...}, "calib": "<source>"}``."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise DeclarationError(f"config must be a JSON object with keys {', '.join(OVERRIDE_KEYS)}; "
                               f"got {type(config).__name__}")
    for key in config:
        if key not in OVERRIDE_KEYS:
            raise DeclarationError(f"config.{key}: unknown key.{hint(key, OVERRIDE_KEYS)} "
                                   f"Valid keys: {', '.join(OVERRIDE_KEYS)}")
    if config.get("calib") is not None:
        check_calib(config["calib"], "config.calib")
    if config.get("surgery") is not None:
        check_surgery(config)
    return config


def check_calib(value: Any, field: str) -> str:
    """``value`` if it is an existing calibration file or a registered loader (``metamath``, ``jsonl:<path>``).

    Mirrors :func:`tasks.surgery.calib_data.load_calibration`'s reading of a source without loading any data.
    """
    from spectral_surgery.tasks.surgery.calib_data import get_calib_loader

    if not isinstance(value, str) or not value.strip():
        where = " (calibration settings go under surgery.calib)" if isinstance(value, dict) else ""
        raise DeclarationError(f"{field} must be a calibration file path or a loader name, got {value!r}{where}")
    if Path(value).expanduser().is_file():
        return value
    name, sep, arg = value.partition(":")
    try:
        get_calib_loader(name)
    except KeyError as e:
        if value.endswith((".jsonl", ".json")) or "/" in value or "\\" in value:
            raise DeclarationError(f"{field} {value!r}: calibration file does not exist; give an existing JSONL "
                                   "file or a registered loader name") from None
        raise DeclarationError(f"{field}: {e}") from None
    if name == "jsonl" and not (sep and Path(arg).expanduser().is_file()):
        raise DeclarationError(f"{field} {value!r}: calibration file {arg!r} does not exist; give an existing "
                               "JSONL file")
    return value


def check_surgery(config: dict[str, Any]) -> None:
    """Build the adapter's surgery config as the run does (:meth:`RunConfig.surgery_for`) and check its policies."""
    from pydantic import ValidationError

    from spectral_surgery.tasks.config import SurgeryConfig
    from spectral_surgery.tasks.surgery.policies import get_policy
    from spectral_surgery.tasks.run_config import RunConfig

    surgery = config["surgery"]
    if not isinstance(surgery, dict):
        raise DeclarationError(f"config.surgery must be a JSON object of SurgeryConfig sections "
                               f"({', '.join(SurgeryConfig.model_fields)}); got {type(surgery).__name__}")
    try:
        merged = RunConfig().surgery_for(config)
    except ValidationError as e:
        raise DeclarationError(one_line(e, SurgeryConfig, "config.surgery")) from None
    for i, name in enumerate(merged.policies):
        try:
            spec = get_policy(name)
        except KeyError as e:
            raise DeclarationError(f"config.surgery.policies[{i}]: {e}") from None
        if spec.name == "random_index":  # as RunConfig refuses it: the run adds one per control seed itself
            raise DeclarationError("config.surgery.policies lists random_index: the random control is added "
                                   "for every seed in surgery.random_control_seeds; remove it from policies")
    import spectral_surgery.tasks.surgery.policies  # noqa: F401  (registers every policy, the ladder's included)
    from spectral_surgery.tasks.surgery.policy_registry import ladder_member_problem

    if problem := ladder_member_problem(merged.policies, field="config.surgery.policies"):
        raise DeclarationError(problem)


def one_line(error: Any, model: type, prefix: str) -> str:
    """The first error of a pydantic ``ValidationError`` as one line naming the key (and the valid keys, with a
    "did you mean" for an unknown one); ``prefix`` (may be empty) goes before the key's dotted path."""
    first = error.errors()[0]
    loc = [str(p) for p in first["loc"]]
    where = ".".join([p for p in (prefix, *loc) if p])
    if first["type"] == "extra_forbidden":
        if first["msg"] != "Extra inputs are not permitted":  # a model's own reason (EditConfig: an edit's section)
            return f"{where}: {first['msg']}"
        valid = _fields_at(model, loc[:-1])
        return f"{where}: unknown key.{hint(loc[-1], valid)} Valid keys: {', '.join(valid)}"
    msg = first["msg"].removeprefix("Value error, ")
    got = f" (got {first['input']!r})" if "input" in first and not isinstance(first["input"], dict) else ""
    return f"{where}: {msg}{got}" if where else f"{msg}{got}"  # a model-level check names its own fields


def _fields_at(model: type, path: Sequence[str]) -> list[str]:
    """The field names of the pydantic model found by following ``path`` from ``model`` (``[]`` if none); a model
    with sections beside its fields (EditConfig: the registered edits' settings) says so by ``section_model`` and
    ``setting_names``."""
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        sub = field.annotation if field is not None else getattr(model, "section_model", lambda _: None)(part)
        if not hasattr(sub, "model_fields"):
            return []
        model = sub
    names = getattr(model, "setting_names", None)
    return list(names() if names is not None else getattr(model, "model_fields", {}))
