"""Resolve an adapter's source URI to a local directory and its content hash.

Sources:
  * ``hf://org/name@revision`` (or ``hf://org/name`` for the default branch) through
    ``huggingface_hub.snapshot_download`` with the revision pinned. With ``HF_HUB_OFFLINE=1`` it is served from
    the local cache, so the nightly run works without network once an adapter has been fetched.
  * A local path (``/abs/dir``, ``./rel/dir``, ``file:///abs/dir``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from spectral_surgery.tasks.adapter_io import AdapterError, adapter_content_sha256

@dataclass(frozen=True)
class ResolvedAdapter:
    """A local copy of an adapter source.

    Attributes:
        uri: The source URI as registered.
        local_path: Directory holding adapter_config.json and the weights.
        revision: The resolved revision (commit sha for the hub; None for local paths).
        sha256: Content hash of the adapter files (config + weights), stable across copies.
    """

    uri: str
    local_path: Path
    revision: str | None
    sha256: str


def parse_hf_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``hf://org/name[/subfolder]@revision`` into (repo_id, subfolder, revision)."""
    body = uri[len("hf://"):]
    revision = None
    if "@" in body:
        body, revision = body.rsplit("@", 1)
        revision = revision or None
    parts = [p for p in body.split("/") if p]
    if len(parts) < 2:
        raise ValueError(f"{uri!r}: expected hf://<org>/<name>[/<subfolder>][@<revision>]")
    return "/".join(parts[:2]), "/".join(parts[2:]) or None, revision


def resolve_source(uri: str, *, cache_dir: Path | None = None) -> ResolvedAdapter:
    """Resolve ``uri`` to a local adapter directory (downloading or reading from the hub cache if needed).

    Raises:
        AdapterError: the path does not exist or holds no adapter.
        ValueError: a malformed URI.
        huggingface_hub errors: the hub is unreachable and the revision is not cached (I/O: retried by the flow).
    """
    if uri.startswith("hf://"):
        from huggingface_hub import snapshot_download

        repo_id, subfolder, revision = parse_hf_uri(uri)
        patterns = [f"{subfolder}/*" if subfolder else "*"]
        local = Path(
            snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=patterns)
        )
        resolved_rev = local.name if local.parent.name == "snapshots" else revision
        local = local / subfolder if subfolder else local
    else:
        parsed = urlparse(uri)
        local = Path(parsed.path if parsed.scheme == "file" else uri).expanduser().resolve()
        resolved_rev = None
    if not local.is_dir():
        raise AdapterError(local, "source_uri", f"adapter directory does not exist (from {uri!r})",
                           "restore the directory, or register the adapter again with its new --source")
    if not (local / "adapter_config.json").is_file():
        raise AdapterError(local / "adapter_config.json", "adapter_config.json",
                           "missing: not a PEFT adapter directory",
                           "point --source at the folder PEFT's save_pretrained() wrote (it holds adapter_config.json)")
    return ResolvedAdapter(uri=uri, local_path=local, revision=resolved_rev, sha256=adapter_content_sha256(local))


def can_heal(error: BaseException) -> bool:
    """Whether retrying the fetch that raised ``error`` can succeed: True for transient I/O (a dropped connection, a
    timeout, an HTTP 5xx or 429 from the Hub), False for what stays wrong however often it is tried.

    Never heals: bad input (``AdapterError``, ``ValueError``, ``KeyError``), a missing or unreadable local path
    (``FileNotFoundError``, ``PermissionError``, ``NotADirectoryError``, ``IsADirectoryError``), a Hub repository,
    revision or file that does not exist or is gated (HTTP 4xx other than 429), and anything that needs the network
    while ``HF_HUB_OFFLINE`` is set (an uncached file offline, ``OfflineModeIsEnabled``).
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(error, (OfflineModeIsEnabled,)):
        return False
    if isinstance(error, LocalEntryNotFoundError):  # not cached and the Hub unreachable: heals only once online
        return not constants.HF_HUB_OFFLINE
    if isinstance(error, (AdapterError, ValueError, KeyError, EntryNotFoundError, FileNotFoundError, PermissionError,
                          NotADirectoryError, IsADirectoryError)):
        return False
    if isinstance(error, HfHubHTTPError):  # RepositoryNotFound, RevisionNotFound, Gated: 4xx
        status = getattr(getattr(error, "response", None), "status_code", None)
        return status is None or status >= 500 or status == 429
    return True  # transient I/O (OSError, timeouts, connection errors) and anything unknown: worth a retry
