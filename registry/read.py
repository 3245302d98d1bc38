"""The registry's read API: the queries the dashboard (and any other reader) runs, read-only, in one transaction.

Only ``registry/`` touches the database: writes go through :class:`registry.repository.Registry`, the fleet-wide
reads of the audit views through here. Each function takes a ``Registry`` (only its ``engine`` is used) and
returns plain rows (SQLAlchemy ``Row`` named tuples) or a hash; nothing here writes.

* :func:`registry_fingerprint`: a short hash that changes whenever a row the dashboard shows changes (cheap
  aggregates, polled by the live dashboard every few seconds);
* :func:`latest_decisions`: each adapter's latest decision, its family and the wall time of the run that made it
  (the fleet report of what wins);
* :func:`dashboard_rows`: every row the dashboard's views need, from ONE read transaction (a consistent snapshot):
  adapters, versions, adapter runs (failure messages apart), the last ``history`` decisions per adapter (the
  three statistics fields trends need extracted by the database; whole documents only for the last
  ``detail_runs``), their candidates, the latest decision's spectra, the evaluations of the detailed decisions,
  promotion events, production pointers, the latest runs and the reviews (``promote: review``) of those decisions
  plus every pending one;
* :func:`production_set`: what every adapter serves now, with where its files are and the hash recorded for them
  (what ``spectral-surgery export`` writes out for serving).

Over 400 lines: a catalogue of independent read-only queries, one per reader's need (dashboard, export, CLI).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Text, case, cast, func, select
from sqlalchemy.orm import Session

from spectral_surgery.registry import promotion as prom
from spectral_surgery.registry.db import session_scope
from spectral_surgery.registry.models import (
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
    Review,
)
from spectral_surgery.tasks.decision.fleet_report import ArmSeconds, LatestDecision
from spectral_surgery.tasks.decision.record import DecisionRecord


def registry_fingerprint(registry) -> str:
    """A short hash that changes whenever the registry gains or changes a row the dashboard shows.

    Cheap aggregates only (max ids, latest timestamps, counts), so a server can poll it every few seconds.
    """
    probes = [
        select(func.count(Adapter.id), func.max(Adapter.id), func.sum(case((Adapter.enabled, 1), else_=0))),
        select(func.max(AdapterVersion.id), func.max(AdapterVersion.last_seen_at)),
        select(func.max(RefinementRun.id), func.max(RefinementRun.ended_at), func.count(RefinementRun.ended_at)),
        select(func.max(AdapterRun.id), func.max(AdapterRun.started_at), func.max(AdapterRun.ended_at),
               func.count(AdapterRun.ended_at)),
        select(func.max(Candidate.id), func.count(Candidate.spectrum_json)),
        select(func.max(Evaluation.id)),
        select(func.max(GuardResult.id)),
        select(func.max(Decision.id)),
        select(func.max(ProductionPointer.updated_at)),
        select(func.max(PromotionEvent.id)),
        select(func.max(Review.id), func.max(Review.decided_at), func.count(Review.decided_at)),
    ]
    with session_scope(registry.engine, write=False) as s:
        values = [tuple(s.execute(p).one()) for p in probes]
    return hashlib.sha256(repr(values).encode()).hexdigest()[:16]


def _recent_decisions(s: Session, history: int, adapter_ids: list[int] | None):
    """Subquery: every decision with its adapter and its rank (1 = newest) among the adapter's decisions."""
    rank = func.row_number().over(partition_by=AdapterVersion.adapter_id,
                                  order_by=(Decision.created_at.desc(), Decision.id.desc()))
    q = (select(Decision.id.label("id"), Decision.adapter_version_id.label("version_id"),
                Decision.config_hash.label("config_hash"), Decision.candidate_key.label("candidate_key"),
                AdapterVersion.adapter_id.label("adapter_id"),
                rank.label("rank"))
         .join(AdapterVersion, AdapterVersion.id == Decision.adapter_version_id))
    if adapter_ids is not None:
        q = q.where(AdapterVersion.adapter_id.in_(adapter_ids))
    sub = q.subquery()
    return select(sub).where(sub.c.rank <= history).subquery()


