"""Tests for tasks/delivery/export.py (with tasks/delivery/export_dir.py) and tasks/delivery/serving.py: the serving
layout, atomic switches, verification, normalisation."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch

from spectral_surgery.tasks.adapter_io import (
    CONFIG_NAME,
    SAFETENSORS_NAME,
    adapter_content_sha256,
    load_adapter,
)
from spectral_surgery.tasks.delivery.export import (
    MANIFEST,
    VERSIONS,
    ExportError,
    ExportItem,
    export_production,
    folder_name,
    read_payload,
)
from spectral_surgery.tasks.delivery.serving import normalise, serving_problems
from tests import tiny

RANK_PATTERN = {"model.layers.1.self_attn.o_proj": 8, "q_proj": 2}
ALPHA_PATTERN = {"layers.0.mlp.down_proj": 32, "v_proj": 3}
INFO = {"policy": "smooth_abs", "decision_id": 7, "promoted_at": "2025-01-01T00:00:00+00:00",
        "base_model": "tiny", "base_model_revision": None}
SWITCHES = 40


@pytest.fixture(scope="module")
def adapters(tiny_base, tmp_path_factory):
    """Three plain adapters (different seeds and ranks) and one with rank/alpha patterns."""
    root = tmp_path_factory.mktemp("export_src")
    plain = [tiny.save_adapter(tiny_base, root / f"p{i}", seed=i + 1, r=2 + i) for i in range(3)]
    patterned = tiny.save_adapter(tiny_base, root / "pat", seed=5, rank_pattern=RANK_PATTERN,
                                  alpha_pattern=ALPHA_PATTERN)
    return plain, patterned


def item(name: str, path: Path, **info) -> ExportItem:
    return ExportItem(name, path, adapter_content_sha256(path), {**INFO, **info})


def delta_weights(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """ΔW of every LoRA layer as PEFT applies it (``get_delta_weight``), by module name."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
            out[name.removeprefix("base_model.model.")] = module.get_delta_weight("default").detach()
    return out


# ---------------------------------------------------------------------------------------------- export
def test_export_writes_the_layout_and_every_adapter_loads(adapters, tiny_base, tmp_path):
    plain, _ = adapters
    out = tmp_path / "serve"
    items = [item("ad0", plain[0]), item("acme/ad1", plain[1], policy="unedited", decision_id=None),
             ExportItem("none", None, None, {})]
    outcomes, changed = export_production(items, out)
    assert changed and [o.status for o in outcomes] == ["exported", "exported", "skipped"]
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest) == {"ad0", "acme/ad1"}
    for it in items[:2]:
        link = out / folder_name(it.name)
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))  # relative: DIR can be moved/mounted
        entry = manifest[it.name]
        assert entry["sha256"] == it.sha256 == adapter_content_sha256(link)  # byte copies of what was promoted
        assert entry["path"] == str(link) and entry["version"] == f"{VERSIONS}/{link.resolve().name}"
        assert link.resolve().name == f"{folder_name(it.name)}-{it.sha256[:12]}"
        assert sorted(p.name for p in link.iterdir()) == [CONFIG_NAME, SAFETENSORS_NAME]
        for key in ("policy", "decision_id", "promoted_at", "base_model", "base_model_revision"):
            assert entry[key] == it.info[key]
        assert not entry["normalised"]
        deltas = delta_weights(tiny_base, link)
        assert deltas and all(torch.count_nonzero(d) > 0 for d in deltas.values())
    assert (out / "acme--ad1").is_symlink()
    assert sorted(p.name for p in (out / VERSIONS).iterdir()) == sorted(
        Path(os.readlink(out / folder_name(i.name))).name for i in items[:2])  # no temporary leftovers


def test_a_rerun_with_nothing_new_writes_nothing(adapters, tmp_path):
    plain, _ = adapters
    out = tmp_path / "serve"
    items = [item("ad0", plain[0]), item("ad1", plain[1])]
    export_production(items, out)
    stamps = {p: os.lstat(p).st_mtime_ns for p in [*out.rglob("*"), out]}
    inodes = {p: os.lstat(p).st_ino for p in stamps}
    outcomes, changed = export_production(items, out)
    assert not changed and [o.status for o in outcomes] == ["unchanged", "unchanged"]
    assert {p: os.lstat(p).st_mtime_ns for p in [*out.rglob("*"), out]} == stamps
    assert {p: os.lstat(p).st_ino for p in stamps} == inodes


