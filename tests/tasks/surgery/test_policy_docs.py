"""The listing of registered edits is generated from the registrations (tasks/surgery/policy_docs.py): the table in
docs/methods.md is exactly what they give, and a registration's settings show in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectral_surgery.tasks.config import EditConfig
from spectral_surgery.tasks.surgery.policies import get_policy, list_policies
from spectral_surgery.tasks.surgery.policy_docs import BEGIN, END, policies_markdown, policy_rows, render_into

PAGE = Path(__file__).resolve().parents[3] / "docs" / "methods.md"


def test_the_methods_page_lists_what_the_registrations_declare():
    text = PAGE.read_text()
    assert (
        render_into(text) == text
    ), "docs/methods.md is stale: run python -m spectral_surgery.tasks.surgery.policy_docs docs/methods.md"


def test_every_edit_is_listed_with_the_settings_it_reads():
    rows = {r.name: r for r in policy_rows()}
    assert list(rows) == list_policies(None)
    for name, row in rows.items():
        assert list(row.settings) == list(get_policy(name).settings(EditConfig())), name
    assert rows["z_score"].settings["z_tau"] == 0.2 and rows["global_scalar"].gamma_search
    table = policies_markdown()
    assert table.count("\n| `") == len(rows) and "`z_tau`=0.2" in table and "`hns.*`" in table


def test_the_markers_are_required():
    with pytest.raises(ValueError, match="registered-edits:begin"):
        render_into(f"no table here\n{END}\n")
    assert render_into(f"{BEGIN}\nold\n{END}") == f"{BEGIN}\n{policies_markdown()}\n{END}"