def _load(s: Session, history: int, detail_runs: int, only: str | None) -> dict[str, Any]:
    """Every row the dashboard views need, as named tuples."""
    q = select(Adapter.id, Adapter.name, Adapter.task_family, Adapter.enabled, Adapter.source_uri,
               Adapter.base_model_id, Adapter.benchmark_override, Adapter.fetch_error,
               Adapter.fetch_error_at).order_by(Adapter.name)
    if only is not None:
        q = q.where(Adapter.name == only)
    adapters = s.execute(q).all()
    ids = [a.id for a in adapters] if only is not None else None
    recent = _recent_decisions(s, history, ids)
    vq = select(AdapterVersion.id, AdapterVersion.adapter_id, AdapterVersion.content_sha256,
                AdapterVersion.resolved_revision, AdapterVersion.local_path, AdapterVersion.last_seen_at)
    if ids is not None:
        vq = vq.where(AdapterVersion.adapter_id.in_(ids))
    versions = s.execute(vq).all()
    version_ids = None if ids is None else [v.id for v in versions]
    rq = select(AdapterRun.id, AdapterRun.run_id, AdapterRun.adapter_version_id, AdapterRun.status,
                AdapterRun.error_type, AdapterRun.started_at, AdapterRun.ended_at, AdapterRun.forecast_seconds,
                AdapterRun.plan_reason, AdapterRun.wall_seconds)
    fq = select(AdapterRun.id, AdapterRun.error_message).where(AdapterRun.status == "failed")
    if version_ids is not None:
        rq = rq.where(AdapterRun.adapter_version_id.in_(version_ids))
        fq = fq.where(AdapterRun.adapter_version_id.in_(version_ids))
    # Trends need a few fields of each decision's statistics, extracted by the database (:data:`INDEXED`); the
    # whole document is parsed only for the itemised recent decisions.
    decisions = s.execute(
        select(Decision.id, Decision.adapter_version_id, Decision.config_hash, Decision.candidate_key, Decision.run_id,
               Decision.promoted,
               Decision.promoted_candidate_id, Decision.sentence, Decision.created_at, recent.c.adapter_id,
               recent.c.rank, *indexed_columns())
        .join(recent, recent.c.id == Decision.id)).all()
    full = {i: _loads(text) for i, text in s.execute(
        select(Decision.id, cast(Decision.statistics_json, Text)).join(recent, recent.c.id == Decision.id)
        .where(recent.c.rank <= max(detail_runs, 1))).all()}
    records = {d.id: indexed_record(d) if d.id not in full else DecisionRecord.from_json(full[d.id], bool(d.promoted))
               for d in decisions}
    cand_cols = (Candidate.id, Candidate.adapter_version_id, Candidate.config_hash, Candidate.policy, Candidate.seed,
                 Candidate.is_control)
    weighed = _decision_candidates(s, recent, records, cand_cols)
    candidates = list({c.id: c for cs in weighed.values() for c in cs}.values())
    latest_ids = sorted({c.id for d in decisions if d.rank == 1 for c in weighed.get(d.id, ())})
    spectra = _spectra(s, latest_ids, [weighed.get(d.id, ()) for d in decisions if d.rank == 1])
    detail = select(recent.c.version_id).where(recent.c.rank <= detail_runs).distinct().subquery()
    evaluations = s.execute(
        select(Evaluation.id, Evaluation.adapter_version_id, Evaluation.candidate_id, Evaluation.kind,
               Evaluation.benchmark, Evaluation.metric, Evaluation.value, Evaluation.n, Evaluation.stderr,
               Evaluation.evaluator_key)
        .where(Evaluation.adapter_version_id.in_(select(detail.c.version_id))).order_by(Evaluation.id)).all()
    eq = select(PromotionEvent.id, PromotionEvent.adapter_id, PromotionEvent.kind, PromotionEvent.actor,
                PromotionEvent.at, PromotionEvent.from_candidate_id, PromotionEvent.to_candidate_id,
                PromotionEvent.from_version_id, PromotionEvent.to_version_id, PromotionEvent.reason,
                PromotionEvent.decision_id, PromotionEvent.reverts_event_id).order_by(PromotionEvent.id)
    pq = select(ProductionPointer.adapter_id, ProductionPointer.candidate_id, ProductionPointer.adapter_version_id,
                ProductionPointer.updated_at)
    if ids is not None:
        eq = eq.where(PromotionEvent.adapter_id.in_(ids))
        pq = pq.where(ProductionPointer.adapter_id.in_(ids))
    events = s.execute(eq).all()
    # Candidates named by events (production may serve a candidate older than the decision window).
    event_cands = {e.to_candidate_id for e in events} | {e.from_candidate_id for e in events}
    event_cands.discard(None)
    extra = s.execute(select(*cand_cols).where(Candidate.id.in_(sorted(event_cands)))).all() if event_cands else []
    runs = s.execute(select(RefinementRun.id, RefinementRun.started_at, RefinementRun.ended_at, RefinementRun.status)
                     .order_by(RefinementRun.id.desc()).limit(history)).all()
    # Reviews of the decisions read, and every pending one (whatever its decision's age).
    wq = (select(Review.id, Review.adapter_id, Review.decision_id, Review.state, Review.requested_by,
                 Review.requested_at, Review.expires_at, Review.decided_by, Review.decided_at, Review.reason,
                 Review.superseded_by_id)
          .where((Review.state == "pending") | Review.decision_id.in_(select(recent.c.id))).order_by(Review.id))
    if ids is not None:
        wq = wq.where(Review.adapter_id.in_(ids))
    costs = _costs(s, {d.id: [c.id for c in weighed.get(d.id, ())] for d in decisions if d.rank == 1})
    return {"costs": costs, "reviews": s.execute(wq).all(),"adapters": adapters, "versions": versions,
            "adapter_runs": s.execute(rq).all(),
            "failure_messages": dict(s.execute(fq).all()), "decisions": decisions, "candidates": candidates,
            "decision_candidates": weighed,
            "records": records, "extra_candidates": extra, "spectra": spectra, "evaluations": evaluations,
            "events": events,
            "pointers": s.execute(pq).all(), "runs": runs}


