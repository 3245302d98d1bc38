"""The dashboard's review window (``promote: review``): an "awaiting review" badge for a passing decision whose
review is pending, the review's state on the adapter page, the fleet's count, and a fingerprint that moves with a
review. Reviews are made through the Registry API on a tiny registry; the clock is a parameter (``now=``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest

from spectral_surgery.flows.dashboard import adapter_markdown, build_page, collect
from spectral_surgery.registry.read import registry_fingerprint
from spectral_surgery.tasks.adapter_io import adapter_content_sha256
from tests.flows.dashboard_support import unpack_sections
from tests.records import statistics

T0 = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(hours=24)


def passing_decision(env, name: str, artifact, key: str):
    """A decision of ``name``'s version whose gate passed ``smooth_abs`` (nothing moved yet)."""
    v = env.versions[name]
    cand = env.reg.add_candidate(v.id, key * 8, "smooth_abs", 0, artifact_uri=str(artifact),
                                 artifact_sha256=adapter_content_sha256(artifact))
    return env.reg.record_decision(v.id, key * 8, run_id=None, promoted_candidate_id=cand.id, candidate_key=key * 8,
                                   statistics=statistics(verdict="promote", promoted="smooth_abs",
                                                          means={"baseline": 0.4, "smooth_abs": 0.5}),
                                   sentence="promoted smooth_abs: +10 pts")


@pytest.fixture
def reviewed(reg_env):
    """ad1's latest decision passed the gate and waits for review (requested at T0)."""
    d = passing_decision(reg_env, "ad1", reg_env.edited[1], "r1")
    review = reg_env.reg.request_review(d, window=DAY, actor="nightly", now=T0).review
    return reg_env, d, review


def section(html: str, name: str) -> str:
    """The adapter's section as a reader sees it opened: its summary and header, and its unpacked body."""
    m = re.search(rf'<details class="adapter" id="adapter-{name}">.*?</details>', html, re.DOTALL)
    assert m, name
    return unescape(m.group(0) + unpack_sections(html)[f"adapter-{name}"])


def fleet_cell(html: str, name: str) -> str:
    row = re.search(rf'<tr data-search="[^"]*"[^>]*><td><a href="#adapter-{name}">.*?</tr>', html, re.DOTALL)
    assert row, name
    return row.group(0)


def test_a_pending_review_is_an_amber_badge_not_a_promotion(reviewed, tmp_path):
    env, d, review = reviewed
    html, data, _ = build_page(env.reg, cache_dir=tmp_path, now=T0 + timedelta(hours=1))
    ad1 = {a["name"]: a for a in data["adapters"]}["ad1"]
    assert ad1["review"]["id"] == review.id and ad1["review"]["state"] == "pending"
    assert ad1["review"]["candidate"] == "smooth_abs" and ad1["review"]["requested_by"] == "nightly"
    assert ad1["last_decision"]["review"]["id"] == review.id
    assert ad1["last_decision"]["label"] == "promote smooth_abs awaiting review"
    assert ad1["production"]["candidate_id"] is None  # production did not move
    assert data["summary"]["awaiting_review"] == 1

    cell = fleet_cell(html, "ad1")
    assert '<span class="badge b-warn"' in cell and "awaiting review: smooth_abs" in cell
    assert f"review {review.id}" in cell and "promoted smooth_abs</span>" not in cell
    assert 'data-verdict="review"' in cell  # the fleet table's verdict filter: "awaiting review", not "promoted"
    assert "awaiting review: " not in fleet_cell(html, "ad0")  # ad0's gate promotion stays green
    assert '<span class="badge b-ok">promoted' in fleet_cell(html, "ad0")
    assert re.search(r"<b>1</b><span>awaiting review</span>", html)

    body = section(html, "ad1")
    assert f"Review {review.id}</b> of decision {d.id} (smooth_abs)" in body
    assert "requested by nightly" in body and "production has not moved" in body
    assert f"spectral-surgery approve {review.id} --reason" in body
    assert "**promote smooth_abs awaiting review**" in adapter_markdown(ad1)


