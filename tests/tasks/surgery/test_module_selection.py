"""Calibration-guided module selection (EXTENSIONS §7): scores, budget rule, both rules, the edit, the engine."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from spectral_surgery.tasks.surgery.calibration import CalibExample, aggregate, batch_gradients
from spectral_surgery.tasks.config import CalibConfig, EditConfig, SurgeryConfig, TargetConfig
from spectral_surgery.tasks.surgery.decompose import lowrank_svd
from spectral_surgery.tasks.surgery.module_selection import (
    SensitivityHNSConfig,
    NOT_COMPATIBLE,
    OUTSIDE_BUDGET,
    default_budget,
    module_scores,
    select_hns_modules,
    selected_spectra,
)
from spectral_surgery.tasks.surgery.policies import get_policy, list_policies
from spectral_surgery.tasks.surgery.posthoc import HNSConfig, hns_spectrum
from tests import tiny

F64 = torch.float64
HNS_41 = HNSConfig(fast_steps=4, stable_steps=1)

# M2 (EXTENSIONS §7): three modules, τ = 4+1 HNS of each σ, budget 2
L0_O, L0_DOWN, L1_O = (
    "model.layers.0.self_attn.o_proj",
    "model.layers.0.mlp.down_proj",
    "model.layers.1.self_attn.o_proj",
)
M2 = {
    L0_O: ([8, 6, 5, 4], [[0.2, -0.1, 0.05, 0.3], [0.1, -0.3, 0, 0.2]],
           [5.684418, 5.898665, 5.687310, 5.729607], 0.88125, -0.122514),
    L0_DOWN: ([2, 1, 0.5, 0.1], [[0.5, 0.2, -0.1, 0], [0.3, 0.1, -0.2, -0.1]],
              [0.907637, 0.872102, 0.912626, 0.907636], 0.2575, 0.558406),
    L1_O: ([1, 0.9, 0.8, 0.7], [[0.01, 0.02, -0.01, 0], [0, 0.01, 0, 0.02]],
           [0.857798, 0.857757, 0.850060, 0.834385], 0.007375, 0.000251),
}  # fmt: skip


def _t(x) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


def _m2(**kw):
    sigmas = {n: _t(v[0]) for n, v in M2.items()}
    grads = {n: _t(v[1]) for n, v in M2.items()}
    return select_hns_modules(sigmas, grads, layers={L0_O: 0, L0_DOWN: 0, L1_O: 1}, module_budget=2, hns=HNS_41,
                              **kw)  # fmt: skip


# ---- scores ------------------------------------------------------------------------------------------------


def test_m1_scores():
    """M1 (the repo's test): σ = [2, 1], τ = [1.5, 1.5], G = [[1, 2], [−1, −2]]."""
    s = module_scores(_t([2, 1]), _t([1.5, 1.5]), _t([[1, 2], [-1, -2]]))
    assert s.importance == pytest.approx(2.0, abs=1e-6)
    assert s.compatibility == pytest.approx(0.0, abs=1e-6)  # the two batches cancel in compatibility ...
    assert s.hns_risk == pytest.approx(1.5, abs=1e-6)  # ... but not in importance or risk (absolute per batch)


def test_m2_spectra_and_scores():
    sel = _m2()
    for name, (sigma, _g, tau, importance, compat) in M2.items():
        torch.testing.assert_close(hns_spectrum(_t(sigma), HNS_41), _t(tau), atol=1e-6, rtol=0)
        assert sel.scores[name].importance == pytest.approx(importance, abs=1e-6)
        assert sel.scores[name].compatibility == pytest.approx(compat, abs=1e-6)
    assert sel.ranking == (L0_O, L0_DOWN, L1_O)


def test_m2_shortlist_and_both_rules():
    compatible = _m2()
    assert compatible.shortlist == (L0_O, L0_DOWN) and compatible.budget == 2
    assert compatible.chosen == (L0_DOWN,)  # L1.o is compatible but outside the budget
    assert compatible.rejected == {L0_O: NOT_COMPATIBLE, L1_O: OUTSIDE_BUDGET}
    assert compatible.rejected[L0_O] == "non_positive_hns_compatibility"
    assert compatible.rejected[L1_O] == "outside_importance_budget"
    importance = _m2(selection_rule="importance")
    assert importance.chosen == (L0_O, L0_DOWN) and importance.rejected == {L1_O: OUTSIDE_BUDGET}
    # the threshold: above L0.down's compatibility nothing is chosen; below L0.o's both are
    assert _m2(min_compatibility=0.6).chosen == ()
    assert _m2(min_compatibility=-0.2).chosen == (L0_O, L0_DOWN)
    record = compatible.to_manifest()
    assert record["chosen"] == [L0_DOWN] and record["budget_rule"] == "configured" and record["candidates"] == 3
    assert set(record["scores"][L0_O]) == {"importance", "compatibility", "hns_risk"}


def test_compatibility_equal_to_the_threshold_is_rejected():
    # compatibility exactly 0.0 (M1) is not > min_compatibility 0.0
    sel = select_hns_modules({"a": _t([2, 1])}, {"a": _t([[1, 2], [-1, -2]])}, module_budget=1,
                             hns=HNSConfig(fast_steps=0, stable_steps=0))  # τ = σ: δ = 0, compatibility 0
    assert sel.chosen == () and sel.rejected == {"a": NOT_COMPATIBLE}


def test_importance_ties_go_by_name():
    g = _t([[1.0, 1.0]])
    sel = select_hns_modules({"b": _t([1, 1]), "a": _t([1, 1]), "c": _t([2, 2])}, {"a": g, "b": g, "c": g},
                             module_budget=2, selection_rule="importance")  # fmt: skip
    assert sel.ranking == ("c", "a", "b") and sel.chosen == ("c", "a")


# ---- the budget rule ----------------------------------------------------------------------------------------


def test_default_budget_rule():
    assert default_budget([i for i in range(32) for _ in range(7)]) == 64  # Llama-8B, all modules: 2 × 32 layers
    assert default_budget([i for i in range(36) for _ in range(7)]) == 72  # Qwen3-8B
    assert default_budget([0, 0, 1, 1, 2]) == 5  # 2 × 3 = 6, capped at the 5 candidates
    assert default_budget([0, 1]) == 2 and default_budget([None, 0]) == 2  # one distinct index
    assert default_budget([None] * 7) == 2 and default_budget([None] * 10) == 3  # ⌈2N/7⌉
    assert default_budget([None]) == 1 and default_budget([]) == 1  # at least 1


def test_default_budget_is_used_when_none_is_given():
    sigmas = {n: _t(v[0]) for n, v in M2.items()}
    grads = {n: _t(v[1]) for n, v in M2.items()}
    by_layer = select_hns_modules(sigmas, grads, layers={L0_O: 0, L0_DOWN: 0, L1_O: 1}, hns=HNS_41)
    assert by_layer.budget == 3 and by_layer.budget_rule == "default"  # 2 × 2 layers, capped at 3 candidates
    assert by_layer.chosen == (L0_DOWN, L1_O) and by_layer.rejected == {L0_O: NOT_COMPATIBLE}
    no_layers = select_hns_modules(sigmas, grads, hns=HNS_41)
    assert no_layers.budget == 1 and no_layers.chosen == () and no_layers.shortlist == (L0_O,)


@pytest.mark.parametrize("budget", [0, -1, 1.5, True])
def test_budget_below_one_raises(budget):
    with pytest.raises(ValueError, match="module_budget"):
        select_hns_modules({"a": _t([1])}, {"a": _t([[1.0]])}, module_budget=budget)
    if budget in (0, -1):
        with pytest.raises(ValidationError, match="greater than or equal to 1"):
            SensitivityHNSConfig(module_budget=budget)


def test_a_candidate_without_gradient_raises():
    sigmas = {"a": _t([1, 0.5]), "b": _t([2, 1])}
    for grads in ({"a": _t([[1.0, 0.0]])}, {"a": _t([[1.0, 0.0]]), "b": None},
                  {"a": _t([[1.0, 0.0]]), "b": torch.zeros(0, 2, dtype=F64)}):  # fmt: skip
        with pytest.raises(ValueError, match=r"without a gradient: \['b'\]"):
            select_hns_modules(sigmas, grads)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="selection_rule"):
        _m2(selection_rule="best")
    with pytest.raises(ValueError, match="FULL HNS"):
        select_hns_modules({}, {}, hns=HNSConfig(strength=0.5))
    with pytest.raises(ValueError, match=r"grads must be \(n_batches, r=2\)"):
        module_scores(_t([1, 2]), _t([1, 2]), _t([1.0, 2.0]))
    with pytest.raises(ValueError, match="NaN"):
        module_scores(_t([1, 2]), _t([1, 2]), _t([[float("nan"), 0.0]]))