def test_a_switch_swaps_the_link_and_removes_old_versions(adapters, tmp_path):
    plain, _ = adapters
    out = tmp_path / "serve"
    export_production([item("ad0", plain[0])], out)
    first = (out / "ad0").resolve()
    (o,), changed = export_production([item("ad0", plain[1], decision_id=8)], out)
    assert changed and o.status == "switched" and o.previous_sha256 == first.name[-12:]
    second = (out / "ad0").resolve()
    assert second != first and adapter_content_sha256(out / "ad0") == adapter_content_sha256(plain[1])
    assert first.is_dir() and o.removed == []  # kept for a reader that resolved the link just before
    assert json.loads((out / MANIFEST).read_text())["ad0"]["decision_id"] == 8
    (o,), _ = export_production([item("ad0", plain[2])], out)
    assert o.removed == [first.name] and not first.exists() and second.is_dir()
    (o,), _ = export_production([item("ad0", plain[0])], out, keep_previous=False)
    assert sorted(p.name for p in (out / VERSIONS).iterdir()) == [first.name]  # back to the first: rewritten
    assert o.status == "switched" and len(o.removed) == 2


def test_missing_or_tampered_artifacts_are_refused_and_the_others_export(adapters, tmp_path):
    plain, _ = adapters
    out = tmp_path / "serve"
    tampered = tmp_path / "tampered"
    shutil.copytree(plain[1], tampered)
    good = [item("ad0", plain[0]), item("ad1", tampered)]
    export_production(good, out)
    before = (out / "ad1").resolve()
    (tampered / CONFIG_NAME).write_text((tampered / CONFIG_NAME).read_text().replace('"r": 3', '"r": 4'))
    gone = ExportItem("ad2", tmp_path / "gone", "0" * 64, INFO)
    outcomes, _ = export_production([item("ad0", plain[2]), good[1], gone], out)
    by = {o.name: o for o in outcomes}
    assert by["ad0"].status == "switched"
    assert by["ad1"].status == "failed" and str(tampered) in by["ad1"].reason and "differs" in by["ad1"].reason
    assert by["ad2"].status == "failed" and str(tmp_path / "gone") in by["ad2"].reason
    assert "does not exist" in by["ad2"].reason
    assert (out / "ad1").resolve() == before  # still serving what it served
    manifest = json.loads((out / MANIFEST).read_text())
    assert set(manifest) == {"ad0", "ad1"} and manifest["ad1"]["sha256"] == good[1].sha256
    with pytest.raises(ExportError, match="recorded no content sha256"):
        read_payload(ExportItem("x", plain[0], None))


def test_a_real_folder_is_never_replaced(adapters, tmp_path):
    plain, _ = adapters
    (tmp_path / "ad0").mkdir()
    (o,), _ = export_production([item("ad0", plain[0])], tmp_path)
    assert o.status == "failed" and "is not a symlink" in o.reason and (tmp_path / "ad0").is_dir()


def test_reserved_and_colliding_names(adapters):
    plain, _ = adapters
    with pytest.raises(ExportError, match="reserved"):
        folder_name("production.json")
    with pytest.raises(ExportError, match="share the folder"):
        export_production([item("a/b", plain[0]), item("a--b", plain[1])], Path("/nonexistent-export"))


# ---------------------------------------------------------------------------------------------- serving config
def test_patterns_are_refused_without_normalise(adapters, tmp_path):
    _, patterned = adapters
    (o,), _ = export_production([item("pat", patterned)], tmp_path / "serve")
    assert o.status == "failed"
    assert "'rank_pattern'" in o.reason and "'alpha_pattern'" in o.reason and "--normalise" in o.reason
    assert str(patterned / CONFIG_NAME) in o.reason and not (tmp_path / "serve" / "pat").exists()
    assert serving_problems({"exclude_modules": ["x"]})[0][0] == "exclude_modules"
    assert serving_problems({"rank_pattern": {}, "alpha_pattern": {}, "exclude_modules": None}) == []


def test_normalise_gives_one_rank_and_the_same_delta_w(adapters, tiny_base, tmp_path):
    _, patterned = adapters
    out = tmp_path / "serve"
    (o,), _ = export_production([item("pat", patterned)], out, normalise_config=True)
    assert o.status == "exported" and o.normalised and o.rank == 8
    config = json.loads((out / "pat" / CONFIG_NAME).read_text())
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (8, 8, False)
    assert not serving_problems(config) and "exclude_modules" not in config
    assert {m.r for m in load_adapter(out / "pat").modules.values()} == {8}
    want, got = delta_weights(tiny_base, patterned), delta_weights(tiny_base, out / "pat")
    assert set(want) == set(got) and len(want) == 14
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)
    entry = json.loads((out / MANIFEST).read_text())["pat"]
    assert entry["normalised"] and entry["sha256"] != entry["source_sha256"] == adapter_content_sha256(patterned)
    (o,), changed = export_production([item("pat", patterned)], out, normalise_config=True)
    assert o.status == "unchanged" and not changed  # normalising is deterministic


