"""Shell completion of adapter names, policies and task families (issue 27 §4), cheap enough for every Tab.

* Adapter names are read from the registry the command would open (``--data-dir`` / ``--db`` already typed on the
  line, else ``$SPECTRAL_SURGERY_DB`` / ``$SPECTRAL_SURGERY_HOME``): the SQLite file directly, read-only, with
  :mod:`sqlite3`; another database through SQLAlchemy. No model stack, no Prefect; a missing or unreadable
  registry completes nothing (completion never prints an error into the shell).
* Policies come from the policy registry itself, which imports torch (seconds): the names are cached under
  ``$XDG_CACHE_HOME/spectral-surgery`` in a file keyed by the policy modules' names, sizes and modification times,
  so only the first Tab after a change pays for the import.
* Task families are :data:`tasks.evaluation.benchmarks.FAMILIES` (a module without the model stack).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path
from typing import Any

SURGERY = Path(__file__).resolve().parents[2] / "tasks" / "surgery"


def _option(ctx: Any, key: str) -> Any:
    """A global option as typed so far on the line: the sub-command's own, else the group's."""
    while ctx is not None:
        value = (ctx.params or {}).get(key)
        if value:
            return value
        ctx = ctx.parent
    return None


def adapter_names(data_dir: str | Path | None = None, url: str | None = None) -> list[str]:
    """The registered adapters' names, sorted; [] when there is no readable registry."""
    url = url or os.environ.get("SPECTRAL_SURGERY_DB") or None
    if url is None or url.startswith("sqlite"):
        if url is not None:
            path = Path(url.split("///", 1)[-1]) if "///" in url else None
        else:
            home = data_dir or os.environ.get("SPECTRAL_SURGERY_HOME") or Path.home() / ".spectral-surgery"
            path = Path(home).expanduser() / "registry.db"
        if path is None or not path.is_file():
            return []
        try:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0) as con:
                return [r[0] for r in con.execute("SELECT name FROM adapters ORDER BY name")]
        except sqlite3.Error:
            return []
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        try:
            with engine.connect() as con:
                return list(con.execute(text("SELECT name FROM adapters ORDER BY name")).scalars())
        finally:
            engine.dispose()
    except Exception:  # completion must never break the shell: an unreachable database completes nothing
        return []


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "spectral-surgery"


def policy_names(cache_dir: Path | None = None) -> list[str]:
    """Every registered policy name (the order of :func:`tasks.surgery.policies.list_policies`), cached by the
    policy modules' (name, size, mtime)."""
    sources = sorted(SURGERY.glob("*.py"))
    stamp = "".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns};" for p in sources)
    cache = (cache_dir or _cache_dir()) / f"policies-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}.txt"
    try:
        return cache.read_text().split()
    except OSError:
        pass
    from spectral_surgery.tasks.surgery.policies import list_policies
    from spectral_surgery.tasks.surgery.policy_registry import ROLES

    names = list(list_policies(ROLES))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text("\n".join(names) + "\n")
        os.replace(tmp, cache)
    except OSError:  # a read-only home: no cache, the names all the same
        pass
    return names


def families() -> list[str]:
    from spectral_surgery.tasks.evaluation.benchmarks import FAMILIES

    return list(FAMILIES)


def complete_adapter(ctx: Any, _param: Any, incomplete: str) -> list[str]:
    """Click ``shell_complete`` callback of an adapter name."""
    names = adapter_names(_option(ctx, "data_dir"), _option(ctx, "db"))
    return [n for n in names if n.startswith(incomplete)]


def complete_policy(_ctx: Any, _param: Any, incomplete: str) -> list[str]:
    """Click ``shell_complete`` callback of ``--policy`` (``all`` too)."""
    return [n for n in ["all", *policy_names()] if n.startswith(incomplete)]


def complete_family(_ctx: Any, _param: Any, incomplete: str) -> list[str]:
    """Click ``shell_complete`` callback of ``--family``."""
    return [f for f in families() if f.startswith(incomplete)]
