"""Prefect events of promotions, overrides, rollbacks and reviews, captured with Prefect's own test harness
(``prefect.testing.fixtures.asserting_events_worker``: every emitted event lands in an ``AssertingEventsClient``),
and the review window end to end: a nightly run under ``promote: review`` moves nothing, ``approve`` does, and an
unapproved review expires at the start of the next run.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from prefect.events.clients import AssertingEventsClient
from prefect.events.schemas.automations import AutomationCore, EventTrigger
from prefect.testing.fixtures import asserting_events_worker  # noqa: F401  (the harness's fixture)

from spectral_surgery.flows.integrations.events import MOVE_EVENTS, RESOURCE_PREFIX, move_event
from spectral_surgery.flows.refine_fleet import run_nightly
from tests.flows.cli_support import assert_error, cli
from tests.flows.test_nightly import WINNER, _config, _register

REPO = Path(__file__).resolve().parents[2]
AUTOMATION = REPO / "deployments" / "automations" / "notify-on-promotion.yaml"


pytestmark = pytest.mark.usefixtures("fresh_worker")


@pytest.fixture
def captured(asserting_events_worker):  # noqa: F811
    """``captured()``: the spectral-surgery events sent so far (Prefect's own flow-run events left out)."""

    def ours() -> list:
        asserting_events_worker.wait_until_empty()
        client = asserting_events_worker._client
        assert isinstance(client, AssertingEventsClient)
        return [e for e in client.events if e.event.startswith("spectral-surgery.")]

    return ours


def _data_args(cfg) -> list[str]:
    return ["--data-dir", str(cfg.data_dir)]


@pytest.mark.slow  # two nightly runs through Prefect
def test_the_gates_promotion_a_manual_override_and_a_rollback_each_emit_one_event(prefect_harness, captured,
                                                                                  make_fleet, fleet_base, tmp_path):
    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib)
    reg = _register(cfg, dirs, fleet_base, ("math",))
    out = run_nightly(cfg)
    assert out["results"][0]["promoted"] == "smooth_abs"
    (promoted,) = captured()
    state = reg.production("ad0")
    assert promoted.event == "spectral-surgery.promoted"
    assert promoted.resource.id == RESOURCE_PREFIX + "ad0"
    assert promoted.resource["spectral-surgery.policy"] == "smooth_abs"
    p = promoted.payload
    assert (p["adapter"], p["kind"], p["actor"], p["decision_id"]) == ("ad0", "promotion", "nightly",
                                                                       out["results"][0]["decision_id"])
    assert p["to"]["candidate_id"] == state.candidate_id and p["to"]["sha256"] == reg.get_candidate(
        state.candidate_id).artifact_sha256
    assert p["from"] == {"version_id": state.adapter_version_id, "candidate_id": None, "policy": "unedited",
                         "sha256": state.content_sha256, "path": state.local_path}
    assert {"decision", "flow-run"} <= {r.role for r in promoted.related}  # Prefect links the run that promoted

    run_nightly(cfg)  # nothing new: no move, no event
    assert len(captured()) == 1

    cand = next(c for c in reg.list_candidates(state.adapter_version_id) if c.policy == "abs_select")
    r = cli("promote", cand.id, "--reason", "the math team prefers it", "--actor", "alice", *_data_args(cfg))
    assert r.code == 0, r.err
    r = cli("rollback", "ad0", "--reason", "regression reported", "--actor", "bob", *_data_args(cfg))
    assert r.code == 0, r.err
    events = captured()
    assert [e.event for e in events] == ["spectral-surgery.promoted", "spectral-surgery.manual-promoted",
                                         "spectral-surgery.rolled-back"]
    manual, rolled = events[1].payload, events[2].payload
    assert (manual["actor"], manual["reason"], manual["to"]["policy"]) == ("alice", "the math team prefers it",
                                                                           "abs_select")
    assert rolled["reverts_event_id"] == manual["event_id"] and rolled["to"]["policy"] == "smooth_abs"

    # the documented automation parses as Prefect's own CLI parses it, and fires on these events
    automation = AutomationCore.model_validate(yaml.safe_load(AUTOMATION.read_text()))
    assert isinstance(automation.trigger, EventTrigger)
    assert automation.trigger.expect == set(MOVE_EVENTS.values())
    for e in events:
        assert automation.trigger.match.matches(e.resource) and e.event in automation.trigger.expect
    from prefect.server.utilities.user_templates import render_user_template_sync

    body = json.loads(render_user_template_sync(automation.actions[0].payload, {"event": events[2]}))
    assert body == {"event": "spectral-surgery.rolled-back", "adapter": "ad0", "policy": "smooth_abs",
                    "version_id": str(state.adapter_version_id), "sha256": rolled["to"]["sha256"],
                    "path": rolled["to"]["path"], "actor": "bob", "reason": "regression reported"}