def edit_history(registry, family: str, run_id: int) -> list[LatestDecision]:
    """What past nights decided for the adapters of ``family``: never anything of the night being decided.

    Each adapter's latest decision made by an earlier run (id below ``run_id``) before run ``run_id`` started; a
    decision made by hand (no run) is not a night's. The per-family edit budget ranks edits on these
    (:mod:`tasks.decision.edit_budget`).

    Returns:
        One :class:`tasks.decision.fleet_report.LatestDecision` per adapter, in adapter-name order (no ``seconds``, no
        ``costs``: the budget ranks on verdicts and gains).
    """
    with session_scope(registry.engine, write=False) as s:
        started = s.scalar(select(RefinementRun.started_at).where(RefinementRun.id == run_id))
        past = (select(Decision.id, Decision.created_at, Decision.statistics_json, Decision.promoted, Adapter.name,
                       func.row_number().over(partition_by=Adapter.id,
                                              order_by=(Decision.created_at.desc(), Decision.id.desc())).label("rank"))
                .join(AdapterVersion, AdapterVersion.id == Decision.adapter_version_id)
                .join(Adapter, Adapter.id == AdapterVersion.adapter_id)
                .where(Adapter.task_family == family, Decision.run_id.is_not(None), Decision.run_id < run_id))
        if started is not None:
            past = past.where(Decision.created_at < started)
        past = past.subquery()
        rows = s.execute(select(past.c.name, past.c.id, past.c.created_at, past.c.statistics_json, past.c.promoted)
                         .where(past.c.rank == 1).order_by(past.c.name)).all()
    return [LatestDecision(adapter=name, family=family, decision_id=did, at=at,
                           record=DecisionRecord.from_json(stats, bool(promoted)))
            for name, did, at, stats, promoted in rows]


