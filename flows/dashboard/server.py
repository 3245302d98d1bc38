"""Serve the audit dashboard on localhost, live: re-rendered when the registry changes (``http.server`` only).

A poller thread reads the registry's fingerprint (:func:`registry.read.registry_fingerprint`: max ids and
latest timestamps, a few cheap aggregates) every ``interval_s`` seconds and re-renders the page when it changed.
The page polls ``GET /version`` at the same interval and reloads itself when the version differs from the one
it was rendered with, keeping its open sections and scroll position.

Routes: ``/`` (the page; ``?alignment=<adapter>`` picks the adapter of the subspace-alignment diagnostic),
``/version`` (``{"version": ...}``), ``/healthz``. Nothing is written to the registry.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from spectral_surgery.flows.dashboard.page import build_page
from spectral_surgery.registry.read import registry_fingerprint

log = logging.getLogger(__name__)


class DashboardServer:
    """A running dashboard server (see :func:`start_dashboard_server`).

    Attributes:
        url: ``http://host:port/``.
        version: The registry fingerprint of the page currently served.
        renders: How many times a page was rendered.
        checks: How many registry checks the poller has finished (a test waits for a few instead of sleeping).
    """

    def __init__(self, registry, host: str, port: int, interval_s: float, alignment_adapter: str | None,
                 cache_dir: Path | None) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s}")
        self.registry, self.interval_s = registry, float(interval_s)
        self.alignment_adapter, self.cache_dir = alignment_adapter, cache_dir
        self._lock = threading.Lock()
        self._pages: dict[str | None, tuple[str, str]] = {}  # alignment choice -> (version, html)
        self._stop = threading.Event()
        self.version = ""
        self.last_error: str | None = None
        self.renders = 0
        self.checks = 0
        self._refresh()  # fail early (bad URL, unmigrated database) instead of on the first request
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        h, p = self.httpd.server_address[:2]
        self.url = f"http://{h}:{p}/"
        self._threads = [threading.Thread(target=self.httpd.serve_forever, name="dashboard-http", daemon=True),
                         threading.Thread(target=self._poll, name="dashboard-poll", daemon=True)]
        for t in self._threads:
            t.start()

    def page(self, alignment: str | None = None) -> tuple[str, str]:
        """``(version, html)`` for an alignment choice, rendered again if the registry moved on since."""
        key = alignment or None
        with self._lock:
            cached = self._pages.get(key)
            if cached is not None and cached[0] == self.version:
                return cached
            html, _, version = build_page(self.registry, alignment_adapter=key or self.alignment_adapter, live=True,
                                          interval_s=self.interval_s, cache_dir=self.cache_dir)
            self.renders += 1
            self._pages = {k: v for k, v in self._pages.items() if v[0] == version}  # drop stale choices
            self._pages[key] = (version, html)
            return version, html

    def _refresh(self) -> None:
        with self._lock:
            html, _, version = build_page(self.registry, alignment_adapter=self.alignment_adapter, live=True,
                                          interval_s=self.interval_s, cache_dir=self.cache_dir)
            self.renders += 1
            self._pages = {None: (version, html)}
            # Published only now, so a page that reloads on the new version gets the new page.
            self.version = version

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if registry_fingerprint(self.registry) != self.version:
                    self._refresh()
                self.last_error = None
            except Exception as exc:  # e.g. the database is briefly unreachable: keep serving the last page
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("dashboard refresh failed (serving the previous page): %s", self.last_error)
            self.checks += 1

    def shutdown(self) -> None:
        """Stop serving and polling, promptly.

        The HTTP loop stops within its 0.5 s poll; the registry poller is told to stop but not waited for beyond a
        second: it may be in the middle of a render, and it is a daemon thread, so it never holds the process.
        """
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._threads[0].join(timeout=2)
        self._threads[1].join(timeout=1)


def _handler(server: DashboardServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            parts = urlsplit(self.path)
            if parts.path in ("/", "/index.html"):
                choice = (parse_qs(parts.query).get("alignment") or [None])[0]
                try:
                    _, html = server.page(choice)
                except Exception as exc:
                    log.exception("dashboard render failed")
                    self._send(503, f"dashboard render failed: {type(exc).__name__}: {exc}".encode(),
                               "text/plain; charset=utf-8")
                    return
                self._send(200, html.encode("utf-8"), "text/html; charset=utf-8")
            elif parts.path == "/version":
                body = {"version": server.version, "error": server.last_error}
                self._send(200, json.dumps(body).encode(), "application/json")
            elif parts.path == "/healthz":
                self._send(200, b"ok", "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found", "text/plain; charset=utf-8")

        do_HEAD = do_GET

        def log_message(self, fmt: str, *args) -> None:
            log.debug("dashboard %s - %s", self.address_string(), fmt % args)

    return Handler


def start_dashboard_server(registry, host: str = "127.0.0.1", port: int = 8765, interval_s: float = 5.0, *,
                           alignment_adapter: str | None = None, cache_dir: Path | None = None) -> DashboardServer:
    """Render the page and serve it in background threads; returns at once (``port=0`` picks a free port).

    Raises:
        OSError: the port is taken.
        ValueError: ``interval_s`` is not positive.
    """
    return DashboardServer(registry, host, port, interval_s, alignment_adapter, cache_dir)


def serve_dashboard(registry, host: str = "127.0.0.1", port: int = 8765, interval_s: float = 5.0, *,
                    alignment_adapter: str | None = None, cache_dir: Path | None = None) -> None:
    """Serve the live dashboard until interrupted (Ctrl-C).

    Args:
        registry: A ``registry.repository.Registry`` (read only).
        host: Interface to bind; the default serves this machine only.
        port: TCP port (0 = any free port).
        interval_s: How often the server checks the registry for changes and the page checks the server.
        alignment_adapter: Default adapter of the subspace-alignment diagnostic (the page can pick another).
        cache_dir: Where alignment results are cached on disk (default: memory only).
    """
    server = start_dashboard_server(registry, host, port, interval_s, alignment_adapter=alignment_adapter,
                                    cache_dir=cache_dir)
    stop = threading.Event()
    previous = {}

    def _stop(signum, frame) -> None:  # Ctrl-C and SIGTERM (a service manager) both end the loop below
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _stop)
    print(f"Spectral Surgery dashboard on {server.url} (refreshes every {interval_s:g} s; Ctrl-C to stop)", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        print("dashboard stopped", flush=True)
