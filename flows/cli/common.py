"""Shared plumbing of the ``spectral-surgery`` registry commands: where the registry is, error handling, output.

Every expected failure of a command (unknown adapter, empty reason, a state the registry refuses, a bad config)
becomes a red one-line message on stderr and an exit code that tells what it was (:func:`exit_code`: 2 a refused
input, 3 not found, 1 any other failure), never a traceback without ``-v``; ``--json`` prints JSON only on stdout.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spectral_surgery.registry.validation import error_summary


PAPER_POLICIES = ("abs_select", "smooth_abs", "random_index", "grad_direction")
EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_INTERRUPTED = 1, 2, 3, 130


def exit_code(e: BaseException) -> int:
    """The exit code of a command that raised ``e``.

    3 not found (an unknown adapter or candidate, no registry, a missing file); 2 an input the command refuses (a
    pydantic validation error, or a :class:`registry.validation.RegistryError`: an invalid value or a state the
    registry will not enter — the message says what to change); 1 anything else (a failure of the work itself).
    """
    from pydantic import ValidationError

    from spectral_surgery.registry.validation import NotFoundError, RegistryError

    if isinstance(e, (NotFoundError, FileNotFoundError)):
        return EXIT_NOT_FOUND
    if isinstance(e, (RegistryError, ValidationError)):
        return EXIT_USAGE
    return EXIT_FAILURE


def fail(msg: str, code: int = EXIT_USAGE) -> int:
    """Print ``error: msg`` in red on stderr (one line, user text never read as markup) and return ``code``."""
    from rich.console import Console
    from rich.markup import escape

    # escape: messages quote user input and pydantic's "[type=...]" (rich would eat them as markup);
    # soft_wrap: one logical line, never broken mid-phrase at the terminal width (scripts grep stderr).
    Console(stderr=True).print(f"[bold red]error:[/] {escape(msg)}", soft_wrap=True)
    return code


def warn(msg: str) -> None:
    """Print ``warning: msg`` in yellow on stderr (one line, user text never read as markup)."""
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold yellow]warning:[/] {escape(msg)}", soft_wrap=True)


def parse_sets(pairs: list[str], option: str = "--set") -> dict:
    """``KEY=VALUE`` options as a dict (values parsed as JSON when they can be); ``option`` names them in errors."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"{option} expects KEY=VALUE, got {pair!r}: write it as {option} {pair or 'KEY'}=VALUE")
        k, v = pair.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


