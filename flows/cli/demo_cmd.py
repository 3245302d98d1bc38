"""``spectral-surgery demo``: the main job on the embedded default (SQLite registry, local store, bundled model)."""

from __future__ import annotations

import functools
import os

from spectral_surgery.flows.cli.common import console as plain_console
from spectral_surgery.flows.cli.common import emit, guarded, resolve_location, verdict_cell


def _fmt(v, spec: str = "+.3f") -> str:
    return "—" if v is None else format(v, spec)


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
    from spectral_surgery.flows.refine_fleet import (
        run_nightly,
    )  # noqa: F401 - Prefect's log handlers exist before the log opens

    if not args.verbose:
        # Progress is the demo's step lines plus the flow's own log lines; lm-eval's per-call warnings go to the
        # log file (flows/cli/runlog.py) and tqdm bars nowhere.
        os.environ.setdefault("TQDM_DISABLE", "1")
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
        result = run_demo(data_dir, budget, registry_url=db, say=lambda m: err.print(m, highlight=False))

    def render() -> None:
        from rich.table import Table

        console = plain_console()
        table = Table(title=f"Demo nightly run over {len(result['rows'])} adapters "
                            f"({', '.join(f'{k} {v:.0f} s' for k, v in result['seconds'].items())})")
        for col in ("adapter", "baseline", "best policy", "task", "Δ vs baseline (p)", "Δ vs random (p)",
                    "guard Δ", "decision"):
            table.add_column(col, overflow="fold")
        for r in result["rows"]:
            table.add_row(r["adapter"], _fmt(r.get("baseline"), ".3f"), r.get("best_policy") or "—",
                          _fmt(r.get("task"), ".3f"),
                          f"{_fmt(r.get('delta_baseline'))} ({_fmt(r.get('p_baseline'), '.3g')})",
                          f"{_fmt(r.get('delta_random'))} ({_fmt(r.get('p_random'), '.3g')})",
                          _fmt(r.get("guard_delta")),
                          verdict_cell(r))
        console.print(table)
        for r in result["rows"]:  # the gate's own sentence: every candidate's evidence, why it moved or not
            console.print(f"[bold]{r['adapter']}[/]: " + (r.get("decision") or "").replace(" | ", "\n  "),
                          highlight=False)
        if result.get("dashboard"):
            console.print(f"Dashboard: {result['dashboard']}   Registry: spectral-surgery list --data-dir {data_dir}")

    emit(args, result, render)
    err.print(f"[dim]log: {log.path}[/] (library warnings and Prefect's messages)", highlight=False)
    return 1 if result["failed"] else 0


__all__ = ["cmd_demo"]
