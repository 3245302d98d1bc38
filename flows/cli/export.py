"""``spectral-surgery export DIR``: write the current production set out for serving (vLLM, LoRAX, PEFT).

Reads the production set through :func:`registry.read.production_set` and exports it with
:func:`tasks.production.export.export_production` (the layout, the atomic switches and ``production.json`` are described there).
Exit code 0 when every adapter with something in production is exported (or unchanged), 1 if any failed (the others
are still exported, and a failed adapter keeps serving its previous export).
"""

from __future__ import annotations

from pathlib import Path

from flows.cli.common import console, emit, open_registry, table


def items_of(entries):
    """The production set (:class:`registry.read.ProductionEntry`) as :class:`tasks.production.export.ExportItem` (also what
    ``publish`` reads)."""
    from tasks.production.export import ExportItem

    return [ExportItem(e.adapter, Path(e.source_path) if e.source_path else None, e.sha256, {
        "policy": e.policy, "decision_id": e.decision_id, "promoted_at": e.promoted_at,
        "base_model": e.base_model, "base_model_revision": e.base_model_revision,
        "adapter_version_id": e.adapter_version_id, "candidate_id": e.candidate_id, "implicit": e.implicit,
    }) for e in entries]


def cmd_export(args) -> int:
    from dataclasses import asdict

    from registry.read import production_set
    from tasks.production.export import MANIFEST, export_production

    reg = open_registry(args)
    entries = production_set(reg, only=args.adapter)
    reg.close()
    if args.adapter and not entries:
        from registry.validation import NotFoundError

        raise NotFoundError(f"no adapter named {args.adapter!r}")
    out_dir = Path(args.dir).expanduser().absolute()
    outcomes, manifest_changed = export_production(items_of(entries), out_dir, normalise_config=args.normalise,
                                                   keep_previous=args.keep_previous, dry_run=args.dry_run)
    policy = {e.adapter: e.policy for e in entries}
    rows = [{**asdict(o), "policy": policy[o.name]} for o in outcomes]
    failed = [r for r in rows if r["status"] == "failed"]
    payload = {"dir": str(out_dir), "manifest": str(out_dir / MANIFEST), "manifest_changed": manifest_changed,
               "dry_run": args.dry_run, "adapters": rows, "failed": len(failed),
               "skipped": [r["name"] for r in rows if r["status"] == "skipped"],
               "max_rank": max((r["rank"] or 0 for r in rows), default=0)}

    def render() -> None:
        from rich.markup import escape

        out = console()
        verb = "Would export" if args.dry_run else "Exported"
        out.print(table(
            f"{verb} the production set to {out_dir} ({len(failed)} failed)", ["adapter", "status", "serves", "sha256",
                                                                                 "path / reason"],
            [[r["name"], r["status"] + (" (normalised)" if r["normalised"] else ""), r["policy"],
              (r["sha256"] or "")[:12] or None, r["reason"] or r["path"]] for r in rows],
            narrow=("adapter", "status", "serves", "sha256")))
        if payload["skipped"]:
            out.print("Nothing in production (skipped): " + escape(", ".join(payload["skipped"])))
        state = "rewritten" if manifest_changed else "unchanged"
        out.print(f"{escape(str(out_dir / MANIFEST))}: {'would be ' + state if args.dry_run else state}"
                  + (f"; serve with --max-lora-rank ≥ {payload['max_rank']}" if payload["max_rank"] else ""))

    emit(args, payload, render)
    if failed and not args.json:
        from flows.cli.common import fail

        for r in failed:
            fail(f"{r['name']}: {r['reason']}", code=1)
    return 1 if failed else 0

