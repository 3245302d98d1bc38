"""Tests for tasks/adapter_io.py: PEFT-exact scaling, validation errors, byte-exact atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from spectral_surgery.tasks import adapter_io
from spectral_surgery.tasks.adapter_io import (
    AdapterError,
    check_base_compat,
    load_adapter,
    lora_scaling,
    package_versions,
    select_modules,
    sha256_path,
    write_adapter,
)
from spectral_surgery.tasks.config import TargetConfig
from tests import tiny

RANK_PATTERN = {"model.layers.1.self_attn.o_proj": 8, "o_proj": 2}  # full key first: PEFT takes the first match
ALPHA_PATTERN = {"layers.0.mlp.down_proj": 32, r"model\.layers\.1\.mlp\.(up|gate)_proj": 3, "o_proj": 5}
MANIFEST = {"policy": "abs_select", "seed": 42, "nested": {"b": 1, "a": [1.5, 2]}}
O_PROJ_1 = "model.layers.1.self_attn.o_proj"
DOWN_0 = "model.layers.0.mlp.down_proj"


# ----------------------------------------------------------------------------- helpers


def raw_tensors(path: Path) -> tuple[dict[str, tuple[str, list[int], bytes]], dict]:
    """Parse a safetensors file by hand: key -> (dtype, shape, raw bytes), and the header metadata."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n :]
    return {k: (v["dtype"], v["shape"], body[v["data_offsets"][0] : v["data_offsets"][1]]) for k,
            v in header.items()}, meta