def test_normalise_drops_excluded_modules_without_random_layers(adapters, tiny_base, tmp_path):
    """An ε-PARA edit that removed modules: exclude_modules goes, target_modules names exactly what is left."""
    from safetensors.torch import load_file, save_file

    _, patterned = adapters
    src = tmp_path / "excluded"
    shutil.copytree(patterned, src)
    tensors = load_file(src / SAFETENSORS_NAME)
    gone = "model.layers.0.self_attn.k_proj"
    save_file({k: v for k, v in tensors.items() if f".{gone}." not in k}, src / SAFETENSORS_NAME)
    cfg = json.loads((src / CONFIG_NAME).read_text())
    (src / CONFIG_NAME).write_text(json.dumps({**cfg, "exclude_modules": [gone]}))
    out = tmp_path / "serve"
    (o,), _ = export_production([item("ex", src)], out)
    assert o.status == "failed" and "'exclude_modules'" in o.reason
    (o,), _ = export_production([item("ex", src)], out, normalise_config=True)
    assert o.status == "exported", o.reason
    config = json.loads((out / "ex" / CONFIG_NAME).read_text())
    assert gone not in config["target_modules"] and len(config["target_modules"]) == 13
    want, got = delta_weights(tiny_base, src), delta_weights(tiny_base, out / "ex")
    assert set(got) == set(want) and gone not in got  # no freshly initialised layer for the removed module
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_normalise_is_pure_and_refuses_lora_bias():
    from spectral_surgery.tasks.adapter_io import AdapterError

    a, b = torch.randn(2, 4), torch.randn(3, 2)
    tensors = {"base_model.model.m.lora_A.weight": a, "base_model.model.m.lora_B.weight": b}
    config = {"r": 2, "lora_alpha": 6, "target_modules": ["m"], "rank_pattern": {"x": 4}}
    new, out = normalise(config, tensors)
    assert config["rank_pattern"] == {"x": 4} and tensors["base_model.model.m.lora_B.weight"] is b
    assert new["r"] == 2 and new["target_modules"] == ["m"]
    torch.testing.assert_close(out["base_model.model.m.lora_B.weight"], 3 * b)
    with pytest.raises(AdapterError, match="lora_bias"):
        normalise({**config, "lora_bias": True}, tensors)


# ---------------------------------------------------------------------------------------------- atomicity
def _read_resolved(link: Path) -> tuple[str, int]:
    """What a server does: resolve the link once, read the config and the whole safetensors header, check they
    agree and that the file holds every byte the header announces."""
    real = Path(os.path.realpath(link))
    config = json.loads((real / CONFIG_NAME).read_bytes())
    with (real / SAFETENSORS_NAME).open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        size = os.fstat(f.fileno()).st_size
    header.pop("__metadata__", None)
    end = max(v["data_offsets"][1] for v in header.values())
    assert size == 8 + n + end, f"{real}: truncated weights"
    ranks = {v["shape"][0] for k, v in header.items() if ".lora_A." in k}
    assert ranks == {config["r"]}, f"{real}: config r={config['r']} but lora_A ranks {ranks}"
    return real.name, config["r"]


def test_a_reader_never_sees_a_broken_adapter_during_switches(adapters, tmp_path):
    plain, _ = adapters
    out = tmp_path / "serve"
    items = [item("ad0", p) for p in plain]  # ranks 2, 3, 4: a mixed config and weights would show
    export_production([items[0]], out)
    link = out / "ad0"
    stop, seen, broken, retired = threading.Event(), set(), [], [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                seen.add(_read_resolved(link))
            except FileNotFoundError:
                # The version it resolved was retired two switches later (kept one switch for such readers):
                # the link itself must still resolve to a complete adapter.
                retired[0] += 1
                if not link.is_symlink() or not Path(os.path.realpath(link)).is_dir():
                    broken.append("the link did not resolve")
            except Exception as e:  # noqa: BLE001 - any other failure is what this test looks for
                broken.append(repr(e))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(1, SWITCHES + 1):
            (o,), _ = export_production([items[i % 3]], out)
            assert o.status == "switched"
    finally:
        stop.set()
        thread.join()
    assert broken == []
    assert {r for _, r in seen} == {2, 3, 4}  # the reader saw every version
    assert retired[0] <= len(seen)