# ---- the edit ------------------------------------------------------------------------------------------------


def test_chosen_modules_get_full_hns_the_others_stay():
    sigmas = {n: _t(v[0]).float() for n, v in M2.items()}
    out = selected_spectra(sigmas, [L0_DOWN], HNS_41)
    torch.testing.assert_close(out[L0_DOWN].double(), _t(M2[L0_DOWN][2]), atol=1e-6, rtol=0)
    assert torch.equal(out[L0_O], sigmas[L0_O]) and torch.equal(out[L1_O], sigmas[L1_O])
    assert out[L0_DOWN].dtype == torch.float32 and out[L0_DOWN].sum().item() == pytest.approx(3.6, rel=1e-6)


# ---- per-mini-batch gradients (calibration) -------------------------------------------------------------------


def test_batch_gradients_are_the_abs_of_sum_summands():
    g = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [7.0, 7.0], [2.0, 0.0]])
    n_tok = torch.tensor([2, 3, 0, 0, 4])  # the second mini-batch has no supervised token: no row
    rows = batch_gradients(g, n_tok, 2)
    torch.testing.assert_close(rows, _t([[4 / 5, 1 / 5], [2 / 4, 0]]))
    signed, _, _ = aggregate(g, n_tok, aggregation="abs_of_sum", reference_batch_size=2)
    torch.testing.assert_close(rows.sum(0).float(), signed)
    assert batch_gradients(g, torch.zeros(5, dtype=torch.long), 2).shape == (0, 2)
    with pytest.raises(ValueError, match="reference_batch_size"):
        batch_gradients(g, n_tok, 0)


