"""The registry commands and ``run`` end to end on a tiny fleet with the fake evaluator: init → register → list →
run → history → promote → rollback, and the one-line errors of each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests import tiny
from tests.flows.cli_support import assert_error, cli

INIT_HINT = "run `spectral-surgery init` first"
WINNER = {"smooth_abs": 0.9}  # the fake evaluator passes smooth_abs' documents at 0.9, the others at 0.5
REASON = "[urgent] the math team prefers it"  # brackets: printed as typed, never parsed as rich markup


pytestmark = pytest.mark.usefixtures("fresh_worker_module")


@pytest.fixture(scope="module")
def fleet(fleet_base, tmp_path_factory):
    """Two tiny adapters, a corrupt one, a calibration file and a run-config file, built once for the module."""
    root = tmp_path_factory.mktemp("cli_fleet")
    dirs = [tiny.save_adapter(fleet_base, root / f"ad{i}", seed=i + 1) for i in range(2)]
    bad = tiny.save_adapter(fleet_base, root / "bad", seed=9)
    (bad / "adapter_model.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    config = root / "run.yaml"  # the file gives what has no option; the options below are laid over it
    config.write_text("surgery:\n  calib:\n    n_samples: 4\n    batch_size: 4\nevaluator_options:\n  n_docs: 60\n")
    return SimpleNamespace(root=root, dirs=dirs, bad=bad, calib=calib, config=config, base=fleet_base)


def run_args(fleet, data_dir: Path, *extra) -> list:
    return ["run", "--data-dir", data_dir, "--config", fleet.config, "--evaluator", "fake",
            "--evaluator-option", f"rates={json.dumps(WINNER)}", "--task-limit", 60, "--guard-limit", 60,
            "--calib", fleet.calib, *extra]


@pytest.fixture(scope="module")
def ran(prefect_harness, fleet, tmp_path_factory):
    """A registry after init, two registrations and one nightly ``run --json``."""
    data = tmp_path_factory.mktemp("cli_data") / "home"
    init = cli("init", "--data-dir", data)
    regs = [cli("register", "ad0", "--source", fleet.dirs[0], "--base", fleet.base, "--family", "math",
                "--calib", fleet.calib, "--data-dir", data, "--json"),
            cli("register", "ad1", "--source", fleet.dirs[1], "--base", fleet.base, "--family", "commonsense",
                "--data-dir", data, "--json")]
    run = cli(*run_args(fleet, data, "--json"))
    return SimpleNamespace(data=data, init=init, regs=regs, run=run)


def _in(data: Path, *argv) -> list:
    return [*argv, "--data-dir", data]


# ---------------------------------------------------------------------------------------------- init
def test_init_creates_the_registry_and_is_idempotent(tmp_path):
    data = tmp_path / "a" / "b"
    r = cli("init", "--data-dir", data)
    assert r.code == 0, r.err
    assert (data / "registry.db").is_file()
    assert "Registry ready" in r.out and str(data) in r.out
    info = cli("--json", "init", "--data-dir", data).json()  # again: nothing to do, same schema
    assert info["data_dir"] == str(data)
    assert info["database"] == f"sqlite:///{data / 'registry.db'}"
    assert info["schema_revision"]
    assert cli("list", "--data-dir", data).out.startswith("No adapters registered yet")
    assert cli("list", "--json", "--data-dir", data).json() == []


def test_the_database_comes_from_spectral_surgery_db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("SPECTRAL_SURGERY_DB", url)
    assert cli("--json", "init", "--data-dir", tmp_path / "home").json()["database"] == url
    assert (tmp_path / "elsewhere.db").is_file() and not (tmp_path / "home" / "registry.db").exists()
    assert cli("list", "--json", "--data-dir", tmp_path / "home").json() == []  # found with no --db


@pytest.mark.parametrize("argv", [
    ["list"], ["history", "ad0"], ["register", "ad0", "--source", ".", "--base", "b", "--family", "math"],
    ["promote", "1", "--reason", "why"], ["rollback", "ad0", "--reason", "why"], ["dashboard"],
    pytest.param(["run", "--evaluator", "fake"], marks=pytest.mark.slow),  # imports Prefect: about 3 s
])
def test_every_command_without_init_says_to_run_init(argv, tmp_path):
    assert_error(cli(*argv, "--data-dir", tmp_path / "nowhere"), INIT_HINT, code=3)  # not found
    assert not (tmp_path / "nowhere" / "registry.db").exists()


# ------------------------------------------------------------------------------------- register, list
def test_register_and_list(fleet, tmp_path, monkeypatch):
    data = tmp_path / "data"
    cli("init", "--data-dir", data)
    monkeypatch.chdir(fleet.root)  # a relative source is stored absolute: the nightly run starts elsewhere
    r = cli("register", "ad0", "--source", "ad0", "--base", fleet.base, "--family", "math", "--benchmark",
            "ss_arith", "--calib", "calib.jsonl", "--data-dir", data)
    assert r.code == 0, r.err
    assert "Registered ad0" in r.out and str(fleet.dirs[0]) in r.out
    rows = cli("list", "--json", "--data-dir", data).json()
    assert len(rows) == 1
    row = rows[0]
    assert row["name"] == "ad0" and row["enabled"] is True and row["versions"] == 0
    assert row["source_uri"] == str(fleet.dirs[0].resolve()) and row["base_model_id"] == str(fleet.base.resolve())
    assert row["task_family"] == "math" and row["benchmark_override"] == "ss_arith"
    assert row["config"] == {"calib": str(fleet.calib.resolve())}
    assert row["latest_version"] is None and row["production"] is None
    table = cli("list", "--data-dir", data).out
    assert "1 adapter(s)" in table and "math → ss_arith" in table and "no version yet" in table
    # registering the same name again updates it (declarative), but says what changes and refuses, without
    # --force, to drop its calibration or change its family; --disabled turns nightly work off
    refused = cli("register", "ad0", "--source", "ad0", "--base", fleet.base, "--family", "code", "--disabled",
                  "--data-dir", data)
    line = assert_error(refused, "adapter 'ad0' is registered already", "task_family: 'math' → 'code'",
                        "config.calib: ", "→ (none)", "--force")
    assert "change: ad0: task_family: 'math' → 'code' (needs --force)" in refused.err and "--calib FILE" in line
    assert cli("list", "--json", "--data-dir", data).json()[0]["task_family"] == "math"  # nothing written
    forced = cli("register", "ad0", "--source", "ad0", "--base", fleet.base, "--family", "code", "--disabled",
                 "--force", "--json", "--data-dir", data)
    again = forced.json()
    assert again["id"] == row["id"] and again["enabled"] is False and again["task_family"] == "code"
    assert again["config"] is None and "task_family: 'math' → 'code'" in " ".join(again["changes"])
    assert "change: ad0: task_family" in forced.err and "needs --force" not in forced.err
    same = cli("register", "ad0", "--source", "ad0", "--base", fleet.base, "--family", "code", "--json",
               "--data-dir", data).json()
    assert same["changes"] == []  # a repeat changes nothing and says so
    assert [a["name"] for a in cli("list", "--json", "--data-dir", data).json()] == ["ad0"]
    assert "│ no " in cli("list", "--data-dir", data).out
    # a source the nightly scan could not fetch shows with its error until a fetch succeeds
    from spectral_surgery.registry.repository import Registry

    reg = Registry.open(None, data)
    try:
        raise FileNotFoundError("adapter source /gone/ad0 does not exist")
    except FileNotFoundError as e:
        reg.record_fetch_error("ad0", e)
    reg.close()
    (row,) = cli("list", "--json", "--data-dir", data).json()
    assert row["fetch_error"] == "FileNotFoundError: adapter source /gone/ad0 does not exist" and row["fetch_error_at"]
    assert "fetch failed: FileNotFoundError: adapter source /gone/ad0" in cli("list", "--data-dir", data).out


@pytest.mark.parametrize("argv, fragments", [
    pytest.param(["--source", "{root}/missing"], ["--source", "missing", "no such directory"], id="missing-source"),
    (["--source", "{root}/ad0", "--calib", "{root}/missing.jsonl"],
     ["config.calib", "missing.jsonl", "does not exist"]),
    (["--source", "{root}/ad0", "--calib", "gsm8kk"], ["config.calib", "gsm8kk", "Did you mean 'gsm8k'?"]),
    (["--source", "{root}/ad0", "--family", "mth"], ["task_family 'mth'", "Did you mean 'math'?"]),
    (["--source", "{root}/ad0", "--benchmark", "ss_arth"],
     ["benchmark_override 'ss_arth'", "Did you mean 'ss_arith'?"]),
    (["--source", "hf://just-a-name"], ["hf://just-a-name", "expected hf://<org>/<name>"]),
])
def test_register_bad_input(argv, fragments, fleet, tmp_path):
    data = tmp_path / "data"
    cli("init", "--data-dir", data)
    argv = [a.format(root=fleet.root) for a in argv]
    code = 3 if "no such directory" in fragments else 2  # not found, else a refused input
    assert_error(cli("register", "x", "--base", fleet.base, "--family", "math", *argv, "--data-dir", data),
                 *fragments, code=code)  # a later --family wins over the first
    assert cli("list", "--json", "--data-dir", data).json() == []


def test_register_checks_at_the_door(fleet, tmp_path):
    """A corrupt adapter, an unknown base and an empty calibration file are refused by ``register`` with the
    nightly run's own messages (no model pass); ``--no-check`` registers anyway; ``check`` finds the problem later."""
    data = tmp_path / "data"
    cli("init", "--data-dir", data)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    r = cli("register", "x", "--source", fleet.bad, "--base", tmp_path / "no-base", "--family", "math",
            "--calib", empty, "--data-dir", data)
    line = assert_error(r, "'x' not registered:", "--source:", "adapter_model.safetensors", "--base:", "no-base",
                        "--calib:", "--no-check")
    assert "does not exist" in line
    assert cli("list", "--json", "--data-dir", data).json() == []
    hub = cli("register", "y", "--source", fleet.dirs[0], "--base", "acme/never-downloaded", "--family", "math",
              "--data-dir", data)
    assert_error(hub, "acme/never-downloaded is not in the local Hugging Face cache", "hf download")
    # registered anyway, then found by `check` (exit 1: a failure found, not a usage error)
    assert cli("register", "x", "--source", fleet.bad, "--base", fleet.base, "--family", "math", "--no-check",
               "--data-dir", data).code == 0
    assert cli("register", "good", "--source", fleet.dirs[0], "--base", fleet.base, "--family", "math",
               "--data-dir", data).code == 0
    r = cli("check", "--json", "--data-dir", data)
    assert r.code == 1
    by = {row["adapter"]: row for row in json.loads(r.out)}
    assert by["good"]["ok"] and not by["x"]["ok"]
    assert (
        by["x"]["problems"][0]["what"] == "source" and "adapter_model.safetensors" in by["x"]["problems"][0]["message"]
    )
    assert cli("check", "good", "--data-dir", data).code == 0
    assert_error(cli("check", "nope", "--data-dir", data), "no adapter named 'nope'", code=3)


