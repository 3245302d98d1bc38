"""Per-example, per-component sensitivities ∂L_i/∂σ_k in ONE forward/backward pass per batch (METHOD §4).

Spectral Surgery (https://arxiv.org/abs/2603.03995) scores component ``k`` of a LoRA update
``s·B·A = s·U diag(σ) Vᵀ`` by the gradient of the calibration loss with respect to σ_k:

    g_k = ∂L/∂σ_k = s · Σ_n ⟨δ_n, u_k⟩ · ⟨x_n, v_k⟩ = u_kᵀ G v_k,   G = ∂L/∂(BA) = s · Σ_n δ_n x_nᵀ,

where ``x_n`` is the input and ``δ_n = ∂L/∂y_n`` the output gradient of the LoRA-wrapped linear at position
n. A forward hook caches ``b = (x·mask)·V`` and a tensor hook on the output computes ``a = δ·U``, both
(B, T, r) in fp32, so neither x nor the (d_out × d_in) gradient G is ever kept or formed.

The reference (``TTtianTT/peft-sft-lab``, ``spectral_edit/hooks.py``) keeps only the sum over mini-batches
of 2 of the gradient of each batch's token-mean CE. Here the batch loss is the SUM over examples of each
example's summed-token CE: examples do not interact in a causal LM, so example i's rows of δ are exactly
∂L_i/∂y and one backward yields every per-example g_i. :func:`aggregate` rebuilds the reference's
aggregate from them exactly (``abs_of_sum``), or the paper text's per-example mean (``mean_abs``, §14.1).

The data side (examples, loaders, :func:`build_batch`) lives in :mod:`tasks.surgery.calib_data` and is re-exported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spectral_surgery.tasks.surgery.calib_data import (  # noqa: F401  (re-exported API)
    FORMATTERS,
    IGNORE_INDEX,
    CalibExample,
    build_batch,
    calibration_sha256,
    format_alpaca,
    format_commonsense_qa,
    format_fields,
    format_gsm8k,
    format_magicoder,
    format_metamath,
    get_calib_loader,
    load_calibration,
    read_jsonl,
    register_calib_loader,
    select_examples,
    sequence_limit,
    warn_if_truncated,
)
from spectral_surgery.tasks.config import CalibConfig

log = logging.getLogger(__name__)

PEFT_PREFIX = "base_model.model."
AGGREGATIONS = ("abs_of_sum", "mean_abs")


class SpectrumLike(Protocol):
    """Anything with the thin-SVD factors of a module's unscaled ``B·A`` (e.g. ``tasks.surgery.decompose.Spectrum``)."""

    U: Tensor  # (d_out, r)
    S: Tensor  # (r,)
    V: Tensor  # (d_in, r)


@dataclass
class Sensitivity:
    """Calibration sensitivities of one module (all tensors on the CPU).

    Attributes:
        per_example: (N, r) fp32, g_i = ∂(sum of example i's supervised-token CE)/∂σ, signed.
        n_tokens: (N,) int64, supervised (predicted, non -100) tokens per example.
        signed: (r,) fp32, the aggregated signed gradient (see :func:`aggregate`).
        magnitude: (r,) fp32, the magnitude the |g| policies rank by.
        sign_agreement: (r,) fp32 in [0, 1], fraction of examples whose sign(g_i) equals sign(signed).
        aggregation: ``"abs_of_sum"`` or ``"mean_abs"``.
    """

    per_example: Tensor
    n_tokens: Tensor
    signed: Tensor
    magnitude: Tensor
    sign_agreement: Tensor
    aggregation: str

    def per_batch(self, reference_batch_size: int) -> Tensor:
        """One σ-gradient row per reference mini-batch, (n_b, r) float64: see :func:`batch_gradients`."""
        return batch_gradients(self.per_example, self.n_tokens, reference_batch_size)


