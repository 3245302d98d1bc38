"""Pydantic configuration for the Spectral Surgery engine, validated at the edge.

Defaults follow the authors' paper-run drivers (METHOD.md §16, last column): asymmetric multiplicative
``grad_direction`` with η_sup = 2.0 / η_enh = 0.2, ``mean_abs`` normalisation, L1 energy preservation,
targets ``o_proj`` + ``down_proj``, 128 calibration examples, reference mini-batch 2, seed 42.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

GradNorm = Literal["mean_abs", "l2", "none"]
EnergyMode = Literal["l1", "l2", "none"]
UpdateMode = Literal["multiplicative", "additive"]
Aggregation = Literal["abs_of_sum", "mean_abs"]

DEFAULT_TARGETS = ("o_proj", "down_proj")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- settings of the authors' post-hoc edits (EXTENSIONS §1, §2, §4; code in tasks/surgery/posthoc.py, tasks/surgery/rmt.py) ----
HNS_FAST = (3.4445, -4.7750, 2.0315)  # EXTENSIONS §1 step 3
HNS_STABLE = (2.0, -1.5, 0.5)


class HNSConfig(_Strict):
    """Hybrid Newton–Schulz spectral reshaping, policy ``hns`` (EXTENSIONS §1; code in tasks/surgery/posthoc.py).

    Defaults are the library/CLI defaults (8 fast + 2 stable steps, nuclear norm restored, full strength). The
    authors' 18-checkpoint cohort ran 4 + 1 (``fast_steps=4, stable_steps=1``); ``0 + 0`` is the zero rebuild.
    """

    fast_steps: int = Field(8, ge=0, description="Steps of the fast polynomial x(a + b x² + c x⁴).")
    stable_steps: int = Field(2, ge=0, description="Steps of the stable polynomial after the fast ones.")
    fast_coefficients: tuple[float, float, float] = Field(HNS_FAST, description="(a, b, c) of the fast steps.")
    stable_coefficients: tuple[float, float, float] = Field(HNS_STABLE, description="(a, b, c) of the stable steps.")
    preserve_nuclear_norm: bool = Field(True, description="Rescale to the nuclear norm Σσ of the kept part.")
    strength: float = Field(1.0, ge=0.0, le=1.0, description="Blend λ: t = σ + λ(x − σ) (0 = identity).")
    output_rank: int | None = Field(
        None, ge=1, description="Keep only the first output_rank components (the rest become 0); None = all r."
    )
    eps: float = Field(1e-7, gt=0.0, description="Floor of ‖σ‖₂ and of Σx (the fill threshold).")

    @field_validator("fast_coefficients", "stable_coefficients")
    @classmethod
    def _finite(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(math.isfinite(c) for c in v):
            raise ValueError(f"HNS coefficients must be finite, got {v}; e.g. (3.4445, -4.775, 2.0315)")
        return v


class TemperatureConfig(_Strict):
    """The ``ablation_temperature`` transform t = S·σ^τ/Σσ^τ (EXTENSIONS §4; code in tasks/surgery/posthoc.py).

    The authors' bank builds τ ∈ {1.0, 0.75, 0.5, 0.25, 0.0}, with no single default; 0.5 (the bank's middle, the
    first non-trivial value of a coarse sweep: τ = 1 is the identity, τ = 0 is flat_nuclear) is this project's.
    """

    tau: float = Field(0.5, ge=0.0, description="Temperature τ (finite, >= 0): 1 = identity, 0 = flat nuclear.")

    @field_validator("tau")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"ablation_temperature.tau must be finite and >= 0, got {v}; e.g. 0.5")
        return v


class RMTConfig(_Strict):
    """Marchenko–Pastur labelling and bulk-only editing, policy ``rmt_bulk_only`` (EXTENSIONS §2; tasks/surgery/rmt.py).

    Defaults are the reference CLI's (``--rmt_tail_count 0``, ``--rmt_edge_margin 0.10``); the wrapped policy
    defaults to the reference edit CLI's default mode, ``abs_select`` (METHOD §16; the §2 test vectors use it).
    """

    tail_count: int = Field(0, ge=0, description="Tail size t (smallest σ); 0 = ⌊r/2⌋; clipped to [1, r−1].")
    edge_margin: float = Field(0.10, ge=0.0, description="Margin m around the conservative MP edge e.")
    base_policy: str = Field(
        "abs_select", min_length=1, description="Gradient policy applied to the bulk components (by name)."
    )


class ParaConfig(_Strict):
    """ε-PARA, one global energy threshold over the pooled spectra (EXTENSIONS §3; code in tasks/surgery/para.py).

    The authors' reports ran ε ∈ {0.90, 0.95, 0.99}, all reported and none selected. This project registers the
    three as ``para`` (ε configurable, default 0.90), ``para_e95`` and ``para_e99`` (defaults 0.95 and 0.99), so
    one nightly run can try all three and let the gate choose.
    """

    epsilon: float = Field(0.90, gt=0.0, le=1.0, description="Share ε ∈ (0, 1] of the pooled energy Σ(|s|σ)² kept.")


SelectionRule = Literal["importance_compatible", "importance"]
SELECTION_RULES: tuple[SelectionRule, ...] = ("importance_compatible", "importance")


class SensitivityHNSConfig(_Strict):
    """Calibration-guided module selection, policy ``sensitivity_hns`` (EXTENSIONS §7; code in
    tasks/surgery/module_selection.py).

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