@pytest.mark.slow  # a nightly run through Prefect, from the command line
def test_review_window_waits_for_approval_then_promotes_audited(prefect_harness, captured, make_fleet, fleet_base,
                                                                tmp_path):
    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib, promote="review", review_window="36h")
    reg = _register(cfg, dirs, fleet_base, ("math",))
    config = tmp_path / "run.yaml"  # `run --review` on top of a file with the window
    config.write_text("surgery:\n  calib:\n    n_samples: 4\n    batch_size: 4\nevaluator_options:\n  n_docs: 60\n"
                      "review_window: 36h\n")
    ran = cli("run", "--config", config, "--evaluator", "fake", "--evaluator-option", f"rates={json.dumps(WINNER)}",
              "--task-limit", 60, "--guard-limit", 60, "--calib", calib, "--review", *_data_args(cfg))
    assert ran.code == 0, ran.err
    (r,) = reg.list_reviews()
    assert "review window 1 day, 12:00:00" in ran.err
    assert f"✓ ad0 awaiting review of smooth_abs (review {r.id}, until" in ran.err  # apart from "promoted"
    row = next(line for line in ran.out.splitlines() if line.startswith("✓ ad0@1 "))
    assert "PROMOTE smooth_abs awaiting review" in row
    assert f"    served now: unchanged (awaiting review {r.id} of smooth_abs until" in ran.out
    assert (r.state, r.requested_by) == ("pending", "nightly") and r.expires_at - r.requested_at == timedelta(hours=36)
    decision = reg.get_decision_by_id(r.decision_id)
    assert decision.promoted and reg.production("ad0").implicit and reg.history("ad0") == []  # nothing moved
    (requested,) = captured()
    assert requested.event == "spectral-surgery.review-requested"
    assert requested.payload["review_id"] == r.id and requested.payload["candidate"]["policy"] == "smooth_abs"
    review = {"id": r.id}

    (ad0,) = cli("list", "--json", *_data_args(cfg)).json()
    assert ad0["awaiting_review"]["id"] == r.id and ad0["production"]["implicit"]
    assert f"awaiting review {r.id} until" in cli("list", *_data_args(cfg)).out
    listed = cli("reviews", "--json", *_data_args(cfg)).json()
    assert [(x["id"], x["adapter"], x["state"], x["policy"]) for x in listed] == [(review["id"], "ad0", "pending",
                                                                                   "smooth_abs")]
    r = cli("approve", review["id"], "--reason", "samples look right", "--actor", "alice", "--json", *_data_args(cfg))
    body = r.json()
    assert reg.production("ad0").candidate_id == decision.promoted_candidate_id
    (event,) = reg.history("ad0")
    assert (event.kind, event.actor, event.reason, event.decision_id) == ("approval", "alice", "samples look right",
                                                                          decision.id)
    assert event.evidence_json["review_id"] == review["id"]
    assert body["event"]["kind"] == "approval" and body["review"]["state"] == "approved"
    history = cli("history", "ad0", "--json", *_data_args(cfg)).json()
    assert [(e["kind"], e["actor"]) for e in history["events"]] == [("approval", "alice")]
    approved = captured()[-1]
    assert approved.event == "spectral-surgery.approved" and approved.payload["review_id"] == review["id"]
    assert {r.role for r in approved.related} == {"decision", "review"}

    assert_error(cli("approve", review["id"], "--reason", "again", *_data_args(cfg)), "already approved by alice")
    assert_error(cli("approve", 999, "--reason", "x", *_data_args(cfg)), "no review with id 999", code=3)
    assert cli("reviews", "--json", *_data_args(cfg)).json() == []
    assert cli("list", "--json", *_data_args(cfg)).json()[0]["awaiting_review"] is None