def batch_gradients(per_example: Tensor, n_tokens: Tensor, reference_batch_size: int) -> Tensor:
    """Per-mini-batch σ-gradients ``G_b = (1/T_b) Σ_{i∈b} g_i``, one row per reference mini-batch (EXTENSIONS §7).

    Row b is the gradient, with respect to σ and including the LoRA scaling s, of the token-MEAN CE of mini-batch b
    (``reference_batch_size`` consecutive examples, T_b its supervised tokens): exactly the summand that
    ``abs_of_sum`` adds up (:func:`aggregate`), kept apart so that calibration-guided module selection can score
    each batch on its own. Nothing extra is collected: the rows are rebuilt from the stored per-example gradients,
    so the default aggregation, its results and the stored keys are unchanged. A mini-batch with T_b = 0 (where
    the reference's mean is 0/0) carries no gradient and gets no row.

    Args:
        per_example: (N, r) per-example summed-token gradients g_i.
        n_tokens: (N,) supervised tokens per example T_i.
        reference_batch_size: The reference mini-batch (``CalibConfig.reference_batch_size``; the §7 CLI's 2).

    Returns:
        (n_b, r) float64 on the CPU (n_b = number of mini-batches with T_b > 0; 0 rows if none has a token).

    Raises:
        ValueError: bad shapes or a non-positive batch size.
    """
    if per_example.dim() != 2 or n_tokens.shape != (per_example.shape[0],):
        raise ValueError(f"per_example must be (N, r) and n_tokens (N,); got {tuple(per_example.shape)} "
                         f"and {tuple(n_tokens.shape)}")
    if reference_batch_size < 1:
        raise ValueError(f"reference_batch_size must be >= 1, got {reference_batch_size}")
    g = per_example.detach().double().cpu()
    t = n_tokens.detach().double().cpu()
    rows = []
    for s in range(0, g.shape[0], reference_batch_size):
        t_b = t[s : s + reference_batch_size].sum()
        if t_b > 0:
            rows.append(g[s : s + reference_batch_size].sum(0) / t_b)
    return torch.stack(rows) if rows else torch.zeros(0, g.shape[1], dtype=torch.float64)