def copy_adapter(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "adapter_config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (path / "adapter_config.json").write_text(json.dumps(cfg))


def edit_tensors(path: Path, fn) -> None:
    f = path / "adapter_model.safetensors"
    tensors = load_file(f)
    fn(tensors)
    save_file(tensors, f, metadata={"format": "pt"})


def key_of(adapter, name: str, which: str) -> str:
    return getattr(adapter.modules[name], f"key_{which}")


def assert_error(exc_info, file_name: str, field: str) -> None:
    err = exc_info.value
    assert err.field == field
    assert err.path is not None and err.path.name == file_name
    assert file_name in str(err) and field in str(err)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture(scope="module")
def base_model():
    return tiny.make_model()  # same seed and sizes as tiny_base


@pytest.fixture(scope="module", params=[False, True], ids=["alpha_over_r", "rslora"])
def pattern_adapter(request, tiny_base, tmp_path_factory):
    return tiny.save_adapter(
        tiny_base,
        tmp_path_factory.mktemp("pattern"),
        r=4,
        alpha=8,
        use_rslora=request.param,
        rank_pattern=RANK_PATTERN,
        alpha_pattern=ALPHA_PATTERN,
    )


@pytest.fixture(scope="module", params=[torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def half_adapter(request, tiny_base, tmp_path_factory):
    path = tiny.save_adapter(tiny_base, tmp_path_factory.mktemp("half"), r=4, alpha=16, dtype=request.param)
    (path / "tokenizer_config.json").write_text('{"note": "extra file that must be copied"}')
    return path


# ----------------------------------------------------------------------------- scaling


def test_scaling_matches_peft_layers(pattern_adapter, tiny_base):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    adapter = load_adapter(pattern_adapter)
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), pattern_adapter)
    layers = {
        n.removeprefix("base_model.model."): mod for n, mod in pm.named_modules() if isinstance(mod, LoraLayer)
    }
    assert set(layers) == set(adapter.modules) and len(layers) == 14
    for name, layer in layers.items():
        m = adapter.modules[name]
        assert m.r == layer.r["default"], name
        assert m.alpha == layer.lora_alpha["default"], name
        assert m.scaling == layer.scaling["default"], name  # exact, not approximate
    # The patterns really were exercised: full key beats the short key, the short key hits the other layer.
    assert adapter.modules[O_PROJ_1].r == 8 and adapter.modules["model.layers.0.self_attn.o_proj"].r == 2
    assert adapter.modules[DOWN_0].alpha == 32 and adapter.modules["model.layers.1.mlp.down_proj"].alpha == 8
    assert adapter.modules["model.layers.1.mlp.up_proj"].alpha == 3
    assert adapter.modules["model.layers.0.mlp.up_proj"].alpha == 8
    assert len({m.scaling for m in adapter.modules.values()}) >= 4


def test_lora_scaling_formulas_and_reference_fallback_keys():
    assert lora_scaling({"r": 16, "lora_alpha": 32}, "x.o_proj") == (16, 32.0, 2.0)
    assert lora_scaling({"r": 16, "lora_alpha": 32, "use_rslora": True}, "x.o_proj") == (16, 32.0, 8.0)
    assert lora_scaling({"rank": 8, "alpha": 4}, "x.o_proj") == (8, 4.0, 0.5)
    cfg = {"r": 8, "lora_alpha": 16, "rank_pattern": {"o_proj": 4}, "alpha_pattern": None}
    assert lora_scaling(cfg, "model.layers.3.self_attn.o_proj") == (4, 16.0, 4.0)
    assert lora_scaling(cfg, "model.layers.3.self_attn.q_proj") == (8, 16.0, 2.0)
    # PEFT matches a dotted suffix, not a substring: "proj" does not match "o_proj".
    assert lora_scaling({"r": 8, "lora_alpha": 8, "rank_pattern": {"proj": 2}}, "m.o_proj")[0] == 8


@pytest.mark.parametrize(
    "cfg,field",
    [
        ({"lora_alpha": 8}, "r"),
        ({"r": 4}, "lora_alpha"),
        ({"r": 0, "lora_alpha": 8}, "r"),
        ({"r": 4.0, "lora_alpha": 8}, "r"),
        ({"r": 4, "lora_alpha": 8, "rank_pattern": {"o_proj": 0}}, "rank_pattern['o_proj']"),
        ({"r": 4, "lora_alpha": "8"}, "lora_alpha"),
        ({"r": 4, "lora_alpha": 8, "rank_pattern": ["o_proj"]}, "rank_pattern"),
    ],
)
def test_lora_scaling_rejects_bad_config(cfg, field):
    with pytest.raises(AdapterError) as e:
        lora_scaling(cfg, "model.layers.0.self_attn.o_proj", path=Path("/x/adapter_config.json"))
    assert_error(e, "adapter_config.json", field)


# ----------------------------------------------------------------------------- loading


def test_load_module_table(tiny_adapter):
    a = load_adapter(str(tiny_adapter))
    assert a.weights_file == tiny_adapter / "adapter_model.safetensors"
    assert len(a.modules) == 14 and len(a.tensors) == 28
    m = a.modules[O_PROJ_1]
    assert m.key_A == "base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight"
    assert m.key_B == "base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight"
    assert (m.r, m.alpha, m.scaling, m.layer_index) == (4, 8.0, 2.0, 1)
    assert a.tensors[m.key_A].shape == (4, 32) and a.tensors[m.key_B].shape == (32, 4)
    assert a.metadata == {"format": "pt"}


def test_keys_with_adapter_name(tiny_adapter, tmp_path):
    p = copy_adapter(tiny_adapter, tmp_path / "named")

    def rename(t):
        for k in list(t):
            t[k.replace(".weight", ".default.weight")] = t.pop(k)

    edit_tensors(p, rename)
    a, ref = load_adapter(p), load_adapter(tiny_adapter)
    assert set(a.modules) == set(ref.modules)
    m = a.modules[O_PROJ_1]
    assert m.key_A.endswith(".lora_A.default.weight") and m.scaling == ref.modules[O_PROJ_1].scaling
    assert torch.equal(a.tensors[m.key_B], ref.tensors[ref.modules[O_PROJ_1].key_B])


def test_select_modules(tiny_adapter):
    a = load_adapter(tiny_adapter)
    names = [m.name for m in select_modules(a, TargetConfig())]
    assert names == [
        "model.layers.0.mlp.down_proj",
        "model.layers.0.self_attn.o_proj",
        "model.layers.1.mlp.down_proj",
        "model.layers.1.self_attn.o_proj",
    ]
    only = select_modules(a, TargetConfig(target_modules="q_proj", layer_min=1))
    assert [m.name for m in only] == ["model.layers.1.self_attn.q_proj"]
    with pytest.raises(AdapterError) as e:
        select_modules(a, TargetConfig(target_modules="lm_head"))
    assert_error(e, "adapter_config.json", "target_modules")


def test_pickle_refused_unless_allowed(tiny_adapter, tmp_path):
    p = copy_adapter(tiny_adapter, tmp_path / "pkl")
    st = p / "adapter_model.safetensors"
    torch.save(load_file(st), p / "adapter_model.bin")
    st.unlink()
    with pytest.raises(AdapterError) as e:
        load_adapter(p)
    assert_error(e, "adapter_model.bin", "allow_pickle")
    a, ref = load_adapter(p, allow_pickle=True), load_adapter(tiny_adapter)
    assert a.weights_file.name == "adapter_model.bin" and set(a.tensors) == set(ref.tensors)
    assert all(torch.equal(a.tensors[k], ref.tensors[k]) for k in ref.tensors)
    out = write_adapter(a, {}, tmp_path / "out", MANIFEST)  # written back in its own format
    assert (out / "adapter_model.bin").is_file() and not (out / "adapter_model.safetensors").exists()
    assert load_adapter(out, allow_pickle=True).tensors.keys() == a.tensors.keys()


def _mutations(a):
    """name -> (mutate(path), file that must be named, field that must be named)."""
    m = a.modules[O_PROJ_1]
    ka, kb = m.key_A, m.key_B
    cfgf, wf = "adapter_config.json", "adapter_model.safetensors"

    def tensors(fn):
        return lambda p: edit_tensors(p, fn)

    def truncate(p):
        f = p / wf
        f.write_bytes(f.read_bytes()[:-100])

    def put(key, value):
        return lambda t: t.__setitem__(key, value)

    return {
        "missing_config": (lambda p: (p / cfgf).unlink(), cfgf, cfgf),
        "invalid_json": (lambda p: (p / cfgf).write_text('{"r": 4,'), cfgf, "<json>"),
        "config_not_object": (lambda p: (p / cfgf).write_text("[1, 2]"), cfgf, "<json>"),
        "use_dora": (lambda p: edit_config(p, use_dora=True), cfgf, "use_dora"),
        "peft_type": (lambda p: edit_config(p, peft_type="IA3"), cfgf, "peft_type"),
        "rank_zero": (lambda p: edit_config(p, r=0), cfgf, "r"),
        "no_rank": (lambda p: edit_config(p, r=None), cfgf, "r"),
        "no_weights": (lambda p: (p / wf).unlink(), wf, wf),
        "truncated": (truncate, wf, "<safetensors>"),
        "garbage": (lambda p: (p / wf).write_bytes(os.urandom(64)), wf, "<safetensors>"),
        "empty_file": (lambda p: (p / wf).write_bytes(b""), wf, "<safetensors>"),
        "dora_magnitude": (
            tensors(put(ka.replace("lora_A.weight", "lora_magnitude_vector"), torch.ones(32))),
            wf,
            ka.replace("lora_A.weight", "lora_magnitude_vector"),
        ),
        "missing_B": (tensors(lambda t: t.pop(kb)), wf, ka),
        "missing_A": (tensors(lambda t: t.pop(ka)), wf, kb),
        "A_rank_differs": (tensors(put(ka, torch.ones(3, 32))), wf, ka),
        "B_rank_differs": (tensors(put(kb, torch.ones(32, 5))), wf, kb),
        "A_not_2d": (tensors(put(ka, torch.ones(4, 32, 1))), wf, ka),
        "nan": (tensors(lambda t: t[kb].__setitem__((0, 0), float("nan"))), wf, kb),
        "inf": (tensors(lambda t: t[ka].__setitem__((1, 2), float("-inf"))), wf, ka),
        "no_lora_keys": (tensors(lambda t: [t.pop(k) for k in list(t) if "lora_" in k]), wf, "lora_A"),
    }


def test_every_bad_input_is_refused_with_file_and_field(tiny_adapter, tmp_path):
    cases = _mutations(load_adapter(tiny_adapter))
    for name, (mutate, file_name, field) in cases.items():
        p = copy_adapter(tiny_adapter, tmp_path / name)
        mutate(p)
        with pytest.raises(AdapterError) as e:
            load_adapter(p)
        assert e.value.field == field, (name, str(e.value))
        assert e.value.path.name == file_name, (name, str(e.value))
        assert file_name in str(e.value) and field in str(e.value), name


def test_missing_directory(tmp_path):
    with pytest.raises(AdapterError) as e:
        load_adapter(tmp_path / "nope")
    assert_error(e, "nope", "path")
    assert "does not exist" in str(e.value)
    assert isinstance(e.value, ValueError)


# ----------------------------------------------------------------------------- base compatibility


def test_check_base_compat(tiny_adapter, tmp_path, base_model):
    a = load_adapter(tiny_adapter)
    check_base_compat(a, base_model)

    moved = copy_adapter(tiny_adapter, tmp_path / "moved")
    edit_tensors(moved, lambda t: [t.__setitem__(k.replace("layers.1.", "layers.5."), t.pop(k)) for k in list(t)])
    with pytest.raises(AdapterError) as e:
        check_base_compat(load_adapter(moved), base_model)
    assert_error(e, "adapter_model.safetensors", "base_model.model.model.layers.5.mlp.down_proj.lora_A.weight")
    assert "does not exist in the base model" in str(e.value)

    # A and B agree with each other and with r, but d_in does not fit the base layer.
    wide = copy_adapter(tiny_adapter, tmp_path / "wide")
    key = a.modules[O_PROJ_1].key_A
    edit_tensors(wide, lambda t: t.__setitem__(key, torch.ones(4, 48)))
    bad = load_adapter(wide)
    with pytest.raises(AdapterError) as e:
        check_base_compat(bad, base_model)
    assert_error(e, "adapter_model.safetensors", key)
    assert "in_features 32" in str(e.value)

    tall = copy_adapter(tiny_adapter, tmp_path / "tall")
    key_b = a.modules[DOWN_0].key_B
    edit_tensors(tall, lambda t: t.__setitem__(key_b, torch.ones(64, 4)))
    with pytest.raises(AdapterError) as e:
        check_base_compat(load_adapter(tall), base_model)
    assert_error(e, "adapter_model.safetensors", key_b)


def test_check_base_compat_accepts_peft_model(tiny_adapter, tiny_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), tiny_adapter)
    check_base_compat(load_adapter(tiny_adapter), pm)


