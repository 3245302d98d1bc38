"""The plumbing every part of the registry API shares: the engine, one transaction per call, get-or-create.

Not used directly: :class:`registry.repository.Registry` combines the parts (adapters, runs, evidence,
production), each in its own module and each a subclass of :class:`Store`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spectral_surgery.registry.db import holds_write_lock, session_scope
from spectral_surgery.registry.models import Adapter
from spectral_surgery.registry.validation import NotFoundError

T = TypeVar("T")


class Store:
    """The engine of one registry and the session helpers of its methods (SQLite or PostgreSQL)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def close(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with session_scope(self.engine, write=True) as s:
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with session_scope(self.engine, write=False) as s:
            yield s

    @staticmethod
    def _get_or_create(s: Session, model: type[T], key: dict[str, Any], values: dict[str, Any]) -> tuple[T, bool]:
        """The row of ``model`` with ``key``, inserted with ``values`` if missing; ``(row, created)``.

        The insert runs in a SAVEPOINT: if another process inserted the same key first, the unique constraint
        fails, the savepoint rolls back, and that process's row is returned instead. A SQLite write session needs
        none: it holds the write lock since its ``BEGIN IMMEDIATE``, so no other process can have inserted the key
        since the read (two statements fewer per insert).
        """
        stmt = select(model).filter_by(**key)
        row = s.scalars(stmt).first()
        if row is not None:
            return row, False
        row = model(**key, **values)
        if holds_write_lock(s):
            s.add(row)
            s.flush()
            return row, True
        try:
            with s.begin_nested():
                s.add(row)
        except IntegrityError:
            existing = s.scalars(stmt).first()
            if existing is None:  # not a duplicate key: a real constraint violation
                raise
            return existing, False
        return row, True

    @staticmethod
    def _insert_missing(s: Session, model: type[T], key: Sequence[str],
                        rows: Sequence[dict[str, Any]]) -> dict[tuple, T]:
        """Insert ``rows`` of ``model`` in one statement, skipping every row whose ``key`` columns are stored already;
        returns key values -> the row stored under them (the one inserted, or the one found).

        ``INSERT ... ON CONFLICT (key) DO NOTHING RETURNING`` on SQLite and PostgreSQL alike: an insert that is new
        (what a night writes) costs one statement, with no read before it and no savepoint; a key another process
        wrote first is read back afterwards, and its stored values win. Only the unique constraint over exactly
        ``key`` is settled this way: any other violation (a missing foreign row) raises as before.
        """
        if not rows:
            return {}
        dialect = s.get_bind().dialect.name
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(model).on_conflict_do_nothing(index_elements=list(key)).returning(model)
        found = {tuple(getattr(r, k) for k in key): r for r in s.scalars(stmt, list(rows))}
        missing = [tuple(r[k] for k in key) for r in rows if tuple(r[k] for k in key) not in found]
        for values in missing:  # stored by another process first (a retried task, a racing run)
            found[values] = s.scalars(select(model).filter_by(**dict(zip(key, values)))).one()
        return found

    def _adapter(self, s: Session, adapter: Adapter | str | int) -> Adapter:
        if isinstance(adapter, Adapter):
            adapter = adapter.id
        if isinstance(adapter, int):
            found = s.get(Adapter, adapter)
            if found is None:
                raise NotFoundError(f"no adapter with id {adapter}")
            return found
        found = s.scalars(select(Adapter).where(Adapter.name == adapter)).first()
        if found is None:
            names = list(s.scalars(select(Adapter.name)))
            close = difflib.get_close_matches(str(adapter), names, n=3)
            hint = (
                f"; did you mean {', '.join(map(repr, close))}?"
                if close
                else "; register it first (`spectral-surgery register NAME ...`)"
            )
            raise NotFoundError(f"no adapter named {adapter!r}{hint}")
        return found

    @staticmethod
    def _row(s: Session, model: type[T], row_id: int, what: str) -> T:
        row = s.get(model, row_id)
        if row is None:
            raise NotFoundError(f"no {what} with id {row_id}")
        return row