# ------------------------------------------------------------------------------------------- plumbing
def guarded(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn any exception of a command into a red one-line message and its :func:`exit_code` (``-v`` also shows
    the traceback)."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args) or 0)
        except KeyboardInterrupt:
            return fail("interrupted", code=EXIT_INTERRUPTED)
        except BrokenPipeError:  # the reader of stdout left (`list --json | head -1`): end quietly, exit 0
            return quiet_closed_pipe()  # here, not in main(): Click turns an EPIPE it sees into exit 1
        except Exception as e:  # the CLI's contract: a message that says what to fix, not a traceback
            if getattr(args, "verbose", False):
                from rich.console import Console

                Console(stderr=True).print_exception()
            return fail(message(e), code=exit_code(e))

    return run


def quiet_closed_pipe() -> int:
    """The reader of stdout left: point stdout at /dev/null so the interpreter's last flush is silent; exit 0."""
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (captured in tests)
        pass
    return 0


class UsageError(ValueError):
    """A bad option or run config: its text (the field or option, what is wrong, the fix) is the whole message."""


def message(e: BaseException) -> str:
    from pydantic import ValidationError

    from spectral_surgery.registry.validation import RegistryError

    if isinstance(e, (RegistryError, ValidationError, FileNotFoundError, UsageError)):
        return str(e)
    if isinstance(e, KeyError):  # KeyError quotes its message; the registries' errors read as plain text
        return str(e.args[0]) if e.args else type(e).__name__
    return f"{type(e).__name__}: {e}"


def resolve_location(args: argparse.Namespace) -> tuple[Path, str | None]:
    """``(data_dir, registry_url)`` from ``--data-dir`` / ``--db``, the environment and the defaults."""
    from spectral_surgery.registry.db import env_url
    from spectral_surgery.tasks.config import default_data_dir

    data_dir = Path(args.data_dir).expanduser() if getattr(args, "data_dir", None) else default_data_dir()
    return data_dir, getattr(args, "db", None) or env_url()


def open_registry(args: argparse.Namespace, *, create: bool = False):
    """The registry of the command line; a missing default SQLite file is an error unless ``create``."""
    from spectral_surgery.registry.db import default_url
    from spectral_surgery.registry.repository import Registry
    from spectral_surgery.registry.validation import NotFoundError

    data_dir, url = resolve_location(args)
    if url is None and not create and not (data_dir / "registry.db").is_file():
        raise NotFoundError(f"no registry at {default_url(data_dir)}: run `spectral-surgery init` first "
                            "(or pass --data-dir / --db)")
    return Registry.open(url, data_dir)


def emit(args: argparse.Namespace, payload: Any, render: Callable[[], None]) -> int:
    """JSON on stdout with ``--json``, else the rich rendering."""
    if getattr(args, "json", False):
        print(json.dumps(payload, indent=2, default=str))
    else:
        render()
    return 0


PIPE_WIDTH = 10_000  # "unlimited": rich's own default for a pipe is 80 columns, which folds every path


def console(stderr: bool = False):
    """A rich console at the terminal's width, or, in a pipe (or a file) with no ``COLUMNS``, unlimited: piped
    output keeps each table row and message on one line, so ``grep`` and ``cut`` see whole values."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    piped = not (hasattr(stream, "isatty") and stream.isatty())
    width = PIPE_WIDTH if piped and not os.environ.get("COLUMNS") else None
    return Console(stderr=stderr, width=width)


class Folded:
    """A path or URI in a table cell: at a narrow terminal it wraps after its separators (``/``, ``:``, ``@``,
    ``?``, ``&``, ``=``), never inside a name, unless one name alone is wider than the column; never cut."""

    _PART = re.compile(r"[^/:@?&=]*[/:@?&=]*")
    _MIN = 16  # the narrowest such a column is squeezed to, so that short columns keep whole words

    def __init__(self, text: str):
        self.text = text
        self.parts = [p for p in self._PART.findall(text) if p]

    def __rich_measure__(self, console, options):
        from rich.measure import Measurement

        longest = max((len(p) for p in self.parts), default=0)
        return Measurement(min(longest, self._MIN, len(self.text)), len(self.text))

    def lines(self, width: int) -> list[str]:
        """The text wrapped to ``width`` at separators; a part longer than ``width`` is folded by characters."""
        width = max(1, width)
        out, line = [], ""
        for part in self.parts:
            if len(line) + len(part) <= width:
                line += part
                continue
            if line:
                out.append(line)
            while len(part) > width:
                out.append(part[:width])
                part = part[width:]
            line = part
        if line or not out:
            out.append(line)
        return out

    def __rich_console__(self, console, options):
        from rich.text import Text

        yield Text("\n".join(self.lines(options.max_width)), no_wrap=True, overflow="fold")


def cell(value: Any):
    """A table cell: ``—`` for None, a :class:`Folded` path for a value with a ``/`` and no space, else plain
    text (never markup: a reason like "[urgent] ..." is shown as typed, not swallowed)."""
    from rich.text import Text

    if value is None:
        return Text("—")
    text = str(value)
    if "/" in text and not any(c.isspace() for c in text):
        return Folded(text)
    return Text(text)


def table(title: str, columns: list[str], rows: list[list[Any]], *, narrow: tuple[str, ...] = (),
          optional: tuple[str, ...] = ()):
    """A rich table; ``narrow`` columns never wrap, the others wrap at spaces and paths at their separators
    (:func:`cell`), so no word is broken and nothing is cut.

    ``optional`` columns (long paths) leave the table when it would not fit the console at its minimum width
    (a narrow terminal); their values then follow it, one line per row (``ad0: source /srv/…``), whole.
    """
    from rich.console import Group
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    def build(cols: list[str]) -> Table:
        t = Table(title=title)
        for col in cols:
            t.add_column(col, no_wrap=col in narrow, overflow="fold")
        for row in rows:
            t.add_row(*[cell(v) for c, v in zip(columns, row) if c in cols])
        return t

    shown = list(columns)
    out = console()
    full = build(shown)
    for col in reversed([c for c in columns if c in optional]):
        if Measurement.get(out, out.options.update_width(PIPE_WIDTH), build(shown)).minimum <= out.width:
            break
        shown.remove(col)
    if shown == list(columns):
        return full
    hidden = [c for c in columns if c not in shown]
    lines = [Text(f"{row[0]}: " + ", ".join(f"{c} {'—' if row[columns.index(c)] is None else row[columns.index(c)]}"
                                            for c in hidden)) for row in rows]
    return Group(build(shown), *lines)


def default_actor() -> str:
    """The name recorded for manual actions: ``$USER``, else the login name."""
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:  # no passwd entry (containers)
        return "cli"


_VERDICT_STYLE = {"promote": "green", "hold": "yellow", "reject": "red"}


def verdict_cell(r: dict) -> str:
    """PROMOTE / HOLD (needs ~N docs) / REJECT: a HOLD ("could not tell yet") never reads like a REJECT."""
    v = r.get("verdict")
    if r.get("status", "completed") != "completed" or v not in _VERDICT_STYLE:
        return "—"
    need = f" (needs ~{r['n_needed']:,} docs)" if v == "hold" and r.get("n_needed") else ""
    what = f" {r['promoted']}" if v == "promote" and r.get("promoted") else ""
    review = r.get("review") if v == "promote" else None
    if review:
        what = f" {review['candidate']} " + ("[yellow]awaiting review[/]" if review["state"] == "pending"
                                             else f"(review {review['state']})")
    return f"[{_VERDICT_STYLE[v]}]{v.upper()}[/]{what}{need}"


# ------------------------------------------------------------------------------------------ serialise
def adapter_dict(a) -> dict[str, Any]:
    return {"id": a.id, "name": a.name, "source_uri": a.source_uri, "base_model_id": a.base_model_id,
            "base_model_revision": a.base_model_revision, "task_family": a.task_family,
            "benchmark_override": a.benchmark_override, "enabled": a.enabled, "priority": a.priority,
            "config": a.config_json,
            "fetch_error": error_summary(a.fetch_error) or None,
            "fetch_error_at": a.fetch_error_at.isoformat() if a.fetch_error_at else None}



def event_dict(e, adapter_name: str | None = None) -> dict[str, Any]:
    return {"id": e.id, "adapter": adapter_name, "kind": e.kind, "actor": e.actor, "at": e.at.isoformat(),
            "from_version_id": e.from_version_id, "from_candidate_id": e.from_candidate_id,
            "to_version_id": e.to_version_id, "to_candidate_id": e.to_candidate_id, "reason": e.reason,
            "decision_id": e.decision_id, "reverts_event_id": e.reverts_event_id, "evidence": e.evidence_json}


def production_dict(reg, name: str) -> dict[str, Any] | None:
    state = reg.production(name)
    if state is None:
        return None
    policy = reg.get_candidate(state.candidate_id).policy if state.candidate_id is not None else None
    return production_payload(state, policy)


def production_payload(state, policy: str | None) -> dict[str, Any] | None:
    """What an adapter serves (a ``ProductionState`` and its candidate's policy) as ``list``/``history`` print it."""
    if state is None:
        return None
    return {"adapter_version_id": state.adapter_version_id, "content_sha256": state.content_sha256,
            "candidate_id": state.candidate_id, "policy": policy, "artifact_uri": state.artifact_uri,
            "implicit": state.implicit, "updated_at": state.updated_at.isoformat() if state.updated_at else None}


def production_behind(reg, name: str, prod: dict | None = None, latest: int | None = None) -> dict[str, Any] | None:
    """When production serves (an edit of) an older version than the adapter's latest, what and why; else None.

    Why: the latest version's most recent decision (HOLD, REJECT, awaiting review, a dry run) or that it was not
    refined yet. ``None`` also when nothing was ever promoted (production is then the latest version, unedited).
    ``prod`` and ``latest`` (the latest version's id), when the caller read them already, spare their queries: then
    only an adapter that is behind costs any.
    """
    prod = prod if prod is not None else production_dict(reg, name)
    if prod is None or prod["implicit"]:
        return None
    if latest is None:
        versions = reg.list_versions(name)
        latest = versions[0].id if versions else None
    if latest is None or latest == prod["adapter_version_id"]:
        return None
    d = reg.latest_decision(latest)
    if d is None:
        why = f"v{latest} was not refined yet (the next run refines it)"
    else:
        from spectral_surgery.tasks.decision.gate import verdict_label
        from spectral_surgery.tasks.decision.record import DecisionRecord

        stats = DecisionRecord.from_json(d.statistics_json, d.promoted)
        verdict = stats.verdict
        review = reg.review_of_decision(d.id)
        label = verdict_label(verdict, stats.n_needed, stats.promoted)
        if review is not None and review.state != "approved":
            label += f", review {review.id} {review.state}"
        elif verdict == "promote":
            label += ", not moved (a dry run, or production moved back since)"
        why = f"v{latest}'s decision {d.id}: {label} ({d.sentence})"
    return {"serves_version": prod["adapter_version_id"], "latest_version": latest, "why": why,
            "text": f"serves {production_label(prod)}, older than the latest v{latest}: {why}"}


def state_label(reg, version_id: int | None, candidate_id: int | None, cache: dict) -> str:
    if version_id is None:
        return "—"
    if candidate_id is None:
        return f"v{version_id} unedited"
    if candidate_id not in cache:
        cache[candidate_id] = reg.get_candidate(candidate_id).policy
    return f"v{version_id} {cache[candidate_id]} (#{candidate_id})"


def production_label(prod: dict | None) -> str:
    if prod is None:
        return "no version yet"
    if prod["candidate_id"] is None:
        return f"v{prod['adapter_version_id']} unedited" + (" (never promoted)" if prod["implicit"] else "")
    return f"v{prod['adapter_version_id']} {prod['policy']} (#{prod['candidate_id']})"


def candidates_of_latest(reg, adapter: str) -> list[dict[str, Any]]:
    """The latest version's candidates (what ``promote`` takes) with their task scores, best first."""
    versions = reg.list_versions(adapter)
    if not versions:
        return []
    scores = {e.candidate_id: e for e in reg.list_evaluations(versions[0].id) if e.kind == "task"}
    rows = [{"id": c.id, "version_id": c.adapter_version_id, "policy": c.policy, "seed": c.seed,
             "is_control": c.is_control, "config_hash": c.config_hash,
             "benchmark": scores[c.id].benchmark if c.id in scores else None,
             "task_score": scores[c.id].value if c.id in scores else None,
             "baseline_score": scores[None].value if None in scores else None}
            for c in reg.list_candidates(versions[0].id)]
    return sorted(rows, key=lambda r: (r["task_score"] is None, -(r["task_score"] or 0.0), r["id"]))
