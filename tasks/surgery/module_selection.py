"""Calibration-guided module selection: full HNS on the modules it is predicted to help (EXTENSIONS §7).

The authors' ``sensitivity-hns`` (``src/finetune/spectral_edit/module_selection.py`` of ``TTtianTT/peft-sft-lab``,
re-derived from EXTENSIONS §7; no code copied; paper: https://arxiv.org/abs/2603.03995). Per candidate module, with
σ its unscaled spectrum, τ its full-HNS spectrum (:func:`tasks.surgery.posthoc.hns_spectrum`, strength 1, no output
rank), ``δ = τ − σ`` and ``G ∈ R^{n_b×r}`` one σ-gradient row per calibration mini-batch (g including the LoRA scaling
s, :func:`tasks.surgery.calibration.batch_gradients`), taken at the unedited adapter:

- ``importance = mean_b mean_k |G_bk σ_k|`` (absolute per batch, so batches cannot cancel);
- ``compatibility = mean_b(−Σ_k G_bk δ_k)``: the first-order predicted loss *decrease* of the HNS step;
- ``hns_risk = mean_b Σ_k |G_bk δ_k|`` (logged only).

Scores are not normalised across modules (a module with larger s scores higher). The candidates are sorted by
(−importance, name); the first ``module_budget`` form the shortlist. ``importance_compatible`` (default) then drops
shortlisted modules with ``compatibility <= min_compatibility``; ``importance`` keeps the whole shortlist. The
chosen modules get their full HNS spectrum (balanced rebuild), the others are untouched (their original bytes).

In this project (registered as ``sensitivity_hns``, role ``posthoc``, needs the calibration pass):

- the candidates are the run's target modules that received a gradient (``surgery.targets``; the reference CLI's
  default, all modules, is ``targets.target_modules: [all]``). The pure :func:`select_hns_modules` raises on a
  candidate without a gradient; the engine, like the reference ``edit``, leaves such a module out (and untouched);
- the mini-batches are the calibration's reference mini-batches (``calib.reference_batch_size``, default 2 = the
  §7 CLI's batch 2), rebuilt from the stored per-example gradients, so this costs no extra pass;
- the HNS iteration is ``edit.sensitivity_hns.hns`` (default 8 + 2, the reference CLI's), scored and applied alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, field_validator
from torch import Tensor

from spectral_surgery.tasks.config import EditConfig, SettingsModel
from spectral_surgery.tasks.surgery.policy_registry import PolicyInputs, register_policy
from spectral_surgery.tasks.surgery.posthoc import HNSConfig, hns_spectrum

SelectionRule = Literal["importance_compatible", "importance"]
SELECTION_RULES: tuple[SelectionRule, ...] = ("importance_compatible", "importance")


class SensitivityHNSConfig(SettingsModel):
    """Settings of calibration-guided module selection, policy ``sensitivity_hns`` (EXTENSIONS §7), registered below.

    Full HNS (strength 1, every component) on the modules that are task-important and whose first-order predicted
    loss change under HNS is favourable; the other modules are untouched. Defaults are the reference CLI's
    (``sensitivity-hns``: budget by the layer rule, ``importance_compatible``, threshold 0.0, HNS 8 + 2 with L1 on);
    the authors' one run used 4 + 1 (``hns: {fast_steps: 4, stable_steps: 1}``).
    """

    module_budget: int | None = Field(
        None, ge=1, description="Shortlist size (top modules by importance); None = 2 × distinct layer indices, "
        "capped at the candidate count (max(1, ⌈2N/7⌉) when no module has a layer index).",
    )
    selection_rule: SelectionRule = Field(
        "importance_compatible", description="importance_compatible: drop shortlisted modules whose HNS "
        "compatibility is <= min_compatibility; importance: keep the whole shortlist.",
    )
    min_compatibility: float = Field(
        0.0, description="importance_compatible: a shortlisted module is kept only if its compatibility "
        "(predicted loss decrease) is above this.",
    )
    hns: HNSConfig = Field(
        default_factory=HNSConfig, description="The HNS iteration applied to the chosen modules (and scored); full "
        "HNS, so strength must stay 1 and output_rank None.",
    )

    @field_validator("min_compatibility")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"sensitivity_hns.min_compatibility must be finite, got {v}; e.g. 0.0")
        return v

    @field_validator("hns")
    @classmethod
    def _full_hns(cls, v: HNSConfig) -> HNSConfig:
        if v.strength != 1.0 or v.output_rank is not None:
            raise ValueError(f"sensitivity_hns applies FULL HNS (EXTENSIONS §7): leave hns.strength at 1 and "
                             f"hns.output_rank unset; got strength={v.strength}, output_rank={v.output_rank}")
        return v


OUTSIDE_BUDGET = "outside_importance_budget"
NOT_COMPATIBLE = "non_positive_hns_compatibility"


@dataclass(frozen=True)
class ModuleScores:
    """The §7 scores of one module (float64 arithmetic, reported as floats).

    Attributes:
        importance: ``mean_b mean_k |G_bk σ_k|``.
        compatibility: ``mean_b(−Σ_k G_bk δ_k)``, the predicted loss decrease under HNS.
        hns_risk: ``mean_b Σ_k |G_bk δ_k|``.
    """

    importance: float
    compatibility: float
    hns_risk: float

    def to_json(self) -> dict:
        """``{"importance", "compatibility", "hns_risk"}`` as plain floats."""
        return {"importance": self.importance, "compatibility": self.compatibility, "hns_risk": self.hns_risk}


def module_scores(sigma: Tensor, tau: Tensor, grads: Tensor) -> ModuleScores:
    """Importance, compatibility and HNS risk of one module (EXTENSIONS §7 "Scores").

    Args:
        sigma: σ, shape (r,), the unscaled spectrum.
        tau: τ, shape (r,), the module's full-HNS spectrum (δ = τ − σ).
        grads: G, shape (n_b, r), n_b >= 1: one σ-gradient row per calibration mini-batch (g including s).

    Returns:
        The three scores.

    Raises:
        ValueError: wrong shapes, no gradient row, or a value that is NaN or infinite.
    """
    s = _vector(sigma, "sigma")
    t = _vector(tau, "tau")
    if t.numel() != s.numel():
        raise ValueError(f"tau has {t.numel()} entries but sigma has {s.numel()}")
    if not isinstance(grads, Tensor) or grads.dim() != 2 or grads.shape[1] != s.numel():
        shape = tuple(grads.shape) if isinstance(grads, Tensor) else type(grads).__name__
        raise ValueError(f"grads must be (n_batches, r={s.numel()}), got {shape}")
    if grads.shape[0] == 0:
        raise ValueError("grads has no mini-batch row: the module received no gradient")
    g = grads.detach().to(torch.float64).cpu()
    if not bool(torch.isfinite(g).all()):
        raise ValueError("grads contain NaN or Inf")
    delta = t - s
    return ModuleScores(
        importance=float((g * s).abs().mean(dim=1).mean()),
        compatibility=float((-(g * delta).sum(dim=1)).mean()),
        hns_risk=float((g * delta).abs().sum(dim=1).mean()),
    )


def _vector(x: Tensor, what: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{what} must be a 1-D tensor, got {shape}")
    v = x.detach().to(torch.float64).cpu()
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{what} contains NaN or Inf: {v.tolist()}")
    return v


def default_budget(layers: Sequence[int | None]) -> int:
    """The default ``module_budget`` for candidates with these layer indices (EXTENSIONS §7 step 1).

    ``2 × #distinct layer indices``, capped at the candidate count N (64 for Llama-8B, 72 for Qwen3-8B: the
    down + o count); ``max(1, ⌈2N/7⌉)`` when no candidate has a layer index.
    """
    n = len(layers)
    distinct = {i for i in layers if i is not None}
    if distinct:
        return min(2 * len(distinct), n)
    return max(1, math.ceil(2 * n / 7))


@dataclass(frozen=True)
class ModuleSelection:
    """The outcome of one selection, as the edit manifest records it.

    Attributes:
        budget: The shortlist size used.
        budget_rule: ``configured`` (``module_budget`` given) or ``default`` (:func:`default_budget`).
        selection_rule: ``importance_compatible`` or ``importance``.
        min_compatibility: The compatibility threshold of ``importance_compatible``.
        ranking: Every candidate, by (−importance, name).
        shortlist: The first ``budget`` of ``ranking``.
        chosen: The modules that get full HNS, in ranking order.
        rejected: Every other candidate -> ``outside_importance_budget`` or ``non_positive_hns_compatibility``.
        scores: Candidate -> its :class:`ModuleScores`.
    """

    budget: int
    budget_rule: str
    selection_rule: str
    min_compatibility: float
    ranking: tuple[str, ...]
    shortlist: tuple[str, ...]
    chosen: tuple[str, ...]
    rejected: dict[str, str]
    scores: dict[str, ModuleScores]

    def to_manifest(self) -> dict:
        """A JSON-serialisable record: the settings used, the ranking, shortlist, chosen, rejections and scores."""
        return {"module_budget": self.budget, "budget_rule": self.budget_rule, "selection_rule": self.selection_rule,
                "min_compatibility": self.min_compatibility, "candidates": len(self.ranking),
                "ranking": list(self.ranking), "shortlist": list(self.shortlist), "chosen": list(self.chosen),
                "rejected": dict(self.rejected),
                "scores": {n: s.to_json() for n, s in self.scores.items()}}  # fmt: skip


def select_hns_modules(
    sigmas: Mapping[str, Tensor],
    grads: Mapping[str, Tensor | None],
    *,
    layers: Mapping[str, int | None] | None = None,
    module_budget: int | None = None,
    selection_rule: str = "importance_compatible",
    min_compatibility: float = 0.0,
    hns: HNSConfig | None = None,
) -> ModuleSelection:
    """Score every candidate and choose the modules that get full HNS (EXTENSIONS §7 "Selection").

    Args:
        sigmas: Candidate name -> σ (r,), the unscaled spectrum.
        grads: Candidate name -> G (n_b, r), its per-mini-batch σ-gradients (g including s).
        layers: Candidate name -> layer index (None or absent: none), for the default budget.
        module_budget: Shortlist size (>= 1); None = :func:`default_budget`. It may exceed the candidate count.
        selection_rule: ``importance_compatible`` or ``importance``.
        min_compatibility: ``importance_compatible`` keeps a shortlisted module only if its compatibility is above.
        hns: The HNS iteration τ comes from (strength 1, no output rank; default 8 + 2).

    Returns:
        The selection (an empty candidate set chooses nothing).

    Raises:
        ValueError: a budget < 1; an unknown rule; a non-finite threshold; HNS that is not full; a candidate with
            no gradient (missing, None or no row) or with bad shapes.
    """
    cfg = hns or HNSConfig()
    if cfg.strength != 1.0 or cfg.output_rank is not None:
        raise ValueError(f"sensitivity_hns scores FULL HNS: strength 1 and no output_rank, got strength="
                         f"{cfg.strength}, output_rank={cfg.output_rank}")  # fmt: skip
    if module_budget is not None and (isinstance(module_budget, bool) or int(module_budget) != module_budget
                                      or module_budget < 1):  # fmt: skip
        raise ValueError(f"module_budget must be a whole number >= 1 (or None for the default rule), "
                         f"got {module_budget!r}")  # fmt: skip
    if selection_rule not in SELECTION_RULES:
        raise ValueError(f"selection_rule must be one of {', '.join(SELECTION_RULES)}; got {selection_rule!r}")
    if not math.isfinite(float(min_compatibility)):
        raise ValueError(f"min_compatibility must be finite, got {min_compatibility!r}")
    no_grad = [n for n in sigmas if grads.get(n) is None or (isinstance(grads[n], Tensor) and grads[n].dim() == 2
                                                             and grads[n].shape[0] == 0)]
    if no_grad:
        raise ValueError(f"sensitivity_hns: candidate module(s) without a gradient: {no_grad[:5]}; every candidate "
                         "needs its per-mini-batch gradients (leave such modules out of the candidates)")
    scores = {n: module_scores(s, hns_spectrum(s.detach().to(torch.float64), cfg), grads[n])
              for n, s in sigmas.items()}  # fmt: skip
    ranking = tuple(sorted(scores, key=lambda n: (-scores[n].importance, n)))
    layer_of = layers or {}
    budget = default_budget([layer_of.get(n) for n in ranking]) if module_budget is None else int(module_budget)
    shortlist = ranking[:budget]
    rejected = {n: OUTSIDE_BUDGET for n in ranking[budget:]}
    chosen = []
    for n in shortlist:
        if selection_rule == "importance_compatible" and scores[n].compatibility <= min_compatibility:
            rejected[n] = NOT_COMPATIBLE
        else:
            chosen.append(n)
    return ModuleSelection(budget, "default" if module_budget is None else "configured", selection_rule,
                           float(min_compatibility), ranking, shortlist, tuple(chosen),
                           {n: rejected[n] for n in ranking if n in rejected}, scores)  # fmt: skip


def selected_spectra(sigmas: Mapping[str, Tensor], chosen: Sequence[str], hns: HNSConfig | None = None
                     ) -> dict[str, Tensor]:  # fmt: skip
    """The edit (EXTENSIONS §7 step 3): chosen modules get their full HNS spectrum, every other σ is unchanged.

    Returns:
        Name -> t (σ's dtype), for every module of ``sigmas``.
    """
    chosen_set = set(chosen)
    return {n: hns_spectrum(s, hns) if n in chosen_set else s.detach().clone() for n, s in sigmas.items()}


# ---- the registered edit ------------------------------------------------------------------------------------


def _pool(modules: list[PolicyInputs], cfg: EditConfig) -> dict:
    st = cfg.sensitivity_hns
    unnamed = [i for i, m in enumerate(modules) if m.name is None]
    if unnamed:
        raise ValueError("sensitivity_hns needs every module's name (PolicyInputs.name) to select modules")
    no_rows = [m.name for m in modules if m.batch_grads is None]
    if no_rows:
        raise ValueError(f"sensitivity_hns needs per-mini-batch gradients for {no_rows[:5]}: edit through "
                         "spectral_surgery.tasks.surgery.edit.write_candidate (it passes calib.reference_batch_size)")
    sel = select_hns_modules({m.name: m.sigma0 for m in modules}, {m.name: m.batch_grads for m in modules},
                             layers={m.name: m.layer for m in modules}, module_budget=st.module_budget,
                             selection_rule=st.selection_rule, min_compatibility=st.min_compatibility,
                             hns=st.hns)  # fmt: skip
    return sel.to_manifest()


def _describe(inp: PolicyInputs, cfg: EditConfig) -> dict:
    pooled = inp.pooled or {}
    chosen = inp.name in pooled.get("chosen", ())
    return {"selection": {"chosen": chosen, "rejection": pooled.get("rejected", {}).get(inp.name),
                          **pooled.get("scores", {}).get(inp.name, {})}}  # fmt: skip


@register_policy(
    "sensitivity_hns",
    uses_sensitivity=True,
    needs_data=True,
    role="posthoc",
    postprocess=False,
    keep_identical=True,
    pool=_pool,
    describe=_describe,
    settings=SensitivityHNSConfig,
    description="Full HNS on the modules calibration rates important and HNS-compatible; others untouched.",
)
def sensitivity_hns(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
    """Calibration-guided HNS with ``cfg.sensitivity_hns`` (EXTENSIONS §7; paper: https://arxiv.org/abs/2603.03995).

    The pool (:func:`select_hns_modules` over every module with a gradient) chooses; a chosen module's t is its
    full HNS spectrum, any other's is σ exactly, so it keeps its original factor bytes (``keep_identical``).

    Raises:
        ValueError: no pooled selection or no module name (call through :func:`tasks.surgery.edit.write_candidate`).
    """
    if inp.pooled is None or inp.name is None:
        raise ValueError("sensitivity_hns edits the modules its pool chose: pass pooled= and the module name")
    if inp.name in inp.pooled["chosen"]:
        return hns_spectrum(inp.sigma0, cfg.sensitivity_hns.hns)
    return inp.sigma0.clone()