class SpectrumRow(NamedTuple):
    """A candidate's σ before/after per module, and the sensitivity profile it was edited with (None unless it is
    the one its decision's view shows)."""

    id: int
    spectrum_json: dict | None
    sensitivity_json: dict | None


# The fields of a decision's statistics that readers need for EVERY decision of a window (the dashboard's trends and
# last-decision lines, the candidates each weighed): DecisionRecord field -> the label of its column in the rows.
# The database extracts them (JSON path operators, on SQLite and PostgreSQL alike) for speed: parsing every whole
# document took most of a 1,000-adapter dashboard read. They are read back through the record (:func:`indexed_record`),
# so a row of any recorded shape upgrades as its whole document does; tests/registry/test_record_readers.py checks that
# the two paths agree on rows of every shape.
INDEXED = {"means": "means", "higher_is_better": "hib", "promoted": "promoted_arm", "verdict": "verdict",
           "n_needed": "n_needed", "candidate_ids": "candidate_ids"}


def indexed_columns(*fields: str) -> list:
    """The database's extraction of ``fields`` (default: all of :data:`INDEXED`), labelled as :data:`INDEXED` says."""
    return [Decision.statistics_json[f].label(INDEXED[f]) for f in fields or INDEXED]


def indexed_record(row) -> DecisionRecord:
    """The record of the fields extracted by :func:`indexed_columns` in ``row`` (which also holds ``promoted``, the
    row's flag, where the verdict is read): what those fields say, upgraded as the whole document would be."""
    m = row._mapping
    promoted = m.get("promoted")
    return DecisionRecord.from_json({f: m[label] for f, label in INDEXED.items() if m.get(label) is not None},
                                    None if promoted is None else bool(promoted))


def _loads(text: str | None) -> Any:
    """A JSON column's text parsed by orjson (C; the stdlib parser took most of a 1,000-adapter dashboard's read),
    falling back to :func:`json.loads` for the NaN/Infinity literals ``json.dumps`` writes and orjson refuses."""
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _spectra(s: Session, ids: list[int], weighed: list) -> list[SpectrumRow]:
    """The spectra of candidates ``ids`` (each latest decision's), with ONE sensitivity profile per decision in
    ``weighed`` (its candidates): the first by id that has one, which is the one the dashboard shows; the others
    are the same version's calibration pass and are not parsed (each is as large as a spectrum).

    Both columns are read as text (``CAST AS TEXT`` on SQLite and PostgreSQL alike) and parsed by :func:`_loads`.
    """
    if not ids:
        return []
    rows = s.execute(select(Candidate.id, cast(Candidate.spectrum_json, Text), cast(Candidate.sensitivity_json, Text))
                     .where(Candidate.id.in_(ids)).order_by(Candidate.id)).all()
    sens_text = {r[0]: r[2] for r in rows}
    sens: dict[int, Any] = {}
    for cands in weighed:
        for c in sorted(cands, key=lambda c: c.id):
            if c.id not in sens_text:
                continue
            value = sens[c.id] if c.id in sens else _loads(sens_text[c.id])
            sens[c.id] = value
            if value:
                break
    return [SpectrumRow(i, _loads(spec), sens.get(i)) for i, spec, _ in rows]


def _decision_candidates(s: Session, recent, records: dict[int, DecisionRecord], cand_cols) -> dict[int, list]:
    """The candidates each decision weighed: ``{decision id: [candidate rows]}``.

    A decision made since per-candidate keys (``tasks.keys.candidate_key``) lists them in its statistics
    (``candidate_ids``); an older one weighed the candidates under its ``candidate_key``, which they all shared.
    """
    listed = {did: rec.candidate_ids for did, rec in records.items() if rec.candidate_ids is not None}
    out: dict[int, list] = {}
    on = ((recent.c.version_id == Candidate.adapter_version_id) & (recent.c.candidate_key == Candidate.config_hash))
    for row in s.execute(select(*cand_cols, recent.c.id.label("decision_id")).join(recent, on)
                         .order_by(Candidate.id)).all():
        if row.decision_id not in listed:
            out.setdefault(row.decision_id, []).append(row)
    ids = sorted({i for cs in listed.values() for i in cs})
    by_id = {c.id: c for c in s.execute(select(*cand_cols).where(Candidate.id.in_(ids))).all()} if ids else {}
    for did, cs in listed.items():
        out[did] = [by_id[i] for i in sorted(cs) if i in by_id]
    return out


