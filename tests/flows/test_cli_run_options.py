"""``run`` and ``demo``: every numeric option refuses a bad value in one ``error:`` line naming the option and the
fix, before any work (issue 27 §4); ``run`` on an empty registry says so and how to register."""

from __future__ import annotations

import click
import pytest

from spectral_surgery.flows.cli.app import Count, cli as group
from tests.flows.cli_support import assert_error, cli

NUMERIC = (click.types.IntParamType, click.types.FloatParamType, click.IntRange, click.FloatRange, Count)


def _numeric(command: str) -> list[click.Option]:
    return [p for p in group.commands[command].params
            if isinstance(p, click.Option) and isinstance(p.type, NUMERIC)]


def test_every_numeric_option_of_run_and_demo_is_a_count():
    """The class, not the instances: a numeric option added later is bounded too (or this fails)."""
    for command in ("run", "demo"):
        options = _numeric(command)
        assert options, command
        assert all(isinstance(p.type, Count) for p in options), [p.opts for p in options]


CASES = [(c, p.opts[0], bad) for c in ("run", "demo") for p in _numeric(c) for bad in ("0", "-1", "many", "2.5")]


@pytest.mark.parametrize("command,option,bad", CASES, ids=[f"{c}{o}={b}" for c, o, b in CASES])
def test_a_bad_number_is_one_line_naming_the_option_and_the_fix(command, option, bad, tmp_path):
    r = cli(command, option, bad, "--data-dir", tmp_path / "none")
    line = assert_error(r, option, "give a whole number", f"e.g. {option} ")
    assert "pydantic" not in r.err and "http" not in r.err
    assert bad in line


def test_concurrency_has_an_upper_bound():
    assert_error(cli("run", "--concurrency", "257"), "--concurrency", "from 1 to 256")


def test_run_on_an_empty_registry_says_so_and_how_to_register(tmp_path):
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    r = cli("run", "--evaluator", "fake", "--data-dir", data)
    assert r.code == 0, r.err
    assert "the registry is empty" in r.out and "spectral-surgery register NAME --source" in r.out
    assert "every enabled adapter's latest version is done" not in r.out
    payload = cli("run", "--evaluator", "fake", "--data-dir", data, "--json").json()
    assert payload["results"] == [] and "registry is empty" in payload["message"]


def test_a_bad_number_in_the_config_file_is_one_line_naming_the_file_and_field(tmp_path):
    config = tmp_path / "night.yaml"
    config.write_text("task_limit: 0\n")
    r = cli("run", "--config", config, "--evaluator", "fake", "--data-dir", tmp_path / "none")
    assert_error(r, str(config), "task_limit", "greater than or equal to 1")
    assert "errors.pydantic.dev" not in r.err and "For further information" not in r.err, r.err
