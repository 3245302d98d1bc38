"""Every reader of a decision's statistics reads them through the typed record (tasks/decision/record.py), on rows of
every shape the registry holds, on SQLite and PostgreSQL alike.

* the fields the database extracts for speed (``registry.read.INDEXED``, JSON path operators) read back through the
  record exactly as the whole document does;
* the registry's readers (the candidates weighed, ``edit_history``, ``latest_decisions``, ``adapter_story``, the
  dashboard's rows) agree with ``Decision.record``;
* what a decision records is pinned byte for byte (the JSON the flow writes, and the row the registry keeps).

The shapes: today's (schema 1, with the candidates weighed), a decision of the gate recorded before the version
field, one recorded before verdicts existed, the first rows (a bare paired test), an empty one, a HOLD of a few
fields, nulls where a value has a default, and a lower-is-better metric.
"""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import select

from spectral_surgery.registry.db import session_scope
from spectral_surgery.registry.models import Decision
from spectral_surgery.registry.read import (
    INDEXED,
    _weighed,
    adapter_story,
    dashboard_rows,
    edit_history,
    indexed_columns,
    indexed_record,
    latest_decisions,
)
from spectral_surgery.tasks.decision.gate import ArmOutcomes, GateConfig, decide
from spectral_surgery.tasks.decision.record import DecisionRecord, EvidenceKeys, GuardRecord, LadderRecord
from tests.records import statistics, stored
from tests.tasks.decision.test_gate_sentences import BASE, HELD, RANDOM, cand, task

# json.dumps of the record below as the flow writes it: computed with the code before every reader moved to the record
PINNED_SHA256 = "df9bfbb3966dea3d36a1b15462ca49dd088c3b05b06bbd47662edb0aef98b0db"
PINNED_CHARS = 5130


def _gate_decision():
    zero = ArmOutcomes("zero_rebuild", "zero_rebuild", True, task())
    return decide(BASE, [cand("smooth_abs"), cand("abs_select", **HELD)], [RANDOM], GateConfig(), zero_rebuild=zero)


def _todays(d) -> DecisionRecord:
    return DecisionRecord.of(d, means={"baseline": 0.5, **{v.name: v.task_mean for v in d.verdicts}},
                             guard_means={"baseline": 0.8},
                             keys=EvidenceKeys(candidates="c" * 64, task_evaluation="t" * 64, guard_evaluation=None),
                             ladder=LadderRecord(roles={"smooth_abs": "policy", "random_s0": "random_control"},
                                                 skipped={}),
                             guard=GuardRecord(arms="promotable", skipped={}))


def _shapes() -> dict[str, tuple[dict, bool, bool]]:
    """name -> (statistics as stored, promoted flag, recorded with the candidates weighed)."""
    d = _gate_decision()
    unversioned = stored(d)
    del unversioned["schema_version"]
    before_verdicts = {"promoted": "smooth_abs", "sentence": "smooth_abs wins", "baseline_task_mean": 0.5,
                       "means": {"baseline": 0.5, "smooth_abs": 0.6},
                       "verdicts": [{"name": "smooth_abs", "passed": True, "task_mean": 0.6,
                                     "vs_baseline": {"delta": 0.1, "p_value": 0.001, "n": 60}},
                                    {"name": "abs_select", "passed": False, "task_mean": 0.5,
                                     "vs_baseline": {"delta": 0.0, "p_value": 0.5, "n": 60}}]}
    return {
        "today": (_todays(d).to_json(), True, True),
        "before_the_version": (unversioned, True, False),
        "before_verdicts": (before_verdicts, True, False),
        "a_bare_test": ({"delta": 0.05, "p_value": 0.01}, True, False),
        "empty": ({}, False, False),
        "hold": (statistics(verdict="hold", n_needed=400), False, True),
        "nulls": ({"means": None, "higher_is_better": None, "verdicts": None, "promoted": None}, False, False),
        "lower_is_better": (statistics(higher_is_better=False, means={"baseline": 2.5, "smooth_abs": 2.1},
                                       verdict="reject"), False, True),
    }


def _fleet(reg) -> dict[str, Decision]:
    """One adapter per shape, its version, a policy candidate and a control under one key, and the decision (made by
    refinement run 1, so that ``edit_history`` of run 2 reads them)."""
    run = reg.start_run("night-1", {}, "r" * 64)
    out = {}
    for name, (stats, promoted, listed) in _shapes().items():
        reg.register_adapter(name, f"hf://acme/{name}@main", "base", "math")
        version, _ = reg.record_version(name, hashlib.sha256(name.encode()).hexdigest(), None, f"/cache/{name}")
        good = reg.add_candidate(version.id, "k" * 64, "smooth_abs", 0, artifact_uri=f"/a/{name}/good",
                                 artifact_sha256="a" * 64)
        control = reg.add_candidate(version.id, "k" * 64, "random_index", 0, is_control=True,
                                    artifact_uri=f"/a/{name}/ctrl", artifact_sha256="b" * 64)
        out[name] = reg.record_decision(version.id, "h" * 64, run_id=run.id,
                                        promoted_candidate_id=good.id if promoted else None, statistics=stats,
                                        sentence=f"{name} decided", candidate_key="k" * 64,
                                        candidate_ids=[control.id, good.id] if listed else None)
    reg.finish_run(run.id, "completed")
    reg.start_run("night-2", {}, "r" * 64)
    return out


