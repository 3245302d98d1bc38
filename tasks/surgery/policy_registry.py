"""The policy registry and the shared σ math every registered edit builds on (METHOD §6, §9).

Paper: https://arxiv.org/abs/2603.03995. This module holds the machinery only: what a policy sees
(:class:`PolicyInputs`), what a registration records (:class:`PolicySpec`, its ``Role`` and ``Rebuild`` form),
the registry itself (:func:`register_policy`, :func:`get_policy`, :func:`list_policies`,
the one :class:`tasks.names.UnknownNameError`) and the two helpers shared by the policies and the post-hoc edits,
:func:`normalize` (§6) and :func:`preserve_energy` (§9).

It imports none of the modules that register policies, so they can all import it without a cycle: the paper's
policies, the control ladder and :func:`apply_policy` live in :mod:`tasks.surgery.policies` (which re-exports every name
here); the authors' post-hoc edits in :mod:`tasks.surgery.posthoc`, :mod:`tasks.surgery.rmt`, :mod:`tasks.surgery.para`
and :mod:`tasks.surgery.module_selection`. The registry is complete once :mod:`tasks.surgery.policies` is imported: it
imports the post-hoc modules, so they register, and importing it first
gives the canonical order of :func:`list_policies` (the paper's policies, the control ladder, then the post-hoc
edits). Lookups run at call time, so an edit may resolve another by name (``rmt_bulk_only``'s base policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from pydantic import BaseModel, ValidationError
from torch import Tensor

from spectral_surgery.tasks.config import EditConfig, EnergyMode, GradNorm, declare_edit
from spectral_surgery.tasks.names import Registry

EPS = 1e-8  # the reference's floor for every denominator, spread and temperature (the policies' too)

Role = Literal["policy", "random_control", "scalar_control", "canary", "posthoc"]
ROLES: tuple[Role, ...] = ("policy", "random_control", "scalar_control", "canary", "posthoc")
Rebuild = Literal["balanced", "one_sided", "rank_changing"]
REBUILDS: tuple[Rebuild, ...] = ("balanced", "one_sided", "rank_changing")
NEVER_PROMOTED: tuple[Role, ...] = ("random_control", "canary")


@dataclass(frozen=True)
class PolicyInputs:
    """What a policy sees for one module (all shape (r,), fp32, one device).

    Attributes:
        sigma0: Original singular values σ0 (descending, >= 0).
        magnitude: Normalised sensitivity magnitude â (METHOD §6).
        signed: Normalised signed sensitivity ĝ (METHOD §6).
        generator: CPU generator for ``random_index``; None means torch's global generator.
        gamma: The global scale γ of ``global_scalar`` (None for every other policy).
        shape: The module's layer shape ``(d_out, d_in)`` (rows of U, rows of V), for the Marchenko–Pastur
            methods (EXTENSIONS §2, §6); None when unknown.
        scaling: The module's LoRA scaling s (α/r, or α/√r with rsLoRA), for edits that weigh modules against
            each other (ε-PARA pools |s|·σ, EXTENSIONS §3); None when unknown.
        pooled: The facts a pooled edit computed over every module of the adapter before editing any (its
            :attr:`PolicySpec.pool`, e.g. ε-PARA's global threshold θ); None for per-module edits.
        name: The module's name (``model.layers.0.self_attn.o_proj``), for edits that treat modules apart
            (``sensitivity_hns`` edits only the modules its pool chose); None when unknown.
        layer: The module's layer index (``.layers.<i>.``), or None.
        batch_grads: (n_b, r) float64 per-mini-batch σ-gradients (g including s), given to a data edit's ``pool``
            only (:func:`tasks.surgery.calibration.batch_gradients`); None elsewhere or without a gradient.
    """

    sigma0: Tensor
    magnitude: Tensor
    signed: Tensor
    generator: torch.Generator | None = None
    gamma: float | None = None
    shape: tuple[int, int] | None = None
    scaling: float | None = None
    pooled: dict | None = None
    name: str | None = None
    layer: int | None = None
    batch_grads: Tensor | None = None


@dataclass(frozen=True)
class PolicySpec:
    """A registered policy.

    Attributes:
        name: Registered name.
        fn: ``(PolicyInputs, EditConfig) -> σ̃`` (before clamp and energy preservation).
        uses_sensitivity: False for controls that ignore the gradients.
        role: ``policy`` (a candidate), ``random_control`` (the matched random control of METHOD §7.3),
            ``scalar_control`` (the calibrated global scalar, EXTENSIONS §8.3: a legitimate edit that may be
            promoted when it wins), ``canary`` (the zero rebuild, EXTENSIONS §8.4: a noise floor) or ``posthoc``
            (the authors' post-hoc edits, EXTENSIONS §1-§6: candidates, promoted like a policy when they win).
        description: One line for listings.
        rebuild: Factor form of the written adapter: ``balanced`` (B' = U diag(√t), A' = diag(√t) Vᵀ,
            METHOD §10), ``one_sided`` (B' = U diag(t), A' = Vᵀ, EXTENSIONS §0) or ``rank_changing`` (balanced on
            the components with t > 0 only, so a module's rank becomes their count k; the adapter config gets
            ``rank_pattern``/``alpha_pattern`` entries for k ≠ r and ``exclude_modules`` for k = 0, EXTENSIONS §3).
        postprocess: Apply ``sigma_clip_min`` and energy preservation after ``fn`` (False: ``fn``'s t is exact).
        needs_gamma: ``fn`` reads ``PolicyInputs.gamma``, which must then be given.
        needs_data: The edit needs the calibration pass (its gradients, or held-out examples for γ); False for
            data-free edits, which depend on the adapter alone and edit every target module, gradient or not
            (:func:`tasks.surgery.edit.prepare_data_free` serves them without a model). ``uses_sensitivity`` is not the
            same thing: ``global_scalar`` ignores gradients but chooses γ on data, and ``random_index`` ignores
            them but is matched to the modules the gradient pass reached (METHOD §7.3, §11).
        needs_shape: ``fn`` reads ``PolicyInputs.shape``, which must then be given.
        keep_identical: A module whose new σ equals σ0 exactly keeps its original factor bytes instead of being
            rebuilt (the identity short-circuit of EXTENSIONS §0, used by ``dg_hard``).
        describe: Optional ``(PolicyInputs, EditConfig) -> dict`` of per-module facts for the edit manifest
            (labels, thresholds), JSON-serialisable.
        reads: The :class:`tasks.config.EditConfig` fields ``fn`` (with ``describe`` and ``pool``) reads: a tuple of
            names, or ``(EditConfig) -> tuple`` where they depend on the values (``rmt_bulk_only`` reads its base
            policy's). What :func:`tasks.surgery.policies.apply_policy` reads on its behalf is added by
            :meth:`settings` (``grad_norm`` when it uses the sensitivities; ``sigma_clip_min`` and
            ``preserve_energy`` when it is post-processed), and so is the edit's own section (``settings_model``).
            A candidate is keyed by exactly these values (:func:`tasks.keys.candidate_key`), so changing a setting
            rewrites only the candidates that read it.
        pool: Optional ``(list[PolicyInputs], EditConfig) -> dict`` run once over every module the edit changes
            (in module order, each with its σ0, ``scaling``, ``shape``, ``name`` and ``layer``) before any module
            is edited; the dict (JSON-serialisable facts, e.g. ε-PARA's threshold, the modules ``sensitivity_hns``
            chose) reaches ``fn`` and ``describe`` as ``PolicyInputs.pooled`` and the edit manifest as ``pooled``.
            A data-free edit's pool sees every target module; an edit that needs data sees the modules with a
            gradient, each with its per-mini-batch gradients ``batch_grads``.
        settings_model: The edit's own settings model (a frozen pydantic model refusing unknown keys, declared beside
            its code), or None: ``edit.<name>`` in a run config is validated against it, ``fn`` reads it as
            ``cfg.<name>`` and the edit's candidates (only theirs) are keyed by it.
        settings_default: The settings in force when a run config gives no ``edit.<name>`` section (None without a
            ``settings_model``).
    """

    name: str
    fn: Callable[[PolicyInputs, EditConfig], Tensor]
    uses_sensitivity: bool
    role: Role
    description: str
    rebuild: Rebuild = "balanced"
    postprocess: bool = True
    needs_gamma: bool = False
    needs_data: bool = True
    needs_shape: bool = False
    keep_identical: bool = False
    describe: Callable[[PolicyInputs, EditConfig], dict] | None = None
    pool: Callable[[list[PolicyInputs], EditConfig], dict] | None = None
    reads: tuple[str, ...] | Callable[[EditConfig], tuple[str, ...]] = ()
    settings_model: type[BaseModel] | None = None
    settings_default: BaseModel | None = None

    def settings(self, cfg: EditConfig) -> tuple[str, ...]:
        """The EditConfig settings this edit reads under ``cfg``, sorted: its declared ``reads``, its own section
        (when it declared a ``settings_model``) and what :func:`tasks.surgery.policies.apply_policy` reads for it
        (``grad_norm``, ``sigma_clip_min``, ``preserve_energy``)."""
        declared = self.reads(cfg) if callable(self.reads) else self.reads
        own = (self.name,) if self.settings_model is not None else ()
        engine = (("grad_norm",) if self.uses_sensitivity else ()) + \
            (("sigma_clip_min", "preserve_energy") if self.postprocess else ())
        return tuple(sorted(set(declared) | set(own) | set(engine)))

    @property
    def is_control(self) -> bool:
        """True for arms that are never promoted (random controls and canaries); False for the scalar control."""
        return self.role in NEVER_PROMOTED

    @property
    def promotable(self) -> bool:
        """True if the gate may promote an adapter edited this way (``policy``, ``scalar_control``, ``posthoc``)."""
        return not self.is_control


# Listing order, whatever the import order: the paper's policies with their random control, the control ladder,
# then the post-hoc edits (within a group, registration order).
_LISTING_GROUP = {"policy": 0, "random_control": 0, "scalar_control": 1, "canary": 1, "posthoc": 2}

POLICIES: Registry[PolicySpec] = Registry("policy")


def register_policy(
    name: str,
    *,
    uses_sensitivity: bool = True,
    is_control: bool = False,
    role: Role | None = None,
    description: str = "",
    aliases: tuple[str, ...] = (),
    rebuild: Rebuild = "balanced",
    postprocess: bool = True,
    needs_gamma: bool = False,
    needs_data: bool | None = None,
    needs_shape: bool = False,
    keep_identical: bool = False,
    describe: Callable[[PolicyInputs, EditConfig], dict] | None = None,
    pool: Callable[[list[PolicyInputs], EditConfig], dict] | None = None,
    reads: tuple[str, ...] | Callable[[EditConfig], tuple[str, ...]] = (),
    settings: type[BaseModel] | BaseModel | None = None,
) -> Callable[[Callable[[PolicyInputs, EditConfig], Tensor]], Callable[[PolicyInputs, EditConfig], Tensor]]:
    """Decorator registering a policy function under ``name`` (and optional ``aliases``).

    Args:
        name: Registered name (lowercase by convention).
        uses_sensitivity: False if ``fn`` ignores â and ĝ (their NaN/sign checks are then skipped).
        is_control: Shorthand kept for older callers: ``role="random_control"``.
        role: See :class:`PolicySpec`; default ``random_control`` if ``is_control`` else ``policy``.
        description: One line for listings (default: the first docstring line).
        aliases: Further names resolving to this spec.
        rebuild: Factor form of the written adapter (see :class:`PolicySpec`).
        postprocess: Clamp and preserve energy after ``fn``.
        needs_gamma: ``fn`` needs ``PolicyInputs.gamma``.
        needs_data: See :class:`PolicySpec`; default ``uses_sensitivity or needs_gamma``.
        needs_shape: ``fn`` needs ``PolicyInputs.shape``.
        keep_identical: Keep the original bytes of modules whose σ is unchanged (see :class:`PolicySpec`).
        describe: Per-module manifest facts (see :class:`PolicySpec`).
        pool: Facts computed once over all modules before editing (see :class:`PolicySpec`).
        reads: The EditConfig fields the edit reads (see :class:`PolicySpec`): the settings its candidates are
            keyed by.
        settings: The edit's own settings: a pydantic model class (subclass :class:`tasks.config.SettingsModel`;
            its defaults apply), or an instance of one (those values are the defaults: ``para_e95`` is
            ``ParaConfig(epsilon=0.95)``). A run config gives them as ``edit: {<name>: {...}}``; they key this
            edit's candidates only.

    Raises:
        ValueError: ``name`` or an alias is empty or already registered (as a name or an alias); an unknown
            role or rebuild form; ``is_control=True`` with a role that is promoted; ``reads`` names a setting
            EditConfig does not have; ``settings`` is not a frozen pydantic model refusing unknown keys, its
            defaults do not validate, or ``name`` is an EditConfig field.

    Example (one file: the settings model, the edit, its registration)::

        class TailCut(SettingsModel):
            keep: int = Field(1, ge=0, description="Components kept.")

        @register_policy("tail_cut", role="posthoc", uses_sensitivity=False, settings=TailCut)
        def tail_cut(inp: PolicyInputs, cfg: EditConfig) -> Tensor:
            ...  # cfg.tail_cut is a TailCut: the run config's edit.tail_cut, else TailCut()
    """
    if role is None:
        role = "random_control" if is_control else "policy"
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}; got {role!r}")
    if is_control and role not in NEVER_PROMOTED:
        raise ValueError(f"is_control=True contradicts role={role!r} (which may be promoted); give one of them")
    if rebuild not in REBUILDS:
        raise ValueError(f"rebuild must be one of {', '.join(REBUILDS)}; got {rebuild!r}")
    model, default = _settings_of(name, settings)
    sections = [n for n in POLICIES if POLICIES.get(n).settings_model is not None] + ([name] if model else [])
    unknown = [] if callable(reads) else [f for f in reads if f not in EditConfig.model_fields and f not in sections]
    if unknown:
        raise ValueError(f"policy {name!r}: reads names {unknown}, which EditConfig does not have; declare the "
                         f"settings the policy reads (EditConfig has {', '.join([*EditConfig.model_fields, *sections])}"
                         f"), or its own as settings=Model")
    for n in (name, *aliases):  # refused at decoration time, before the body is built
        if not isinstance(n, str) or not n.strip():
            raise ValueError(f"policy names must be non-empty strings, got {n!r}")
        if n in POLICIES:
            raise ValueError(f"policy name {n!r} is already registered; pick another name")

    def deco(fn: Callable[[PolicyInputs, EditConfig], Tensor]) -> Callable[[PolicyInputs, EditConfig], Tensor]:
        desc = description or (fn.__doc__ or "").strip().split("\n", 1)[0]
        data = (uses_sensitivity or needs_gamma) if needs_data is None else bool(needs_data)
        POLICIES.add(name, PolicySpec(name, fn, uses_sensitivity, role, desc, rebuild, postprocess, needs_gamma,
                                      data, needs_shape, keep_identical, describe, pool, reads, model, default),
                     aliases=aliases)  # fmt: skip
        declare_edit(name, tuple(aliases), model, default)  # what edit.<name> is, for EditConfig's validation
        return fn

    return deco


def _settings_of(name: str, settings: type[BaseModel] | BaseModel | None) -> tuple[type[BaseModel] | None,
                                                                                   BaseModel | None]:
    """``register_policy(settings=...)`` as (model, default), checked (see :func:`register_policy`)."""
    if settings is None:
        return None, None
    model = type(settings) if isinstance(settings, BaseModel) else settings
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError(f"policy {name!r}: settings must be a pydantic model class (subclass "
                         f"spectral_surgery.tasks.config.SettingsModel) or an instance of one, got {settings!r}")
    if not model.model_config.get("frozen") or model.model_config.get("extra") != "forbid":
        raise ValueError(f"policy {name!r}: settings model {model.__name__} must be frozen and refuse unknown keys "
                         f"(its values key candidates, a misspelt key must fail): subclass tasks.config.SettingsModel")
    if name in EditConfig.model_fields:
        raise ValueError(f"policy {name!r}: its settings would be the section edit.{name}, which is an EditConfig "
                         f"field; pick another name")
    try:
        default = settings if isinstance(settings, BaseModel) else model()
    except ValidationError as e:
        first = e.errors()[0]
        raise ValueError(f"policy {name!r}: settings model {model.__name__} has no valid defaults ({first['msg']} at "
                         f"{'.'.join(map(str, first['loc']))}); give every field a valid default") from None
    return model, default


def get_policy(name: str) -> PolicySpec:
    """The spec registered under ``name`` or one of its aliases (``gd`` = ``grad_direction``).

    Raises:
        UnknownNameError: unknown name; the message lists the known names and the closest matches.
    """
    return POLICIES.get(name)


def list_policies(roles: tuple[Role, ...] | None = ("policy", "random_control")) -> list[str]:
    """Registered names (aliases excluded) whose role is in ``roles``, in registration order.

    The default lists the reweighting policies of METHOD §7/§12 and their random control; the control
    ladder's edits are ``list_policies(("scalar_control", "canary"))``, the authors' post-hoc edits
    ``list_policies(("posthoc",))`` and everything is ``list_policies(None)``, always in that group order
    (registration order within a group, so it does not depend on which module was imported first).
    """
    names = [n for n in POLICIES if roles is None or POLICIES.get(n).role in roles]
    return sorted(names, key=lambda n: _LISTING_GROUP[POLICIES.get(n).role])  # stable: registration order within


def normalize(values: Tensor, mode: GradNorm) -> Tensor:
    """Per-module normalisation of sensitivities (METHOD §6): ``mean_abs`` v/max(mean|v|, 1e-8),
    ``l2`` v/max(‖v‖₂, 1e-8), ``none`` v. Shape (r,) in, (r,) out; a new tensor."""
    if mode == "mean_abs":
        return values / values.abs().mean().clamp_min(EPS)
    if mode == "l2":
        return values / torch.linalg.vector_norm(values).clamp_min(EPS)
    if mode == "none":
        return values.clone()
    raise ValueError(f"grad_norm must be one of mean_abs, l2, none; got {mode!r}")


def preserve_energy(sigma0: Tensor, sigma_tilde: Tensor, mode: EnergyMode) -> Tensor:
    """Rescale σ̃ so that one norm of σ0 is kept (METHOD §9): ``l1`` nuclear norm (Σσ), ``l2`` Frobenius
    norm (‖σ‖₂), ``none`` unchanged. Both norms are floored at 1e-8, so an all-zero σ̃ stays zero."""
    if mode == "l1":
        return sigma_tilde * (sigma0.sum().clamp_min(EPS) / sigma_tilde.sum().clamp_min(EPS))
    if mode == "l2":
        n0 = torch.linalg.vector_norm(sigma0).clamp_min(EPS)
        return sigma_tilde * (n0 / torch.linalg.vector_norm(sigma_tilde).clamp_min(EPS))
    if mode == "none":
        return sigma_tilde.clone()
    raise ValueError(f"preserve_energy must be one of l1, l2, none; got {mode!r}")


LADDER_ROLES = {"random_control": "surgery.random_control_seeds (one random_index per seed)",
                "scalar_control": "ladder.global_scalar", "canary": "ladder.zero_rebuild"}


def ladder_member_problem(names, *, field: str = "surgery.policies") -> str | None:
    """Why ``names`` (the configured policies) may not list one of the control ladder's arms, or None.

    The ladder's controls and canaries (roles ``random_control``, ``scalar_control``, ``canary``) are added to
    every decision by the run itself, each with its own role (never promoted as a policy; ``global_scalar`` is
    chosen on held-out data); listed as a policy, one would be edited and promoted as a policy instead. Unknown
    names are left to :func:`get_policy`.
    """
    for i, name in enumerate(names):
        try:
            spec = get_policy(name)
        except KeyError:
            continue
        if spec.role in LADDER_ROLES:
            what = f"{field}[{i}] lists {spec.name}, a {spec.role.replace('_', ' ')} of the control ladder"
            if spec.name in ("random_index", "global_scalar", "zero_rebuild"):
                return f"{what}: the run adds it to every decision itself ({LADDER_ROLES[spec.role]}); remove it " \
                       f"from {field}"
            return f"{what}: a noise floor, never a candidate, so it cannot be a policy; remove it from {field}"
    return None
