"""Pydantic configuration for the Spectral Surgery engine, validated at the edge.

Defaults follow the authors' paper-run drivers (METHOD.md §16, last column): asymmetric multiplicative
``grad_direction`` with η_sup = 2.0 / η_enh = 0.2, ``mean_abs`` normalisation, L1 energy preservation,
targets ``o_proj`` + ``down_proj``, 128 calibration examples, reference mini-batch 2, seed 42.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

GradNorm = Literal["mean_abs", "l2", "none"]
EnergyMode = Literal["l1", "l2", "none"]
UpdateMode = Literal["multiplicative", "additive"]
Aggregation = Literal["abs_of_sum", "mean_abs"]

DEFAULT_TARGETS = ("o_proj", "down_proj")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingsModel(_Strict):
    """Base of an edit's own settings model (``register_policy(..., settings=Model)``): unknown keys are refused
    and values are frozen, as a key of the edit's candidates needs (a subclass adds typed, described fields)."""


def __getattr__(name: str):
    if name == "METHOD_SETTINGS":  # derived from the registry: the edits that declared their own settings
        return tuple(method_settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class EditSection(NamedTuple):
    """What ``edit.<name>`` is for one registered edit name or alias (filled in by ``register_policy``)."""

    name: str  #: the edit's registered name (an alias maps to it)
    settings_model: type[BaseModel] | None  #: the settings model the edit declared, None without one
    settings_default: BaseModel | None  #: its settings when no section is given


#: Every registered edit name and alias: what its ``edit.<name>`` section is. Filled by
#: :func:`tasks.surgery.policy_registry.register_policy` (which imports this module; this module imports no edit, so
#: there is no import cycle), and complete once ``spectral_surgery.tasks.surgery.policies`` is imported: the entry
#: points that read a config (RunConfig, the ``edit`` command, the registry's declarations) import it first when a
#: config names a section (:func:`names_edit_sections`).
EDIT_SECTIONS: dict[str, EditSection] = {}


def declare_edit(name: str, aliases: tuple[str, ...], settings_model: type[BaseModel] | None,
                 settings_default: BaseModel | None) -> None:
    """Record a registered edit's section (called by ``register_policy``, after its own checks)."""
    entry = EditSection(name, settings_model, settings_default)
    for n in (name, *aliases):
        EDIT_SECTIONS[n] = entry


def names_edit_sections(edit: Any) -> bool:
    """Whether an ``edit`` mapping (a run config's ``surgery.edit``) has a key that is no EditConfig field, i.e. the
    section of an edit's own settings: the caller then imports the edits before validating it."""
    return isinstance(edit, dict) and any(k not in EditConfig.model_fields for k in edit)


def method_settings() -> dict[str, BaseModel]:
    """Every registered edit that declared its own settings model (``register_policy(settings=...)``), by name,
    with its default settings, in registration order: the sections ``edit: {<name>: {...}}`` accepts."""
    return {n: e.settings_default for n, e in EDIT_SECTIONS.items() if e.settings_model is not None and e.name == n}


def _method_spec(name: str) -> EditSection | None:
    """The section of the edit ``name`` when it declared its own settings (and ``name`` is not an alias), else None."""
    entry = EDIT_SECTIONS.get(name)
    return entry if entry is not None and entry.settings_model is not None and entry.name == name else None


def _section_error(name: str) -> PydanticCustomError:
    """Why ``edit.<name>`` is neither an EditConfig field nor the settings of a registered edit, with the fix."""
    from spectral_surgery.tasks.names import unknown_name

    if name in EDIT_SECTIONS:
        spec = EDIT_SECTIONS[name]
        if spec.name != name:
            reason = f"{name!r} is an alias of the edit {spec.name!r}: give its settings under {spec.name}"
        else:
            reason = (f"the edit {name!r} declares no settings of its own (register_policy(..., settings=Model)); "
                      f"remove the section {name}")
    else:
        close = unknown_name("edit setting", name, EditConfig.setting_names()).close
        reason = (f"unknown key.{' Did you mean ' + ' or '.join(map(repr, close)) + '?' if close else ''} Valid keys: "
                  f"{', '.join(EditConfig.model_fields)}, and the settings of the edits "
                  f"{', '.join(method_settings())} (an edit's own settings go under its registered name)")
    return PydanticCustomError("extra_forbidden", "{reason}", {"reason": reason})


def _section_errors(name: str, error: ValidationError) -> list[InitErrorDetails]:
    # the settings model's errors, each under the section's name, so that they point at edit.<name>.<field>
    return [InitErrorDetails(type=PydanticCustomError(e["type"], "{reason}", {"reason": e["msg"]}),
                             loc=(name, *e["loc"]), input=e.get("input")) for e in error.errors()]  # fmt: skip


class EditConfig(_Strict):
    """Parameters of every reweighting policy, with clamp and energy preservation (METHOD §6, §7, §9, §12).

    An edit that declares its own settings model (``register_policy(name, settings=Model)``, beside its code) has
    them here under its registered name, ``edit: {hns: {fast_steps: 4}}``: validated against that model (an unknown
    name is refused with the closest names), read as ``cfg.hns`` (the model's defaults when the section is absent),
    and keyed into that edit's candidates only (:func:`tasks.keys.candidate_key`). The fields below are those of the
    paper's policies and of the engine; the edits of EXTENSIONS ignore them unless their ``reads`` say so.
    """

    model_config = ConfigDict(extra="allow", frozen=True)  # extra keys: the edits' sections, checked on validation

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

    @model_validator(mode="wrap")
    @classmethod
    def _method_sections(cls, data: Any, handler) -> "EditConfig":
        # A key that is no field is the section of a registered edit's own settings (its registered name), validated
        # against the model it declared; sections equal to the edit's defaults are not kept, so that dumps (and the
        # candidate and result keys hashed from them) are those of runs made before the edit existed.
        if not isinstance(data, dict):
            return handler(data)
        sections = {k: v for k, v in data.items() if k not in cls.model_fields}
        self = handler({k: v for k, v in data.items() if k in cls.model_fields})
        kept, errors = {}, []
        for name, value in sections.items():
            spec = _method_spec(name) if isinstance(name, str) else None
            if spec is None:
                errors.append(InitErrorDetails(type=_section_error(str(name)), loc=(name,), input=value))
                continue
            try:
                # a partial section overrides the edit's registered defaults (para_e95's ε is 0.95, not the
                # model class's 0.90), so a field left out means what the edit means by it
                settings = value if isinstance(value, spec.settings_model) else spec.settings_model.model_validate(
                    {**spec.settings_default.model_dump(), **value} if isinstance(value, dict) else value)
            except ValidationError as e:
                errors.extend(_section_errors(name, e))
                continue
            if settings != spec.settings_default:
                kept[name] = settings
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        self.__pydantic_extra__.clear()
        self.__pydantic_extra__.update(kept)
        return self

    def __getattr__(self, name: str) -> Any:
        # edit.<method>: the section given, else the method's registered defaults (called for names that are no field)
        if not name.startswith("_"):
            extra = self.__pydantic_extra__
            if extra and name in extra:
                return extra[name]
            if (spec := _method_spec(name)) is not None:
                return spec.settings_default
        return super().__getattr__(name)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        # the schema (Prefect's form of the flow's parameters) lists every registered edit's section with its model
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        properties = target.setdefault("properties", {})
        for name, default in method_settings().items():
            properties[name] = {**handler(type(default).__pydantic_core_schema__),
                                "default": default.model_dump(mode="json"),
                                "description": f"Settings of the {name} edit (register_policy(settings=...))."}
        target["additionalProperties"] = False  # the sections are all of them
        return schema

    @classmethod
    def setting_names(cls) -> list[str]:
        """Every setting a policy may read: the fields, then the registered edits' own settings sections."""
        return [*cls.model_fields, *method_settings()]

    @classmethod
    def section_model(cls, name: str) -> type[BaseModel] | None:
        """The settings model the registered edit ``name`` declared (the schema of ``edit.<name>``), or None."""
        spec = _method_spec(name)
        return None if spec is None else spec.settings_model

    @model_validator(mode="after")
    def _check_factors(self) -> "EditConfig":
        if self.sup_factor > self.amp_factor:
            raise ValueError(
                f"sup_factor ({self.sup_factor}) is larger than amp_factor ({self.amp_factor}); "
                "suppression must not exceed amplification — swap them or lower sup_factor."
            )
        return self


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
    """The calibrated global scalar control ``global_scalar`` (EXTENSIONS §8.3, §11; code in
    tasks/surgery/global_scalar.py).

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