class EditConfig(_Strict):
    """Parameters of every reweighting policy, with clamp and energy preservation (METHOD §6, §7, §9, §12).

    The post-hoc methods of EXTENSIONS keep their settings in one sub-model each, under the policy's name
    (``hns``, ``ablation_temperature``, ``rmt_bulk_only``); they ignore the other fields unless they say so.
    """

    core_frac: float = Field(0.2, ge=0.0, le=1.0, description="Fraction of components (by |g| rank) amplified.")
    noise_frac: float = Field(0.2, ge=0.0, le=1.0, description="Fraction of components (lowest |g|) suppressed.")
    amp_factor: float = Field(1.25, gt=0.0, description="Multiplier for core components.")
    sup_factor: float = Field(0.80, ge=0.0, description="Multiplier for noise components.")
    mid_factor: float = Field(1.0, ge=0.0, description="Multiplier for all other components.")
    min_core_k: int = Field(1, ge=0, description="Minimum number of core components.")
    smooth_temperature: float = Field(0.35, gt=0.0, description="smooth_abs sigmoid temperature (× quantile spread).")
    smooth_center_q: float = Field(0.5, ge=0.0, le=1.0, description="smooth_abs centre quantile (0.5 = median).")
    smooth_align_mid: bool = Field(True, description="Shift the smooth_abs sigmoid so gate(centre) = mid_factor.")
    eta: float = Field(0.2, ge=0.0, description="Step size of symmetric grad_direction.")
    update_mode: UpdateMode = Field("multiplicative", description="grad_direction update: σ·exp(−e) or σ − e.")
    asymmetric_update: bool = Field(True, description="Asymmetric grad_direction (drivers' setting).")
    eta_suppress: float = Field(2.0, ge=0.0, description="Asymmetric step for components with g > 0.")
    eta_enhance: float = Field(0.2, ge=0.0, description="Asymmetric step for components with g < 0.")
    pos_power: float = Field(1.0, gt=0.0, description="Power applied to the positive part of ĝ.")
    grad_norm: GradNorm = Field("mean_abs", description="Per-module normalisation of the sensitivities.")
    preserve_energy: EnergyMode = Field("l1", description="Norm of σ kept after the edit: l1 (nuclear), l2, none.")
    sigma_clip_min: float = Field(0.0, ge=0.0, description="Absolute floor applied to σ̃ before renormalisation.")
    z_high: float = Field(1.0, description="z_score: z above which components are amplified.")
    z_low: float = Field(-0.5, description="z_score: z below which components are suppressed.")
    z_tau: float = Field(0.2, gt=0.0, description="z_score sigmoid temperature.")
    z_fallback_std: float = Field(1e-6, ge=0.0, description="z_score: identity if std below this.")
    robust_z_high: float = Field(1.0, description="robust_z: z above which components are amplified.")
    robust_z_low: float = Field(-0.5, description="robust_z: z below which components are suppressed.")
    robust_z_tau: float = Field(0.2, gt=0.0, description="robust_z sigmoid temperature.")
    robust_fallback_sigma: float = Field(1e-6, ge=0.0, description="robust_z: identity if robust σ below this.")
    hns: HNSConfig = Field(default_factory=HNSConfig, description="Settings of the hns policy (EXTENSIONS §1).")
    ablation_temperature: TemperatureConfig = Field(
        default_factory=TemperatureConfig, description="Settings of ablation_temperature (EXTENSIONS §4)."
    )
    rmt_bulk_only: RMTConfig = Field(
        default_factory=RMTConfig, description="Settings of the rmt_bulk_only policy (EXTENSIONS §2)."
    )
    para: ParaConfig = Field(default_factory=ParaConfig, description="Settings of the para policy (EXTENSIONS §3).")
    para_e95: ParaConfig = Field(
        default_factory=lambda: ParaConfig(epsilon=0.95), description="Settings of para_e95 (EXTENSIONS §3)."
    )
    para_e99: ParaConfig = Field(
        default_factory=lambda: ParaConfig(epsilon=0.99), description="Settings of para_e99 (EXTENSIONS §3)."
    )
    sensitivity_hns: SensitivityHNSConfig = Field(
        default_factory=SensitivityHNSConfig, description="Settings of sensitivity_hns (EXTENSIONS §7)."
    )

    @model_serializer(mode="wrap")
    def _drop_default_method_settings(self, handler):
        # A post-hoc method's settings at their defaults are left out of dumps, so the candidate and result keys
        # (hashes of these dumps) of runs made before the methods existed stay the same; validation fills them in.
        data = handler(self)
        for name in METHOD_SETTINGS:
            default = type(self).model_fields[name].get_default(call_default_factory=True)
            if isinstance(data, dict) and getattr(self, name) == default:
                data.pop(name, None)
        return data

    @model_validator(mode="after")
    def _check_factors(self) -> "EditConfig":
        if self.sup_factor > self.amp_factor:
            raise ValueError(
                f"sup_factor ({self.sup_factor}) is larger than amp_factor ({self.amp_factor}); "
                "suppression must not exceed amplification — swap them or lower sup_factor."
            )
        return self


