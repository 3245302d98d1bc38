"""The demo arm builder of the evaluation benchmark (tests/benchmarks/demo_arms.py) on a tiny random base.

It trains a demo adapter with the demo's own trainer (2 steps), calibrates on the demo's calibration file and writes
a decision's candidates with the product's write path: the subjects are the baseline and the planned arms of the run
config, each written candidate's ΔW differs from the baseline's exactly in the modules whose σ the edit changed, and a
re-run writes nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from spectral_surgery.tasks.adapter_io import MANIFEST_NAME, load_adapter
from spectral_surgery.tasks.decision.arms import BASELINE, plan_arms
from spectral_surgery.tasks.demo.demo_fleet import DEMO_FLEET
from tests.benchmarks.demo_arms import demo_adapter_for, demo_decision_arms
from tests.tiny import save_base

ADAPTER = "commonsense"
STEPS = 2
N_TRAIN = 16


def delta_w(path: Path) -> dict[str, torch.Tensor]:
    """Module name -> its update ``scaling · B A`` (fp32) of the adapter in ``path``."""
    a = load_adapter(path)
    return {n: m.scaling * a.tensors[m.key_B].float() @ a.tensors[m.key_A].float() for n, m in a.modules.items()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spectral_surgery.flows.demo import BUDGETS, demo_config

    tmp = tmp_path_factory.mktemp("demo_arms")
    base = save_base(tmp / "base")
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    tok = AutoTokenizer.from_pretrained(base)
    # the tiny tokenizer is character-level: room for a whole multiple-choice prompt and its answer
    fleet = tuple(replace(s, max_len=192) if s.name == ADAPTER else s for s in DEMO_FLEET)
    config = demo_config(tmp, BUDGETS["smallest"])

    def build():
        return demo_decision_arms(base, str(base), tmp / "work", ADAPTER, config, model=model, tokenizer=tok,
                                  steps=STEPS, n_train=N_TRAIN, fleet=fleet)

    return config, build(), build


def test_subjects_are_the_baseline_and_the_planned_arms(built):
    config, arms, _ = built
    planned = plan_arms(config, config.surgery)
    assert list(arms.subjects) == [BASELINE] + [a.name for a in planned]
    assert {a.role for a in planned} >= {"policy", "random_control", "scalar_control", "canary", "bare_base"}
    assert arms.subjects["bare_base"] is None
    assert all(p is not None and p.is_dir() for n, p in arms.subjects.items() if n != "bare_base")
    assert arms.steps == STEPS and arms.written == len(planned) - 1  # all but the bare base
    assert arms.gamma is not None and arms.n_holdout > 0 and not arms.skipped


def test_candidates_differ_from_the_baseline_where_the_edit_changed_sigma(built):
    _, arms, _ = built
    base = delta_w(arms.subjects[BASELINE])
    edited_any = set()
    for name, path in arms.subjects.items():
        if path is None or name == BASELINE:
            continue
        manifest = json.loads((path / MANIFEST_NAME).read_text())
        cand = delta_w(path)
        for module, m in manifest["modules"].items():
            changed = not torch.allclose(torch.tensor(m["sigma_after"]), torch.tensor(m["sigma_before"]), atol=1e-7)
            moved = not torch.allclose(cand[module], base[module], rtol=1e-4, atol=1e-6)
            assert moved == changed, (name, module)
            if changed:
                edited_any.add(name)
    # the canary leaves σ alone, every policy and random control changes some module, the scalar unless γ = 1
    edits = {n for n, r in arms.roles.items() if r in ("policy", "random_control")}
    assert edited_any == edits | ({"global_scalar"} if arms.gamma != 1.0 else set())


def test_a_rerun_reuses_the_adapter_and_every_candidate(built):
    _, first, build = built
    again = build()
    assert again.written == 0 and again.subjects == first.subjects and again.gamma == first.gamma


def test_each_benchmark_gets_the_demo_adapter_of_its_family():
    assert demo_adapter_for("ss_mc") == "commonsense"
    assert demo_adapter_for("ss_arith") == "math"
    with pytest.raises(ValueError, match="no trained demo adapter"):
        demo_adapter_for("ss_code")
