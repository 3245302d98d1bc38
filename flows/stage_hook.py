"""A test-only pause point at each stage of a nightly run, so that a test can SIGKILL the run exactly there.

Harmless in production: :func:`reached` does nothing unless ``$SPECTRAL_SURGERY_PAUSE_AT`` names the stage. When
it does, the process writes the stage's name to ``$SPECTRAL_SURGERY_PAUSE_FILE`` (if set) and sleeps until it is
killed: the test waits for that file, kills the process, and checks that the next run resumes with no lost,
duplicated or stale rows (tests/flows/test_nightly.py, ``test_killed_at_each_stage_resumes_cleanly``).

The stages, in the order one adapter meets them: ``scan`` (a version recorded), ``calibration`` (one batch done),
``editing`` (one candidate written and recorded), ``evaluation`` (one evaluation recorded), ``decision`` (the
decision recorded, production not moved yet), ``promotion`` (production moved, the adapter run not closed yet).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV_AT = "SPECTRAL_SURGERY_PAUSE_AT"
ENV_FILE = "SPECTRAL_SURGERY_PAUSE_FILE"
STAGES = ("scan", "calibration", "editing", "evaluation", "decision", "promotion")


def reached(stage: str) -> None:
    """Pause here for good if ``$SPECTRAL_SURGERY_PAUSE_AT`` is ``stage`` (tests only); otherwise return at once."""
    if os.environ.get(ENV_AT) != stage:
        return
    if path := os.environ.get(ENV_FILE):
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(stage)
        os.replace(tmp, path)
    while True:  # until the test kills the process
        time.sleep(3600)