# EditConfig fields holding a post-hoc method's settings (a sub-model each, named after the registered policy):
# derived from the fields, so adding a method's settings is one field. Left out of dumps at their defaults.
METHOD_SETTINGS: tuple[str, ...] = tuple(
    name for name, f in EditConfig.model_fields.items() if isinstance(f.annotation, type)
    and issubclass(f.annotation, BaseModel)
)


class TargetConfig(_Strict):
    """Which LoRA modules are edited (METHOD §2.2, §8.1)."""

    target_modules: tuple[str, ...] = Field(
        DEFAULT_TARGETS, min_length=1, description="Last dotted names of modules to edit, e.g. o_proj, down_proj."
    )
    layer_min: int | None = Field(None, ge=0, description="First layer index edited (inclusive); None = all.")
    layer_max: int | None = Field(None, ge=0, description="Last layer index edited (inclusive); None = all.")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _split(cls, v):
        if isinstance(v, str):
            v = [s.strip() for s in v.split(",") if s.strip()]
        if isinstance(v, (list, tuple)) and any(s in ("all", "all_modules") for s in v):
            v = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        return tuple(v)

    @model_validator(mode="after")
    def _check_range(self) -> "TargetConfig":
        if self.layer_min is not None and self.layer_max is not None and self.layer_min > self.layer_max:
            raise ValueError(
                f"layer_min ({self.layer_min}) > layer_max ({self.layer_max}); give an inclusive range low..high."
            )
        return self

    def selects(self, module_name: str, layer_index: int | None) -> bool:
        """True if a module (by its last dotted name and layer index) is an edit target."""
        if module_name.rsplit(".", 1)[-1] not in self.target_modules:
            return False
        if layer_index is None:
            return self.layer_min is None and self.layer_max is None
        if self.layer_min is not None and layer_index < self.layer_min:
            return False
        if self.layer_max is not None and layer_index > self.layer_max:
            return False
        return True


