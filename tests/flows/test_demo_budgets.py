"""The demo's budget presets (flows/demo.py): what each one configures, without running it."""

from pathlib import Path

from spectral_surgery.flows.demo import BUDGETS, demo_config
from spectral_surgery.tasks.config import GlobalScalarConfig, SurgeryConfig


def test_default_budgets_keep_the_default_surgery_so_their_keys_do_not_move():
    """Budgets that calibrate on the default number of held-out examples configure exactly the default surgery but
    for the sensitivity pass's size: the candidates' keys of a default night are those of ``SurgeryConfig()``."""
    for name in ("small", "default", "large"):
        surgery = demo_config(Path("/nonexistent"), BUDGETS[name]).surgery
        assert surgery == SurgeryConfig(calib=surgery.calib), name
        assert surgery.global_scalar == GlobalScalarConfig()


def test_smallest_budget_chooses_gamma_on_as_many_examples_as_it_calibrates_on():
    """The smallest budget (the CI smoke test) calibrates on 4 examples; its γ search runs 8 forward passes over
    the held-out examples, so it holds out 4 too instead of the default 32 (most of a small adapter's visit)."""
    budget = BUDGETS["smallest"]
    surgery = demo_config(Path("/nonexistent"), budget).surgery
    assert surgery.calib.n_samples == budget.n_calib == 4
    assert surgery.global_scalar.holdout == budget.gamma_holdout == 4
    assert surgery.global_scalar.grid == GlobalScalarConfig().grid
