"""The registry API of evidence: candidates, evaluations, guard results and decisions (stage-keyed)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from spectral_surgery.registry import validation as check
from spectral_surgery.registry.models import (
    BASELINE,
    EVALUATION_KINDS,
    AdapterRun,
    AdapterVersion,
    Candidate,
    Decision,
    Evaluation,
    GuardResult,
    RefinementRun,
)
from spectral_surgery.registry.store import Store
from spectral_surgery.registry.validation import NotFoundError, RegistryError


def _subject(candidate_id: int | None) -> str:
    """An evaluation's ``subject`` column: ``baseline`` or ``candidate:<id>`` (what ``ck_evaluations_subject``
    allows), so that a unique key over it holds for the baseline too, whose ``candidate_id`` is NULL."""
    return BASELINE if candidate_id is None else f"candidate:{int(candidate_id)}"


@dataclass(frozen=True)
class Score:
    """One subject's score on a benchmark, as :meth:`EvidenceStore.add_evaluations` records it (the arguments of
    :meth:`EvidenceStore.add_evaluation` besides the version, benchmark, evaluator key and kind)."""

    candidate_id: int | None  # None: the baseline
    metric: str
    value: float
    higher_is_better: bool
    n: int | None = None
    stderr: float | None = None
    samples_uri: str | None = None
    doc_outcomes: Sequence[Sequence[Any]] | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class GuardVerdict:
    """One candidate's guard verdict, as :meth:`EvidenceStore.add_guard_results` records it."""

    candidate_id: int
    baseline_value: float
    candidate_value: float
    passed: bool
    p_value: float | None = None


