"""spectral_surgery.tasks.demo.demo_fleet: LoRA training on the tiny model, and the cached demo fleet (never the real
model here)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from spectral_surgery.tasks.demo import demo_fleet as df
from tests import tiny

STEPS = 20
# The tiny random model's lm_head is near zero (init std 0.02) and LoRA cannot touch it, so its loss can only
# fall a little below ln(vocab); a high lr gets there within the 20 steps.
LR = 1e-2
# The tiny tokenizer is character-level, so the real specs' token budgets are far too short for it.
TINY_MAX_LEN = 320


def tiny_fleet() -> tuple[df.DemoAdapterSpec, ...]:
    return tuple(dataclasses.replace(s, max_len=TINY_MAX_LEN) for s in df.DEMO_FLEET)


def test_demo_fleet_spec_matches_the_brief():
    names = {s.name: s for s in df.DEMO_FLEET}
    assert {"math", "commonsense", "instruction"} <= set(names)
    assert {s.task_family for s in df.DEMO_FLEET} <= {"math", "code", "instruction", "commonsense"}
    assert len(df.TARGETS) == 7
    # First training of the whole fleet stays around 10 min on 2 cores (~4.4 s per batch-8 x 64-token step).
    assert sum(s.steps * max(1.0, s.max_len / 64) for s in df.DEMO_FLEET if s.scaled_from is None) * 4.4 < 700
    # The over-scaled adapter is the commonsense one written with 3x its alpha, edited in every module it adapts.
    x3 = names["commonsense-x3"]
    assert (x3.scaled_from, x3.alpha_scale, x3.task_family) == ("commonsense", 3.0, "commonsense")
    assert x3.overrides == {"surgery": {"targets": {"target_modules": list(df.TARGETS)}}}
    assert all(s.about for s in df.DEMO_FLEET)
    # The REJECT path: the math job saved at initialisation, never trained.
    untrained = names["math-untrained"]
    assert untrained.untrained and untrained.task_family == "math" and untrained.scaled_from is None


def test_fleet_specs_adds_the_source_of_an_over_scaled_adapter_in_fleet_order():
    names = [s.name for s in df.DEMO_FLEET]
    assert [s.name for s in df.fleet_specs()] == names
    assert [s.name for s in df.fleet_specs(["math"])] == ["math"]
    # commonsense-x3 is written from commonsense's weights: asking for it alone builds both, in fleet order
    assert [s.name for s in df.fleet_specs(["commonsense-x3", "math-untrained"])] == [
        n for n in names if n in {"commonsense", "commonsense-x3", "math-untrained"}]
    with pytest.raises(ValueError, match=r"unknown demo adapter\(s\) \['maths'\]; the demo fleet is"):
        df.fleet_specs(["maths", "math"])


def test_untrained_adapter_is_the_initialisation_and_changes_nothing(tiny_base, tmp_path):
    """lora_B is zero in every module (PEFT's init), the door warns about it, and the adapted model's logits are
    the base model's exactly: the "adapter is applied" canary can only fail on it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from spectral_surgery.tasks.register_checks import inert_adapter

    spec = next(s for s in tiny_fleet() if s.name == "math-untrained")
    (entry,) = df.build_demo_fleet(tiny_base, tmp_path, steps=2, n_train=8, n_calib=6, fleet=(spec,))
    tensors = load_file(entry["path"] / "adapter_model.safetensors")
    b = [v for k, v in tensors.items() if "lora_B" in k]
    assert b and all(not v.any() for v in b) and any(v.any() for k, v in tensors.items() if "lora_A" in k)
    assert entry["losses"] == [] and inert_adapter(str(entry["path"])) is not None
    base = AutoModelForCausalLM.from_pretrained(tiny_base)
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        plain = base(ids).logits
        adapted = PeftModel.from_pretrained(base, entry["path"]).eval()(ids).logits
    assert torch.equal(plain, adapted)


def test_encode_row_masks_the_prompt_and_appends_eos():
    tok = tiny.make_tokenizer()
    ids, labels = df.encode_row(tok, "Q: 2+2?\nA:", "4", max_len=64)
    text = tok.decode(ids)
    assert text == "Q: 2+2?\nA: 4</s>"
    n_prompt = len("Q: 2+2?\nA:")
    assert labels[:n_prompt] == [-100] * n_prompt and labels[n_prompt:] == ids[n_prompt:]
    assert tok.decode(labels[n_prompt:]) == " 4</s>"
    ids2, _ = df.encode_row(tok, "Q:\n", "4", max_len=64)  # prompt ends in whitespace: no extra space
    assert tok.decode(ids2) == "Q:\n4</s>"
    ids3, labels3 = df.encode_row(tok, "Q: 2+2?\nA:", "4", max_len=5)
    assert len(ids3) == len(labels3) == 5 and set(labels3) == {-100}


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    f = [df.lr_factor(s, 40) for s in range(40)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(f[3:], f[4:]))
    assert f[-1] == pytest.approx(df.MIN_LR_RATIO, abs=2e-3)


@pytest.fixture(scope="module")
def trained(tiny_base, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "adapter"
    seen = []
    df.train_lora(tiny_base, tiny.calib_rows(16), out, steps=STEPS, lr=LR, batch_size=4, max_len=128, r=4, alpha=8,
                  on_step=lambda i, n, loss: seen.append((i, n, loss)))  # fmt: skip
    return out, seen


def test_train_lora_lowers_the_loss(trained):
    out, seen = trained
    assert [(i, n) for i, n, _ in seen] == [(i, STEPS) for i in range(1, STEPS + 1)]
    losses = [loss for _, _, loss in seen]
    assert sum(losses[-5:]) / 5 < sum(losses[:3]) / 3 - 0.1, losses
    log = json.loads((out / df.TRAIN_LOG).read_text())
    assert log["losses"] == losses and log["r"] == 4 and log["rows_used"] == 16


def test_trained_adapter_loads_with_peft_and_changes_the_model(trained, tiny_base):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = trained
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert sorted(cfg["target_modules"]) == sorted(df.TARGETS) and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    weights = load_file(out / "adapter_model.safetensors")
    assert len(weights) == 2 * 2 * 7  # layers x (A, B) x modules
    assert all(torch.isfinite(w).all() for w in weights.values())
    base = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        before = base(ids).logits.clone()
        after = PeftModel.from_pretrained(base, out).eval()(ids).logits
    assert not torch.allclose(before, after, atol=1e-4)


def test_trained_adapter_fits_its_rows_better_than_the_base(trained, tiny_base):
    """Evaluation loss (no dropout) on the training rows' answer tokens drops with the adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out, _ = trained
    tok = tiny.make_tokenizer()
    batch = df._collate([df.encode_row(tok, r["prompt"], r["answer"], 128) for r in tiny.calib_rows(16)], 0)
    base = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    with torch.no_grad():
        before = base(**batch).loss.item()
        after = PeftModel.from_pretrained(base, out).eval()(**batch).loss.item()
    assert after < before - 0.1, (before, after)
    assert not list(out.parent.glob(".*tmp-*"))  # the atomic write left no temporary directory


def test_train_lora_is_deterministic_and_leaves_the_global_rng_alone(trained, tiny_base, tmp_path):
    out, _ = trained
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    again = df.train_lora(tiny_base, tiny.calib_rows(16), tmp_path / "again", steps=STEPS, lr=LR, batch_size=4,
                          max_len=128, r=4, alpha=8)  # fmt: skip
    assert torch.equal(torch.random.get_rng_state(), state)
    a, b = load_file(out / "adapter_model.safetensors"), load_file(again / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_lora_rejects_bad_input(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="no training rows"):
        df.train_lora(tiny_base, [], tmp_path / "x", steps=1, lr=1e-3)
    with pytest.raises(ValueError, match="row 1 needs a string field 'answer'"):
        df.train_lora(tiny_base, [{"prompt": "a", "answer": "b"}, {"prompt": "a"}], tmp_path / "x", steps=1, lr=1e-3)
    with pytest.raises(ValueError, match="raise max_len"):
        df.train_lora(tiny_base, tiny.calib_rows(2), tmp_path / "x", steps=1, lr=1e-3, max_len=8)
    assert not (tmp_path / "x").exists()


def test_build_demo_fleet_trains_once_then_reuses_and_retrains_on_change(tiny_base, tmp_path, monkeypatch):
    fleet = tiny_fleet()
    progress: list[str] = []
    first = df.build_demo_fleet(tiny_base, tmp_path, steps=2, n_train=8, n_calib=6, fleet=fleet,
                                on_progress=progress.append)  # fmt: skip
    assert [e["name"] for e in first] == [s.name for s in fleet] and not any(e["reused"] for e in first)
    assert any("step 2/2" in line for line in progress)
    for e, spec in zip(first, fleet):
        assert e["path"].parent.name == f"{spec.name}-{e['key'][:12]}" and e["task_family"] == spec.task_family
        assert (e["path"] / "adapter_model.safetensors").is_file()
        assert len(e["losses"]) == (0 if spec.untrained else 2)  # the untrained one ignores the steps override
        calib = [json.loads(line) for line in e["calib_path"].read_text().splitlines()]
        assert len(calib) == 6 and all(set(r) == {"prompt", "answer"} for r in calib)
        # Held out: the same generator with the calibration seed, minus any prompt it shares with training.
        train_prompts = {r["prompt"] for r in spec.make_rows(8, df.TRAIN_SEED)}
        assert not {r["prompt"] for r in calib} & train_prompts
        assert all(r in spec.make_rows(24, df.CALIB_SEED) for r in calib)

    calls = []
    real_train = df.train_lora
    monkeypatch.setattr(df, "train_lora", lambda *a, **k: calls.append(a) or real_train(*a, **k))
    second = df.build_demo_fleet(tiny_base, tmp_path, steps=2, n_train=8, n_calib=6, fleet=fleet)
    assert all(e["reused"] for e in second) and not calls
    assert [(e["path"], e["key"]) for e in second] == [(e["path"], e["key"]) for e in first]

    changed = (dataclasses.replace(fleet[0], lr=fleet[0].lr * 2), *fleet[1:])
    third = df.build_demo_fleet(tiny_base, tmp_path, steps=2, n_train=8, n_calib=6, fleet=changed)
    assert [e["reused"] for e in third] == [False] + [True] * (len(fleet) - 1) and len(calls) == 1
    assert third[0]["path"] != first[0]["path"] and first[0]["path"].is_dir()

    fourth = df.build_demo_fleet(tiny_base, tmp_path, steps=3, n_train=8, n_calib=6, fleet=fleet[:1])
    assert not fourth[0]["reused"] and len(fourth[0]["losses"]) == 3


def test_scaled_adapter_is_its_source_with_alpha_times_the_scale(tiny_base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    fleet = tiny_fleet()
    src_spec = next(s for s in fleet if s.name == "commonsense")
    x3_spec = next(s for s in fleet if s.name == "commonsense-x3")
    src, x3 = df.build_demo_fleet(tiny_base, tmp_path, steps=2, n_train=8, n_calib=6, fleet=(src_spec, x3_spec))
    assert not x3["reused"] and x3["losses"] == src["losses"] and x3["overrides"] == x3_spec.overrides
    assert x3["calib_path"].read_bytes() == src["calib_path"].read_bytes()
    assert (x3["path"] / "adapter_model.safetensors").read_bytes() == (
        src["path"] / "adapter_model.safetensors"
    ).read_bytes()
    cfg_src = json.loads((src["path"] / "adapter_config.json").read_text())
    cfg_x3 = json.loads((x3["path"] / "adapter_config.json").read_text())
    assert cfg_x3["lora_alpha"] == 3 * cfg_src["lora_alpha"] and isinstance(cfg_x3["lora_alpha"], int)
    assert {k: v for k, v in cfg_x3.items() if k != "lora_alpha"} == {k: v for k,
                                                                      v in cfg_src.items() if k != "lora_alpha"}

    # PEFT applies it as three times the source's update in every adapted module.
    def delta(path):
        m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), path)
        return {n: mod.get_delta_weight("default") for n, mod in m.named_modules() if hasattr(mod, "get_delta_weight")
                and "default" in getattr(mod, "lora_A", {})}
    d_src, d_x3 = delta(src["path"]), delta(x3["path"])
    assert d_src.keys() == d_x3.keys() and len(d_src) > 0
    assert any(d.abs().max() > 0 for d in d_src.values())
    for n in d_src:
        torch.testing.assert_close(d_x3[n], 3 * d_src[n])

    # Cached by key: reused as is; a retrained source gives a new over-scaled adapter.
    _, again = df.build_demo_fleet(tiny_base, tmp_path, steps=2, n_train=8, n_calib=6, fleet=(src_spec, x3_spec))
    assert again["reused"] and again["path"] == x3["path"]
    _, moved = df.build_demo_fleet(tiny_base, tmp_path, steps=3, n_train=8, n_calib=6, fleet=(src_spec, x3_spec))
    assert not moved["reused"] and moved["path"] != x3["path"] and len(moved["losses"]) == 3


def test_scaled_adapter_needs_its_source_first(tiny_base, tmp_path):
    x3_spec = next(s for s in tiny_fleet() if s.name == "commonsense-x3")
    with pytest.raises(ValueError, match="scaled_from='commonsense' must name an adapter listed before it"):
        df.build_demo_fleet(tiny_base, tmp_path, steps=1, n_train=4, n_calib=2, fleet=(x3_spec,))
    bad = dataclasses.replace(x3_spec, alpha_scale=0.0)
    src_spec = next(s for s in tiny_fleet() if s.name == "commonsense")
    with pytest.raises(ValueError, match="alpha_scale must be a positive number"):
        df.build_demo_fleet(tiny_base, tmp_path, steps=1, n_train=4, n_calib=2, fleet=(src_spec, bad))


def test_build_demo_fleet_redoes_an_incomplete_entry(tiny_base, tmp_path):
    fleet = tiny_fleet()[:1]
    (entry,) = df.build_demo_fleet(tiny_base, tmp_path, steps=1, n_train=4, n_calib=2, fleet=fleet)
    (entry["path"].parent / df.MARKER).unlink()  # e.g. killed before the marker was written
    (again,) = df.build_demo_fleet(tiny_base, tmp_path, steps=1, n_train=4, n_calib=2, fleet=fleet)
    assert not again["reused"] and (again["path"].parent / df.MARKER).is_file()


def test_held_out_rows_skip_training_prompts():
    for spec in df.DEMO_FLEET:
        train = spec.make_rows(320, df.TRAIN_SEED)
        calib = df.held_out_rows(spec.make_rows, df.N_CALIB, train)
        assert len(calib) == df.N_CALIB and not {r["prompt"] for r in calib} & {r["prompt"] for r in train}
    with pytest.raises(ValueError, match="differ from the training rows"):
        df.held_out_rows(lambda n, seed: [{"prompt": "same", "answer": "x"}] * n, 4,
                         [{"prompt": "same", "answer": "x"}])


def test_base_fingerprint_follows_content(tiny_base, tmp_path):
    copy = tiny.save_base(tmp_path / "copy")
    assert df.base_fingerprint(copy) == df.base_fingerprint(tiny_base)
    other = tiny.save_base(tmp_path / "other", seed=1)
    assert df.base_fingerprint(other) != df.base_fingerprint(tiny_base)
