"""Choosing γ of the calibrated global scalar control ``global_scalar`` (EXTENSIONS §8.3, §11).

The control is ``t_m = γσ_m`` in every edited module, rebuilt one-sided (``B' = U diag(γσ)``, ``A' = Vᵀ``),
scaling s unchanged; the edit itself is the registered policy ``global_scalar`` (:mod:`tasks.surgery.policies`).
This module picks γ from a grid locked in advance (:class:`tasks.config.GlobalScalarConfig`), on data never
used for the gate's decision, in one of two ways:

- ``calib_loss`` (default, cheap): the lowest mean token cross-entropy on **held-out calibration examples**,
  forward only under ``torch.no_grad``. The held-out examples are the ``holdout`` examples right after the
  sensitivity slice in the same (possibly shuffled) order, see :func:`holdout_calib_config`, so they are
  disjoint from the examples the sensitivities saw. One PEFT model is attached once and each γ is tried by
  scaling the edited modules' ``lora_B`` in place (γ·s·B·A is exactly the one-sided rebuild of γσ).
- ``held_out_metric`` (EXTENSIONS §8.3 Protocol 1): the highest ``score(γ)`` of a caller-provided metric on a
  held-out split (e.g. accuracy of the adapters written with :func:`fixed_gamma` for every γ, evaluated in one
  evaluator call so the same-config adapters are swapped in place).

In both, an exact tie (after rounding to 12 decimals) goes to the γ closest to 1, then to the smaller γ.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spectral_surgery.tasks.surgery.calib_data import (
    IGNORE_INDEX,
    CalibExample,
    build_batch,
    calibration_sha256,
    sequence_limit,
    token_length,
    warn_if_truncated,
)
from spectral_surgery.tasks.surgery.calibration import resolve_lora_layer
from spectral_surgery.tasks.config import CalibConfig, GlobalScalarConfig, SurgeryConfig
from spectral_surgery.tasks.surgery.edit import PreparedAdapter, attached_adapter

SelectionRule = Literal["calib_loss", "held_out_metric", "fixed"]


@dataclass(frozen=True)
class GammaSelection:
    """A chosen γ with the evidence behind it (recorded in the candidate's edit manifest).

    Attributes:
        gamma: The chosen global scale.
        rule: ``calib_loss``, ``held_out_metric`` or ``fixed`` (given, not selected: trial adapters, tests).
        grid: The γ values tried, in the order tried.
        scores: One score per grid value (empty for ``fixed``).
        higher_is_better: Direction of ``scores`` (False for a loss).
        criterion: What the scores are, in words.
        holdout: For ``calib_loss``: ``n_examples`` and ``sha256`` of the held-out examples.
    """

    gamma: float
    rule: SelectionRule
    grid: tuple[float, ...]
    scores: tuple[float, ...] = ()
    higher_is_better: bool = True
    criterion: str = ""
    holdout: dict | None = None

    def to_manifest(self) -> dict:
        """The manifest fields: ``gamma``, ``gamma_rule``, ``gamma_grid``, ``gamma_scores`` and details."""
        return {
            "gamma": self.gamma,
            "gamma_rule": self.rule,
            "gamma_grid": list(self.grid),
            "gamma_scores": [{"gamma": g, "score": s} for g, s in zip(self.grid, self.scores)],
            "gamma_selection": {"higher_is_better": self.higher_is_better, "criterion": self.criterion,
                                "holdout": self.holdout},  # fmt: skip
        }


def choose_gamma(grid: Sequence[float], scores: Sequence[float], *, higher_is_better: bool = True) -> float:
    """The γ with the best score; an exact tie goes to the γ closest to 1, then to the smaller γ.

    Scores are rounded to 12 decimals before comparing, so equal scores computed in different float orders tie.

    Args:
        grid: Candidate γ values.
        scores: One finite score per γ.
        higher_is_better: True for metrics (accuracy), False for losses.

    Returns:
        The chosen γ.

    Raises:
        ValueError: empty grid, lengths differ, or a score is not finite.
    """
    if not grid or len(grid) != len(scores):
        raise ValueError(f"choose_gamma needs one score per γ; got {len(grid)} γ and {len(scores)} scores")
    bad = [(g, s) for g, s in zip(grid, scores) if not math.isfinite(float(s))]
    if bad:
        raise ValueError(f"choose_gamma: scores must be finite, got {bad}")
    sign = 1.0 if higher_is_better else -1.0
    keyed = [(-sign * round(float(s), 12), abs(float(g) - 1.0), float(g)) for g, s in zip(grid, scores)]
    return min(keyed)[2]


def select_gamma_held_out(
    score: Callable[[float], float], cfg: GlobalScalarConfig, *, higher_is_better: bool = True, criterion: str = ""
) -> GammaSelection:
    """Protocol 1 (EXTENSIONS §8.3): ``score(γ)`` for every γ of ``cfg.grid``, then :func:`choose_gamma`.

    Args:
        score: Held-out metric of the global scalar at γ (e.g. accuracy on a split the gate never scores).
        cfg: Grid (the rule field is not consulted: this function is the ``held_out_metric`` rule).
        higher_is_better: Direction of the metric.
        criterion: Description recorded in the manifest (e.g. "gsm8k strict acc, 256 held-out questions").
    """
    scores = tuple(float(score(float(g))) for g in cfg.grid)
    gamma = choose_gamma(cfg.grid, scores, higher_is_better=higher_is_better)
    return GammaSelection(gamma, "held_out_metric", tuple(cfg.grid), scores, higher_is_better,
                          criterion or "held-out metric score(γ)")  # fmt: skip


def fixed_gamma(gamma: float) -> GammaSelection:
    """A given γ (rule ``fixed``): for the trial adapters scored by ``held_out_metric``, reruns and tests."""
    if not math.isfinite(float(gamma)) or float(gamma) < 0:
        raise ValueError(f"gamma must be finite and >= 0, got {gamma!r}")
    return GammaSelection(float(gamma), "fixed", (float(gamma),), criterion="given, not selected")


def holdout_calib_config(cfg: SurgeryConfig) -> CalibConfig:
    """Calibration settings selecting the held-out examples of ``calib_loss``.

    The same source, order and seed as the sensitivity examples, starting right after them:
    ``start = calib.start + calib.n_samples`` and ``n_samples = global_scalar.holdout``. Load them with
    ``tasks.surgery.calib_data.load_calibration(source, holdout_calib_config(cfg))``; positions never overlap the
    sensitivity slice (a source with too few rows yields fewer held-out examples, or an error if none).
    """
    c = cfg.calib
    return c.model_copy(update={"start": c.start + c.n_samples, "n_samples": cfg.global_scalar.holdout})


@contextlib.contextmanager
def scaled_lora_b(peft_model: nn.Module, module_names: Sequence[str], gamma: float) -> Iterator[None]:
    """Multiply the active adapter's ``lora_B`` of ``module_names`` by γ in place; restore the exact bytes after.

    ``γ·s·B·A = s·U diag(γσ) Vᵀ``, the one-sided rebuild of γσ, so no adapter has to be written per γ
    (for half-precision B the scaled values round once more than the written adapter's; same function).
    """
    name = peft_model.active_adapter if isinstance(peft_model.active_adapter, str) else peft_model.active_adapter[0]
    weights = [resolve_lora_layer(peft_model, m).lora_B[name].weight for m in module_names]
    saved = [w.detach().clone() for w in weights]
    try:
        with torch.no_grad():
            for w in weights:
                w.mul_(float(gamma))
        yield
    finally:
        with torch.no_grad():
            for w, old in zip(weights, saved, strict=True):
                w.copy_(old)


def mean_calibration_loss(model: nn.Module, tokenizer, examples: Sequence[CalibExample], cfg: CalibConfig) -> float:
    """Token-mean cross-entropy over the supervised (answer) tokens of ``examples``, forward only.

    Batches of ``cfg.batch_size`` built as the calibration pass builds them (``cfg.max_seq_len``), from the
    examples ordered by token length (a batch pads to its longest row: less padding, the same tokens), and the
    output head applied only at the positions whose next token is supervised (``logits_to_keep``, where the model
    takes it). The sum is the same as over the examples in file order with every position's logits, to float
    rounding (tests/tasks/surgery/test_global_scalar.py: 1e-6 relative); the held-out loss of every γ is computed
    in the same order, so an exact tie between two γ stays one. The model is put in eval mode for the call and
    restored.

    Raises:
        ValueError: no examples, or no supervised token in any of them.
    """
    if not examples:
        raise ValueError("mean_calibration_loss needs at least one example")
    emb = model.get_input_embeddings()
    device = emb.weight.device
    total, n_tok = 0.0, 0
    limit = sequence_limit(model, cfg.max_seq_len)
    warn_if_truncated(tokenizer, examples, model, cfg.max_seq_len, what="global scalar's held-out calibration")
    ordered = sorted(examples, key=lambda ex: token_length(tokenizer, ex))  # stable: ties keep the file's order
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(ordered), cfg.batch_size):
                batch = build_batch(tokenizer, ordered[i : i + cfg.batch_size], max_seq_len=limit)
                labels = batch["labels"][:, 1:].to(device)
                sel = labels != IGNORE_INDEX
                keep = sel.any(0).nonzero().flatten()  # positions t whose next token is scored in some row
                logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"]
                               .to(device), use_cache=False, logits_to_keep=keep).logits
                if logits.shape[1] != len(keep):  # a model that ignores logits_to_keep returns every position
                    logits = logits[:, keep]
                sel = sel[:, keep]
                total += float(F.cross_entropy(logits[sel].float(), labels[:, keep][sel], reduction="sum"))
                n_tok += int(sel.sum())
    finally:
        model.train(was_training)
    if n_tok == 0:
        raise ValueError(f"mean_calibration_loss: none of the {len(examples)} examples has a supervised token")
    return total / n_tok


def select_gamma_calib_loss(
    base_model: nn.Module,
    tokenizer,
    prepared: PreparedAdapter,
    holdout: Sequence[CalibExample],
    cfg: SurgeryConfig,
    *,
    sensitivity_examples: Sequence[CalibExample] | None = None,
) -> GammaSelection:
    """Rule ``calib_loss``: γ of ``cfg.global_scalar.grid`` with the lowest held-out calibration loss.

    The adapter is attached to ``base_model`` once; each γ scales ``lora_B`` of ``prepared.edited_modules``
    in place (:func:`scaled_lora_b`); the base model comes back without LoRA layers.

    Args:
        base_model: The loaded base causal LM (shared; restored afterwards).
        tokenizer: Its tokenizer.
        prepared: From :func:`tasks.surgery.edit.prepare` (adapter path and the edited modules).
        holdout: Held-out calibration examples, from ``load_calibration(source, holdout_calib_config(cfg))``.
        cfg: The surgery configuration (grid, calibration batch size and max_seq_len).
        sensitivity_examples: The examples the sensitivities used; if given, any overlap raises.

    Raises:
        ValueError: no held-out examples, the held-out set is the sensitivity set, or they overlap.
    """
    if not holdout:
        raise ValueError("select_gamma_calib_loss: no held-out examples; load them with holdout_calib_config(cfg)")
    sha = calibration_sha256(holdout)
    if sha == prepared.calib_sha256:
        raise ValueError("select_gamma_calib_loss: the held-out examples are the sensitivity examples; "
                         "take them with holdout_calib_config(cfg)")  # fmt: skip
    if sensitivity_examples is not None:
        seen = {(e.prompt, e.answer) for e in sensitivity_examples}
        overlap = sum((e.prompt, e.answer) in seen for e in holdout)
        if overlap:
            raise ValueError(f"select_gamma_calib_loss: {overlap} held-out example(s) were used for the "
                             "sensitivities; γ must be chosen on data the decision never saw")  # fmt: skip
    names = [m.name for m in prepared.edited_modules]
    grid = tuple(float(g) for g in cfg.global_scalar.grid)
    scores = []
    with attached_adapter(base_model, prepared.adapter.path) as peft_model:
        for g in grid:
            with scaled_lora_b(peft_model, names, g):
                scores.append(mean_calibration_loss(peft_model, tokenizer, holdout, cfg.calib))
    return GammaSelection(
        choose_gamma(grid, scores, higher_is_better=False), "calib_loss", grid, tuple(scores), False,
        "mean token cross-entropy on held-out calibration examples (lower is better)",
        {"n_examples": len(holdout), "sha256": sha},
    )  # fmt: skip
