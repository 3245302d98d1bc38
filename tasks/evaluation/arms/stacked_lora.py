"""Every arm's LoRA delta of a mixed-adapter batch in one batched multiply per layer (the one pass's LoRA path).

PEFT's mixed-adapter batch (``adapter_names``) loops over the adapters in every LoRA layer: per adapter it selects
its rows, runs A and B on them and scatters the result back, so with K arms each layer pays K small matmuls and as
many index copies. Here each LoRA layer's arms are stacked ONCE per pass (scaling folded into B, ranks padded with
zeros, every arm the layer lacks and the bare base ``"__base__"`` a zero arm), and a batch's delta is one gathered
batched multiply over its rows::

    slots = slot_of[rows]                          # [batch]: each row's arm in this layer's stack
    delta = (x @ A_t[slots]) @ B_t[slots]          # [batch, T, in] @ [batch, in, r] @ [batch, r, out]

Measured on CPU, one thread, fp32, 8 rows of 100-300 tokens, r 8-16, SmolLM2-135M's projection shapes (576->576,
576->192, 576->1536, 1536->576), 10 arms: the gathered bmm takes 0.35-0.6x PEFT's loop (e.g. 300 tokens, r 8,
576->1536: 3.1 ms vs 10.2 ms) whether the rows' arms are all distinct, in pairs or all the same, and rows grouped by
arm (one matmul per arm, then a scatter) cost as much as PEFT's loop: the index copies and the scatter are the cost,
not the matmuls.

DoRA arms (`paper <https://huggingface.co/papers/2402.09353>`_) take the same multiply. PEFT's DoRA forward at
eval (``tuners/lora/dora.py``: dropout the identity, the base output reused) adds to the base output ``y = W x + b``::

    (m / ||W + s B A||_row - 1) * (y - b) + (m / ||W + s B A||_row) * s * B A x

with the magnitude vector ``m`` and the row norm of the base weight plus the arm's delta, detached as PEFT detaches
it. Per arm and layer ``k = m / ||W + s B A||_row`` is computed ONCE per pass by PEFT's own ``get_weight_norm`` (PEFT
recomputes it on every forward) and folded in: ``k * s * B`` goes into the stack like ``s * B``, and ``k - 1`` into a
per-slot output scale (:attr:`LayerStack.rescale`, 0 for plain-LoRA arms, the bare base and absent arms), so DoRA,
plain-LoRA and base rows share one pass. PEFT's mixed batch refuses DoRA (``adapter_names`` with a DoRA adapter is a
``ValueError``), so a DoRA arm on a layer that is not stacked (DoRA on an embedding, ``lora_multiply="peft"``, ...)
makes :class:`MixedBatch` raise :class:`MixedBatchRefused` up front; the callers then score that arm set arm by arm.

:class:`StackedLora` installs this as each supported layer's ``forward`` on the instance for the duration of
:meth:`StackedLora.installed` (PEFT's classes and every other model are untouched; the instance attribute is
removed on exit, also on an exception). Supported: PEFT's ``lora.Linear`` with vanilla LoRA or DoRA (any subset of
the projections, any ranks, rslora or any other scaling, dropout inactive at eval). Every other LoRA layer (another
variant, ``lora_bias``, embeddings, convolutions, quantized layers, merged weights, active dropout) keeps PEFT's
mixed batch, the reason recorded in :attr:`StackedLora.fallbacks`.

Pure: no Prefect, no registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from spectral_surgery.tasks.evaluation.arms import BASE_ARM

LORA_MULTIPLIES = ("stacked", "peft")  # the one pass's LoRA delta: stacked arms (default) or PEFT's mixed batch


@dataclass(frozen=True)
class LayerStack:
    """One LoRA layer's arms stacked for a gathered batched multiply.

    Attributes:
        a_t: ``[slots, in, r_max]``: each arm's ``A^T`` (ranks padded with zero columns); slot 0 is the zero arm.
        b_t: ``[slots, r_max, out]``: each arm's ``(scaling * B)^T`` (padded with zero rows); slot 0 is zero.
        slot_of: ``[arms]`` (long): the pass's arm index -> this layer's slot (0 for the base and absent arms).
        rescale: ``[slots, out]``: each DoRA arm's ``m / ||W + s B A||_row - 1`` (its ``b_t`` holds
            ``m / ||W + s B A||_row * s * B``), 0 for the other slots; None where no arm of the pass is DoRA here.
        bias: The base layer's bias (``[out]``) where ``rescale`` is set and the base has one: DoRA rescales the
            base output without it.
    """

    a_t: torch.Tensor
    b_t: torch.Tensor
    slot_of: torch.Tensor
    rescale: torch.Tensor | None = None
    bias: torch.Tensor | None = None


class MixedBatchRefused(ValueError):
    """The arms cannot share a mixed batch exactly (a DoRA arm on a layer left to PEFT's mixed batch, which refuses
    DoRA): the caller scores this arm set arm by arm, with each adapter active, and records why."""


def _is_dora(layer: Any, arm: str) -> bool:
    from peft.tuners.lora.variants import DoraLinearVariant

    return type(layer.lora_variant.get(arm)) is DoraLinearVariant and arm in layer.lora_magnitude_vector


def unsupported(layer: Any, arms: Sequence[str]) -> str | None:
    """Why ``layer`` cannot take the stacked multiply for ``arms`` (None: it can).

    Args:
        layer: A PEFT LoRA layer (``peft.tuners.lora.LoraLayer``).
        arms: The pass's arm names.
    """
    from peft.tuners.lora.layer import Linear

    if type(layer) is not Linear:
        return f"{type(layer).__module__}.{type(layer).__name__} (only peft's lora.Linear is stacked)"
    if layer.merged:
        return "adapter weights merged into the base"
    if layer.disable_adapters:
        return "adapters disabled"
    mine = [a for a in arms if a in layer.lora_A]
    for arm in mine:
        if arm in layer.lora_variant and not _is_dora(layer, arm):
            return f"{type(layer.lora_variant[arm]).__name__} on arm {arm!r} (a LoRA variant other than DoRA)"
        if layer.lora_bias.get(arm, False) or layer.lora_B[arm].bias is not None:
            return f"lora_bias on arm {arm!r}"
        drop = layer.lora_dropout[arm]
        if isinstance(drop, torch.nn.Dropout) and drop.training and drop.p > 0:
            return f"dropout active (training mode) on arm {arm!r}"
    if len({(layer.lora_A[a].weight.dtype, layer.lora_A[a].weight.device) for a in mine}) > 1:
        return "arms of different dtypes or devices"
    return None


def stack_layer(layer: Any, arms: Sequence[str]) -> LayerStack | None:
    """``layer``'s arms stacked (:class:`LayerStack`); None where none of ``arms`` is an adapter of the layer.

    Each arm's scaling (``lora_alpha / r``, or ``/ sqrt(r)`` with rslora: PEFT's ``layer.scaling``) is folded into
    B; an arm of rank ``r < r_max`` is padded with zeros, which add exact zeros to the delta.
    """
    mine = [a for a in arms if a != BASE_ARM and a in layer.lora_A]
    if not mine:
        return None
    w = layer.lora_A[mine[0]].weight
    r_max = max(layer.lora_A[a].weight.shape[0] for a in mine)
    a_t = torch.zeros(len(mine) + 1, layer.in_features, r_max, dtype=w.dtype, device=w.device)
    b_t = torch.zeros(len(mine) + 1, r_max, layer.out_features, dtype=w.dtype, device=w.device)
    slot_of = torch.zeros(len(arms), dtype=torch.long)
    dora = [a for a in mine if _is_dora(layer, a)]
    rescale = torch.zeros(len(mine) + 1, layer.out_features, dtype=w.dtype, device=w.device) if dora else None
    with torch.no_grad():
        for s, arm in enumerate(mine, start=1):
            a, b = layer.lora_A[arm].weight, layer.lora_B[arm].weight * layer.scaling[arm]
            if arm in dora:
                k = dora_factor(layer, arm)
                b = b * k[:, None]
                rescale[s] = k - 1
            a_t[s, :, :a.shape[0]] = a.T
            b_t[s, :b.shape[1], :] = b.T
            slot_of[list(arms).index(arm)] = s
    bias = None if rescale is None else layer.get_base_layer().bias
    return LayerStack(a_t, b_t, slot_of.to(w.device), rescale, None if bias is None else bias.detach())


def dora_factor(layer: Any, arm: str) -> torch.Tensor:
    """``m / ||W + s B A||_row`` (``[out]``) of DoRA arm ``arm`` on ``layer``, as PEFT's DoRA forward computes it:
    its own ``get_lora_weight`` and ``get_weight_norm`` (``fan_in_fan_out`` handled there) on the base weight
    (dequantized, in the LoRA weights' dtype, as PEFT casts the input), the norm detached."""
    from peft.utils.integrations import dequantize_module_weight

    dora = layer.lora_magnitude_vector[arm]
    lora_a, lora_b = layer.lora_A[arm], layer.lora_B[arm]
    lora_weight = dora.get_lora_weight(lora_A=lora_a, lora_B=lora_b).to(lora_a.weight.dtype)
    weight = dequantize_module_weight(layer.get_base_layer()).to(lora_a.weight.dtype)
    norm = dora.get_weight_norm(weight=weight, lora_weight=lora_weight.detach(), scaling=layer.scaling[arm]).detach()
    return (dora.weight / norm).to(device=lora_a.weight.device, dtype=lora_a.weight.dtype)


def row_slots(stack: LayerStack, rows: torch.Tensor) -> torch.Tensor:
    """Each row's slot in ``stack`` from its arm index in the pass (``rows``: ``[batch]`` long)."""
    return stack.slot_of[rows]


def lora_delta(x: torch.Tensor, stack: LayerStack, slots: torch.Tensor) -> torch.Tensor:
    """``scaling_i * B_i A_i x`` of each row ``x[j]`` with ``i = slots[j]``, as ``[batch, ..., out]``.

    Args:
        x: ``[batch, ..., in]`` activations (cast to the stack's dtype, as PEFT casts to the LoRA weights').
        stack: The layer's :class:`LayerStack`.
        slots: ``[batch]`` slots (:func:`row_slots`).
    """
    x3 = x.reshape(x.shape[0], -1, x.shape[-1]).to(stack.a_t.dtype)
    h = torch.bmm(x3, stack.a_t[slots])
    return torch.bmm(h, stack.b_t[slots]).reshape(*x.shape[:-1], stack.b_t.shape[-1])


def add_lora_delta(result: torch.Tensor, x: torch.Tensor, stack: LayerStack, slots: torch.Tensor) -> torch.Tensor:
    """``result + lora_delta(x, stack, slots)``, added in place into ``result`` (a fresh base-layer output) where
    that is safe: no autograd, no autocast, one dtype, contiguous. In place the second multiply accumulates straight
    into the output (``baddbmm_``): measured on CPU 1.1-2x faster than multiplying then adding (no ``[batch, T,
    out]`` temporary). A layer with DoRA arms first adds each row's ``rescale * (result - bias)`` (PEFT's
    ``(m / ||W + s B A|| - 1) * base_result``; 0 for the other rows), in place as well where that is safe."""
    in_place = not (torch.is_grad_enabled() or torch.is_autocast_enabled(x.device.type)
                    or result.dtype != stack.a_t.dtype or not result.is_contiguous())
    if stack.rescale is not None:  # DoRA arms: (k - 1) * (W x), the bias left out, from the base output
        scale = stack.rescale[slots].view(slots.shape[0], *([1] * (result.dim() - 2)), -1).to(result.dtype)
        base = result if stack.bias is None else result - stack.bias
        result = result.addcmul_(base, scale) if in_place else result + base * scale
    if not in_place:
        return result + lora_delta(x, stack, slots).to(result.dtype)
    h = torch.bmm(x.reshape(x.shape[0], -1, x.shape[-1]).to(stack.a_t.dtype), stack.a_t[slots])
    result.view(result.shape[0], -1, result.shape[-1]).baddbmm_(h, stack.b_t[slots])
    return result


class StackedLora:
    """Every supported LoRA layer of a ``PeftModel`` computing its arms' deltas by :func:`lora_delta`.

    Args:
        layers: The model's LoRA layers (``peft.tuners.lora.LoraLayer``), found once by the caller.
        arms: The pass's arm names (``"__base__"``: the bare base, a zero arm everywhere); unique.

    Attributes:
        arms: The arms, in order: a row's arm index is its position here.
        stacks: Layer -> its :class:`LayerStack` (None: no arm of the pass adapts this layer).
        peft_layers: The layers that keep PEFT's mixed batch (see :attr:`fallbacks`).
        fallbacks: ``(why, number of layers)`` for the layers that keep PEFT's mixed batch.

    Example:
        >>> stacked = StackedLora(lora_layers, ["baseline", "cand", "__base__"])
        >>> with stacked.installed(), stacked.rows(["cand", "__base__"]):
        ...     hidden = decoder(input_ids=ids)    # row 0 with cand's deltas, row 1 the bare base
    """

    def __init__(self, layers: Sequence[Any], arms: Sequence[str]) -> None:
        self.arms = list(arms)
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"StackedLora: arms must be unique, got {self.arms}")
        self._index = {a: i for i, a in enumerate(self.arms)}
        self.stacks: dict[Any, LayerStack | None] = {}
        self.peft_layers: list[Any] = []
        why: dict[str, int] = {}
        for layer in layers:
            reason = unsupported(layer, self.arms)
            if reason is None:
                self.stacks[layer] = stack_layer(layer, self.arms)
            else:
                self.peft_layers.append(layer)
                why[reason] = why.get(reason, 0) + 1
        self.fallbacks: tuple[tuple[str, int], ...] = tuple(sorted(why.items()))
        self._rows: torch.Tensor | None = None
        self._devices: dict[torch.device, torch.Tensor] = {}

    def describe_fallbacks(self) -> str | None:
        """One line saying which layers keep PEFT's mixed batch and why (None: every layer is stacked)."""
        if not self.fallbacks:
            return None
        total = len(self.stacks) + len(self.peft_layers)
        return (f"PEFT's mixed batch on {len(self.peft_layers)} of {total} LoRA layers: "
                + "; ".join(f"{why} ({n})" for why, n in self.fallbacks))

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Inside the block every stacked layer's ``forward`` is :meth:`_forward` (an attribute of the instance,
        removed on exit, also on an exception; a ``forward`` the instance had of its own is put back)."""
        saved: list[tuple[Any, Any]] = []
        try:
            for layer in self.stacks:
                saved.append((layer, layer.__dict__.get("forward")))
                layer.forward = partial(self._forward, layer)
            yield
        finally:
            for layer, own in saved:
                del layer.forward
                if own is not None:
                    layer.forward = own
            self._rows = None

    @contextmanager
    def rows(self, names: Sequence[str]) -> Iterator[None]:
        """Inside the block, row ``i`` of every batch runs arm ``names[i]`` in the stacked layers.

        Raises:
            KeyError: A name that is not one of :attr:`arms`.
        """
        unknown = [n for n in names if n not in self._index]
        if unknown:
            raise KeyError(f"StackedLora: rows of unknown arms {sorted(set(unknown))} (arms: {self.arms})")
        self._rows = torch.tensor([self._index[n] for n in names], dtype=torch.long)
        self._devices = {}
        try:
            yield
        finally:
            self._rows = None

    def _rows_on(self, device: torch.device) -> torch.Tensor:
        if self._rows is None:
            raise RuntimeError("StackedLora: a stacked LoRA layer ran outside StackedLora.rows(...)")
        if device not in self._devices:
            self._devices[device] = self._rows.to(device)
        return self._devices[device]

    def _forward(self, layer: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The base layer's output plus each row's arm's delta (what PEFT's ``_mixed_batch_forward`` returns)."""
        if "adapter_names" in kwargs:
            raise RuntimeError("StackedLora: adapter_names passed to a stacked layer (the rows are set by rows())")
        result = layer.base_layer(x, *args, **kwargs)
        stack = self.stacks[layer]
        if stack is None:
            return result
        rows = self._rows_on(stack.slot_of.device)
        if rows.shape[0] != x.shape[0]:
            raise RuntimeError(f"StackedLora: a batch of {x.shape[0]} rows with {rows.shape[0]} arm names")
        return add_lora_delta(result, x, stack, row_slots(stack, rows))