def _weighed(s: Session, decision_ids: list[int]) -> dict[int, list[int]]:
    """decision id -> the ids of the candidates it weighed (see :func:`_decision_candidates`)."""
    if not decision_ids:
        return {}
    out: dict[int, list[int]] = {}
    old = []
    for row in s.execute(select(Decision.id, *indexed_columns("candidate_ids"))
                         .where(Decision.id.in_(decision_ids))).all():
        ids = indexed_record(row).candidate_ids
        if ids is not None:
            out[row.id] = ids
        else:
            old.append(row.id)
    if old:
        on = ((Candidate.adapter_version_id == Decision.adapter_version_id)
              & (Candidate.config_hash == Decision.candidate_key))
        for did, cid in s.execute(select(Decision.id, Candidate.id).join(Candidate, on)
                                  .where(Decision.id.in_(old)).order_by(Candidate.id)).all():
            out.setdefault(did, []).append(cid)
    return out


def _costs(s: Session, weighed: dict[int, list[int]]) -> dict[int, dict[str, ArmSeconds]]:
    """What each arm weighed by these decisions cost: ``{decision id: {arm name: seconds}}`` (:func:`latest_decisions`).

    Args:
        weighed: decision id -> the ids of the candidates it weighed.
    """
    ids = sorted({i for cs in weighed.values() for i in cs})
    if not ids:
        return {}
    evaluated = (select(Evaluation.candidate_id.label("cid"), func.sum(Evaluation.seconds).label("s"))
                 .where(Evaluation.candidate_id.is_not(None)).group_by(Evaluation.candidate_id).subquery())
    q = (select(Candidate.id, Candidate.policy, Candidate.seed, Candidate.seconds_json, evaluated.c.s)
         .outerjoin(evaluated, evaluated.c.cid == Candidate.id)
         .where(Candidate.id.in_(ids)))
    rows = {r[0]: r[1:] for r in s.execute(q).all()}
    out: dict[int, dict[str, ArmSeconds]] = {}
    for did, cs in weighed.items():
        for cid in cs:
            if cid not in rows:
                continue
            policy, seed, spent, evaluate = rows[cid]
            arm = f"{policy}-s{seed}" if policy == "random_index" else policy  # the flow's arm names
            out.setdefault(did, {})[arm] = ArmSeconds.model_validate({**(spent or {}), "evaluate": evaluate})
    return out


def dashboard_rows(registry, *, history: int, detail_runs: int, only: str | None = None) -> dict[str, Any]:
    """Every row the dashboard's views need, from one read-only transaction (module docstring).

    Args:
        registry: A :class:`registry.repository.Registry`.
        history: Decisions per adapter read (newest first).
        detail_runs: Of those, how many are read with their whole statistics and evaluations.
        only: Restrict to the adapter with this name.

    Returns:
        ``{"adapters", "versions", "adapter_runs", "failure_messages", "decisions", "candidates", "records",
        "extra_candidates", "spectra", "evaluations", "events", "pointers", "runs", "reviews", "costs",
        "decision_candidates"}`` (``decision_candidates``: decision id -> the candidate rows it weighed; ``reviews``:
        those of the decisions read and every pending one, oldest first; ``costs``: what each arm of
        every adapter's latest decision cost, as :func:`latest_decisions` gives it).
    """
    with session_scope(registry.engine, write=False) as s:
        return _load(s, history, detail_runs, only)


