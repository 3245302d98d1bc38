"""The adapter registry: what exists, what each nightly run produced, and what is in production.

``registry.repository.Registry`` is the only code that writes the database; ``registry.db`` makes engines
(SQLite by default, PostgreSQL by URL) and runs the Alembic migrations (``init_db``).
"""
