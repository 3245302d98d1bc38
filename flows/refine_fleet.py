"""The nightly flow: scan the registry, find adapter versions that need work, fan out one task run per adapter.

A version needs work when it is new, was never refined, or was refined under another configuration (its
result hash differs). One adapter's failure is recorded with its error and never stops the others. Fan-out is
bounded by ``RunConfig.concurrency`` and runs on Prefect's thread pool or, past one machine, on Dask. A stop
request (:mod:`flows.interrupt`: SIGINT/SIGTERM) ends the run ``cancelled`` with its open adapter runs released.

With ``RunConfig.window`` the night plans itself (:mod:`tasks.night_plan`): each adapter's cost is forecast from
past nights, adapters start in priority order while they fit, the rest are recorded ``deferred`` (first in line
the next night), and a night that runs long stops starting adapters; one still in flight at ``wall_clock + grace``
is released between stages and recorded deferred too (nothing promoted). The summary reports planned against
actual seconds per adapter and the forecast error.
"""

import contextlib
import os
import socket
import threading
import time
import uuid
from collections import deque

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from spectral_surgery.flows import interrupt, stage_hook, worker
from spectral_surgery.flows.integrations import events
from spectral_surgery.flows.refine.artifacts import night_artifacts, night_publisher
from spectral_surgery.flows.refine.released import released_state, stopped_state
from spectral_surgery.registry.db import DB_ENV
from spectral_surgery.registry.validation import RunStoppedError
from spectral_surgery.tasks.secrets import has_password
from spectral_surgery.flows.refine_adapter import adapter_config_hash, fetch_adapter, refine_version
from spectral_surgery.tasks.night_plan import (NightPlan, PlannedAdapter, clock, forecast_error, plan_night,
                                               still_fits, time_left)
from spectral_surgery.tasks.run_config import RunConfig

monotonic = time.monotonic  # the night's clock (a test injects stage costs by replacing it)


@task(cache_policy=NO_CACHE, task_run_name="refine-{adapter_name}")
def refine_one(version_id: int, adapter_name: str, run_id: int, config: RunConfig,
               window_left_s: float | None = None):
    """Refine one adapter version in this task run (:func:`flows.refine_adapter.refine_version`; no subflow run,
    whose Prefect bookkeeping cost more than a small adapter's model work). Its failure is returned as data, not
    raised, so the fleet goes on. The result names the process that did the work (``worker``: host:pid, a Dask
    worker process or this one) and its torch threads (``worker_threads``). ``window_left_s``: seconds until the
    window's hard stop, past which the adapter is released at its next checkpoint (status ``deferred``); None: none.

    A released adapter's task run ends in a named state, not ``Crashed`` (:mod:`flows.refine.released`); only a
    real failure of the work logs an error.
    """
    import torch

    where = {"worker": f"{socket.gethostname()}:{os.getpid()}", "worker_threads": torch.get_num_threads()}
    t0 = monotonic()
    try:
        with interrupt.window_deadline(window_left_s, clock=monotonic):
            out = {**refine_version(version_id, adapter_name, run_id, config), **where}
    except (KeyboardInterrupt, RunStoppedError) as e:
        # a stop request (Interrupted at a checkpoint; RunStoppedError: the run's row was cancelled, which is how a
        # Dask worker process that never saw the signal learns of it): refine_version closed the adapter's row
        out = {"adapter": adapter_name, "status": "failed", "error": f"{type(e).__name__}: {e}", "interrupted": True,
               **where}
    except Exception as e:
        # the traceback in the task run's log (the run's log file; the terminal with -v), as the adapter's own flow
        # run logged it when it was one; the registry records the failure itself
        get_run_logger().error("%s failed: %s: %s", adapter_name, type(e).__name__, e, exc_info=True)
        out = {"adapter": adapter_name, "status": "failed", "error": f"{type(e).__name__}: {e}", **where}
    out = {**out, "version_id": version_id, "seconds": monotonic() - t0}
    return released_state(out) or out


HEARTBEAT_SECONDS = 30.0  # well inside registry.runs.LEASE_SECONDS


