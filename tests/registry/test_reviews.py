"""Review windows (registry/reviews.py) on SQLite and PostgreSQL: request, approve, expire, supersede, refusals.

The clock is a parameter (``now=``): expiry is tested by passing a later time, never by sleeping.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from spectral_surgery.registry.promotion import BackwardsError
from spectral_surgery.registry.validation import NotFoundError, RegistryError
from tests.records import statistics
from tests.registry.artifacts import artifact

T0 = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def _sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


def _decision(registry, version, tag: str, *, promoted: bool = True):
    ckey = _sha("cands-" + tag)[:64]
    path, digest = artifact(f"reviews/{tag}")
    cand = registry.add_candidate(version.id, ckey, "smooth_abs", 42, artifact_uri=path, artifact_sha256=digest)
    return registry.record_decision(version.id, _sha("decision-" + tag), run_id=None, candidate_key=ckey,
                                    promoted_candidate_id=cand.id if promoted else None,
                                    statistics=statistics(promoted="smooth_abs" if promoted else None),
                                    sentence=f"promoted smooth_abs ({tag})" if promoted else "no candidate promoted")


@pytest.fixture
def rows(registry):
    path, digest = artifact("reviews/v1")
    ad = registry.register_adapter("gsm-lora", path, "acme/base", "math")
    v1, _ = registry.record_version(ad, digest, None, path)
    return SimpleNamespace(ad=ad, v1=v1, d1=_decision(registry, v1, "d1"), d2=_decision(registry, v1, "d2"))


def test_a_review_waits_and_its_approval_moves_production_audited(registry, rows):
    req = registry.request_review(rows.d1, window=DAY, actor="nightly", now=T0)
    assert req.created and req.superseded == [] and req.expired == []
    r = req.review
    assert (r.state, r.requested_by, r.requested_at, r.expires_at) == ("pending", "nightly", T0, T0 + DAY)
    assert registry.production("gsm-lora").implicit  # nothing moved
    assert registry.request_review(rows.d1, window=DAY, now=T0 + timedelta(hours=1)).created is False  # idempotent

    event, approved = registry.approve(r.id, "alice", "checked the samples", now=T0 + timedelta(hours=3))
    assert (event.kind, event.actor, event.reason, event.decision_id) == ("approval", "alice", "checked the samples",
                                                                          rows.d1.id)
    assert event.evidence_json["review_id"] == r.id and event.evidence_json["statistics"]["promoted"] == "smooth_abs"
    assert (approved.state, approved.decided_by, approved.promotion_event_id) == ("approved", "alice", event.id)
    assert approved.decided_at == T0 + timedelta(hours=3)
    assert registry.production("gsm-lora").candidate_id == rows.d1.promoted_candidate_id
    assert [e.kind for e in registry.history("gsm-lora")] == ["approval"]

    with pytest.raises(RegistryError, match="already approved by alice"):
        registry.approve(r.id, "bob", "again", now=T0 + timedelta(hours=4))
    # the gate promoting the same decision afterwards finds the approval: a decision moves production once
    again, created = registry.promote_decision(rows.d1)
    assert (again.id, again.kind, created) == (event.id, "approval", False)
    assert len(registry.history("gsm-lora")) == 1
    rolled = registry.rollback("gsm-lora", "carol", "regression")  # an approval is undone like any move
    assert rolled.reverts_event_id == event.id and registry.production("gsm-lora").candidate_id is None


def test_an_unapproved_review_expires_recorded_and_is_then_refused(registry, rows):
    r = registry.request_review(rows.d1, window=DAY, now=T0).review
    assert registry.expire_reviews(now=T0 + DAY - timedelta(seconds=1)) == []
    (gone,) = registry.expire_reviews(now=T0 + DAY)
    assert (gone.id, gone.state, gone.decided_by, gone.decided_at) == (r.id, "expired", "expiry", T0 + DAY)
    assert "not approved within the window" in gone.reason
    assert registry.expire_reviews(now=T0 + 2 * DAY) == []  # recorded once
    with pytest.raises(RegistryError, match=rf"review {r.id} is expired .*can no longer be approved"):
        registry.approve(r.id, "alice", "too late", now=T0 + 2 * DAY)
    assert registry.history("gsm-lora") == [] and registry.production("gsm-lora").implicit


def test_approving_marks_a_lapsed_review_expired_first(registry, rows):
    r = registry.request_review(rows.d1, window=timedelta(hours=1), now=T0).review
    with pytest.raises(RegistryError, match="is expired"):
        registry.approve(r.id, "alice", "late", now=T0 + timedelta(hours=2))
    assert registry.get_review(r.id).state == "expired"  # the expiry is recorded though the approval failed


def test_a_newer_review_supersedes_the_pending_one(registry, rows):
    old = registry.request_review(rows.d1, window=DAY, now=T0).review
    req = registry.request_review(rows.d2, window=DAY, actor="nightly", now=T0 + timedelta(hours=1))
    assert [r.id for r in req.superseded] == [old.id]
    old = registry.get_review(old.id)
    assert (old.state, old.superseded_by_id, old.decided_at) == ("superseded", req.review.id, T0 + timedelta(hours=1))
    with pytest.raises(RegistryError, match=rf"review {old.id} is superseded.*approve the newer review"):
        registry.approve(old.id, "alice", "ok", now=T0 + timedelta(hours=2))
    assert [r.state for r in registry.list_reviews(adapter="gsm-lora")] == ["pending", "superseded"]
    assert [r.id for r in registry.list_reviews(state="pending")] == [req.review.id]
    assert registry.list_reviews(state="pending")[0].adapter.name == "gsm-lora"


def test_refusals_name_what_is_wrong(registry, rows):
    with pytest.raises(NotFoundError, match="no review with id 999"):
        registry.approve(999, "alice", "x", now=T0)
    held = _decision(registry, rows.v1, "held", promoted=False)
    with pytest.raises(RegistryError, match="nothing to review"):
        registry.request_review(held, window=DAY, now=T0)
    with pytest.raises(RegistryError, match="window must be positive"):
        registry.request_review(rows.d1, window=timedelta(0), now=T0)
    with pytest.raises(RegistryError, match="naive"):
        registry.expire_reviews(now=datetime(2026, 12, 4))
    with pytest.raises(RegistryError, match="state must be one of"):
        registry.list_reviews(state="open")
    r = registry.request_review(rows.d1, window=DAY, now=T0).review
    with pytest.raises(RegistryError, match="reason must be a non-empty string"):
        registry.approve(r.id, "alice", " ", now=T0)
    registry.promote(rows.d2)
    with pytest.raises(RegistryError, match="already in production"):
        registry.request_review(rows.d2, window=DAY, now=T0)


def _newer_version(registry, tag: str):
    path, digest = artifact(f"reviews/{tag}")
    return registry.record_version("gsm-lora", digest, None, path)[0]


@pytest.mark.parametrize("how", ["gate", "manual"])
def test_a_promotion_of_a_newer_version_supersedes_older_pending_reviews(registry, rows, how):
    stale = registry.request_review(rows.d1, window=DAY, now=T0).review
    v2 = _newer_version(registry, "v2")
    d3 = _decision(registry, v2, "d3")
    if how == "gate":
        event = registry.promote(d3, actor="nightly")
    elif how == "manual":
        event = registry.manual_promote(d3.promoted_candidate_id, "bob", "hotfix")
    else:
        fresh = registry.request_review(d3, window=DAY, now=T0 + timedelta(hours=1))
        assert fresh.superseded == []  # requesting does not supersede here: v1's review was requested earlier
        event, _ = registry.approve(fresh.review.id, "bob", "checked", now=T0 + timedelta(hours=2))
    stale = registry.get_review(stale.id)
    assert stale.state == "superseded" and stale.decided_by == event.actor
    assert f"event {event.id}" in stale.reason and "newer than this review's v" in stale.reason
    with pytest.raises(RegistryError, match=rf"review {stale.id} is superseded .*production moved to v{v2.id}"):
        registry.approve(stale.id, "alice", "ok", now=T0 + timedelta(hours=3))
    assert registry.production("gsm-lora").adapter_version_id == v2.id


def test_approving_a_review_older_than_production_refuses_without_force(registry, rows):
    stale = registry.request_review(rows.d1, window=DAY, now=T0).review
    v2 = _newer_version(registry, "v2b")  # production implicitly serves the latest version, unedited
    with pytest.raises(BackwardsError, match=rf"review {stale.id}: this approval would replace production's "
                                             rf"v{v2.id} unedited with v{rows.v1.id} smooth_abs .*older version.*"
                                             "--force"):
        registry.approve(stale.id, "alice", "ok", now=T0 + timedelta(hours=1))
    assert registry.get_review(stale.id).state == "pending" and registry.history("gsm-lora") == []
    with pytest.raises(BackwardsError, match="manual override would replace"):
        registry.manual_promote(None, "bob", "x", adapter_version_id=rows.v1.id)
    event, done = registry.approve(stale.id, "alice", "on purpose", now=T0 + timedelta(hours=1), force=True)
    assert done.state == "approved" and "backwards" in event.evidence_json["warning"]
    assert registry.production("gsm-lora").adapter_version_id == rows.v1.id
    registry.rollback("gsm-lora", "carol", "undo")  # a rollback may always go back


SEQUENCES, STEPS = 40, 14


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_production_never_moves_backwards_without_force_or_rollback(registry):
    """Random interleavings of new versions, decisions, review requests, gate and manual promotions, approvals
    (forced or not), expiries and rollbacks on one adapter: production's version never decreases except by a
    forced move or a rollback. A seeded generator (hypothesis is not installed in the project's environment)."""
    import random

    from spectral_surgery.registry.promotion import BackwardsError

    rng = random.Random(20261207)
    for seq in range(SEQUENCES):
        name = f"prop-{seq}"
        path, digest = artifact(f"prop/{seq}/v0")
        registry.register_adapter(name, path, "acme/base", "math")
        versions, decisions, reviews = [registry.record_version(name, digest, None, path)[0]], [], []
        now = T0
        for step in range(STEPS):
            before = registry.production(name).adapter_version_id
            action, force, moved_back_ok = rng.choice(["version", "decide", "decide", "review", "review", "gate",
                                                       "manual", "approve", "approve", "rollback", "wait"]), \
                rng.random() < 0.2, False
            now += timedelta(hours=rng.choice([1, 5]))
            try:
                if action == "version" and len(versions) < 4:
                    p, dg = artifact(f"prop/{seq}/v{len(versions)}")
                    versions.append(registry.record_version(name, dg, None, p)[0])
                elif action == "decide":
                    v = rng.choice(versions)
                    decisions.append(_decision(registry, v, f"prop-{seq}-{step}"))
                elif action == "review" and decisions:
                    reviews.append(registry.request_review(rng.choice(decisions), window=DAY, now=now).review)
                elif action == "gate" and decisions:
                    registry.promote(rng.choice(decisions))
                elif action == "manual" and decisions:
                    d = rng.choice(decisions)
                    registry.manual_promote(d.promoted_candidate_id, "bob", "by hand", force=force)
                    moved_back_ok = force
                elif action == "approve" and reviews:
                    registry.approve(rng.choice(reviews).id, "alice", "looks good", now=now, force=force)
                    moved_back_ok = force
                elif action == "rollback":
                    registry.rollback(name, "carol", "undo")
                    moved_back_ok = True
            except BackwardsError:
                assert registry.production(name).adapter_version_id == before  # refused: nothing moved
            except RegistryError:
                pass  # a refusal for another reason (expired, superseded, nothing to roll back, ...)
            after = registry.production(name).adapter_version_id
            assert after >= before or moved_back_ok, (seq, step, action, before, after)
