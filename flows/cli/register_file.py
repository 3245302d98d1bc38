"""``spectral-surgery register --from FILE`` / ``--dir DIR``: many adapters at once, all or nothing.

YAML: a list of entries, or ``{defaults: {...}, adapters: [...]}`` where ``defaults`` fills every entry's missing
fields::

    defaults: {base: /models/llama3-8b, family: math}
    adapters:
      - {name: ops-math, source: loras/ops-math, calib: metamath}
      - {name: ops-qa, source: hf://acme/ops-qa@v3, family: commonsense, benchmark: ss_mc}

CSV: a header row naming the same fields (``name,source,base,family,benchmark,calib,base_revision,enabled,priority``).
A relative local path (``source``, ``calib``) is read against the file's folder. Every entry is validated (fields,
then the same door checks as ``register``, unless ``--no-check``) before anything is written, and every problem is
reported at once, naming the file, the entry and the field; then all are written in one transaction
(:meth:`registry.fleet.AdapterStore.register_adapters`): a bad entry registers none.

``--dir DIR``: every folder directly under DIR that holds an ``adapter_config.json`` is an adapter, named after
its folder (``--prefix`` before it), with the base, family and other flags of the command shared by all; then the
same validation, door checks and single transaction as a file.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from spectral_surgery.flows.cli.common import console, emit, fail, open_registry, resolve_location, table, warn


def _entry_model():
    from pydantic import BaseModel, ConfigDict, field_validator

    class Entry(BaseModel):
        """One adapter of a registration file (the flags of ``register``, without the dashes)."""

        model_config = ConfigDict(extra="forbid")
        name: str
        source: str
        base: str
        family: str
        benchmark: str | None = None
        calib: str | None = None
        base_revision: str | None = None
        enabled: bool | None = None
        priority: int | None = None

        @field_validator("benchmark", "calib", "base_revision", "enabled", "priority", mode="before")
        @classmethod
        def _blank_is_none(cls, v: Any) -> Any:  # an empty CSV cell
            return None if v == "" else v

    return Entry


def read_entries(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The raw entries of a registration file (defaults applied) and the problems reading it."""
    import yaml

    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        return [{k.strip(): (v or "").strip() for k, v in r.items() if k is not None} for r in rows], []
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        return [], [f"{path}: not YAML ({str(e).splitlines()[0]})"]
    defaults: dict[str, Any] = {}
    if isinstance(doc, dict):
        unknown = sorted(set(doc) - {"defaults", "adapters"})
        if unknown:
            return [], [f"{path}: unknown top-level key(s) {unknown}; use 'defaults' and 'adapters'"]
        defaults, doc = doc.get("defaults") or {}, doc.get("adapters")
    if not isinstance(doc, list) or not all(isinstance(e, dict) for e in doc) or not isinstance(defaults, dict):
        return [], [f"{path}: expected a list of adapters (or 'adapters:' with a list) of name/source/base/family"]
    return [{**defaults, **e} for e in doc], []


def _local(value: str, folder: Path) -> Path | None:
    """``value`` as a local path (relative ones against the file's folder), or None for a URI / hub id / loader."""
    if "://" in value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else folder / path


def cmd_register_from(args) -> int:
    """Register every adapter of ``args.from_file`` (see the module docstring)."""
    path = Path(args.from_file).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"--from {args.from_file!r}: no such file")
    entries, problems = read_entries(path)
    if not entries and not problems:
        problems.append(f"{path}: no adapters in it")
    return _register_entries(args, entries, problems, path, path.resolve().parent)


def dir_entries(folder: Path, *, prefix: str = "", **fields: Any) -> list[dict[str, Any]]:
    """One entry per adapter folder directly under ``folder`` (one holding ``adapter_config.json``), named
    ``prefix`` + the folder's name, with ``fields`` (base, family, ...) shared by all; by name."""
    found = sorted(d for d in folder.iterdir() if d.is_dir() and (d / "adapter_config.json").is_file())
    shared = {k: v for k, v in fields.items() if v is not None}
    return [{"name": f"{prefix}{d.name}", "source": str(d.resolve()), **shared} for d in found]


def cmd_register_dir(args) -> int:
    """Register every adapter folder of ``args.dir`` (``register --dir DIR``), as ``--from`` registers a file's
    entries: the same validation and door checks, every problem at once, all written in one transaction."""
    folder = Path(args.dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"--dir {args.dir!r}: no such directory")
    enabled = False if args.disabled else (True if args.enabled else None)
    entries = dir_entries(folder, prefix=args.prefix or "", base=args.base, family=args.family,
                          benchmark=args.benchmark, calib=args.calib, base_revision=args.base_revision, enabled=enabled)
    problems = [] if entries else [f"{folder}: no adapter folder in it (a subfolder holding adapter_config.json)"]
    return _register_entries(args, entries, problems, folder, Path.cwd())


