"""The registry API of refinement runs: nightly runs, per-adapter runs, pending work, failures."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select

from spectral_surgery.registry import validation as check
from spectral_surgery.registry.models import (
    RUN_STATUSES,
    Adapter,
    AdapterRun,
    AdapterVersion,
    Decision,
    RefinementRun,
    utcnow,
)
from spectral_surgery.registry.promotion import lock_adapter
from spectral_surgery.registry.store import Store
from spectral_surgery.registry.validation import RegistryError

LEASE_SECONDS = 600.0  # a run whose heartbeat is older than this is considered dead (heartbeats every 30 s)
CRASHED = "Crashed"  # error_type of the adapter runs of a run that died
INTERRUPTED = "Interrupted"  # error_type of the adapter runs a cancelled run released


def this_owner() -> str:
    """``host:pid`` of this process, as recorded in a run's ``owner``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_dead(owner: str | None) -> bool:
    """True only when ``owner`` names a process on *this* host that no longer exists (other hosts: unknown)."""
    host, _, pid = (owner or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def _stale(run: RefinementRun, now: datetime, lease_s: float) -> str | None:
    """Why ``run`` (status running) is dead, or None if it may be alive."""
    if owner_is_dead(run.owner):
        return f"its process {run.owner} is gone"
    last = run.heartbeat_at or run.started_at
    if last is not None and (now - last).total_seconds() > lease_s:
        return f"no heartbeat since {last.isoformat(timespec='seconds')} (lease {lease_s:.0f} s)"
    return None


class RunStore(Store):
    """Refinement runs and per-adapter runs."""

    # ------------------------------------------------------------------------------------------------ runs
    def start_run(
        self, flow_run_id: str, config_snapshot: Any, config_hash: str, *, owner: str | None = None
    ) -> RefinementRun:
        """Open the refinement run of a flow run (a retried flow run re-opens its row), owned by ``owner``
        (default: this process, ``host:pid``) with a fresh heartbeat.

        Raises:
            RegistryError: if ``flow_run_id`` was recorded with another ``config_hash``.
        """
        check.text(str(flow_run_id), "flow_run_id", max_len=64)
        check.text(config_hash, "config_hash", max_len=64)
        snapshot = check.jsonable(config_snapshot, "config_snapshot")
        owner = owner or this_owner()
        with self._write() as s:
            now = utcnow()
            run, created = self._get_or_create(
                s, RefinementRun, {"flow_run_id": str(flow_run_id)},
                {"config_snapshot": snapshot, "config_hash": config_hash, "status": "running", "owner": owner,
                 "heartbeat_at": now},
            )
            if not created:
                if run.config_hash != config_hash:
                    raise RegistryError(f"flow run {flow_run_id} was started with config_hash {run.config_hash}, "
                                        f"not {config_hash}: a new configuration needs a new flow run")
                if run.status != "running":
                    run.status, run.ended_at, run.crash_reason = "running", None, None
                run.owner, run.heartbeat_at = owner, now
            return run

    def run_started_by(self, owner: str, since: datetime) -> RefinementRun | None:
        """The newest run ``owner`` (``host:pid``) started at or after ``since``: how a process that starts the
        flow in itself (``spectral-surgery run``) finds its own run among concurrent ones, then follows it by id."""
        with self._read() as s:
            return s.scalars(select(RefinementRun).where(RefinementRun.owner == owner,
                                                         RefinementRun.started_at >= since)
                             .order_by(RefinementRun.id.desc()).limit(1)).first()

    def heartbeat(self, run_id: int) -> None:
        """Refresh a running run's lease (called every ~30 s by the flow while it works)."""
        with self._write() as s:
            run = self._row(s, RefinementRun, run_id, "refinement run")
            if run.status == "running":
                run.heartbeat_at = utcnow()

    def reap_stale(self, lease_s: float = LEASE_SECONDS) -> list[RefinementRun]:
        """Mark every ``running`` run that is dead as ``crashed``, and fail its open adapter runs.

        Dead: its owner is a process on this host that no longer exists, or its heartbeat (its start, for rows
        from before heartbeats) is older than ``lease_s``. Each crashed run gets ``crash_reason`` and ``ended_at``;
        its ``pending``/``running`` adapter runs become ``failed`` with error type ``Crashed`` and the reason, so
        the next run refines those versions again (a failed adapter run is not "refined").

        Returns:
            The runs marked crashed now.
        """
        if not lease_s > 0:
            raise RegistryError(f"lease_s must be > 0 seconds, got {lease_s!r}")
        with self._write() as s:
            now = utcnow()
            reaped = []
            for run in s.scalars(select(RefinementRun).where(RefinementRun.status == "running")):
                why = _stale(run, now, lease_s)
                if why is None:
                    continue
                run.status, run.ended_at = "crashed", now
                run.crash_reason = f"marked crashed at {now.isoformat(timespec='seconds')}: {why}"
                for row in s.scalars(select(AdapterRun).where(AdapterRun.run_id == run.id,
                                                              AdapterRun.status.in_(("pending", "running")))):
                    row.status, row.ended_at, row.error_type = "failed", now, CRASHED
                    row.error_message = (f"run {run.id} ({run.owner or 'unknown owner'}) died before finishing "
                                         f"this version: {why}. The next run refines it again.")
                reaped.append(run)
            return reaped

    def claim_adapter_run(
        self, run_id: int, adapter_version_id: int, config_hash: str | None = None, *,
        lease_s: float = LEASE_SECONDS,
    ) -> tuple[AdapterRun | None, RefinementRun | None]:
        """Claim the refinement of one version for run ``run_id``, unless another live run holds it.

        The claim is taken under the adapter's lock (``FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite),
        so of two runs claiming one version at the same moment exactly one gets it. Another run holds a version
        while its adapter run for the same config hash is ``running`` and that run is alive (see
        :meth:`reap_stale`); a dead holder does not block.

        Returns:
            ``(adapter run, None)`` when claimed; ``(completed adapter run, None)`` when the version is already
            refined under ``config_hash`` (by this run or another: nothing to do); or ``(None, holder)`` with the
            live run that holds the version.
        """
        with self._write() as s:
            run = self._row(s, RefinementRun, run_id, "refinement run")
            version = self._row(s, AdapterVersion, adapter_version_id, "adapter version")
            lock_adapter(s, version.adapter_id)
            config_hash = config_hash or run.config_hash
            done = s.scalars(select(AdapterRun).where(
                AdapterRun.adapter_version_id == adapter_version_id, AdapterRun.config_hash == config_hash,
                AdapterRun.status == "completed").order_by(AdapterRun.id).limit(1)).first()
            if done is not None:  # finished, by this run or another, after this run listed its pending work
                return done, None
            now = utcnow()
            others = s.execute(select(AdapterRun, RefinementRun).join(
                RefinementRun, RefinementRun.id == AdapterRun.run_id).where(
                AdapterRun.adapter_version_id == adapter_version_id, AdapterRun.config_hash == config_hash,
                AdapterRun.run_id != run_id, AdapterRun.status == "running",
                RefinementRun.status == "running")).all()
            for _row, holder in others:
                if _stale(holder, now, lease_s) is None:
                    return None, holder
            row = self._open_adapter_run(s, run, adapter_version_id, config_hash, "running")
            return row, None

    def cancel_run(self, run_id: int, why: str) -> RefinementRun:
        """Close a run that was asked to stop (SIGINT, SIGTERM) as ``cancelled`` and release its open adapter runs.

        In one transaction: the run becomes ``cancelled`` (unless it already ended), and its ``pending``/``running``
        adapter runs become ``failed`` with error type ``Interrupted`` and ``why``, so that nothing is left
        ``running`` and the next run refines those versions again (a failed adapter run is not "refined").
        """
        check.text(why, "why")
        with self._write() as s:
            # FOR UPDATE: serialised with a promotion of this run, which locks the row and needs it running
            run = s.execute(select(RefinementRun).where(RefinementRun.id == run_id).with_for_update()).scalar()
            if run is None:
                run = self._row(s, RefinementRun, run_id, "refinement run")  # raises NotFoundError
            now = utcnow()
            if run.status == "running":
                run.status, run.ended_at = "cancelled", now
            for row in s.scalars(select(AdapterRun).where(AdapterRun.run_id == run.id,
                                                          AdapterRun.status.in_(("pending", "running")))):
                row.status, row.ended_at, row.error_type = "failed", now, INTERRUPTED
                row.error_message = f"run {run.id} was interrupted before finishing this version ({why}): the next " \
                                    "run refines it again"
            return run

    def finish_run(self, run_id: int, status: str) -> RefinementRun:
        """Close a run as ``completed``, ``failed``, ``crashed`` or ``cancelled`` (a repeat with the same status
        changes nothing; :meth:`cancel_run` also releases its adapter runs)."""
        check.choice(status, "status", [x for x in RUN_STATUSES if x != "running"])
        with self._write() as s:
            run = self._row(s, RefinementRun, run_id, "refinement run")
            if run.status != status:
                run.status, run.ended_at = status, utcnow()
            return run

    def get_run(self, run_id: int) -> RefinementRun:
        """The refinement run ``run_id``."""
        with self._read() as s:
            return self._row(s, RefinementRun, run_id, "refinement run")

    def is_refined(self, adapter_version_id: int, config_hash: str) -> bool:
        """Whether ``adapter_version_id`` was already refined successfully under ``config_hash``."""
        with self._read() as s:
            return s.scalars(select(AdapterRun.id).where(
                AdapterRun.adapter_version_id == adapter_version_id, AdapterRun.config_hash == config_hash,
                AdapterRun.status == "completed").limit(1)).first() is not None

    def pending_work(self, config_hash: str | Callable[[Adapter], str]) -> list[AdapterVersion]:
        """The latest version of every enabled adapter that has not been refined under its config hash.

        That covers new versions, versions never refined, and versions refined under another configuration.

        Args:
            config_hash: The run's config hash, or a function of the adapter (when per-adapter overrides make
                the hash differ between adapters).

        Returns:
            Versions (with ``adapter`` loaded), by adapter name.
        """
        with self._read() as s:
            latest = list(s.scalars(_latest_versions()).unique())
            done = set(s.execute(select(AdapterRun.adapter_version_id, AdapterRun.config_hash).where(
                AdapterRun.status == "completed", AdapterRun.adapter_version_id.in_([v.id for v in latest]))).all())
        hash_of = config_hash if callable(config_hash) else (lambda _adapter: config_hash)
        todo = [v for v in latest if (v.id, hash_of(v.adapter)) not in done]
        return sorted(todo, key=lambda v: v.adapter.name)

    def latest_versions(self) -> dict[int, AdapterVersion]:
        """The latest version of every enabled adapter, by adapter id, in one query (the fleet's scan compares
        each source's content with it)."""
        with self._read() as s:
            return {v.adapter_id: v for v in s.scalars(_latest_versions()).unique()}

    def start_adapter_run(
        self, run_id: int, adapter_version_id: int, config_hash: str | None = None, *, status: str = "running"
    ) -> AdapterRun:
        """Open (or re-open, after a failure) the refinement of one version in one run.

        Args:
            run_id: The refinement run.
            adapter_version_id: The version being refined.
            config_hash: Its config hash; default the run's.
            status: ``running``, or ``pending`` to plan the work before it starts.

        Returns:
            The adapter run; one that already ``completed`` is returned unchanged.
        """
        check.choice(status, "status", ("pending", "running"))
        with self._write() as s:
            run = self._row(s, RefinementRun, run_id, "refinement run")
            self._row(s, AdapterVersion, adapter_version_id, "adapter version")
            return self._open_adapter_run(s, run, adapter_version_id, config_hash or run.config_hash, status)

    def _open_adapter_run(
        self, s, run: RefinementRun, adapter_version_id: int, config_hash: str, status: str
    ) -> AdapterRun:
        started = utcnow() if status == "running" else None
        row, created = self._get_or_create(
            s, AdapterRun, {"run_id": run.id, "adapter_version_id": adapter_version_id},
            {"config_hash": config_hash, "status": status, "started_at": started},
        )
        if row.config_hash != config_hash:
            raise RegistryError(f"adapter run {row.id} has config_hash {row.config_hash}, not {config_hash}")
        if not created and row.status not in ("completed", status):
            row.status, row.started_at, row.ended_at = status, started, None
            row.error_type = row.error_message = None
        return row

    def finish_adapter_run(
        self, adapter_run_id: int, status: str = "completed", *, error_type: str | None = None,
        error_message: str | None = None, decision_id: int | None = None,
    ) -> AdapterRun:
        """Close an adapter run as ``completed`` (with the decision it reached) or ``failed`` (with the error)."""
        check.choice(status, "status", ("completed", "failed"))
        with self._write() as s:
            row = self._row(s, AdapterRun, adapter_run_id, "adapter run")
            if decision_id is not None:
                decision = self._row(s, Decision, decision_id, "decision")
                if decision.adapter_version_id != row.adapter_version_id:
                    raise RegistryError(f"decision {decision_id} is about adapter version "
                                        f"{decision.adapter_version_id}, not {row.adapter_version_id}")
                row.decision_id = decision_id
            if status == "completed":
                error_type = error_message = None
            if (row.status, row.error_type, row.error_message) != (status, error_type, error_message):
                row.status, row.error_type, row.error_message = status, error_type, error_message
                row.ended_at = utcnow()
            return row

    def defer_adapter_run(
        self, run_id: int, adapter_version_id: int, config_hash: str, *, forecast_s: float, reason: str
    ) -> AdapterRun:
        """Record that run ``run_id`` planned a version but did not start it: it did not fit the night's window.

        ``deferred`` is neither failed nor running: the version stays pending work, and the next run puts it first
        in line (:func:`registry.night.night_history`). An adapter run that already started is left as it is.
        """
        check.text(reason, "reason")
        with self._write() as s:
            run = self._row(s, RefinementRun, run_id, "refinement run")
            self._row(s, AdapterVersion, adapter_version_id, "adapter version")
            row, created = self._get_or_create(
                s, AdapterRun, {"run_id": run.id, "adapter_version_id": adapter_version_id},
                {"config_hash": config_hash, "status": "deferred", "ended_at": utcnow()})
            if created or row.status in ("pending", "deferred"):
                row.status = "deferred"
                row.forecast_seconds = check.finite(forecast_s, "forecast_s")
                row.plan_reason = reason
            return row

    def record_visit(self, run_id: int, adapter_version_id: int, *, seconds: float, forecast_s: float | None = None,
                     reason: str | None = None) -> None:
        """Write what a version's visit cost as the nightly flow measured it (``wall_seconds``) and, in a windowed
        night, the planner's forecast and reason, onto this run's adapter run of it (nothing when it has none: a
        version another run held)."""
        with self._write() as s:
            row = s.scalars(select(AdapterRun).where(AdapterRun.run_id == run_id,
                                                     AdapterRun.adapter_version_id == adapter_version_id)).first()
            if row is not None:
                row.wall_seconds = check.finite(seconds, "seconds")
                if forecast_s is not None:
                    row.forecast_seconds, row.plan_reason = check.finite(forecast_s, "forecast_s"), reason

    def record_failure(
        self, run_id: int, adapter_version_id: int, error: BaseException | str, *, config_hash: str | None = None
    ) -> AdapterRun:
        """Mark the refinement of a version in a run as failed, with the error (type and traceback) recorded.

        Works whether or not :meth:`start_adapter_run` was called, so flows can call it from any ``except``.
        """
        row = self.start_adapter_run(run_id, adapter_version_id, config_hash, status="running")
        error_type, message = check.error_text(error)
        return self.finish_adapter_run(row.id, "failed", error_type=error_type, error_message=message)

    def adapter_runs(self, run_id: int, *, ended_since: datetime | None = None,
                     with_running: bool = False) -> list[AdapterRun]:
        """The adapter runs of a refinement run, by id; with ``ended_since``, only those that ended at or after it
        (a poller reads what finished since its last look, not the whole run each time), and with ``with_running``
        those still running as well (at most the run's concurrency)."""
        stmt = select(AdapterRun).where(AdapterRun.run_id == run_id)
        if ended_since is not None:
            ended = AdapterRun.ended_at >= ended_since
            stmt = stmt.where(or_(ended, AdapterRun.status == "running") if with_running else ended)
        with self._read() as s:
            return list(s.scalars(stmt.order_by(AdapterRun.id)))


def _latest_versions():
    """SELECT of the latest version (last seen, then newest) of every enabled adapter, with its adapter."""
    rank = func.row_number().over(
        partition_by=AdapterVersion.adapter_id,
        order_by=(AdapterVersion.last_seen_at.desc(), AdapterVersion.id.desc()),
    )
    ranked = (select(AdapterVersion.id.label("id"), rank.label("rank"))
              .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
              .where(Adapter.enabled.is_(True)).subquery())
    return select(AdapterVersion).join(ranked, ranked.c.id == AdapterVersion.id).where(ranked.c.rank == 1)
