"""Alembic environment of the registry.

Run programmatically by :func:`registry.migrations.upgrade` (the engine's connection is passed in
``config.attributes["connection"]``), or from the command line with ``alembic -c registry/alembic.ini``: the URL is
``-x url=...``, else ``sqlalchemy.url`` of the ini file, else ``$SPECTRAL_SURGERY_DB`` (as the CLI), else the
default SQLite file ``<data_dir>/registry.db``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from spectral_surgery.registry.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(**kwargs) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things: later revisions rebuild tables in "batch" mode there.
        render_as_batch=kwargs.pop("dialect_name") == "sqlite",
        **kwargs,
    )


def _url() -> str:
    from spectral_surgery.registry.db import default_url, env_url, normalize_url

    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    return normalize_url(url or env_url() or default_url())


def _run_online(connection: Connection) -> None:
    _configure(connection=connection, dialect_name=connection.dialect.name)
    # With a connection that is already in a transaction (init_db) this joins it; the caller commits.
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        url = _url()
        _configure(url=url, literal_binds=True, dialect_name=url.split(":", 1)[0].split("+", 1)[0])
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_online(connection)
        return
    from spectral_surgery.registry.db import make_engine, write_engine

    engine = make_engine(_url())
    try:
        with write_engine(engine).begin() as conn:
            _run_online(conn)
    finally:
        engine.dispose()


main()