class EvidenceStore(Store):
    """Candidates, evaluations, guard results and decisions."""

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
        seconds: dict[str, float] | None = None,
    ) -> Candidate:
        """Get or create the candidate ``(version, config_hash, policy, seed)``.

        On an existing candidate, fields still empty (artifact, spectrum, sensitivity, seconds; e.g. after a run
        killed between computing and storing) are filled in; values already recorded are kept.

        Args:
            seconds: What it cost: ``write`` (this edit), ``decompose``/``calibrate`` (the stored stage it was
                written from, as measured when that stage was computed), ``gamma`` (the global scalar's choice).
        """
        check.text(config_hash, "config_hash", max_len=64)
        check.text(policy, "policy", max_len=100)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise RegistryError(f"seed must be an int, got {seed!r}")
        if artifact_sha256 is not None:
            check.sha256(artifact_sha256, "artifact_sha256")
        fill = {"artifact_uri": artifact_uri, "artifact_sha256": artifact_sha256,
                "spectrum_json": check.jsonable(spectrum, "spectrum"),
                "sensitivity_json": check.jsonable(sensitivity, "sensitivity"),
                "seconds_json": None if seconds is None else {
                    k: check.finite(v, f"seconds.{k}") for k, v in check.jsonable(seconds, "seconds").items()}}
        key = {"adapter_version_id": adapter_version_id, "config_hash": config_hash, "policy": policy, "seed": seed}
        values = {**key, "params_json": check.jsonable(params or {}, "params"), "is_control": bool(is_control), **fill}
        # one statement when the candidate is new (a night writes only new ones): no read before the insert; the
        # version must exist (its foreign key), checked only to name it when the insert fails
        with self._absent_version(adapter_version_id), self._write() as s:
            row = self._insert_missing(s, Candidate, tuple(key), [values])[tuple(key.values())]
            for field, value in fill.items():  # an existing row (another process's): fill what it lacks
                if value is not None and getattr(row, field) is None:
                    setattr(row, field, value)
            return row

    @contextmanager
    def _absent_version(self, adapter_version_id: int, run_id: int | None = None) -> Iterator[None]:
        """Turn a write refused by the database because adapter version ``adapter_version_id`` (or refinement run
        ``run_id``) does not exist (a foreign key) into the :class:`NotFoundError` a read before the write used to
        raise; any other error as is. The write itself reads neither: a night only writes under rows that exist."""
        try:
            yield
        except IntegrityError:
            with self._read() as s:
                self._row(s, AdapterVersion, adapter_version_id, "adapter version")
                if run_id is not None:
                    self._row(s, RefinementRun, run_id, "refinement run")
            raise

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

    def decision_candidates(self, decision: Decision) -> list[Candidate]:
        """The candidates ``decision`` weighed, by id: those its statistics list (``candidate_ids``, since each
        candidate has its own key), else, for a decision made before, those under its ``candidate_key``."""
        ids = decision.record.candidate_ids
        if ids is None:
            return self.list_candidates(decision.adapter_version_id, decision.candidate_key or decision.config_hash)
        with self._read() as s:
            return list(s.scalars(select(Candidate).where(Candidate.id.in_([int(i) for i in ids]))
                                  .order_by(Candidate.id)))

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
        seconds: float | None = None,
    ) -> Evaluation:
        """Get or create the score of the baseline (``candidate_id=None``) or a candidate on a benchmark.

        Keyed by ``(version, baseline|candidate, benchmark, evaluator_key)``: an existing score is returned as is
        (the first write wins), so a re-run reuses it.

        Args:
            doc_outcomes: Per-document outcomes ``[(doc_id, value), ...]`` for paired tests, or triples
                ``[(doc_id, value, score), ...]`` with the continuous score beside the outcome (stored in the same
                JSON column: rows written before scores existed are pairs, read as "no score").
            n: Number of documents; default ``len(doc_outcomes)``.
            kind: ``task`` (the adapter's benchmark) or ``guard`` (IFEval).
            seconds: Wall seconds of scoring this subject (its share of the evaluator's pass).
        """
        score = Score(candidate_id, metric, value, higher_is_better, n=n, stderr=stderr, samples_uri=samples_uri,
                      doc_outcomes=doc_outcomes, seconds=seconds)
        return self.add_evaluations(adapter_version_id, benchmark, evaluator_key, [score], kind=kind)[0]

    def add_evaluations(self, adapter_version_id: int, benchmark: str, evaluator_key: str, scores: Sequence[Score],
                        *, kind: str = "task") -> list[Evaluation]:
        """Get or create several subjects' scores of one evaluation (one benchmark, one evaluator key) in one
        transaction: :meth:`add_evaluation` for each, in order, in a fixed number of reads.

        Returns:
            The stored row of each score, in order (an existing one as is: the first write wins).
        """
        check.text(benchmark, "benchmark", max_len=200)
        check.text(evaluator_key, "evaluator_key", max_len=64)
        check.choice(kind, "kind", EVALUATION_KINDS)
        values = [self._evaluation_values(sc, kind) for sc in scores]
        cids = {sc.candidate_id for sc in scores} - {None}
        key = {"adapter_version_id": adapter_version_id, "benchmark": benchmark, "evaluator_key": evaluator_key}
        subjects = [_subject(sc.candidate_id) for sc in scores]
        with self._absent_version(adapter_version_id), self._write() as s:
            owners = {cid: vid for cid, vid in s.execute(select(Candidate.id, Candidate.adapter_version_id)
                                                          .where(Candidate.id.in_(cids)))} if cids else {}
            for cid in sorted(cids):
                if cid not in owners:
                    raise NotFoundError(f"no candidate with id {cid}")
                if owners[cid] != adapter_version_id:
                    raise RegistryError(f"candidate {cid} belongs to adapter version {owners[cid]}, not "
                                        f"{adapter_version_id}")
            # every score in one statement; a subject already stored keeps its score (the first write wins)
            first: dict[str, dict[str, Any]] = {}
            for subject, vals in zip(subjects, values):
                first.setdefault(subject, vals)  # a subject given twice: its first score, as before
            stored = self._insert_missing(s, Evaluation, (*key, "subject"),
                                          [{**key, "subject": subject, **vals} for subject, vals in first.items()])
            return [stored[(*key.values(), subject)] for subject in subjects]

    @staticmethod
    def _evaluation_values(sc: Score, kind: str) -> dict[str, Any]:
        """The checked column values of one score (what :meth:`add_evaluations` inserts besides the key)."""
        check.text(sc.metric, "metric", max_len=100)
        n, outcomes = sc.n, None
        if sc.doc_outcomes is not None:
            outcomes = check.jsonable([list(pair) for pair in sc.doc_outcomes], "doc_outcomes")
            if any(len(row) not in (2, 3) for row in outcomes):
                raise RegistryError("doc_outcomes must be a list of [doc_id, value] pairs or [doc_id, value, score] "
                                    "triples")
            n = len(outcomes) if n is None else n
        return {"metric": sc.metric, "value": check.finite(sc.value, "value"), "n": n,
                "stderr": check.finite(sc.stderr, "stderr", optional=True), "samples_uri": sc.samples_uri,
                "doc_outcomes_json": outcomes, "higher_is_better": bool(sc.higher_is_better), "kind": kind,
                "candidate_id": sc.candidate_id, "seconds": check.finite(sc.seconds, "seconds", optional=True)}

    def get_evaluation(
        self, adapter_version_id: int, benchmark: str, evaluator_key: str, candidate_id: int | None = None
    ) -> Evaluation | None:
        """The recorded score of the baseline (``candidate_id=None``) or a candidate, or ``None``."""
        with self._read() as s:
            return s.scalars(select(Evaluation).filter_by(
                adapter_version_id=adapter_version_id, subject=_subject(candidate_id), benchmark=benchmark,
                evaluator_key=evaluator_key)).first()

    def evaluations_by_subject(self, adapter_version_id: int, benchmark: str,
                               evaluator_key: str) -> dict[int | None, Evaluation]:
        """Every recorded score of a version on ``benchmark`` under ``evaluator_key`` in one query: candidate id
        (``None``: the baseline) -> its evaluation (what :meth:`get_evaluation` returns for each subject)."""
        with self._read() as s:
            rows = s.scalars(select(Evaluation).filter_by(adapter_version_id=adapter_version_id, benchmark=benchmark,
                                                          evaluator_key=evaluator_key))
            return {row.candidate_id: row for row in rows if row.subject == _subject(row.candidate_id)}

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
        verdict = GuardVerdict(candidate_id, baseline_value, candidate_value, passed, p_value)
        return self.add_guard_results(benchmark, tolerance, [verdict])[0]

    def add_guard_results(self, benchmark: str, tolerance: float,
                          verdicts: Sequence[GuardVerdict]) -> list[GuardResult]:
        """Get or create several candidates' guard verdicts on ``benchmark`` in one transaction of a fixed number of
        statements (:meth:`add_guard_result` for each, in order; an existing verdict is returned as is)."""
        check.text(benchmark, "benchmark", max_len=200)
        tol = check.finite(tolerance, "tolerance")
        rows = []
        for v in verdicts:
            b, c = check.finite(v.baseline_value, "baseline_value"), check.finite(v.candidate_value, "candidate_value")
            rows.append({"candidate_id": v.candidate_id, "benchmark": benchmark, "baseline_value": b,
                         "candidate_value": c, "delta": c - b,
                         "p_value": check.finite(v.p_value, "p_value", optional=True), "tolerance": tol,
                         "passed": bool(v.passed)})
        if not rows:
            return []
        ids = {v.candidate_id for v in verdicts}
        with self._write() as s:
            known = set(s.scalars(select(Candidate.id).where(Candidate.id.in_(ids))))
            if ids - known:
                raise NotFoundError(f"no candidate with id {min(ids - known)}")
            first: dict[int, dict[str, Any]] = {}
            for r in rows:
                first.setdefault(r["candidate_id"], r)  # a candidate given twice: its first verdict
            stored = self._insert_missing(s, GuardResult, ("candidate_id", "benchmark"), list(first.values()))
            return [stored[(v.candidate_id, benchmark)] for v in verdicts]

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
        candidate_ids: Sequence[int] | None = None,
    ) -> Decision:
        """Get or create the gate's decision for ``(version, config_hash)``; an existing one is returned as is.

        ``config_hash`` is the decision key (gate settings and the evaluations weighed); ``candidate_key`` the
        key of the candidates weighed (default ``config_hash``, as before stage keys). ``promoted`` is
        ``promoted_candidate_id is not None``. The promoted candidate must belong to the version, be one of the
        candidates weighed and not be a random control.

        Args:
            candidate_ids: The candidates weighed (each keyed by its own settings, ``tasks.keys.candidate_key``), kept
                in the statistics as ``candidate_ids``; None: the candidates under ``candidate_key`` (decisions made
                before per-candidate keys, whose candidates all shared one key).
        """
        check.text(config_hash, "config_hash", max_len=64)
        candidate_key = candidate_key or config_hash
        check.text(candidate_key, "candidate_key", max_len=64)
        check.text(sentence, "sentence")
        stats = check.jsonable(statistics, "statistics")
        if not isinstance(stats, dict):
            raise RegistryError(f"statistics must be a JSON object, got {type(statistics).__name__}")
        if candidate_ids is not None:
            stats = {**stats, "candidate_ids": sorted(int(i) for i in candidate_ids)}
        # the version and the run must exist (their foreign keys), read only to name them when the insert fails
        with self._absent_version(adapter_version_id, run_id), self._write() as s:
            if promoted_candidate_id is not None:
                cand = self._row(s, Candidate, promoted_candidate_id, "candidate")
                if candidate_ids is not None:
                    if cand.adapter_version_id != adapter_version_id or cand.id not in set(candidate_ids):
                        raise RegistryError(f"candidate {cand.id} is not one of the candidates weighed "
                                            f"{sorted(candidate_ids)} of adapter version {adapter_version_id}")
                elif (cand.adapter_version_id, cand.config_hash) != (adapter_version_id, candidate_key):
                    raise RegistryError(f"candidate {cand.id} is not a candidate of adapter version "
                                        f"{adapter_version_id} under candidate key {candidate_key}")
                if cand.is_control:
                    raise RegistryError(f"candidate {cand.id} is a random control ({cand.policy}); "
                                        "controls are never promoted")
            key = ("adapter_version_id", "config_hash")
            return self._insert_missing(s, Decision, key, [
                {"adapter_version_id": adapter_version_id, "config_hash": config_hash, "run_id": run_id,
                 "promoted_candidate_id": promoted_candidate_id, "candidate_key": candidate_key,
                 "promoted": promoted_candidate_id is not None, "statistics_json": stats, "sentence": sentence},
            ])[(adapter_version_id, config_hash)]

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

    def latest_decision(self, adapter_version_id: int) -> Decision | None:
        """The version's most recent decision under any configuration, or ``None`` if it was never decided."""
        with self._read() as s:
            return s.scalars(select(Decision).filter_by(adapter_version_id=adapter_version_id)
                             .order_by(Decision.id.desc()).limit(1)).first()
