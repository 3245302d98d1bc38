"""``spectral-surgery edit`` (one PEFT adapter per policy plus a summary), usage errors of the command line, ``demo``'s
parser (the demo itself takes minutes: it is not run here)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.flows.cli_support import assert_error, cli

TWO = ("abs_select", "smooth_abs")
TARGETS = ("o_proj", "down_proj")  # the default target modules


def _edit(base, adapter, calib, out, *extra):
    return cli("edit", "--base", base, "--adapter", adapter, "--calib", calib, "--out", out,
               "--n-samples", 4, "--batch-size", 2, *extra)


@pytest.fixture(scope="module")
def edited(tiny_base, tiny_adapter, calib_file, tmp_path_factory):
    """One ``edit --json`` with two policies: (result, out dir)."""
    out = tmp_path_factory.mktemp("cli_edit") / "edited"
    return _edit(tiny_base, tiny_adapter, calib_file, out, "--policy", TWO[0], "--policy", TWO[1], "--json"), out


def _delta(weights: dict, module: str) -> torch.Tensor:
    """The unscaled B · A of ``module`` (e.g. ``layers.0.self_attn.o_proj``), whose σ the editor changes."""
    a = next(v for k, v in weights.items() if f"{module}.lora_A" in k)
    b = next(v for k, v in weights.items() if f"{module}.lora_B" in k)
    return b.double() @ a.double()


def test_edit_writes_one_loadable_peft_adapter_per_policy(edited, tiny_base, tiny_adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    r, out = edited
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == sorted(TWO)
    original = load_file(tiny_adapter / "adapter_model.safetensors")
    ids = torch.tensor([[1, 10, 20, 30]])
    for policy in TWO:
        d = out / policy
        assert (d / "adapter_config.json").is_file() and (d / "edit_manifest.json").is_file()
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), d).eval()
        written = load_file(d / "adapter_model.safetensors")
        # PEFT loaded the edited weights (not a fresh init): its o_proj LoRA B is the file's
        lora_b = model.base_model.model.model.layers[0].self_attn.o_proj.lora_B["default"].weight
        key = next(k for k in written if "layers.0.self_attn.o_proj.lora_B" in k)
        assert torch.equal(lora_b.detach(), written[key])
        with torch.no_grad():
            assert torch.isfinite(model(ids).logits).all()
        # the targets' updates changed; every other module's update is the input's, bit for bit in ΔW
        for layer in (0, 1):
            for mod in ("self_attn.o_proj", "mlp.down_proj"):
                name = f"layers.{layer}.{mod}"
                assert not torch.allclose(_delta(written, name), _delta(original, name), atol=1e-6)
            for mod in ("self_attn.q_proj", "self_attn.v_proj", "mlp.up_proj"):
                name = f"layers.{layer}.{mod}"
                assert torch.allclose(_delta(written, name), _delta(original, name), atol=1e-6)
    # two policies, two different edits of the same module
    a = load_file(out / TWO[0] / "adapter_model.safetensors")
    b = load_file(out / TWO[1] / "adapter_model.safetensors")
    assert not torch.allclose(_delta(a, "layers.0.mlp.down_proj"), _delta(b, "layers.0.mlp.down_proj"))


def test_edit_json_summary_has_the_per_policy_numbers(edited, tiny_adapter):
    r, out = edited
    summary = r.json()
    assert summary["adapter"] == str(tiny_adapter)
    assert len(summary["calib_sha256"]) == 64
    assert set(summary["timings_s"]) >= {"decompose", "calibrate"}
    rows = {row["policy"]: row for row in summary["policies"]}
    assert list(rows) == list(TWO)
    original = load_file(tiny_adapter / "adapter_model.safetensors")
    for policy, row in rows.items():
        assert row["path"] == str(out / policy)
        manifest = json.loads((out / policy / "edit_manifest.json").read_text())
        assert manifest["policy"] == policy
        assert {k: row[k] for k in ("modules_edited", "scalars_edited", "mean_abs_rel_change")} == manifest["summary"]
        assert row["modules_edited"] == 2 * len(TARGETS) == len(manifest["modules"])  # 2 layers
        assert row["scalars_edited"] == 4 * row["modules_edited"]  # r = 4 singular values each
        # mean |σ'/σ − 1| recomputed from the spectra, and those spectra are the adapters' real ones
        ratios = []
        written = load_file(out / policy / "adapter_model.safetensors")
        for name, m in manifest["modules"].items():
            before, after = torch.tensor(m["sigma_before"]), torch.tensor(m["sigma_after"])
            ratios.append((after / before - 1).abs())
            short = name.removeprefix("model.")
            assert torch.allclose(torch.linalg.svdvals(_delta(original, short))[:4].float(), before, atol=1e-4)
            assert torch.allclose(torch.linalg.svdvals(_delta(written, short))[:4].float().sort().values,
                                  after.sort().values, atol=1e-4)
        assert row["mean_abs_rel_change"] == pytest.approx(float(torch.cat(ratios).mean()), rel=1e-5)
        assert row["mean_abs_rel_change"] > 0
    assert rows["abs_select"]["mean_abs_rel_change"] != rows["smooth_abs"]["mean_abs_rel_change"]
    # progress over the calibration batches went to stderr: 4 examples in batches of 2
    assert "calibration" in r.err and "2/2" in r.err


def test_edit_table_and_all_policies(tiny_base, tiny_adapter, calib_file, tmp_path):
    r = _edit(tiny_base, tiny_adapter, calib_file, tmp_path / "out")  # no --policy: the paper's four
    assert r.code == 0, r.err
    policies = ("abs_select", "smooth_abs", "random_index", "grad_direction")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(policies)
    for header in ("policy", "modules edited", "scalars edited", "mean |σ'/σ − 1|", "written to"):
        assert header in r.out
    for p in policies:
        line = next(line for line in r.out.splitlines() if f" {p} " in line)
        assert " 4 " in line and " 16 " in line and str(tmp_path / "out" / p) in line
    assert "4 calibration examples" in r.out


def test_global_json_and_data_dir_before_the_command(tiny_base, tiny_adapter, calib_file, tmp_path):
    r = cli("--json", "--data-dir", tmp_path / "data", "edit", "--base", tiny_base, "--adapter", tiny_adapter,
            "--calib", calib_file, "--policy", "smooth_abs", "--out", tmp_path / "out", "--n-samples", 2)
    assert [p["policy"] for p in r.json()["policies"]] == ["smooth_abs"]


@pytest.mark.parametrize("change, fragments", [
    ({"--base": "{tmp}/no-base"}, ["no-base", "does not exist"]),
    ({"--adapter": "{tmp}/no-adapter"}, ["no-adapter", "adapter directory does not exist"]),
    ({"--calib": "{tmp}/no-calib.jsonl"}, ["no-calib.jsonl", "does not exist"]),
    ({"--policy": "abs_selekt"}, ["abs_selekt", "Did you mean 'abs_select'"]),
    ({"--set": "preserve_energy"}, ["--set expects KEY=VALUE"]),
])
def test_edit_bad_input_is_one_line_error(change, fragments, tiny_base, tiny_adapter, calib_file, tmp_path):
    opts = {"--base": str(tiny_base), "--adapter": str(tiny_adapter), "--calib": str(calib_file),
            "--policy": "smooth_abs", "--out": str(tmp_path / "out")}
    opts.update({k: v.format(tmp=tmp_path) for k, v in change.items()})
    r = cli("edit", *[x for kv in opts.items() for x in kv], "--n-samples", 2)
    assert_error(r, *fragments)
    assert not (tmp_path / "out").exists()


def test_edit_bad_config_override_names_the_field(tiny_base, tiny_adapter, calib_file, tmp_path):
    r = cli("edit", "--base", tiny_base, "--adapter", tiny_adapter, "--calib", calib_file, "--policy", "smooth_abs",
            "--out", tmp_path / "out", "--set", "bogus=1")
    assert r.code == 2 and "Traceback" not in r.err and r.out == ""
    # pydantic's "[type=extra_forbidden, ...]" is printed as text, not swallowed as rich markup
    assert "EditConfig" in r.err and "bogus" in r.err and "[type=extra_forbidden" in r.err


@pytest.mark.parametrize("argv, fragment", [
    ([], "missing command"),
    (["frobnicate"], "No such command 'frobnicate'"),
    (["lst"], "Did you mean 'list'?"),
    (["edit", "--base", "b", "--adapter", "a", "--calib", "c"], "Missing option '--out'"),
    (["edit", "--base", "b", "--adapter", "a", "--calib", "c", "--out", "o", "--n-samples", "many"],
     "Invalid value for '--n-samples': 'many' is not a valid integer"),
    (["demo", "--budget", "enormous"], "Invalid value for '--budget': 'enormous' is not one of 'smallest'"),
    (["list", "--frobnicate"], "No such option '--frobnicate'"),
])
def test_usage_errors_exit_2_with_usage(argv, fragment):
    r = cli(*argv)
    assert_error(r, fragment)
    assert r.err.startswith("Usage: spectral-surgery")


def test_help_exits_0():
    r = cli("demo", "--help")
    assert r.code == 0
    assert "--budget" in r.out and "smallest" in r.out and "--task-limit" in r.out
    r = cli("--help")
    assert r.code == 0
    for command in ("edit", "init", "register", "list", "run", "history", "promote", "rollback", "dashboard", "demo"):
        assert command in r.out


def test_list_policies_shows_every_registered_edit():
    """``edit --list-policies``: every edit of the registry with its role and whether it needs calibration data,
    without the options an edit needs (--base, --adapter, ...)."""
    from spectral_surgery.tasks.config import EditConfig
    from spectral_surgery.tasks.surgery.policies import get_policy, list_policies
    from spectral_surgery.tasks.surgery.policy_registry import ROLES

    rows = cli("--json", "edit", "--list-policies").json()
    assert [r["name"] for r in rows] == list_policies(ROLES)
    by_name = {r["name"]: r for r in rows}
    assert by_name["hns"]["needs_data"] is False and by_name["smooth_abs"]["needs_data"] is True
    assert by_name["random_index"]["promotable"] is False and by_name["global_scalar"]["promotable"] is True
    assert all(r["description"] == get_policy(r["name"]).description and r["description"] for r in rows)
    text = cli("edit", "--list-policies")
    assert text.code == 0 and "data-free" in text.out and "calibration" in text.out and "flat_nuclear" in text.out
    # the settings each edit reads, from its registration: what its candidates are keyed by
    assert set(by_name["z_score"]["settings"]) == set(get_policy("z_score").settings(EditConfig()))
    assert by_name["z_score"]["settings"]["z_tau"] == 0.2 and "z_tau" not in by_name["abs_select"]["settings"]
    assert by_name["hns"]["settings"] == {"hns": EditConfig().hns.model_dump(mode="json")}
    assert by_name["global_scalar"]["gamma_search"] is True and by_name["grad_direction"]["aliases"] == ["gd"]
    assert cli("--json", "run", "--list-policies").json() == rows  # the same listing from the nightly's command


def test_data_free_edit_needs_no_base_and_no_calibration(tiny_adapter, tmp_path):
    """``edit --policy hns`` with only the adapter: decomposition only (no model, no calibration pass), and the
    written σ of every target module is exactly HNS of the original σ (EXTENSIONS §1)."""
    from spectral_surgery.tasks.surgery.posthoc import hns_spectrum

    out = tmp_path / "out"
    r = cli("edit", "--adapter", tiny_adapter, "--policy", "hns", "--out", out, "--json")
    summary = r.json()
    assert [p["policy"] for p in summary["policies"]] == ["hns"] and summary["policies"][0]["modules_edited"] > 0
    original = load_file(tiny_adapter / "adapter_model.safetensors")
    edited = load_file(out / "hns" / "adapter_model.safetensors")
    modules = sorted({k.split(".lora_")[0].split("model.layers.")[1] for k in original if "o_proj.lora_A" in k})
    for m in modules:
        module = f"layers.{m}"
        before = torch.linalg.svdvals(_delta(original, module))
        rank = next(v for k, v in original.items() if f"{module}.lora_A" in k).shape[0]
        expected = hns_spectrum(before[:rank].float()).double().sort(descending=True).values  # svdvals are sorted
        after = torch.linalg.svdvals(_delta(edited, module))[:rank]
        assert torch.allclose(after, expected, rtol=1e-4, atol=1e-6), (module, after, expected)


def test_para_edit_prunes_ranks_and_writes_a_config_peft_reads(tiny_adapter, tmp_path):
    """``edit --policy para_e95``: data-free rank pruning (EXTENSIONS §3); the written config carries the new ranks
    in ``rank_pattern`` and our reader (PEFT's pattern matching) agrees with the manifest."""
    from spectral_surgery.tasks.adapter_io import load_adapter

    out = tmp_path / "out"
    r = cli("edit", "--adapter", tiny_adapter, "--policy", "para_e95", "--out", out, "--json")
    assert r.code == 0, r.out
    manifest = json.loads((out / "para_e95" / "edit_manifest.json").read_text())
    assert manifest["pooled"]["epsilon"] == 0.95 and manifest["pooled"]["retained_ratio"] >= 0.95
    edited = load_adapter(out / "para_e95")
    for name, k in manifest["rank_changes"].items():
        assert (edited.modules[name].r if k else 0) == k
    assert manifest["rank_changes"] and edited.config["rank_pattern"]


def test_edit_that_needs_data_without_base_is_a_usage_error(tiny_adapter, tmp_path):
    r = cli("edit", "--adapter", tiny_adapter, "--policy", "smooth_abs", "--out", tmp_path / "out")
    assert_error(r, "smooth_abs need(s) calibration data: give --base and --calib")
    assert not (tmp_path / "out").exists()


def test_sensitivity_hns_edit_calibrates_selects_and_records_why(tiny_base, tiny_adapter, calib_file, tmp_path):
    """``edit --policy sensitivity_hns`` (EXTENSIONS §7): listed as a post-hoc edit that needs calibration; one pass,
    settings through ``--set``; full HNS on the chosen modules only, the others keep their bytes; the manifest holds
    the selection (chosen, rejections with reasons, scores); a bad setting or a missing --base is a usage error."""
    from spectral_surgery.tasks.adapter_io import load_adapter
    from spectral_surgery.tasks.surgery.module_selection import OUTSIDE_BUDGET
    from spectral_surgery.tasks.surgery.posthoc import hns_spectrum

    row = {r["name"]: r for r in cli("--json", "edit", "--list-policies").json()}["sensitivity_hns"]
    assert row["needs_data"] is True and row["role"] == "posthoc" and row["promotable"] is True
    out = tmp_path / "out"
    r = _edit(tiny_base, tiny_adapter, calib_file, out, "--policy", "sensitivity_hns", "--set",
              'sensitivity_hns={"module_budget": 3, "selection_rule": "importance"}', "--json")
    assert r.code == 0, r.out
    assert [p["policy"] for p in r.json()["policies"]] == ["sensitivity_hns"]
    manifest = json.loads((out / "sensitivity_hns" / "edit_manifest.json").read_text())
    sel = manifest["pooled"]
    assert manifest["settings"]["module_budget"] == 3 and manifest["calibration"]["n_examples"] == 4
    assert sel["candidates"] == 4 and sel["module_budget"] == 3 and sel["budget_rule"] == "configured"
    assert len(sel["chosen"]) == 3 and list(sel["rejected"].values()) == [OUTSIDE_BUDGET]
    ranked = sorted(sel["scores"], key=lambda n: (-sel["scores"][n]["importance"], n))
    assert sel["ranking"] == ranked and sel["chosen"] == ranked[:3]
    src, edited = load_adapter(tiny_adapter), load_adapter(out / "sensitivity_hns")
    for name, entry in manifest["modules"].items():
        m = src.modules[name]
        if name in sel["chosen"]:
            expected = hns_spectrum(torch.tensor(entry["sigma_before"]))
            assert torch.allclose(torch.tensor(entry["sigma_after"]), expected, atol=1e-6)
            assert entry["selection"] == {"chosen": True, "rejection": None, **sel["scores"][name]}
        else:
            assert entry["sigma_after"] == entry["sigma_before"] and entry["selection"]["rejection"] == OUTSIDE_BUDGET
            assert torch.equal(edited.tensors[m.key_A], src.tensors[m.key_A])
            assert torch.equal(edited.tensors[m.key_B], src.tensors[m.key_B])
    bad = _edit(tiny_base, tiny_adapter, calib_file, tmp_path / "bad", "--policy", "sensitivity_hns", "--set",
                'sensitivity_hns={"module_budget": 0}')
    assert bad.code == 2 and "Traceback" not in bad.err and "sensitivity_hns.module_budget" in bad.err
    assert "greater than or equal to 1" in bad.err and not (tmp_path / "bad").exists()
    no_base = cli("edit", "--adapter", tiny_adapter, "--policy", "sensitivity_hns", "--out", tmp_path / "nb")
    assert_error(no_base, "sensitivity_hns need(s) calibration data")
