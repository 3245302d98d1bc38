"""The live dashboard server (``spectral-surgery dashboard --serve``): it serves the page on localhost, notices
registry changes by fingerprint, re-renders and tells the page (``/version``) to reload.

Each test serves a COPY of the real-flow registry (``dashboard_support``), so its writes stay its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from spectral_surgery.flows.dashboard.server import start_dashboard_server
from tests.flows.dashboard_support import build_flow_registry, copy_registry, external_references, unpack_sections

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def flow(prefect_harness, fleet_base, tmp_path_factory):
    return build_flow_registry(tmp_path_factory.mktemp("dash_flow"), fleet_base)


@pytest.fixture
def reg(flow, tmp_path):
    copy = copy_registry(flow[0], tmp_path / "registry")
    yield copy
    copy.close()


def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode("utf-8")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode("utf-8")


def version_of(base: str) -> str:
    status, ctype, body = get(base + "version")
    assert status == 200 and ctype == "application/json"
    return json.loads(body)["version"]


def wait_for_new_version(base: str, old: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = version_of(base)
        if v != old:
            return v
        time.sleep(0.1)
    raise AssertionError(f"/version still {old} after {timeout}s: the server did not notice the registry change")


def wait_for_checks(server, n: int, timeout: float = 20.0) -> None:
    """Until the server's poller has finished ``n`` registry checks in all (polled, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while server.checks < n:
        assert time.monotonic() < deadline, f"{server.checks} registry checks after {timeout}s, expected {n}"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page_version(html: str) -> str:
    return re.search(r'<body data-live="1" data-version="([0-9a-f]+)"', html).group(1)


def test_server_serves_the_page_and_reloads_on_registry_changes(reg, tmp_path):
    server = start_dashboard_server(reg, port=0, interval_s=0.2, cache_dir=tmp_path / "cache")
    try:
        base = server.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", base) and not base.endswith(":0/")
        status, ctype, html = get(base)
        assert status == 200 and ctype.startswith("text/html")
        v1 = page_version(html)
        assert version_of(base) == v1 == server.version
        assert "live · every 0.2 s" in html and external_references(html) == []
        assert "Adapter: <select name=\"alignment\">" in html  # served mode offers the alignment choice
        # A person rolls ad-mixed back (ad-win's first version was overwritten in place, so its rollback is
        # refused): the server notices, re-renders, and /version tells the page to reload.
        reg.rollback("ad-mixed", actor="carol", reason="served-page rollback test")
        v2 = wait_for_new_version(base, v1)
        html2 = get(base)[2]
        assert page_version(html2) == v2
        section = unpack_sections(html2)["adapter-ad-mixed"]
        assert "carol" in section and "served-page rollback test" in section
        # A new adapter appears.
        reg.register_adapter("ad-late", str(tmp_path / "nowhere"), "tiny-base", "code")
        v3 = wait_for_new_version(base, v2)
        html3 = get(base)[2]
        assert page_version(html3) == v3 and 'id="adapter-ad-late"' in html3
        renders, checks = server.renders, server.checks
        wait_for_checks(server, checks + 2)  # nothing changed: a whole poll (and more) does not re-render
        assert server.renders == renders and version_of(base) == v3
        # Other routes.
        assert get(base + "healthz")[:3:2] == (200, "ok")
        assert get(base + "nope")[0] == 404
        assert get(base, method="HEAD")[0] == 200
        status, _, chosen = get(base + "?alignment=ad-mixed")
        assert status == 200 and "Adapter <b>ad-mixed</b>" in chosen
        assert "<option selected>ad-mixed</option>" in chosen
    finally:
        server.shutdown()


def test_server_rejects_bad_settings(reg):
    with pytest.raises(ValueError, match="interval_s"):
        start_dashboard_server(reg, port=0, interval_s=0)
    server = start_dashboard_server(reg, port=0, interval_s=5)
    try:
        taken = int(server.url.rsplit(":", 1)[1].strip("/"))
        with pytest.raises(OSError):
            start_dashboard_server(reg, port=taken, interval_s=5)
    finally:
        server.shutdown()


def test_cli_dashboard_serve_end_to_end(reg, tmp_path):
    """``spectral-surgery dashboard --serve`` in its own process, on localhost, reloading from the registry."""
    port = free_port()
    data_dir = Path(reg.engine.url.database).parent
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "spectral_surgery.flows.cli", "dashboard", "--data-dir", str(data_dir), "--serve",
         "--port", str(port),
         "--interval", "0.3"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if get(base + "healthz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert proc.poll() is None, f"the server exited: {proc.stdout.read()}"
            assert time.monotonic() < deadline, "the server did not come up in 90 s"
            time.sleep(0.2)
        status, _, html = get(base)
        assert status == 200 and all(f'id="adapter-{n}"' in html for n in ("ad-win", "ad-mixed", "ad-bad"))
        assert 'data-live="1"' in html and external_references(html) == []
        v1 = page_version(html)
        reg.register_adapter("ad-from-cli-test", str(tmp_path / "x"), "tiny-base", "math")
        v2 = wait_for_new_version(base, v1)
        html2 = get(base)[2]
        assert page_version(html2) == v2 and 'id="adapter-ad-from-cli-test"' in html2
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the server shuts down cleanly
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{port}/" in out
