"""The dashboard's Δ-vs-unedited cell: the pairing as its tooltip, a continuous decision's difference in nats.

The runs table is drawn by the page's script (``SSViews.runs``, :mod:`flows.dashboard.views_js`), so the cell is
checked in Chromium (skipped where it is missing, as the other browser tests).
"""

from __future__ import annotations

from spectral_surgery.flows.dashboard.views_js import VIEWS_JS
from tests.flows.test_dashboard_browser import browser  # noqa: F401  (the Chromium fixture)


def _runs(page, rows: list[dict], metric: str) -> str:
    night = {"at": "2026-01-01 02:00 UTC", "run_id": 1, "version_sha": "abcd1234", "config_hash": "c0ffee00",
             "bench": "", "promoted": False, "sentence": "held", "metric": metric, "rows": rows}
    return page.evaluate("s => SSViews.runs(s)", {"nights": [night]})


def test_vs_unedited_cell_carries_the_pairing_and_the_unit(browser):  # noqa: F811
    page = browser.new_page()
    try:
        page.set_content(f"<script>{VIEWS_JS}</script>")
        row = {"arm": "smooth_abs", "role": "candidate", "color": "#0072B2", "pairing": "φ 0.73, n_eff 1,498",
               "vs_baseline": {"delta": 0.031, "lo": -0.005, "hi": 0.067, "p": 0.04, "n": 400}}
        task = _runs(page, [row], "task")
        assert 'title="pairing vs unedited: φ 0.73, n_eff 1,498"' in task and "+3.1" in task and "nats" not in task
        assert "[−0.5, +6.7] p=0.04" in task
        cont = _runs(page, [{**row, "vs_baseline": {"delta": 0.25, "lo": 0.1, "hi": 0.4, "p": 0.001, "n": 400}}],
                     "continuous")
        assert "+0.250 nats" in cont and "[+0.100, +0.400]" in cont
        old = _runs(page, [{"arm": "smooth_abs", "role": "candidate", "color": "#0072B2"}], "task")
        assert "pairing vs unedited" not in old  # old decisions: no pairing, no tooltip
    finally:
        page.close()
