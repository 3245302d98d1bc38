"""``spectral-surgery edit``: one adapter under one or more policies (one SVD and one calibration pass for all)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from flows.cli.common import PAPER_POLICIES, fail, guarded, parse_sets, resolve_location


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr)


def add_edit(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "edit", parents=[common],
        help="Edit one adapter under one or more policies (one SVD + one calibration pass for all).",
        description="Decompose a PEFT LoRA adapter, measure sensitivities once on a calibration set, and write "
        "one edited PEFT adapter per policy to OUT/<policy>/.",
    )
    p.add_argument("--base", required=True, help="Base model: local dir, hub id (from the local cache), or 'bundled'.")
    p.add_argument("--adapter", required=True, type=Path, help="PEFT LoRA adapter directory.")
    p.add_argument("--calib", required=True, help="Calibration JSONL (prompt, answer) or a registered loader name.")
    p.add_argument("--policy", action="append", default=None, help=f"Policy (repeatable; 'all' = {', '.join(PAPER_POLICIES)}).")
    p.add_argument("--out", required=True, type=Path, help="Output directory; one sub-directory per policy.")
    p.add_argument("--n-samples", type=int, default=None, help="Calibration examples (default 128).")
    p.add_argument("--batch-size", type=int, default=None, help="Calibration batch size (compute only; default 8).")
    p.add_argument("--aggregation", choices=["abs_of_sum", "mean_abs"], default=None, help="Sensitivity aggregation.")
    p.add_argument("--targets", default=None, help="Comma-separated module names (default o_proj,down_proj; 'all' = 7).")
    p.add_argument("--layer-min", type=int, default=None)
    p.add_argument("--layer-max", type=int, default=None)
    p.add_argument("--seed", type=int, default=42, help="Seed of random_index (default 42, the drivers').")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="EditConfig override, e.g. preserve_energy=l2.")
    p.add_argument("--max-seq-len", type=int, default=None)
    p.add_argument("--allow-pickle", action="store_true", help="Accept adapter_model.bin (pickle) weights.")
    p.set_defaults(func=guarded(cmd_edit))  # --json / --data-dir come from `common`, before or after `edit`


def surgery_config_from_args(args) -> "SurgeryConfig":
    from tasks.config import CalibConfig, EditConfig, SurgeryConfig, TargetConfig

    calib = {k: v for k, v in {"n_samples": args.n_samples, "batch_size": args.batch_size,
                                "aggregation": args.aggregation, "max_seq_len": args.max_seq_len}.items() if v is not None}
    calib["seed"] = args.seed
    targets = {k: v for k, v in {"target_modules": args.targets, "layer_min": args.layer_min,
                                  "layer_max": args.layer_max}.items() if v is not None}
    policies = []
    for p in args.policy or ["all"]:
        policies.extend(PAPER_POLICIES if p == "all" else [p])
    return SurgeryConfig(
        edit=EditConfig(**parse_sets(args.set)),
        targets=TargetConfig(**targets),
        calib=CalibConfig(**calib),
        policies=tuple(dict.fromkeys(policies)),
        random_control_seeds=(args.seed,),
    )


def cmd_edit(args) -> int:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from tasks.adapter_io import AdapterError, load_adapter
    from tasks.calibration import load_calibration
    from tasks.edit import prepare, write_candidate
    from tasks.model import load_base
    from tasks.policies import get_policy

    try:
        cfg = surgery_config_from_args(args)
        for p in cfg.policies:
            get_policy(p)
    except (ValidationError, ValueError, KeyError) as e:
        return fail(str(e))
    console = _console()
    status = _console(stderr=True)
    try:
        adapter = load_adapter(args.adapter, allow_pickle=args.allow_pickle)
        examples = load_calibration(args.calib, cfg.calib)
    except (AdapterError, ValueError, FileNotFoundError) as e:
        return fail(str(e))
    status.print(f"Loading base model [bold]{args.base}[/] …")
    model, tokenizer = load_base(args.base, data_dir=resolve_location(args)[0])  # GGUF cache under --data-dir
    with Progress(TextColumn("calibration"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=status, transient=False) as progress:
        task = progress.add_task("calib", total=None)

        def on_batch(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            prepared = prepare(model, tokenizer, adapter, examples, cfg, on_batch=on_batch)
        except AdapterError as e:
            return fail(str(e))
    rows = []
    for policy in cfg.policies:
        path, manifest = write_candidate(prepared, policy, cfg, args.out / policy, seed=args.seed)
        rows.append({"policy": policy, "path": str(path), **manifest["summary"]})
    if args.json:
        print(json.dumps({"adapter": str(args.adapter), "calib_sha256": prepared.calib_sha256,
                          "timings_s": prepared.timings, "policies": rows}, indent=2))
        return 0
    table = Table(title=f"Spectral Surgery on {escape(str(args.adapter))} ({prepared.n_examples} calibration examples)")
    for col in ("policy", "modules edited", "scalars edited", "mean |σ'/σ − 1|", "written to"):
        table.add_column(col, justify="right" if col not in ("policy", "written to") else "left")
    for r in rows:
        table.add_row(r["policy"], str(r["modules_edited"]), str(r["scalars_edited"]),
                      f"{r['mean_abs_rel_change']:.4f}", escape(r["path"]))
    console.print(table)
    return 0
