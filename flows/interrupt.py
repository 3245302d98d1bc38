"""A clean stop: SIGINT or SIGTERM asks the run to stop; no production move starts after it.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group, at any moment: during imports, while
Prefect starts its server, in the middle of a database write. Python's default (raise ``KeyboardInterrupt``
wherever the main thread happens to be) loses the interrupt when it lands in a weakref callback ("Exception
ignored in ...") and never reaches the worker threads that refine adapters and promote them. So the handler of
:func:`install` only records the request (:data:`STOP`); the work stops at its next checkpoint:

- :func:`check` raises :class:`Interrupted` (a ``KeyboardInterrupt``) once a stop was requested. The nightly flow
  calls it between steps and while it waits for adapters; the per-adapter flow between stages, calibration batches,
  candidates and evaluations;
- the promotion calls it inside the database transaction that moves the production pointer, after taking the
  adapter's lock (:meth:`registry.production.ProductionStore.promote_decision`): a move either started before the
  signal and commits whole, or it does not start. A process killed mid-transaction rolls back (SQLite, PostgreSQL).
  The same transaction locks the run's row and needs it ``running``: the nightly flow marks it ``cancelled`` as it
  stops, which stops a worker in another process (Dask) that never saw the signal.

:func:`watchdog` bounds the wait for a checkpoint (a model pass can take minutes): past the grace period it runs the
caller's last words and ends the process. Nothing here imports Prefect or the registry.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar

STOP = threading.Event()
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []
_handlers: dict[int, Callable] = {}
_callbacks: list[Callable[[], None]] = []


class Interrupted(KeyboardInterrupt):
    """A stop was requested (SIGINT or SIGTERM): raised at the next checkpoint, never inside a transaction's commit.

    A ``KeyboardInterrupt`` so that the ``except Exception`` clauses that turn one adapter's failure into data do
    not swallow it, and the command line reports it as ``error: interrupted`` (exit 130).
    """


class WindowEnded(Interrupted):
    """The night's window ended (with its grace) while this adapter was in flight: raised at its next checkpoint
    (:func:`check`), only in the context that runs the adapter (:func:`window_deadline`); the per-adapter flow
    records it deferred, not failed. An ``Interrupted`` so that no ``except Exception`` takes it for a failure."""


_deadline: ContextVar[tuple[float, Callable[[], float]] | None] = ContextVar("window_deadline", default=None)


@contextlib.contextmanager
def window_deadline(left_s: float | None, clock: Callable[[], float] = time.monotonic):
    """Within the block (and the contexts copied from it: the adapter's tasks), :func:`check` raises
    :class:`WindowEnded` once ``clock()`` has advanced ``left_s`` seconds; None: no deadline."""
    token = _deadline.set(None if left_s is None else (clock() + left_s, clock))
    try:
        yield
    finally:
        _deadline.reset(token)


def requested() -> bool:
    """Whether a stop was requested (a signal received, or :func:`request` called)."""
    return STOP.is_set()


def request(signum: int | None = None) -> None:
    """Ask every checkpoint of this process to stop (what the signal handler does)."""
    if signum is not None:
        _received.append(signum)
    first = not STOP.is_set()
    STOP.set()
    for fn in list(_callbacks) if first else []:
        try:
            fn()
        except Exception:  # a callback must not turn the stop into a crash
            pass


def on_request(fn: Callable[[], None]) -> None:
    """Call ``fn()`` once, when the first stop is requested (in the thread that requests it: the main thread for a
    signal). Keep it short: it runs inside the signal handler."""
    _callbacks.append(fn)


def signal_name() -> str:
    """The first signal received (``SIGINT``), or ``stop`` when the stop was requested by code."""
    return signal.Signals(_received[0]).name if _received else "stop"


def check() -> None:
    """Raise :class:`Interrupted` if a stop was requested; otherwise return at once.

    Raises:
        Interrupted: a stop was requested.
        WindowEnded: the window's hard stop passed, in an adapter's context (:func:`window_deadline`).
    """
    if STOP.is_set():
        raise Interrupted(f"interrupted ({signal_name()})")
    if (d := _deadline.get()) is not None and d[1]() >= d[0]:
        raise WindowEnded("the night's window ended (window.wall_clock + window.grace) while it was in flight")


def wait(seconds: float) -> None:
    """Sleep up to ``seconds``, waking (and raising :class:`Interrupted`) as soon as a stop is requested."""
    STOP.wait(seconds)
    check()


def _handle(signum: int, frame) -> None:
    # Only records the request: raising here would land at an arbitrary point of the main thread (a weakref callback,
    # where Python swallows it, or Prefect's engine half-way through a state change).
    request(signum)


def install() -> bool:
    """Make SIGINT and SIGTERM request a stop (:func:`request`) instead of raising where the main thread happens to be.

    Returns:
        False (and nothing changes) outside the main thread, where Python allows no signal handler.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    for sig in SIGNALS:
        _handlers.setdefault(sig, signal.getsignal(sig))
        signal.signal(sig, _handle)
    return True


def rearm() -> None:
    """Put :func:`install`'s handlers back if they were installed and something replaced them.

    Prefect's flow engine swaps SIGTERM for its own bridge (which raises ``TerminationSignal`` wherever the main
    thread is) for the duration of a flow run; the nightly flow calls this first so that a SIGTERM is a clean stop
    there too. Prefect restores the handler it replaced (ours) when the flow run ends.
    """
    if not _handlers or threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        if signal.getsignal(sig) is not _handle:
            signal.signal(sig, _handle)


def uninstall() -> None:
    """Restore the handlers :func:`install` replaced and forget the :func:`on_request` callbacks (the end of a
    command that was not stopped). A stop request, once made, stays: see :func:`reset`."""
    if threading.current_thread() is threading.main_thread():
        for sig, old in _handlers.items():
            signal.signal(sig, old)
    _handlers.clear()
    _callbacks.clear()


def reset() -> None:
    """:func:`uninstall`, and forget a stop request (tests). Never while work runs: its checkpoints would go on."""
    uninstall()
    _received.clear()
    STOP.clear()


def watchdog(grace_s: float, last_words: Callable[[], None], code: int = 130) -> threading.Event:
    """End the process ``grace_s`` seconds after a stop was requested, unless the caller said it is done by then.

    The checkpoints stop the work within a batch or one evaluation; a model pass can take longer, and Python cannot
    stop a thread. Ending the process is safe: every registry write is one transaction (rolled back if cut), every
    file is written to a temporary name and renamed, and a promotion past its check commits before it returns.

    Args:
        grace_s: Seconds after the request.
        last_words: Runs before the process ends (print the message, stop a server); its errors are ignored.
        code: The exit status.

    Returns:
        The event to set when the process is ending by itself (the watchdog then stands down).
    """
    done = threading.Event()

    def run() -> None:
        while not STOP.wait(0.5):
            if done.is_set():
                return
        if done.wait(grace_s):
            return
        try:
            last_words()
        finally:
            os._exit(code)

    threading.Thread(target=run, name="interrupt-watchdog", daemon=True).start()
    return done

