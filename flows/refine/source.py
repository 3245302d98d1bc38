"""The local files of the adapter version being refined (its recorded copy, or a fresh fetch hashed to match)."""

from collections.abc import Callable
from pathlib import Path

from spectral_surgery.tasks.adapter_io import adapter_content_sha256
from spectral_surgery.tasks.download import ResolvedAdapter


class SourceChangedError(ValueError):
    """The adapter's source no longer holds the version being refined (it changed after the scan)."""


def version_files(version, source_uri: str, fetch: Callable[[str], ResolvedAdapter]) -> Path:
    """A local directory holding exactly ``version``: its recorded copy if that still hashes to the version's
    sha256, else a fresh fetch of ``source_uri``, which must hash to it too.

    Args:
        fetch: ``uri -> ResolvedAdapter`` (the flow passes its retried ``fetch_adapter`` task).

    Raises:
        SourceChangedError: the re-fetched content is another version's: nothing is refined under this version's
            identity (the next scan records the new content as a new version).
    """
    local = Path(version.local_path) if version.local_path else None
    if local is not None and local.is_dir() and adapter_content_sha256(local) == version.content_sha256:
        return local
    got = fetch(source_uri)
    if got.sha256 != version.content_sha256:
        raise SourceChangedError(
            f"adapter source {source_uri} now holds content {got.sha256[:12]}…, not version {version.id}'s "
            f"{version.content_sha256[:12]}… recorded by the scan: it changed after the scan, so version "
            f"{version.id} cannot be refined from it; the next run scans the new content as a new version "
            "(restore the source to refine this one)")
    return got.local_path
