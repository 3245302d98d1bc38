"""Per-example sensitivities ∂L_i/∂σ through hooks (tasks/surgery/calibration.py, METHOD §4).

The reference values come from autograd on a copy of the model in which every LoRA delta is rewritten as an
explicit ``s · U diag(σ) Vᵀ`` path with σ an ``nn.Parameter``; nothing is shared with the hook code except
the batch builder.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spectral_surgery.tasks.surgery.calibration import (
    IGNORE_INDEX,
    CalibExample,
    Sensitivity,
    aggregate,
    build_batch,
    collect_sensitivities,
    load_calibration,
    resolve_lora_layer,
)
from spectral_surgery.tasks.config import CalibConfig

REL_TOL = 1e-4
PREFIX = "base_model.model."


class _Spec:
    """A spectrum-like object (only .U, .S, .V), built here without tasks.surgery.decompose."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor) -> None:
        qb, rb = torch.linalg.qr(B.double())
        qa, ra = torch.linalg.qr(A.double().T)
        um, s, vmt = torch.linalg.svd(rb @ ra.T)
        self.U, self.S, self.V = (qb @ um).float(), s.float(), (qa @ vmt.T).float()


@pytest.fixture(scope="module")
def setup(tiny_base, tiny_adapter, calib_file):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base)
    pm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_base), tiny_adapter, is_trainable=True)
    spectra, scalings = {}, {}
    for name, mod in pm.named_modules():
        if hasattr(mod, "lora_A") and "default" in mod.lora_A:
            key = name.removeprefix(PREFIX)
            spectra[key] = _Spec(mod.lora_A["default"].weight.detach(), mod.lora_B["default"].weight.detach())
            scalings[key] = float(mod.scaling["default"])
    assert len(spectra) == 14  # 2 layers × 7 projections
    # Different lengths (so batches are padded), an empty prompt and a one-character answer.
    examples = load_calibration(calib_file, CalibConfig(n_samples=8)) + [
        CalibExample("Question: 1?\nAnswer:", "1"),
        CalibExample("", "just an answer"),
    ]
    return pm, tok, spectra, scalings, examples


def _cfg(**kw) -> CalibConfig:
    return CalibConfig(**{"n_samples": 10, "batch_size": 8, **kw})


def _peft_forward(pm, names) -> None:
    """Undo the explicit-σ rewrite: drop the instance-level forward so PEFT's own forward runs again."""
    for name in names:
        pm.get_submodule(PREFIX + name).__dict__.pop("forward", None)


@pytest.fixture
def explicit_sigma(setup):
    """Rewrite every LoRA layer as base(x) + s · ((x V) ⊙ σ) Uᵀ with σ a leaf parameter; freeze the rest."""
    pm, _, spectra, scalings, _ = setup
    sigmas = {}
    for name, sp in spectra.items():
        layer = pm.get_submodule(PREFIX + name)
        sigma = nn.Parameter(sp.S.clone())

        def fwd(x, *args, _l=layer, _sp=sp, _s=scalings[name], _sig=sigma, **kwargs):
            return _l.base_layer(x) + _s * ((x @ _sp.V) * _sig) @ _sp.U.T

        layer.forward = fwd  # instance attribute: nn.Module.__call__ runs it instead of PEFT's forward
        sigmas[name] = sigma
    flags = {p: p.requires_grad for p in pm.parameters()}
    for p in pm.parameters():
        p.requires_grad_(False)
    pm.eval()
    yield sigmas
    _peft_forward(pm, sigmas)
    for p, f in flags.items():
        p.requires_grad_(f)


