"""A no-op night costs seconds: look for work before the nightly flow (and Prefect's temporary server) starts.

``spectral-surgery run`` without ``PREFECT_API_URL`` starts Prefect's temporary server for the flow: tens of seconds
on a busy machine, every night, even when every enabled adapter's latest version is already refined under the
run's configuration. :func:`look_for_work` reads the same sources and keys as the flow's scan without writing
anything the flow would write differently, and says whether the flow has anything to do. When it has not, the
command records the night as a completed refinement run with no work (the history still shows that the nightly
ran) and never starts Prefect. It imports neither Prefect nor the model libraries (transformers, peft, lm-eval):
the command imports them only when there is work.

It is conservative: anything the flow would record or act on is work (a source that changed or cannot be read, a
version never refined under its key, a review whose window has ended); runs killed outright are reaped here as the
flow would reap them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from spectral_surgery.flows import worker
from spectral_surgery.tasks.download import resolve_source
from spectral_surgery.tasks.run_config import RunConfig
from spectral_surgery.tasks.keys import adapter_key as adapter_config_hash


@dataclass(frozen=True)
class Prescan:
    """What the scan before the flow found: ``work`` (why the flow must run, or None) and what it looked at."""

    work: str | None
    adapters: int


def look_for_work(config: RunConfig) -> Prescan:
    """Whether the nightly flow has anything to do under ``config``: its sources read, and nothing written but what
    the flow writes first (runs left ``running`` by a killed process are marked crashed, as the flow would).

    Returns:
        A :class:`Prescan` whose ``work`` names the first reason found to run the flow, or None: nothing to do.
    """
    from spectral_surgery.registry.models import utcnow

    config = config.resolved()  # the keys the flow would use (it resolves the same way)
    reg = worker.registry(config)
    enabled = reg.list_adapters(enabled_only=True)
    for dead in reg.reap_stale():  # what the flow does first; its versions are refined again (pending below)
        return Prescan(f"run {dead.id} was left running by a process that died", len(enabled))
    now = utcnow()
    for review in reg.list_reviews(state="pending"):
        if review.expires_at <= now:
            return Prescan(f"review {review.id} expired: the flow records and announces it", len(enabled))
    latest = reg.latest_versions()
    for adapter in enabled:
        try:
            sha = resolve_source(adapter.source_uri).sha256
        except Exception as e:  # the flow records the failure (on the adapter, and its latest version)
            return Prescan(f"{adapter.name}: its source cannot be read ({type(e).__name__})", len(enabled))
        version = latest.get(adapter.id)
        if version is None or version.content_sha256 != sha:
            return Prescan(f"{adapter.name}: new content at its source", len(enabled))
    if pending := reg.pending_work(lambda a: adapter_config_hash(config, a)):
        return Prescan(f"{len(pending)} version(s) not yet refined under this configuration", len(enabled))
    return Prescan(None, len(enabled))


def record_quiet_night(config: RunConfig) -> dict:
    """Record a night with nothing to do as a completed refinement run (no adapter runs); returns the summary
    ``run_nightly`` would return for it."""
    config = config.resolved()
    reg = worker.registry(config)
    run = reg.start_run(f"no-op-{uuid.uuid4()}", config.model_dump(mode="json"), config.result_hash())
    reg.finish_run(run.id, "completed")
    return {"run_id": run.id, "refined": 0, "completed": 0, "failed": 0, "scan_failed": 0, "skipped": 0,
            "results": [], "prefect": "not started: nothing to do"}

