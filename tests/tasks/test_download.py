"""Adapter sources: local paths and hf:// URIs served offline from a Hugging Face cache."""

from __future__ import annotations

import shutil

import pytest

from spectral_surgery.tasks.adapter_io import AdapterError, load_adapter
from spectral_surgery.tasks.download import parse_hf_uri, resolve_source

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fake_hub_cache(cache, adapter_dir, repo="acme/math-lora", subfolder=None):
    """Lay out a snapshot the way huggingface_hub's cache does (models--org--name/snapshots/<sha>, refs/main)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / COMMIT
    dest = snap / subfolder if subfolder else snap
    shutil.copytree(adapter_dir, dest)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    return snap


def test_parse_hf_uri():
    assert parse_hf_uri("hf://acme/lora@v1") == ("acme/lora", None, "v1")
    assert parse_hf_uri("hf://acme/lora/sub/dir") == ("acme/lora", "sub/dir", None)
    with pytest.raises(ValueError, match="hf://<org>/<name>"):
        parse_hf_uri("hf://justone")


def test_local_path_and_file_uri(tiny_adapter):
    a = resolve_source(str(tiny_adapter))
    b = resolve_source(f"file://{tiny_adapter}")
    assert a.local_path == b.local_path == tiny_adapter.resolve()
    assert a.sha256 == b.sha256 == load_adapter(tiny_adapter).sha256
    assert a.revision is None


def test_readme_change_is_not_a_new_version(tiny_adapter, tmp_path):
    copy = shutil.copytree(tiny_adapter, tmp_path / "copy")
    (copy / "README.md").write_text("edited")
    assert resolve_source(str(copy)).sha256 == resolve_source(str(tiny_adapter)).sha256


def test_missing_and_non_adapter_dirs(tmp_path):
    with pytest.raises(AdapterError, match="source_uri"):
        resolve_source(str(tmp_path / "nope"))
    with pytest.raises(AdapterError, match="adapter_config.json"):
        resolve_source(str(tmp_path))


def test_hf_uri_offline_from_cache_pinned_revision(tiny_adapter, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, tiny_adapter)
    pinned = resolve_source(f"hf://acme/math-lora@{COMMIT}", cache_dir=cache)
    assert pinned.revision == COMMIT
    assert pinned.sha256 == load_adapter(tiny_adapter).sha256
    default_branch = resolve_source("hf://acme/math-lora", cache_dir=cache)
    assert default_branch.local_path == pinned.local_path


def test_hf_uri_subfolder(tiny_adapter, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "hub"
    _fake_hub_cache(cache, tiny_adapter, subfolder="adapters/math")
    r = resolve_source(f"hf://acme/math-lora/adapters/math@{COMMIT}", cache_dir=cache)
    assert r.local_path.name == "math" and (r.local_path / "adapter_config.json").is_file()


def test_hf_uri_not_cached_offline_raises(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception) as e:
        resolve_source(f"hf://acme/absent@{COMMIT}", cache_dir=tmp_path / "empty")
    assert not isinstance(e.value, AdapterError)  # an I/O error: the flow retries it and then records it


def test_only_errors_that_can_heal_are_retried(monkeypatch):
    """A fetch is retried for transient I/O only; a bad adapter, a missing path, an unknown repo or an uncached file
    while offline fails at once (it used to be retried 3 times: +42 s per adapter for nothing)."""
    import httpx
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        OfflineModeIsEnabled, RepositoryNotFoundError, RevisionNotFoundError)

    from spectral_surgery.tasks.adapter_io import AdapterError
    from spectral_surgery.tasks.download import can_heal

    def http(cls, status):
        req = httpx.Request("GET", "https://huggingface.co/api/models/acme/x")
        return cls(f"{status}", response=httpx.Response(status, request=req))

    never = [AdapterError("/x", "r", "bad"), ValueError("malformed uri"), FileNotFoundError("/nope"),
             PermissionError("/root/x"), NotADirectoryError("/f"), OfflineModeIsEnabled("offline"),
             http(RepositoryNotFoundError, 404), http(RevisionNotFoundError, 404), http(GatedRepoError, 403),
             http(HfHubHTTPError, 401)]
    for e in never:
        assert not can_heal(e), e
    for e in (ConnectionResetError("reset"), TimeoutError("slow"), OSError("disk hiccup"), http(HfHubHTTPError, 503),
              http(HfHubHTTPError, 429), RuntimeError("unknown")):
        assert can_heal(e), e
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert not can_heal(LocalEntryNotFoundError("not cached"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert can_heal(LocalEntryNotFoundError("not cached, hub unreachable"))