def _reference_per_example(pm, tok, examples, sigmas) -> dict[str, torch.Tensor]:
    """∂L_i/∂σ per example by separate backwards through one padded batch (L_i = example i's summed CE)."""
    b = build_batch(tok, examples)
    logits = pm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
    names = list(sigmas)
    rows = {n: [] for n in names}
    for i in range(len(examples)):
        loss_i = F.cross_entropy(logits[i, :-1], b["labels"][i, 1:], ignore_index=IGNORE_INDEX, reduction="sum")
        grads = torch.autograd.grad(loss_i, [sigmas[n] for n in names], retain_graph=True)
        for n, g in zip(names, grads):
            rows[n].append(g)
    return {n: torch.stack(v) for n, v in rows.items()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def test_explicit_sigma_path_reproduces_the_adapter(setup, explicit_sigma):
    pm, tok, _, _, examples = setup
    b = build_batch(tok, examples[:3])
    with torch.no_grad():
        explicit = pm(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    _peft_forward(pm, explicit_sigma)
    with torch.no_grad():
        peft_logits = pm(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    torch.testing.assert_close(explicit, peft_logits, atol=1e-5, rtol=1e-5)


def test_hooks_match_autograd_per_example(setup, explicit_sigma):
    pm, tok, spectra, scalings, examples = setup
    ref = _reference_per_example(pm, tok, examples, explicit_sigma)
    _peft_forward(pm, explicit_sigma)
    sens = collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg())
    assert set(sens) == set(spectra)
    for name, s in sens.items():
        assert isinstance(s, Sensitivity)
        assert s.per_example.shape == (len(examples), 4) and s.per_example.dtype == torch.float32
        assert _rel(s.per_example, ref[name]) < REL_TOL, name
    b = build_batch(tok, examples)
    expected_tokens = (b["labels"][:, 1:] != IGNORE_INDEX).sum(1)
    assert torch.equal(next(iter(sens.values())).n_tokens, expected_tokens)


def test_aggregates_match_reference_loop_and_definition(setup, explicit_sigma):
    pm, tok, spectra, scalings, examples = setup
    # The reference: mini-batches of 2, HF mean token CE (labels=...), gradients summed over batches.
    summed = {n: torch.zeros_like(s) for n, s in explicit_sigma.items()}
    for i in range(0, len(examples), 2):
        b = build_batch(tok, examples[i : i + 2])
        out = pm(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"], use_cache=False)
        grads = torch.autograd.grad(out.loss, list(explicit_sigma.values()))
        for n, g in zip(explicit_sigma, grads):
            summed[n] += g
    per_ex = _reference_per_example(pm, tok, examples, explicit_sigma)
    _peft_forward(pm, explicit_sigma)
    b = build_batch(tok, examples)
    t = (b["labels"][:, 1:] != IGNORE_INDEX).sum(1).double()

    abs_sum = collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg(batch_size=4))
    mean_abs = collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg(batch_size=4, aggregation="mean_abs"))
    for name in spectra:
        s = abs_sum[name]
        assert s.aggregation == "abs_of_sum"
        assert _rel(s.signed, summed[name]) < REL_TOL, name
        torch.testing.assert_close(s.magnitude, s.signed.abs())
        h = per_ex[name].double() / t.unsqueeze(1)
        m = mean_abs[name]
        assert m.aggregation == "mean_abs"
        assert _rel(m.signed.double(), h.mean(0)) < REL_TOL, name
        assert _rel(m.magnitude.double(), h.abs().mean(0)) < REL_TOL, name
        agree = (torch.sign(per_ex[name]) == torch.sign(m.signed)).float().mean(0)
        torch.testing.assert_close(m.sign_agreement, agree)


def test_per_example_results_do_not_depend_on_batch_size(setup):
    pm, tok, spectra, scalings, examples = setup
    runs = [collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg(batch_size=bs)) for bs in (1, 3, 8)]
    for name in spectra:
        for other in runs[1:]:
            torch.testing.assert_close(other[name].per_example, runs[0][name].per_example, rtol=1e-5, atol=1e-6)
            assert torch.equal(other[name].n_tokens, runs[0][name].n_tokens)


