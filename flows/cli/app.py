"""The ``spectral-surgery`` command line.

Every sub-command is a thin shell over pure functions in ``tasks/`` or flows in ``flows/``: it parses,
validates (pydantic at the edge), prints a readable table (or JSON with ``--json``) and exits non-zero
with a message that says how to fix the input.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from flows.cli.adapters import add_history_commands, add_registry_commands
from flows.cli.common import fail
from flows.cli.demo import add_demo
from flows.cli.edit import add_edit
from flows.cli.run import add_run


# ---------------------------------------------------------------------------------------------- main
class UsageError(Exception):
    """A command line argparse rejected (unknown option, missing ``--reason``...); ``main`` returns 2."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line raises :class:`UsageError` instead of exiting the interpreter."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise UsageError(message, self.format_usage())


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """``--data-dir``, ``--db`` and ``--json``; on sub-commands with SUPPRESS defaults (given anywhere, set once)."""
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    parser.add_argument("--data-dir", type=Path, default=d(None),
                        help="Data directory: registry, artifact store, model cache "
                             "(default $SPECTRAL_SURGERY_HOME or ~/.spectral-surgery).")
    parser.add_argument("--db", default=d(None), metavar="URL",
                        help="Registry database URL, e.g. postgresql://user@host/db "
                             "(default $SPECTRAL_SURGERY_DB, else the SQLite file <data-dir>/registry.db).")
    parser.add_argument("--json", action="store_true", default=d(False),
                        help="Print machine-readable JSON on stdout (progress and errors go to stderr).")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spectral-surgery", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True)
    add_edit(sub, common)
    add_registry_commands(sub, common)
    add_run(sub, common)
    add_demo(sub, common)
    add_history_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # `run` and `demo` start an ephemeral Prefect server when no PREFECT_API_URL is set; Prefect waits 20 s
    # for it, which a busy 2-core machine overruns (measured in CI). A user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    try:
        args = build_parser().parse_args(argv)
    except UsageError as e:
        sys.stderr.write(e.usage)
        return fail(str(e))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
