"""The budget benchmark's pure parts (tests/benchmarks/bench_budget.py): evidence inversion, cost model, forecast."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_surgery.tasks.decision.power import gate_sample_size
from spectral_surgery.tasks.decision.stats import mcnemar_exact
from tests.benchmarks.bench_budget import (EVIDENCE, AdapterCost, StageCost, cost_model, discordant_count,
                                           evidence_psi, fit_stage, fitting_docs, forecast, visit_seconds)  # fmt: skip

N = 200


def printed(n11: int, n10: int, n01: int, n00: int) -> tuple[float, ...]:
    """A comparison as the evidence table prints it: means in %, interval in pts (1 decimal each), p (3 digits)."""
    a = np.array([1] * n11 + [1] * n10 + [0] * n01 + [0] * n00)
    b = np.array([1] * n11 + [0] * n10 + [1] * n01 + [0] * n00)
    t = mcnemar_exact(a, b, "greater", 0.95)
    return (round(100 * t.mean_a, 1), round(100 * t.mean_b, 1), round(100 * t.ci_low, 1), round(100 * t.ci_high, 1),
            float(f"{t.p_value:.3g}"))


@pytest.mark.parametrize(("n11", "n10", "n01"), [(70, 11, 4), (74, 0, 2), (50, 27, 32), (40, 4, 3), (60, 40, 19)])
def test_discordant_count_recovers_the_table_from_its_printed_test(n11, n10, n01):
    assert discordant_count(N, *printed(n11, n10, n01, N - n11 - n10 - n01)) == n10 + n01


def test_evidence_psi_reproduces_the_gates_recorded_documents_needed():
    """docs/demo.md: demo-commonsense's global_scalar was held "needs ~1,780 docs" (min_effect 2 pts, Holm over 4,
    power 0.8): the ψ recovered from its printed comparison gives back the gate's own number."""
    psi = evidence_psi()[("demo-commonsense", "global_scalar")]
    assert psi["baseline"] == pytest.approx(15 / N)
    assert gate_sample_size(0.02, list(psi.values()), 0.05, 0.8, m=4) == 1780
    assert len(evidence_psi()) == len({(a, c) for a, c, *_ in EVIDENCE})


def test_fit_stage_splits_fixed_and_per_document_seconds():
    assert fit_stage([(10, 25.0), (30, 65.0)], "ss_mc") == StageCost("ss_mc", 5.0, 2.0)
    assert fit_stage([(10, 25.0)], "ss_mc") == StageCost("ss_mc", 0.0, 2.5)  # one size: all of it per document
    # later documents dearer than the first (a negative intercept): the mean over all of them
    assert fit_stage([(2, 8.0), (5, 50.0)], "ss_ifeval") == StageCost("ss_ifeval", 0.0, 10.0)


def test_forecast_adds_every_adapters_stages_at_the_budgets_documents():
    costs = [AdapterCost("a", "commonsense", 100.0, StageCost("ss_mc", 5.0, 1.0), StageCost("ss_ifeval", 2.0, 3.0)),
             AdapterCost("b", "math", 50.0, StageCost("ss_arith", 0.0, 4.0), None)]
    f = forecast(costs, task_limit=60, task_limits={"ss_mc": 400}, guard_limit=30)
    assert f == {"a": 100 + 5 + 400 + 2 + 90, "b": 50 + 240, "total": 597 + 290}


def test_cost_model_builds_the_default_night_from_per_document_measurements():
    perdoc = {"rows": [{"benchmark": b, "arms": k, "docs": n, "cpu_seconds": s} for b, k, n, s in (
        ("ss_mc", 10, 10, 20.0), ("ss_mc", 10, 40, 50.0), ("ss_arith", 10, 2, 14.0), ("ss_arith", 10, 5, 26.0),
        ("ss_ifeval", 10, 2, 12.0), ("ss_ifeval", 10, 5, 27.0), ("ss_ifeval", 3, 2, 5.0), ("ss_ifeval", 3, 5, 11.0))]}
    costs = {a.name: a for a in cost_model(perdoc, n_calib=128)}
    assert costs["demo-commonsense"].task == StageCost("ss_mc", 10.0, 1.0)
    assert costs["demo-math-untrained"].task == StageCost("ss_arith", 6.0, 4.0)
    assert costs["demo-math-untrained"].guard is None  # rejected on task evidence: no guard arms
    assert costs["demo-math"].guard == StageCost("ss_ifeval", 1.0, 2.0)  # 3 guard arms, measured at 3
    assert costs["demo-instruction"].guard is None  # its suite is the guard's
    assert costs["demo-math"].other == pytest.approx(visit_seconds(128)) and visit_seconds(32) < visit_seconds(128)
    # ss_mc gets what the rest of the night leaves: its two adapters at 1 s per document each
    rest = forecast(list(costs.values()), 60, {"ss_mc": 0}, 30)["total"]
    assert fitting_docs(list(costs.values()), 60, {}, 30, "ss_mc", rest + 500) == 250
