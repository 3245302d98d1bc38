"""``approve`` and ``reviews`` on the command line when production has moved past a review: a stale approval is
refused with what it would replace (exit 2, one ``error:`` line with the fix), ``--force`` serves it anyway, and
``reviews --all`` says why a review was superseded."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from spectral_surgery.registry.repository import Registry
from tests.flows.cli_support import assert_error, cli
from tests.records import statistics
from tests.registry.artifacts import artifact


def _decision(reg, version, tag: str):
    ckey = hashlib.sha256(tag.encode()).hexdigest()
    path, digest = artifact(f"cli-reviews/{tag}")
    cand = reg.add_candidate(version.id, ckey, "smooth_abs", 42, artifact_uri=path, artifact_sha256=digest)
    return reg.record_decision(version.id, hashlib.sha256(f"d-{tag}".encode()).hexdigest(), run_id=None,
                               candidate_key=ckey, promoted_candidate_id=cand.id,
                               statistics=statistics(promoted="smooth_abs"), sentence=f"promoted smooth_abs ({tag})")


def _ops_v1(tmp_path, tag: str):
    """A registry with adapter ``ops`` and its first version (artifact ``cli-reviews/<tag>``): (data, reg, v1)."""
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    reg = Registry.open(data_dir=data)
    path, digest = artifact(f"cli-reviews/{tag}")
    reg.register_adapter("ops", path, "acme/base", "instruction")
    v1, _ = reg.record_version("ops", digest, None, path)
    return data, reg, v1


def test_approving_a_stale_review_is_refused_and_the_reviews_say_why(tmp_path):
    data, reg, v1 = _ops_v1(tmp_path, "v1")
    old = reg.request_review(_decision(reg, v1, "old"), window=timedelta(days=1)).review
    older = reg.request_review(_decision(reg, v1, "older"), window=timedelta(days=1)).review  # supersedes `old`
    path2, digest2 = artifact("cli-reviews/v2")
    v2, _ = reg.record_version("ops", digest2, None, path2)  # production now implicitly serves v2 unedited

    line = assert_error(cli("approve", older.id, "--reason", "ok", "--data-dir", data),
                        f"would replace production's v{v2.id} unedited with v{v1.id} smooth_abs", "--force")
    assert "rollback" in line and reg.history("ops") == []
    new = reg.promote(_decision(reg, v2, "new"))  # the gate promotes the retrained version: `older` is now stale
    rows = cli("reviews", "--all", "--json", "--data-dir", data).json()
    why = {r["id"]: r["reason"] for r in rows}
    assert f"promotion event {new.id}" in why[older.id] and "approving it would move production backwards" \
        in why[older.id]
    assert f"superseded by review {older.id}" in why[old.id]
    table = cli("reviews", "--all", "--data-dir", data).out
    assert f"promotion event {new.id}" in table
    assert_error(cli("approve", older.id, "--reason", "ok", "--data-dir", data), "is superseded")
    reg.close()


def test_approve_force_serves_the_older_version_with_a_warning(tmp_path):
    data, reg, v1 = _ops_v1(tmp_path, "f1")
    review = reg.request_review(_decision(reg, v1, "f"), window=timedelta(days=1)).review
    path2, digest2 = artifact("cli-reviews/f2")
    reg.record_version("ops", digest2, None, path2)
    body = cli("approve", review.id, "--reason", "v2 is broken", "--force", "--json", "--data-dir", data).json()
    assert body["review"]["state"] == "approved"
    (event,) = reg.history("ops")
    assert event.to_version_id == v1.id and "backwards" in event.evidence_json["warning"]
    reg.close()


def test_list_says_when_production_serves_an_edit_of_an_older_version_and_why(tmp_path):
    """A retrained adapter whose new version is HELD keeps production on an edit of the old version: ``list``
    says so, with the new version's verdict (``run``'s summary uses the same words)."""
    data, reg, v1 = _ops_v1(tmp_path, "h1")
    reg.promote(_decision(reg, v1, "h1"))
    (row,) = cli("list", "--json", "--data-dir", data).json()
    assert row["production_behind"] is None  # serves an edit of the latest version
    path2, digest2 = artifact("cli-reviews/h2")
    v2, _ = reg.record_version("ops", digest2, None, path2)
    (row,) = cli("list", "--json", "--data-dir", data).json()
    assert row["production_behind"]["latest_version"] == v2.id and "not refined yet" in row["production_behind"]["why"]
    held = reg.record_decision(v2.id, hashlib.sha256(b"held").hexdigest(), run_id=None, candidate_key=None,
                               promoted_candidate_id=None, statistics=statistics(verdict="hold", n_needed=400),
                               sentence="HOLD: the interval holds both no gain and min_effect")
    (row,) = cli("list", "--json", "--data-dir", data).json()
    behind = row["production_behind"]
    assert (behind["serves_version"], behind["latest_version"]) == (v1.id, v2.id)
    assert f"decision {held.id}: held for evidence: needs ~400 documents" in behind["why"]
    out = cli("list", "--data-dir", data).out
    assert f"older than the latest v{v2.id}" in out and "held for evidence" in out
    reg.close()
