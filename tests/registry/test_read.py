"""registry/read.py: the read API the dashboard uses (one read transaction; a fingerprint that follows changes)."""

from __future__ import annotations

from spectral_surgery.registry.read import dashboard_rows, registry_fingerprint

KEYS = {"adapters", "versions", "adapter_runs", "failure_messages", "decisions", "candidates", "records",
        "extra_candidates", "spectra", "evaluations", "events", "pointers", "runs", "reviews", "costs",
        "decision_candidates"}


def test_rows_of_an_empty_and_a_registered_fleet(registry):
    empty = dashboard_rows(registry, history=30, detail_runs=5)
    assert set(empty) == KEYS and all(not v for v in empty.values())
    registry.register_adapter("ad-b", "hf://acme/ad-b@main", "base", "math")
    registry.register_adapter("ad-a", "hf://acme/ad-a@main", "base", "code", enabled=False)
    rows = dashboard_rows(registry, history=30, detail_runs=5)
    assert [(a.name, a.task_family, a.enabled) for a in rows["adapters"]] == [("ad-a", "code", False),
                                                                              ("ad-b", "math", True)]
    only = dashboard_rows(registry, history=30, detail_runs=5, only="ad-b")
    assert [a.name for a in only["adapters"]] == ["ad-b"]


def test_fingerprint_changes_with_what_the_dashboard_shows(registry):
    first = registry_fingerprint(registry)
    assert registry_fingerprint(registry) == first  # stable while nothing changes
    registry.register_adapter("ad", "hf://acme/ad@main", "base", "math")
    second = registry_fingerprint(registry)
    assert second != first
    registry.register_adapter("ad", "hf://acme/ad@main", "base", "math", enabled=False)  # a disabled adapter shows
    assert registry_fingerprint(registry) != second