class _EveryPosition(nn.Module):
    """The model with ``logits_to_keep`` dropped: every position's logits, as the pass computed them before."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args, logits_to_keep=None, **kwargs):
        return self.model(*args, **kwargs)


def test_head_only_at_scored_positions_matches_every_position(setup):
    """The pass runs the output head only where a token is scored (``logits_to_keep``): the per-example values are
    those of the full logits (the pass before; also what a model without ``logits_to_keep`` gets) to 1e-6."""
    pm, tok, spectra, scalings, examples = setup
    for bs in (1, 3, 8):
        fast = collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg(batch_size=bs))
        every = collect_sensitivities(_EveryPosition(pm), tok, examples, spectra, scalings, _cfg(batch_size=bs))
        for name in spectra:
            torch.testing.assert_close(fast[name].per_example, every[name].per_example, rtol=1e-5, atol=1e-6)
            assert torch.equal(fast[name].n_tokens, every[name].n_tokens)


def test_results_do_not_depend_on_which_other_modules_are_hooked(setup):
    # Parameters are frozen and backward starts at the earliest hooked output; hooking only the reference
    # targets (o_proj, down_proj) must give the same per-module values as hooking all seven projections.
    pm, tok, spectra, scalings, examples = setup
    subset = [n for n in spectra if n.endswith(("o_proj", "down_proj"))]
    part = collect_sensitivities(pm, tok, examples, {n: spectra[n] for n in subset}, scalings, _cfg())
    full = collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg())
    assert set(part) == set(subset)
    for name in subset:
        torch.testing.assert_close(part[name].per_example, full[name].per_example, rtol=1e-5, atol=1e-6)


def test_pass_leaves_model_as_it_was_and_reports_progress(setup):
    pm, tok, spectra, scalings, examples = setup
    pm.train()  # dropout (0.05) on: the pass must switch it off, then restore train mode
    flags = {n: p.requires_grad for n, p in pm.named_parameters()}
    assert any(flags.values())
    calls = []
    a = collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg(batch_size=4),
                              on_batch=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert pm.training
    assert {n: p.requires_grad for n, p in pm.named_parameters()} == flags
    assert all(p.grad is None for p in pm.parameters())
    assert not any(m._forward_hooks or m._backward_hooks for m in pm.modules())
    pm.eval()
    b = collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg(batch_size=4))
    assert not pm.training
    for name in spectra:  # identical with or without dropout in the caller's mode: eval was forced
        assert torch.equal(a[name].per_example, b[name].per_example)


def test_hooks_removed_on_error(setup):
    pm, tok, spectra, scalings, examples = setup
    flags = {n: p.requires_grad for n, p in pm.named_parameters()}

    def boom(done, total):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        collect_sensitivities(pm, tok, examples[:2], spectra, scalings, _cfg(), on_batch=boom)
    assert not any(m._forward_hooks for m in pm.modules())
    assert {n: p.requires_grad for n, p in pm.named_parameters()} == flags


def test_module_without_gradient_is_absent(setup, monkeypatch, caplog):
    pm, tok, spectra, scalings, examples = setup
    layer1 = pm.get_submodule(PREFIX + "model.layers.1")
    monkeypatch.setattr(layer1, "forward", lambda hidden_states, *a, **k: hidden_states)  # layer 1 never runs
    with caplog.at_level(logging.WARNING, logger="spectral_surgery.tasks.surgery.calibration"):
        sens = collect_sensitivities(pm, tok, examples[:3], spectra, scalings, _cfg())
    assert set(sens) == {n for n in spectra if ".layers.0." in n}
    assert "model.layers.1.mlp.down_proj" in caplog.text and "never fired" in caplog.text


def test_sequences_longer_than_the_base_are_truncated_with_a_warning(setup, monkeypatch, caplog):
    """An example longer than the base's positions is cut to them (METHOD's max_seq_len), with one warning."""
    pm, tok, spectra, scalings, examples = setup
    monkeypatch.setattr(pm.get_base_model().config, "max_position_embeddings", 16)
    assert max(build_batch(tok, [e])["input_ids"].shape[1] for e in examples) > 16
    with caplog.at_level(logging.WARNING, logger="spectral_surgery.tasks.surgery.calib_data"):
        cut = collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg(batch_size=4))
    warnings = [r for r in caplog.records if "positions" in r.getMessage()]
    assert len(warnings) == 1 and "truncated to 16 tokens" in warnings[0].getMessage()
    assert "calib.max_seq_len" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING,
                         logger="spectral_surgery.tasks.surgery.calib_data"):  # the user's own, shorter limit: silent
        asked = collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg(batch_size=4, max_seq_len=16))
    assert not [r for r in caplog.records if "positions" in r.getMessage()]
    for name in spectra:
        assert torch.equal(cut[name].n_tokens, asked[name].n_tokens)
        torch.testing.assert_close(cut[name].per_example, asked[name].per_example, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(pm.get_base_model().config, "max_position_embeddings", 512)
    full = collect_sensitivities(pm, tok, examples, spectra, scalings, _cfg(batch_size=4))
    assert int(sum(full[n].n_tokens.sum() for n in spectra)) > int(sum(cut[n].n_tokens.sum() for n in spectra))


def test_module_name_resolution(setup):
    pm, tok, spectra, scalings, examples = setup
    name = "model.layers.0.self_attn.o_proj"
    layer = resolve_lora_layer(pm, name)
    assert layer is pm.get_submodule(PREFIX + name)
    assert resolve_lora_layer(pm, "layers.0.self_attn.o_proj") is layer  # suffix fallback (METHOD §11)
    sens = collect_sensitivities(pm, tok, examples[:2], {"layers.0.self_attn.o_proj": spectra[name]},
                                 {"layers.0.self_attn.o_proj": scalings[name]}, _cfg())
    full = collect_sensitivities(pm, tok, examples[:2], {name: spectra[name]}, {name: scalings[name]}, _cfg())
    torch.testing.assert_close(sens["layers.0.self_attn.o_proj"].per_example, full[name].per_example)
    with pytest.raises(KeyError, match="not found"):
        resolve_lora_layer(pm, "model.layers.9.self_attn.o_proj")
    with pytest.raises(KeyError, match="not a PEFT LoRA layer"):
        resolve_lora_layer(pm, "model.layers.0.self_attn")
    with pytest.raises(ValueError, match="no scaling"):
        collect_sensitivities(pm, tok, examples[:2], {name: spectra[name]}, {}, _cfg())
    with pytest.raises(ValueError, match="at least one"):
        collect_sensitivities(pm, tok, [], {name: spectra[name]}, scalings, _cfg())


# ---------------------------------------------------------------- aggregate() on hand-made numbers

def test_aggregate_abs_of_sum_by_hand():
    g = torch.tensor([[1.0, -2.0], [3.0, 0.0], [-4.0, 1.0]])
    t = torch.tensor([1, 3, 2])
    signed, mag, agree = aggregate(g, t, aggregation="abs_of_sum", reference_batch_size=2)
    # batch {0,1}: (g0 + g1) / 4 = [1, -0.5]; batch {2}: g2 / 2 = [-2, 0.5]
    torch.testing.assert_close(signed, torch.tensor([-1.0, 0.0]))
    torch.testing.assert_close(mag, torch.tensor([1.0, 0.0]))
    # component 0: sign -1, one of three examples agrees; component 1: signed == 0 -> neutral 0.5
    torch.testing.assert_close(agree, torch.tensor([1 / 3, 0.5]))
    s1, _, _ = aggregate(g, t, aggregation="abs_of_sum", reference_batch_size=1)
    torch.testing.assert_close(s1, (g / t.unsqueeze(1)).sum(0))


def test_aggregate_mean_abs_by_hand_and_skips_empty_examples():
    g = torch.tensor([[2.0, -2.0], [0.0, 0.0], [-3.0, 3.0]])
    t = torch.tensor([2, 0, 3])  # example 1 has no supervised token: left out
    signed, mag, agree = aggregate(g, t, aggregation="mean_abs", reference_batch_size=2)
    torch.testing.assert_close(signed, torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(mag, torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(agree, torch.tensor([0.5, 0.5]))
    signed, mag, agree = aggregate(g[[0, 1]], t[[0, 1]], aggregation="mean_abs", reference_batch_size=2)
    torch.testing.assert_close(signed, torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(agree, torch.tensor([1.0, 1.0]))
    none = aggregate(g[[1]], t[[1]], aggregation="abs_of_sum", reference_batch_size=2)
    for v, want in zip(none, ([0.0, 0.0], [0.0, 0.0], [0.5, 0.5])):
        torch.testing.assert_close(v, torch.tensor(want))


def test_aggregate_rejects_bad_input():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        aggregate(torch.zeros(2, 3), torch.ones(2), aggregation="sum_abs", reference_batch_size=2)
    with pytest.raises(ValueError, match=r"\(N, r\)"):
        aggregate(torch.zeros(2, 3), torch.ones(3), aggregation="mean_abs", reference_batch_size=2)
    with pytest.raises(ValueError, match="reference_batch_size"):
        aggregate(torch.zeros(2, 3), torch.ones(2), aggregation="abs_of_sum", reference_batch_size=0)