def _register_entries(args, entries: list[dict[str, Any]], problems: list[str], path: Path, folder: Path) -> int:
    """Validate ``entries`` (read from ``path``; relative paths against ``folder``), door-check them, then register
    all of them in one transaction, or none with every problem named."""
    from pydantic import ValidationError

    from spectral_surgery.registry.fleet import Registration

    Entry = _entry_model()
    regs: list[Registration] = []
    for i, raw in enumerate(entries):
        where = f"{path.name}: adapters[{i}]" + (f" ({raw['name']})" if raw.get("name") else "")
        try:
            e = Entry.model_validate(raw)
        except ValidationError as err:
            problems += [f"{where}: field {'.'.join(map(str, x['loc'])) or '?'}: {x['msg']}" for x in err.errors()]
            continue
        source, base = e.source, e.base
        if (p := _local(source, folder)) is not None:
            if not p.is_dir():
                problems.append(f"{where}: field source: {source!r}: no such directory (relative paths are read "
                                f"against {folder})")
                continue
            source = str(p.resolve())
        if (p := _local(base, folder)) is not None and p.exists():
            base = str(p.resolve())
        calib = e.calib
        if calib and (p := _local(calib, folder)) is not None and p.is_file():
            calib = str(p.resolve())
        regs.append(Registration(e.name, source, base, e.family, e.base_revision, e.benchmark, e.enabled,
                                 {"calib": calib} if calib else None, e.priority))
    if not problems and not args.no_check:
        problems += _door(args, regs)
    if problems:
        return fail(f"{path}: nothing registered, {len(problems)} problem(s): " + "; ".join(problems)
                    + " (fix them, or pass --no-check to skip the door checks)")
    reg = open_registry(args)
    try:
        changes = {r.name: reg.registration_changes(r.name, r.source_uri, r.base_model_id, r.task_family,
                                                    base_model_revision=r.base_model_revision,
                                                    benchmark_override=r.benchmark_override, config=r.config)
                   for r in regs}
        _say_changes(changes, args.force)
        adapters = reg.register_adapters(regs, force=args.force)
    finally:
        reg.close()
    rows = [{"name": a.name, "task_family": a.task_family, "source_uri": a.source_uri, "priority": a.priority,
             "action": "registered" if changes[a.name] is None else
             f"re-registered: {len(changes[a.name])} change(s)" if changes[a.name] else "unchanged",
             "changes": None if changes[a.name] is None else [str(c) for c in changes[a.name]]} for a in adapters]
    where = "directory" if path.is_dir() else "file"
    return emit(args, {where: str(path), "adapters": rows}, lambda: console().print(table(
        f"{len(rows)} adapter(s) from {path.name}", ["adapter", "family", "what happened", "source"],
        [[r["name"], r["task_family"], r["action"], r["source_uri"]] for r in rows],
        narrow=("adapter", "family"), optional=("source",))))


def _door(args, regs: list) -> list[str]:
    """Every entry through ``register``'s checks (names, then the adapter against its base and calibration)."""
    from spectral_surgery.registry.declaration import check_declaration
    from spectral_surgery.registry.validation import RegistryError
    from spectral_surgery.tasks.register_checks import context_warnings, door_checks, door_warnings

    problems, data_dir = [], resolve_location(args)[0]
    shared: dict = {}  # what depends only on the base: checked once per base (tasks.register_checks.door_checks)
    for r in regs:
        try:
            check_declaration(r.task_family, r.benchmark_override, r.config)
        except RegistryError as e:
            problems.append(f"{r.name}: {e}")
            continue
        calib = (r.config or {}).get("calib")
        findings, later = context_warnings(door_checks(r.source_uri, r.base_model_id, r.base_model_revision, calib,
                                                       family=r.task_family, benchmark_override=r.benchmark_override,
                                                       data_dir=data_dir, cache=shared))
        context, later = (later, []) if not getattr(args, "force", False) else ([], later)  # refused unless --force
        problems += [f"{r.name}: {f.what}: {f.message}" for f in findings]
        problems += [f"{r.name}: {f.what}: {f.message} (or --force)" for f in context]
        for finding in [*door_warnings(r.source_uri, r.base_model_id), *later]:
            warn(f"{r.name}: {finding.message}")
    return problems


def _say_changes(changes: dict[str, list | None], force: bool) -> None:
    """Each change of an existing adapter on stderr, before anything is written (--json stays parseable)."""
    from rich.console import Console
    from rich.markup import escape

    for name, found in changes.items():
        for change in found or []:
            Console(stderr=True).print(f"[bold yellow]change:[/] {escape(name)}: {escape(str(change))}"
                                       + (" (needs --force)" if change.guarded and not force else ""),
                                       soft_wrap=True)

