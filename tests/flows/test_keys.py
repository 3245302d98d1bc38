"""Keys hold exactly what was used (flows/refine_adapter.py, flows/cli/run.py): the sandbox a code benchmark ran
in, the re-fetched adapter's content, and the CLI's own run, followed by id."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from flows.refine_adapter import SourceChangedError, _evaluator_key, adapter_config_hash, version_files
from tasks.adapter_io import adapter_content_sha256
from tasks.download import resolve_source
from tasks.evaluation.benchmarks import get_benchmark
from tasks.run_config import RunConfig


def _adapter(family: str, benchmark: str | None = None):
    return SimpleNamespace(config_json=None, base_model_id="acme/base", base_model_revision=None,
                           task_family=family, benchmark_override=benchmark)


def test_the_sandbox_used_is_keyed_for_code_benchmarks_only(tmp_path, monkeypatch):
    monkeypatch.delenv("SPECTRAL_SURGERY_SANDBOX", raising=False)
    cfg = RunConfig(data_dir=tmp_path, benchmark_profile="offline")
    code, math = _adapter("code"), _adapter("math")
    default_code, default_math = adapter_config_hash(cfg, code), adapter_config_hash(cfg, math)
    monkeypatch.setenv("SPECTRAL_SURGERY_SANDBOX", "python-guard")  # the backend the run would now use
    assert adapter_config_hash(cfg, code) != default_code
    assert adapter_config_hash(cfg, math) == default_math  # no code runs: the sandbox determines nothing
    assert cfg.resolved().sandbox == "python-guard"
    explicit = RunConfig(data_dir=tmp_path, benchmark_profile="offline", sandbox="bwrap")
    assert adapter_config_hash(explicit, code) == default_code  # bwrap was the default: same key
    fake = RunConfig(data_dir=tmp_path, benchmark_profile="offline", evaluator="fake")
    monkeypatch.delenv("SPECTRAL_SURGERY_SANDBOX")
    before = adapter_config_hash(fake, code)
    monkeypatch.setenv("SPECTRAL_SURGERY_SANDBOX", "python-guard")
    assert adapter_config_hash(fake, code) == before  # the fake evaluator runs no generated code
    spec = get_benchmark("ss_code")
    assert _evaluator_key("id", spec, 10, None, "bwrap") != _evaluator_key("id", spec, 10, None, "python-guard")
    assert _evaluator_key("id", spec, 10) == _evaluator_key("id", spec, 10, None, None)


def test_a_refetched_adapter_must_be_the_scanned_version(tiny_adapter, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(tiny_adapter, source)
    version = SimpleNamespace(id=7, local_path=None, content_sha256=adapter_content_sha256(source))
    assert version_files(version, str(source), fetch=resolve_source) == source  # unchanged: its files
    cfg = source / "adapter_config.json"
    cfg.write_text(cfg.read_text().replace('"r": 4', '"r": 4 '))  # same meaning, other bytes: another content
    assert adapter_content_sha256(source) != version.content_sha256
    with pytest.raises(SourceChangedError, match=r"now holds content .*not version 7's .*changed after the scan"):
        version_files(version, str(source), fetch=resolve_source)
    kept = SimpleNamespace(id=7, local_path=str(tiny_adapter), content_sha256=adapter_content_sha256(tiny_adapter))
    assert version_files(kept, str(source), fetch=resolve_source) == tiny_adapter  # its recorded copy still holds it


def test_the_cli_follows_its_own_run_not_a_concurrent_one(tmp_path):
    """Another process's run started after ours began is never taken for ours (today: before + 1)."""
    from rich.console import Console

    from flows.cli.run import Progress
    from registry.repository import Registry
    from registry.runs import this_owner

    reg = Registry.open(data_dir=tmp_path)
    progress = Progress(reg, Console(file=open(tmp_path / "out.txt", "w")))
    reg.start_run("other-flow-run", {}, "h" * 64, owner="elsewhere:1")
    progress.poll()
    assert progress.run_id is None
    ours = reg.start_run("our-flow-run", {}, "h" * 64, owner=this_owner())
    progress.poll()
    assert progress.run_id == ours.id
    reg.close()
