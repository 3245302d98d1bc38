"""The export directory's file system operations: atomic version folders, symlink swaps, ``production.json``.

Used by :mod:`tasks.delivery.export` (the layout and the guarantees are described there). Every write goes to a fresh
hidden temporary name in the same directory, is fsynced, and is renamed into place with ``os.replace``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from spectral_surgery.tasks.adapter_io import CONFIG_NAME, PICKLE_NAME, SAFETENSORS_NAME, content_sha256, fsync_path

MANIFEST = "production.json"
VERSIONS = ".versions"
_TRASH = ".trash-"


class ExportError(ValueError):
    """One adapter cannot be exported; the message names the file or field and says why."""


def folder_name(name: str) -> str:
    """The folder of adapter ``name`` in an export directory (``/`` becomes ``--``)."""
    folder = name.replace("/", "--")
    if folder in (MANIFEST, VERSIONS) or folder.startswith("."):
        raise ExportError(f"adapter {name!r}: its folder would be {folder!r}, reserved in an export directory")
    return folder


def version_name(name: str, sha256: str) -> str:
    return f"{folder_name(name)}-{sha256[:12]}"


def weights_file(source: Path) -> Path:
    for candidate in (SAFETENSORS_NAME, PICKLE_NAME):
        if (source / candidate).is_file():
            return source / candidate
    raise ExportError(f"{source / SAFETENSORS_NAME}: missing (no {SAFETENSORS_NAME} or {PICKLE_NAME} in the "
                      "artifact the registry points at)")


def dir_sha(path: Path) -> str | None:
    """Content hash of an exported version folder (``None`` if it is not a complete one)."""
    try:
        cfg = (path / CONFIG_NAME).read_bytes()
        weights = weights_file(path)
        return content_sha256([(CONFIG_NAME, cfg), (weights.name, weights.read_bytes())])
    except (OSError, ExportError):
        return None


def write_version(out_dir: Path, name: str, files: tuple[tuple[str, bytes], ...], sha256: str) -> Path:
    """``out_dir/.versions/<name>-<sha12>`` holding ``files`` (of content hash ``sha256``), written atomically;
    reused if a complete folder of that content is already there."""
    versions = Path(out_dir) / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    final = versions / version_name(name, sha256)
    if final.is_dir() and dir_sha(final) == sha256:
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder_name(name)}-", dir=versions))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; a server running as another user must read it
        for file_name, data in files:
            with (tmp / file_name).open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        fsync_path(tmp)
        if final.exists():  # an incomplete or altered folder of that name: out of the way first
            _retire(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_path(versions)
    return final


def switch_link(out_dir: Path, name: str, version_dir: Path) -> None:
    """Point ``out_dir/<name>`` at ``version_dir`` in one ``os.replace`` of a fresh relative symlink.

    Raises:
        ExportError: ``out_dir/<name>`` exists and is not a symlink (a real folder is never replaced).
    """
    out_dir = Path(out_dir)
    link = out_dir / folder_name(name)
    if link.exists() and not link.is_symlink():
        raise ExportError(f"{link}: exists and is not a symlink; move it away (export owns the names in {out_dir})")
    tmp = out_dir / f".{folder_name(name)}.link-{uuid.uuid4().hex[:12]}"
    os.symlink(os.path.relpath(version_dir, out_dir), tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(out_dir)


def _retire(path: Path) -> None:
    """Remove a folder so that no reader ever sees it half-deleted: renamed to a trash name first."""
    trash = path.parent / f"{_TRASH}{path.name}-{uuid.uuid4().hex[:8]}"
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def prune_versions(out_dir: Path, name: str, keep: list[str]) -> list[str]:
    """Remove ``name``'s version folders other than ``keep`` (folder names); return the names removed."""
    versions = Path(out_dir) / VERSIONS
    prefix = folder_name(name) + "-"
    removed = []
    if not versions.is_dir():
        return removed
    for p in sorted(versions.iterdir()):
        # The 12 hex digits after the prefix tell our versions from those of a name that extends ours ("a-b").
        rest = p.name[len(prefix):] if p.name.startswith(prefix) else ""
        if len(rest) == 12 and all(c in "0123456789abcdef" for c in rest) and p.name not in keep:
            _retire(p)
            removed.append(p.name)
    return removed


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """``out_dir/production.json`` (``{}`` if there is none yet).

    Raises:
        ExportError: it is not a JSON object.
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path}: invalid JSON ({e}); remove it to export afresh") from e
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object of adapter name -> entry")
    return data


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> bool:
    """Write ``production.json`` atomically (temporary file, fsync, ``os.replace``); ``False`` if it was the same."""
    path = Path(out_dir) / MANIFEST
    text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    fd, tmp = tempfile.mkstemp(prefix=f".{MANIFEST}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_path(path.parent)
    return True


def linked(out_dir: Path, name: str) -> str | None:
    """The version folder name ``out_dir/<name>`` links to now (``None``: no link yet)."""
    link = out_dir / folder_name(name)
    if not link.is_symlink():
        return None
    return Path(os.readlink(link)).name