@contextlib.contextmanager
def heartbeat(reg, run_id: int, every: float = HEARTBEAT_SECONDS):
    """Refresh the run's lease every ``every`` seconds from a daemon thread while the block runs, so that a run
    killed outright (whose row cannot be closed) is told apart from a live one by the next run."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            with contextlib.suppress(Exception):  # a missed beat is retried; the lease allows for many
                reg.heartbeat(run_id)

    thread = threading.Thread(target=beat, name=f"heartbeat-run-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def scan(config: RunConfig, run_id: int) -> list[dict]:
    """Resolve every enabled adapter's source and record its current version; returns scan failures."""
    reg = worker.registry(config)
    failures = []
    for adapter in reg.list_adapters(enabled_only=True):
        state = fetch_adapter(adapter.source_uri, return_state=True)
        if state.is_completed():
            res = state.result()
            reg.record_version(adapter.name, res.sha256, res.revision, res.local_path)
            stage_hook.reached("scan")
            interrupt.check()
        else:
            try:
                state.result()
            except Exception as e:  # recorded on the adapter, and against its latest known version if any
                failures.append({"adapter": adapter.name, "status": "failed", "error": f"{type(e).__name__}: {e}"})
                reg.record_fetch_error(adapter.name, e)
                versions = reg.list_versions(adapter.name)
                if versions:
                    reg.record_failure(run_id, versions[0].id, e, config_hash=adapter_config_hash(config, adapter))
    return failures


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def worker_thread_env(workers: int, cpus: int | None = None) -> dict[str, str]:
    """The environment of local Dask worker processes: the machine's cores split among them (``cpus // workers``,
    at least 1). Dask's own default is one thread per worker process (``OMP_NUM_THREADS=1``), which would leave
    most cores of a large CPU idle; torch reads these variables when it starts in the worker."""
    threads = str(max(1, (cpus or os.cpu_count() or 1) // max(1, workers)))
    return {var: threads for var in THREAD_VARS}


def _task_runner(config: RunConfig):
    if config.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        # process workers by default: each loads its own base model, so adapters really run in parallel (threads
        # share this process's one model and take turns on its lock)
        kwargs = {"n_workers": config.concurrency, "processes": config.dask_workers == "processes",
                  "threads_per_worker": 1, "dashboard_address": None}
        if config.dask_workers == "processes":
            kwargs["env"] = worker_thread_env(config.concurrency)
        return DaskTaskRunner(cluster_kwargs=kwargs)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=config.concurrency)


def headline(summary: dict) -> str:
    """The run's counts, failures apart from refinements: "2 refined, 1 failed (1 at the scan), 1 skipped ...".

    ``completed`` versions were refined to a decision; ``failed`` counts every failure, of a refinement or of
    reading an adapter's source at the scan (``scan_failed``, which refined no version); ``skipped`` versions were
    held by another live run.
    """
    failed, scan = summary["failed"], summary.get("scan_failed", 0)
    text = f"{summary['completed']} refined, {failed} failed"
    if scan:
        text += f" ({scan} at the scan)" if scan < failed else " (at the scan)"
    if summary.get("skipped"):
        text += f", {summary['skipped']} skipped (another run holds them)"
    if summary.get("deferred"):
        text += f", {summary['deferred']} deferred to the next night (the window)"
    return text


def _plan(reg, config: RunConfig, run_id: int, pending: list, elapsed_s: float,
          log) -> tuple[list, NightPlan | None, list[dict]]:  # fmt: skip
    """The versions to start tonight, in order, with the night's plan (``elapsed_s``: spent before it, the scan);
    the deferred ones are recorded as such. Without a window: every pending version, no plan."""
    if config.window is None:
        return pending, None, []
    from spectral_surgery.registry.night import night_history

    hash_of = lambda v: adapter_config_hash(config, v.adapter)  # noqa: E731
    plan = plan_night(night_history(reg, pending), config.window, config.concurrency, elapsed_s)
    by_id = {v.id: v for v in pending}
    log.info("window: %d of %d adapter version(s) fit (planned end %.0f s); %d deferred", len(plan.started),
             len(plan.entries), plan.planned_end_s, len(plan.deferred))
    deferred = [_defer(reg, run_id, by_id[e.version_id], hash_of(by_id[e.version_id]), e, e.reason, log)
                for e in plan.deferred]
    return [by_id[e.version_id] for e in plan.started], plan, deferred


def _defer(reg, run_id: int, version, config_hash: str, entry: PlannedAdapter, reason: str, log) -> dict:
    """Record a version as deferred to the next night; its result row."""
    reg.defer_adapter_run(run_id, version.id, config_hash, forecast_s=entry.forecast_s, reason=reason)
    log.info("%s: deferred to the next night: %s", entry.name, reason)
    return {"adapter": entry.name, "version_id": version.id, "status": "deferred", "reason": reason}


def plan_rows(plan: NightPlan, results: list[dict]) -> list[dict]:
    """Planned against actual per adapter, in plan order: ``{adapter, action, status, rank, forecast_s, basis,
    actual_s, error, reason}`` (``error``: ``(actual − forecast) / forecast``, None when it did not run)."""
    by_name = {r["adapter"]: r for r in results}
    rows = []
    for e in plan.entries:
        r = by_name.get(e.name, {})
        actual = r.get("seconds") if r.get("status") in ("completed", "failed") else None
        rows.append({"adapter": e.name, "action": e.action, "status": r.get("status", "not reached"),
                     "rank": e.rank, "forecast_s": e.forecast_s, "basis": e.basis, "actual_s": actual,
                     "error": forecast_error(e.forecast_s, actual) if actual is not None else None,
                     "reason": r.get("reason") if r.get("status") == "deferred" else e.reason})
    return rows


def window_summary(plan: NightPlan, rows: list[dict], elapsed_s: float) -> dict:
    """The night against its window: limits, planned end, elapsed seconds, and the forecast error of the adapters
    that ran (``forecast_error``: total actual over total forecast, minus 1; ``mean_abs_error``: per adapter)."""
    ran = [r for r in rows if r["actual_s"] is not None]
    total_f, total_a = sum(r["forecast_s"] for r in ran), sum(r["actual_s"] for r in ran)
    return {"wall_clock_s": plan.wall_clock_s, "gpu_hours": None if plan.gpu_seconds is None
            else plan.gpu_seconds / 3600, "lanes": plan.lanes, "planned_end_s": plan.planned_end_s,
            "elapsed_s": elapsed_s, "planned": len(plan.started),
            "deferred": sum(r["status"] == "deferred" for r in rows),
            "forecast_s": total_f, "actual_s": total_a,
            "forecast_error": forecast_error(total_f, total_a) if ran and total_f > 0 else None,
            "mean_abs_error": sum(abs(r["error"]) for r in ran) / len(ran) if ran else None}


def window_lines(summary: dict) -> list[str]:
    """The night against its window in plain lines (run summary, artifact): the limits and the forecast error, then
    one line per planned adapter, planned against actual. Empty without a window."""
    w = summary.get("window")
    if not w:
        return []
    limits = ", ".join(x for x in (f"wall clock {clock(w['wall_clock_s'])}" if w["wall_clock_s"] else "",
                                   f"{w['gpu_hours']:g} GPU-hours" if w["gpu_hours"] else "") if x)
    err = w["forecast_error"]
    lines = [f"Window ({limits}, {w['lanes']} lane(s)): {w['planned']} planned to start, {w['deferred']} deferred; "
             f"planned end {clock(w['planned_end_s'])}, took {clock(w['elapsed_s'])}; forecast "
             f"{clock(w['forecast_s'])} vs actual {clock(w['actual_s'])}"
             + (f" ({err:+.0%}; mean |error| per adapter {w['mean_abs_error']:.0%})" if err is not None else "")]
    for r in summary.get("plan", []):
        actual = f"actual {clock(r['actual_s'])} ({r['error']:+.0%})" if r["actual_s"] is not None else r["status"]
        lines.append(f"  {r['rank'] + 1}. {r['adapter']}: forecast {clock(r['forecast_s'])} ({r['basis']}), "
                     f"{actual} — {r['reason']}")
    return lines


POLL_S = 0.2  # how often the flow, waiting for an adapter, looks for a stop request


def _result(future) -> dict:
    """The result of an adapter's future, looking for a stop request (:func:`flows.interrupt.check`) while it runs:
    the main thread must notice a Ctrl-C even while one adapter takes minutes."""
    while not future.wrapped_future.done():
        interrupt.check()
        future.wait(POLL_S)
    if future.state.is_cancelled():  # released by a stop request (flows.refine.released): its result is data
        return future.result(raise_on_failure=False)
    return future.result()


def _close(reg, run_id: int, e: BaseException) -> bool:
    """Close the run's row after an in-process ending: ``cancelled`` for a stop request (SIGINT, SIGTERM, or
    Prefect's own ``TerminationSignal``), ``failed`` for anything else. Returns whether it was a stop."""
    from prefect.exceptions import TerminationSignal

    stopped = interrupt.requested() or isinstance(e, (KeyboardInterrupt, TerminationSignal))
    with contextlib.suppress(Exception):
        if stopped:
            interrupt.request()  # the adapters' own checkpoints stop too (a TerminationSignal reached only here)
            reg.cancel_run(run_id, f"stopped by {interrupt.signal_name()}")
        else:
            reg.finish_run(run_id, "failed")
    return stopped


# log_prints stays off: it would capture the stdout that dill (via datasets) swaps out to parse dis.dis output
@flow(name="nightly-refinement")
def nightly_refinement(config: RunConfig = RunConfig()) -> dict:
    """Refine every adapter version that needs it; decide and promote; summarise as artifacts.

    The adapters' artifacts and the night's are posted by one client off the adapters' path
    (:func:`flows.refine.artifacts.night_publisher`), all of them before the flow ends."""
    with night_publisher():
        return _nightly(config)


def _nightly(config: RunConfig) -> dict:
    from prefect.runtime import flow_run

    interrupt.rearm()  # Prefect's engine swapped SIGTERM for its own bridge: a SIGTERM is a clean stop here too
    if interrupt.requested():
        return stopped_state(None)
    log = get_run_logger()
    config = config.resolved()  # the profile and sandbox the environment picks, pinned for every process and key
    reg = worker.registry(config)
    for dead in reg.reap_stale():  # runs killed outright: their rows said "running" forever
        log.warning("run %d was left running by a process that died; marked crashed (%s); its unfinished "
                    "versions are refined again", dead.id, dead.crash_reason)
    for lapsed in reg.expire_reviews():  # reviews nobody approved in their window: recorded, announced
        log.info("review %d of %s expired unapproved (window ended %s)", lapsed.id, lapsed.adapter.name,
                 lapsed.expires_at.isoformat(timespec="seconds"))
        events.announce_review(reg, lapsed)
    run = reg.start_run(flow_run.id or str(uuid.uuid4()), config.model_dump(mode="json"), config.result_hash())
    try:
        with heartbeat(reg, run.id):
            started_at = monotonic()  # the window counts from here: the scan is part of the night
            results = scan(config, run.id)
            pending = reg.pending_work(lambda a: adapter_config_hash(config, a))
            log.info("%d adapter version(s) need refinement", len(pending))
            todo, plan, deferred = _plan(reg, config, run.id, pending, monotonic() - started_at, log)
            results += deferred
            entry = {e.version_id: e for e in plan.entries} if plan else {}
            # the command line's progress: adapter i of n, and the ETA from the plan's forecasts
            stage_hook.plan(len(todo), {v.adapter.name: entry[v.id].forecast_s for v in todo} if plan else None)
            # Bounded fan-out: never more than `concurrency` adapters in flight, whatever the task runner.
            in_flight: deque = deque()
            committed = 0.0  # GPU lane-seconds: actual of the finished, forecast of those in flight

            def finish(future) -> None:
                nonlocal committed
                r = _result(future)
                results.append(r)
                e = entry.get(r.get("version_id"))
                if e is not None:
                    committed += r["seconds"] - e.forecast_s
                if r.get("released"):  # in flight at the hard stop: the reason says so, with the window's times
                    r["reason"] = (f"{r['reason']} (window {clock(config.window.wall_clock_s)} + grace "
                                   f"{clock(config.window.grace.total_seconds())}); released at "
                                   f"{clock(monotonic() - started_at)}, nothing promoted")
                with contextlib.suppress(Exception):  # a cost not written is a forecast less, never a lost night
                    reg.record_visit(run.id, r["version_id"], seconds=r["seconds"],
                                     forecast_s=e.forecast_s if e else None,
                                     reason=r["reason"] if r.get("released") else e.reason if e else None)

            for i, v in enumerate(todo):
                if len(in_flight) >= config.concurrency:
                    finish(in_flight.popleft())
                interrupt.check()
                if plan is not None and (late := still_fits(entry[v.id], monotonic() - started_at, committed,
                                                            config.window)):
                    # the night ran long: no adapter starts past this point; those in flight finish
                    results += [_defer(reg, run.id, w, adapter_config_hash(config, w.adapter), entry[w.id],
                                       f"{late}; not started", log) for w in todo[i:]]
                    break
                committed += entry[v.id].forecast_s if plan is not None else 0.0
                left = time_left(monotonic() - started_at, config.window) if plan is not None else None
                in_flight.append(refine_one.submit(v.id, v.adapter.name, run.id, config, left))
            while in_flight:
                finish(in_flight.popleft())
            interrupt.check()  # a stop that came after the last adapter still ends the run cancelled
    except BaseException as e:
        # in-process endings (an error, Ctrl-C, SIGTERM, a Prefect cancellation) close the row; a SIGKILL is reaped
        # later. A stop ends the flow run Cancelled (a named state, not a crash); an error fails it
        if _close(reg, run.id, e):
            return stopped_state(run.id)
        raise
    failed = [r for r in results if r.get("status") == "failed"]
    skipped = [r for r in results if r.get("status") == "skipped"]
    deferred = [r for r in results if r.get("status") == "deferred"]
    for r in skipped:
        log.info("%s: %s", r["adapter"], r["reason"])
    reg.finish_run(run.id, "completed")
    # versions this run refined, whether or not the refinement completed
    refined = len(pending) - len(skipped) - len(deferred)
    completed = sum(r.get("status") == "completed" for r in results)
    scan_failed = len(results) - len(pending)  # adapters whose source could not be read: no version was refined
    summary = {"run_id": run.id, "refined": refined, "completed": completed, "failed": len(failed),
               "scan_failed": scan_failed, "skipped": len(skipped), "deferred": len(deferred), "results": results}
    if plan is not None:
        summary["plan"] = plan_rows(plan, results)
        summary["window"] = window_summary(plan, summary["plan"], monotonic() - started_at)
    night_artifacts(summary, headline(summary), window_lines(summary) if plan is not None else None)
    return summary


def run_nightly(config: RunConfig) -> dict:
    """Run the nightly flow now with the task runner the config asks for (CLI and tests).

    A registry URL with a password reaches the flow through ``$SPECTRAL_SURGERY_DB``, not as a parameter, so neither
    Prefect's database nor the registry's run snapshot ever holds it (:mod:`tasks.secrets`); an MLflow tracking URI
    with a password likewise through ``$MLFLOW_TRACKING_URI``.

    Without a ``PREFECT_API_URL`` Prefect starts a temporary local server; its telemetry heartbeat is switched off
    (unless the environment says otherwise): the product runs offline, and the heartbeat's writes to the server's
    SQLite file collided with the run's own ("database is locked" tracebacks in the log, measured on 2 cores).
    """
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if has_password(config.registry_url):
        # by reference: the flow's parameters (stored by Prefect) carry no URL, the environment carries it
        os.environ[DB_ENV] = config.registry_url
        config = config.model_copy(update={"registry_url": None})
    if config.mlflow is not None and has_password(config.mlflow.tracking_uri):
        # the same for the MLflow tracking URI: MLflow reads $MLFLOW_TRACKING_URI itself
        # (flows/integrations/mlflow_client.py)
        os.environ["MLFLOW_TRACKING_URI"] = config.mlflow.tracking_uri
        config = config.model_copy(update={"mlflow": config.mlflow.model_copy(update={"tracking_uri": None})})
    state = nightly_refinement.with_options(task_runner=_task_runner(config))(config, return_state=True)
    if state.is_cancelled() and interrupt.requested():  # stopped (stopped_state): the caller sees the stop as before
        raise interrupt.Interrupted(f"interrupted ({interrupt.signal_name()})")
    return state.result()
