"""Engines and sessions for the registry: SQLite by default, PostgreSQL by URL.

SQLite is set up for several processes writing one file (the nightly flow's workers, the CLI, the dashboard):
WAL (readers never block the writer), a 30 s busy timeout, foreign keys on, and write transactions that start
with ``BEGIN IMMEDIATE``. The last point matters: pysqlite's default ``BEGIN`` (deferred) takes the write lock
only at the first write, and a transaction that read first and then cannot upgrade its lock fails at once with
"database is locked" instead of waiting. Following SQLAlchemy's recipe, pysqlite's own transaction handling is
switched off and the engine emits the ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for write sessions, plain ``BEGIN``
for read sessions.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from spectral_surgery.tasks.config import default_data_dir

BUSY_TIMEOUT_S = 30.0
# The one environment variable naming the registry's database, read by the CLI and by Alembic's env.py.
DB_ENV = "SPECTRAL_SURGERY_DB"
# What registry/migrations/env.py read until the names were unified; still honoured, with a warning.
DEPRECATED_DB_ENV = "SPECTRAL_SURGERY_DB_URL"
# Execution option carried by write-mode engines/connections; read by the "begin" hook below.
_BEGIN_OPTION = "spectral_surgery_sqlite_begin"


def normalize_url(url: str) -> str:
    """Return ``url`` with PostgreSQL URLs pinned to the psycopg 3 driver.

    ``postgresql://`` and ``postgres://`` (as printed by most hosting providers) become
    ``postgresql+psycopg://``; every other URL is returned unchanged.

    Raises:
        ValueError: if ``url`` is not a SQLAlchemy URL.
    """
    try:
        parsed = make_url(url)
    except Exception as exc:  # sqlalchemy raises ArgumentError; say which setting is wrong
        raise ValueError(f"registry URL {url!r} is not a database URL (e.g. sqlite:///path/registry.db or "
                         f"postgresql://user@host/db): {exc}") from exc
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def env_url() -> str | None:
    """The registry URL from ``$SPECTRAL_SURGERY_DB``; ``None`` if it is unset or empty.

    The old ``$SPECTRAL_SURGERY_DB_URL`` is used only when ``$SPECTRAL_SURGERY_DB`` is not set, with a
    ``FutureWarning``: a script still exporting it keeps migrating the database it meant, not the default file.
    """
    url = os.environ.get(DB_ENV)
    if url:
        return url
    old = os.environ.get(DEPRECATED_DB_ENV)
    if old:
        warnings.warn(f"${DEPRECATED_DB_ENV} is deprecated: set ${DB_ENV} instead (same value)", FutureWarning,
                      stacklevel=2)
        return old
    return None


def default_url(data_dir: Path | None = None) -> str:
    """The default registry: the SQLite file ``<data_dir>/registry.db``.

    Args:
        data_dir: Directory of the SQLite file; default ``$SPECTRAL_SURGERY_HOME`` or ``~/.spectral-surgery``.
    """
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    return f"sqlite:///{directory / 'registry.db'}"


def _setup_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control away from pysqlite (it would BEGIN lazily and COMMIT before DDL).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        # With WAL, NORMAL stays consistent after a crash and only the last commits may roll back on power loss.
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "IMMEDIATE" else "BEGIN")


def make_engine(url: str | None = None, data_dir: Path | None = None, *, echo: bool = False) -> Engine:
    """Create the registry's engine.

    Args:
        url: SQLAlchemy URL. ``postgresql://`` is rewritten to ``postgresql+psycopg://``. Default: the SQLite
            file ``<data_dir>/registry.db``.
        data_dir: Directory of the default SQLite file (created if missing); ignored when ``url`` is given.
        echo: Log every SQL statement.

    Returns:
        The engine. Use :func:`write_engine` (or ``session_scope(..., write=True)``) for write transactions.
    """
    url = normalize_url(url or default_url(data_dir))
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": BUSY_TIMEOUT_S})
        _setup_sqlite(engine)
        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)


def write_engine(engine: Engine) -> Engine:
    """A view of ``engine`` (same pool) whose transactions take SQLite's write lock at ``BEGIN``.

    On PostgreSQL the option is ignored: row locks and unique constraints do the work there.
    """
    return engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})


@contextmanager
def session_scope(engine: Engine, *, write: bool = True) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on any exception.

    Objects stay usable after the block (``expire_on_commit=False``): loaded attributes keep their values.

    Args:
        engine: From :func:`make_engine`.
        write: Start the transaction with ``BEGIN IMMEDIATE`` on SQLite (wait for the write lock up front).
            Pass ``False`` for read-only work so readers never queue behind writers.
    """
    bind = write_engine(engine) if write else engine
    session = sessionmaker(bind=bind, expire_on_commit=False)()
    try:
        with session.begin():
            yield session
    finally:
        session.close()
