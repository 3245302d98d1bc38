"""``spectral-surgery export DIR``: write the current production set out for serving (vLLM, LoRAX, PEFT).

Reads the production set through :func:`registry.read.production_set` and exports it with
:func:`tasks.delivery.export.export_production` (the layout, the atomic switches and ``production.json`` are described
there). Exit code 0 when every adapter with something in production is exported (or unchanged), 1 if any failed (the
others are still exported, and a failed adapter keeps serving its previous export).

``--watch`` keeps ``DIR`` current (:func:`tasks.delivery.export_watch.watch`): one line per switch on stdout (a JSON
object per line with ``--json``), failures and registry errors on stderr, until SIGINT/SIGTERM (exit 0).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from spectral_surgery.flows.cli.common import console, emit, open_registry, table


def items_of(entries):
    """The production set (:class:`registry.read.ProductionEntry`) as :class:`tasks.delivery.export.ExportItem` (also
    what ``publish`` reads)."""
    from spectral_surgery.tasks.delivery.export import ExportItem

    return [ExportItem(e.adapter, Path(e.source_path) if e.source_path else None, e.sha256, {
        "policy": e.policy, "decision_id": e.decision_id, "promoted_at": e.promoted_at,
        "base_model": e.base_model, "base_model_revision": e.base_model_revision,
        "adapter_version_id": e.adapter_version_id, "candidate_id": e.candidate_id, "implicit": e.implicit,
    }) for e in entries]


def cmd_export(args) -> int:
    from dataclasses import asdict

    from spectral_surgery.registry.read import production_set
    from spectral_surgery.tasks.delivery.export import MANIFEST, export_production

    if getattr(args, "watch", False):
        return cmd_watch(args)
    if getattr(args, "interval", None) is not None or getattr(args, "max_ticks", None) is not None:
        from spectral_surgery.registry.validation import RegistryError

        raise RegistryError("--interval and --max-ticks go with --watch")
    reg = open_registry(args)
    entries = production_set(reg, only=args.adapter)
    reg.close()
    if args.adapter and not entries:
        from spectral_surgery.registry.validation import NotFoundError

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
        from spectral_surgery.flows.cli.common import fail

        for r in failed:
            fail(f"{r['name']}: {r['reason']}", code=1)
    return 1 if failed else 0


# ---------------------------------------------------------------------------------------------- --watch
@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[dict]:
    """SIGINT and SIGTERM set ``stop`` (the loop ends after the switch in progress) instead of killing the process;
    the previous handlers are restored on exit. Yields ``{"signal": name}`` once one arrived."""
    got: dict = {}

    def handler(signum, _frame) -> None:
        got["signal"] = signal.Signals(signum).name
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def switch_line(outcome, item) -> dict:
    """One switch of the watcher as a JSON-able row (what ``--json`` prints, one object per line)."""
    from datetime import UTC, datetime

    return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "adapter": outcome.name,
            "status": outcome.status, "policy": item.info.get("policy"), "decision_id": item.info.get("decision_id"),
            "sha256": outcome.sha256, "previous_sha256": outcome.previous_sha256, "path": outcome.path,
            "normalised": outcome.normalised, "reason": outcome.reason}


def cmd_watch(args) -> int:
    """``export DIR --watch``: keep DIR current until SIGINT/SIGTERM or ``--max-ticks`` polls (exit 0)."""
    import json
    import sys

    from sqlalchemy.exc import SQLAlchemyError

    from spectral_surgery.flows.cli.common import fail, warn
    from spectral_surgery.registry.read import production_set
    from spectral_surgery.registry.validation import NotFoundError
    from spectral_surgery.tasks.delivery.export_watch import watch

    if args.dry_run:
        from spectral_surgery.registry.validation import RegistryError

        raise RegistryError("--watch writes the export; drop --dry-run (or run export --dry-run once)")
    reg = open_registry(args)
    out_dir = Path(args.dir).expanduser().absolute()

    def read():
        entries = production_set(reg, only=args.adapter)
        if args.adapter and not entries:
            raise NotFoundError(f"no adapter named {args.adapter!r}")
        return items_of(entries)

    def report(outcome, item) -> None:
        row = switch_line(outcome, item)
        if args.json:
            print(json.dumps(row, default=str), flush=True)
        elif outcome.status == "failed":
            fail(f"{outcome.name}: {outcome.reason} (still serving its previous export; retrying every poll)", code=1)
        else:
            what = f"{row['policy']}" + (f", decision {row['decision_id']}" if row["decision_id"] else "")
            frm = f"{outcome.previous_sha256} → " if outcome.previous_sha256 else ""
            print(f"{row['at']} {outcome.name}: {outcome.status} {frm}{(outcome.sha256 or '')[:12]} ({what}) "
                  f"{outcome.path}", flush=True)

    interval = args.interval if args.interval is not None else 30.0
    stop = threading.Event()
    sys.stderr.write(f"watching the production set: {out_dir} every {interval:g} s (SIGINT/SIGTERM stops)\n")
    with _stop_on_signals(stop) as got:
        try:
            state = watch(read, out_dir, interval=interval, report=report, warn=warn, stop=stop,
                          max_ticks=args.max_ticks, transient=(SQLAlchemyError, OSError),
                          normalise_config=args.normalise, keep_previous=args.keep_previous)
        finally:
            reg.close()
    why = f"on {got['signal']}" if got else f"after {args.max_ticks} polls"
    sys.stderr.write(f"stopped {why} ({state.ticks} polls; {len(state.failed)} adapter(s) failing)\n")
    return 0
