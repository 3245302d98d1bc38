"""The engine: decompose once, calibrate once, edit under every policy, write PEFT adapters.

``prepare`` does the expensive work exactly once per adapter (thin SVD of every target module and ONE
calibration pass); ``edit_sigmas`` is then a few milliseconds per policy, and ``write_candidate`` writes
an ordinary PEFT adapter plus an edit manifest. Nothing here needs Prefect or a database.

Data-free edits (``PolicySpec.needs_data`` False: the zero rebuilds and the post-hoc methods of EXTENSIONS) edit
every target module and can be served by ``prepare_data_free``, which decomposes only (no model, no pass).

Over 400 lines: the engine's one pipeline (decompose, calibrate, edit, write) kept in order in one place; split
candidate: the writing half.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from spectral_surgery.tasks.adapter_io import (LoraAdapter, LoraModule, check_base_compat, load_adapter,
                                               package_versions, select_modules)
from spectral_surgery.tasks.adapter_io import write_adapter
from spectral_surgery.tasks.surgery.calibration import (CalibExample, Sensitivity, calibration_sha256,
                                                        collect_sensitivities)
from spectral_surgery.tasks.config import EditConfig, SurgeryConfig
from spectral_surgery.tasks.surgery.decompose import Spectrum, lowrank_svd, rebuild_factors
from spectral_surgery.tasks.surgery.policies import PolicyInputs, PolicySpec, apply_policy, get_policy, pool_facts
# the engine's version, in tasks.keys: every key holds it
from spectral_surgery.tasks.keys import ENGINE_VERSION  # noqa: F401
from spectral_surgery.tasks.surgery.posthoc import effective_rank

# ``GammaSelection`` (tasks.surgery.global_scalar, which imports this module) appears in annotations only, never
# imported.

log = logging.getLogger(__name__)

@dataclass
class PreparedAdapter:
    """Everything the policies need, computed once per adapter version.

    Attributes:
        adapter: The loaded adapter (config, tensors, module table).
        modules: The selected target modules, in edit order (layer index, then name).
        spectra: Module name -> thin SVD of its unscaled B·A.
        sensitivities: Module name -> calibration sensitivities (modules whose hook never fired are absent).
        calib_sha256: Hash of the calibration examples used.
        n_examples: Number of calibration examples.
        timings: Seconds spent in each stage ("decompose", "calibrate").
    """

    adapter: LoraAdapter
    modules: list[LoraModule]
    spectra: dict[str, Spectrum]
    sensitivities: dict[str, Sensitivity]
    calib_sha256: str
    n_examples: int
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def edited_modules(self) -> list[LoraModule]:
        """Target modules that received a gradient (the reference skips the others, METHOD §11)."""
        return [m for m in self.modules if m.name in self.sensitivities]

    def modules_for(self, spec: PolicySpec) -> list[LoraModule]:
        """The modules an edit changes: those with a gradient for edits that need data, all targets otherwise."""
        return self.edited_modules if spec.needs_data else list(self.modules)


def decompose_modules(adapter: LoraAdapter, modules: list[LoraModule]) -> dict[str, Spectrum]:
    """Thin SVD of B·A for every module, through QR of the factors (never a dense ΔW)."""
    return {m.name: lowrank_svd(adapter.tensors[m.key_A], adapter.tensors[m.key_B]) for m in modules}


@contextlib.contextmanager
def attached_adapter(base_model: torch.nn.Module, adapter_dir: Path, *, adapter_name: str = "default") -> Iterator:
    """Wrap ``base_model`` with the PEFT adapter for the duration of the block, then remove the LoRA layers.

    The base model is shared across adapters in one worker, so it must come back unmodified.
    """
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(base_model, str(adapter_dir), adapter_name=adapter_name, is_trainable=True)
    try:
        peft_model.eval()
        yield peft_model
    finally:
        peft_model.base_model.unload()  # strips LoRA layers in place; base weights untouched
        for p in base_model.parameters():
            p.requires_grad_(False)


def prepare(
    base_model: torch.nn.Module,
    tokenizer,
    adapter: LoraAdapter | str | Path,
    examples: list[CalibExample],
    cfg: SurgeryConfig,
    *,
    on_batch: Callable[[int, int], None] | None = None,
) -> PreparedAdapter:
    """Decompose every target module and run ONE calibration pass for all policies.

    Args:
        base_model: The loaded base causal LM (eval mode). It is wrapped temporarily and restored.
        tokenizer: Its tokenizer.
        adapter: A loaded adapter or the path of a PEFT LoRA directory.
        examples: Calibration examples (already truncated to N).
        cfg: The surgery configuration (targets and calibration settings are used here).
        on_batch: Progress callback ``(done, total)`` over calibration batches.

    Raises:
        AdapterError: the adapter is invalid, has no target modules, or does not fit the base model.
    """
    if not isinstance(adapter, LoraAdapter):
        adapter = load_adapter(adapter)
    check_base_compat(adapter, base_model)
    modules = select_modules(adapter, cfg.targets)
    t0 = time.perf_counter()
    spectra = decompose_modules(adapter, modules)
    t1 = time.perf_counter()
    scalings = {m.name: m.scaling for m in modules}
    with attached_adapter(base_model, adapter.path) as peft_model:
        sens = collect_sensitivities(peft_model, tokenizer, examples, spectra, scalings, cfg.calib, on_batch=on_batch)
    t2 = time.perf_counter()
    missing = [m.name for m in modules if m.name not in sens]
    if missing:
        log.warning("%d target module(s) received no gradient and stay unchanged: %s", len(missing), missing[:5])
    return PreparedAdapter(
        adapter=adapter,
        modules=modules,
        spectra=spectra,
        sensitivities=sens,
        calib_sha256=calibration_sha256(examples),
        n_examples=len(examples),
        timings={"decompose": t1 - t0, "calibrate": t2 - t1},
    )


def prepare_data_free(adapter: LoraAdapter | str | Path, cfg: SurgeryConfig) -> PreparedAdapter:
    """Decompose every target module, with no model and no calibration pass, for data-free edits only.

    The result has no sensitivities (``n_examples`` 0, ``calib_sha256`` ""), so only policies with
    ``needs_data=False`` can be applied to it (:func:`edit_sigmas` refuses the others).

    Raises:
        AdapterError: the adapter is invalid or has no target modules.
    """
    if not isinstance(adapter, LoraAdapter):
        adapter = load_adapter(adapter)
    modules = select_modules(adapter, cfg.targets)
    t0 = time.perf_counter()
    spectra = decompose_modules(adapter, modules)
    return PreparedAdapter(adapter=adapter, modules=modules, spectra=spectra, sensitivities={}, calib_sha256="",
                           n_examples=0, timings={"decompose": time.perf_counter() - t0})  # fmt: skip


def pooled_facts(
    prepared: PreparedAdapter, policy: str, cfg: EditConfig, *, reference_batch_size: int | None = None
) -> dict | None:
    """The facts a pooled edit (``PolicySpec.pool``, e.g. ε-PARA's threshold, the modules ``sensitivity_hns``
    chooses) computes over every module it edits, or None for per-module edits.

    A pool that needs data also sees each module's per-mini-batch σ-gradients, rebuilt from the stored per-example
    ones over mini-batches of ``reference_batch_size`` (``cfg.calib.reference_batch_size``; None: not given)."""
    spec = get_policy(policy)
    if spec.pool is None:
        return None
    mods = prepared.modules_for(spec)
    rows = None
    if spec.needs_data and reference_batch_size is not None:
        rows = [prepared.sensitivities[m.name].per_batch(reference_batch_size) for m in mods]
    return pool_facts(spec.name, [(prepared.spectra[m.name].S.detach().cpu().float(), m.scaling,
                                   _shape(prepared.spectra[m.name])) for m in mods], cfg,
                      names=[m.name for m in mods], layers=[m.layer_index for m in mods],
                      batch_grads=rows)  # fmt: skip


def _shape(sp: Spectrum) -> tuple[int, int]:
    return int(sp.U.shape[0]), int(sp.V.shape[0])


def edit_sigmas(
    prepared: PreparedAdapter,
    policy: str,
    cfg: EditConfig,
    *,
    seed: int = 42,
    gamma: float | None = None,
    reference_batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """New singular values σ' per edited module under one policy (U and V are kept).

    ``random_index`` draws from one CPU generator seeded once with ``seed`` and consumed in module order,
    as the reference's global generator is (METHOD §7.3). ``gamma`` is the global scale of ``global_scalar``.
    Data-free policies edit every target module (a module without a gradient gets zero sensitivities, which
    they ignore); each policy sees its module's layer shape ``(d_out, d_in)`` and LoRA scaling, and a pooled
    edit (ε-PARA, ``sensitivity_hns``) its facts over all modules (:func:`pooled_facts`; ``reference_batch_size``
    is the calibration's mini-batch, which ``sensitivity_hns`` needs).

    Raises:
        ValueError: a policy that needs data on an adapter prepared without calibration (:func:`prepare_data_free`).
    """
    spec = get_policy(policy)  # fail fast with a did-you-mean on unknown names
    if spec.needs_data and prepared.n_examples == 0 and not prepared.sensitivities:
        raise ValueError(f"policy {spec.name!r} needs the calibration pass, but this adapter was prepared without "
                         "data (prepare_data_free); prepare it with tasks.surgery.edit.prepare")  # fmt: skip
    gen = torch.Generator(device="cpu").manual_seed(seed)
    pooled = pooled_facts(prepared, policy, cfg, reference_batch_size=reference_batch_size)
    out: dict[str, torch.Tensor] = {}
    for m in prepared.modules_for(spec):
        sp = prepared.spectra[m.name]
        sigma0 = sp.S.detach().cpu().float()
        s = prepared.sensitivities.get(m.name)
        mag, sgn = (s.magnitude.float(), s.signed.float()) if s is not None else (torch.zeros_like(sigma0),) * 2
        out[m.name] = apply_policy(policy, sigma0, mag, sgn, cfg, gen, gamma=gamma, shape=_shape(sp),
                                   scaling=m.scaling, pooled=pooled, module=m.name, layer=m.layer_index)  # fmt: skip
    return out


def rebuilt_tensors(
    prepared: PreparedAdapter,
    sigmas: dict[str, torch.Tensor],
    *,
    form: str = "balanced",
    keep_identical: bool = False,
) -> dict[str, torch.Tensor]:
    """LoRA factors in the original dtypes, keyed by state-dict key: ``balanced`` B' = U diag(√σ'),
    A' = diag(√σ') Vᵀ (the policies'); ``one_sided`` B' = U diag(σ'), A' = Vᵀ (the common-basis controls');
    ``rank_changing`` balanced on the components with σ' > 0 only, so the factors have k rows/columns (ε-PARA;
    a module with k = 0 is left out here and removed by :func:`rank_changes`).
    With ``keep_identical`` a module whose σ' equals its σ exactly is left out, so it keeps its original bytes
    (the identity short-circuit of EXTENSIONS §0)."""
    tensors: dict[str, torch.Tensor] = {}
    for m in prepared.modules:
        if m.name not in sigmas:
            continue
        if keep_identical and torch.equal(sigmas[m.name], prepared.spectra[m.name].S.detach().cpu().float()):
            continue
        a_old, b_old = prepared.adapter.tensors[m.key_A], prepared.adapter.tensors[m.key_B]
        sp, sigma = prepared.spectra[m.name], sigmas[m.name]
        if form == "rank_changing":
            keep = sigma > 0
            if not bool(keep.any()):
                continue
            if not bool(keep.all()):
                sp, sigma = Spectrum(sp.U[:, keep], sp.S[keep], sp.V[:, keep]), sigma[keep]
        a_new, b_new = rebuild_factors(sp, sigma, dtype_A=a_old.dtype, dtype_B=b_old.dtype,
                                       form="one_sided" if form == "one_sided" else "balanced",
                                       rank=None if form == "rank_changing" else a_old.shape[0])  # fmt: skip
        tensors[m.key_A], tensors[m.key_B] = a_new.cpu().contiguous(), b_new.cpu().contiguous()
    return tensors


@dataclass(frozen=True)
class RankChanges:
    """How a rank-changing edit rewrites the adapter config (EXTENSIONS §3 step 5).

    Attributes:
        config: The new ``adapter_config.json`` (the source's, with the patterns and exclusions below merged in).
        removed: State-dict keys dropped (the ``lora_A``/``lora_B`` of every module that keeps no component).
        ranks: Module name -> new rank k, for every module whose rank changed (k = 0: removed).
    """

    config: dict
    removed: tuple[str, ...]
    ranks: dict[str, int]


def rank_changes(prepared: PreparedAdapter, sigmas: dict[str, torch.Tensor]) -> RankChanges:
    """The config and key changes of a ``rank_changing`` edit: k = #(σ' > 0) per module.

    For 0 < k ≠ r: ``rank_pattern[name] = k`` and ``alpha_pattern[name] = s·k`` (``s·√k`` with rsLoRA), so the
    module's scaling s is unchanged; keyed by the module's path without ``base_model.model.`` and placed *before*
    any pattern the source already had, since PEFT applies the first pattern that matches. For k = 0 the module's
    tensors are dropped and its name joins ``exclude_modules`` (a list is extended; a regex string ``R`` becomes
    ``(?:R)|name|…``, which PEFT full-matches). Modules keeping their rank are untouched.
    """
    # here, not at the top: tasks.surgery.policies registers it in order
    from spectral_surgery.tasks.surgery.para import rank_preserving_alpha

    config = json.loads(json.dumps(prepared.adapter.config))
    use_rslora = bool(config.get("use_rslora", False))
    ranks: dict[str, int] = {}
    new_r: dict[str, int] = {}
    new_alpha: dict[str, float] = {}
    excluded: list[str] = []
    removed: list[str] = []
    for m in prepared.modules:
        if m.name not in sigmas:
            continue
        k = int((sigmas[m.name] > 0).sum())
        if k == m.r:
            continue
        ranks[m.name] = k
        if k == 0:
            excluded.append(m.name)
            removed += [m.key_A, m.key_B]
        else:
            new_r[m.name] = k
            new_alpha[m.name] = rank_preserving_alpha(m.scaling, k, use_rslora)
    for field_name, ours in (("rank_pattern", new_r), ("alpha_pattern", new_alpha)):
        if ours:
            theirs = config.get(field_name) or {}
            config[field_name] = {**ours, **{k: v for k, v in theirs.items() if k not in ours}}
    if excluded:
        old = config.get("exclude_modules")
        if isinstance(old, str) and old:
            config["exclude_modules"] = "|".join([f"(?:{old})", *(re.escape(n) for n in excluded)])
        else:
            config["exclude_modules"] = [*(old or []), *(n for n in excluded if n not in (old or []))]
    return RankChanges(config, tuple(removed), ranks)


def spectrum_summary(prepared: PreparedAdapter, sigmas: dict[str, torch.Tensor]) -> dict:
    """Per-policy summary: modules edited, scalars edited, mean |σ'/σ − 1| over components with σ > 0."""
    ratios = []
    n_scalars = 0
    for name, new in sigmas.items():
        old = prepared.spectra[name].S.cpu().float()
        n_scalars += old.numel()
        nz = old > 1e-12
        ratios.append((new[nz] / old[nz] - 1).abs())
    mean_change = float(torch.cat(ratios).mean()) if ratios and sum(r.numel() for r in ratios) else 0.0
    return {"modules_edited": len(sigmas), "scalars_edited": n_scalars, "mean_abs_rel_change": mean_change}


def build_manifest(
    prepared: PreparedAdapter,
    policy: str,
    cfg: SurgeryConfig,
    sigmas: dict[str, torch.Tensor],
    seed: int,
    selection: GammaSelection | None = None,
) -> dict:
    """The edit manifest written beside every edited adapter (JSON-serialisable).

    ``role``/``is_control``/``promotable``/``needs_data`` come from the policy registry; ``rebuild`` is the factor
    form. ``parameters`` holds the resolved EditConfig settings the policy reads (what its candidate is keyed by,
    :func:`tasks.keys.policy_settings`); a post-hoc method's own settings are also under ``settings``; each module has
    its effective rank before and after (EXTENSIONS §0) and the policy's ``describe`` facts (e.g. RMT labels), and
    modules without a gradient have ``sensitivity`` None.
    With a γ selection (``global_scalar``) it also holds ``gamma``, ``gamma_rule``, ``gamma_grid`` and
    ``gamma_scores`` (see :meth:`tasks.surgery.global_scalar.GammaSelection.to_manifest`).
    """
    from spectral_surgery.tasks.keys import policy_settings

    spec = get_policy(policy)
    pooled = pooled_facts(prepared, policy, cfg.edit, reference_batch_size=cfg.calib.reference_batch_size)
    modules = {}
    for m in prepared.modules:
        if m.name not in sigmas:
            continue
        s = prepared.sensitivities.get(m.name)
        sp = prepared.spectra[m.name]
        extra = {}
        if spec.describe is not None:
            inputs = PolicyInputs(sp.S.detach().cpu().float(), torch.zeros(sp.r), torch.zeros(sp.r),
                                  shape=_shape(sp), scaling=m.scaling, pooled=pooled, name=m.name,
                                  layer=m.layer_index)  # fmt: skip
            extra = spec.describe(inputs, cfg.edit)
        modules[m.name] = {
            "r": m.r,
            "scaling": m.scaling,
            "sigma_before": [round(float(x), 8) for x in prepared.spectra[m.name].S.cpu()],
            "sigma_after": [round(float(x), 8) for x in sigmas[m.name]],
            "effective_rank_before": effective_rank(sp.S),
            "effective_rank_after": effective_rank(sigmas[m.name]),
            "sensitivity": None if s is None else {
                "aggregation": s.aggregation,
                "magnitude": [float(x) for x in s.magnitude],
                "signed": [float(x) for x in s.signed],
                "sign_agreement": [float(x) for x in s.sign_agreement],
            },
            **extra,
        }
    return {
        "format": "spectral-surgery/edit-manifest/v1",
        "policy": spec.name,
        "role": spec.role,
        "is_control": spec.is_control,
        "promotable": spec.promotable,
        "rebuild": spec.rebuild,
        "needs_data": spec.needs_data,
        "parameters": policy_settings(spec.name, cfg.edit),  # what it read: what its candidate is keyed by
        **({"settings": getattr(cfg.edit, spec.name).model_dump(mode="json")}
           if spec.settings_model is not None else {}),  # fmt: skip
        "targets": cfg.targets.model_dump(mode="json"),
        "calibration": {**cfg.calib.model_dump(mode="json"), "sha256": prepared.calib_sha256,
                        "n_examples": prepared.n_examples},
        "seed": seed,
        "input_adapter_sha256": prepared.adapter.sha256,
        "summary": spectrum_summary(prepared, sigmas),
        "skipped_modules": [m.name for m in prepared.modules if m.name not in sigmas],
        "modules": modules,
        **({"pooled": pooled} if pooled is not None else {}),
        "package_versions": package_versions(),
        "paper": "https://arxiv.org/abs/2603.03995",
        **(selection.to_manifest() if selection is not None else {}),
    }


def write_candidate(
    prepared: PreparedAdapter,
    policy: str,
    cfg: SurgeryConfig,
    out_dir: str | Path,
    *,
    seed: int = 42,
    selection: GammaSelection | None = None,
) -> tuple[Path, dict]:
    """Edit under ``policy`` and write the PEFT adapter atomically to ``out_dir``; returns (path, manifest).

    Every registered edit goes through here, controls included: the factor form is the policy's
    ``rebuild`` (balanced for the policies, ``zero_rebuild`` and the post-hoc methods, one-sided for
    ``global_scalar`` and ``zero_rebuild_one_sided``); ``dg_hard`` writes unchanged modules' original bytes.

    Args:
        prepared: From :func:`prepare`.
        policy: Registered policy name or alias.
        cfg: The surgery configuration.
        out_dir: Target directory (written atomically).
        seed: Seed of ``random_index``.
        selection: The chosen γ of ``global_scalar`` (:mod:`tasks.surgery.global_scalar`); required by it, refused
            by every other policy.

    Raises:
        ValueError: ``selection`` missing for a policy that needs γ, or given to one that does not.
    """
    spec = get_policy(policy)
    if spec.needs_gamma and selection is None:
        raise ValueError(f"policy {spec.name!r} needs a γ selection: pass selection= from "
                         "spectral_surgery.tasks.surgery.global_scalar.select_gamma_calib_loss / select_gamma_held_out "
                         "/ fixed_gamma")
    if selection is not None and not spec.needs_gamma:
        raise ValueError(f"policy {spec.name!r} takes no γ; drop selection= (it is only for global_scalar)")
    gamma = None if selection is None else selection.gamma
    sigmas = edit_sigmas(prepared, policy, cfg.edit, seed=seed, gamma=gamma,
                         reference_batch_size=cfg.calib.reference_batch_size)
    manifest = build_manifest(prepared, policy, cfg, sigmas, seed, selection)
    tensors = rebuilt_tensors(prepared, sigmas, form=spec.rebuild, keep_identical=spec.keep_identical)
    if spec.rebuild == "rank_changing":
        changes = rank_changes(prepared, sigmas)
        manifest["rank_changes"] = changes.ranks
        path = write_adapter(prepared.adapter, tensors, out_dir, manifest, config=changes.config,
                             removed=changes.removed)  # fmt: skip
    else:
        path = write_adapter(prepared.adapter, tensors, out_dir, manifest)
    return Path(path), manifest