# ----------------------------------------------------------------------------- hashing and versions


def test_sha256_stable_across_copies_and_content_sensitive(tiny_adapter, tmp_path):
    a = load_adapter(tiny_adapter)
    cp = copy_adapter(tiny_adapter, tmp_path / "elsewhere" / "copy")
    (cp / "README.md").write_text("a different readme does not change the adapter's content hash")
    assert load_adapter(cp).sha256 == a.sha256
    # adapter.sha256 is sha256_path of a directory holding just the config and the weights.
    only = tmp_path / "only"
    only.mkdir()
    for n in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copyfile(tiny_adapter / n, only / n)
    assert sha256_path(only) == a.sha256
    edit_config(cp, lora_alpha=9)
    assert load_adapter(cp).sha256 != a.sha256


def test_sha256_path_file_and_directory(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"x" * (3 << 20) + b"tail")  # more than one 1 MiB chunk
    assert sha256_path(f) == hashlib.sha256(f.read_bytes()).hexdigest()
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("one")
    (d / "sub" / "b.txt").write_text("two")
    h = sha256_path(d)
    assert sha256_path(shutil.copytree(d, tmp_path / "e")) == h
    (d / "sub" / "b.txt").rename(d / "sub" / "c.txt")
    assert sha256_path(d) != h
    (d / "sub" / "c.txt").rename(d / "sub" / "b.txt")
    (d / "a.txt").write_text("onf")
    assert sha256_path(d) != h
    with pytest.raises(FileNotFoundError):
        sha256_path(tmp_path / "missing")


