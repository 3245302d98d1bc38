"""The adapters' Prefect artifacts (flows/refine/artifacts.py): posted at once outside the nightly flow, by the
night's publisher inside it, and either way what ``create_*_artifact`` would have written from the same place (type,
key, description, data, task run and flow run). The nightly flow's own are checked in tests/flows/test_dashboard.py.
"""

from __future__ import annotations

import contextlib
import json
import uuid

from prefect import flow, task
from prefect.artifacts import MarkdownArtifact, TableArtifact

from spectral_surgery.flows.refine import artifacts


def _read(key: str) -> list:
    """Every version of the artifact ``key``, newest first, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import Artifact

    with get_client(sync_client=True) as client:
        response = client.request("POST", "/artifacts/filter", json={
            "artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 50, "offset": 0})
        return Artifact.model_validate_list(response.json())


def _post_from_a_task(key: str, night: bool) -> dict:
    """A flow whose task posts a table and a markdown artifact under ``key`` (through the night's publisher when
    ``night``); returns the task's and the flow's run ids."""
    from prefect.runtime import flow_run, task_run

    @task
    def decide() -> str:
        artifacts.publish(TableArtifact(key=key, table=[{"candidate": "smooth_abs", "passed": True, "p": 0.01}],
                                        description="a table"),
                          MarkdownArtifact(key=key + "-summary", markdown="**promote**", description="a note"))
        return task_run.id

    @flow
    def refine() -> dict:
        with artifacts.night_publisher() if night else contextlib.nullcontext():
            return {"task": decide(), "flow": flow_run.id}

    return refine()


def test_published_at_once_or_by_the_night_publisher_alike(prefect_harness):
    """The same artifacts either way, linked to the task run that made them, all posted when the flow returns."""
    for night in (False, True):
        key = f"refine-test-{uuid.uuid4().hex[:8]}"
        ids = _post_from_a_task(key, night)
        tables, notes = _read(key), _read(key + "-summary")
        assert len(tables) == 1 and len(notes) == 1, night
        table, note = tables[0], notes[0]
        assert (table.type, note.type) == ("table", "markdown")
        assert (table.description, note.description) == ("a table", "a note")
        data = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert data == [{"candidate": "smooth_abs", "passed": True, "p": 0.01}] and note.data == "**promote**"
        for a in (table, note):
            assert (str(a.task_run_id), str(a.flow_run_id)) == (str(ids["task"]), str(ids["flow"]))


def test_an_unreachable_api_costs_a_warning_not_the_refinement(prefect_harness, caplog, monkeypatch):
    """A post the API refuses is logged and dropped; the night's publisher still ends (no hang, no raise)."""

    class Refusing:
        def create_artifact(self, artifact):
            raise ConnectionError("API unreachable")

    monkeypatch.setattr(artifacts, "_client", Refusing)
    key = f"refine-test-{uuid.uuid4().hex[:8]}"
    with caplog.at_level("WARNING", logger=artifacts.__name__):
        _post_from_a_task(key, night=True)
    monkeypatch.undo()
    assert _read(key) == []
    assert f"could not write the Prefect artifact {key}: API unreachable" in caplog.text
