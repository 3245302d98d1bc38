"""Shared fixtures: offline mode, a tiny random base model on disk and tiny PEFT adapters."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

from tests import tiny


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def code_sandbox(monkeypatch):
    """For tests that run honest generated code (HumanEval's canonical solutions): bubblewrap where it works, else
    the opted-in python-guard, so they pass on a machine without bubblewrap (the refusal itself is tested in
    tests/tasks/evaluation/test_sandbox.py)."""
    from tasks.evaluation.sandbox import ENV_SANDBOX, bwrap_problem

    if bwrap_problem() is not None:
        monkeypatch.setenv(ENV_SANDBOX, "python-guard")


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    """Path of a saved tiny Llama model + tokenizer (2 layers, hidden 32)."""
    return tiny.save_base(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="session")
def tiny_adapter(tiny_base, tmp_path_factory):
    """Path of a PEFT LoRA adapter (r=4, alpha=8, all seven projections) on ``tiny_base``."""
    return tiny.save_adapter(tiny_base, tmp_path_factory.mktemp("tiny_adapter"))


@pytest.fixture(scope="session")
def calib_file(tmp_path_factory):
    """A JSONL calibration file with 8 prompt/answer rows."""
    p = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    return p


from tests.pg import pg_server, pg_url  # noqa: E402,F401  (fixtures shared by tests/registry and tests/flows)