def test_package_versions():
    import peft
    import safetensors
    import transformers

    v = package_versions()
    assert v["torch"] == torch.__version__
    assert v["transformers"] == transformers.__version__ and v["peft"] == peft.__version__
    assert v["safetensors"] == safetensors.__version__
    assert v["spectral-surgery"] not in ("", "unknown")


# ----------------------------------------------------------------------------- writing


def test_roundtrip_without_replacements_is_byte_identical(tiny_adapter, tmp_path):
    a = load_adapter(tiny_adapter)
    out = write_adapter(a, {}, tmp_path / "out", MANIFEST)
    assert out == tmp_path / "out"
    raw_in, meta_in = raw_tensors(a.weights_file)
    raw_out, meta_out = raw_tensors(out / "adapter_model.safetensors")
    assert raw_out == raw_in and meta_out == meta_in == {"format": "pt"}
    for n in ("adapter_config.json", "README.md"):
        assert (out / n).read_bytes() == (tiny_adapter / n).read_bytes()
    assert (out / "edit_manifest.json").read_text() == json.dumps(MANIFEST, indent=2, sort_keys=True) + "\n"
    assert load_adapter(out).sha256 == a.sha256
    assert leftovers(tmp_path) == []


def test_roundtrip_with_replacements_loads_in_peft(half_adapter, tiny_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    a = load_adapter(half_adapter)
    dtype = next(iter(a.tensors.values())).dtype
    edited = select_modules(a, TargetConfig())
    g = torch.Generator().manual_seed(3)
    replaced = {}
    for m in edited:  # fp32 replacements: write_adapter must cast them to the stored dtype
        replaced[m.key_A] = torch.randn(a.tensors[m.key_A].shape, generator=g)
        replaced[m.key_B] = torch.randn(a.tensors[m.key_B].shape, generator=g)
    out = write_adapter(a, replaced, tmp_path / "edited", MANIFEST)

    raw_in, meta_in = raw_tensors(a.weights_file)
    raw_out, meta_out = raw_tensors(out / "adapter_model.safetensors")
    assert raw_out.keys() == raw_in.keys() and meta_out == meta_in
    for k, (dt, shape, data) in raw_out.items():
        assert (dt, shape) == raw_in[k][:2], k
        if k in replaced:
            assert data != raw_in[k][2], k
        else:
            assert data == raw_in[k][2], k  # untouched tensors are bit-identical
    assert (out / "adapter_config.json").read_bytes() == (half_adapter / "adapter_config.json").read_bytes()
    assert (out / "tokenizer_config.json").read_bytes() == (half_adapter / "tokenizer_config.json").read_bytes()
    assert json.loads((out / "edit_manifest.json").read_text()) == MANIFEST

    b = load_adapter(out)
    assert all(t.dtype == dtype for t in b.tensors.values())
    for k, t in replaced.items():
        assert torch.equal(b.tensors[k], t.to(dtype))

    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), out)
    params = dict(pm.named_parameters())
    for k, t in b.tensors.items():
        loaded = params[k.replace(".weight", ".default.weight")]
        assert torch.equal(loaded.detach().to(dtype), t), k