def latest_decisions(registry) -> list[LatestDecision]:
    """Each adapter's latest decision with what a fleet report needs, in adapter-name order (one read transaction).

    Returns:
        One :class:`tasks.decision.fleet_report.LatestDecision` per adapter: its ``seconds`` are the wall time of the
        adapter run that made it (None if unknown: a decision re-made by hand, or a run without an end), its
        ``costs`` what each arm it weighed cost (:class:`tasks.decision.fleet_report.ArmSeconds`: the candidate's
        recorded seconds plus those of every evaluation of it).
    """
    rank = func.row_number().over(partition_by=AdapterVersion.adapter_id,
                                  order_by=(Decision.created_at.desc(), Decision.id.desc()))
    ranked = (select(Decision.id.label("id"), AdapterVersion.adapter_id.label("adapter_id"), rank.label("rank"))
              .join(AdapterVersion, AdapterVersion.id == Decision.adapter_version_id).subquery())
    q = (select(Adapter.name, Adapter.task_family, Decision.id, Decision.created_at, Decision.statistics_json,
                Decision.promoted, AdapterRun.started_at, AdapterRun.ended_at)
         .join(ranked, ranked.c.adapter_id == Adapter.id)
         .join(Decision, Decision.id == ranked.c.id)
         .outerjoin(AdapterRun, AdapterRun.decision_id == Decision.id)
         .where(ranked.c.rank == 1).order_by(Adapter.name, AdapterRun.id))
    out: dict[int, LatestDecision] = {}
    with session_scope(registry.engine, write=False) as s:
        for name, family, did, at, stats, promoted, started, ended in s.execute(q).all():
            seconds = (ended - started).total_seconds() if started is not None and ended is not None else None
            if did not in out or (seconds is not None and out[did].seconds is None):
                out[did] = LatestDecision(adapter=name, family=family, decision_id=did, at=at,
                                          record=DecisionRecord.from_json(stats, bool(promoted)), seconds=seconds)
        costs = _costs(s, _weighed(s, list(out)))
    return sorted((d.model_copy(update={"costs": costs.get(did, {})}) for did, d in out.items()),
                  key=lambda r: r.adapter)


@dataclass(frozen=True)
class ProductionEntry:
    """What one adapter serves now, with everything an export for serving needs (plain values).

    Attributes:
        adapter: The adapter's name.
        base_model: Its base model id (as registered) and ``base_model_revision`` (``None`` if not pinned).
        adapter_version_id: The version in production; ``None`` when the adapter has no version yet.
        candidate_id: The promoted candidate; ``None`` for the unedited version.
        policy: The candidate's policy, ``"unedited"``, or ``None`` when nothing is in production.
        decision_id: The gate decision that promoted it (``None``: unedited by default, or a manual override).
        promoted_at: When production last moved to it (ISO 8601, UTC); ``None`` if it never moved (implicit).
        source_path: Where its files are: the candidate's artifact, else the version's local files.
        sha256: The content hash recorded for those files (the candidate's artifact hash, else the version's).
        implicit: Nothing was ever promoted: production is the latest unedited version.
    """

    adapter: str
    base_model: str
    base_model_revision: str | None
    adapter_version_id: int | None
    candidate_id: int | None
    policy: str | None
    decision_id: int | None
    promoted_at: str | None
    source_path: str | None
    sha256: str | None
    implicit: bool


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def production_set(registry, *, only: str | None = None) -> list[ProductionEntry]:
    """What every adapter (or the adapter ``only``) serves now, in name order, from one read transaction.

    The decision is that of the latest pointer move still in effect (the history's undo stack), if it was a gate
    promotion; a manual override or an implicit production has none.
    """
    out: list[ProductionEntry] = []
    with session_scope(registry.engine, write=False) as s:
        q = select(Adapter).order_by(Adapter.name)
        if only is not None:
            q = q.where(Adapter.name == only)
        for adapter in s.scalars(q):
            state = prom.production_state(s, adapter)
            common = {"adapter": adapter.name, "base_model": adapter.base_model_id,
                      "base_model_revision": adapter.base_model_revision}
            if state is None:
                out.append(ProductionEntry(**common, adapter_version_id=None, candidate_id=None, policy=None,
                                           decision_id=None, promoted_at=None, source_path=None, sha256=None,
                                           implicit=True))
                continue
            candidate = s.get(Candidate, state.candidate_id) if state.candidate_id is not None else None
            stack = prom.undo_stack(prom.events_of(s, adapter.id))
            top = stack[-1] if stack else None
            in_effect = top is not None and (top.to_candidate_id, top.to_version_id) == (state.candidate_id,
                                                                                         state.adapter_version_id)
            out.append(ProductionEntry(
                **common, adapter_version_id=state.adapter_version_id, candidate_id=state.candidate_id,
                policy=candidate.policy if candidate is not None else "unedited",
                decision_id=top.decision_id if in_effect else None, promoted_at=_iso(state.updated_at),
                source_path=candidate.artifact_uri if candidate is not None else state.local_path,
                sha256=candidate.artifact_sha256 if candidate is not None else state.content_sha256,
                implicit=state.implicit))
    return out