def aggregate(
    per_example: Tensor, n_tokens: Tensor, *, aggregation: str, reference_batch_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Aggregate per-example gradients into (signed, magnitude, sign_agreement), each (r,) fp32.

    - ``abs_of_sum`` (reference, METHOD §4.3): the reference sums, over mini-batches of
      ``reference_batch_size`` consecutive examples, the gradient of each batch's token-MEAN CE, so
      ``signed = Σ_b (1/T_b) Σ_{i∈b} g_i`` with T_b the batch's supervised tokens; ``magnitude = |signed|``.
      A mini-batch with T_b = 0 (where the reference's mean would be 0/0) contributes nothing.
    - ``mean_abs`` (paper text, METHOD §14.1): ``h_i = g_i / T_i``; ``signed = mean_i h_i``,
      ``magnitude = mean_i |h_i|``, over examples with T_i > 0.

    ``sign_agreement_k`` is the fraction of examples with T_i > 0 whose ``sign(g_ik)`` equals
    ``sign(signed_k)`` (an exact zero g_ik does not agree). Where ``signed_k == 0``, or no example has a
    supervised token, there is no sign to agree with and the value is the neutral 0.5.

    Args:
        per_example: (N, r) per-example summed-token gradients g_i.
        n_tokens: (N,) supervised tokens per example T_i.
        aggregation: ``"abs_of_sum"`` or ``"mean_abs"``.
        reference_batch_size: Mini-batch size the reference used (2); only ``abs_of_sum`` uses it.

    Raises:
        ValueError: unknown aggregation, bad shapes or a non-positive batch size.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}; got {aggregation!r}")
    if per_example.dim() != 2 or n_tokens.shape != (per_example.shape[0],):
        raise ValueError(f"per_example must be (N, r) and n_tokens (N,); got {tuple(per_example.shape)} "
                         f"and {tuple(n_tokens.shape)}")
    if reference_batch_size < 1:
        raise ValueError(f"reference_batch_size must be >= 1, got {reference_batch_size}")
    g = per_example.detach().double().cpu()  # float64: sums over many examples without extra rounding
    t = n_tokens.detach().double().cpu()
    valid = t > 0
    if aggregation == "abs_of_sum":
        signed = torch.zeros(g.shape[1], dtype=torch.float64)
        for s in range(0, g.shape[0], reference_batch_size):
            t_b = t[s : s + reference_batch_size].sum()
            if t_b > 0:
                signed += g[s : s + reference_batch_size].sum(0) / t_b
        magnitude = signed.abs()
    else:
        h = g[valid] / t[valid].unsqueeze(1)
        signed = h.mean(0) if h.shape[0] else torch.zeros(g.shape[1], dtype=torch.float64)
        magnitude = h.abs().mean(0) if h.shape[0] else torch.zeros_like(signed)
    ref = torch.sign(signed)
    if bool(valid.any()):
        agree = (torch.sign(g[valid]) == ref).double().mean(0)
    else:
        agree = torch.full_like(signed, 0.5)
    agree = torch.where(ref == 0, torch.full_like(agree, 0.5), agree)
    return signed.float(), magnitude.float(), agree.float()


def resolve_lora_layer(model: nn.Module, name: str) -> nn.Module:
    """The LoRA layer of module ``name`` (e.g. ``model.layers.0.self_attn.o_proj``) in a PeftModel:
    ``base_model.model.<name>``, else the first module whose name ends with ``.<name>`` (METHOD §11).

    Raises:
        KeyError: no such module, or it is not a LoRA layer (no ``lora_A``).
    """
    try:
        module = model.get_submodule(PEFT_PREFIX + name)
    except AttributeError:
        module = next((m for n, m in model.named_modules() if n == name or n.endswith("." + name)), None)
    if module is None:
        raise KeyError(f"module {name!r} not found in the model (looked for {PEFT_PREFIX + name!r} and any name "
                       f"ending with {'.' + name!r})")
    if not hasattr(module, "lora_A"):
        raise KeyError(f"module {name!r} resolves to a {type(module).__name__}, not a PEFT LoRA layer (no lora_A)")
    return module


@dataclass
class _Probe:
    """Hook state of one module: its fp32 factors and the current batch's (B, r) gradient."""

    name: str
    U: Tensor  # (d_out, r) fp32, on the module's device
    V: Tensor  # (d_in, r) fp32
    scaling: float
    batch_g: Tensor | None = None
    outputs: list[Tensor | None] = field(default_factory=list)  # per batch, (B, r) on the CPU or None


class _Pass:
    """Forward/backward hooks for all probes; ``mask`` is the current batch's (B, T) attention mask."""

    def __init__(self) -> None:
        self.mask: Tensor | None = None

    def forward_hook(self, probe: _Probe) -> Callable[[nn.Module, tuple, Any], Any]:
        def hook(module: nn.Module, inputs: tuple, output: Any) -> Any:
            x = inputs[0] if inputs else None
            if not isinstance(x, Tensor) or not isinstance(output, Tensor) or not torch.is_grad_enabled():
                return None
            if x.dim() != 3 or output.dim() != 3:
                raise RuntimeError(f"{probe.name}: expected (batch, seq, features) input and output, got "
                                   f"{tuple(x.shape)} -> {tuple(output.shape)}; per-example gradients need "
                                   "a batch axis")
            with torch.no_grad():
                if self.mask is not None and tuple(self.mask.shape) == tuple(x.shape[:2]):
                    x = x * self.mask.to(device=x.device, dtype=x.dtype).unsqueeze(-1)  # padding contributes 0
                b = x.float() @ probe.V  # (B, T, r) fp32; x itself is not kept
            if not output.requires_grad:
                # Cheaper than the reference's requires_grad on every lora_ parameter: nothing upstream needs a
                # gradient, so the earliest hooked output becomes a leaf and backward stops there. Every path
                # from a hooked output to the loss is still tracked, so δ at each hooked layer is exact.
                output = output.detach().requires_grad_(True)
            output.register_hook(lambda delta: self._on_grad(probe, b, delta))
            return output

        return hook

    @staticmethod
    def _on_grad(probe: _Probe, b: Tensor, delta: Tensor) -> None:
        with torch.no_grad():
            a = delta.detach().float() @ probe.U  # (B, T, r) fp32
            g = probe.scaling * (a * b).sum(dim=1)  # (B, r): per example, summed over its positions
        probe.batch_g = g if probe.batch_g is None else probe.batch_g + g  # a module called twice adds up


def _model_device(model: nn.Module) -> torch.device:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return emb.weight.device
    return next(model.parameters()).device


def scored_positions(labels: Tensor) -> Tensor:
    """The positions ``t`` whose logits some row scores (its token ``t + 1`` is supervised), ascending: what a
    forward needs the output head at (``logits_to_keep``)."""
    return (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero().flatten()


def _per_example_loss(logits: Tensor, labels: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Sum over examples of each example's summed shifted CE (fp32), and supervised tokens per example.

    ``keep``: the positions ``logits`` holds (:func:`scored_positions`, from a forward with ``logits_to_keep``);
    None, or a model that returned every position anyway, reads them from the full logits.
    """
    shift_labels = labels[:, 1:].to(logits.device)
    if keep is not None:
        keep = keep.to(logits.device)
        if logits.shape[1] != len(keep):  # a model that ignores logits_to_keep returns every position
            logits = logits[:, keep]
        shift_labels = shift_labels[:, keep]
    else:
        logits = logits[:, :-1]
    sel = shift_labels != IGNORE_INDEX
    # Only supervised positions are upcast: fp32 logits for every position would cost B·T·vocab·4 bytes.
    picked = logits[sel].float()
    loss = F.cross_entropy(picked, shift_labels[sel], reduction="sum")
    return loss, sel.sum(dim=1).cpu()


def collect_sensitivities(
    model: nn.Module,
    tokenizer,
    examples: Sequence[CalibExample],
    spectra: Mapping[str, SpectrumLike],
    scalings: Mapping[str, float],
    cfg: CalibConfig,
    *,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Sensitivity]:
    """Per-example ∂L_i/∂σ for every module in ``spectra`` with one forward/backward per batch (METHOD §4).

    The model runs in eval mode (dropout off) without KV cache; the model's own dtype is used (load it in
    fp16 on CUDA to match the reference, ``cfg.dtype`` "auto"), and all projections are computed in fp32.
    All parameters are frozen during the pass (see ``_Pass.forward_hook``); requires_grad flags, the
    train/eval mode and the hooks are restored/removed afterwards, also on error.

    Args:
        model: A PeftModel with the LoRA adapter whose spectra are given.
        tokenizer: Its tokenizer (see :func:`tasks.surgery.calib_data.build_batch`).
        examples: All calibration examples (already selected; ``cfg.n_samples`` is not re-applied).
        spectra: Module name (``model.layers.0.self_attn.o_proj``) -> object with fp32 ``.U`` (d_out, r),
            ``.S`` (r,) and ``.V`` (d_in, r) of the unscaled ``B·A``.
        scalings: Module name -> the PEFT scaling s (α/r, or α/√r with rsLoRA).
        cfg: ``batch_size`` (compute only: results do not depend on it), ``max_seq_len``, ``aggregation``
            and ``reference_batch_size``.
        on_batch: Called as ``on_batch(batches_done, batches_total)`` after each batch.

    Returns:
        Module name -> :class:`Sensitivity`. Modules whose hook never fired are absent (a warning is logged).

    Raises:
        ValueError: no examples, or a module has no scaling.
        KeyError: a module is not found or is not a LoRA layer.
    """
    if not examples:
        raise ValueError("collect_sensitivities needs at least one calibration example")
    missing = [n for n in spectra if n not in scalings]
    if missing:
        raise ValueError(f"no scaling given for module(s) {missing[:5]}")
    state = _Pass()
    probes: list[_Probe] = []
    handles = []
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    device = _model_device(model)
    n_batches = -(-len(examples) // cfg.batch_size)
    counts: list[Tensor] = []
    limit = sequence_limit(model, cfg.max_seq_len)
    warn_if_truncated(tokenizer, examples, model, cfg.max_seq_len)
    try:
        for name, sp in spectra.items():
            layer = resolve_lora_layer(model, name)
            dev = next(layer.parameters()).device
            probe = _Probe(name, sp.U.detach().to(dev, torch.float32), sp.V.detach().to(dev, torch.float32),
                           float(scalings[name]))
            probes.append(probe)
            handles.append(layer.register_forward_hook(state.forward_hook(probe)))
        model.eval()
        for p in flags:
            p.requires_grad_(False)
        for bi in range(n_batches):
            batch = build_batch(tokenizer, examples[bi * cfg.batch_size : (bi + 1) * cfg.batch_size],
                                max_seq_len=limit)
            state.mask = batch["attention_mask"].to(device)
            keep = scored_positions(batch["labels"]).to(device)  # the head (forward and backward) only there
            with torch.enable_grad():
                out = model(input_ids=batch["input_ids"].to(device), attention_mask=state.mask, use_cache=False,
                            logits_to_keep=keep)
                loss, n_tok = _per_example_loss(out.logits, batch["labels"], keep)
                del out
                if loss.requires_grad:
                    loss.backward()
            del loss
            model.zero_grad(set_to_none=True)
            counts.append(n_tok)
            for probe in probes:
                probe.outputs.append(None if probe.batch_g is None else probe.batch_g.cpu())
                probe.batch_g = None
            if on_batch is not None:
                on_batch(bi + 1, n_batches)
    finally:
        for h in handles:
            h.remove()
        state.mask = None
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    n_tokens = torch.cat(counts).long()
    result: dict[str, Sensitivity] = {}
    for probe in probes:
        if all(o is None for o in probe.outputs):
            log.warning("module %s: its backward hook never fired (no gradient); it is left out", probe.name)
            continue
        r = probe.U.shape[1]
        per_example = torch.cat([
            torch.zeros(len(n), r) if o is None else o for o, n in zip(probe.outputs, counts, strict=True)
        ]).float()
        signed, magnitude, agree = aggregate(per_example, n_tokens, aggregation=cfg.aggregation,
                                             reference_batch_size=cfg.reference_batch_size)
        result[probe.name] = Sensitivity(per_example, n_tokens, signed, magnitude, agree, cfg.aggregation)
    return result
