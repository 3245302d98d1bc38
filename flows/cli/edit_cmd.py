"""``spectral-surgery edit``: one adapter under one or more policies (one SVD and one calibration pass for all)."""

from __future__ import annotations

import json

from pydantic import ValidationError

from spectral_surgery.flows.cli.common import PAPER_POLICIES, console, fail, parse_sets, resolve_location


def _console(stderr: bool = False):
    if stderr:  # progress bars: rich sizes them to the terminal
        from rich.console import Console

        return Console(stderr=True)
    return console()


def surgery_config_from_args(args) -> "SurgeryConfig":
    from spectral_surgery.tasks.config import CalibConfig, EditConfig, SurgeryConfig, TargetConfig, names_edit_sections

    calib = {k: v for k, v in {"n_samples": args.n_samples, "batch_size": args.batch_size,
                                "aggregation": args.aggregation,
                               "max_seq_len": args.max_seq_len}.items() if v is not None}
    calib["seed"] = args.seed
    targets = {k: v for k, v in {"target_modules": args.targets, "layer_min": args.layer_min,
                                  "layer_max": args.layer_max}.items() if v is not None}
    policies = []
    for p in args.policy or ["all"]:
        policies.extend(PAPER_POLICIES if p == "all" else [p])
    sets = parse_sets(args.set)
    if names_edit_sections(sets):
        import spectral_surgery.tasks.surgery.policies  # noqa: F401  (what each edit.<name> section is)
    return SurgeryConfig(
        edit=EditConfig(**sets),
        targets=TargetConfig(**targets),
        calib=CalibConfig(**calib),
        policies=tuple(dict.fromkeys(policies)),
        random_control_seeds=(args.seed,),
    )


def _first_error(e: ValidationError) -> str:
    """The first error of a config built from edit's options, as one line naming the option and the key."""
    from spectral_surgery.registry.declaration import one_line
    from spectral_surgery.tasks.config import CalibConfig, EditConfig, SurgeryConfig, TargetConfig

    models = {m.__name__: m for m in (CalibConfig, EditConfig, SurgeryConfig, TargetConfig)}
    return one_line(e, models.get(e.title, SurgeryConfig), "--set" if e.title == "EditConfig" else "")


def cmd_edit(args) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from spectral_surgery.tasks.adapter_io import AdapterError, load_adapter
    from spectral_surgery.tasks.surgery.calibration import load_calibration
    from spectral_surgery.tasks.surgery.edit import prepare, prepare_data_free
    from spectral_surgery.tasks.model import BaseModelError, load_base
    from spectral_surgery.tasks.surgery.policies import get_policy

    try:
        cfg = surgery_config_from_args(args)
        specs = [get_policy(p) for p in cfg.policies]
    except ValidationError as e:  # the key's one line (with "did you mean") first, then pydantic's own text
        return fail(f"{_first_error(e)}\n{e}")
    except (ValueError, KeyError) as e:
        return fail(str(e))
    need_data = [s.name for s in specs if s.needs_data]
    if need_data and not (args.base and args.calib):
        missing = " and ".join(o for o, v in (("--base", args.base), ("--calib", args.calib)) if not v)
        return fail(f"{', '.join(need_data)} need(s) calibration data: give {missing} (data-free edits such as hns "
                    "or flat_nuclear need neither; `edit --list-policies` shows which is which)")
    console = _console()
    status = _console(stderr=True)
    try:
        adapter = load_adapter(args.adapter, allow_pickle=args.allow_pickle)
        examples = load_calibration(args.calib, cfg.calib) if need_data else []
    except (AdapterError, ValueError, FileNotFoundError) as e:
        return fail(str(e))
    if not need_data:  # every edit is data-free: decompose only, no model, no calibration pass
        try:
            prepared = prepare_data_free(adapter, cfg)
        except AdapterError as e:
            return fail(str(e))
        return _write_and_report(args, cfg, prepared, console)
    status.print(f"Loading base model [bold]{args.base}[/] …")
    try:
        model, tokenizer = load_base(args.base, data_dir=resolve_location(args)[0])  # GGUF cache under --data-dir
    except BaseModelError as e:
        return fail(str(e))
    with Progress(TextColumn("calibration"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=status, transient=False) as progress:
        task = progress.add_task("calib", total=None)

        def on_batch(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            prepared = prepare(model, tokenizer, adapter, examples, cfg, on_batch=on_batch)
        except AdapterError as e:
            return fail(str(e))
    return _write_and_report(args, cfg, prepared, console)


def _write_and_report(args, cfg, prepared, console) -> int:
    from rich.markup import escape
    from rich.table import Table

    from spectral_surgery.tasks.surgery.edit import write_candidate

    rows = []
    for policy in cfg.policies:
        path, manifest = write_candidate(prepared, policy, cfg, args.out / policy, seed=args.seed)
        rows.append({"policy": policy, "path": str(path), **manifest["summary"]})
    if args.json:
        print(json.dumps({"adapter": str(args.adapter), "calib_sha256": prepared.calib_sha256,
                          "timings_s": prepared.timings, "policies": rows}, indent=2))
        return 0
    data = f"{prepared.n_examples} calibration examples" if prepared.n_examples else "data-free"
    table = Table(title=f"Spectral Surgery on {escape(str(args.adapter))} ({data})")
    for col in ("policy", "modules edited", "scalars edited", "mean |σ'/σ − 1|", "written to"):
        table.add_column(col, justify="right" if col not in ("policy", "written to") else "left")
    for r in rows:
        table.add_row(r["policy"], str(r["modules_edited"]), str(r["scalars_edited"]),
                      f"{r['mean_abs_rel_change']:.4f}", escape(r["path"]))
    console.print(table)
    return 0