def test_register_warns_when_the_adapter_names_another_base(fleet, tmp_path):
    """Registered (PEFT would load it), but with a warning naming the config field; ``check`` repeats it."""
    data = tmp_path / "data"
    cli("init", "--data-dir", data)
    other = tmp_path / "other-base"
    shutil.copytree(fleet.base, other)
    r = cli("register", "w", "--source", fleet.dirs[0], "--base", other, "--family", "math", "--data-dir", data)
    assert r.code == 0, r.err
    assert "warning:" in r.err and "base_model_name_or_path" in r.err and "other-base" in r.err
    rows = json.loads(cli("check", "--json", "--data-dir", data).out)
    assert rows[0]["ok"] and rows[0]["warnings"][0]["what"] == "base"
    r = cli("register", "v", "--source", fleet.dirs[0], "--base", fleet.base, "--family", "math", "--data-dir", data)
    assert r.code == 0 and "base_model_name_or_path" not in r.err  # (the context warning of its 512 positions stays)


def test_register_bad_name_and_usage(fleet, tmp_path):
    data = tmp_path / "data"
    cli("init", "--data-dir", data)
    assert_error(cli("register", "no spaces", "--source", fleet.dirs[0], "--base", fleet.base, "--family", "math",
                     "--data-dir", data), "name 'no spaces'")
    assert_error(cli("register", "x", "--source", fleet.dirs[0], "--base", fleet.base, "--data-dir", data),
                 "Missing option '--family'")
    assert_error(cli("register", "x", "--source", fleet.dirs[0], "--base", fleet.base, "--family", "math",
                     "--enabled", "--disabled", "--data-dir", data), "exclude each other")


