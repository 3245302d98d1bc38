"""flows/cli/complete.py: Tab completes adapter names (from the registry, cheaply), policies and task families."""

from __future__ import annotations

import os
import subprocess
import sys

from spectral_surgery.flows.cli.complete import adapter_names, policy_names
from tests.flows.cli_support import cli

HEAVY = ("torch", "transformers", "peft", "prefect", "lm_eval")


def _complete(line: str, env: dict | None = None) -> tuple[list[str], list[str]]:
    """What bash's completion gets for ``line`` (the word being typed last), and the heavy modules it imported."""
    words = line.split(" ")
    script = ("import sys, runpy\n"
              "try:\n    runpy.run_module('spectral_surgery.flows.cli', run_name='__main__')\nexcept SystemExit:\n    "
              "pass\n"
              f"print('HEAVY', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})), file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "_SPECTRAL_SURGERY_COMPLETE": "bash_complete", "COMP_WORDS": line,
                            "COMP_CWORD": str(len(words) - 1), **(env or {})})
    assert r.returncode == 0, r.stderr
    heavy = next(x for x in r.stderr.splitlines() if x.startswith("HEAVY"))
    return [w.split(",", 1)[1] for w in r.stdout.split()], eval(heavy.split(" ", 1)[1])


def test_adapter_names_complete_from_the_registry_without_the_model_stack(tmp_path):
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    for name in ("ops-math", "ops-code", "chat"):
        (tmp_path / name).mkdir()
        r = cli("register", name, "--source", tmp_path / name, "--base", "some/base", "--family", "math",
                "--no-check", "--data-dir", data)
        assert r.code == 0, r.err
    assert adapter_names(data) == ["chat", "ops-code", "ops-math"]
    words, heavy = _complete(f"spectral-surgery why --data-dir {data} ops-")
    assert words == ["ops-code", "ops-math"] and heavy == []
    words, _ = _complete("spectral-surgery history o", env={"SPECTRAL_SURGERY_HOME": str(data)})
    assert words == ["ops-code", "ops-math"]
    words, _ = _complete(f"spectral-surgery --data-dir {data} export out --adapter c")
    assert words == ["chat"]
    assert adapter_names(tmp_path / "nowhere") == []  # no registry: nothing, never an error in the shell


def test_families_complete_without_the_model_stack():
    words, heavy = _complete("spectral-surgery register x --family c")
    assert words == ["code", "commonsense"] and heavy == []


def test_policies_complete_from_the_policy_registry_then_its_cache(tmp_path):
    from spectral_surgery.tasks.surgery.policies import list_policies
    from spectral_surgery.tasks.surgery.policy_registry import ROLES

    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    first, _ = _complete("spectral-surgery run --policy smooth", env=env)
    assert first == [n for n in list_policies(ROLES) if n.startswith("smooth")] and first
    assert len(list((tmp_path / "cache" / "spectral-surgery").glob("policies-*.txt"))) == 1
    again, heavy = _complete("spectral-surgery run --policy ", env=env)
    assert again == ["all", *list_policies(ROLES)] and heavy == []  # from the cache: no torch
    assert policy_names(tmp_path / "cache" / "spectral-surgery") == list_policies(ROLES)
