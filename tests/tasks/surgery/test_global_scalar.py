"""Choosing γ of the calibrated global scalar (tasks/surgery/global_scalar.py, EXTENSIONS §8.3, §11) and its config."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from spectral_surgery.tasks.surgery.calib_data import select_examples
from spectral_surgery.tasks.surgery.calibration import CalibExample
from spectral_surgery.tasks.config import (
    DEFAULT_GAMMA_GRID,
    PROTOCOL1_GRID,
    CalibConfig,
    GlobalScalarConfig,
    SurgeryConfig,
)
from spectral_surgery.tasks.config import TargetConfig
from spectral_surgery.tasks.surgery.edit import prepare, write_candidate
from spectral_surgery.tasks.surgery.global_scalar import (
    choose_gamma,
    fixed_gamma,
    holdout_calib_config,
    mean_calibration_loss,
    scaled_lora_b,
    select_gamma_calib_loss,
    select_gamma_held_out,
)
from spectral_surgery.tasks.run_config import RunConfig
from tests import tiny

# EXTENSIONS §8.3 Protocol 1: calibration accuracies on the grid 1.00 .. 0.40.
P1_SCORES = (84.77, 85.55, 85.94, 85.16, 86.72, 88.67)
N_SENS, N_HOLD = 6, 6


def _rows(n=N_SENS + N_HOLD) -> list[CalibExample]:
    return [CalibExample(r["prompt"], r["answer"]) for r in tiny.calib_rows(n)]


def _cfg(**kw) -> SurgeryConfig:
    return SurgeryConfig(calib=CalibConfig(n_samples=N_SENS, batch_size=4),
                         global_scalar=GlobalScalarConfig(holdout=N_HOLD), **kw)  # fmt: skip


def _base(path):
    return AutoModelForCausalLM.from_pretrained(path).eval()


# ---- the pick --------------------------------------------------------------------------------------------


def test_protocol1_vector_picks_the_grid_edge():
    assert choose_gamma(PROTOCOL1_GRID, P1_SCORES) == 0.40


def test_exact_tie_goes_to_gamma_closest_to_one():
    tied = (84.77, 86.5, 86.5, 85.16, 86.0, 85.0)  # .85 and .70 tie at the maximum
    assert choose_gamma(PROTOCOL1_GRID, tied) == 0.85
    assert choose_gamma((0.7, 0.85), (86.5, 86.5)) == 0.85  # independent of grid order
    assert choose_gamma((1.1, 0.9), (1.0, 1.0)) == 0.9  # equally close: the smaller γ
    assert choose_gamma((0.4, 0.5), (0.1 + 0.2, 0.3)) == 0.5  # float-order noise is a tie too


def test_lower_is_better_for_losses():
    assert choose_gamma((1.0, 0.5, 0.2), (2.0, 1.5, 1.7), higher_is_better=False) == 0.5
    assert choose_gamma((1.0, 0.5), (1.5, 1.5), higher_is_better=False) == 1.0


def test_choose_gamma_rejects_bad_scores():
    with pytest.raises(ValueError, match="one score per γ"):
        choose_gamma((1.0, 0.5), (1.0,))
    with pytest.raises(ValueError, match="one score per γ"):
        choose_gamma((), ())
    with pytest.raises(ValueError, match="finite"):
        choose_gamma((1.0, 0.5), (1.0, float("nan")))


def test_select_held_out_calls_score_per_gamma_and_records_it():
    seen: list[float] = []

    def score(g: float) -> float:
        seen.append(g)
        return dict(zip(PROTOCOL1_GRID, P1_SCORES))[g]

    sel = select_gamma_held_out(score, GlobalScalarConfig(grid=PROTOCOL1_GRID, rule="held_out_metric"),
                                criterion="gsm8k strict, 256 held-out questions")  # fmt: skip
    assert seen == list(PROTOCOL1_GRID) and sel.gamma == 0.40 and sel.rule == "held_out_metric"
    man = sel.to_manifest()
    assert man["gamma"] == 0.40 and man["gamma_rule"] == "held_out_metric"
    assert man["gamma_grid"] == list(PROTOCOL1_GRID)
    assert man["gamma_scores"][0] == {"gamma": 1.0, "score": 84.77} and len(man["gamma_scores"]) == 6
    assert man["gamma_selection"]["higher_is_better"] and "256" in man["gamma_selection"]["criterion"]


def test_fixed_gamma():
    assert fixed_gamma(0.5).to_manifest()["gamma_rule"] == "fixed"
    with pytest.raises(ValueError, match="finite and >= 0"):
        fixed_gamma(-1.0)


# ---- config ----------------------------------------------------------------------------------------------


def test_config_defaults_and_validation():
    cfg = SurgeryConfig().global_scalar
    assert cfg.grid == DEFAULT_GAMMA_GRID == (1.0, 0.85, 0.70, 0.60, 0.50, 0.40, 0.30, 0.20)
    assert cfg.rule == "calib_loss" and cfg.holdout == 32
    assert SurgeryConfig(global_scalar={"rule": "held_out_metric"}).global_scalar.rule == "held_out_metric"
    for bad in ({"grid": ()}, {"grid": (1.0, -0.1)}, {"grid": (1.0, float("inf"))}, {"grid": (1.0, 1.0)},
                {"rule": "vibes"}, {"holdout": 0}, {"extra": 1}):  # fmt: skip
        with pytest.raises(ValidationError):
            GlobalScalarConfig(**bad)
    # reachable from the nightly run config and its per-adapter overrides
    run = RunConfig(surgery={"global_scalar": {"holdout": 8}})
    assert run.surgery.global_scalar.holdout == 8
    assert run.surgery_for({"surgery": {"global_scalar": {"rule": "held_out_metric"}}}).global_scalar.holdout == 8


@pytest.mark.parametrize("shuffle", [False, True])
def test_holdout_is_the_slice_after_the_sensitivity_examples(shuffle):
    rows = [CalibExample(f"q{i}", f"a{i}") for i in range(40)]
    cfg = SurgeryConfig(calib=CalibConfig(n_samples=16, start=3, shuffle=shuffle, seed=7),
                        global_scalar=GlobalScalarConfig(holdout=10))  # fmt: skip
    sens = select_examples(rows, cfg.calib)
    hold = select_examples(rows, holdout_calib_config(cfg))
    assert len(sens) == 16 and len(hold) == 10 and not set(map(id, sens)) & set(map(id, hold))
    whole = select_examples(rows, cfg.calib.model_copy(update={"n_samples": 26}))
    assert whole == sens + hold  # the same order, continued


# ---- calib_loss on the tiny model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tiny_base, tiny_adapter):
    rows, cfg = _rows(), _cfg()
    sens, hold = select_examples(rows, cfg.calib), select_examples(rows, holdout_calib_config(cfg))
    model = _base(tiny_base)
    prepared = prepare(model, tiny.make_tokenizer(), tiny_adapter, sens, cfg)
    return model, prepared, sens, hold, cfg


def test_scaled_lora_b_scales_the_update_and_restores_the_bytes(tiny_base, tiny_adapter, setup):
    _, prepared, *_ = setup
    pm = PeftModel.from_pretrained(_base(tiny_base), str(tiny_adapter)).eval()
    names = [m.name for m in prepared.edited_modules]
    layers = [pm.get_submodule("base_model.model." + n) for n in names]
    before = [layer.lora_B["default"].weight.detach().clone() for layer in layers]
    with scaled_lora_b(pm, names, 0.3):
        for layer, b in zip(layers, before):
            torch.testing.assert_close(layer.lora_B["default"].weight, 0.3 * b)
    assert all(torch.equal(layer.lora_B["default"].weight, b) for layer, b in zip(layers, before))
    with pytest.raises(RuntimeError, match="boom"), scaled_lora_b(pm, names, 0.0):
        raise RuntimeError("boom")
    assert all(torch.equal(layer.lora_B["default"].weight, b) for layer, b in zip(layers, before))


def test_calib_loss_selection_matches_written_adapters(tiny_base, tiny_adapter, setup, tmp_path):
    model, prepared, sens, hold, cfg = setup
    tok = tiny.make_tokenizer()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    grad_seen: list[bool] = []
    hook = model.get_input_embeddings().register_forward_hook(lambda *a: grad_seen.append(torch.is_grad_enabled()))
    try:
        sel = select_gamma_calib_loss(model, tok, prepared, hold, cfg, sensitivity_examples=sens)
    finally:
        hook.remove()
    assert grad_seen and not any(grad_seen)  # forward only, no autograd graph
    # the shared base comes back pristine
    assert not any("lora_" in n for n, _ in model.named_parameters())
    assert all(torch.equal(v, base_state[k]) for k, v in model.state_dict().items())
    assert sel.rule == "calib_loss" and sel.grid == DEFAULT_GAMMA_GRID and len(sel.scores) == len(sel.grid)
    assert not sel.higher_is_better and sel.holdout["n_examples"] == N_HOLD
    assert sel.gamma == choose_gamma(sel.grid, sel.scores, higher_is_better=False)
    assert len(set(sel.scores)) == len(sel.scores)  # γ really changes the loss
    # γ = 1 is the adapter itself; other γ equal the one-sided adapters written through write_candidate
    loss = {g: s for g, s in zip(sel.grid, sel.scores)}
    orig = PeftModel.from_pretrained(_base(tiny_base), str(tiny_adapter)).eval()
    assert loss[1.0] == pytest.approx(mean_calibration_loss(orig, tok, hold, cfg.calib), rel=1e-5)
    for g in (0.5, 0.2):
        path, _ = write_candidate(prepared, "global_scalar", cfg, tmp_path / f"g{g}", selection=fixed_gamma(g))
        written = PeftModel.from_pretrained(_base(tiny_base), str(path)).eval()
        assert loss[g] == pytest.approx(mean_calibration_loss(written, tok, hold, cfg.calib), rel=1e-5)
    # the chosen candidate records its selection
    _, man = write_candidate(prepared, "global_scalar", cfg, tmp_path / "chosen", selection=sel)
    assert man["gamma"] == sel.gamma and man["gamma_rule"] == "calib_loss"
    assert [r["gamma"] for r in man["gamma_scores"]] == list(DEFAULT_GAMMA_GRID)
    assert man["gamma_selection"]["holdout"]["sha256"] != prepared.calib_sha256


class _NoLogitsToKeep(torch.nn.Module):
    """A causal LM whose forward takes ``**kwargs`` and ignores ``logits_to_keep`` (every position's logits)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids, attention_mask, use_cache=False, **_ignored):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def test_held_out_loss_fast_path_matches_the_reference(tiny_base, tiny_adapter):
    """Examples ordered by length and the head only at scored positions give the reference's loss (file order, every
    position's logits: tests/benchmarks/bench_gamma.py) to 1e-6 relative, for batches that split the examples, with
    and without ``logits_to_keep``, truncated or not; ordering alone reorders whole rows only."""
    from tests.benchmarks.bench_gamma import naive_mean_calibration_loss

    rows = _rows(12)
    rows = [CalibExample(r.prompt * (1 + i % 3), r.answer + " ok" * (i % 4)) for i, r in enumerate(rows)]
    tok = tiny.make_tokenizer()
    peft = PeftModel.from_pretrained(_base(tiny_base), str(tiny_adapter)).eval()
    for bs, max_len in ((1, None), (5, None), (4, 90), (12, None)):  # 90: some rows lose part or all of their answer
        calib = CalibConfig(n_samples=12, batch_size=bs, max_seq_len=max_len)
        ref = naive_mean_calibration_loss(peft, tok, rows, calib)
        assert mean_calibration_loss(peft, tok, rows, calib) == pytest.approx(ref, rel=1e-6)
        assert mean_calibration_loss(_NoLogitsToKeep(peft), tok, rows, calib) == pytest.approx(ref, rel=1e-6)
    calib = CalibConfig(n_samples=12, batch_size=1)  # one example per batch: the same batches in another order
    assert mean_calibration_loss(peft, tok, rows, calib) == pytest.approx(
        naive_mean_calibration_loss(peft, tok, rows, calib), rel=1e-12)


def test_gamma_zero_on_all_modules_is_the_bare_base(tiny_base, tiny_adapter):
    rows = _rows()
    cfg = _cfg(targets=TargetConfig(target_modules="all")).model_copy(
        update={"global_scalar": GlobalScalarConfig(grid=(1.0, 0.0), holdout=N_HOLD)})  # fmt: skip
    sens, hold = select_examples(rows, cfg.calib), select_examples(rows, holdout_calib_config(cfg))
    model, tok = _base(tiny_base), tiny.make_tokenizer()
    prepared = prepare(model, tok, tiny_adapter, sens, cfg)
    sel = select_gamma_calib_loss(model, tok, prepared, hold, cfg)
    assert sel.scores[1] == pytest.approx(mean_calibration_loss(model, tok, hold, cfg.calib), rel=1e-6)
    assert sel.scores[0] != pytest.approx(sel.scores[1], rel=1e-3)


def test_calib_loss_refuses_examples_the_sensitivities_saw(setup):
    model, prepared, sens, hold, cfg = setup
    tok = tiny.make_tokenizer()
    with pytest.raises(ValueError, match="are the sensitivity examples"):
        select_gamma_calib_loss(model, tok, prepared, sens, cfg)
    with pytest.raises(ValueError, match="1 held-out example"):
        select_gamma_calib_loss(model, tok, prepared, [*hold, sens[0]], cfg, sensitivity_examples=sens)
    with pytest.raises(ValueError, match="no held-out examples"):
        select_gamma_calib_loss(model, tok, prepared, [], cfg)
    assert not any("lora_" in n for n, _ in model.named_parameters())
