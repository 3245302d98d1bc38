"""Run leases (registry/runs.py): owners and heartbeats, crashed runs reaped, one claim per adapter version."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from spectral_surgery.registry import migrations
from spectral_surgery.registry.db import make_engine, session_scope
from spectral_surgery.registry.models import RefinementRun
from spectral_surgery.registry.repository import Registry, RegistryError
from spectral_surgery.registry.runs import CRASHED, INTERRUPTED, owner_is_dead, this_owner


def sha(tag: str) -> str:
    return hashlib.sha256(tag.encode()).hexdigest()


H = sha("config")


def _versions(reg: Registry, n: int = 1):
    out = []
    for i in range(n):
        ad = reg.register_adapter(f"ad{i}", f"hf://acme/ad{i}@main", "acme/base", "math")
        out.append(reg.record_version(ad, sha(f"ad{i}"), "r1", None)[0])
    return out


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _age(reg: Registry, run_id: int, seconds: float) -> None:
    with session_scope(reg.engine, write=True) as s:
        run = s.get(RefinementRun, run_id)
        s.execute(update(RefinementRun).where(RefinementRun.id == run_id).values(
            heartbeat_at=run.heartbeat_at - timedelta(seconds=seconds)))


def test_a_run_records_its_owner_and_heartbeats(registry):
    run = registry.start_run("f1", {}, H)
    assert run.owner == this_owner() and run.heartbeat_at is not None and run.crash_reason is None
    _age(registry, run.id, 100)
    before = registry.get_run(run.id).heartbeat_at
    registry.heartbeat(run.id)
    assert registry.get_run(run.id).heartbeat_at > before
    assert not owner_is_dead(this_owner()) and not owner_is_dead("another-host:1") and not owner_is_dead(None)


def test_a_run_whose_process_died_is_marked_crashed_and_its_version_is_pending_again(registry):
    (v,) = _versions(registry)
    dead = registry.start_run("killed", {}, H, owner=f"{this_owner().rpartition(':')[0]}:{_dead_pid()}")
    arun = registry.start_adapter_run(dead.id, v.id)
    alive = registry.start_run("alive", {}, H)
    assert registry.pending_work(H) and registry.pending_work(H)[0].id == v.id
    reaped = registry.reap_stale()
    assert [r.id for r in reaped] == [dead.id]
    run = registry.get_run(dead.id)
    assert run.status == "crashed" and run.ended_at is not None and "is gone" in run.crash_reason
    row = registry.adapter_runs(dead.id)[0]
    assert (row.id, row.status, row.error_type) == (arun.id, "failed", CRASHED)
    assert "refines it again" in row.error_message
    assert registry.get_run(alive.id).status == "running"  # this process is alive: never reaped
    assert [x.id for x in registry.pending_work(H)] == [v.id]
    assert registry.reap_stale() == []  # idempotent


def test_a_cancelled_run_releases_its_open_adapter_runs(registry):
    """SIGINT/SIGTERM: the run ends ``cancelled`` and its open adapter runs ``failed`` (Interrupted), so nothing is
    left ``running`` and the next run refines them; a finished adapter run keeps its status; a repeat is harmless."""
    done, open_, planned = _versions(registry, 3)
    run = registry.start_run("f1", {}, H)
    registry.finish_adapter_run(registry.start_adapter_run(run.id, done.id).id, "completed")
    registry.start_adapter_run(run.id, open_.id)
    registry.start_adapter_run(run.id, planned.id, status="pending")
    cancelled = registry.cancel_run(run.id, "stopped by SIGINT")
    assert cancelled.status == "cancelled" and cancelled.ended_at is not None
    rows = {r.adapter_version_id: r for r in registry.adapter_runs(run.id)}
    assert rows[done.id].status == "completed"
    for v in (open_, planned):
        assert (rows[v.id].status, rows[v.id].error_type) == ("failed", INTERRUPTED)
        assert "stopped by SIGINT" in rows[v.id].error_message
    assert [v.id for v in registry.pending_work(H)] == [open_.id, planned.id]
    assert registry.cancel_run(run.id, "again").ended_at == cancelled.ended_at
    assert registry.reap_stale() == []  # a cancelled run is closed, not a zombie


def test_a_run_on_another_host_is_reaped_only_when_its_lease_expires(registry):
    (v,) = _versions(registry)
    other = registry.start_run("remote", {}, H, owner="other-host:4242")
    registry.start_adapter_run(other.id, v.id)
    assert registry.reap_stale(lease_s=600) == []
    _age(registry, other.id, 601)
    (reaped,) = registry.reap_stale(lease_s=600)
    assert reaped.id == other.id and "no heartbeat since" in registry.get_run(other.id).crash_reason
    with pytest.raises(RegistryError, match="lease_s"):
        registry.reap_stale(lease_s=0)


def test_a_version_held_by_a_live_run_is_not_claimed_twice(registry):
    (v,) = _versions(registry)
    a = registry.start_run("a", {}, H, owner="host-a:1")
    b = registry.start_run("b", {}, H, owner="host-b:2")
    row, holder = registry.claim_adapter_run(a.id, v.id)
    assert row is not None and holder is None and row.status == "running"
    row_b, holder = registry.claim_adapter_run(b.id, v.id)
    assert row_b is None and holder.id == a.id and holder.owner == "host-a:1"
    # a claim under another config hash is another piece of work
    c = registry.start_run("c", {}, sha("other"), owner="host-c:3")
    assert registry.claim_adapter_run(c.id, v.id)[0] is not None
    # the holder dies (its lease runs out): the version can be claimed by the next run
    _age(registry, a.id, 10_000)
    row_b, holder = registry.claim_adapter_run(b.id, v.id, H)
    assert holder is None and row_b.run_id == b.id
    # finished work is returned as it is
    registry.finish_adapter_run(row_b.id, "completed")
    again, _ = registry.claim_adapter_run(b.id, v.id, H)
    assert again.status == "completed"


def test_two_runs_claiming_the_same_versions_at_once_split_them(db_url):
    engine = make_engine(db_url)
    migrations.init_db(engine)
    regs = [Registry(engine), Registry(make_engine(db_url))]
    versions = _versions(regs[0], 6)
    runs = [regs[i].start_run(f"r{i}", {}, H, owner=f"host-{i}:{i + 1}") for i in range(2)]
    got: dict[int, list[int]] = {0: [], 1: []}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            barrier.wait()
            for v in versions:
                row, _holder = regs[i].claim_adapter_run(runs[i].id, v.id)
                if row is not None:
                    got[i].append(v.id)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(got[0] + got[1]) == sorted(v.id for v in versions)  # every version claimed exactly once
    for r in regs:
        r.close()


def test_migration_0004_lets_old_zombie_rows_be_reaped(sqlite_url):
    engine = make_engine(sqlite_url)
    migrations.upgrade(engine, "0003")
    with engine.begin() as conn:  # a run left running by a process killed before leases existed
        conn.execute(text("INSERT INTO refinement_runs (flow_run_id, started_at, status, config_snapshot, "
                          "config_hash) VALUES ('old', '2026-11-01 02:00:00', 'running', '{}', :h)"), {"h": H})
    migrations.upgrade(engine)
    reg = Registry(engine)
    (reaped,) = reg.reap_stale()
    assert reaped.flow_run_id == "old" and reg.get_run(reaped.id).status == "crashed"
    migrations.downgrade(engine, "0003")
    migrations.upgrade(engine)
    reg.close()