def _inject_adapter_names(module: Any, args: tuple, kwargs: dict, adapter_names: list[str]) -> tuple[tuple, dict]:
    """Forward pre-hook of a LoRA layer: its rows' adapters (what PEFT's ``adapter_names`` forward argument does)."""
    kwargs["adapter_names"] = adapter_names
    return args, kwargs


class MixedBatch:
    """Mixed-adapter batches of a ``PeftModel``: inside :meth:`rows`, row ``i`` of a forward pass runs ``names[i]``.

    PEFT's own ``adapter_names`` forward argument walks every module of the model on each call to find the LoRA
    layers (and to check the names): with K adapters resident that walk cost as much as the forward itself on
    SmolLM2. The layers are found once here instead.

    Args:
        model: A ``peft.PeftModel`` holding the arms as named adapters.
        arms: Every arm the batches will name (``"__base__"``: the bare base); checked by the caller.
        lora_multiply: ``"stacked"`` (default): the supported LoRA layers compute every row's delta by one gathered
            batched multiply (:class:`StackedLora`, stacked here, once), the others get PEFT's mixed batch;
            ``"peft"``: every layer gets PEFT's mixed batch (a loop over the adapters in each layer).

    Attributes:
        fallback: Which LoRA layers keep PEFT's mixed batch on the stacked path and why (None: none, or ``"peft"``).

    Raises:
        MixedBatchRefused: A DoRA arm on a LoRA layer left to PEFT's mixed batch (PEFT refuses it).
    """

    def __init__(self, model: Any, arms: Sequence[str], lora_multiply: str = "stacked") -> None:
        from peft.tuners.lora import LoraLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        if lora_multiply not in LORA_MULTIPLIES:
            raise ValueError(f"MixedBatch: lora_multiply must be one of {LORA_MULTIPLIES}, got {lora_multiply!r}")
        lora = [m for m in model.modules() if isinstance(m, LoraLayer)]
        others = [m for m in model.modules() if isinstance(m, AuxiliaryTrainingWrapper)]
        self.stacked = StackedLora(lora, list(arms)) if lora_multiply == "stacked" else None
        peft_lora = lora if self.stacked is None else self.stacked.peft_layers
        dora = sorted({a for layer in peft_lora for a in arms if layer.use_dora.get(a, False)})
        if dora:  # PEFT's _check_forward_args would raise on the first forward: say so before any work
            why = "lora_multiply='peft'" if self.stacked is None else self.stacked.describe_fallbacks()
            raise MixedBatchRefused(f"DoRA arms {dora} on LoRA layers left to PEFT's mixed batch, which refuses DoRA "
                                    f"({why})")
        self._peft_layers = others + peft_lora
        self.fallback = None if self.stacked is None else self.stacked.describe_fallbacks()

    @contextmanager
    def rows(self, names: Sequence[str]) -> Iterator[None]:
        """Row ``i`` of the forward passes inside the block runs arm ``names[i]``; the stacked layers' forward and
        the PEFT layers' hooks exist only inside it (removed on exit, also on an exception)."""
        hook = partial(_inject_adapter_names, adapter_names=list(names))
        with ExitStack() as stack:
            for layer in self._peft_layers:
                stack.callback(layer.register_forward_pre_hook(hook, with_kwargs=True).remove)
            if self.stacked is not None:
                stack.enter_context(self.stacked.installed())
                stack.enter_context(self.stacked.rows(names))
            yield
