"""The Prefect artifacts of one adapter's refinement: the decision's table and summary, or its failure; and the
night's publisher that posts them off the adapter's path (:func:`night_publisher`).

Prefect's ``create_table_artifact``/``create_markdown_artifact`` open a new API client (a new connection) for every
artifact and wait for the server's answer: two round trips on every adapter's path, more than a tiny adapter's
bookkeeping in the registry (docs/fleet.md, "Orchestration per adapter"). Here each artifact becomes the request
Prefect would send from the same place (:func:`artifact_request`: the same type, key, description and data, linked
to the same task and flow run), and while the nightly flow runs they are posted in order by one client on one
background thread, which the flow waits for before it ends; outside it (the ``refine_adapter`` flow, a Dask worker
process) they are posted at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Iterator

from prefect.artifacts import Artifact, MarkdownArtifact, TableArtifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.utilities.context import get_task_and_flow_run_ids

from spectral_surgery.tasks.decision.gate import verdict_label
from spectral_surgery.tasks.decision.record import DecisionRecord
from spectral_surgery.tasks.decision.report import candidate_rows, decision_markdown

log = logging.getLogger(__name__)
DRAIN_TIMEOUT_S = 120.0  # how long the flow's end waits for artifacts still queued (a stop waits 2 s)


def artifact_key(adapter_name: str) -> str:
    # one key per adapter: every run adds a version under it, so the Prefect UI shows the adapter's history
    return ("refine-" + "".join(c if c.isalnum() else "-" for c in adapter_name.lower()).strip("-"))[:92]


def artifact_request(artifact: Artifact) -> ArtifactCreate:
    """What ``artifact.create()`` would send from here: its formatted data, linked to this context's task and flow
    run (``prefect.artifacts.Artifact.create``)."""
    task_run_id, flow_run_id = get_task_and_flow_run_ids()
    return ArtifactCreate(type=artifact.type, key=artifact.key, description=artifact.description,
                          task_run_id=task_run_id, flow_run_id=flow_run_id, data=artifact.format(_sync=True))


class _Publisher:
    """Posts artifact requests in the order given, on one API client, from one daemon thread."""

    def __init__(self) -> None:
        self._queue: queue.Queue[ArtifactCreate | None] = queue.Queue()
        # the flow's context: Prefect's settings (the API URL a test harness sets) live in context variables
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name="artifact-publisher",
                                        daemon=True)
        self._thread.start()

    def submit(self, requests: list[ArtifactCreate]) -> None:
        for r in requests:
            self._queue.put(r)

    def close(self, timeout: float) -> None:
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%d Prefect artifact(s) not posted within %.0f s; the registry holds the same results",
                        self._queue.qsize(), timeout)

    def _loop(self) -> None:
        client = _client()
        while (request := self._queue.get()) is not None:
            _post(client, request)


def _client():
    """A sync API client, used without entering it, as ``Artifact.create`` does (no version check); None: no API."""
    try:
        return get_client(sync_client=True)
    except Exception as e:  # no API: every request is dropped with a warning; the refinement goes on
        log.warning("could not open a Prefect client for artifacts: %s", e)
        return None


def _post(client, request: ArtifactCreate) -> None:
    try:
        if client is None:
            raise RuntimeError("no Prefect client")
        client.create_artifact(artifact=request)
    except Exception as e:  # artifacts are a convenience; never fail a refinement over them
        log.warning("could not write the Prefect artifact %s: %s", request.key, e)


_night: _Publisher | None = None
_night_lock = threading.Lock()


@contextlib.contextmanager
def night_publisher() -> Iterator[None]:
    """While the block runs, :func:`publish` queues artifacts for one background client instead of posting them
    on the caller's path; at its end the queue is drained (up to :data:`DRAIN_TIMEOUT_S`; 2 s after an error or a
    stop, whose exit must not wait on the API)."""
    global _night
    with _night_lock:
        if _night is not None:  # nested (a flow inside the nightly flow): the outer publisher serves both
            yield
            return
        _night = _Publisher()
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        with _night_lock:
            publisher, _night = _night, None
        publisher.close(2.0 if failed else DRAIN_TIMEOUT_S)


def publish(*artifacts: Artifact) -> None:
    """Post ``artifacts`` (in order) as if each were created here: through the night's publisher while the nightly
    flow runs, else now on one client."""
    requests = [artifact_request(a) for a in artifacts]
    publisher = _night
    if publisher is not None:
        publisher.submit(requests)
        return
    client = _client()
    for r in requests:
        _post(client, r)


def decision_artifacts(adapter_name: str, result: dict) -> None:
    """The decision's table and Markdown artifacts, built from the decision itself (never from the dashboard)."""
    key = artifact_key(adapter_name)
    rec = DecisionRecord.from_json(result.get("statistics"))  # the result's statistics, as recorded
    label = result.get("verdict_label") or verdict_label(rec.verdict)
    review = result.get("review")
    if review and review["state"] == "pending":  # promote: review — passed, not in production yet
        label += f" (awaiting review {review['id']} until {review['expires_at']})"
    markdown = decision_markdown(adapter_name, rec, result.get("sentence", ""), promoted=result.get("promoted"))
    publish(TableArtifact(key=key, table=candidate_rows(rec),
                          description=f"{adapter_name}: {label.upper()} — {result.get('sentence', '')}"),
            MarkdownArtifact(key=key + "-summary", markdown=markdown, description=f"Decision for {adapter_name}"))


def failure_artifact(adapter_name: str, e: BaseException) -> None:
    publish(MarkdownArtifact(key=artifact_key(adapter_name) + "-summary",
                             markdown=f"### {adapter_name}: refinement failed\n\n`{type(e).__name__}: {e}`\n",
                             description=f"Failure of {adapter_name}"))


def night_artifacts(summary: dict, headline: str, window: list[str] | None) -> None:
    """The night's table (one row per adapter) and Markdown summary, under fixed keys.

    Args:
        summary: What the nightly flow returns (``run_id``, ``results``).
        headline: :func:`flows.refine_fleet.headline` of it.
        window: :func:`flows.refine_fleet.window_lines` of it (planned vs actual), None for a night without a
            window.
    """
    results = summary["results"]
    rows = [{"adapter": r["adapter"], "status": r["status"], "verdict": r.get("verdict_label"),
             "promoted": r.get("promoted"), "awaiting_review": (r.get("review") or {}).get("id"),
             "decision": r.get("sentence") or r.get("error") or r.get("reason", "")}
            for r in results]
    lines = [f"## Nightly refinement run {summary['run_id']}", "", headline + ".", ""]
    lines += [f"- **{r['adapter']}**: " + (f"**{r['verdict_label'].upper()}** — " if r.get("verdict_label") else "")
              + (f"awaiting review {r['review']['id']} until {r['review']['expires_at']} — " if r.get("review")
                 else "")
              + f"{r.get('sentence') or r.get('error') or r.get('reason') or r['status']}" for r in results]
    lines += [""] + window if window is not None else []
    table = [TableArtifact(key="nightly-refinement", table=rows, description=headline)] if rows else []
    publish(*table, MarkdownArtifact(key="nightly-refinement-summary", markdown="\n".join(lines)))
