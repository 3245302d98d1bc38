"""The log file of a ``run`` or ``demo`` (issue 27 §3): third-party warnings go there, not to the terminal.

A nightly run touches lm-eval, transformers, PEFT, datasets and Prefect, each with its own warnings ("`pretrained`
model kwarg is not of type `str`", deprecations, Prefect's notices): dozens of lines that bury the run's own
progress. Without ``-v`` every record of a logger outside this project (and every ``warnings.warn``) is written to
``<data-dir>/logs/<command>-<UTC time>-<pid>.log`` only; the project's own warnings and errors still reach the
terminal. With ``-v`` everything reaches both. The command prints the file's path at the end.

:func:`capture` starts at once (records are held in memory until the file is known, so nothing is lost to the
slow imports), :meth:`RunLog.open` names the file once the data directory is known, after Prefect has set up its
own handlers (which get the same filter).
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path

OWN = ("spectral_surgery", "prefect.flow_runs", "prefect.task_runs",
       "__main__")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class OwnRecordsOnly(logging.Filter):
    """On a terminal handler: only the project's own records (and the flow's run loggers); the rest is filed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith(OWN)


ONLY_OWN = OwnRecordsOnly()


def _console_handlers() -> list[logging.Handler]:
    # the root's, and every Prefect or lm-eval logger's own (Prefect's logging config gives `prefect._internal`, where
    # its exit hooks log `task_run_recorder ... CancelledError`, a console handler of its own that does not propagate)
    known = [n for n in list(logging.root.manager.loggerDict) if n.startswith(("prefect", "lm_eval"))]
    names = ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "lm_eval", *sorted(known))
    out = []
    for name in names:
        for h in logging.getLogger(name).handlers:
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) and h not in out:
                out.append(h)
    return out


class RunLog:
    """The run's log file: a memory buffer on the root logger until :meth:`open` gives it a file."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.path: Path | None = None
        self.buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        self.buffer.setLevel(logging.DEBUG if verbose else logging.WARNING)

    def quiet_terminal(self) -> None:
        """Filter every terminal handler there is now (ours, Prefect's, lm-eval's) to the project's own records;
        route transformers' and lm-eval's loggers (which print on their own) to the root logger, hence the file."""
        logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the file
        root = logging.getLogger()
        if self.path is None and self.buffer not in root.handlers:  # held until open() gives it the file
            root.addHandler(self.buffer)
        if "transformers" in sys.modules:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_default_handler()
            hf_logging.enable_propagation()
        if "lm_eval" in sys.modules:  # lm-eval adds a terminal handler of its own at its first evaluation: not here
            with contextlib.suppress(Exception):
                import lm_eval.utils as lm_utils

                lm_utils._LOGGING_CONFIGURED = True
                lm_logger = logging.getLogger("lm_eval")
                for h in list(lm_logger.handlers):
                    if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                        lm_logger.removeHandler(h)
                lm_logger.propagate = True
        for h in _console_handlers():
            if self.verbose:
                h.removeFilter(ONLY_OWN)  # an earlier quiet command of this process left it
            elif ONLY_OWN not in h.filters:
                h.addFilter(ONLY_OWN)

    def open(self, data_dir: Path, command: str) -> Path:
        """Write the held records and every later one to ``<data_dir>/logs/<command>-<time>-<pid>.log``."""
        logs = Path(data_dir).expanduser() / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.path = logs / f"{command}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}.log"
        handler = logging.FileHandler(self.path, encoding="utf-8", delay=False)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.setLevel(self.buffer.level)
        self.buffer.setTarget(handler)
        self.buffer.flush()
        root = logging.getLogger()
        root.removeHandler(self.buffer)
        # first: app.py's console filter strips a record's traceback for the terminal; the file keeps it whole
        root.handlers.insert(0, handler)
        self.handler = handler
        self.quiet_terminal()
        from spectral_surgery.flows.cli.prefect_home import send_server_output_to

        send_server_output_to(self.path)  # the temporary Prefect server's own stderr (its shutdown tracebacks)
        return self.path

    def close(self) -> None:
        """Detach the file (the end of the command; tests run several commands in one process).

        The terminal stays quiet: Prefect's exit hooks (stopping its temporary server, its services' cancellation)
        log after the command returns, and those records are no more the user's business then than before.
        """
        root = logging.getLogger()
        root.removeHandler(self.buffer)
        handler = getattr(self, "handler", None)
        if handler is not None:
            root.removeHandler(handler)
            handler.close()
        logging.captureWarnings(False)
        from spectral_surgery.flows.cli.prefect_home import send_server_output_to

        send_server_output_to(None)


def capture(verbose: bool) -> RunLog:
    """Start holding this command's log records (and warnings) for its file; the terminal keeps only its own.

    Without ``-v`` the libraries' progress bars (lm-eval builds each task's requests under a tqdm bar, transformers
    converts the GGUF under another) are switched off: ``TQDM_DISABLE=1`` unless set. tqdm reads it when it is first
    imported, which is later than this (the command line imports no model stack before its work starts).
    """
    if not verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")
    log = RunLog(verbose)
    log.quiet_terminal()
    return log
