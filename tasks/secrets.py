"""Credentials never stored: database URLs lose their password wherever they are written down.

A registry URL may carry a password (``postgresql://user:pw@host/db``). The run's config is written to the
registry (the run's config snapshot) and to Prefect's own database (the flow's parameters), so
:class:`tasks.run_config.RunConfig` serialises its URL through :func:`redact_url`, and
:func:`flows.refine_fleet.run_nightly` hands the real URL to the flow by reference: through the process
environment (``$SPECTRAL_SURGERY_DB``), never through a parameter. The password can also stay out of every file
from the start: give the URL without it and set ``PGPASSWORD`` (or use ``~/.pgpass``), which the PostgreSQL
driver reads itself.
"""

from __future__ import annotations

import re

REDACTED = "***"
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]*)@")


def has_password(url: str | None) -> bool:
    """True if ``url`` carries a password (``scheme://user:password@...``) other than the redaction mark."""
    m = _USERINFO.match(url or "")
    return bool(m and m["pw"] and m["pw"] != REDACTED)


def password_of(url: str | None) -> str | None:
    """The password ``url`` carries (``scheme://user:password@...``), or None (for :func:`redact_text`)."""
    m = _USERINFO.match(url or "")
    return m["pw"] if m and m["pw"] and m["pw"] != REDACTED else None


def redact_url(url: str | None) -> str | None:
    """``url`` with its password replaced by ``***`` (user, host, port, database and query kept); None stays None.

    Works on any ``scheme://user:password@host`` URL, parseable by SQLAlchemy or not (a password with odd
    characters must not slip through because the URL failed to parse).
    """
    if url is None:
        return None
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", url, count=1)


def redact_text(text: str, secrets: list[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***`` (for messages that may quote a URL)."""
    for s in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(s, REDACTED)
    return text