# ------------------------------------------------------------------------------------------------ run
@pytest.mark.slow  # needs the module's `ran` fixture: a nightly run through Prefect
def test_run_refines_decides_and_promotes(ran, fleet):
    assert ran.init.code == 0 and all(r.code == 0 for r in ran.regs)
    assert ran.run.code == 0, ran.run.err
    summary = ran.run.json()  # stdout is nothing but the JSON summary
    assert summary["refined"] == 2 and summary["failed"] == 0
    by_name = {r["adapter"]: r for r in summary["results"]}
    assert set(by_name) == {"ad0", "ad1"}
    for name, r in by_name.items():
        assert r["status"] == "completed" and r["promoted"] == "smooth_abs"
        assert r["candidates_written"] == 9  # three policies, the scalar, three random seeds, two canaries
        assert r["verdict"] == "promote" and r["verdict_label"] == "promote smooth_abs"
        assert "→ promoted" in r["sentence"] and r["statistics"]["promoted"] == "smooth_abs"
        assert r["decision_id"]
    # the evaluator options of the file and of the command line were merged: n_docs 60 and the scripted winner
    verdicts = {v["policy"]: v for v in by_name["ad0"]["statistics"]["verdicts"]}
    assert verdicts["smooth_abs"]["vs_baseline"]["n"] == 60 and verdicts["smooth_abs"]["passed"]
    # progress on stderr: the header, then a line per adapter as it finished
    err = ran.run.err
    assert "Nightly refinement of 2 enabled adapter(s): evaluator fake" in err
    assert "✓ ad0 promoted smooth_abs (" in err and "✓ ad1 promoted smooth_abs (" in err  # progress: verdict, time
    assert "Traceback" not in err