def test_an_overdue_review_shows_expired_before_the_registry_marks_it(reviewed, tmp_path):
    env, _, review = reviewed
    html, data, _ = build_page(env.reg, cache_dir=tmp_path, now=T0 + 2 * DAY)
    ad1 = {a["name"]: a for a in data["adapters"]}["ad1"]
    assert (ad1["review"]["state"], ad1["review"]["marked"]) == ("expired", False)
    assert data["summary"]["awaiting_review"] == 0
    cell = fleet_cell(html, "ad1")
    assert "passed smooth_abs, review expired" in cell and "b-warn" not in cell
    body = section(html, "ad1")
    assert "(marked at the next run)" in body and "production did not move" in body

    before = registry_fingerprint(env.reg)
    assert [r.id for r in env.reg.expire_reviews(T0 + 2 * DAY)] == [review.id]
    assert registry_fingerprint(env.reg) != before  # a live dashboard re-renders on a review's change
    data = collect(env.reg, now=T0 + 2 * DAY)
    ad1 = {a["name"]: a for a in data["adapters"]}["ad1"]
    assert ad1["review"] is None  # no longer pending
    assert (ad1["last_decision"]["review"]["state"], ad1["last_decision"]["review"]["marked"]) == ("expired", True)
    assert "not approved within the window" in ad1["last_decision"]["review"]["reason"]


def test_an_approved_review_is_a_promotion_with_who_approved_it(reviewed, tmp_path):
    env, _, review = reviewed
    env.reg.approve(review.id, "alice", "samples checked", now=T0 + timedelta(hours=2))
    html, data, _ = build_page(env.reg, cache_dir=tmp_path, now=T0 + timedelta(hours=3))
    ad1 = {a["name"]: a for a in data["adapters"]}["ad1"]
    assert ad1["review"] is None and ad1["last_decision"]["review"]["state"] == "approved"
    assert ad1["last_decision"]["label"] == "promote smooth_abs"
    assert ad1["production"]["candidate_id"] is not None and data["summary"]["awaiting_review"] == 0
    assert '<span class="badge b-ok">promoted smooth_abs</span>' in fleet_cell(html, "ad1")
    body = section(html, "ad1")
    assert "approved</span> by alice" in body and "samples checked" in body


def test_a_superseded_review_names_its_successor(reviewed, tmp_path):
    env, _, first = reviewed
    d2 = passing_decision(env, "ad1", env.edited[0], "r2")
    second = env.reg.request_review(d2, window=DAY, now=T0 + timedelta(hours=1)).review
    data = collect(env.reg, now=T0 + timedelta(hours=2))
    ad1 = {a["name"]: a for a in data["adapters"]}["ad1"]
    assert ad1["review"]["id"] == second.id and ad1["last_decision"]["review"]["id"] == second.id
    html, _, _ = build_page(env.reg, cache_dir=tmp_path, now=T0 + timedelta(hours=2))
    assert f"review {second.id}" in fleet_cell(html, "ad1")
    assert env.reg.get_review(first.id).state == "superseded"


def test_a_review_superseded_by_a_newer_promotion_says_why_on_the_adapter_page(reviewed, tmp_path):
    """The gate promoting a newer version supersedes the pending review of the older one; the page says so."""
    env, d, review = reviewed
    v2, _ = env.reg.record_version("ad1", "f" * 64, None, None)
    art = env.edited[1]
    cand = env.reg.add_candidate(v2.id, "n2" * 32, "smooth_abs", 0, artifact_uri=str(art),
                                 artifact_sha256=adapter_content_sha256(art))
    newer = env.reg.record_decision(v2.id, "n2" * 32, run_id=None, promoted_candidate_id=cand.id,
                                    candidate_key="n2" * 32,
                                    statistics=statistics(verdict="promote", promoted="smooth_abs"),
                                    sentence="promoted smooth_abs on the retrained version")
    event = env.reg.promote(newer)
    html, data, _ = build_page(env.reg, cache_dir=tmp_path, now=T0 + timedelta(hours=1))
    ad1 = {a["name"]: a for a in data["adapters"]}["ad1"]
    (old,) = ad1["superseded_reviews"]
    assert old["id"] == review.id and f"promotion event {event.id}" in old["reason"]
    body = section(html, "ad1")
    assert f"superseded by promotion event {event.id}" in body and "it can no longer be approved" in body
