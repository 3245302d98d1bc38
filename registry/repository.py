"""The registry's read/write API, used by the flows and the CLI: the only code that writes the database.

Each method is one transaction. Writes are idempotent: rows are looked up by their natural key (a unique
constraint) and created only when missing, and an insert that loses a race to another process is answered with
the row that process wrote. Returned ORM objects are detached with their columns loaded (``expire_on_commit=False``),
so they can be read after the call; they are snapshots, not live views.

Example::

    reg = Registry.open()  # <data_dir>/registry.db, migrated to the latest schema
    reg.register_adapter("gsm-lora", "hf://acme/gsm-lora@v1", "HuggingFaceTB/SmolLM2-135M-Instruct", "math")
    version, created = reg.record_version("gsm-lora", adapter_content_sha256(path), "v1", str(path))
    for version in reg.pending_work(config_hash):
        ...  # refine, add_candidate / add_evaluation / record_decision, then promote(decision)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from registry import promotion as prom
from registry.declaration import check_declaration
from registry import validation as check
from registry.db import make_engine, session_scope
from registry.migrations import init_db
from registry.models import (
    BASELINE,
    EVALUATION_KINDS,
    RUN_STATUSES,
    Adapter,
    AdapterRun,
    AdapterVersion,
    Candidate,
    Decision,
    Evaluation,
    GuardResult,
    ProductionPointer,
    PromotionEvent,
    RefinementRun,
    utcnow,
)
from registry.promotion import ProductionState
from registry.validation import NotFoundError, RegistryError

__all__ = ["NotFoundError", "ProductionState", "Registry", "RegistryError"]

T = TypeVar("T")


# --------------------------------------------------------------------------------------------- registry
class Registry:
    """Read/write access to the adapter registry on one engine (SQLite or PostgreSQL).

    Args:
        engine: From :func:`registry.db.make_engine`; the schema must be migrated (:func:`registry.migrations.init_db`,
            or use :meth:`open`).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str | None = None, data_dir: Path | None = None, *, migrate: bool = True) -> Registry:
        """Connect to ``url`` (default ``<data_dir>/registry.db``); unless ``migrate=False``, upgrade the schema."""
        engine = make_engine(url, data_dir)
        if migrate:
            init_db(engine)
        return cls(engine)

    def close(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with session_scope(self.engine, write=True) as s:
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with session_scope(self.engine, write=False) as s:
            yield s

    @staticmethod
    def _get_or_create(s: Session, model: type[T], key: dict[str, Any], values: dict[str, Any]) -> tuple[T, bool]:
        """The row of ``model`` with ``key``, inserted with ``values`` if missing; ``(row, created)``.

        The insert runs in a SAVEPOINT: if another process inserted the same key first, the unique constraint
        fails, the savepoint rolls back, and that process's row is returned instead.
        """
        stmt = select(model).filter_by(**key)
        row = s.scalars(stmt).first()
        if row is not None:
            return row, False
        row = model(**key, **values)
        try:
            with s.begin_nested():
                s.add(row)
        except IntegrityError:
            existing = s.scalars(stmt).first()
            if existing is None:  # not a duplicate key: a real constraint violation
                raise
            return existing, False
        return row, True

    def _adapter(self, s: Session, adapter: Adapter | str | int) -> Adapter:
        if isinstance(adapter, Adapter):
            adapter = adapter.id
        if isinstance(adapter, int):
            found = s.get(Adapter, adapter)
            if found is None:
                raise NotFoundError(f"no adapter with id {adapter}")
            return found
        found = s.scalars(select(Adapter).where(Adapter.name == adapter)).first()
        if found is None:
            names = list(s.scalars(select(Adapter.name)))
            close = difflib.get_close_matches(str(adapter), names, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "; register_adapter() it first"
            raise NotFoundError(f"no adapter named {adapter!r}{hint}")
        return found

    @staticmethod
    def _row(s: Session, model: type[T], row_id: int, what: str) -> T:
        row = s.get(model, row_id)
        if row is None:
            raise NotFoundError(f"no {what} with id {row_id}")
        return row

    # -------------------------------------------------------------------------------------------- adapters
    def register_adapter(
        self,
        name: str,
        source_uri: str,
        base_model_id: str,
        task_family: str,
        base_model_revision: str | None = None,
        benchmark_override: str | None = None,
        enabled: bool | None = None,
        config: dict[str, Any] | None = None,
    ) -> Adapter:
        """Register an adapter, or update its declaration if ``name`` exists (declarative: the arguments win).

        Args:
            name: Unique name (letters, digits, ``. _ / -``).
            source_uri: ``hf://org/name[@revision]`` or a local directory path.
            base_model_id: Hub id or local path of the base model.
            task_family: ``math``, ``code``, ``instruction`` or ``commonsense`` (picks the benchmark).
            base_model_revision: Pinned base model revision.
            benchmark_override: Benchmark to use instead of the task family's default.
            enabled: ``None`` = enabled when new, unchanged when it exists (so a re-registration does not undo
                :meth:`set_enabled`).
            config: Per-adapter overrides of the run config (JSON): ``surgery`` (sections of ``SurgeryConfig``,
                merged over the run's) and ``calib`` (calibration file or loader).

        Returns:
            The adapter row.

        Raises:
            RegistryError: a bad value; ``DeclarationError`` (a subclass) for an unknown task family, benchmark,
                override key or policy, or a calibration file that does not exist (see :mod:`registry.declaration`).
        """
        check.text(name, "name", max_len=200)
        if not check.NAME.fullmatch(name):
            raise RegistryError(f"name {name!r}: use letters, digits and . _ / - (starting with a letter or digit)")
        check.text(source_uri, "source_uri")
        if source_uri.startswith("hf://") and not check.HF_URI.fullmatch(source_uri):
            raise RegistryError(f"source_uri {source_uri!r}: expected hf://<org>/<name>[@<revision>] or a local path")
        values = {
            "source_uri": source_uri,
            "base_model_id": check.text(base_model_id, "base_model_id", max_len=500),
            "task_family": check.text(task_family, "task_family", max_len=64),
            "base_model_revision": check.optional_text(base_model_revision, "base_model_revision", max_len=200),
            "benchmark_override": check.optional_text(benchmark_override, "benchmark_override", max_len=200),
            "config_json": check.jsonable(config, "config"),
        }
        # before anything is written: a declaration the nightly run could not carry out is refused here
        check_declaration(values["task_family"], values["benchmark_override"], values["config_json"])
        with self._write() as s:
            adapter, created = self._get_or_create(
                s, Adapter, {"name": name}, {**values, "enabled": True if enabled is None else enabled}
            )
            if not created:
                for field, value in values.items():
                    if getattr(adapter, field) != value:
                        setattr(adapter, field, value)
                if enabled is not None and adapter.enabled != enabled:
                    adapter.enabled = enabled
            return adapter

    def list_adapters(self, *, enabled_only: bool = False) -> list[Adapter]:
        """All adapters by name (only the enabled ones with ``enabled_only``)."""
        stmt = select(Adapter).order_by(Adapter.name)
        if enabled_only:
            stmt = stmt.where(Adapter.enabled.is_(True))
        with self._read() as s:
            return list(s.scalars(stmt))

    def get_adapter(self, name: str) -> Adapter:
        """The adapter called ``name``; ``NotFoundError`` (with close names) if there is none."""
        with self._read() as s:
            return self._adapter(s, name)

    def set_enabled(self, name: str, enabled: bool) -> Adapter:
        """Enable or disable an adapter (disabled adapters get no nightly work)."""
        with self._write() as s:
            adapter = self._adapter(s, name)
            adapter.enabled = bool(enabled)
            return adapter

    def record_fetch_error(self, adapter: Adapter | str, error: BaseException | str) -> Adapter:
        """Record that ``adapter``'s source could not be fetched (cleared by the next :meth:`record_version`).

        This is where a failure goes when there is no version to refine yet (a mistyped path, an unknown repo,
        offline with an empty cache); a failure of a known version is also recorded on its adapter run.
        """
        _, message = check.error_text(error)  # the traceback, ending in "Type: message"
        with self._write() as s:
            row = self._adapter(s, adapter)
            row.fetch_error = message
            row.fetch_error_at = utcnow()
            return row

    # -------------------------------------------------------------------------------------------- versions
    def record_version(
        self, adapter: Adapter | str, sha256: str, resolved_revision: str | None, local_path: str | Path | None
    ) -> tuple[AdapterVersion, bool]:
        """Record that ``adapter`` currently has the content ``sha256``.

        A known sha256 is the same version (its ``last_seen_at``, revision and path are refreshed, so it is the
        latest again if the source went back to it); a new one is a new version.

        Returns:
            ``(version, created)``.
        """
        check.sha256(sha256, "sha256")
        check.optional_text(resolved_revision, "resolved_revision", max_len=200)
        path = str(local_path) if local_path is not None else None
        with self._write() as s:
            row = self._adapter(s, adapter)
            version, created = self._get_or_create(
                s, AdapterVersion, {"adapter_id": row.id, "content_sha256": sha256},
                {"resolved_revision": resolved_revision, "local_path": path, "adapter": row},
            )
            row.fetch_error = row.fetch_error_at = None  # fetched: any earlier fetch error is over
            if not created:
                version.last_seen_at = utcnow()
                version.resolved_revision = resolved_revision or version.resolved_revision
                version.local_path = path or version.local_path
            return version, created

    def get_version(self, version_id: int) -> AdapterVersion:
        """The adapter version ``version_id`` (its ``adapter`` is loaded)."""
        with self._read() as s:
            return self._row(s, AdapterVersion, version_id, "adapter version")

    def list_versions(self, adapter: str) -> list[AdapterVersion]:
        """The adapter's versions, latest first."""
        with self._read() as s:
            row = self._adapter(s, adapter)
            return list(s.scalars(select(AdapterVersion).where(AdapterVersion.adapter_id == row.id)
                                  .order_by(AdapterVersion.last_seen_at.desc(), AdapterVersion.id.desc())))

    # ------------------------------------------------------------------------------------------------ runs
    def start_run(self, flow_run_id: str, config_snapshot: Any, config_hash: str) -> RefinementRun:
        """Open the refinement run of a flow run (a retried flow run re-opens its row).

        Raises:
            RegistryError: if ``flow_run_id`` was recorded with another ``config_hash``.
        """
        check.text(str(flow_run_id), "flow_run_id", max_len=64)
        check.text(config_hash, "config_hash", max_len=64)
        snapshot = check.jsonable(config_snapshot, "config_snapshot")
        with self._write() as s:
            run, created = self._get_or_create(
                s, RefinementRun, {"flow_run_id": str(flow_run_id)},
                {"config_snapshot": snapshot, "config_hash": config_hash, "status": "running"},
            )
            if not created:
                if run.config_hash != config_hash:
                    raise RegistryError(f"flow run {flow_run_id} was started with config_hash {run.config_hash}, "
                                        f"not {config_hash}: a new configuration needs a new flow run")
                if run.status != "running":
                    run.status, run.ended_at = "running", None
            return run

    def finish_run(self, run_id: int, status: str) -> RefinementRun:
        """Close a run as ``completed``, ``failed`` or ``crashed`` (a repeat with the same status changes nothing)."""
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
        rank = func.row_number().over(
            partition_by=AdapterVersion.adapter_id,
            order_by=(AdapterVersion.last_seen_at.desc(), AdapterVersion.id.desc()),
        )
        ranked = (select(AdapterVersion.id.label("id"), rank.label("rank"))
                  .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
                  .where(Adapter.enabled.is_(True)).subquery())
        with self._read() as s:
            latest = list(s.scalars(
                select(AdapterVersion).join(ranked, ranked.c.id == AdapterVersion.id).where(ranked.c.rank == 1)
            ).unique())
            done = set(s.execute(select(AdapterRun.adapter_version_id, AdapterRun.config_hash).where(
                AdapterRun.status == "completed", AdapterRun.adapter_version_id.in_([v.id for v in latest]))).all())
        hash_of = config_hash if callable(config_hash) else (lambda _adapter: config_hash)
        todo = [v for v in latest if (v.id, hash_of(v.adapter)) not in done]
        return sorted(todo, key=lambda v: v.adapter.name)

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
            config_hash = config_hash or run.config_hash
            started = utcnow() if status == "running" else None
            row, created = self._get_or_create(
                s, AdapterRun, {"run_id": run_id, "adapter_version_id": adapter_version_id},
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

    def record_failure(
        self, run_id: int, adapter_version_id: int, error: BaseException | str, *, config_hash: str | None = None
    ) -> AdapterRun:
        """Mark the refinement of a version in a run as failed, with the error (type and traceback) recorded.

        Works whether or not :meth:`start_adapter_run` was called, so flows can call it from any ``except``.
        """
        row = self.start_adapter_run(run_id, adapter_version_id, config_hash, status="running")
        error_type, message = check.error_text(error)
        return self.finish_adapter_run(row.id, "failed", error_type=error_type, error_message=message)

    def adapter_runs(self, run_id: int) -> list[AdapterRun]:
        """The adapter runs of a refinement run, by id."""
        with self._read() as s:
            return list(s.scalars(select(AdapterRun).where(AdapterRun.run_id == run_id).order_by(AdapterRun.id)))

    # ------------------------------------------------------------------------------------------- evidence
    def add_candidate(
        self,
        adapter_version_id: int,
        config_hash: str,
        policy: str,
        seed: int,
        *,
        params: dict[str, Any] | None = None,
        is_control: bool = False,
        artifact_uri: str | None = None,
        artifact_sha256: str | None = None,
        spectrum: dict[str, Any] | None = None,
        sensitivity: dict[str, Any] | None = None,
    ) -> Candidate:
        """Get or create the candidate ``(version, config_hash, policy, seed)``.

        On an existing candidate, fields still empty (artifact, spectrum, sensitivity; e.g. after a run killed
        between computing and storing) are filled in; values already recorded are kept.
        """
        check.text(config_hash, "config_hash", max_len=64)
        check.text(policy, "policy", max_len=100)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RegistryError(f"seed must be an int, got {seed!r}")
        if artifact_sha256 is not None:
            check.sha256(artifact_sha256, "artifact_sha256")
        fill = {"artifact_uri": artifact_uri, "artifact_sha256": artifact_sha256,
                "spectrum_json": check.jsonable(spectrum, "spectrum"),
                "sensitivity_json": check.jsonable(sensitivity, "sensitivity")}
        with self._write() as s:
            self._row(s, AdapterVersion, adapter_version_id, "adapter version")
            row, created = self._get_or_create(
                s, Candidate,
                {"adapter_version_id": adapter_version_id, "config_hash": config_hash, "policy": policy, "seed": seed},
                {"params_json": check.jsonable(params or {}, "params"), "is_control": bool(is_control), **fill},
            )
            if not created:
                for field, value in fill.items():
                    if value is not None and getattr(row, field) is None:
                        setattr(row, field, value)
            return row

    def get_candidate(self, candidate_id: int) -> Candidate:
        """The candidate ``candidate_id``."""
        with self._read() as s:
            return self._row(s, Candidate, candidate_id, "candidate")

    def list_candidates(self, adapter_version_id: int, config_hash: str | None = None) -> list[Candidate]:
        """The version's candidates (under ``config_hash`` if given), by id."""
        stmt = select(Candidate).where(Candidate.adapter_version_id == adapter_version_id).order_by(Candidate.id)
        if config_hash is not None:
            stmt = stmt.where(Candidate.config_hash == config_hash)
        with self._read() as s:
            return list(s.scalars(stmt))

    def add_evaluation(
        self,
        adapter_version_id: int,
        benchmark: str,
        metric: str,
        value: float,
        *,
        evaluator_key: str,
        higher_is_better: bool,
        candidate_id: int | None = None,
        n: int | None = None,
        stderr: float | None = None,
        samples_uri: str | None = None,
        doc_outcomes: Sequence[Sequence[Any]] | None = None,
        kind: str = "task",
    ) -> Evaluation:
        """Get or create the score of the baseline (``candidate_id=None``) or a candidate on a benchmark.

        Keyed by ``(version, baseline|candidate, benchmark, evaluator_key)``: an existing score is returned as is
        (the first write wins), so a re-run reuses it.

        Args:
            doc_outcomes: Per-document outcomes ``[(doc_id, value), ...]`` for paired tests.
            n: Number of documents; default ``len(doc_outcomes)``.
            kind: ``task`` (the adapter's benchmark) or ``guard`` (IFEval).
        """
        check.text(benchmark, "benchmark", max_len=200)
        check.text(metric, "metric", max_len=100)
        check.text(evaluator_key, "evaluator_key", max_len=64)
        check.choice(kind, "kind", EVALUATION_KINDS)
        outcomes = None
        if doc_outcomes is not None:
            outcomes = check.jsonable([list(pair) for pair in doc_outcomes], "doc_outcomes")
            if any(len(pair) != 2 for pair in outcomes):
                raise RegistryError("doc_outcomes must be a list of [doc_id, value] pairs")
            n = len(outcomes) if n is None else n
        values = {"metric": metric, "value": check.finite(value, "value"), "n": n,
                  "stderr": check.finite(stderr, "stderr", optional=True), "samples_uri": samples_uri,
                  "doc_outcomes_json": outcomes, "higher_is_better": bool(higher_is_better), "kind": kind,
                  "candidate_id": candidate_id}
        with self._write() as s:
            self._row(s, AdapterVersion, adapter_version_id, "adapter version")
            if candidate_id is not None:
                cand = self._row(s, Candidate, candidate_id, "candidate")
                if cand.adapter_version_id != adapter_version_id:
                    raise RegistryError(f"candidate {candidate_id} belongs to adapter version "
                                        f"{cand.adapter_version_id}, not {adapter_version_id}")
            row, _ = self._get_or_create(s, Evaluation, {
                "adapter_version_id": adapter_version_id, "subject": _subject(candidate_id),
                "benchmark": benchmark, "evaluator_key": evaluator_key}, values)
            return row

    def get_evaluation(
        self, adapter_version_id: int, benchmark: str, evaluator_key: str, candidate_id: int | None = None
    ) -> Evaluation | None:
        """The recorded score of the baseline (``candidate_id=None``) or a candidate, or ``None``."""
        with self._read() as s:
            return s.scalars(select(Evaluation).filter_by(
                adapter_version_id=adapter_version_id, subject=_subject(candidate_id), benchmark=benchmark,
                evaluator_key=evaluator_key)).first()

    def list_evaluations(self, adapter_version_id: int) -> list[Evaluation]:
        """Every score recorded for a version (baseline and candidates), by id."""
        with self._read() as s:
            return list(s.scalars(select(Evaluation).where(Evaluation.adapter_version_id == adapter_version_id)
                                  .order_by(Evaluation.id)))

    def add_guard_result(
        self,
        candidate_id: int,
        benchmark: str,
        baseline_value: float,
        candidate_value: float,
        tolerance: float,
        passed: bool,
        *,
        p_value: float | None = None,
    ) -> GuardResult:
        """Get or create the guard verdict of a candidate on ``benchmark`` (``delta = candidate - baseline``)."""
        check.text(benchmark, "benchmark", max_len=200)
        b, c = check.finite(baseline_value, "baseline_value"), check.finite(candidate_value, "candidate_value")
        values = {"baseline_value": b, "candidate_value": c, "delta": c - b,
                  "p_value": check.finite(p_value, "p_value", optional=True),
                  "tolerance": check.finite(tolerance, "tolerance"), "passed": bool(passed)}
        with self._write() as s:
            self._row(s, Candidate, candidate_id, "candidate")
            row, _ = self._get_or_create(s, GuardResult, {"candidate_id": candidate_id, "benchmark": benchmark},
                                         values)
            return row

    def guard_results(self, candidate_id: int) -> list[GuardResult]:
        """The guard verdicts of a candidate."""
        with self._read() as s:
            return list(s.scalars(select(GuardResult).where(GuardResult.candidate_id == candidate_id)
                                  .order_by(GuardResult.id)))

    def record_decision(
        self,
        adapter_version_id: int,
        config_hash: str,
        *,
        run_id: int | None,
        promoted_candidate_id: int | None,
        statistics: dict[str, Any],
        sentence: str,
        candidate_key: str | None = None,
    ) -> Decision:
        """Get or create the gate's decision for ``(version, config_hash)``; an existing one is returned as is.

        ``config_hash`` is the decision key (gate settings and the evaluations weighed); ``candidate_key`` the
        key of the candidates weighed (default ``config_hash``, as before stage keys). ``promoted`` is
        ``promoted_candidate_id is not None``. The promoted candidate must belong to the version, be under
        ``candidate_key`` and not be a random control.
        """
        check.text(config_hash, "config_hash", max_len=64)
        candidate_key = candidate_key or config_hash
        check.text(candidate_key, "candidate_key", max_len=64)
        check.text(sentence, "sentence")
        stats = check.jsonable(statistics, "statistics")
        if not isinstance(stats, dict):
            raise RegistryError(f"statistics must be a JSON object, got {type(statistics).__name__}")
        with self._write() as s:
            self._row(s, AdapterVersion, adapter_version_id, "adapter version")
            if run_id is not None:
                self._row(s, RefinementRun, run_id, "refinement run")
            if promoted_candidate_id is not None:
                cand = self._row(s, Candidate, promoted_candidate_id, "candidate")
                if (cand.adapter_version_id, cand.config_hash) != (adapter_version_id, candidate_key):
                    raise RegistryError(f"candidate {cand.id} is not a candidate of adapter version "
                                        f"{adapter_version_id} under candidate key {candidate_key}")
                if cand.is_control:
                    raise RegistryError(f"candidate {cand.id} is a random control ({cand.policy}); "
                                        "controls are never promoted")
            row, _ = self._get_or_create(
                s, Decision, {"adapter_version_id": adapter_version_id, "config_hash": config_hash},
                {"run_id": run_id, "promoted_candidate_id": promoted_candidate_id, "candidate_key": candidate_key,
                 "promoted": promoted_candidate_id is not None, "statistics_json": stats, "sentence": sentence},
            )
            return row

    def get_decision_by_id(self, decision_id: int) -> Decision:
        """The decision ``decision_id``."""
        with self._read() as s:
            return self._row(s, Decision, decision_id, "decision")

    def decision_of_run(self, adapter_version_id: int, run_config_hash: str) -> Decision | None:
        """The decision the latest completed adapter run of ``(version, run config hash)`` reached, or ``None``."""
        with self._read() as s:
            return s.scalars(
                select(Decision).join(AdapterRun, AdapterRun.decision_id == Decision.id)
                .where(AdapterRun.adapter_version_id == adapter_version_id,
                       AdapterRun.config_hash == run_config_hash, AdapterRun.status == "completed")
                .order_by(AdapterRun.id.desc()).limit(1)).first()

    def get_decision(self, adapter_version_id: int, config_hash: str) -> Decision | None:
        """The decision for ``(version, config_hash)``, or ``None``."""
        with self._read() as s:
            return s.scalars(select(Decision).filter_by(adapter_version_id=adapter_version_id,
                                                        config_hash=config_hash)).first()

    # ----------------------------------------------------------------------------------------- production
    def _event_of_decision(self, s: Session, decision_id: int) -> PromotionEvent | None:
        return s.scalars(select(PromotionEvent).where(PromotionEvent.decision_id == decision_id)).first()

    def promote(self, decision: Decision | int, *, actor: str = "gate") -> PromotionEvent:
        """Put a decision's candidate in production: the pointer moves and the event is appended, atomically.

        Idempotent: a decision promotes at most once (``unique(decision_id)``). A repeat, or a second process
        racing this one, appends nothing and gets the existing event.

        Raises:
            RegistryError: if the decision promoted no candidate.
        """
        decision_id = decision.id if isinstance(decision, Decision) else int(decision)
        check.text(actor, "actor", max_len=200)
        try:
            with self._write() as s:
                d = self._row(s, Decision, decision_id, "decision")
                if not d.promoted or d.promoted_candidate_id is None:
                    raise RegistryError(f"decision {d.id} promoted no candidate: {d.sentence}")
                version = self._row(s, AdapterVersion, d.adapter_version_id, "adapter version")
                prom.lock_adapter(s, version.adapter_id)
                # Checked after taking the lock: a racing promoter of this decision has committed by now.
                existing = self._event_of_decision(s, d.id)
                if existing is not None:
                    return existing
                return prom.move_pointer(
                    s, version.adapter_id, d.adapter_version_id, d.promoted_candidate_id, kind="promotion",
                    actor=actor, reason=d.sentence, evidence=d.statistics_json, decision_id=d.id,
                )
        except IntegrityError:
            # Lost a race for the pointer row or the unique decision_id: the winner's event is the answer.
            with self._read() as s:
                existing = self._event_of_decision(s, decision_id)
            if existing is None:
                raise
            return existing

    def manual_promote(
        self, candidate_id: int | None, actor: str, reason: str, *, adapter_version_id: int | None = None
    ) -> PromotionEvent | None:
        """Put a candidate (or, with ``candidate_id=None``, an unedited version) in production by hand.

        Args:
            candidate_id: The candidate to serve; ``None`` to serve ``adapter_version_id`` unedited.
            actor: Who decided (recorded in the history).
            reason: Why (required, recorded in the history).
            adapter_version_id: Required when ``candidate_id`` is ``None``.

        Returns:
            The ``manual_override`` event, or ``None`` if production already was that (nothing is appended).
        """
        check.text(actor, "actor", max_len=200)
        check.text(reason, "reason")
        with self._write() as s:
            evidence: dict[str, Any] | None = None
            if candidate_id is not None:
                cand = self._row(s, Candidate, candidate_id, "candidate")
                if adapter_version_id is not None and adapter_version_id != cand.adapter_version_id:
                    raise RegistryError(f"candidate {candidate_id} belongs to adapter version "
                                        f"{cand.adapter_version_id}, not {adapter_version_id}")
                adapter_version_id = cand.adapter_version_id
                evidence = {"policy": cand.policy, "seed": cand.seed, "is_control": cand.is_control,
                            "config_hash": cand.config_hash}
            elif adapter_version_id is None:
                raise RegistryError("manual_promote(None, ...) serves an unedited version: pass adapter_version_id")
            version = self._row(s, AdapterVersion, adapter_version_id, "adapter version")
            prom.lock_adapter(s, version.adapter_id)
            pointer = s.get(ProductionPointer, version.adapter_id)
            if pointer is not None and (pointer.candidate_id, pointer.adapter_version_id) == (candidate_id,
                                                                                              adapter_version_id):
                return None
            return prom.move_pointer(s, version.adapter_id, adapter_version_id, candidate_id,
                                     kind="manual_override", actor=actor, reason=reason, evidence=evidence)

    def rollback(self, adapter_name: str, actor: str, reason: str) -> PromotionEvent:
        """Undo the latest move of ``adapter_name``'s pointer still in effect, and append a ``rollback`` event.

        Production returns to that move's ``from`` state. A second rollback undoes the move before it, and so on.

        Raises:
            RegistryError: if there is nothing left to roll back.
        """
        check.text(actor, "actor", max_len=200)
        check.text(reason, "reason")
        with self._write() as s:
            adapter = prom.lock_adapter(s, self._adapter(s, adapter_name).id)
            target = prom.rollback_target(s, adapter)
            return prom.move_pointer(
                s, adapter.id, target.from_version_id, target.from_candidate_id, kind="rollback", actor=actor,
                reason=reason, reverts_event_id=target.id,
                evidence={"reverted_event_id": target.id, "reverted_kind": target.kind,
                          "reverted_decision_id": target.decision_id},
            )

    def history(self, adapter_name: str) -> list[PromotionEvent]:
        """Every move of the adapter's production pointer, oldest first."""
        with self._read() as s:
            return prom.events_of(s, self._adapter(s, adapter_name).id)

    def production(self, adapter_name: str) -> ProductionState | None:
        """What ``adapter_name`` serves now; ``None`` if it has no version yet."""
        with self._read() as s:
            return prom.production_state(s, self._adapter(s, adapter_name))


def _subject(candidate_id: int | None) -> str:
    return BASELINE if candidate_id is None else f"candidate:{int(candidate_id)}"
