"""flows/cli/runlog.py: third-party warnings go to the run's log file, the project's own still reach the terminal."""

from __future__ import annotations

import io
import logging
import warnings

import pytest

from spectral_surgery.flows.cli import runlog


@pytest.fixture
def terminal(monkeypatch):
    """A terminal handler on the root logger, as ``logging.basicConfig`` and Prefect install. Prefect's loggers
    propagate to it whatever an earlier test's Prefect logging setup left (``prefect`` stops propagating once Prefect
    configures its own console handler, which then plays this handler's part)."""
    for name in ("prefect", "prefect._internal"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.mark.parametrize("verbose", [False, True])
def test_third_party_warnings_are_filed_not_shown(terminal, tmp_path, verbose):
    import lm_eval.utils  # noqa: F401 - imported, as by the evaluator: its own terminal handler must not print
    import transformers  # noqa: F401

    log = runlog.capture(verbose)
    try:
        with warnings.catch_warnings():  # whatever pytest's own filters say: shown, hence captured
            warnings.simplefilter("always")
            warnings.warn("held before the file is known", FutureWarning)  # the slow imports' deprecations
        path = log.open(tmp_path, "run")
        lm_eval.utils.setup_logging()  # what simple_evaluate does: adds no handler of its own now
        logging.getLogger("lm_eval.models.huggingface").warning("`pretrained` model kwarg is not of type `str`")
        from transformers.utils import logging as hf_logging

        hf_logging.get_logger("transformers.modeling_utils").warning("a transformers notice")
        logging.getLogger("prefect.server").warning("a Prefect notice")
        logging.getLogger("spectral_surgery.tasks.surgery.calib_data").warning("only 4 calibration examples")
    finally:
        log.close()
    filed, shown = path.read_text(), terminal.getvalue()
    assert path.parent == tmp_path / "logs" and path.name.startswith("run-")
    third = ["held before the file is known", "`pretrained` model kwarg", "a transformers notice", "a Prefect notice"]
    for text in third + ["only 4 calibration examples"]:
        assert text in filed, (text, filed)
    assert "only 4 calibration examples" in shown  # the project's own warning is for the person at the terminal
    for text in third:
        assert (text in shown) == verbose, (text, shown)
    assert not [h for h in logging.getLogger("lm_eval").handlers if isinstance(h, logging.StreamHandler)]
    logging.getLogger("prefect._internal.concurrency").error("task_run_recorder: CancelledError")  # at exit
    assert ("CancelledError" in terminal.getvalue()) == verbose  # after the command too: its exit hooks log
    assert "CancelledError" not in path.read_text()  # the file was closed with the command


@pytest.mark.parametrize("verbose", [False, True])
def test_progress_bars_of_the_libraries_are_off_unless_verbose(verbose):
    """The demo in a pipe printed lm-eval's request-building bars (``0%| | 0/6``) for every arm and transformers'
    GGUF-conversion bar: a command that captures its log switches tqdm off before tqdm is imported (it reads
    TQDM_DISABLE then), unless -v. A fresh interpreter, as a command starts."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom spectral_surgery.flows.cli import runlog\nassert 'tqdm' not in sys.modules\n"
            f"runlog.capture({verbose})\nfrom tqdm.auto import tqdm\nlist(tqdm(range(3), desc='bar'))\n")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert ("bar: 100%" in proc.stderr) is verbose