# ---- registration and settings -------------------------------------------------------------------------------


def test_registered_as_a_post_hoc_edit_that_needs_data():
    spec = get_policy("sensitivity_hns")
    assert spec.role == "posthoc" and spec.needs_data and spec.promotable and not spec.postprocess
    assert spec.rebuild == "balanced" and spec.keep_identical and spec.pool is not None
    assert "sensitivity_hns" in list_policies(("posthoc",))
    assert "EXTENSIONS §7" in spec.fn.__doc__ and "2603.03995" in spec.fn.__doc__


def test_settings_are_validated_and_keyed_only_when_changed():
    assert "sensitivity_hns" not in EditConfig().model_dump()  # candidate keys of older runs stay the same
    changed = EditConfig(sensitivity_hns={"module_budget": 4, "selection_rule": "importance"})
    dumped = changed.model_dump(mode="json")
    assert dumped["sensitivity_hns"]["module_budget"] == 4
    assert EditConfig.model_validate(dumped) == changed
    for bad, match in (({"selection_rule": "best"}, "importance_compatible"),
                       ({"hns": {"strength": 0.5}}, "FULL HNS"), ({"hns": {"output_rank": 2}}, "FULL HNS"),
                       ({"min_compatibility": float("inf")}, "finite"), ({"budget": 3}, "Extra inputs")):  # fmt: skip
        with pytest.raises(ValidationError, match=match):
            EditConfig(sensitivity_hns=bad)


# ---- the engine on the tiny model -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tiny_base, tiny_adapter):
    from transformers import AutoModelForCausalLM

    from spectral_surgery.tasks.surgery.edit import prepare

    model = AutoModelForCausalLM.from_pretrained(tiny_base).eval()
    examples = [CalibExample(r["prompt"], r["answer"]) for r in tiny.calib_rows(6)]
    cfg = SurgeryConfig(calib=CalibConfig(n_samples=6, batch_size=4), targets=TargetConfig(target_modules=["all"]))
    return prepare(model, tiny.make_tokenizer(), tiny_adapter, examples, cfg), cfg


def test_write_candidate_edits_only_the_chosen_modules(prepared, tmp_path):
    from spectral_surgery.tasks.adapter_io import load_adapter
    from spectral_surgery.tasks.surgery.edit import write_candidate

    p, cfg = prepared
    cfg = cfg.model_copy(update={"edit": EditConfig(sensitivity_hns={"selection_rule": "importance"})})
    path, manifest = write_candidate(p, "sensitivity_hns", cfg, tmp_path / "sel")
    record = manifest["pooled"]
    # 14 candidates (7 projections × 2 layers), default budget 2 × 2 layers = 4, the rule keeps all four
    assert record["candidates"] == 14 and record["module_budget"] == 4 and record["budget_rule"] == "default"
    assert len(record["chosen"]) == 4 and set(record["rejected"].values()) == {OUTSIDE_BUDGET}
    assert manifest["settings"]["selection_rule"] == "importance" and manifest["needs_data"]
    # the scores are the pure function's on the per-mini-batch gradients (reference mini-batch 2: 3 rows)
    sigmas = {m.name: p.spectra[m.name].S for m in p.modules}
    grads = {n: s.per_batch(2) for n, s in p.sensitivities.items()}
    assert all(g.shape[0] == 3 for g in grads.values())
    again = select_hns_modules(sigmas, grads, layers={m.name: m.layer_index for m in p.modules},
                               selection_rule="importance")  # fmt: skip
    assert record["chosen"] == list(again.chosen)
    assert record["scores"] == {n: s.to_json() for n, s in again.scores.items()}
    edited, src = load_adapter(path), load_adapter(p.adapter.path)
    for m in p.modules:
        entry = manifest["modules"][m.name]
        assert entry["selection"]["chosen"] == (m.name in record["chosen"])
        if m.name in record["chosen"]:
            new = lowrank_svd(edited.tensors[m.key_A], edited.tensors[m.key_B]).S
            expect = hns_spectrum(p.spectra[m.name].S).sort(descending=True).values
            torch.testing.assert_close(new, expect, atol=1e-5, rtol=1e-4)
            assert entry["selection"]["rejection"] is None
        else:  # untouched: the original bytes
            assert entry["selection"]["rejection"] == OUTSIDE_BUDGET
            assert torch.equal(edited.tensors[m.key_A], src.tensors[m.key_A])
            assert torch.equal(edited.tensors[m.key_B], src.tensors[m.key_B])
