"""A PostgreSQL server for the tests that need one (the registry's, and the flow tests that run on PostgreSQL).

PostgreSQL comes from ``$SPECTRAL_TEST_PG_URL`` (CI's ``.ci/run`` starts a server and sets it). Without it, a
throwaway cluster is started from the Debian binaries (``/usr/lib/postgresql/<v>/bin``) in a temp directory on a
free loopback port (as root, through ``runuser -u postgres`` because ``initdb`` refuses to run as root). If neither
works the PostgreSQL tests skip and say why. Every test gets its own fresh schema on that server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import make_url, text

from spectral_surgery.registry.db import make_engine, normalize_url

PG_ENV = "SPECTRAL_TEST_PG_URL"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name.split(".")[0]))
    for d in reversed(found):
        if (Path(d) / "initdb").is_file() and (Path(d) / "pg_ctl").is_file():
            return Path(d)
    return None


def _start_cluster() -> tuple[str, Callable[[], None]]:
    """Start a throwaway PostgreSQL cluster; return (URL of its ``postgres`` database, stop function)."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        raise RuntimeError("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    if as_root and shutil.which("runuser") is None:
        raise RuntimeError("running as root and runuser is missing (initdb refuses to run as root)")
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    root = Path(tempfile.mkdtemp(prefix="ss-test-pg-"))
    if as_root:
        shutil.chown(root, user="postgres")
    port = _free_port()
    data, log = root / "data", root / "log"

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {done.stderr.strip() or done.stdout.strip()}")

    try:
        run(str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=100")
        run(str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", opts, "start")
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise

    def stop() -> None:
        subprocess.run([*prefix, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)

    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a PostgreSQL server's maintenance database (from ``$SPECTRAL_TEST_PG_URL`` or a throwaway cluster)."""
    if os.environ.get(PG_ENV):
        yield normalize_url(os.environ[PG_ENV])
        return
    try:
        url, stop = _start_cluster()
    except Exception as exc:  # any failure means "no server here": skip with the reason
        pytest.skip(f"PostgreSQL tests skipped: ${PG_ENV} is not set and no throwaway cluster could be started "
                    f"({exc}). Install the Debian package 'postgresql' or set ${PG_ENV}.")
    try:
        yield url
    finally:
        stop()


@contextlib.contextmanager
def fresh_schema(server: str) -> Iterator[str]:
    """URL of a fresh, empty schema on the PostgreSQL server at ``server``, dropped when the block ends.

    A schema rather than a database (``CREATE DATABASE`` costs about half a second, ``CREATE SCHEMA`` nothing): the
    URL sets ``search_path`` to it, so tables, the Alembic version table and the trigger function all land there,
    exactly as they would in ``public``.
    """
    admin = make_engine(server).execution_options(isolation_level="AUTOCOMMIT")
    name = f"ss_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        url = make_url(server)
        yield url.set(query={**url.query, "options": f"-csearch_path={name}"}).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text("SET lock_timeout = '20s'"))
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """URL of a fresh, empty schema on the PostgreSQL server, dropped after the test (:func:`fresh_schema`)."""
    with fresh_schema(pg_server) as url:
        yield url
