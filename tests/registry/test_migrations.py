"""Alembic migrations: upgrade, downgrade, upgrade again, and the models agree with the migrated schema."""

from __future__ import annotations

import warnings

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Column, Integer, MetaData, Table, inspect, text
from sqlalchemy.exc import DatabaseError, IntegrityError

from spectral_surgery.registry import migrations
from spectral_surgery.registry.db import make_engine
from spectral_surgery.registry.migrations import init_db
from spectral_surgery.registry.models import Base

HEAD = "0008"
TABLES = {
    "adapters", "adapter_versions", "refinement_runs", "adapter_runs", "candidates", "evaluations",
    "guard_results", "decisions", "production_pointers", "promotion_events", "reviews",
}


def _triggers(engine) -> set[str]:
    """Names of the triggers (and, on PostgreSQL, trigger functions) in the registry's schema."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
        else:
            rows = conn.execute(text(
                "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal "
                "AND n.nspname = current_schema() "
                "UNION SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = current_schema()"))
        return set(rows.scalars())


def _diffs(engine, metadata: MetaData) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, metadata)


@pytest.fixture
def bare_engine(db_url):
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_one_linear_history():
    script = ScriptDirectory.from_config(migrations.alembic_config())
    assert len(script.get_heads()) == 1
    assert script.get_current_head() == HEAD
    assert [r.revision for r in script.walk_revisions()] == ["0008", "0007", "0006", "0005", "0004", "0003", "0002",
                                                             "0001"]


def test_upgrade_downgrade_upgrade(bare_engine):
    assert migrations.current(bare_engine) is None
    init_db(bare_engine)
    assert migrations.current(bare_engine) == HEAD
    assert TABLES <= set(inspect(bare_engine).get_table_names())
    assert len(_triggers(bare_engine)) >= 2

    migrations.downgrade(bare_engine, "base")
    assert migrations.current(bare_engine) is None
    assert set(inspect(bare_engine).get_table_names()) <= {"alembic_version"}
    assert _triggers(bare_engine) == set()

    init_db(bare_engine)
    init_db(bare_engine)  # already at head: a no-op
    assert migrations.current(bare_engine) == HEAD
    assert TABLES <= set(inspect(bare_engine).get_table_names())
    migrations.check(bare_engine)


def test_models_match_migrations(bare_engine):
    """The ``alembic check`` of CI: autogenerate finds nothing to add, drop or alter."""
    init_db(bare_engine)
    assert _diffs(bare_engine, Base.metadata) == []
    migrations.check(bare_engine)


def test_check_detects_drift(bare_engine):
    """The comparison is not vacuous: a model change the migrations lack is reported."""
    init_db(bare_engine)
    drifted = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    Table("extra", drifted, Column("id", Integer, primary_key=True))
    drifted.tables["adapters"].append_column(Column("color", Integer))
    diffs = _diffs(bare_engine, drifted)
    assert any(d[0] == "add_table" and d[1].name == "extra" for d in diffs)
    assert any(d[0] == "add_column" and d[3].name == "color" for d in diffs)


def test_check_fails_on_an_unmigrated_database(bare_engine):
    with pytest.raises(CommandError, match="not up to date"):
        migrations.check(bare_engine)


def test_migrations_run_from_any_directory(tmp_path, monkeypatch):
    """script_location comes from the package path, not the working directory (works after pip install)."""
    monkeypatch.chdir(tmp_path)
    cfg = migrations.alembic_config()
    assert cfg.get_main_option("script_location") == str(migrations.SCRIPT_LOCATION)
    eng = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    init_db(eng)
    assert migrations.current(eng) == HEAD
    eng.dispose()


def test_failed_upgrade_leaves_nothing_behind(tmp_path, monkeypatch):
    """The whole upgrade is one transaction: a failure half-way leaves the database unmigrated."""
    from alembic.operations import Operations

    eng = make_engine(f"sqlite:///{tmp_path / 'r.db'}")

    def boom(self, *args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(Operations, "create_index", boom)  # the first index comes after four tables
    with pytest.raises(RuntimeError, match="simulated failure"):
        init_db(eng)
    assert inspect(eng).get_table_names() == []
    monkeypatch.undo()
    init_db(eng)
    assert TABLES <= set(inspect(eng).get_table_names())
    eng.dispose()


def test_0002_adds_fetch_error_to_existing_adapters_and_downgrades(bare_engine):
    """A registry created at 0001 keeps its rows through 0002 (fetch error columns, NULL) and back."""
    migrations.upgrade(bare_engine, "0001")
    with bare_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO adapters (name, source_uri, base_model_id, task_family, enabled, created_at) "
            "VALUES ('old', '/x', 'base', 'math', :t, CURRENT_TIMESTAMP)"), {"t": True})
        conn.execute(text(  # a row that references the adapter: the downgrade must not trip its foreign key
            "INSERT INTO adapter_versions (adapter_id, content_sha256, first_seen_at, last_seen_at) "
            "SELECT id, :sha, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM adapters"), {"sha": "a" * 64})
    migrations.upgrade(bare_engine)
    assert migrations.current(bare_engine) == HEAD
    cols = {c["name"] for c in inspect(bare_engine).get_columns("adapters")}
    assert {"fetch_error", "fetch_error_at"} <= cols
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT name, fetch_error FROM adapters")).all() == [("old", None)]
    migrations.check(bare_engine)
    migrations.downgrade(bare_engine, "0001")
    cols = {c["name"] for c in inspect(bare_engine).get_columns("adapters")}
    assert "fetch_error" not in cols and "name" in cols
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM adapters")).scalars().all() == ["old"]


def test_0003_links_decisions_and_runs_by_their_old_shared_hash_and_downgrades(bare_engine):
    """Rows written at 0002 (one hash keyed candidates, decisions and runs) get explicit links at 0003."""
    migrations.upgrade(bare_engine, "0002")
    h = "c" * 64
    with bare_engine.begin() as conn:
        _old_adapter_version(conn)
        conn.execute(text(
            "INSERT INTO refinement_runs (flow_run_id, started_at, status, config_snapshot, config_hash) "
            "VALUES ('f1', CURRENT_TIMESTAMP, 'completed', '{}', :h)"), {"h": h})
        conn.execute(text(
            "INSERT INTO decisions (adapter_version_id, config_hash, run_id, promoted, statistics_json, sentence, "
            "created_at) SELECT v.id, :h, r.id, :f, '{}', 'kept', CURRENT_TIMESTAMP "
            "FROM adapter_versions v, refinement_runs r"), {"h": h, "f": False})
        conn.execute(text(
            "INSERT INTO adapter_runs (run_id, adapter_version_id, config_hash, status) "
            "SELECT r.id, v.id, :h, 'completed' FROM adapter_versions v, refinement_runs r"), {"h": h})
        conn.execute(text(  # a failed run reached no decision
            "INSERT INTO refinement_runs (flow_run_id, started_at, status, config_snapshot, config_hash) "
            "VALUES ('f2', CURRENT_TIMESTAMP, 'completed', '{}', :h)"), {"h": h})
        conn.execute(text(
            "INSERT INTO adapter_runs (run_id, adapter_version_id, config_hash, status) "
            "SELECT r.id, v.id, :h, 'failed' FROM adapter_versions v, refinement_runs r WHERE r.flow_run_id = 'f2'"),
            {"h": h})
    migrations.upgrade(bare_engine)
    assert migrations.current(bare_engine) == HEAD
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT candidate_key FROM decisions")).scalars().all() == [h]
        did = conn.execute(text("SELECT id FROM decisions")).scalar_one()
        links = conn.execute(text("SELECT status, decision_id FROM adapter_runs ORDER BY id")).all()
    assert links == [("completed", did), ("failed", None)]
    migrations.check(bare_engine)
    migrations.downgrade(bare_engine, "0002")
    assert "candidate_key" not in {c["name"] for c in inspect(bare_engine).get_columns("decisions")}
    assert "decision_id" not in {c["name"] for c in inspect(bare_engine).get_columns("adapter_runs")}
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM adapter_runs")).scalar_one() == 2


def test_alembic_reads_the_database_from_the_same_variable_as_the_cli(tmp_path, monkeypatch):
    """``alembic upgrade`` with no ``-x url=`` migrates ``$SPECTRAL_SURGERY_DB`` (the CLI's variable)."""
    from alembic import command

    from spectral_surgery.registry.db import DB_ENV, DEPRECATED_DB_ENV

    assert DB_ENV == "SPECTRAL_SURGERY_DB"
    monkeypatch.setenv("SPECTRAL_SURGERY_HOME", str(tmp_path / "home"))  # the default file, which must stay unused
    monkeypatch.setenv(DB_ENV, f"sqlite:///{tmp_path / 'new.db'}")
    monkeypatch.setenv(DEPRECATED_DB_ENV, f"sqlite:///{tmp_path / 'old.db'}")  # the new name wins, silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        command.upgrade(migrations.alembic_config(), "head")  # no connection given: env.py opens the URL itself
    eng = make_engine(f"sqlite:///{tmp_path / 'new.db'}")
    assert migrations.current(eng) == HEAD
    eng.dispose()
    assert not (tmp_path / "old.db").exists() and not (tmp_path / "home" / "registry.db").exists()


def test_the_old_variable_still_works_with_a_warning(tmp_path, monkeypatch):
    from alembic import command

    from spectral_surgery.registry.db import DB_ENV, DEPRECATED_DB_ENV, env_url

    monkeypatch.delenv(DB_ENV, raising=False)
    monkeypatch.setenv(DEPRECATED_DB_ENV, "")
    assert env_url() is None  # empty is unset
    monkeypatch.setenv(DEPRECATED_DB_ENV, f"sqlite:///{tmp_path / 'old.db'}")
    with pytest.warns(FutureWarning, match=r"\$SPECTRAL_SURGERY_DB_URL is deprecated: set \$SPECTRAL_SURGERY_DB"):
        command.upgrade(migrations.alembic_config(), "head")
    eng = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    assert migrations.current(eng) == HEAD
    eng.dispose()


def _old_adapter_version(conn) -> None:
    """One adapter 'old' with one version, inserted by plain SQL (valid at every revision from 0001)."""
    conn.execute(text(
        "INSERT INTO adapters (name, source_uri, base_model_id, task_family, enabled, created_at) "
        "VALUES ('old', '/x', 'base', 'math', :t, CURRENT_TIMESTAMP)"), {"t": True})
    conn.execute(text(
        "INSERT INTO adapter_versions (adapter_id, content_sha256, first_seen_at, last_seen_at) "
        "SELECT id, :sha, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM adapters"), {"sha": "a" * 64})


def test_0005_keeps_the_promotion_history_admits_approvals_and_downgrades(bare_engine):
    """promotion_events is rebuilt on SQLite (new CHECKs): its rows, self-references and append-only triggers
    survive 0005; an approval may carry its decision; the downgrade restores the old constraints."""
    migrations.upgrade(bare_engine, "0004")
    insert_event = text(
        "INSERT INTO promotion_events (adapter_id, kind, actor, at, from_version_id, to_version_id, reason, "
        "decision_id, reverts_event_id) SELECT a.id, :kind, 'x', CURRENT_TIMESTAMP, v.id, v.id, 'r', :d, :rev "
        "FROM adapters a, adapter_versions v")
    with bare_engine.begin() as conn:
        _old_adapter_version(conn)
        conn.execute(text(
            "INSERT INTO decisions (adapter_version_id, config_hash, promoted, statistics_json, sentence, "
            "created_at) SELECT id, :h, :t, '{}', 'kept', CURRENT_TIMESTAMP FROM adapter_versions"),
            {"h": "d" * 64, "t": True})
        conn.execute(insert_event, {"kind": "manual_override", "d": None, "rev": None})
        first = conn.execute(text("SELECT max(id) FROM promotion_events")).scalar_one()
        conn.execute(insert_event, {"kind": "rollback", "d": None, "rev": first})
    migrations.upgrade(bare_engine)
    assert migrations.current(bare_engine) == HEAD
    with bare_engine.connect() as conn:
        rows = conn.execute(text("SELECT kind, reverts_event_id FROM promotion_events ORDER BY id")).all()
    assert rows == [("manual_override", None), ("rollback", first)]
    assert len(_triggers(bare_engine)) >= 2
    with pytest.raises(DatabaseError, match="append-only"), bare_engine.begin() as conn:
        conn.execute(text("UPDATE promotion_events SET reason = 'rewritten'"))
    with bare_engine.begin() as conn:
        did = conn.execute(text("SELECT id FROM decisions")).scalar_one()
        conn.execute(insert_event, {"kind": "approval", "d": did, "rev": None})
    migrations.check(bare_engine)
    with pytest.raises(IntegrityError):  # an approval is recorded: the old constraints refuse to come back
        migrations.downgrade(bare_engine, "0004")
    assert migrations.current(bare_engine) == HEAD
    with bare_engine.begin() as conn:  # a registry with no approval downgrades (test-only: triggers off)
        if bare_engine.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER promotion_events_no_delete"))
        else:
            conn.execute(text("ALTER TABLE promotion_events DISABLE TRIGGER promotion_events_no_change"))
        conn.execute(text("DELETE FROM promotion_events WHERE kind = 'approval'"))
    migrations.downgrade(bare_engine, "0004")
    assert "reviews" not in inspect(bare_engine).get_table_names()
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM promotion_events")).scalar_one() == 2


def test_0006_adds_cost_columns_null_for_old_rows_and_downgrades(bare_engine):
    """Candidates and evaluations written before 0006 keep their rows, with their cost unknown (NULL), and back."""
    migrations.upgrade(bare_engine, "0005")
    with bare_engine.begin() as conn:
        _old_adapter_version(conn)
        conn.execute(text(
            "INSERT INTO candidates (adapter_version_id, config_hash, policy, params_json, seed, is_control, "
            "created_at) SELECT id, :h, 'hns', '{}', 0, :f, CURRENT_TIMESTAMP FROM adapter_versions"),
            {"h": "c" * 64, "f": False})
        conn.execute(text(
            "INSERT INTO evaluations (adapter_version_id, candidate_id, subject, benchmark, metric, value, "
            "evaluator_key, higher_is_better, kind, created_at) SELECT v.id, c.id, 'candidate:' || c.id, 'b', 'acc', "
            "0.5, :k, :t, 'task', CURRENT_TIMESTAMP FROM adapter_versions v, candidates c"), {"k": "e" * 64, "t": True})
    migrations.upgrade(bare_engine)
    assert migrations.current(bare_engine) == HEAD
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT policy, seconds_json FROM candidates")).all() == [("hns", None)]
        assert conn.execute(text("SELECT value, seconds FROM evaluations")).all() == [(0.5, None)]
    migrations.check(bare_engine)
    migrations.downgrade(bare_engine, "0005")
    columns = {c["name"] for c in inspect(bare_engine).get_columns("evaluations")}
    assert "seconds" not in columns and "value" in columns
    assert "seconds_json" not in {c["name"] for c in inspect(bare_engine).get_columns("candidates")}
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM evaluations")).scalar_one() == 1


def test_0007_admits_cancelled_runs_keeps_references_and_downgrades(bare_engine):
    """A run row referenced by an adapter run survives 0007; ``cancelled`` is admitted (and nothing else new); the
    downgrade records a cancelled run as failed, as before 0007."""
    migrations.upgrade(bare_engine, "0006")
    insert_run = text("INSERT INTO refinement_runs (flow_run_id, started_at, status, config_snapshot, config_hash) "
                      "VALUES (:f, CURRENT_TIMESTAMP, :s, '{}', 'h')")
    with bare_engine.begin() as conn:
        _old_adapter_version(conn)
        conn.execute(insert_run, {"f": "a", "s": "running"})
        conn.execute(text("INSERT INTO adapter_runs (run_id, adapter_version_id, config_hash, status) "
                          "SELECT r.id, v.id, 'h', 'running' FROM refinement_runs r, adapter_versions v"))
    with pytest.raises(IntegrityError), bare_engine.begin() as conn:
        conn.execute(text("UPDATE refinement_runs SET status = 'cancelled'"))
    migrations.upgrade(bare_engine)
    assert migrations.current(bare_engine) == HEAD
    with bare_engine.begin() as conn:
        conn.execute(text("UPDATE refinement_runs SET status = 'cancelled'"))
        assert conn.execute(text("SELECT count(*) FROM adapter_runs")).scalar_one() == 1
    with pytest.raises(IntegrityError), bare_engine.begin() as conn:
        conn.execute(insert_run, {"f": "b", "s": "paused"})
    migrations.check(bare_engine)
    migrations.downgrade(bare_engine, "0006")
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM refinement_runs")).scalars().all() == ["failed"]
    with pytest.raises(IntegrityError), bare_engine.begin() as conn:
        conn.execute(text("UPDATE refinement_runs SET status = 'cancelled'"))


def test_0008_admits_deferred_adapter_runs_and_priorities_and_downgrades(bare_engine):
    """Adapters get a priority (0 for those registered before), adapter runs a ``deferred`` status and a forecast;
    the downgrade drops deferred rows (before 0008 a version not started had no adapter run that night)."""
    migrations.upgrade(bare_engine, "0007")
    with bare_engine.begin() as conn:
        _old_adapter_version(conn)
        conn.execute(text("INSERT INTO refinement_runs (flow_run_id, started_at, status, config_snapshot, config_hash) "
                          "VALUES ('a', CURRENT_TIMESTAMP, 'completed', '{}', 'h')"))
    insert = text("INSERT INTO adapter_runs (run_id, adapter_version_id, config_hash, status) "
                  "SELECT r.id, v.id, :h, :s FROM refinement_runs r, adapter_versions v")
    with pytest.raises(IntegrityError), bare_engine.begin() as conn:
        conn.execute(insert, {"h": "h0", "s": "deferred"})
    with bare_engine.begin() as conn:
        conn.execute(insert, {"h": "h1", "s": "completed"})
    migrations.upgrade(bare_engine)
    with bare_engine.begin() as conn:
        assert conn.execute(text("SELECT priority FROM adapters")).scalars().all() == [0]
        conn.execute(text("UPDATE adapter_runs SET status = 'deferred', forecast_seconds = 12.5, "
                          "plan_reason = 'would end past the window', wall_seconds = NULL"))
    with pytest.raises(IntegrityError), bare_engine.begin() as conn:
        conn.execute(text("UPDATE adapter_runs SET status = 'paused'"))
    migrations.check(bare_engine)
    migrations.downgrade(bare_engine, "0007")
    with bare_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM adapter_runs")).scalar_one() == 0
    assert "priority" not in {c["name"] for c in inspect(bare_engine).get_columns("adapters")}
