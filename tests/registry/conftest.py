"""Registry fixtures: a migrated SQLite file and a migrated database on a real PostgreSQL server (``pg_url``, from
``tests/pg.py`` through the root conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from spectral_surgery.registry.db import make_engine
from spectral_surgery.registry.migrations import init_db
from spectral_surgery.registry.repository import Registry


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a fresh SQLite file."""
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """An empty database on each backend: a SQLite file, then a PostgreSQL database."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine on each backend."""
    eng = make_engine(db_url)
    init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def registry(engine: Engine) -> Registry:
    """A ``Registry`` on a migrated database, on each backend."""
    return Registry(engine)