def test_the_json_a_decision_records_is_pinned_byte_for_byte(registry):
    rec = _todays(_gate_decision())
    text = json.dumps(rec.to_json())
    assert (len(text), hashlib.sha256(text.encode()).hexdigest()) == (PINNED_CHARS, PINNED_SHA256)
    row = _fleet(registry)["today"]
    kept = registry.get_decision_by_id(row.id).statistics_json
    weighed = sorted(c.id for c in registry.list_candidates(row.adapter_version_id))
    assert kept == {**rec.to_json(), "candidate_ids": weighed} and list(kept) == [*rec.to_json(), "candidate_ids"]
    # read back through the record and written again: the same document, key for key and in the same order
    assert json.dumps(row.record.to_json()) == json.dumps(kept)


def test_the_fields_the_database_extracts_read_as_the_whole_document(registry):
    rows = _fleet(registry)
    with session_scope(registry.engine, write=False) as s:
        extracted = {r.id: indexed_record(r) for r in s.execute(
            select(Decision.id, Decision.promoted, *indexed_columns())).all()}
    for name, row in rows.items():
        whole = registry.get_decision_by_id(row.id).record
        for field in INDEXED:
            assert getattr(extracted[row.id], field) == getattr(whole, field), (name, field)
    assert extracted[rows["hold"].id].verdict == "hold" and extracted[rows["hold"].id].n_needed == 400
    assert extracted[rows["before_verdicts"].id].verdict == "promote"  # upgraded from the row's flag, like the whole
    assert extracted[rows["a_bare_test"].id].verdict == "promote" and extracted[rows["empty"].id].verdict == "reject"
    assert extracted[rows["nulls"].id].means == {} and extracted[rows["nulls"].id].higher_is_better is True
    assert extracted[rows["lower_is_better"].id].higher_is_better is False


def test_every_registry_reader_agrees_with_the_record(registry):
    rows = _fleet(registry)
    fresh = {name: registry.get_decision_by_id(d.id) for name, d in rows.items()}
    # the candidates weighed: listed ones by id, older decisions by their key; the same through every path
    with session_scope(registry.engine, write=False) as s:
        weighed = _weighed(s, [d.id for d in fresh.values()])
    for name, d in fresh.items():
        ids = [c.id for c in registry.decision_candidates(d)]
        assert weighed[d.id] == ids and len(ids) == 2, name
        assert (d.record.candidate_ids is not None) == _shapes()[name][2]
    by_name = {r.adapter: r for r in latest_decisions(registry)}
    night_2 = max(d.run_id for d in fresh.values()) + 1
    history = {r.adapter: r for r in edit_history(registry, "math", run_id=night_2)}
    full = dashboard_rows(registry, history=5, detail_runs=1)["records"]  # each adapter's latest: the whole document
    for name, d in fresh.items():
        assert by_name[name].record == d.record == history[name].record == full[d.id], name
        assert by_name[name].decision_id == history[name].decision_id == d.id, name
        assert adapter_story(registry, name).decision["verdict"] == d.record.verdict
        assert adapter_story(registry, name).decision["statistics"] == (d.statistics_json or {})  # `why --json`
    for d in fresh.values():  # a newer decision of each version: the one above is read from the extracted fields
        registry.record_decision(d.adapter_version_id, "n" * 64, run_id=None, promoted_candidate_id=None,
                                 statistics={}, sentence="re-decided")
    partial = dashboard_rows(registry, history=5, detail_runs=1)["records"]
    for name, d in fresh.items():
        for field in INDEXED:
            assert getattr(partial[d.id], field) == getattr(d.record, field), (name, field)
        assert partial[d.id].verdicts == []  # the whole document is not read for it


@pytest.mark.parametrize("name", list(_shapes()))
def test_a_row_of_every_shape_keeps_what_it_recorded(name):
    stats, promoted, _ = _shapes()[name]
    rec = DecisionRecord.from_json(json.loads(json.dumps(stats)), promoted)
    again = rec.to_json()
    # every key read is written back unchanged; only the verdicts (where absent) and the version are added
    assert {k: v for k, v in again.items() if k not in ("schema_version", "verdict", "verdicts")} == \
        {k: v for k, v in stats.items() if k not in ("schema_version", "verdict", "verdicts")
         and not (v is None and k in ("means", "higher_is_better", "verdicts"))}
