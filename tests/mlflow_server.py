"""A real MLflow tracking server for the mirror's tests: ``mlflow server`` on a free loopback port, an SQLite
backend store and a proxied artifact store in a temp directory, started once per session, its process group killed
at the end.

Its job runner (the GenAI job executor, which needs ``huey``) is switched off: the mirror uses none of it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

STARTUP_S = 120  # measured 8-13 s on 2 busy cores (the SQLite schema's migrations are most of it)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the server's child between fork and exec: SIGTERM it when the test process dies, even by SIGKILL (the
    fixture's finaliser then never runs, and the server would be left serving, orphaned)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[str]:
    """The tracking URI (``http://127.0.0.1:<port>``) of a fresh MLflow server for this session."""
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[test]'")
    root = Path(tempfile.mkdtemp(prefix="ss-test-mlflow-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=_die_with_parent)
    started = time.monotonic()
    try:
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() - started > STARTUP_S:
                tail = (root / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mlflow server did not come up on {url} (exit {proc.poll()}):\n{tail}")
            time.sleep(0.2)
        print(f"\nmlflow server up on {url} in {time.monotonic() - started:.1f}s", file=sys.stderr)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        log.close()
        shutil.rmtree(root, ignore_errors=True)
