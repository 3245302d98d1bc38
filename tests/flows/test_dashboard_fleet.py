"""The dashboard at fleet size (issue 27 §5): a page of 1,000 adapters from a fixed number of SQL statements, a size
that grows linearly with the fleet, intervals inside the metric's range, and, in Chromium at 1,280 px, tables that
page, filter (name, family, verdict) and fit with no clipped column.

The fleets are registry rows written in bulk (:func:`tests.fleet_rows.populate_bulk`: a version, a completed run and
a decision per adapter, every fourth promoted). Nothing here is timed: the seconds are in docs/fleet.md, measured
with ``tests/benchmarks/bench_dashboard.py``.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import event, update

from spectral_surgery.flows.dashboard import render_dashboard
from spectral_surgery.flows.dashboard.data import _test, mean_ci
from spectral_surgery.registry.db import session_scope
from spectral_surgery.registry.models import Adapter
from spectral_surgery.registry.repository import Registry
from spectral_surgery.tasks.decision.fleet_report import _mean_ci
from spectral_surgery.tasks.decision.record import PairedTestRecord
from tests import fleet_rows, tiny
from tests.flows.test_dashboard_browser import browser  # noqa: F401  (the Chromium fixture, skipped without it)

STATEMENT_BUDGET = 32  # SQL statements of a page at any fleet size (28 measured: fingerprint, snapshot, alignment)
FAMILIES = ("math", "code", "commonsense")


@pytest.fixture(scope="module")
def artifact(fleet_base, tmp_path_factory):
    return tiny.save_adapter(fleet_base, tmp_path_factory.mktemp("fleet_page") / "artifact", seed=1)


def _render(reg, path):
    """``(page text, SQL statements sent)`` of one render."""
    seen = []
    listener = lambda *args: seen.append(args[2])  # noqa: E731  (conn, cursor, statement, ...)
    event.listen(reg.engine, "before_cursor_execute", listener)
    try:
        out = render_dashboard(reg, path)
    finally:
        event.remove(reg.engine, "before_cursor_execute", listener)
    return out.read_text(encoding="utf-8"), len(seen)


def _bulk(reg, artifact, n: int, start: int = 0) -> None:
    """``n`` more bulk adapters, in three families (every third ``code``, the next ``commonsense``)."""
    fleet_rows.populate_bulk(reg, n, artifact, start=start)
    with session_scope(reg.engine) as s:
        for k, family in enumerate(FAMILIES[1:], start=1):
            s.execute(update(Adapter).where(Adapter.id > start, Adapter.id % 3 == k).values(task_family=family))


def test_1000_adapter_page_costs_the_same_statements_and_grows_linearly(artifact, tmp_path):
    reg = Registry.open(None, tmp_path / "data")
    try:
        sizes, statements, done = {}, {}, 0
        for n in (10, 100, 1000):
            _bulk(reg, artifact, n - done, start=done)
            done = n
            html, statements[n] = _render(reg, tmp_path / f"page-{n}.html")
            sizes[n] = len(html.encode("utf-8"))
            assert html.count('<details class="adapter"') == n and html.count("<tr data-search=") == n
        assert statements[10] == statements[100] == statements[1000] <= STATEMENT_BUDGET  # no query per adapter
        # Linear: an adapter costs the page the same bytes from 100 to 1,000 adapters as from 10 to 100.
        per_adapter_small = (sizes[100] - sizes[10]) / 90
        per_adapter_large = (sizes[1000] - sizes[100]) / 900
        assert 0.8 <= per_adapter_large / per_adapter_small <= 1.25, (sizes, per_adapter_small, per_adapter_large)
    finally:
        reg.close()


def test_intervals_are_clipped_to_the_metric_range():
    """Scores stay in [0, 100] %, differences of two rates in [−100, +100] points; nats are left alone."""
    wide = PairedTestRecord(delta=0.9, ci_low=0.7, ci_high=1.3, p_value=0.001, n=5)
    assert _test(wide) == {"delta": 0.9, "lo": 0.7, "hi": 1.0, "p": 0.001, "n": 5}
    low = PairedTestRecord(delta=-0.95, ci_low=-1.2, ci_high=-0.7, p_value=0.9, n=5)
    assert _test(low)["lo"] == -1.0 and _test(low)["hi"] == -0.7
    assert _test(wide, None)["hi"] == 1.3  # a continuous metric (nats) has no range to clip to
    ci = mean_ci(0.99, 0.02, 30, 0.95)
    assert ci["hi"] == 1.0 and ci["lo"] == pytest.approx(0.99 - 1.959964 * 0.02)
    across = _mean_ci([95.0, 99.0, -20.0], 0.95)  # what-wins: a Student-t interval of gains in points
    assert -100.0 <= across.lo < across.mean < across.hi <= 100.0 and across.hi == 100.0


def test_1000_adapter_page_pages_filters_and_fits_1280px_in_chromium(browser, artifact, tmp_path):
    """1,000 adapters at 1,280 px: 50 rows at a time, the name filter and the family / verdict drop-downs search
    every row (not only the page shown), an opened section draws its charts, and no table overflows its box."""
    from tests.flows.test_dashboard_browser import OVERFLOW, WIDTH, Watch

    reg = Registry.open(None, tmp_path / "data")
    _bulk(reg, artifact, 1000)
    out = render_dashboard(reg, tmp_path / "fleet1000.html")
    reg.close()
    html = out.read_text(encoding="utf-8")
    verdicts = re.findall(r'<tr data-search="[^"]*" data-family="([^"]+)" data-verdict="([^"]+)"', html)
    code = sum(1 for f, _ in verdicts if f == "code")
    promoted_code = sum(1 for f, v in verdicts if f == "code" and v == "promote")
    w = Watch(browser, width=WIDTH, height=900)
    try:
        page = w.page
        page.goto(out.as_uri(), wait_until="load")
        rows = page.locator("#fleet-table tbody tr")
        info = page.locator("#fleet-table-pager .info")
        assert rows.count() == 1000 and info.inner_text() == "1–50 of 1000"
        page.click("#fleet-table-pager .next")
        assert info.inner_text() == "51–100 of 1000"

        def shown() -> list:
            return page.evaluate("() => Array.from(document.querySelectorAll('#fleet-table tbody tr'))"
                                 ".filter(r => r.style.display !== 'none')"
                                 ".map(r => [r.cells[0].innerText.split(/\\s/)[0], r.dataset.family, "
                                 "r.dataset.verdict])")

        page.select_option("#fleet-family", "code")
        assert info.inner_text() == f"1–50 of {code} (filtered from 1000)" and 300 < code < 400
        assert len(shown()) == 50 and all(f == "code" for _, f, _ in shown())
        page.select_option("#fleet-verdict", "promote")
        assert info.inner_text().endswith(f"of {promoted_code} (filtered from 1000)") and promoted_code > 0
        assert all(f == "code" and v == "promote" for _, f, v in shown())
        page.fill("#fleet-filter", "fleet-0099")  # the name filter combines with the drop-downs
        # fleet-00990 … 00999 are row ids 991 … 1000: code where id % 3 == 1, promoted where (id − 1) % 4 == 0
        assert [n for n, _, _ in shown()] == ["fleet-00996"]
        page.select_option("#fleet-verdict", "")
        page.select_option("#fleet-family", "")
        page.fill("#fleet-filter", "")
        assert info.inner_text() == "1–50 of 1000"
        page.locator("#adapter-fleet-00000 > summary").click()
        page.wait_for_selector("#adapter-fleet-00000[open] .lazy[data-state=ready]", timeout=15000)
        assert page.locator("#adapter-fleet-00000 script.js-chart").count() == 0  # every placeholder drawn
        assert "Runs and candidates" in page.locator("#adapter-fleet-00000").inner_text()
        assert page.evaluate(OVERFLOW) == []
        w.shot("bulk1000-1280-filtered")
        assert w.errors == [], w.errors
        assert w.external() == [], w.external()
    finally:
        w.close()
