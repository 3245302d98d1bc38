"""Input checks of the registry's API: every bad value becomes a ``RegistryError`` naming the field.

Also turns values into what the database can store identically on SQLite and PostgreSQL (plain JSON, finite
floats) and exceptions into the recorded ``(error_type, error_message)``.
"""

from __future__ import annotations

import math
import re
import traceback
from collections.abc import Sequence
from pathlib import PurePath
from typing import Any


class RegistryError(ValueError):
    """Invalid input or a state the registry refuses to enter; the message says what to change."""


class NotFoundError(RegistryError, LookupError):
    """A name or id that is not in the registry."""


class RunStoppedError(RegistryError):
    """The refinement run a write belongs to is no longer ``running`` (cancelled by a stop request, or closed):
    the write (a production move) was refused."""


SHA256 = re.compile(r"[0-9a-f]{64}")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
HF_URI = re.compile(r"hf://[^/@\s]+/[^@\s]+(@[^@\s]+)?")
MAX_ERROR_CHARS = 100_000


def text(value: Any, field: str, *, max_len: int | None = None) -> str:
    """``value`` if it is a non-empty string of at most ``max_len`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise RegistryError(f"{field} must be a non-empty string, got {value!r}")
    if max_len is not None and len(value) > max_len:
        raise RegistryError(f"{field} is longer than {max_len} characters: {value[:40]!r}...")
    return value


def optional_text(value: Any, field: str, *, max_len: int) -> str | None:
    """``value`` if it is ``None`` or a non-empty string of at most ``max_len`` characters."""
    return None if value is None else text(value, field, max_len=max_len)


def sha256(value: Any, field: str) -> str:
    """``value`` if it is a sha256 hex digest (64 lowercase hex digits)."""
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise RegistryError(f"{field} must be 64 lowercase hex digits (a sha256), got {value!r}")
    return value


def finite(value: Any, field: str, *, optional: bool = False) -> float | None:
    """A float; non-finite optional values become ``None`` (SQLite would store NaN as NULL anyway)."""
    if value is None and optional:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise RegistryError(f"{field} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        if optional:
            return None
        raise RegistryError(f"{field} must be finite, got {value!r}")
    return out


def choice(value: str, field: str, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise RegistryError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def jsonable(value: Any, field: str) -> Any:
    """``value`` as plain JSON data, or a ``RegistryError`` naming ``field`` and the offending type.

    Pydantic models are dumped, tuples become lists, paths strings, numpy/torch scalars Python numbers, and
    non-finite floats ``None`` (JSON has no NaN, and PostgreSQL's ``json`` rejects it).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        if not all(isinstance(k, (str, int)) for k in value):
            raise RegistryError(f"{field}: JSON object keys must be strings, got {list(value)[:5]!r}")
        return {str(k): jsonable(v, f"{field}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, f"{field}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "model_dump"):
        return jsonable(value.model_dump(mode="json"), field)
    if callable(getattr(value, "item", None)) and getattr(value, "ndim", 0) == 0:
        return jsonable(value.item(), field)
    raise RegistryError(f"{field}: {type(value).__name__} is not JSON-serialisable")


def error_text(error: BaseException | str) -> tuple[str, str]:
    """``(error_type, error_message)`` of a failure: the exception's qualified type and its full traceback."""
    if isinstance(error, BaseException):
        kind = f"{type(error).__module__}.{type(error).__qualname__}".removeprefix("builtins.")
        text = "".join(traceback.format_exception(error)) if error.__traceback__ else f"{kind}: {error}"
    else:
        kind, text = "Error", str(error)
    return kind[:200], text[-MAX_ERROR_CHARS:]


def error_summary(message: str | None) -> str:
    """The last non-empty line of a stored traceback (see :func:`error_text`): the exception and its message."""
    lines = [ln for ln in (message or "").strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""
