"""The audit dashboard: a self-contained HTML page of the fleet's evidence, written to a file or served live.

Public entry points (what the command line calls): :func:`render_dashboard`, :func:`serve_dashboard`,
:func:`build_page`, :func:`evidence_markdown`, :func:`adapter_data` / :func:`adapter_markdown` and :func:`collect`.
Modules, top down: :mod:`~flows.dashboard.server` (HTTP, live reload) → :mod:`~flows.dashboard.page` (one page from
the registry) → :mod:`~flows.dashboard.html` → :mod:`~flows.dashboard.adapter_html` → :mod:`~flows.dashboard.fmt`
→ :mod:`~flows.dashboard.svg`; :mod:`~flows.dashboard.data` reads the registry into plain dicts. Nothing here
writes to the registry, and nothing here imports the command line.
"""

from spectral_surgery.flows.dashboard.data import collect
from spectral_surgery.flows.dashboard.page import (
    adapter_data,
    adapter_markdown,
    build_page,
    evidence_markdown,
    evidence_rows,
    render_dashboard,
)
from spectral_surgery.flows.dashboard.server import serve_dashboard

__all__ = ["adapter_data", "adapter_markdown", "build_page", "collect", "evidence_markdown", "evidence_rows",
           "render_dashboard",
           "serve_dashboard"]