def test_write_refuses_bad_replacements(tiny_adapter, tmp_path):
    a = load_adapter(tiny_adapter)
    m = a.modules[O_PROJ_1]
    out = tmp_path / "out"
    bad = {
        "unknown.lora_A.weight": ({"unknown.lora_A.weight": torch.zeros(4, 32)}, "unknown.lora_A.weight"),
        "shape": ({m.key_A: torch.zeros(4, 31)}, m.key_A),
        "transposed": ({m.key_B: torch.zeros(4, 32)}, m.key_B),
        "nan": ({m.key_B: torch.full((32, 4), float("nan"))}, m.key_B),
        "overflow": ({m.key_A: torch.full((4, 32), 1e39, dtype=torch.float64)}, m.key_A),
    }
    for name, (repl, field) in bad.items():
        with pytest.raises(AdapterError) as e:
            write_adapter(a, repl, out, MANIFEST)
        assert e.value.field == field and field in str(e.value) and "out" in str(e.value), name
    with pytest.raises(AdapterError) as e:
        write_adapter(a, {}, out, {"x": object()})
    assert_error(e, "edit_manifest.json", "manifest")
    assert not out.exists() and leftovers(tmp_path) == []


def test_existing_out_dir_is_replaced(tiny_adapter, tmp_path):
    a = load_adapter(tiny_adapter)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    m = a.modules[O_PROJ_1]
    write_adapter(a, {m.key_A: torch.zeros(4, 32)}, out, {"run": 2})
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "edit_manifest.json").read_text()) == {"run": 2}
    assert torch.count_nonzero(load_adapter(out).tensors[m.key_A]) == 0
    assert leftovers(tmp_path) == []


