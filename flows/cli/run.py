"""``spectral-surgery run``: the nightly flow, now, with a line per adapter as it finishes and a summary table.

The run configuration is a :class:`tasks.run_config.RunConfig`: from ``--config FILE`` (YAML or JSON) if given,
with the command-line options laid over it. Progress is read from the registry (the adapter runs of this
refinement run), so it works whatever the task runner: threads here, or Dask workers elsewhere.

Ctrl-C or SIGTERM, at any moment, is a clean stop (:mod:`flows.interrupt`): no production move starts after it, the
run ends ``cancelled`` with nothing left ``running``, the temporary Prefect server is stopped quietly, and the
command prints ``error: interrupted`` and exits 130, at the latest :data:`STOP_GRACE_S` seconds after the signal.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import os
import threading
import warnings

from flows.cli.common import PAPER_POLICIES, parse_sets
from flows.cli.common import console as plain_console
from flows.cli.common import EXIT_INTERRUPTED, emit, fail, guarded, message, open_registry, verdict_cell

POLL_S = 0.25
STOP_GRACE_S = 8.0  # after a stop request: the longest wait for the work to reach a checkpoint before exiting anyway


def run_config_from_args(args: argparse.Namespace):
    """The RunConfig of ``run``: defaults < ``--config`` file < command-line options.

    ``--data-dir`` / ``--db`` win over the file's ``data_dir`` / ``registry_url``, which win over
    ``$SPECTRAL_SURGERY_HOME`` / ``$SPECTRAL_SURGERY_DB``.
    """
    from pydantic import ValidationError

    from registry.db import env_url
    from registry.declaration import one_line
    from tasks.surgery.policies import get_policy
    from tasks.run_config import RunConfig

    from tasks.run_config import read_config_file

    data = read_config_file(args.config) if args.config else {}
    if args.data_dir:
        data["data_dir"] = str(args.data_dir)
    if args.db:
        data["registry_url"] = args.db
    elif not data.get("registry_url") and (url := env_url()):
        data["registry_url"] = url
    options = {"evaluator": args.evaluator, "task_limit": args.task_limit, "guard_limit": args.guard_limit,
               "concurrency": args.concurrency, "task_runner": args.task_runner, "dask_address": args.dask_address,
               "calib_source": args.calib, "device": args.device}
    data.update({k: v for k, v in options.items() if v is not None})
    if args.dask_address and not args.task_runner:
        data["task_runner"] = "dask"
    if args.evaluator_option:
        data["evaluator_options"] = {**data.get("evaluator_options", {}),
                                     **parse_sets(args.evaluator_option, option="--evaluator-option")}
    if args.dry_run and getattr(args, "review", False):
        raise ValueError("--dry-run and --review exclude each other: give one")
    if args.dry_run:
        data["promote"] = False
    if getattr(args, "review", False):
        data["promote"] = "review"
    if args.no_guard:
        data["guard"] = False
    surgery = data.setdefault("surgery", {})
    if args.policy:
        policies = []
        for p in args.policy:
            policies.extend([x for x in PAPER_POLICIES if x != "random_index"] if p == "all" else [p])
        surgery["policies"] = list(dict.fromkeys(get_policy(p).name for p in policies))
    if args.n_samples is not None:
        surgery.setdefault("calib", {})["n_samples"] = args.n_samples
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as e:
        where = f"{args.config} (with the command-line options)" if args.config else "the command-line options"
        raise ValueError(f"invalid run configuration from {where}: {one_line(e, RunConfig, '')}\n{e}") from None
    from tasks.evaluation.evaluate import require_evaluator

    require_evaluator(config.evaluator)  # an unknown name fails here with "did you mean", before any work starts
    for p in config.surgery.policies:
        get_policy(p)  # unknown names fail here with "did you mean", before any work starts
    return config


class Progress:
    """Prints one line per adapter run of the current refinement run as it finishes (polls the registry)."""

    def __init__(self, reg, console, *, moves: bool | str = True) -> None:
        # moves: RunConfig.promote (True: the gate moves pointers; False: a dry run; "review": they wait for approval)
        from registry.models import utcnow
        from registry.runs import this_owner

        self.reg, self.console, self.moves = reg, console, moves
        # The flow runs in this process, so its run row is owned by this process: found by owner and start time
        # (a concurrent run of another process is never taken for ours), then followed by id.
        self.owner, self.since = this_owner(), utcnow().replace(microsecond=0)
        self.run_id: int | None = None
        self.polled_at = None  # ended_at from which the next poll reads (None: the whole run)
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cli-progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.polled_at = None  # the whole run once more: nothing an ended_at from a skewed clock hid is left out
        self.poll()  # whatever finished since the last tick

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except Exception:  # progress is cosmetic; the run's own result is what counts
                pass

    def poll(self) -> None:
        if self.run_id is None:
            run = self.reg.run_started_by(self.owner, self.since)
            if run is None:
                return
            self.run_id = run.id
        from datetime import timedelta

        from registry.models import utcnow
        from registry.runs import INTERRUPTED

        # what ended since the last look (with a margin for clocks and commits in flight), not the whole run: a
        # 1,000-adapter run would otherwise read every row four times a second
        now, since = utcnow(), self.polled_at
        self.polled_at = now - timedelta(seconds=5)
        for r in self.reg.adapter_runs(self.run_id, ended_since=since):
            if r.id in self.seen or r.status not in ("completed", "failed"):
                continue
            if r.error_type == INTERRUPTED:  # released by a stop request: the command says "interrupted" once
                self.seen.add(r.id)
                continue
            self.seen.add(r.id)
            self.console.print(self._line(r))

    def _line(self, r) -> str:
        from rich.markup import escape  # names, errors and sentences are text, not markup ("[type=...]")

        name = escape(self.reg.get_version(r.adapter_version_id).adapter.name)
        if r.status == "failed":
            return f"[red]✗ {name}[/] failed: {escape(_error_line(r.error_type or 'Error', r.error_message))}"
        d = self.reg.get_decision_by_id(r.decision_id) if r.decision_id else None
        if d is None:
            return f"[green]✓ {name}[/] done"
        from tasks.decision.gate import verdict_label, verdict_of

        stats = d.statistics_json or {}
        kind = verdict_of(stats, d.promoted)
        if kind == "promote":  # the gate's verdict; the pointer moved only if this run promotes
            policy = self.reg.get_candidate(d.promoted_candidate_id).policy
            review = self.reg.review_of_decision(d.id) if self.moves == "review" else None
            if self.moves is True:
                verdict = f"[green]promoted[/] [bold]{policy}[/]"
            elif review is not None and review.state == "pending":
                verdict = (f"[yellow]awaiting review[/] of [bold]{policy}[/] (review {review.id}, until "
                           f"{review.expires_at.isoformat(timespec='minutes')}: `spectral-surgery approve {review.id}`)")
            else:
                why = "dry run: not moved" if review is None else f"not moved: review {review.id} {review.state}"
                verdict = f"[green]would promote[/] [bold]{policy}[/] ({why})"
        elif kind == "hold":
            verdict = f"[yellow]{verdict_label(kind, stats.get('n_needed'))}[/]"
        else:
            verdict = "[red]rejected[/]"
        return f"[green]✓ {name}[/] {verdict}: {escape(d.sentence)}"


def preflight(config, adapters) -> str | None:
    """Why this run cannot work, checked before the flow starts (:mod:`tasks.run_door`); None: it can."""
    from tasks.run_door import check_device, check_dtype, context_problems

    try:
        check_device(config.device)
        check_dtype(config.evaluator_options.get("dtype"))
    except ValueError as e:
        return str(e)
    if config.evaluator == "fake":  # generates nothing: no context to fit
        return None
    problems = context_problems(adapters, max_gen_toks=config.evaluator_options.get("max_gen_toks"),
                                profile=config.profile, data_dir=config.data_dir)
    return "; ".join(problems) if problems else None


def _error_line(error_type: str, text: str | None) -> str:
    """``Type: message`` of a recorded failure, whose text is the whole traceback (the exception comes last)."""
    short = error_type.rsplit(".", 1)[-1]
    lines = [line for line in (text or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(f"{error_type}: "):
            return f"{short}: {line.removeprefix(f'{error_type}: ')}"
    return f"{short}: {lines[-1] if lines else ''}"


def _served(r: dict) -> str:
    if r.get("status") != "completed":
        return "—"
    if r.get("reused"):
        return "(already done)"
    if r.get("promoted"):
        return r["promoted"]
    review = r.get("review")
    if review and review["state"] == "pending":
        return f"unchanged (awaiting review {review['id']} of {review['candidate']} until {review['expires_at']})"
    if review:
        return f"unchanged (review {review['id']} {review['state']})"
    stats = r.get("statistics") or {}
    return f"{stats['promoted']} (not moved: dry run)" if stats.get("promoted") else "unchanged"


def _on_stop(verbose: bool) -> None:
    """From the first stop request on: no library log lines (Prefect's "Crash detected!" of the stopped runs), so
    that ``error: interrupted`` is the one line the stop prints; ``-v`` keeps them."""
    import logging

    if not verbose:
        logging.disable(logging.CRITICAL)


_said: list[str] = []  # "interrupted" once printed: the watchdog does not print it twice
_exit_code = [EXIT_INTERRUPTED]  # what the process ends with after a stop: 130, or the code of a run that finished


def _interrupted() -> int:
    if not _said:
        _said.append("interrupted")
        fail("interrupted", code=EXIT_INTERRUPTED)
    return EXIT_INTERRUPTED


def _last_words() -> None:
    """What :func:`flows.interrupt.watchdog` does before it ends a command whose work did not stop in time (or whose
    exit hangs on it)."""
    import sys

    from flows.cli.prefect_home import stop_temporary_server

    with contextlib.suppress(Exception):
        sys.stdout.flush()
        _interrupted()
        sys.stderr.flush()
    stop_temporary_server()


def _exit_if_stopped() -> None:
    """The last exit hook (after Prefect's, which stop its temporary server): after a stop, end the process here.

    What is left after the hooks is the interpreter tearing down every module object (torch, transformers, Prefect,
    lm-eval): seconds on a busy machine (measured: 6 s of the 7 s from ^C to exit on a loaded 2-core machine), with
    nothing left to do.
    """
    import sys

    from flows import interrupt

    if interrupt.requested():
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(_exit_code[0])


@guarded
def cmd_run(args) -> int:
    from flows import interrupt

    # First, before the slow imports: a Ctrl-C from here on is recorded and honoured at the next checkpoint, never
    # swallowed by whatever the main thread was doing (an import's weakref callback: "Exception ignored in ...").
    interrupt.install()
    _exit_code[0] = EXIT_INTERRUPTED
    _said.clear()
    atexit.register(_exit_if_stopped)  # registered first: runs last of the exit hooks
    interrupt.on_request(functools.partial(_on_stop, bool(args.verbose)))
    done = interrupt.watchdog(STOP_GRACE_S, _last_words, code=EXIT_INTERRUPTED)
    try:
        _exit_code[0] = code = _cmd_run(args)  # a stop after the run finished: its summary and code stand
        return code
    except KeyboardInterrupt:
        return _interrupted()
    except Exception:
        if interrupt.requested():  # what the stop made fail on its way out (a stopped task's error) is the stop
            return _interrupted()
        raise
    finally:
        # After a stop, the handlers stay (a second Ctrl-C changes nothing) and so does the watchdog: it bounds the
        # process's exit too (Prefect's exit hooks, a worker thread still in a model pass).
        if not interrupt.requested():
            done.set()
            interrupt.uninstall()


def _cmd_run(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from flows import interrupt, stage_hook
    from flows.cli.prefect_home import detach_temporary_server, isolate_temporary_server

    if isolate_temporary_server():  # before Prefect is imported: concurrent runs never share one server DB
        Console(stderr=True, soft_wrap=True).print(
            "[dim]Another run holds Prefect's temporary server database: this run uses a private Prefect database, "
            "removed when it exits.[/]")
    if not args.verbose:  # the per-adapter lines replace Prefect's logs, library warnings and load bars
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        config = run_config_from_args(args)
    except (ValueError, KeyError) as e:  # a bad option or config file: a usage error (2), never a traceback
        return fail(message(e))
    from flows import worker

    interrupt.check()
    args.data_dir, args.db = config.data_dir, config.registry_url
    open_registry(args).close()  # fails early, with the hint to run init, if there is no registry
    reg = worker.registry(config)
    err = Console(stderr=True)
    enabled = reg.list_adapters(enabled_only=True)
    refused = preflight(config, enabled)
    if refused:  # a run that cannot work: exit 2 before the flow starts, nothing recorded
        return fail(refused)
    err.print(f"Nightly refinement of {len(enabled)} enabled adapter(s): evaluator [bold]{config.evaluator}[/], "
              f"{config.task_runner} task runner × {config.concurrency}"
              + (", [yellow]dry run[/] (no promotion)" if not config.promote else "")
              + (f", [yellow]review window[/] {config.review_window} (passing decisions wait for `spectral-surgery "
                 "approve`)" if config.promote == "review" else ""))
    from flows.prescan import look_for_work, record_quiet_night

    if (found := look_for_work(config)).work is None:  # a no-op night: no Prefect server, no flow (seconds)
        summary = record_quiet_night(config)
    else:
        if args.verbose:
            err.print(f"[dim]work found: {escape(found.work)}[/]")
        else:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        from flows.refine_fleet import run_nightly  # Prefect and the model stack: imported only for work

        detach_temporary_server()  # a Ctrl-C reaches this process, not Prefect's server: it stays up while it closes
        stage_hook.reached(stage_hook.STARTUP)
        interrupt.check()
        with Progress(reg, err, moves=config.promote):
            summary = run_nightly(config)
    failed = summary["failed"]

    def render() -> None:
        console = plain_console()
        results = summary["results"]
        if not results:
            console.print("Nothing to refine: every enabled adapter's latest version is done under this "
                          "configuration.")
            return
        from flows.refine_fleet import headline

        table = Table(title=f"Nightly refinement run {summary['run_id']}: {headline(summary)}")
        for col in ("adapter", "status", "benchmark", "verdict", "served now", "decision"):
            table.add_column(col, overflow="fold")
        for r in results:
            table.add_row(escape(r["adapter"]), ("[red]failed[/]" if r["status"] == "failed" else r["status"]),
                          r.get("benchmark") or "—", verdict_cell(r), _served(r),
                          escape(r.get("sentence") or r.get("error") or r.get("reason") or ""))
        console.print(table)
        for name, note in behind.items():
            console.print(f"[yellow]note:[/] {escape(name)} {escape(note['text'])}")

    from flows.cli.common import production_behind

    names = dict.fromkeys(r["adapter"] for r in summary["results"])
    behind = {n: b for n in names if (b := production_behind(reg, n)) is not None}
    summary["production_behind"] = behind
    emit(args, summary, render)
    return 1 if failed else 0
