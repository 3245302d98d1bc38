"""``spectral-surgery register --from FILE`` (flows/cli/register_file.py): many adapters, validated together, all or
nothing, in one transaction (registry.fleet.AdapterStore.register_adapters)."""

from __future__ import annotations

import json

from tests.flows.cli_support import assert_error, cli


def _yaml(path, text: str):
    path.write_text(text)
    return path


def _names(data) -> list[str]:
    return [r["name"] for r in cli("list", "--json", "--data-dir", data).json()]


def test_a_yaml_file_registers_every_adapter_with_defaults_and_relative_paths(make_fleet, fleet_base, tmp_path):
    dirs, calib = make_fleet(3)
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    manifest = _yaml(tmp_path / "fleet.yaml", f"""
defaults: {{base: {fleet_base}, family: math, calib: calib.jsonl}}
adapters:
  - {{name: ops-a, source: ad0}}
  - {{name: ops-b, source: ad1, family: commonsense, benchmark: ss_mc}}
  - {{name: ops-c, source: {dirs[2]}, enabled: false}}
""")
    r = cli("register", "--from", manifest, "--data-dir", data, "--json")
    out = r.json()
    assert [a["action"] for a in out["adapters"]] == ["registered"] * 3
    rows = {a["name"]: a for a in cli("list", "--json", "--data-dir", data).json()}
    assert set(rows) == {"ops-a", "ops-b", "ops-c"}
    assert rows["ops-a"]["source_uri"] == str(dirs[0].resolve())  # relative to the file's folder, made absolute
    assert rows["ops-a"]["config"] == {"calib": str(calib.resolve())}
    assert rows["ops-b"]["task_family"] == "commonsense" and rows["ops-b"]["benchmark_override"] == "ss_mc"
    assert rows["ops-c"]["enabled"] is False and rows["ops-a"]["enabled"] is True
    # the same file again: nothing changes; a changed family is refused without --force, and nothing is written
    again = cli("register", "--from", manifest, "--data-dir", data, "--json").json()
    assert [a["action"] for a in again["adapters"]] == ["unchanged"] * 3
    changed = _yaml(tmp_path / "changed.yaml", manifest.read_text().replace("family: commonsense", "family: code"))
    r = cli("register", "--from", changed, "--data-dir", data)
    assert_error(r, "ops-b", "task_family", "--force")
    assert "needs --force" in r.err
    assert {a["name"]: a["task_family"] for a in cli("list", "--json", "--data-dir", data).json()}["ops-b"] == \
        "commonsense"


def test_one_bad_entry_registers_none_and_every_problem_is_named(make_fleet, fleet_base, tmp_path):
    make_fleet(2)
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    manifest = _yaml(tmp_path / "fleet.yaml", f"""
- {{name: good, source: ad0, base: {fleet_base}, family: math}}
- {{name: typo, source: ad1, base: {fleet_base}, family: mth}}
- {{name: gone, source: nowhere, base: {fleet_base}, family: math}}
- {{name: nofamily, source: ad1, base: {fleet_base}, colour: red}}
""")
    line = assert_error(cli("register", "--from", manifest, "--data-dir", data), "nothing registered")
    assert "adapters[2] (gone): field source: 'nowhere': no such directory" in line
    assert "adapters[3] (nofamily): field family: Field required" in line
    assert "adapters[3] (nofamily): field colour: Extra inputs are not permitted" in line
    assert _names(data) == []
    fixed = _yaml(tmp_path / "fixed.yaml", "\n".join(manifest.read_text().splitlines()[:3]))  # good + typo
    line = assert_error(cli("register", "--from", fixed, "--data-dir", data), "typo: task_family 'mth'",
                        "Did you mean 'math'?")
    assert _names(data) == []  # the good entry was not written either


def test_a_csv_file_and_usage(make_fleet, fleet_base, tmp_path):
    make_fleet(2)
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    table = tmp_path / "fleet.csv"
    table.write_text(f"name,source,base,family,benchmark,calib,base_revision,enabled\n"
                     f"qa-a,ad0,{fleet_base},commonsense,,,,\nqa-b,ad1,{fleet_base},math,,,,false\n")
    out = json.loads(cli("register", "--from", table, "--data-dir", data, "--json").out)
    assert [(a["name"], a["task_family"]) for a in out["adapters"]] == [("qa-a", "commonsense"), ("qa-b", "math")]
    assert_error(cli("register", "x", "--from", table, "--data-dir", data), "drop NAME")
    assert_error(cli("register", "--from", tmp_path / "none.yaml", "--data-dir", data), "no such file", code=3)
    assert_error(cli("register", "--data-dir", data), "Missing argument 'NAME'", "--from FILE")


def test_a_directory_registers_every_adapter_folder_named_after_it_all_or_none(make_fleet, fleet_base, tmp_path):
    """``register --dir DIR``: each folder holding adapter_config.json is an adapter (``--prefix`` + its name),
    sharing --base/--family/--calib; a folder that is not an adapter is not one; a bad adapter registers none."""
    fleet = tmp_path / "fleet"
    dirs, calib = make_fleet(3, root=fleet)
    (fleet / "notes").mkdir()  # no adapter_config.json: not an adapter
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    (dirs[1] / "adapter_model.safetensors").write_bytes(b"\x00 not safetensors")
    bad = cli("register", "--dir", fleet, "--base", fleet_base, "--family", "math", "--data-dir", data)
    assert_error(bad, "nothing registered", "ad1")
    assert _names(data) == []
    import shutil

    shutil.rmtree(dirs[1])
    out = cli("register", "--dir", fleet, "--prefix", "ops-", "--base", fleet_base, "--family", "math", "--calib",
              calib, "--data-dir", data, "--json").json()
    assert out["directory"] == str(fleet) and [a["action"] for a in out["adapters"]] == ["registered"] * 2
    rows = {a["name"]: a for a in cli("list", "--json", "--data-dir", data).json()}
    assert set(rows) == {"ops-ad0", "ops-ad2"}
    assert rows["ops-ad2"]["source_uri"] == str(dirs[2].resolve())
    assert rows["ops-ad0"]["config"] == {"calib": str(calib.resolve())} and rows["ops-ad0"]["task_family"] == "math"
    again = cli("register", "--dir", fleet, "--prefix", "ops-", "--base", fleet_base, "--family", "math", "--calib",
                calib, "--data-dir", data, "--json").json()
    assert [a["action"] for a in again["adapters"]] == ["unchanged"] * 2


def test_a_directory_refuses_what_it_finds_itself_and_an_empty_one(tmp_path, fleet_base):
    data = tmp_path / "data"
    assert cli("init", "--data-dir", data).code == 0
    common = ("--base", fleet_base, "--family", "math", "--data-dir", data)
    assert_error(cli("register", "x", "--dir", tmp_path, *common), "--dir", "drop NAME")
    assert_error(cli("register", "--dir", tmp_path, "--source", tmp_path, *common), "drop --source")
    assert_error(cli("register", "--dir", tmp_path, "--data-dir", data), "--base")
    assert_error(cli("register", "x", "--prefix", "p-", "--source", tmp_path, *common), "--prefix goes with --dir")
    (empty := tmp_path / "empty").mkdir()
    assert_error(cli("register", "--dir", empty, *common), "no adapter folder")
    assert_error(cli("register", "--dir", tmp_path / "absent", *common), "no such directory", code=3)
