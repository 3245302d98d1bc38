"""spectral_surgery.registry.read.fleet_listing (``spectral-surgery list``): a fixed number of queries whatever the
fleet's size."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from spectral_surgery.registry.read import fleet_listing
from tests import fleet_rows, tiny


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("listing")
    return tiny.save_adapter(tiny.save_base(root / "base"), root / "artifact", seed=1)


def _statements(engine, fn):
    """``fn()``'s result and the number of SQL statements it sent."""
    seen = []
    listener = lambda *args: seen.append(args[2])  # noqa: E731  (conn, cursor, statement, ...)
    event.listen(engine, "before_cursor_execute", listener)
    try:
        return fn(), len(seen)
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def test_listing_costs_the_same_queries_at_10_and_100_adapters(registry, artifact):
    fleet_rows.populate_bulk(registry, 10, artifact)
    small, at_10 = _statements(registry.engine, lambda: fleet_listing(registry))
    fleet_rows.populate_bulk(registry, 90, artifact, start=10)
    large, at_100 = _statements(registry.engine, lambda: fleet_listing(registry))
    assert len(small) == 10 and len(large) == 100
    assert at_100 == at_10 <= 6  # flat: no query per adapter
    served = {r.adapter.name: r for r in large}
    assert served["fleet-00000"].policy == "smooth_abs" and not served["fleet-00000"].production.implicit
    assert served["fleet-00001"].policy is None and served["fleet-00001"].production.implicit
    assert all(r.versions == 1 and r.latest.adapter_id == r.adapter.id for r in large)


def test_listing_agrees_with_the_per_adapter_reads(registry, artifact):
    """What ``list`` printed before (one ``production``, ``list_versions`` per adapter) is what it prints now."""
    fleet_rows.populate(registry, 6, artifact, promote_every=3)
    registry.record_version("fleet-00001", "e" * 64, None, str(artifact))  # a second version, latest now
    for row in fleet_listing(registry):
        versions = registry.list_versions(row.adapter.name)
        assert row.versions == len(versions) and row.latest.id == versions[0].id
        assert row.production == registry.production(row.adapter.name)
        cand = row.production.candidate_id
        assert row.policy == (registry.get_candidate(cand).policy if cand is not None else None)
