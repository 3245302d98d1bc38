"""Registry sub-commands of ``spectral-surgery``: init, register, list, history, promote, rollback, dashboard.

Every move of a production pointer (``promote``, ``rollback``; ``approve`` in :mod:`flows.cli.reviews_cmd`) is also
announced as a Prefect event (:mod:`flows.integrations.events`) once the registry has recorded it.

(``run`` lives in :mod:`flows.cli.run`, the shared plumbing in :mod:`flows.cli.common`.) Each command opens the
registry named by the global ``--data-dir`` / ``--db`` options, does one thing through
:class:`registry.repository.Registry` (the only write path), and prints a rich table, or JSON with ``--json``.

Over 400 lines: the seven registry sub-commands share their option handling and output helpers; one module per group
of sub-commands is the CLI's rule (flows/cli/__init__.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from spectral_surgery.flows.cli.common import (
    EXIT_USAGE,
    adapter_dict,
    candidates_of_latest,
    console,
    default_actor,
    emit,
    event_dict,
    fail,
    guarded,
    open_registry,
    production_behind,
    production_dict,
    production_payload,
    production_label,
    resolve_location,
    state_label,
    table,
    warn,
)


# ------------------------------------------------------------------------------------------- commands
@guarded
def cmd_init(args) -> int:
    from rich.markup import escape

    from spectral_surgery.registry.migrations import current

    reg = open_registry(args, create=True)
    data_dir, _ = resolve_location(args)
    data_dir.mkdir(parents=True, exist_ok=True)
    url = reg.engine.url.render_as_string(hide_password=True)
    info = {"data_dir": str(data_dir), "database": url, "schema_revision": current(reg.engine)}
    reg.close()
    return emit(args, info, lambda: console().print(
        f"[green]Registry ready[/]: data in [bold]{escape(info['data_dir'])}[/], database [bold]{escape(url)}[/] "
        f"(schema {info['schema_revision']})"))


def _local_or_uri(value: str, what: str, *, must_exist: bool) -> str:
    """A local path made absolute (the nightly run may start elsewhere); URIs and hub ids as given."""
    if "://" in value:
        return value
    path = Path(value).expanduser()
    if path.exists():
        return str(path.resolve())
    if must_exist:
        raise FileNotFoundError(f"{what} {value!r}: no such directory (give hf://<org>/<name>[@<revision>] "
                                "or an existing local adapter directory)")
    return value


def _calib_source(value: str) -> str:
    """An existing calibration file made absolute; anything else as given (the registry checks it)."""
    path = Path(value).expanduser()
    return str(path.resolve()) if path.is_file() else value


@guarded
def cmd_register(args) -> int:
    one = {"NAME": args.name, "--source": args.source, "--base": args.base, "--family": args.family,
           "--benchmark": args.benchmark, "--calib": args.calib, "--base-revision": args.base_revision}
    if args.dir:
        given = [k for k in ("NAME", "--source") if one[k] is not None] + ["--from"] * bool(args.from_file)
        if given:
            return fail(f"--dir DIR names and finds every adapter itself: drop {', '.join(given)}")
        if missing := [k for k in ("--base", "--family") if one[k] is None]:
            return fail(f"Missing option '{missing[0]}' (--dir shares --base and --family among its adapters)")
        if args.disabled and args.enabled:
            return fail("--disabled and --enabled exclude each other: give one")
        from spectral_surgery.flows.cli.register_file import cmd_register_dir

        return cmd_register_dir(args)
    if args.prefix is not None:
        return fail("--prefix goes with --dir DIR (folder names prefixed)")
    if args.from_file:
        given = [k for k, v in one.items() if v is not None]
        given += ["--enabled"] * args.enabled + ["--disabled"] * args.disabled
        given += ["--priority"] * (args.priority is not None)
        if given:
            return fail(f"--from FILE declares every field itself: drop {', '.join(given)} (or register one "
                        "adapter without --from)")
        from spectral_surgery.flows.cli.register_file import cmd_register_from

        return cmd_register_from(args)
    missing = [k for k in ("NAME", "--source", "--base", "--family") if one[k] is None]
    if missing:
        what = "argument" if missing[0] == "NAME" else "option"
        return fail(f"Missing {what} '{missing[0]}' (or give --from FILE to register many adapters)")
    reg = open_registry(args)
    config = {"calib": _calib_source(args.calib)} if args.calib else None
    if args.disabled and args.enabled:
        return fail("--disabled and --enabled exclude each other: give one")
    enabled = False if args.disabled else (True if args.enabled else None)
    source = _local_or_uri(args.source, "--source", must_exist=True)
    base = _local_or_uri(args.base, "--base", must_exist=False)
    if not args.no_check:  # what the nightly run would refuse hours later, refused now (no model pass)
        from spectral_surgery.registry.declaration import check_declaration
        from spectral_surgery.tasks.register_checks import context_warnings, door_checks, door_warnings

        check_declaration(args.family, args.benchmark, config)  # names first: "did you mean" beats a parse error
        findings, later = context_warnings(door_checks(source, base, args.base_revision,
                                                       config["calib"] if config else None, family=args.family,
                                                       benchmark_override=args.benchmark,
                                                       data_dir=resolve_location(args)[0]))
        context, later = (later, []) if not args.force else ([], later)  # issue 25: refused unless --force
        if findings or context:
            reg.close()
            escape_hatch = ("pass --force to register anyway (a run config with a lower evaluator_options."
                            "max_gen_toks may fit), or --no-check" if context and not findings else
                            "pass --no-check to register anyway")
            return fail(f"{args.name!r} not registered: " + "; ".join(f"--{f.what}: {f.message}"
                                                                     for f in [*findings, *context])
                        + f" (fix it, or {escape_hatch})")
        for finding in [*door_warnings(source, base), *later]:
            warn(finding.message)
    changes = reg.registration_changes(args.name, source, base, args.family, base_model_revision=args.base_revision,
                                       benchmark_override=args.benchmark, config=config)
    if changes:  # said out loud, before anything is written (stderr: --json stays parseable)
        from rich.console import Console
        from rich.markup import escape

        for change in changes:
            Console(stderr=True).print(f"[bold yellow]change:[/] {escape(args.name)}: {escape(str(change))}"
                                       + (" (needs --force)" if change.guarded and not args.force else ""),
                                       soft_wrap=True)
    adapter = reg.register_adapter(
        args.name, source, base, args.family,
        base_model_revision=args.base_revision, benchmark_override=args.benchmark, enabled=enabled, config=config,
        force=args.force, priority=args.priority,
    )
    reg.close()
    row = {**adapter_dict(adapter), "changes": None if changes is None else [str(c) for c in changes]}
    title = (f"Registered {adapter.name}" if changes is None else
             f"Re-registered {adapter.name}: " + (f"{len(changes)} change(s)" if changes else "nothing changed"))
    return emit(args, row, lambda: console().print(table(
        title, ["field", "value"],
        [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in row.items()])))


@guarded
def cmd_check(args) -> int:
    """The checks of ``register`` (:mod:`tasks.register_checks`) on registered adapters: exit 1 if any fails."""
    from spectral_surgery.tasks.register_checks import context_warnings, door_checks, door_warnings

    reg = open_registry(args)
    adapters = [reg.get_adapter(args.name)] if args.name else reg.list_adapters()
    reg.close()
    rows = []
    data_dir = resolve_location(args)[0]
    shared: dict = {}  # what depends only on the base (layout, context check): once per base, not per adapter
    for a in adapters:
        calib = (a.config_json or {}).get("calib")
        findings, later = context_warnings(door_checks(a.source_uri, a.base_model_id, a.base_model_revision, calib,
                                                       family=a.task_family, benchmark_override=a.benchmark_override,
                                                       data_dir=data_dir, cache=shared))
        findings += later  # the evaluation must fit the base's context (issue 25): a problem, as at register
        rows.append({"adapter": a.name, "ok": not findings,
                     "problems": [{"what": f.what, "message": f.message} for f in findings],
                     "warnings": [{"what": w.what, "message": w.message}
                                  for w in door_warnings(a.source_uri, a.base_model_id)]})

    def render() -> None:
        if not rows:
            console().print("No adapters registered yet: add one with `spectral-surgery register`.")
            return
        console().print(table(
            f"Checked {len(rows)} adapter(s): {sum(not r['ok'] for r in rows)} with problems",
            ["adapter", "check", "problems"],
            [[r["adapter"], ("ok" if r["ok"] else "FAILED") + (" (warning)" if r["warnings"] else ""),
              "\n".join(f"{p['what']}: {p['message']}" for p in r["problems"] + r["warnings"]) or "—"]
             for r in rows],
            narrow=("adapter", "check")))

    emit(args, rows, render)
    return 1 if any(not r["ok"] for r in rows) else 0


@guarded
def cmd_list(args) -> int:
    from spectral_surgery.registry.read import fleet_listing

    reg = open_registry(args)
    rows = []
    waiting = {r.adapter_id: r for r in reversed(reg.list_reviews(state="pending"))}  # promote: review
    for listed in fleet_listing(reg):  # a fixed number of queries, whatever the fleet's size
        a, latest = listed.adapter, listed.latest
        prod = production_payload(listed.production, listed.policy)
        rows.append({**adapter_dict(a), "versions": listed.versions,
                     "latest_version": None if latest is None else {
                         "id": latest.id, "content_sha256": latest.content_sha256,
                         "resolved_revision": latest.resolved_revision,
                         "last_seen_at": latest.last_seen_at.isoformat()},
                     "production": prod,
                     "production_behind": production_behind(reg, a.name, prod, latest.id if latest else None),
                     "awaiting_review": None if a.id not in waiting else {
                         "id": waiting[a.id].id, "decision_id": waiting[a.id].decision_id,
                         "expires_at": waiting[a.id].expires_at.isoformat()}})
    reg.close()

    def render() -> None:
        if not rows:
            console().print("No adapters registered yet: add one with `spectral-surgery register`.")
            return
        console().print(table(
            f"{len(rows)} adapter(s)", ["adapter", "family", "enabled", "source", "base", "latest", "production"],
            [[r["name"], r["task_family"] + (f" → {r['benchmark_override']}" if r["benchmark_override"] else ""),
              "yes" if r["enabled"] else "no", r["source_uri"], r["base_model_id"],
              ("—" if r["latest_version"] is None else
               f"v{r['latest_version']['id']} {r['latest_version']['content_sha256'][:12]}")
              + (f"\nfetch failed: {r['fetch_error']}" if r["fetch_error"] else ""),
              production_label(r["production"]) + (
                  f"\nolder than the latest v{r['production_behind']['latest_version']}: "
                  f"{r['production_behind']['why']}" if r["production_behind"] else "") + (
                  f"\nawaiting review {r['awaiting_review']['id']} until {r['awaiting_review']['expires_at'][:16]}"
                  if r["awaiting_review"] else "")] for r in rows], narrow=("adapter", "family", "enabled"),
            optional=("source", "base")))

    return emit(args, rows, render)


@guarded
def cmd_history(args) -> int:
    reg = open_registry(args)
    events = reg.history(args.adapter)
    prod = production_dict(reg, args.adapter)
    cands = candidates_of_latest(reg, args.adapter)
    cache: dict[int, str] = {}
    rows = [[e.id, e.at.strftime("%Y-%m-%d %H:%M:%S"), e.kind, e.actor,
             state_label(reg, e.from_version_id, e.from_candidate_id, cache),
             state_label(reg, e.to_version_id, e.to_candidate_id, cache), e.reason] for e in events]
    payload = {"adapter": args.adapter, "production": prod, "events": [event_dict(e, args.adapter) for e in events],
               "candidates": cands}
    reg.close()

    def render() -> None:
        out = console()
        if rows:
            out.print(table(f"History of {args.adapter}", ["#", "at (UTC)", "kind", "actor", "from", "to",
                                                            "reason"], rows, narrow=("#", "kind")))
        else:
            out.print(f"{args.adapter}: no production moves yet.")
        out.print(f"In production now: [bold]{production_label(prod)}[/]")
        if cands:
            fmt = lambda v: None if v is None else f"{v:.4f}"  # noqa: E731
            out.print(table(
                f"Candidates of v{cands[0]['version_id']} (promote by id)",
                ["id", "policy", "seed", "control", "benchmark", "score", "baseline"],
                [[c["id"], c["policy"], c["seed"], "yes" if c["is_control"] else "no", c["benchmark"],
                  fmt(c["task_score"]), fmt(c["baseline_score"])] for c in cands], narrow=("id", "policy")))

    return emit(args, payload, render)


def event_payload(reg, event) -> tuple[dict, str, str]:
    """``(payload, from label, to label)`` of a recorded pointer move, as ``promote``/``rollback``/``approve`` print
    it."""
    name = reg.get_version(event.to_version_id).adapter.name
    cache: dict[int, str] = {}
    payload = {"changed": True, "event": event_dict(event, name), "production": production_dict(reg, name)}
    frm = state_label(reg, event.from_version_id, event.from_candidate_id, cache)
    to = state_label(reg, event.to_version_id, event.to_candidate_id, cache)
    return payload, frm, to


def mlflow_config(args):
    """The ``mlflow:`` section of ``--config`` (``None`` without one), read and validated BEFORE a move, so that a
    bad file is refused with nothing moved."""
    from spectral_surgery.tasks.delivery.mlflow_run import MlflowConfig
    from spectral_surgery.tasks.run_config import read_config_file

    if not getattr(args, "config", None):
        return None
    from pydantic import ValidationError

    from spectral_surgery.registry.validation import RegistryError

    section = read_config_file(args.config).get("mlflow")
    try:
        return MlflowConfig.model_validate(section) if section else None
    except ValidationError as e:
        what = "; ".join(f"mlflow.{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise RegistryError(f"{args.config}: invalid mlflow section ({what}); nothing was moved") from None


def follow_in_mlflow(reg, event, mcfg) -> dict | None:
    """Move the MLflow alias ``production`` with a manual move, when a tracking server is known: ``mcfg``
    (:func:`mlflow_config`), else ``$MLFLOW_TRACKING_URI`` (default experiment and prefix). Never fails the move."""
    import logging

    from spectral_surgery.flows.integrations.mlflow_client import follow_or_warn

    return follow_or_warn(reg, event, mcfg, logging.getLogger("spectral_surgery.mlflow"))


def _print_event(args, reg, event, title: str) -> int:
    from rich.markup import escape  # the reason and actor are free text: "[urgent] …" is not markup

    from spectral_surgery.flows.integrations.events import announce_move

    announce_move(reg, event)  # the Prefect event of the move (never fails it)
    mirrored = follow_in_mlflow(reg, event, getattr(args, "mlflow", None))
    payload, frm, to = event_payload(reg, event)
    if mirrored is not None:
        payload["mlflow"] = mirrored
    name = payload["event"]["adapter"]
    reg.close()
    return emit(args, payload, lambda: console().print(
        f"[green]{title}[/] {name}: {frm} → [bold]{to}[/] (event #{event.id} by {escape(event.actor)}: "
        f"{escape(event.reason)})"))


@guarded
def cmd_promote(args) -> int:
    from spectral_surgery.registry.repository import RegistryError

    args.mlflow = mlflow_config(args)
    reg = open_registry(args)
    if args.candidate in ("unedited", "baseline"):
        if args.version is None:
            raise RegistryError("promoting the unedited adapter needs --version VERSION_ID")
        candidate_id = None
    else:
        try:
            candidate_id = int(args.candidate)
        except ValueError:
            raise RegistryError(f"CANDIDATE_ID must be a candidate id (an integer) or 'unedited', "
                                f"got {args.candidate!r}") from None
    event = reg.manual_promote(candidate_id, args.actor or default_actor(), args.reason,
                               adapter_version_id=args.version, force=args.force)
    if event is None:
        reg.close()
        return emit(args, {"changed": False, "event": None}, lambda: console().print(
            "Already in production: nothing changed, nothing recorded."))
    return _print_event(args, reg, event, "Promoted by hand:")


@guarded
def cmd_rollback(args) -> int:
    args.mlflow = mlflow_config(args)
    reg = open_registry(args)
    event = reg.rollback(args.adapter, args.actor or default_actor(), args.reason)
    return _print_event(args, reg, event, "Rolled back")


@guarded
def cmd_report(args) -> int:
    """What wins, for which adapters: per task family × edit over each adapter's latest decision."""
    from spectral_surgery.registry.read import latest_decisions
    from spectral_surgery.tasks.decision.fleet_report import MeanCI, cost_by_data, cost_text, what_wins

    if args.family:
        from spectral_surgery.tasks.evaluation.benchmarks import FAMILIES
        from spectral_surgery.tasks.names import unknown_name

        if args.family not in FAMILIES:  # `--family maths` must not read as "no decisions yet"
            return fail(f"--family: {unknown_name('task family', args.family, list(FAMILIES))}", code=EXIT_USAGE)
    reg = open_registry(args)
    decisions = latest_decisions(reg)
    reg.close()
    if args.family:
        decisions = [d for d in decisions if d.family == args.family]
    rows = what_wins(decisions)

    def fmt(x: MeanCI) -> str:
        return "–" if x.mean is None else f"{x.mean:+.1f}" + ("" if x.lo is None else f" [{x.lo:+.1f}, {x.hi:+.1f}]")

    def render() -> None:
        if not rows:
            console().print(f"No decisions of {args.family} adapters yet." if args.family else
                            "No decisions yet: run `spectral-surgery run` (or `demo`) first.")
            return
        console().print(table(
            f"What wins: {len(decisions)} adapter(s), each adapter's latest decision (points, 95% CI across adapters)",
            ["family", "edit", "data", "adapters", "promoted", "pass/hold/reject", "Δ vs unedited", "Δ IFEval",
             "s/edit (prep+write+eval)", "s/adapter run"],
            [[r.family, r.edit, r.data or "–", r.adapters, r.promoted, f"{r.passed}/{r.held}/{r.rejected}",
              fmt(r.delta_pts), fmt(r.guard_pts), cost_text(r.cost),
              "–" if r.seconds_per_adapter is None else f"{r.seconds_per_adapter:.0f}"] for r in rows],
            narrow=("family", "edit", "data", "adapters", "promoted", "pass/hold/reject")))
        for kind, c in by_data.items():
            console().print(f"{kind} edits ({c.edits:.0f}): {c.total:.0f} s per edit and adapter "
                            f"(prepare {c.prepare:.0f} + write {c.write:.1f} + evaluate {c.evaluate:.0f})")

    by_data = cost_by_data(rows)
    # the typed rows as JSON: the same keys, in the same order, as the report's dicts before it was typed
    return emit(args, {"adapters": len(decisions), "rows": [r.model_dump(mode="json") for r in rows],
                       "cost_by_data": {k: c.model_dump(mode="json") for k, c in by_data.items()}}, render)


@guarded
def cmd_dashboard(args) -> int:
    from rich.markup import escape

    try:
        from spectral_surgery.flows.dashboard import render_dashboard, serve_dashboard
    except ImportError as e:
        return fail(f"the dashboard is not available in this installation ({e})")
    reg = open_registry(args)
    data_dir, _ = resolve_location(args)
    if args.evidence:
        from spectral_surgery.flows.dashboard import collect, evidence_markdown, evidence_rows

        data = collect(reg)
        reg.close()
        return emit(args, {"rows": evidence_rows(data)}, lambda: sys.stdout.write(evidence_markdown(data)))
    if args.serve:
        console().print(f"Serving the dashboard on http://{args.host}:{args.port}/ (Ctrl-C to stop)")
        serve_dashboard(reg, args.host, args.port, args.interval)
        return 0
    path = render_dashboard(reg, args.out or data_dir / "dashboard.html")
    reg.close()
    return emit(args, {"path": str(path)},
                lambda: console().print(f"Dashboard written to [bold]{escape(str(path))}[/]"))
