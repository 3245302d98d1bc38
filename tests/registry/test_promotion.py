"""Pointer moves on their own (registry/promotion.py), inside a session the test owns: state, moves, undo stack.

Rows are set up through the registry API; every function under test then runs in a ``session_scope`` of its own,
as ``Registry`` runs them. SQLite only: the PostgreSQL behaviour is covered through ``Registry`` in
test_repository.py.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from spectral_surgery.registry import promotion as prom
from spectral_surgery.registry.db import session_scope
from spectral_surgery.registry.models import Adapter, ProductionPointer, PromotionEvent
from spectral_surgery.registry.repository import Registry
from spectral_surgery.registry.validation import NotFoundError, RegistryError
from tests.registry.artifacts import artifact

H = "a" * 64  # config hash


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


@pytest.fixture
def reg(sqlite_url):
    registry = Registry.open(sqlite_url)
    yield registry
    registry.close()


@pytest.fixture
def rows(reg):
    """An adapter with two versions (v2 seen last) and a candidate of v1, plus an adapter with no version."""
    ad = reg.register_adapter("gsm-lora", "hf://acme/gsm-lora@main", "acme/base", "math")
    v1, _ = reg.record_version(ad, sha("v1"), "r1", "/cache/v1")
    v2, _ = reg.record_version(ad, sha("v2"), "r2", "/cache/v2")
    cand = reg.add_candidate(v1.id, H, "smooth_abs", 42, artifact_uri=artifact("v1/smooth_abs")[0])
    empty = reg.register_adapter("empty", "/adapters/empty", "acme/base", "code")
    return SimpleNamespace(ad=ad, v1=v1, v2=v2, cand=cand, empty=empty)


def move(reg, adapter_id: int, version_id: int, candidate_id: int | None, kind: str = "manual_override",
         **kw) -> PromotionEvent:
    """A forced move: these tests are about the mechanics of a move, and most go from the implicit v2 back to v1's
    candidate (refusing a backwards move is tested below and in test_reviews.py)."""
    kw.setdefault("force", kind != "rollback")
    with session_scope(reg.engine) as s:
        prom.lock_adapter(s, adapter_id)
        return prom.move_pointer(s, adapter_id, version_id, candidate_id, kind=kind, actor="t", reason="r", **kw)


def test_without_a_pointer_production_is_the_latest_unedited_version(reg, rows):
    with session_scope(reg.engine, write=False) as s:
        assert prom.latest_version(s, rows.ad.id).id == rows.v2.id
        assert prom.current_state(s, rows.ad.id) == (None, rows.v2.id)
        state = prom.production_state(s, s.get(Adapter, rows.ad.id))
        assert prom.current_state(s, rows.empty.id) == (None, None)
        assert prom.production_state(s, s.get(Adapter, rows.empty.id)) is None
    assert state == prom.ProductionState("gsm-lora", rows.v2.id, sha("v2"), "/cache/v2", None, None, None, True)


def test_a_move_sets_the_pointer_and_records_from_and_to_in_one_transaction(reg, rows):
    first = move(reg, rows.ad.id, rows.v1.id, rows.cand.id, evidence={"why": "test"})
    assert (first.from_version_id, first.from_candidate_id) == (rows.v2.id, None)  # the implicit state before
    assert (first.to_version_id, first.to_candidate_id, first.evidence_json["why"]) == (rows.v1.id, rows.cand.id,
                                                                                        "test")
    assert first.evidence_json["warning"].startswith(f"moved production backwards from v{rows.v2.id} unedited")
    second = move(reg, rows.ad.id, rows.v2.id, None)
    assert (second.from_version_id, second.from_candidate_id) == (rows.v1.id, rows.cand.id)
    with session_scope(reg.engine, write=False) as s:
        state = prom.production_state(s, s.get(Adapter, rows.ad.id))
        assert [e.id for e in prom.events_of(s, rows.ad.id)] == [first.id, second.id]
    assert (state.adapter_version_id, state.candidate_id, state.implicit) == (rows.v2.id, None, False)
    assert state.updated_at is not None and state.artifact_uri is None


def test_a_failed_transaction_moves_nothing(reg, rows):
    with pytest.raises(RuntimeError, match="after the move"):
        with session_scope(reg.engine) as s:
            prom.move_pointer(s, rows.ad.id, rows.v1.id, rows.cand.id, kind="manual_override", actor="t",
                              reason="r", force=True)
            raise RuntimeError("after the move")
    with session_scope(reg.engine, write=False) as s:
        assert prom.events_of(s, rows.ad.id) == [] and prom.current_state(s, rows.ad.id) == (None, rows.v2.id)


def test_a_move_to_an_older_version_is_refused_unless_forced_and_moves_nothing(reg, rows):
    for kind in ("manual_override", "promotion", "approval"):
        with pytest.raises(prom.BackwardsError, match=rf"replace production's v{rows.v2.id} unedited with "
                                                      rf"v{rows.v1.id} smooth_abs \(#{rows.cand.id}\), an older"):
            move(reg, rows.ad.id, rows.v1.id, rows.cand.id, kind=kind, force=False)
    with session_scope(reg.engine, write=False) as s:
        assert prom.events_of(s, rows.ad.id) == [] and prom.current_state(s, rows.ad.id) == (None, rows.v2.id)


def test_an_adapter_without_versions_cannot_move_and_unknown_ids_are_named(reg, rows):
    with pytest.raises(RegistryError, match="has no recorded version: record_version"):
        move(reg, rows.empty.id, rows.v1.id, None)
    with pytest.raises(NotFoundError, match="no adapter with id 999"):
        with session_scope(reg.engine) as s:
            prom.lock_adapter(s, 999)


def test_undo_stack_pops_what_each_rollback_reverts():
    e = [PromotionEvent(id=i, kind=k, reverts_event_id=r) for i, k, r in
         [(1, "promotion", None), (2, "manual_override", None), (3, "rollback", 2), (4, "promotion", None),
          (5, "rollback", 4), (6, "rollback", 1)]]
    assert [x.id for x in prom.undo_stack(e[:2])] == [1, 2]
    assert [x.id for x in prom.undo_stack(e[:3])] == [1]
    assert [x.id for x in prom.undo_stack(e[:4])] == [1, 4]
    assert [x.id for x in prom.undo_stack(e[:5])] == [1]
    assert prom.undo_stack(e) == [] and prom.undo_stack([]) == []


def test_rollback_target_is_the_latest_move_in_effect(reg, rows):
    with session_scope(reg.engine, write=False) as s:
        with pytest.raises(RegistryError, match="no promotion left to roll back"):
            prom.rollback_target(s, s.get(Adapter, rows.ad.id))
    first = move(reg, rows.ad.id, rows.v1.id, rows.cand.id)
    second = move(reg, rows.ad.id, rows.v1.id, None)
    with session_scope(reg.engine, write=False) as s:
        assert prom.rollback_target(s, s.get(Adapter, rows.ad.id)).id == second.id
    move(reg, rows.ad.id, second.from_version_id, second.from_candidate_id, kind="rollback",
         reverts_event_id=second.id)
    with session_scope(reg.engine, write=False) as s:
        assert prom.rollback_target(s, s.get(Adapter, rows.ad.id)).id == first.id


def test_rollback_target_refuses_a_pointer_that_disagrees_with_the_history(reg, rows):
    move(reg, rows.ad.id, rows.v1.id, rows.cand.id)
    with session_scope(reg.engine) as s:  # a pointer moved behind the history's back
        pointer = s.get(ProductionPointer, rows.ad.id)
        pointer.candidate_id, pointer.adapter_version_id = None, rows.v2.id
    with session_scope(reg.engine, write=False) as s:
        with pytest.raises(RegistryError, match="does not match the latest event in effect"):
            prom.rollback_target(s, s.get(Adapter, rows.ad.id))
