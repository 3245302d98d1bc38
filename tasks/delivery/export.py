"""Export the production set for serving: one folder per adapter, switched atomically, and ``production.json``.

Layout of an export directory ``DIR``::

    DIR/production.json                 name -> {sha256, policy, decision_id, promoted_at, base model, path, ...}
    DIR/<name>  -> .versions/<name>-<sha12>   a relative symlink: what a server loads (PEFT adapter folder)
    DIR/.versions/<name>-<sha12>/       adapter_config.json + the weights file of one exported version

A version folder is written whole into a fresh hidden temporary folder, fsynced and renamed into place; then a
temporary symlink to it is ``os.replace``d over ``DIR/<name>``, so a reader resolving ``DIR/<name>`` sees the old
version or the new one, never a mix or a half-written file. Versions no longer linked are renamed to a trash name
and removed after the swap, except the ``keep_previous`` latest ones: a server that resolved the link just
before a switch can finish reading what it resolved. ``production.json`` is written to a temporary file and
``os.replace``d, and only when its content changes; an export with nothing new writes nothing.

Names with ``/`` (``acme/gsm-lora``) get the folder ``acme--gsm-lora``. Everything here works on paths and plain
data (the file system operations are :mod:`tasks.delivery.export_dir`); the registry read is
:func:`registry.read.production_set`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spectral_surgery.tasks.adapter_io import CONFIG_NAME, SAFETENSORS_NAME, AdapterError, content_sha256
from spectral_surgery.tasks.delivery.export_dir import (
    MANIFEST,
    VERSIONS,
    ExportError,
    dir_sha,
    folder_name,
    linked,
    prune_versions,
    read_manifest,
    switch_link,
    version_name,
    weights_file,
    write_manifest,
    write_version,
)
from spectral_surgery.tasks.delivery.serving import normalise, serving_problems

__all__ = ["MANIFEST", "VERSIONS", "ExportError", "ExportItem", "Outcome", "Payload", "export_one",
           "export_production", "folder_name", "read_payload", "verified_files"]


@dataclass(frozen=True)
class ExportItem:
    """One adapter of the production set, as the registry records it.

    Attributes:
        name: The adapter's name.
        source: The folder of the files in production (the promoted candidate's artifact or the unedited
            version's files); ``None`` when nothing is in production.
        sha256: The content hash the registry recorded for ``source``.
        info: What ``production.json`` says besides the export (policy, decision_id, promoted_at, base model...).
    """

    name: str
    source: Path | None
    sha256: str | None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Payload:
    """The files of one exported version, in memory: ``((file name, bytes), ...)`` and their content hash."""

    files: tuple[tuple[str, bytes], ...]
    sha256: str
    rank: int
    normalised: bool


@dataclass
class Outcome:
    """What the export did with one adapter: ``exported`` (first time), ``switched``, ``unchanged``,
    ``skipped`` (nothing in production) or ``failed`` (``reason`` says why; its previous export still serves)."""

    name: str
    status: str
    reason: str | None = None
    sha256: str | None = None
    path: str | None = None
    previous_sha256: str | None = None
    rank: int | None = None
    normalised: bool = False
    removed: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- reading
def verified_files(item: ExportItem) -> tuple[tuple[tuple[str, bytes], ...], str]:
    """The config and weights files of ``item`` as the registry recorded them, read once and checked against the
    recorded content hash: ``(((file name, bytes), ...), sha256)``. Shared by the export and the Hub publish.

    Raises:
        ExportError: the source folder or a file is missing, no hash was recorded, or the content hash differs from
            the registry's record (naming both hashes).
    """
    source = Path(item.source) if item.source is not None else None
    if source is None:
        raise ExportError(f"adapter {item.name!r}: nothing in production")
    if not source.is_dir():
        raise ExportError(f"{source}: the production artifact of {item.name!r} does not exist")
    cfg = source / CONFIG_NAME
    if not cfg.is_file():
        raise ExportError(f"{cfg}: missing (the production artifact of {item.name!r} has no adapter config)")
    weights = weights_file(source)
    files = ((CONFIG_NAME, cfg.read_bytes()), (weights.name, weights.read_bytes()))
    sha = content_sha256(files)
    if item.sha256 is None:
        raise ExportError(f"{source}: the registry recorded no content sha256 for the artifact of {item.name!r}, "
                          "so it cannot be verified")
    if sha != item.sha256:
        raise ExportError(f"{source}: content sha256 {sha[:12]}… differs from the registry's {item.sha256[:12]}… "
                          f"(the artifact of {item.name!r} changed since it was recorded)")
    return files, sha


def read_payload(item: ExportItem, *, normalise_config: bool = False) -> Payload:
    """The verified, servable files of ``item``: exactly the recorded bytes, or their normalised rewrite.

    Raises:
        ExportError: as :func:`verified_files`; or the config has fields a serving engine cannot apply and
            ``normalise_config`` is off (naming the fields and the ``--normalise`` fix); or normalising it failed.
    """
    files, sha = verified_files(item)
    source = Path(item.source)
    cfg = source / CONFIG_NAME
    try:
        config = json.loads(files[0][1])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{cfg}: invalid JSON: {e}") from e
    problems = serving_problems(config)
    if not problems:
        return Payload(files, sha, int(config.get("r") or config.get("rank") or 0), False)
    if not normalise_config:
        fields = "; ".join(f"field {f!r}: {why}" for f, why in problems)
        raise ExportError(f"{cfg}: {fields}; pass --normalise to pad to one rank and fold the scalings into B")
    return _normalised(source, config, files[1])


def _normalised(source: Path, config: dict, weights: tuple[str, bytes]) -> Payload:
    name, data = weights
    if name != SAFETENSORS_NAME:
        raise ExportError(f"{source / name}: --normalise reads safetensors weights only")
    from safetensors.torch import load, save

    try:
        tensors = load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        new_config, new_tensors = normalise(config, tensors, path=source)
    except AdapterError as e:
        raise ExportError(str(e)) from e
    except Exception as e:  # a corrupt header: safetensors' own error, said once
        raise ExportError(f"{source / name}: cannot be read: {e}") from e
    files = ((CONFIG_NAME, (json.dumps(new_config, indent=2) + "\n").encode()),
             (name, save(new_tensors, metadata=header.get("__metadata__") or None)))
    return Payload(files, content_sha256(files), int(new_config["r"]), True)


# ---------------------------------------------------------------------------------------------- the export
def export_one(item: ExportItem, out_dir: Path, *, normalise_config: bool = False, keep_previous: bool = True,
               dry_run: bool = False) -> tuple[Outcome, dict[str, Any] | None]:  # fmt: skip
    """Export one adapter (module docstring): verify, write its version folder, swap its link, prune.

    Returns:
        The outcome and the ``production.json`` entry of what ``out_dir/<name>`` serves after it (``None`` if
        nothing was exported: skipped, or failed before any export of it existed).
    """
    out_dir = Path(out_dir).absolute()
    if item.source is None:
        return Outcome(item.name, "skipped", "nothing in production"), None
    try:
        payload = read_payload(item, normalise_config=normalise_config)
        version = version_name(item.name, payload.sha256)
        before = linked(out_dir, item.name)
        link = out_dir / folder_name(item.name)
        if link.exists() and not link.is_symlink():
            raise ExportError(f"{link}: exists and is not a symlink; move it away (export owns the names in "
                              f"{out_dir})")
        entry = {**item.info, "sha256": payload.sha256, "source_sha256": item.sha256, "r": payload.rank,
                 "normalised": payload.normalised, "path": str(link), "version": f"{VERSIONS}/{version}"}
        unchanged = before == version and dir_sha(out_dir / VERSIONS / version) == payload.sha256
        status = "unchanged" if unchanged else ("exported" if before is None else "switched")
        outcome = Outcome(item.name, status, sha256=payload.sha256, path=str(link), rank=payload.rank,
                          normalised=payload.normalised,
                          previous_sha256=None if before is None or unchanged else before[-12:])
        if unchanged or dry_run:
            return outcome, entry
        target = write_version(out_dir, item.name, payload.files, payload.sha256)
        switch_link(out_dir, item.name, target)
        keep = [version] + ([before] if keep_previous and before and before != version else [])
        outcome.removed = prune_versions(out_dir, item.name, keep)
        return outcome, entry
    except (ExportError, OSError) as e:
        return Outcome(item.name, "failed", str(e)), None


def export_production(items: list[ExportItem], out_dir: str | Path, *, normalise_config: bool = False,
                      keep_previous: bool = True, dry_run: bool = False) -> tuple[list[Outcome], bool]:  # fmt: skip
    """Export every adapter of ``items`` into ``out_dir``, then ``production.json`` (module docstring).

    A failed adapter keeps serving its previous export (its entry in ``production.json`` is kept); names in an
    existing ``production.json`` that are not in ``items`` are kept as they are.

    Args:
        items: The production set (:func:`registry.read.production_set`, as :class:`ExportItem`).
        out_dir: The export directory (created if missing).
        normalise_config: Rewrite configs a serving engine cannot apply (:func:`tasks.delivery.serving.normalise`)
            instead of refusing them.
        keep_previous: Keep the version folder a switch unlinked (until the next switch), for readers that
            resolved the link just before it.
        dry_run: Verify and say what would change; write nothing.

    Returns:
        ``(outcomes in the order of items, whether production.json was (or, dry, would be) rewritten)``.

    Raises:
        ExportError: an existing ``production.json`` is not a JSON object, or two names share a folder.
    """
    out_dir = Path(out_dir).expanduser().absolute()
    folders: dict[str, str] = {}
    for item in items:
        other = folders.setdefault(folder_name(item.name), item.name)
        if other != item.name:
            raise ExportError(f"adapters {other!r} and {item.name!r} would share the folder {folder_name(item.name)!r}")
    manifest = read_manifest(out_dir)
    if not dry_run:
        out_dir.mkdir(parents=True, exist_ok=True)
    outcomes = []
    new_manifest = dict(manifest)
    for item in items:
        outcome, entry = export_one(item, out_dir, normalise_config=normalise_config, keep_previous=keep_previous,
                                    dry_run=dry_run)
        outcomes.append(outcome)
        if entry is not None:
            new_manifest[item.name] = entry
    text = json.dumps(new_manifest, sort_keys=True, default=str)
    changed = text != json.dumps(manifest, sort_keys=True, default=str) or not (out_dir / MANIFEST).is_file()
    if changed and not dry_run:
        write_manifest(out_dir, new_manifest)
    return outcomes, changed