@pytest.mark.slow  # needs the module's `ran` fixture: a nightly run through Prefect
def test_list_after_run_shows_versions_and_production(ran):
    rows = {r["name"]: r for r in cli(*_in(ran.data, "list", "--json")).json()}
    for name in ("ad0", "ad1"):
        r = rows[name]
        assert r["versions"] == 1 and len(r["latest_version"]["content_sha256"]) == 64
        assert r["production"]["policy"] == "smooth_abs" and r["production"]["implicit"] is False
        assert Path(r["production"]["artifact_uri"], "adapter_model.safetensors").is_file()
    out = cli(*_in(ran.data, "list")).out
    assert "2 adapter(s)" in out and out.count("smooth_abs (#") == 2


@pytest.mark.slow  # needs the module's `ran` fixture: a nightly run through Prefect
def test_second_run_has_no_new_work(ran, fleet):
    before = cli(*_in(ran.data, "history", "ad0", "--json")).json()
    again = cli(*run_args(fleet, ran.data, "--json")).json()
    assert again["refined"] == 0 and again["failed"] == 0 and again["results"] == []
    assert again["run_id"] == ran.run.json()["run_id"] + 1
    r = cli(*run_args(fleet, ran.data))
    assert r.code == 0 and "Nothing to refine" in r.out
    after = cli(*_in(ran.data, "history", "ad0", "--json")).json()
    assert after["events"] == before["events"] and after["candidates"] == before["candidates"]


@pytest.mark.slow  # two nightly runs of its own through Prefect
def test_dry_run_decides_without_promoting_and_reports_failures(prefect_harness, fleet, tmp_path):
    data = tmp_path / "data"
    cli("init", "--data-dir", data)
    for name, d in (("ad0", fleet.dirs[0]), ("bad", fleet.bad)):
        assert cli("register", name, "--source", d, "--base", fleet.base, "--family", "math",
                   "--no-check", "--data-dir", data).code == 0  # the run must record the bad one
    r = cli(*run_args(fleet, data, "--dry-run", "--policy", "smooth_abs", "--no-guard"))
    assert r.code == 1  # one adapter failed; the other still ran
    assert "dry run" in r.err and "✗ bad failed: AdapterError:" in r.err
    assert "✓ ad0 would promote smooth_abs (dry run: not moved)" in r.err
    assert "1 failed" in r.out and "FAILED  AdapterError" in next(line for line in r.out.splitlines()
                                                                  if line.startswith("✗ bad"))
    ad0 = r.out.split("✓ ad0@1 ", 1)[1].split("\n✗", 1)[0]  # its headline and the lines under it
    assert ad0.lstrip().startswith("PROMOTE smooth_abs") and "served now: smooth_abs (not moved: dry run)" in ad0
    prod = {a["name"]: a["production"] for a in cli(*_in(data, "list", "--json")).json()}
    assert prod["ad0"]["candidate_id"] is None and prod["ad0"]["implicit"] is True  # nothing moved
    # the dry run's winner is promoted by hand afterwards
    hist = cli(*_in(data, "history", "ad0", "--json")).json()
    assert hist["events"] == []
    assert sorted(c["policy"] for c in hist["candidates"]) == ["bare_base", "global_scalar", "random_index",
                                                               "random_index", "random_index", "smooth_abs",
                                                               "zero_rebuild"]
    best = hist["candidates"][0]
    assert best["policy"] == "smooth_abs" and best["task_score"] > best["baseline_score"]
    moved = cli(*_in(data, "promote", best["id"], "--reason", "dry run looked good", "--json")).json()
    assert moved["changed"] and moved["production"]["policy"] == "smooth_abs"