@pytest.mark.slow  # two nightly runs through Prefect
def test_an_unapproved_review_expires_at_the_next_run_recorded_and_refused(prefect_harness, captured, make_fleet,
                                                                           fleet_base, tmp_path, monkeypatch):
    import spectral_surgery.registry.reviews

    dirs, calib = make_fleet(1)
    cfg = _config(tmp_path / "data", calib, promote="review", review_window=1)
    reg = _register(cfg, dirs, fleet_base, ("math",))
    review = run_nightly(cfg)["results"][0]["review"]
    real = spectral_surgery.registry.reviews.utcnow
    monkeypatch.setattr(spectral_surgery.registry.reviews, "utcnow",
                        lambda: real() + timedelta(hours=2))  # two hours later
    again = run_nightly(cfg)
    assert again["refined"] == 0
    r = reg.get_review(review["id"])
    assert (r.state, r.decided_by) == ("expired", "expiry") and "not approved within the window" in r.reason
    assert [e.event for e in captured()] == ["spectral-surgery.review-requested", "spectral-surgery.review-expired"]
    assert captured()[-1].payload["state"] == "expired"
    assert_error(cli("approve", review["id"], "--reason", "late", *_data_args(cfg)),
                 f"review {review['id']} is expired")
    assert reg.production("ad0").implicit and reg.history("ad0") == []
    listed = cli("reviews", "--all", "--json", *_data_args(cfg)).json()
    assert [x["state"] for x in listed] == ["expired"]


def test_the_event_of_a_move_is_built_from_the_recorded_event_alone():
    """The pure builder: names, resource labels (strings), related resources, payload."""
    from datetime import UTC, datetime
    from types import SimpleNamespace

    e = SimpleNamespace(id=7, kind="approval", actor="alice", reason="ok", at=datetime(2026, 12, 4, tzinfo=UTC),
                        decision_id=3, reverts_event_id=None, evidence_json={"review_id": 5})
    spec = move_event(e, "gsm-lora", {"policy": "unedited", "version_id": 1, "candidate_id": None},
                      {"policy": "smooth_abs", "version_id": 1, "candidate_id": 9})
    assert spec.event == "spectral-surgery.approved"
    assert spec.resource == {"prefect.resource.id": "spectral-surgery.adapter.gsm-lora",
                             "prefect.resource.name": "gsm-lora", "spectral-surgery.policy": "smooth_abs",
                             "spectral-surgery.version-id": "1", "spectral-surgery.candidate-id": "9"}
    assert [r["prefect.resource.role"] for r in spec.related] == ["decision", "review"]
    assert spec.payload["review_id"] == 5 and spec.payload["at"] == "2026-12-04T00:00:00+00:00"


def test_a_failing_event_client_never_fails_the_move(monkeypatch, caplog):
    import prefect.events

    from spectral_surgery.flows.integrations import events

    def broken(**kwargs):
        raise ConnectionError("no server")

    monkeypatch.setattr(prefect.events, "emit_event", broken)
    monkeypatch.setattr(events, "can_emit", lambda: True)
    spec = events.EventSpec("spectral-surgery.promoted", events.adapter_resource("a"), {})
    with caplog.at_level("WARNING", logger="spectral_surgery.flows.integrations.events"):
        assert events.emit(spec) is None
    assert "could not emit Prefect event spectral-surgery.promoted for a: no server" in caplog.text
