"""``spectral-surgery export DIR`` end to end on a registry with promoted, unedited and version-less adapters."""

from __future__ import annotations

import json
import os
import shutil

from spectral_surgery.registry.read import production_set
from spectral_surgery.tasks.adapter_io import CONFIG_NAME, adapter_content_sha256
from tests import tiny
from tests.flows.cli_support import assert_error, cli, promote

KEY = "k" * 16


def export(env, out, *extra):
    return cli("export", out, "--data-dir", env.data, *extra)


def test_production_set_reads_what_each_adapter_serves(reg_env):
    by = {e.adapter: e for e in production_set(reg_env.reg)}
    assert by["ad0"].policy == "smooth_abs" and by["ad0"].decision_id == reg_env.decision.id
    assert by["ad0"].source_path == str(reg_env.edited[0]) and by["ad0"].promoted_at and not by["ad0"].implicit
    assert by["ad0"].sha256 == adapter_content_sha256(reg_env.edited[0])
    assert by["ad1"].policy == "unedited" and by["ad1"].implicit and by["ad1"].decision_id is None
    assert by["ad1"].source_path == str(reg_env.dirs["ad1"]) and by["ad1"].base_model == str(reg_env.base)
    assert by["ad2"].source_path is None and by["ad2"].policy is None


def test_export_then_rerun_then_switch(reg_env, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "serve"
    r = export(reg_env, out, "--json")
    payload = r.json()
    by = {a["name"]: a for a in payload["adapters"]}
    assert (by["ad0"]["status"], by["ad1"]["status"], by["ad2"]["status"]) == ("exported", "exported", "skipped")
    assert payload["skipped"] == ["ad2"] and payload["failed"] == 0 and payload["max_rank"] == 4
    manifest = json.loads((out / "production.json").read_text())
    assert set(manifest) == {"ad0", "ad1"}
    ad0 = manifest["ad0"]
    assert (ad0["policy"], ad0["decision_id"], ad0["base_model"]) == ("smooth_abs", reg_env.decision.id,
                                                                      str(reg_env.base))
    assert ad0["sha256"] == adapter_content_sha256(reg_env.edited[0]) and ad0["path"] == str(out / "ad0")
    assert ad0["promoted_at"] and ad0["base_model_revision"] is None
    assert manifest["ad1"]["policy"] == "unedited" and manifest["ad1"]["decision_id"] is None
    for name in ("ad0", "ad1"):
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(reg_env.base), str(out / name))

    again = export(reg_env, out)
    assert again.code == 0 and again.out.count("unchanged") >= 3  # two rows and production.json
    assert "Nothing in production (skipped): ad2" in again.out

    first = (out / "ad0").resolve()
    d = promote(reg_env, reg_env.edited[1], "abs_select", "d1")
    switched = {a["name"]: a for a in export(reg_env, out, "--json", "--no-keep-previous").json()["adapters"]}
    assert switched["ad0"]["status"] == "switched" and switched["ad1"]["status"] == "unchanged"
    assert switched["ad0"]["removed"] == [first.name] and not first.exists()
    assert adapter_content_sha256(out / "ad0") == adapter_content_sha256(reg_env.edited[1])
    assert json.loads((out / "production.json").read_text())["ad0"]["decision_id"] == d.id


def test_a_tampered_artifact_fails_that_adapter_only(reg_env, tmp_path):
    cfg = reg_env.edited[0] / CONFIG_NAME
    cfg.write_text(cfg.read_text().replace('"lora_alpha": 8', '"lora_alpha": 9'))
    shutil.rmtree(reg_env.dirs["ad1"])
    out = tmp_path / "serve"
    r = export(reg_env, out)
    assert r.code == 1 and "Traceback" not in r.err
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert any(str(reg_env.edited[0]) in e and "differs" in e for e in errors)
    assert any(str(reg_env.dirs["ad1"]) in e and "does not exist" in e for e in errors)
    assert "failed" in r.out and not (out / "ad0").exists()
    r = export(reg_env, tmp_path / "other", "--json")
    assert r.code == 1 and json.loads(r.out)["failed"] == 2  # --json: the JSON alone on stdout


def test_patterns_need_normalise(reg_env, tmp_path):
    pat = tiny.save_adapter(reg_env.base, tmp_path / "pat", seed=3, rank_pattern={"o_proj": 8})
    promote(reg_env, pat, "para", "d2")
    out = tmp_path / "serve"
    r = export(reg_env, out, "--adapter", "ad0")
    assert r.code == 1
    assert "'rank_pattern'" in r.err and "--normalise" in r.err and str(pat / CONFIG_NAME) in r.err
    ok = export(reg_env, out, "--adapter", "ad0", "--normalise", "--json").json()
    (row,) = ok["adapters"]
    assert row["status"] == "exported" and row["normalised"] and ok["max_rank"] == 8
    assert json.loads((out / "ad0" / CONFIG_NAME).read_text())["rank_pattern"] == {}


def test_dry_run_and_errors(reg_env, tmp_path):
    out = tmp_path / "serve"
    r = export(reg_env, out, "--dry-run", "--json").json()
    assert r["dry_run"] and r["manifest_changed"] and not out.exists()
    assert_error(export(reg_env, out, "--adapter", "nope"), "no adapter named 'nope'", code=3)
    assert_error(cli("export", out, "--data-dir", tmp_path / "nowhere"), "spectral-surgery init", code=3)
    assert_error(cli("export", "--data-dir", reg_env.data), "Missing argument 'DIR'")
    os.makedirs(out / "ad1")
    r = export(reg_env, out)
    assert r.code == 1 and "is not a symlink" in r.err
