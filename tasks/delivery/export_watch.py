"""Keep an export directory current: poll the production set and re-export only what changed.

:func:`watch` is the loop of ``spectral-surgery export DIR --watch``. Every ``interval`` seconds it reads the
production set (a callable, so that this module knows nothing of the registry: the CLI passes
:func:`registry.read.production_set` mapped to :class:`tasks.delivery.export.ExportItem`), compares each adapter with
what it exported last, and exports only the adapters whose files, hash or ``production.json`` entry changed, through
:func:`tasks.delivery.export.export_production` (so every switch is the same atomic one as a single export, and
``production.json`` keeps the entries of the adapters not re-exported).

* The first poll exports (or verifies as ``unchanged``) every adapter.
* An adapter that failed (a missing or altered artifact, a full disk) keeps serving its previous export and is tried
  again at every poll; its failure is reported once per distinct reason, not at every poll.
* A read that raises one of ``transient`` (the CLI passes SQLAlchemy's and the OS's errors: a database restarting, a
  lock held too long) is reported and retried at the next poll; the watcher never dies of it. Any other exception
  propagates (a bug, or a refused input such as an unknown ``--adapter``).
* ``stop`` (a :class:`threading.Event`, set by the CLI's SIGINT/SIGTERM handler) ends the loop between polls; an
  export in progress finishes its current switch first, so a stop never leaves a half-switched adapter.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectral_surgery.tasks.delivery.export import ExportError, ExportItem, Outcome, export_production

__all__ = ["WatchState", "item_key", "watch", "watch_tick"]


def item_key(item: ExportItem) -> str:
    """What decides whether ``item`` must be exported again: its source, recorded hash and manifest info."""
    return json.dumps([str(item.source) if item.source is not None else None, item.sha256, item.info],
                      sort_keys=True, default=str)


@dataclass
class WatchState:
    """What the watcher remembers between polls.

    Attributes:
        exported: adapter name -> :func:`item_key` of what was last exported (or found unchanged, or skipped).
        failed: adapter name -> the reason of its last failure (reported once per distinct reason).
        read_error: the last read error reported (``None`` once a read succeeds again).
        dir_error: the last error of the export directory itself (an invalid ``production.json``).
        ticks: polls done so far.
    """

    exported: dict[str, str]
    failed: dict[str, str]
    read_error: str | None = None
    dir_error: str | None = None
    ticks: int = 0


def watch_tick(read: Callable[[], list[ExportItem]], out_dir: Path, state: WatchState, *,
               report: Callable[[Outcome, ExportItem], None], warn: Callable[[str], None],
               transient: tuple[type[BaseException], ...] = (), **export_options: Any) -> list[Outcome]:  # fmt: skip
    """One poll: read the production set, export what changed since ``state``, update ``state``.

    ``report(outcome, item)`` is called for every adapter that was exported, switched or failed (a failure once per
    distinct reason); ``warn(message)`` for a transient read error (once until a read succeeds again) and for an
    export directory that cannot be read (an invalid ``production.json``).

    Returns:
        The outcomes of the adapters exported in this poll (empty when nothing changed or the read failed).
    """
    state.ticks += 1
    try:
        items = read()
    except transient as e:
        text = f"{type(e).__name__}: {e}".splitlines()[0]
        if text != state.read_error:
            warn(f"reading the production set failed ({text}); retrying every poll")
        state.read_error = text
        return []
    if state.read_error is not None:
        warn("reading the production set works again")
        state.read_error = None
    todo = [i for i in items if i.name in state.failed or state.exported.get(i.name) != item_key(i)]
    if not todo:
        return []
    try:
        outcomes, _ = export_production(todo, out_dir, **export_options)
    except (ExportError, OSError) as e:  # production.json unreadable, or two names sharing a folder
        if str(e) != state.dir_error:
            warn(f"the export failed: {e}; retrying every poll")
        state.dir_error = str(e)
        return []
    state.dir_error = None
    for item, outcome in zip(todo, outcomes):
        if outcome.status == "failed":
            if state.failed.get(item.name) != outcome.reason:
                report(outcome, item)
            state.failed[item.name] = outcome.reason or ""
            continue
        state.failed.pop(item.name, None)
        state.exported[item.name] = item_key(item)
        if outcome.status in ("exported", "switched"):
            report(outcome, item)
    return outcomes


def watch(read: Callable[[], list[ExportItem]], out_dir: str | Path, *, interval: float,
          report: Callable[[Outcome, ExportItem], None], warn: Callable[[str], None],
          stop: threading.Event | None = None, max_ticks: int | None = None,
          transient: Sequence[type[BaseException]] = (), **export_options: Any) -> WatchState:  # fmt: skip
    """Poll every ``interval`` seconds until ``stop`` is set or ``max_ticks`` polls are done (module docstring).

    Args:
        read: Returns the production set (every adapter, or the one being watched) as export items.
        out_dir: The export directory.
        interval: Seconds between the start of one poll and the next (a slow poll shortens the wait).
        report: Called with each adapter's outcome that changed something or failed (see :func:`watch_tick`).
        warn: Called with a one-line message for transient read errors and export-directory errors.
        stop: Ends the loop at the next wait (or before the next poll).
        max_ticks: Stop after this many polls (``None``: until ``stop``).
        transient: Exception types of ``read`` that are retried at the next poll.
        **export_options: ``normalise_config`` and ``keep_previous`` of :func:`tasks.delivery.export.export_production`.

    Returns:
        The final :class:`WatchState`.
    """
    import time

    if interval <= 0:
        raise ValueError(f"interval must be positive, got {interval}")
    stop = stop or threading.Event()
    out_dir = Path(out_dir).expanduser().absolute()
    state = WatchState({}, {})
    while not stop.is_set():
        started = time.monotonic()
        watch_tick(read, out_dir, state, report=report, warn=warn, transient=tuple(transient), **export_options)
        if max_ticks is not None and state.ticks >= max_ticks:
            break
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    return state
