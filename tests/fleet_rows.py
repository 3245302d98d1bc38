"""A fleet of registry rows without models: ``n`` adapters, each with a version, a completed refinement, a decision
and (every ``promote_every``-th) a promotion, written through the registry's own API (bench_fleet, the query-count
tests of ``list``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from spectral_surgery.registry.fleet import Registration
from spectral_surgery.tasks.adapter_io import adapter_content_sha256
from tests.records import statistics


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def populate(reg, n: int, artifact: Path, *, base: str = "tiny-base", promote_every: int = 4,
             config_hash: str = "c" * 64, start: int = 0) -> None:
    """Register ``n`` adapters ``fleet-00000``... (source: ``artifact``, never read) in one transaction, then give
    each a version, a completed adapter run of one refinement run under ``config_hash``, a candidate and a decision;
    every ``promote_every``-th decision promotes its candidate (whose files are ``artifact``)."""
    names = [f"fleet-{i:05d}" for i in range(start, start + n)]
    reg.register_adapters([Registration(name, str(artifact), base, "math") for name in names])
    artifact_sha = adapter_content_sha256(artifact)
    run = reg.start_run(f"populate-{start}-{n}", {}, config_hash)
    for i, name in enumerate(names):
        version, _ = reg.record_version(name, _sha(name), None, str(artifact))
        cand = reg.add_candidate(version.id, config_hash, "smooth_abs", 0, artifact_uri=str(artifact),
                                 artifact_sha256=artifact_sha)
        promoted = i % promote_every == 0
        decision = reg.record_decision(version.id, config_hash, run_id=run.id,
                                       promoted_candidate_id=cand.id if promoted else None,
                                       statistics=statistics(verdict="promote" if promoted else "reject"),
                                       sentence="smooth_abs wins" if promoted else "no candidate beats the baseline")
        adapter_run = reg.start_adapter_run(run.id, version.id, config_hash)
        reg.finish_adapter_run(adapter_run.id, "completed", decision_id=decision.id)
        if promoted:
            reg.promote(decision)
    reg.finish_run(run.id, "completed")


def populate_bulk(reg, n: int, artifact: Path, *, base: str = "tiny-base", promote_every: int = 4,
                  config_hash: str = "c" * 64, start: int = 0, adapter_config: dict | None = None) -> None:
    """The rows :func:`populate` writes, inserted in bulk (a 10,000-adapter registry in seconds, not the hour the
    per-adapter write API takes): simulation only, no validation, no audit checks. Adapters ``start`` to
    ``start + n - 1`` take row ids ``start + 1``...: call it on an empty registry, then with growing ``start``.
    Every version holds ``artifact``'s content, so with ``base`` and ``config_hash`` those of a real run
    configuration (and ``adapter_config`` the adapters' overrides, e.g. their calibration source), the nightly scan
    finds every adapter up to date (a no-op night over ``n`` adapters)."""
    from sqlalchemy import insert, text

    from spectral_surgery.registry.db import session_scope
    from spectral_surgery.registry.models import (Adapter, AdapterRun, AdapterVersion, Candidate, Decision,
                                                  ProductionPointer,
                                 PromotionEvent, RefinementRun, utcnow)

    now, art, sha = utcnow(), str(artifact), adapter_content_sha256(artifact)
    ids = range(start + 1, start + n + 1)
    promoted = {i for i in ids if (i - 1) % promote_every == 0}
    name = lambda i: f"fleet-{i - 1:05d}"  # noqa: E731
    with session_scope(reg.engine) as s:
        run = RefinementRun(flow_run_id=f"populate-bulk-{start}", started_at=now, ended_at=now, status="completed",
                            config_snapshot={}, config_hash=config_hash)
        s.add(run)
        s.flush()
        s.execute(insert(Adapter), [{"id": i, "name": name(i), "source_uri": art, "base_model_id": base,
                                     "task_family": "math", "enabled": True, "created_at": now,
                                     "config_json": adapter_config} for i in ids])
        s.execute(insert(AdapterVersion), [{"id": i, "adapter_id": i, "content_sha256": sha,
                                            "local_path": art, "first_seen_at": now, "last_seen_at": now}
                                           for i in ids])
        s.execute(insert(Candidate), [{"id": i, "adapter_version_id": i, "config_hash": config_hash,
                                       "policy": "smooth_abs", "params_json": {}, "seed": 0, "is_control": False,
                                       "artifact_uri": art, "artifact_sha256": sha, "created_at": now} for i in ids])
        s.execute(insert(Decision), [{"id": i, "adapter_version_id": i, "config_hash": config_hash, "run_id": run.id,
                                      "promoted_candidate_id": i if i in promoted else None,
                                      "promoted": i in promoted, "statistics_json": statistics(
                                          verdict="promote" if i in promoted else "reject"),
                                      "sentence": "smooth_abs wins" if i in promoted else
                                      "no candidate beats the baseline", "created_at": now} for i in ids])
        s.execute(insert(AdapterRun), [{"id": i, "run_id": run.id, "adapter_version_id": i,
                                        "config_hash": config_hash, "status": "completed", "started_at": now,
                                        "ended_at": now, "decision_id": i} for i in ids])
        if promoted:
            s.execute(insert(ProductionPointer), [{"adapter_id": i, "candidate_id": i, "adapter_version_id": i,
                                                   "updated_at": now} for i in sorted(promoted)])
            s.execute(insert(PromotionEvent), [{"id": i, "adapter_id": i, "kind": "promotion", "actor": "gate",
                                                "at": now, "to_candidate_id": i, "from_version_id": i,
                                                "to_version_id": i, "reason": "smooth_abs wins", "decision_id": i}
                                               for i in sorted(promoted)])
        if reg.engine.dialect.name == "postgresql":  # explicit ids leave the sequences behind: later inserts collide
            for model in (Adapter, AdapterVersion, Candidate, Decision, AdapterRun, PromotionEvent):
                table = model.__tablename__
                s.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                               f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"))