class CalibConfig(_Strict):
    """Calibration pass (METHOD §4, §5)."""

    n_samples: int = Field(128, ge=1, description="Number of calibration examples (first N, no shuffle).")
    start: int = Field(0, ge=0, description="Offset of the first example.")
    shuffle: bool = Field(False, description="Shuffle before taking N (seeded by `seed`).")
    batch_size: int = Field(8, ge=1, description="Examples per forward/backward batch (compute only).")
    reference_batch_size: int = Field(
        2,
        ge=1,
        description="Mini-batch whose token-mean loss the reference sums (abs_of_sum weights examples as it did).",
    )
    aggregation: Aggregation = Field(
        "abs_of_sum", description="abs_of_sum: |Σ_batches g| (reference); mean_abs: mean over examples of |g|."
    )
    max_seq_len: int | None = Field(None, ge=8, description="Truncate sequences (None = no truncation, as the paper).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Model dtype during calibration; auto = float16 on CUDA (reference), float32 on CPU."
    )
    seed: int = Field(42, description="Seed for shuffling and for random_index.")


GammaRule = Literal["calib_loss", "held_out_metric"]
PROTOCOL1_GRID = (1.0, 0.85, 0.70, 0.60, 0.50, 0.40)  # EXTENSIONS §8.3 Protocol 1
DEFAULT_GAMMA_GRID = (*PROTOCOL1_GRID, 0.30, 0.20)  # extended below 0.40 (EXTENSIONS §11: the pick sat on the edge)


class GlobalScalarConfig(_Strict):
    """The calibrated global scalar control ``global_scalar`` (EXTENSIONS §8.3, §11; code in tasks/surgery/global_scalar.py).

    t_m = γσ_m in every edited module, rebuilt one-sided. γ is picked from ``grid`` on data never used for the
    gate's decision; an exact tie goes to the γ closest to 1.
    """

    grid: tuple[float, ...] = Field(
        DEFAULT_GAMMA_GRID, min_length=1, description="Candidate γ, locked in advance (Protocol 1 + 0.30, 0.20)."
    )
    rule: GammaRule = Field(
        "calib_loss",
        description="calib_loss: lowest mean token CE on held-out calibration examples (forward only); "
        "held_out_metric: highest score(γ) from a caller-provided held-out metric (Protocol 1).",
    )
    holdout: int = Field(
        32,
        ge=1,
        description="calib_loss: held-out calibration examples, the ones right after the sensitivity slice "
        "(positions calib.start + calib.n_samples onwards in the same, possibly shuffled, order).",
    )

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        bad = [g for g in v if not (g >= 0.0 and g < float("inf"))]
        if bad:
            raise ValueError(f"global_scalar.grid must hold finite values >= 0, got {bad}; e.g. (1.0, 0.85, 0.7)")
        if len(set(v)) != len(v):
            raise ValueError(f"global_scalar.grid has repeated values {sorted(v)}; list each γ once")
        return v


class SurgeryConfig(_Strict):
    """Everything that determines an edit: used as the cache key of candidates."""

    edit: EditConfig = Field(default_factory=EditConfig)
    targets: TargetConfig = Field(default_factory=TargetConfig)
    calib: CalibConfig = Field(default_factory=CalibConfig)
    policies: tuple[str, ...] = Field(
        ("abs_select", "smooth_abs", "grad_direction"), description="Non-control policies to apply."
    )
    random_control_seeds: tuple[int, ...] = Field(
        (42, 43, 44), description="Seeds of the random_index control (the best of them must be beaten)."
    )
    global_scalar: GlobalScalarConfig = Field(
        default_factory=GlobalScalarConfig, description="How γ of the global_scalar control is chosen."
    )


def default_data_dir() -> "Path":
    """The data directory: ``$SPECTRAL_SURGERY_HOME`` or ``~/.spectral-surgery`` (registry, store, model cache)."""
    import os
    from pathlib import Path

    return Path(os.environ.get("SPECTRAL_SURGERY_HOME") or Path.home() / ".spectral-surgery").expanduser()
