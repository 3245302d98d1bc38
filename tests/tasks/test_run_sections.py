"""The run config in sections (tasks/run_sections.py): every field in exactly one section, a sectioned config is the
flat one with the same keys, misplaced fields are one line naming the file and the fix, and the docs table is
generated."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spectral_surgery.tasks.run_config import SETTING_KEYS, RunConfig, read_config_file
from spectral_surgery.tasks.run_sections import BEGIN, END, SECTION_OF, SECTIONS, flatten_sections, sections_markdown
from tests.flows.cli_support import assert_error, cli

ROOT = Path(__file__).resolve().parents[2]
FLAT = {"concurrency": 2, "task_runner": "thread", "device": "cpu", "task_limit": 50, "guard": False,
        "surgery": {"policies": ["hns"], "edit": {"hns": {"fast_steps": 4}}}, "gate": {"alpha": 0.01},
        "promote": "review", "actor": "night-shift"}  # fmt: skip


def _sectioned(flat: dict) -> dict:
    out: dict = {}
    for field, value in flat.items():
        out.setdefault(SECTION_OF[field], {})[field] = value
    return out


def test_every_field_is_in_exactly_one_section():
    fields = [f for s in SECTIONS for f in s.fields]
    assert len(fields) == len(set(fields)) and set(fields) == set(RunConfig.model_fields)
    assert not {s.name for s in SECTIONS} & set(RunConfig.model_fields)  # a section name is never a field's


def test_a_sectioned_config_is_the_flat_one_with_the_same_keys(tmp_path):
    flat = RunConfig.model_validate({**FLAT, "data_dir": str(tmp_path)})
    sectioned = RunConfig.model_validate({**_sectioned(FLAT), "where": {"data_dir": str(tmp_path)}})
    assert sectioned == flat and sectioned.result_hash() == flat.result_hash()
    assert sectioned.model_dump(mode="json") == flat.model_dump(mode="json")  # stored snapshots stay flat
    assert RunConfig.model_validate(flat.sections()) == flat  # the sectioned dump round-trips
    assert set(flat.sections()) == {s.name for s in SECTIONS}
    mixed = RunConfig.model_validate({"data_dir": str(tmp_path), **{k: v for k, v in FLAT.items() if k != "gate"},
                                      "decide": {"gate": FLAT["gate"]}})
    assert mixed == flat


@pytest.mark.parametrize("data, fragments", [
    ({"where": {"task_limit": 3}}, ["where.task_limit", "move it to evaluate"]),
    ({"task_limit": 3, "evaluate": {"task_limit": 4}}, ["task_limit is given twice", "keep one"]),
    ({"run": 3}, ["run is a section", "concurrency"]),
    ({"decide": {"gat": {}}}, ["decide.gat: unknown key", "gate, decision"]),
])  # fmt: skip
def test_a_misplaced_field_says_where_it_belongs(data, fragments, tmp_path):
    with pytest.raises(ValueError) as e:
        flatten_sections(data, where="night.yaml")
    assert all(f in str(e.value) for f in fragments) and str(e.value).startswith("night.yaml: ")
    with pytest.raises(ValueError) as e:
        RunConfig.model_validate(data)
    assert all(f in str(e.value) for f in fragments)


def test_a_sectioned_file_is_read_flat_and_the_command_line_overrides_it(tmp_path):
    path = tmp_path / "night.yaml"
    path.write_text(yaml.safe_dump(_sectioned(FLAT)))
    assert read_config_file(path) == FLAT
    path.write_text(yaml.safe_dump({"evaluate": {"task_limit": 0}}))
    r = cli("run", "--config", path, "--evaluator", "fake", "--data-dir", tmp_path / "none")
    assert_error(r, str(path), "task_limit", "greater than or equal to 1")
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    r = cli("run", "--config", path, "--task-limit", "5", "--evaluator", "fake", "--data-dir", data)
    assert r.code == 0 and "the registry is empty" in r.out, r.err  # the option's 5 won over the file's 0
    path.write_text(yaml.safe_dump({"where": {"task_limit": 5}}))
    r = cli("run", "--config", path, "--evaluator", "fake", "--data-dir", tmp_path / "none")
    assert_error(r, str(path), "where.task_limit", "move it to evaluate")


def test_the_docs_table_is_generated_from_the_sections():
    page = (ROOT / "docs" / "operations.md").read_text()
    assert f"{BEGIN}\n{sections_markdown(SETTING_KEYS)}\n{END}" in page, \
        "rewrite it: python -m spectral_surgery.tasks.run_config docs/operations.md"
