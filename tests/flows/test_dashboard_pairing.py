"""The dashboard's Δ-vs-unedited cell: the pairing as its tooltip, a continuous decision's difference in nats."""

from __future__ import annotations

from spectral_surgery.flows.dashboard.adapter_html import _vs_unedited


def test_vs_unedited_cell_carries_the_pairing_and_the_unit():
    row = {"vs_baseline": {"delta": 0.031, "lo": -0.005, "hi": 0.067, "p": 0.04, "n": 400},
           "pairing": "φ 0.73, n_eff 1,498"}
    task = _vs_unedited(row, "task")
    assert 'title="pairing vs unedited: φ 0.73, n_eff 1,498"' in task and "+3.1" in task and "nats" not in task
    cont = _vs_unedited({**row, "vs_baseline": {"delta": 0.25, "lo": 0.1, "hi": 0.4, "p": 0.001, "n": 400}},
                        "continuous")
    assert "+0.250 nats" in cont and "[+0.100, +0.400]" in cont
    assert "title" not in _vs_unedited({"vs_baseline": None, "pairing": None}, "task")  # old decisions: no pairing