# ------------------------------------------------------------------------------------------------------ why
@dataclass(frozen=True)
class VersionRef:
    """One adapter version as a person names it: ``ops-math@3`` (the adapter's 3rd version), global id 22."""

    id: int
    number: int
    sha256: str
    first_seen_at: datetime

    def label(self, adapter: str) -> str:
        return f"{adapter}@{self.number} (v{self.id})"


@dataclass(frozen=True)
class AdapterStory:
    """Everything ``spectral-surgery why ADAPTER`` explains, read in one transaction (plain values, typed).

    Attributes:
        adapter: Its name; ``family``, ``benchmark_override``, ``enabled``, ``fetch_error`` as registered.
        versions: Oldest first; ``number`` counts this adapter's versions from 1 (the global id is ``id``).
        last_run: The latest refinement of any of its versions: run id, version id, status, error, when, and the
            night planner's forecast and reason (a ``deferred`` one did not fit the night's window).
        decision: The latest decision on any of its versions (id, version id, verdict, sentence, statistics, at).
        production: What it serves now (:class:`ProductionEntry`), or None with no version yet.
        pending_reviews: Review ids waiting for approval, with their decision and expiry.
    """

    adapter: str
    family: str
    benchmark_override: str | None
    enabled: bool
    fetch_error: str | None
    versions: tuple[VersionRef, ...]
    last_run: dict[str, Any] | None
    decision: dict[str, Any] | None
    production: ProductionEntry | None
    pending_reviews: tuple[dict[str, Any], ...]

    def version(self, version_id: int | None) -> VersionRef | None:
        return next((v for v in self.versions if v.id == version_id), None)

    def label(self, version_id: int | None) -> str:
        v = self.version(version_id)
        return "—" if v is None else v.label(self.adapter)


def adapter_story(registry, name: str) -> AdapterStory | None:
    """What happened to adapter ``name`` and why, from one read transaction; None if no adapter has that name."""
    with session_scope(registry.engine, write=False) as s:
        adapter = s.scalars(select(Adapter).where(Adapter.name == name)).first()
        if adapter is None:
            return None
        versions = tuple(VersionRef(v.id, i, v.content_sha256, v.first_seen_at) for i, v in enumerate(
            s.scalars(select(AdapterVersion).where(AdapterVersion.adapter_id == adapter.id)
                      .order_by(AdapterVersion.first_seen_at, AdapterVersion.id)), start=1))
        ids = [v.id for v in versions]
        run = None
        if ids:
            row = s.execute(select(AdapterRun, RefinementRun.started_at)
                            .join(RefinementRun, RefinementRun.id == AdapterRun.run_id)
                            .where(AdapterRun.adapter_version_id.in_(ids))
                            .order_by(AdapterRun.id.desc()).limit(1)).first()
            if row is not None:
                ar, started = row
                run = {"run_id": ar.run_id, "version_id": ar.adapter_version_id, "status": ar.status,
                       "error_type": ar.error_type, "error_message": ar.error_message,
                       "at": _iso(ar.ended_at or ar.started_at or started), "decision_id": ar.decision_id,
                       "forecast_seconds": ar.forecast_seconds, "plan_reason": ar.plan_reason}
        decision = None
        if ids:
            d = s.scalars(select(Decision).where(Decision.adapter_version_id.in_(ids))
                          .order_by(Decision.created_at.desc(), Decision.id.desc()).limit(1)).first()
            if d is not None:
                # the statistics as recorded (``why --json`` prints them), the verdict as the record reads it
                decision = {"id": d.id, "version_id": d.adapter_version_id, "run_id": d.run_id,
                            "verdict": d.record.verdict, "promoted": d.promoted, "sentence": d.sentence,
                            "statistics": d.statistics_json or {},
                            "at": _iso(d.created_at)}
        reviews = tuple({"id": r.id, "decision_id": r.decision_id, "expires_at": _iso(r.expires_at)}
                        for r in s.scalars(select(Review).where(Review.adapter_id == adapter.id,
                                                                Review.state == "pending").order_by(Review.id)))
        fetch_error, family, override, enabled = (adapter.fetch_error, adapter.task_family,
                                                  adapter.benchmark_override, adapter.enabled)
    production = next(iter(production_set(registry, only=name)), None) if versions else None
    return AdapterStory(name, family, override, enabled, fetch_error, versions, run, decision, production, reviews)


