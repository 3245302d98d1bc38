"""A test-only pause point at each stage of a nightly run, so that a test can SIGKILL the run exactly there.

Harmless in production: :func:`reached` does nothing unless ``$SPECTRAL_SURGERY_PAUSE_AT`` names the stage. When
it does, the process writes the stage's name to ``$SPECTRAL_SURGERY_PAUSE_FILE`` (if set) and holds there until it
is killed, or until a stop is requested (:mod:`flows.interrupt`: SIGINT/SIGTERM), when it raises
:class:`~flows.interrupt.Interrupted` as the stage's own next checkpoint would. The tests wait for that file, then
kill the process (tests/flows/test_nightly.py, ``test_killed_at_each_stage_resumes_cleanly``) or press ^C
(tests/flows/test_interrupt.py), and check that the next run resumes with no lost, duplicated or stale rows.

The stages, in the order one adapter meets them: ``scan`` (a version recorded), ``calibration`` (one batch done),
``editing`` (one candidate written and recorded), ``evaluation`` (one evaluation recorded), ``decision`` (the
decision recorded, production not moved yet), ``promotion`` (production moved, the adapter run not closed yet).
:data:`STARTUP` comes before them all: the command line's start-up, before the flow (and Prefect's server) starts.

The same calls feed the command line's progress display: :func:`current` is the stage this process reached last and
:func:`planned` the number of adapter versions the nightly flow found to refine (:func:`plan`), both in-process
(Dask workers in other processes leave the stage unknown; the registry still tells what finished).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_AT = "SPECTRAL_SURGERY_PAUSE_AT"
ENV_FILE = "SPECTRAL_SURGERY_PAUSE_FILE"
STAGES = ("scan", "calibration", "editing", "evaluation", "decision", "promotion")
STARTUP = "startup"
_last: dict[str, object] = {"stage": None, "planned": None}


def current() -> str | None:
    """The stage this process reached last (None before the first)."""
    return _last["stage"]  # type: ignore[return-value]


def planned() -> int | None:
    """How many adapter versions the nightly flow of this process plans to refine (None until it has scanned)."""
    return _last["planned"]  # type: ignore[return-value]


def plan(n: int) -> None:
    """Record that the nightly flow found ``n`` adapter versions to refine (read by :func:`planned`)."""
    _last["planned"] = n


def forget() -> None:
    """Clear :func:`current` and :func:`planned` (the start of a command's run)."""
    _last.update(stage=None, planned=None)


def reached(stage: str) -> None:
    """Pause here if ``$SPECTRAL_SURGERY_PAUSE_AT`` is ``stage`` (tests only), until the process is killed or a stop
    is requested; otherwise return at once.

    Raises:
        flows.interrupt.Interrupted: a stop was requested while paused.
    """
    from spectral_surgery.flows import interrupt

    _last["stage"] = stage
    if os.environ.get(ENV_AT) != stage:
        return
    if path := os.environ.get(ENV_FILE):
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(stage)
        os.replace(tmp, path)
    while True:  # until the test kills the process or asks it to stop
        interrupt.wait(0.1)
