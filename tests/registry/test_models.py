"""Models and engines: constraints, timestamps, append-only events, SQLite locking, URLs (SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from spectral_surgery.registry.db import default_url, make_engine, normalize_url, session_scope
from spectral_surgery.registry.models import (
    Adapter,
    AdapterVersion,
    AppendOnlyError,
    Candidate,
    Evaluation,
    PromotionEvent,
)

SHA = "ab" * 32


def _adapter(s, name: str = "a") -> Adapter:
    row = Adapter(name=name, source_uri="/x", base_model_id="base", task_family="math")
    s.add(row)
    s.flush()
    return row


def _version(s, adapter: Adapter, sha: str = SHA) -> AdapterVersion:
    row = AdapterVersion(adapter_id=adapter.id, content_sha256=sha)
    s.add(row)
    s.flush()
    return row


def _event(s) -> PromotionEvent:
    v = _version(s, _adapter(s))
    ev = PromotionEvent(adapter_id=v.adapter_id, kind="manual_override", actor="t", reason="r",
                        from_version_id=v.id, to_version_id=v.id)
    s.add(ev)
    s.flush()
    return ev


def test_timestamps_are_aware_utc_both_ways(engine):
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    with session_scope(engine) as s:
        a = _adapter(s)
        a.created_at = moment
    with session_scope(engine, write=False) as s:
        got = s.get(Adapter, a.id).created_at
    assert got == moment and got.tzinfo is not None and got.utcoffset() == timedelta(0)
    with pytest.raises(Exception, match="naive datetime"), session_scope(engine) as s:
        b = _adapter(s, "b")
        b.created_at = datetime(2026, 1, 1)
        s.flush()


def test_unique_name_and_foreign_keys_are_enforced(engine):
    with session_scope(engine) as s:
        _adapter(s, "dup")
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        _adapter(s, "dup")
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        s.add(AdapterVersion(adapter_id=9999, content_sha256=SHA))
        s.flush()


def test_baseline_evaluations_are_unique_despite_null_candidate(engine):
    """NULLs never collide in a unique key: the non-null ``subject`` is what makes two baselines clash."""
    def baseline(s, version_id: int) -> None:
        s.add(Evaluation(adapter_version_id=version_id, subject="baseline", benchmark="gsm8k", metric="acc",
                         value=0.5, evaluator_key="k", higher_is_better=True))
        s.flush()

    with session_scope(engine) as s:
        vid = _version(s, _adapter(s)).id
        baseline(s, vid)
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        baseline(s, vid)


def test_subject_must_match_candidate(engine):
    with session_scope(engine) as s:
        v = _version(s, _adapter(s))
        c = Candidate(adapter_version_id=v.id, config_hash="h", policy="p", seed=0)
        s.add(c)
        s.flush()
        vid, cid = v.id, c.id
    for subject, cand in [("baseline", cid), (f"candidate:{cid + 1}", cid), (f"candidate:{cid}", None)]:
        with pytest.raises(IntegrityError), session_scope(engine) as s:
            s.add(Evaluation(adapter_version_id=vid, candidate_id=cand, subject=subject, benchmark="b",
                             metric="m", value=1.0, evaluator_key="k", higher_is_better=True))
            s.flush()
    with session_scope(engine) as s:
        s.add(Evaluation(adapter_version_id=vid, candidate_id=cid, subject=f"candidate:{cid}", benchmark="b",
                         metric="m", value=1.0, evaluator_key="k", higher_is_better=True))


def test_status_and_kind_checks(engine):
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        v = _version(s, _adapter(s))
        s.add(PromotionEvent(adapter_id=v.adapter_id, kind="sideways", actor="t", reason="r",
                             from_version_id=v.id, to_version_id=v.id))
        s.flush()
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        v = _version(s, _adapter(s))  # a rollback must name the event it reverts
        s.add(PromotionEvent(adapter_id=v.adapter_id, kind="rollback", actor="t", reason="r",
                             from_version_id=v.id, to_version_id=v.id))
        s.flush()


def test_promotion_events_refuse_orm_update_and_delete(engine):
    with session_scope(engine) as s:
        ev_id = _event(s).id
    with pytest.raises(AppendOnlyError), session_scope(engine) as s:
        s.get(PromotionEvent, ev_id).reason = "rewritten"
        s.flush()
    with pytest.raises(AppendOnlyError), session_scope(engine) as s:
        s.delete(s.get(PromotionEvent, ev_id))
        s.flush()
    with session_scope(engine, write=False) as s:
        assert s.get(PromotionEvent, ev_id).reason == "r"


@pytest.mark.parametrize("statement", [
    "UPDATE promotion_events SET reason = 'rewritten'",
    "DELETE FROM promotion_events",
])
def test_promotion_events_refuse_sql_update_and_delete(engine, statement):
    """The database triggers hold even for SQL that bypasses the ORM."""
    with session_scope(engine) as s:
        _event(s)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
        conn.execute(text(statement))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT reason FROM promotion_events")).scalars().all() == ["r"]


@pytest.mark.postgres
def test_promotion_events_refuse_truncate_on_postgres(pg_url):
    from spectral_surgery.registry.migrations import init_db

    eng = make_engine(pg_url)
    init_db(eng)
    with session_scope(eng) as s:
        _event(s)
    with pytest.raises(DBAPIError, match="append-only"), eng.begin() as conn:
        conn.execute(text("TRUNCATE promotion_events CASCADE"))
    with session_scope(eng, write=False) as s:
        assert s.scalar(select(func.count()).select_from(PromotionEvent)) == 1
    eng.dispose()


def test_session_scope_rolls_back_on_error(engine):
    with pytest.raises(RuntimeError), session_scope(engine) as s:
        _adapter(s, "gone")
        s.flush()
        raise RuntimeError("boom")
    with session_scope(engine, write=False) as s:
        assert s.scalar(select(func.count()).select_from(Adapter)) == 0


# ------------------------------------------------------------------------------------------------- SQLite
def test_sqlite_pragmas(tmp_path):
    eng = make_engine(data_dir=tmp_path / "home")
    assert (tmp_path / "home").is_dir()
    with eng.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    assert (tmp_path / "home" / "registry.db").is_file()
    eng.dispose()


def test_sqlite_write_sessions_take_the_lock_at_begin(tmp_path):
    """A write session holds SQLite's write lock from BEGIN (IMMEDIATE), before its first write; a read does not."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    eng = make_engine(url)
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")

    def other_writer_can_start() -> bool:
        other = sqlite3.connect(tmp_path / "r.db", timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            return False
        finally:
            other.close()

    with session_scope(eng, write=True) as s:
        s.execute(text("SELECT count(*) FROM t"))  # a read only, yet the lock is already held
        assert not other_writer_can_start()
    with session_scope(eng, write=False) as s:
        s.execute(text("SELECT count(*) FROM t"))
        assert other_writer_can_start()
    assert other_writer_can_start()
    eng.dispose()


def test_sqlite_savepoints_work(tmp_path):
    """pysqlite's own transaction handling is off, so SAVEPOINTs (used by get-or-create) really roll back."""
    eng = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with eng.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER UNIQUE)")
    with session_scope(eng) as s:
        s.execute(text("INSERT INTO t VALUES (1)"))
        with pytest.raises(IntegrityError):
            with s.begin_nested():
                s.execute(text("INSERT INTO t VALUES (2)"))
                s.execute(text("INSERT INTO t VALUES (1)"))
        s.execute(text("INSERT INTO t VALUES (3)"))
    with eng.connect() as conn:
        assert conn.exec_driver_sql("SELECT x FROM t ORDER BY x").scalars().all() == [1, 3]
    eng.dispose()


# --------------------------------------------------------------------------------------------------- URLs
@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
    ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
])
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


def test_bad_url_names_the_setting():
    with pytest.raises(ValueError, match="registry URL 'not a url'"):
        normalize_url("not a url")


def test_default_url_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SPECTRAL_SURGERY_HOME", str(tmp_path / "home"))
    assert default_url() == f"sqlite:///{tmp_path / 'home' / 'registry.db'}"
    assert default_url(tmp_path / "d") == f"sqlite:///{tmp_path / 'd' / 'registry.db'}"
    assert make_engine("postgresql://u@h/db").url.drivername == "postgresql+psycopg"  # no connection is made