@pytest.mark.parametrize("extra, fragments", [
    (["--policy", "abs_selekt"], ["abs_selekt", "abs_select"]),
    (["--policy", "random_index"], ["invalid run configuration from", "random control is added automatically"]),
    (["--evaluator-option", "n_docs"], ["KEY=VALUE"]),
    (["--task-limit", "0"], ["--task-limit", "give a whole number of at least 1"]),
])
def test_run_bad_options(extra, fragments, fleet, tmp_path):
    r = cli(*run_args(fleet, tmp_path / "nowhere", *extra))
    assert r.code == 2 and r.out == "" and "Traceback" not in r.err
    for f in fragments:
        assert f in r.err


@pytest.mark.parametrize("text, fragment", [
    ("- a\n- list\n", "a run config is a mapping"),
    ("surgery: {policies: [abs_select]}\nnot_a_field: 1\n", "not_a_field"),
    ("key: [unclosed\n", "not valid YAML"),
])
def test_run_bad_config_file_names_the_file(text, fragment, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    r = cli("run", "--config", path, "--data-dir", tmp_path / "nowhere")
    assert r.code == 2 and "Traceback" not in r.err and str(path) in r.err and fragment in r.err
    assert_error(cli("run", "--config", tmp_path / "absent.yaml"), "absent.yaml", "no such file", code=3)


# ------------------------------------------------------------------------- history, promote, rollback
@pytest.mark.slow  # needs the module's `ran` fixture: a nightly run through Prefect
def test_promote_and_rollback_are_audited(ran, monkeypatch):
    hist = cli(*_in(ran.data, "history", "ad0", "--json")).json()
    assert [(e["kind"], e["actor"]) for e in hist["events"]] == [("promotion", "nightly")]
    nightly_pick = hist["production"]["candidate_id"]
    cands = {c["policy"]: c for c in hist["candidates"]}
    assert set(cands) == {"abs_select", "smooth_abs", "grad_direction", "global_scalar", "random_index", "zero_rebuild",
                          "bare_base"}
    assert hist["candidates"][0]["policy"] == "smooth_abs" == hist["production"]["policy"]  # best first
    assert cands["random_index"]["is_control"] and cands["smooth_abs"]["id"] == nightly_pick
    other = cands["abs_select"]["id"]

    # --reason is required, and must say something
    assert_error(cli(*_in(ran.data, "promote", other)), "Missing option '--reason'")
    assert_error(cli(*_in(ran.data, "promote", other, "--reason", "  ")), "reason must be a non-empty string")
    assert cli(*_in(ran.data, "history", "ad0", "--json")).json()["production"]["candidate_id"] == nightly_pick

    moved = cli(*_in(ran.data, "promote", other, "--reason", REASON, "--actor", "alice", "--json")).json()
    assert moved["changed"] is True
    event = moved["event"]
    assert (event["kind"], event["actor"], event["reason"]) == ("manual_override", "alice", REASON)
    assert (event["from_candidate_id"], event["to_candidate_id"]) == (nightly_pick, other)
    assert event["evidence"]["policy"] == "abs_select"
    assert moved["production"]["candidate_id"] == other and moved["production"]["policy"] == "abs_select"
    same = cli(*_in(ran.data, "promote", other, "--reason", "again"))
    assert same.code == 0 and "Already in production: nothing changed" in same.out

    monkeypatch.setenv("USER", "carol")  # the default actor
    back = cli(*_in(ran.data, "rollback", "ad0", "--reason", "regression [/] reported"))
    assert back.code == 0, back.err  # free text with brackets is printed as typed, never parsed as markup
    assert "Rolled back ad0: v1 abs_select" in back.out and "v1 smooth_abs" in back.out
    assert "by carol: regression [/] reported" in back.out

    hist = cli(*_in(ran.data, "history", "ad0", "--json")).json()
    kinds = [(e["kind"], e["actor"]) for e in hist["events"]]
    assert kinds == [("promotion", "nightly"), ("manual_override", "alice"), ("rollback", "carol")]
    manual, rollback = hist["events"][1:]
    assert rollback["reverts_event_id"] == manual["id"] and rollback["reason"] == "regression [/] reported"
    assert (rollback["from_candidate_id"], rollback["to_candidate_id"]) == (other, nightly_pick)
    assert hist["production"]["candidate_id"] == nightly_pick
    table = cli(*_in(ran.data, "history", "ad0")).out
    for text in ("History of ad0", "manual_override", "alice", REASON, "rollback", "carol", "regression [/] reported",
                 f"In production now: v1 smooth_abs (#{nightly_pick})", "Candidates of v1 (promote by id)"):
        assert text in table
    # the other adapter's history is untouched by these moves
    ad1 = cli(*_in(ran.data, "history", "ad1", "--json")).json()
    assert not {"alice", "carol"} & {e["actor"] for e in ad1["events"]}


@pytest.mark.slow  # needs the module's `ran` fixture: a nightly run through Prefect
def test_promote_and_rollback_errors(ran, fleet, tmp_path):
    ad1_version = cli(*_in(ran.data, "history", "ad1", "--json")).json()["candidates"][0]["version_id"]
    ad0_cand = cli(*_in(ran.data, "history", "ad0", "--json")).json()["candidates"][0]["id"]
    assert_error(cli(*_in(ran.data, "promote", "abc", "--reason", "r")), "must be a candidate id", "'abc'")
    assert_error(cli(*_in(ran.data, "promote", "99999", "--reason", "r")), "no candidate with id 99999", code=3)
    assert_error(cli(*_in(ran.data, "promote", "unedited", "--reason", "r")), "needs --version")
    assert_error(cli(*_in(ran.data, "promote", ad0_cand, "--reason", "r", "--version", ad1_version)),
                 "belongs to adapter version")
    assert_error(cli(*_in(ran.data, "rollback", "ad0")), "Missing option '--reason'")
    # a control needs --force (recorded as a warning); undone right after, so the other tests see production as is
    control = next(c for c in cli(*_in(ran.data, "history", "ad0", "--json")).json()["candidates"]
                   if c["policy"] == "random_index")
    assert_error(cli(*_in(ran.data, "promote", control["id"], "--reason", "r")), "is a control", "--force")
    forced = cli(*_in(ran.data, "promote", control["id"], "--reason", "measure chance", "--force", "--json")).json()
    assert forced["changed"] and "--force" in forced["event"]["evidence"]["warning"]
    assert cli(*_in(ran.data, "rollback", "ad0", "--reason", "undo the forced control")).code == 0
    assert_error(cli(*_in(ran.data, "history", "ad7")), "no adapter named 'ad7'", "did you mean", "'ad0'", code=3)
    assert_error(cli(*_in(ran.data, "rollback", "nope", "--reason", "r")), "no adapter named 'nope'", code=3)
    # an adapter that never moved has nothing to roll back
    data = tmp_path / "data"
    cli("init", "--data-dir", data)
    cli("register", "fresh", "--source", fleet.dirs[0], "--base", fleet.base, "--family", "math", "--data-dir", data)
    assert_error(cli(*_in(data, "rollback", "fresh", "--reason", "r")), "no promotion left to roll back")
    assert "fresh: no production moves yet." in cli(*_in(data, "history", "fresh")).out


@pytest.mark.slow  # needs the module's `ran` fixture: a nightly run through Prefect
def test_promote_unedited_by_hand(ran):
    version = cli(*_in(ran.data, "history", "ad1", "--json")).json()["production"]["adapter_version_id"]
    moved = cli(*_in(ran.data, "promote", "unedited", "--version", version, "--reason", "serve the original",
                     "--json")).json()
    assert moved["changed"] and moved["production"]["candidate_id"] is None
    assert moved["production"]["implicit"] is False
    row = next(line for line in cli(*_in(ran.data, "list")).out.splitlines() if " ad1 " in line)
    assert f"v{version} unedited" in row
    back = cli(*_in(ran.data, "rollback", "ad1", "--reason", "undo", "--actor", "bob", "--json")).json()
    assert back["production"]["policy"] == "smooth_abs" and back["event"]["kind"] == "rollback"


# ------------------------------------------------------------------------------------------ dashboard
@pytest.mark.slow  # needs the module's `ran` fixture: a nightly run through Prefect
def test_dashboard_is_written(ran, tmp_path):
    out = tmp_path / "dash.html"
    r = cli(*_in(ran.data, "dashboard", "--out", out, "--json"))
    assert r.json() == {"path": str(out)}
    html = out.read_text()
    assert "ad0" in html and "ad1" in html and "smooth_abs" in html


def test_report_says_what_wins_per_family_and_edit(ran):
    """``report``: one row per family × edit over each adapter's latest decision, the same numbers as the decisions."""
    from spectral_surgery.registry.repository import Registry

    out = cli(*_in(ran.data, "report", "--json")).json()
    assert out["adapters"] == 2
    rows = {(r["family"], r["edit"]): r for r in out["rows"]}
    reg = Registry.open(None, ran.data)
    for adapter, family in (("ad0", "math"), ("ad1", "commonsense")):
        version = reg.list_versions(adapter)[0]
        decision = max((d for d in [reg.get_decision_by_id(i) for i in range(1, 50) if _exists(reg, i)]
                        if d.adapter_version_id == version.id), key=lambda d: (d.created_at, d.id))
        for v in decision.statistics_json["verdicts"]:
            r = rows[(family, v["policy"])]
            assert r["adapters"] == 1 and r["delta_pts"]["mean"] == pytest.approx(v["vs_baseline"]["delta"] * 100)
            assert r["promoted"] == int(decision.statistics_json["promoted"] == v["name"])
            assert r["seconds_per_adapter"] is not None and r["seconds_per_adapter"] > 0
            # the edit's own cost, recorded by the run: its write, its stages and its evaluations' seconds
            assert r["data"] in ("calibration", "data-free") and r["cost"]["n"] == 1
            assert r["cost"]["write"] > 0 and r["cost"]["prepare"] > 0
            assert r["cost"]["total"] == pytest.approx(
                r["cost"]["prepare"] + r["cost"]["write"] + r["cost"]["evaluate"]
            )
    assert set(out["cost_by_data"]) >= {"calibration"}
    reg.close()
    only = cli(*_in(ran.data, "report", "--family", "math", "--json")).json()
    assert only["adapters"] == 1 and {r["family"] for r in only["rows"]} == {"math"}
    text = cli(*_in(ran.data, "report"))
    assert text.code == 0 and "What wins" in text.out and "smooth_abs" in text.out
    # a misspelt family is an error that names the fix, not "no decisions yet" (issue 27)
    assert_error(cli(*_in(ran.data, "report", "--family", "maths")), "--family: unknown task family 'maths'",
                 "Did you mean 'math'?")
    none = cli(*_in(ran.data, "report", "--family", "code"))
    assert none.code == 0 and "No decisions of code adapters yet." in none.out


def _exists(reg, decision_id: int) -> bool:
    from spectral_surgery.registry.validation import NotFoundError

    try:
        reg.get_decision_by_id(decision_id)
        return True
    except NotFoundError:
        return False


def test_verdict_cell_tells_hold_from_reject():
    from spectral_surgery.flows.cli.common import verdict_cell

    assert verdict_cell({"status": "completed", "verdict": "promote", "promoted": "smooth_abs"}) == \
        "[green]PROMOTE[/] smooth_abs"
    assert verdict_cell({"status": "completed", "verdict": "hold", "n_needed": 2823}) == \
        "[yellow]HOLD[/] (needs ~2,823 docs)"
    assert verdict_cell({"status": "completed", "verdict": "reject"}) == "[red]REJECT[/]"
    assert verdict_cell({"status": "failed"}) == "—"