# ----------------------------------------------------------------------------------------------------- list
@dataclass(frozen=True)
class ListedAdapter:
    """One row of ``spectral-surgery list``: the adapter, how many versions it has, its latest, what it serves.

    Attributes:
        adapter: The adapter row (detached, loaded).
        versions: Its number of versions.
        latest: Its latest version (last seen, then newest); None before the first scan.
        production: What it serves now (as :meth:`registry.production.ProductionStore.production` says it).
        policy: The policy of the candidate it serves; None for an unedited version or nothing.
    """

    adapter: Adapter
    versions: int
    latest: AdapterVersion | None
    production: prom.ProductionState | None
    policy: str | None


def fleet_listing(registry) -> list[ListedAdapter]:
    """Every adapter by name with its versions count, latest version and production, in a fixed number of queries
    (four, whatever the fleet's size: no query per adapter) from one read transaction."""
    rank = func.row_number().over(partition_by=AdapterVersion.adapter_id,
                                  order_by=(AdapterVersion.last_seen_at.desc(), AdapterVersion.id.desc()))
    ranked = select(AdapterVersion.id.label("id"), rank.label("rank")).subquery()
    with session_scope(registry.engine, write=False) as s:
        adapters = list(s.scalars(select(Adapter).order_by(Adapter.name)))
        counts = dict(s.execute(select(AdapterVersion.adapter_id, func.count(AdapterVersion.id))
                                .group_by(AdapterVersion.adapter_id)).all())
        latest = {v.adapter_id: v for v in s.scalars(
            select(AdapterVersion).join(ranked, ranked.c.id == AdapterVersion.id).where(ranked.c.rank == 1))}
        served = {p.adapter_id: (p, v, c) for p, v, c in s.execute(
            select(ProductionPointer, AdapterVersion, Candidate)
            .join(AdapterVersion, AdapterVersion.id == ProductionPointer.adapter_version_id)
            .outerjoin(Candidate, Candidate.id == ProductionPointer.candidate_id))}
    out = []
    for a in adapters:
        state, policy = None, None
        if a.id in served:
            pointer, version, cand = served[a.id]
            policy = cand.policy if cand is not None else None
            state = prom.ProductionState(
                adapter_name=a.name, adapter_version_id=version.id, content_sha256=version.content_sha256,
                local_path=version.local_path, candidate_id=cand.id if cand is not None else None,
                artifact_uri=cand.artifact_uri if cand is not None else None, updated_at=pointer.updated_at,
                implicit=False)
        elif (version := latest.get(a.id)) is not None:
            state = prom.ProductionState(
                adapter_name=a.name, adapter_version_id=version.id, content_sha256=version.content_sha256,
                local_path=version.local_path, candidate_id=None, artifact_uri=None, updated_at=None, implicit=True)
        out.append(ListedAdapter(a, counts.get(a.id, 0), latest.get(a.id), state, policy))
    return out
