"""Run the ``spectral-surgery`` command line in-process and capture what it prints (shared by the CLI tests)."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any
from unittest import mock

from spectral_surgery.flows.cli import main
from tests.records import statistics


@dataclass
class Result:
    """Exit code and output of one command line; ``exited``: argparse called ``sys.exit`` (``--help``)."""

    code: int
    out: str
    err: str
    exited: bool = False

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


def cli(*argv: Any, columns: int | None = 250) -> Result:
    """``flows.cli.main(argv)`` with stdout/stderr captured (works in module-scoped fixtures, unlike capsys).

    COLUMNS is wide by default so that rich does not fold table cells in the middle of the values the tests look
    for; ``columns=80`` is a narrow terminal, ``None`` leaves COLUMNS unset (a pipe).
    """
    out, err = io.StringIO(), io.StringIO()
    exited = False
    env = {"COLUMNS": str(columns)} if columns else {}
    with mock.patch.dict(os.environ, env), redirect_stdout(out), redirect_stderr(err):
        if columns is None:
            os.environ.pop("COLUMNS", None)
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # main() returns codes; getting here is a bug the tests report
            code, exited = int(e.code or 0), True
    return Result(code, out.getvalue(), err.getvalue(), exited)


def assert_error(r: Result, *fragments: str, code: int = 2) -> str:
    """A failed command: exit ``code`` (2 usage, 3 not found, 1 failure), nothing on stdout, one ``error:`` line
    holding ``fragments``, no traceback."""
    assert not r.exited, "main() must return the exit code, not call sys.exit"
    assert r.code == code, (r.code, r.out, r.err)
    assert r.out == ""
    assert "Traceback" not in r.err
    lines = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, r.err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def promote(env, artifact, policy: str, key: str):
    """Record a candidate of ad0's version with ``artifact`` and a decision promoting it; promote it."""
    from spectral_surgery.tasks.adapter_io import adapter_content_sha256

    v = env.versions["ad0"]
    cand = env.reg.add_candidate(v.id, key * 8, policy, 0, artifact_uri=str(artifact),
                                 artifact_sha256=adapter_content_sha256(artifact))
    d = env.reg.record_decision(v.id, key * 8, run_id=None, promoted_candidate_id=cand.id,
                                statistics=statistics(verdict="promote"), sentence=f"{policy} wins")
    env.reg.promote(d)
    return d
