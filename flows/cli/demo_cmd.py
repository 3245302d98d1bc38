"""``spectral-surgery demo``: the main job on the embedded default (SQLite registry, local store, bundled model)."""

from __future__ import annotations

import functools

from spectral_surgery.flows.cli.common import console as plain_console
from spectral_surgery.flows.cli.common import emit, guarded, resolve_location


def _fmt(v, spec: str = "+.3f") -> str:
    return "—" if v is None else format(v, spec)


def _say(err, message: str) -> None:
    """A step of the demo on stderr, wrapped like the summary (the terminal's width, 100 columns in a pipe)."""
    import textwrap

    from spectral_surgery.flows.cli.summary import INDENT, width_of

    for line in textwrap.wrap(message, max(40, width_of(err)), subsequent_indent=INDENT, break_long_words=False,
                              break_on_hyphens=False) or [""]:
        err.print(line, highlight=False)


def _pts(v, spec: str = "+.1f") -> str:
    """A fraction in points (0.034 → ``+3.4``); ``—`` for None."""
    return "—" if v is None else format(100 * v, spec).replace("-", "−")


def demo_lines(result: dict, rows: list, width: int, *, color: bool = False) -> list[str]:
    """What the demo prints: its timings, a table of numbers only, then the run's summary as ``run`` shows it.

    The table holds one short value per cell, in points (the unedited adapter's task score, the best edit, its
    score, its gains over the unedited adapter and the best random control, its IFEval change); the verdicts and the
    gate's reasons follow as the summary of :func:`flows.cli.summary.render` (one headline per adapter, the reasons
    wrapped below it), never a sentence in a table cell, and no line wider than ``width`` (a pipe:
    :data:`flows.cli.summary.PIPE_WIDTH`).

    Args:
        result: What :func:`flows.demo.run_demo` returned (without ``nightly``).
        rows: The run's :class:`flows.cli.summary.SummaryRow` records.
        width: Columns to fit.
        color: Rich markup for a terminal.

    Returns:
        Lines (rich markup when ``color``).
    """
    import io

    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from spectral_surgery.flows.cli.summary import render

    timings = ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items())
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0), show_edge=False,
                  caption="task scores and gains in points; p-values and verdicts below", caption_justify="left")
    for col in ("adapter", "baseline", "best edit", "score", "Δ base", "Δ random", "IFEval Δ"):
        table.add_column(col, overflow="fold", justify="left" if col in ("adapter", "best edit") else "right")
    for r in result["rows"]:
        table.add_row(r["adapter"], _pts(r.get("baseline"), ".1f"), r.get("best_policy") or "—",
                      _pts(r.get("task"), ".1f"), _pts(r.get("delta_baseline")), _pts(r.get("delta_random")),
                      _pts(r.get("guard_delta")))
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, legacy_windows=False).print(table)
    def plain(text: str) -> str:
        return escape(text) if color else text

    lines = [plain(f"Demo nightly run over {len(result['rows'])} adapters ({timings})")]
    lines += [plain(line.rstrip()) for line in out.getvalue().splitlines()]
    lines += render(rows, width, color=color)
    if result.get("dashboard"):
        lines += [plain(f"Dashboard: {result['dashboard']}"),
                  plain(f"Registry: spectral-surgery list --data-dir {result['data_dir']}")]
    return lines


@guarded
def cmd_demo(args) -> int:
    """The demo, stopped cleanly by Ctrl-C or SIGTERM like ``run`` (:func:`flows.cli.run.stoppable`): the nightly
    run ends ``cancelled`` with its in-flight rows released, nothing is promoted after the signal, and the command
    prints ``error: interrupted`` and exits 130."""
    from spectral_surgery.flows.cli.run import stoppable

    return stoppable(args, functools.partial(_cmd_demo, args))


def _cmd_demo(args, log) -> int:
    from rich.console import Console

    from spectral_surgery.flows import interrupt, stage_hook
    from spectral_surgery.flows.cli.prefect_home import detach_temporary_server
    from spectral_surgery.flows.cli.run import start_up

    refused = start_up(shared=True)  # the demo always has work: the shared server now
    if refused is not None:
        return refused

    from spectral_surgery.flows.demo import BUDGETS, run_demo, with_overrides
    from spectral_surgery.flows.refine_fleet import run_nightly  # noqa: F401 - Prefect's log handlers exist first

    if not args.verbose:
        # Progress is the demo's step lines plus the flow's own log lines; lm-eval's per-call warnings go to the
        # log file and tqdm bars nowhere (flows/cli/runlog.py: capture sets TQDM_DISABLE before tqdm is imported).
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    budget = with_overrides(BUDGETS[args.budget], steps=args.steps, n_train=args.n_train, n_calib=args.n_calib,
                            task_limit=args.task_limit, guard_limit=args.guard_limit,
                            task_limits=() if args.task_limit is not None else None,
                            max_gen_toks=args.max_gen_toks)
    data_dir, db = resolve_location(args)
    log.open(data_dir, "demo")
    detach_temporary_server()  # a Ctrl-C reaches this process, not Prefect's server: it stays up while the run closes
    stage_hook.reached(stage_hook.STARTUP)
    interrupt.check()

    from spectral_surgery.flows import worker
    from spectral_surgery.flows.cli.run import Progress
    from spectral_surgery.flows.demo import demo_config

    err = Console(stderr=True, soft_wrap=True)
    cfg = demo_config(data_dir, budget, registry_url=db)
    with Progress(worker.registry(cfg), err, moves=cfg.promote, concurrency=cfg.concurrency):  # as `run` shows it
        result = run_demo(data_dir, budget, registry_url=db, say=functools.partial(_say, err))

    nightly = result.pop("nightly")  # the run's summary, as `run` prints it; --json keeps its run_id

    def render() -> None:
        from spectral_surgery.flows.cli.summary import served_now, summary_rows, width_of

        console = plain_console()
        width = width_of(console)
        rows = summary_rows(worker.registry(cfg), nightly, served_now)
        for line in demo_lines(result, rows, width, color=console.is_terminal):
            console.print(line, highlight=False, soft_wrap=True)

    emit(args, result, render)
    err.print(f"[dim]log: {log.path}[/] (library warnings and Prefect's messages)", highlight=False)
    return 1 if result["failed"] else 0


__all__ = ["cmd_demo"]