def test_write_in_place(tiny_adapter, tmp_path):
    p = copy_adapter(tiny_adapter, tmp_path / "inplace")
    a = load_adapter(p)
    m = a.modules[DOWN_0]
    new = torch.ones(a.tensors[m.key_B].shape)
    write_adapter(a, {m.key_B: new}, p, MANIFEST)
    b = load_adapter(p)
    assert torch.equal(b.tensors[m.key_B], new) and (p / "README.md").is_file()
    assert leftovers(tmp_path) == []


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "replace"])
def test_crash_while_writing_leaves_out_dir_untouched(tiny_adapter, tmp_path, monkeypatch, existing):
    a = load_adapter(tiny_adapter)
    out = tmp_path / "out"
    if existing:
        write_adapter(a, {}, out, {"run": 1})
    before = _snapshot(out) if existing else None

    def crash(tensors, metadata, dest):
        dest.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(adapter_io, "_write_weights", crash)
    m = a.modules[O_PROJ_1]
    with pytest.raises(OSError, match="disk full"):
        write_adapter(a, {m.key_A: torch.zeros(4, 32)}, out, {"run": 2})
    assert (_snapshot(out) if out.exists() else None) == before
    assert leftovers(tmp_path) == []


def test_crash_during_swap_restores_old_out_dir(tiny_adapter, tmp_path, monkeypatch):
    a = load_adapter(tiny_adapter)
    out = tmp_path / "out"
    write_adapter(a, {}, out, {"run": 1})
    before = _snapshot(out)
    real_replace = os.replace
    calls = []

    def flaky(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # old moved aside, then the new one fails to move in
            raise OSError("simulated crash while renaming the new adapter in")
        return real_replace(src, dst)

    monkeypatch.setattr(adapter_io.os, "replace", flaky)
    with pytest.raises(OSError, match="simulated crash"):
        write_adapter(a, {a.modules[O_PROJ_1].key_A: torch.zeros(4, 32)}, out, {"run": 2})
    assert calls[0][0] == "out" and ".tmp-" in calls[1][0]
    assert _snapshot(out) == before
    assert leftovers(tmp_path) == []
