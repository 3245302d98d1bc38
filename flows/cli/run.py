"""``spectral-surgery run``: the nightly flow, now, with its progress and a summary a person can read.

The run configuration is a :class:`tasks.run_config.RunConfig`: from ``--config FILE`` (YAML or JSON) if given,
with the command-line options laid over it. Progress (:class:`Progress`: stage, adapter i/n, ETA; a line per finished
adapter) is read from the registry (the adapter runs of this refinement run), so it works whatever the task runner:
threads here, or Dask workers elsewhere. The summary is one line per adapter with its reasons below
(:mod:`flows.cli.summary`); third-party warnings go to the run's log file (:mod:`flows.cli.runlog`).

Ctrl-C or SIGTERM, at any moment, is a clean stop (:mod:`flows.interrupt`): no production move starts after it, the
run ends ``cancelled`` with nothing left ``running``, the temporary Prefect server is stopped quietly, and the
command prints ``error: interrupted`` and exits 130, at the latest :data:`STOP_GRACE_S` seconds after the signal.

Over 400 lines: the run command, its live progress and its summary change together; split candidate: the progress
display.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable

from spectral_surgery.flows.cli.common import PAPER_POLICIES, UsageError, parse_sets
from spectral_surgery.flows.cli.common import console as plain_console
from spectral_surgery.flows.cli.common import EXIT_INTERRUPTED, emit, fail, guarded, message, open_registry

POLL_S = 0.25
STOP_GRACE_S = 8.0  # after a stop request: the longest wait for the work to reach a checkpoint before exiting anyway


OPTION_OF = {"task_limit": "--task-limit", "guard_limit": "--guard-limit", "concurrency": "--concurrency",
             "task_runner": "--task-runner", "dask_address": "--dask-address", "calib_source": "--calib",
             "device": "--device", "evaluator": "--evaluator", "surgery.calib.n_samples": "--n-samples"}


def run_config_from_args(args: argparse.Namespace):
    """The RunConfig of ``run``: defaults < ``--config`` file < command-line options.

    ``--data-dir`` / ``--db`` win over the file's ``data_dir`` / ``registry_url``, which win over
    ``$SPECTRAL_SURGERY_HOME`` / ``$SPECTRAL_SURGERY_DB``.
    """
    from pydantic import ValidationError

    from spectral_surgery.registry.db import env_url
    from spectral_surgery.registry.declaration import one_line
    from spectral_surgery.tasks.surgery.policies import get_policy
    from spectral_surgery.tasks.run_config import RunConfig

    from spectral_surgery.tasks.run_config import read_config_file

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
    if getattr(args, "window", None):
        data["window"] = {**(data.get("window") or {}), "wall_clock": args.window}
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
        # one line: the option (or the file's field) and what is wrong; pydantic's own text (its URL) is not for here
        loc = ".".join(str(p) for p in e.errors()[0]["loc"])
        option = OPTION_OF.get(loc)
        if option and getattr(args, option.removeprefix("--").replace("-", "_"), None) is not None:
            raise UsageError(f"{option}: {one_line(e, RunConfig, '').split(': ', 1)[1]}") from None
        where = f"{args.config} (with the command-line options)" if args.config else "the command-line options"
        raise UsageError(f"invalid run configuration from {where}: {one_line(e, RunConfig, '')}") from None
    from spectral_surgery.tasks.evaluation.evaluate import require_evaluator

    require_evaluator(config.evaluator)  # an unknown name fails here with "did you mean", before any work starts
    for p in config.surgery.policies:
        get_policy(p)  # unknown names fail here with "did you mean", before any work starts
    return config


class Progress:
    """What the run is doing while it runs, read from the registry (the adapter runs of this refinement run) and from
    :mod:`flows.stage_hook` (the stage this process reached last, the number of versions planned).

    On a terminal: one live line, ``evaluation · ops-math (2/3) · 1 min 10 s · ETA ~2 min 20 s``, redrawn in place,
    with a line above it per finished adapter. In a pipe: plain lines, one per change of stage or adapter and one per
    finished adapter, never a redraw. The ETA sums the plan's forecasts of the adapters not done yet (a windowed
    night; the mean seconds of this run's finished adapters stands in where there is none), divided among the
    adapters refined at once (:func:`tasks.night_plan.eta_seconds`).
    """

    def __init__(self, reg, console, *, moves: bool | str = True, concurrency: int = 1) -> None:
        # moves: RunConfig.promote (True: the gate moves pointers; False: a dry run; "review": they wait for approval)
        import time

        from spectral_surgery.flows import stage_hook
        from spectral_surgery.registry.models import utcnow
        from spectral_surgery.registry.runs import this_owner

        self.reg, self.console, self.moves, self.concurrency = reg, console, moves, max(1, concurrency)
        # The flow runs in this process, so its run row is owned by this process: found by owner and start time
        # (a concurrent run of another process is never taken for ours), then followed by id.
        self.owner, self.since = this_owner(), utcnow().replace(microsecond=0)
        self.t0 = time.monotonic()
        self.run_id: int | None = None
        self.polled_at = None  # ended_at from which the next poll reads (None: the whole run)
        self.seen: set[int] = set()
        self.durations: list[float] = []
        self.finished: set[str] = set()  # adapters done tonight: completed, failed or deferred
        self.last_status: tuple | None = None
        self.live = None
        self._names: dict[int, str] = {}
        self._running: list[str] = []
        self._stale: str | None = None  # the stage shown when the adapters in flight changed (another adapter's)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cli-progress", daemon=True)
        stage_hook.forget()

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            from rich.live import Live
            from rich.text import Text

            self.live = Live(Text(""), console=self.console, transient=True, auto_refresh=True,
                             refresh_per_second=4, redirect_stdout=False, redirect_stderr=False)
            self.live.start()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.polled_at = None  # the whole run once more: nothing an ended_at from a skewed clock hid is left out
        with contextlib.suppress(Exception):
            self.poll()  # whatever finished since the last tick
        if self.live is not None:
            self.live.stop()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.poll()
            except Exception:  # progress is cosmetic; the run's own result is what counts
                pass

    def _name(self, version_id: int) -> str:
        if version_id not in self._names:
            self._names[version_id] = self.reg.get_version(version_id).adapter.name
        return self._names[version_id]

    def status(self, running: list[str], done: int) -> str:
        """The one line of where the run is: stage, adapter i/n, elapsed, ETA (pure but for the clock)."""
        import time

        from spectral_surgery.flows import stage_hook
        from spectral_surgery.flows.cli.summary import fmt_seconds
        from spectral_surgery.tasks.night_plan import eta_seconds

        stage = stage_hook.current() or ("starting" if self.run_id is None else "scan")
        if running != self._running:  # another adapter started: its first stage is not reached yet
            self._running, self._stale = running, stage
        if running and stage == self._stale:
            stage = "preparing"
        n = stage_hook.planned()
        elapsed = time.monotonic() - self.t0
        parts = [stage]
        if running:
            parts.append(", ".join(running) + (f" ({min(done + 1, n)}/{n})" if n else ""))
        elif n is not None:
            parts.append(f"{done}/{n} adapters")
        parts.append(fmt_seconds(elapsed))
        if n and done < n:
            mean = sum(self.durations) / len(self.durations) if self.durations else None
            forecasts = stage_hook.forecasts()
            left = ([f for name, f in forecasts.items() if name not in self.finished] if forecasts
                    else [None] * (n - done))
            if (eta := eta_seconds(left, mean, self.concurrency)) is not None and left:
                parts.append(f"ETA ~{fmt_seconds(eta)}")
        return " · ".join(parts)

    def poll(self) -> None:
        from datetime import timedelta

        from rich.markup import escape

        from spectral_surgery.registry.models import utcnow
        from spectral_surgery.registry.runs import INTERRUPTED

        running: list[str] = []
        if self.run_id is None:
            run = self.reg.run_started_by(self.owner, self.since)
            if run is not None:
                self.run_id = run.id
        rows = []
        if self.run_id is not None:
            # what ended since the last look (with a margin for clocks and commits in flight) and what runs now, not
            # the whole run: a 1,000-adapter run would otherwise read every row four times a second
            now, since = utcnow(), self.polled_at
            self.polled_at = now - timedelta(seconds=5)
            rows = self.reg.adapter_runs(self.run_id, ended_since=since, with_running=True)
        for r in rows:
            if r.status == "running":
                running.append(self._name(r.adapter_version_id))
                continue
            if r.status == "deferred":  # done for tonight (the window): no more of the ETA
                self.finished.add(self._name(r.adapter_version_id))
            if r.id in self.seen or r.status not in ("completed", "failed"):
                continue
            self.finished.add(self._name(r.adapter_version_id))
            self.seen.add(r.id)
            if r.error_type == INTERRUPTED:  # released by a stop request: the command says "interrupted" once
                continue
            if r.started_at and r.ended_at:
                self.durations.append((r.ended_at - r.started_at).total_seconds())
            self.console.print(self._line(r), soft_wrap=True)
        line = self.status(running, len(self.durations))
        if self.live is not None:
            from rich.text import Text

            self.live.update(Text(line, style="dim", no_wrap=True, overflow="ellipsis"))
        else:
            from spectral_surgery.flows import stage_hook

            # a pipe gets a line when the stage or the adapters change, not every tick
            what = (stage_hook.current(), tuple(running), len(self.durations), stage_hook.planned())
            if what != self.last_status:
                self.last_status = what
                self.console.print(escape(line), highlight=False, soft_wrap=True)

    def _line(self, r) -> str:
        from rich.markup import escape  # names, errors and sentences are text, not markup ("[type=...]")

        from spectral_surgery.flows.cli.summary import fmt_seconds

        name = escape(self._name(r.adapter_version_id))
        took = f" ({fmt_seconds((r.ended_at - r.started_at).total_seconds())})" if r.started_at and r.ended_at else ""
        if r.status == "failed":
            error = _error_line(r.error_type or "Error", r.error_message)
            # at most ~160 characters here (a pipe's line stays short); the summary below shows the error whole
            return f"[red]✗ {name}[/] failed: {escape(error if len(error) <= 160 else error[:159] + '…')}{took}"
        d = self.reg.get_decision_by_id(r.decision_id) if r.decision_id else None
        if d is None:
            return f"[green]✓ {name}[/] done{took}"
        from spectral_surgery.tasks.decision.gate import verdict_label
        from spectral_surgery.tasks.decision.record import DecisionRecord

        stats = DecisionRecord.from_json(d.statistics_json, d.promoted)
        kind = stats.verdict
        if kind == "promote":  # the gate's verdict; the pointer moved only if this run promotes
            policy = self.reg.get_candidate(d.promoted_candidate_id).policy
            review = self.reg.review_of_decision(d.id) if self.moves == "review" else None
            if self.moves is True:
                verdict = f"[green]promoted[/] [bold]{policy}[/]"
            elif review is not None and review.state == "pending":
                verdict = (
                    f"[yellow]awaiting review[/] of [bold]{policy}[/] (review {review.id}, until "
                    f"{review.expires_at.isoformat(timespec='minutes')}: `spectral-surgery approve {review.id}`)"
                )
            else:
                why = "dry run: not moved" if review is None else f"not moved: review {review.id} {review.state}"
                verdict = f"[green]would promote[/] [bold]{policy}[/] ({why})"
        elif kind == "hold":
            verdict = f"[yellow]{verdict_label(kind, stats.n_needed)}[/]"
        else:
            verdict = "[red]rejected[/]"
        return f"[green]✓ {name}[/] {verdict}{took}"


def preflight(config, adapters) -> str | None:
    """Why this run cannot work, checked before the flow starts (:mod:`tasks.run_checks`); None: it can."""
    from spectral_surgery.tasks.run_checks import check_device, check_dtype, context_problems

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

    from spectral_surgery.flows.cli.prefect_home import stop_temporary_server

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

    from spectral_surgery.flows import interrupt

    if interrupt.requested():
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(_exit_code[0])


def stoppable(args, body: Callable[[object], int]) -> int:
    """Run ``body(log)`` as a command that a Ctrl-C or SIGTERM stops cleanly (``run`` and ``demo``).

    The handlers are installed first, before the slow imports; ``body`` gets the command's
    :class:`flows.cli.runlog.RunLog` (third-party warnings held for its file). After a stop: ``error: interrupted``
    once, exit 130, within :data:`STOP_GRACE_S` seconds whatever the work was doing.
    """
    from spectral_surgery.flows import interrupt
    from spectral_surgery.flows.cli import runlog

    # First, before the slow imports: a Ctrl-C from here on is recorded and honoured at the next checkpoint, never
    # swallowed by whatever the main thread was doing (an import's weakref callback: "Exception ignored in ...").
    interrupt.install()
    _exit_code[0] = EXIT_INTERRUPTED
    _said.clear()
    atexit.register(_exit_if_stopped)  # registered first: runs last of the exit hooks
    interrupt.on_request(functools.partial(_on_stop, bool(args.verbose)))
    done = interrupt.watchdog(STOP_GRACE_S, _last_words, code=EXIT_INTERRUPTED)
    log = runlog.capture(bool(args.verbose))  # third-party warnings: held for the run's log file, off the terminal
    try:
        _exit_code[0] = code = body(log)  # a stop after the run finished: its summary and code stand
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
        log.close()


def prefect_server(err, *, shared: bool) -> None:
    """Choose this command's Prefect server before Prefect is imported; say in one dim line what was chosen.

    ``shared=False`` (at the command's start): without sharing (``$SPECTRAL_SURGERY_PREFECT_IDLE=0``), a private
    database when another run holds the shared one (:func:`flows.cli.prefect_home.isolate_temporary_server`).
    ``shared=True`` (once there is work): the shared server (:func:`flows.cli.shared_server.attach`), reused or
    started; where none can be (a run without sharing holds the database), the private database as above.
    """
    from spectral_surgery.flows.cli.prefect_home import isolate_temporary_server
    from spectral_surgery.flows.cli.shared_server import DEFAULT_IDLE, ENV_IDLE, attach, wanted

    if not shared and wanted():
        return  # decided once there is work: a no-op night starts no server
    if shared and wanted():
        t0 = time.monotonic()
        from spectral_surgery.flows import interrupt

        got = attach(check=interrupt.check)  # a Ctrl-C while the server starts stops it, and the command
        if got is not None:
            how = "reused" if got.reused else f"started in {time.monotonic() - t0:.0f} s"
            err.print(f"[dim]Prefect server {got.url} (pid {got.pid}) {how}; it stops after ${ENV_IDLE} "
                      f"({os.environ.get(ENV_IDLE) or DEFAULT_IDLE}) without runs[/]", highlight=False)
            return
    if isolate_temporary_server():
        err.print("[dim]Another run holds Prefect's temporary server database: this run uses a private Prefect "
                  "database, removed when it exits.[/]")


def start_up(*, shared: bool) -> int | None:
    """The start-up ``run`` and ``demo`` share, before Prefect is imported: a bad ``$SPECTRAL_SURGERY_PREFECT_IDLE``
    is a usage error before anything starts, then this command's Prefect server is chosen (:func:`prefect_server`,
    ``shared`` as there).

    Returns:
        The exit code of the usage error, or None to go on.
    """
    from rich.console import Console

    from spectral_surgery.flows.cli.shared_server import idle_seconds

    try:
        idle_seconds()
    except ValueError as e:
        return fail(message(e))
    prefect_server(Console(stderr=True, soft_wrap=True), shared=shared)
    return None


@guarded
def cmd_run(args) -> int:
    return stoppable(args, functools.partial(_cmd_run, args))


def _cmd_run(args, log) -> int:
    from rich.console import Console
    from rich.markup import escape

    from spectral_surgery.flows.cli.summary import nothing_to_do, note_lines, served_now, summary_rows, width_of
    from spectral_surgery.flows.cli.summary import render as render_summary

    from spectral_surgery.flows import interrupt, stage_hook
    from spectral_surgery.flows.cli.prefect_home import detach_temporary_server

    refused = start_up(shared=False)  # the server is attached once there is work
    if refused is not None:
        return refused
    if not args.verbose:  # the progress lines replace Prefect's logs and load bars (warnings go to the log file)
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    try:
        config = run_config_from_args(args)
    except (ValueError, KeyError) as e:  # a bad option or config file: a usage error (2), never a traceback
        return fail(message(e))
    from spectral_surgery.flows import worker

    log.open(config.data_dir, "run")  # Prefect's handlers, installed when there is work, are filtered then
    interrupt.check()
    args.data_dir, args.db = config.data_dir, config.registry_url
    open_registry(args).close()  # fails early, with the hint to run init, if there is no registry
    reg = worker.registry(config)
    err = Console(stderr=True, soft_wrap=True)  # a line per message, whatever its length: the terminal wraps it
    enabled = reg.list_adapters(enabled_only=True)
    refused = preflight(config, enabled)
    if refused:  # a run that cannot work: exit 2 before the flow starts, nothing recorded
        return fail(refused)
    if not reg.list_adapters():  # nothing registered: say so and how, without starting Prefect for nothing
        empty = {"run_id": None, "refined": 0, "completed": 0, "failed": 0, "scan_failed": 0, "skipped": 0,
                 "results": [], "message": nothing_to_do(reg)}
        return emit(args, empty, lambda: plain_console().print(escape(empty["message"]), highlight=False))
    err.print(f"Nightly refinement of {len(enabled)} enabled adapter(s): evaluator [bold]{config.evaluator}[/], "
              f"{config.task_runner} task runner × {config.concurrency}"
              + (", [yellow]dry run[/] (no promotion)" if not config.promote else "")
              + (f", [yellow]review window[/] {config.review_window} (passing decisions wait for `spectral-surgery "
                 "approve`)" if config.promote == "review" else ""))
    from spectral_surgery.tasks.decision.power import guard_resolution_note

    if config.guard and (note := guard_resolution_note(config.guard_limit, config.gate.guard_tolerance)):
        for line in note_lines(note, width_of(err)):  # wrapped like the summary: a pipe gets 100 columns
            err.print(escape(line), highlight=False)
    from spectral_surgery.flows.prescan import look_for_work, record_quiet_night

    if (found := look_for_work(config)).work is None:  # a no-op night: no Prefect server, no flow (seconds)
        summary = record_quiet_night(config)
    else:
        if args.verbose:
            err.print(f"[dim]work found: {escape(found.work)}[/]")
        else:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        prefect_server(err, shared=True)  # the shared server (started or reused) before Prefect is imported
        from spectral_surgery.flows.refine_fleet import (
            run_nightly,
        )  # Prefect and the model stack: imported only for work

        log.quiet_terminal()  # the handlers Prefect's import just installed get the terminal's filter too

        detach_temporary_server()  # a Ctrl-C reaches this process, not Prefect's server: it stays up while it closes
        stage_hook.reached(stage_hook.STARTUP)
        interrupt.check()
        with Progress(reg, err, moves=config.promote, concurrency=config.concurrency):
            summary = run_nightly(config)
    failed = summary["failed"]

    def render() -> None:
        console = plain_console()
        if not summary["results"]:
            console.print(escape(nothing_to_do(reg)))
            return
        from spectral_surgery.flows.refine_fleet import headline, window_lines

        console.print(f"Nightly refinement run {summary['run_id']}: {headline(summary)}", highlight=False)
        width = width_of(console)
        for line in render_summary(summary_rows(reg, summary, served_now), width, color=console.is_terminal):
            console.print(line, highlight=False, soft_wrap=True)
        for line in window_lines(summary):  # planned vs actual per adapter, the forecast error (a windowed night)
            console.print(escape(line), highlight=False, soft_wrap=True)
        for name, note in behind.items():
            for line in note_lines(f"{name} {note['text']}", width):
                console.print(escape(line), highlight=False, soft_wrap=True)

    from spectral_surgery.flows.cli.common import production_behind, production_payload
    from spectral_surgery.registry.read import fleet_listing

    names = dict.fromkeys(r["adapter"] for r in summary["results"])
    # what each adapter serves and its latest version in a fixed number of queries, not a few per adapter
    listed = {x.adapter.name: x for x in fleet_listing(reg)} if names else {}
    behind = {}
    for n in names:
        x = listed.get(n)
        b = production_behind(reg, n) if x is None else production_behind(
            reg, n, production_payload(x.production, x.policy), x.latest.id if x.latest else None)
        if b is not None:
            behind[n] = b
    summary["production_behind"] = behind
    emit(args, summary, render)
    err.print(f"[dim]log: {escape(str(log.path))}[/] (library warnings and Prefect's messages)", highlight=False)
    return 1 if failed else 0
