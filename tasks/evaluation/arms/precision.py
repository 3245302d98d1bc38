"""Scores that decide an argmax or a comparison computed from fp32 logits when the model runs in bf16 or fp16.

On a GPU the one-pass path runs the model in bfloat16 (``LmEvalEvaluator(dtype="auto")`` on CUDA) or float16 (the
worker's base). The decoder's arithmetic in half precision is the model's; what must not be half precision is the
vocabulary projection whose output is compared: a bf16 logit of magnitude 16-32 is rounded to a multiple of 0.125,
so two candidate tokens often tie exactly and ``argmax`` then returns the lower token id, whichever the model
prefers, and a log-likelihood summed over a continuation carries that rounding at every token. Here the hidden
states at the scored positions are upcast and ``lm_head`` runs in fp32 (its weight upcast once per call; bf16 to
fp32 is exact), so every score downstream (log-likelihood sums, the is-greedy flag, the greedy argmax of
verification and decoding, the continuous margins) is computed from fp32 logits. ``tests/tasks/evaluation/arms/
test_precision.py`` measures what the upcast changes on a bf16 model (argmax flips, |ΔLL| against fp32).

A head that PEFT wraps per adapter (``modules_to_save=["lm_head"]``) is left as it is: its logits are the model
dtype's, upcast after the projection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


def _linear_head(head: Any) -> torch.nn.Linear | None:
    """``head`` when it is a plain ``nn.Linear`` (a PEFT per-adapter wrapper, or anything else: None)."""
    return head if type(head) is torch.nn.Linear else None


def fp32_head(head: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function hidden states ``[..., d]`` (any dtype) -> fp32 logits ``[..., vocab]`` of the output head.

    Args:
        head: The model's output embeddings (``get_output_embeddings()``).

    Returns:
        ``h -> h.float() @ W.float().T (+ b)`` outside any autocast for a plain ``nn.Linear`` (the fp32 copy of ``W``
        is made once, here: none for an fp32 model); for any other head, ``h -> head(h).float()``.
    """
    linear = _linear_head(head)
    if linear is None:
        return lambda h: head(h).float()
    weight = linear.weight.float()
    bias = None if linear.bias is None else linear.bias.float()

    def project(h: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=h.device.type, enabled=False):  # HFLM's mixed precision must not recast
            return F.linear(h.float(), weight, bias)

    return project


class Fp32Head(torch.nn.Module):
    """Stands in for a model's ``lm_head`` inside :func:`fp32_logits`: the same projection, fp32 logits."""

    def __init__(self, head: torch.nn.Linear) -> None:
        super().__init__()
        self.head = head  # kept for weight tying and ``get_output_embeddings`` callers
        self.project = fp32_head(head)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.project(hidden)


@contextmanager
def fp32_logits(model: Any) -> Iterator[bool]:
    """Inside the block, the model's forward (and ``generate``) returns fp32 logits computed from upcast hidden states.

    Args:
        model: A ``transformers`` causal LM or a ``peft.PeftModel`` around one.

    Yields:
        Whether the head was swapped (False: a model already in fp32, or a head that is not a plain
        ``nn.Linear``, e.g. a PEFT per-adapter head; the model then runs as it is).
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = inner.get_output_embeddings()
    linear = _linear_head(head)
    if linear is None or linear.weight.dtype == torch.float32:
        yield False
        return
    inner.set_output_embeddings(Fp32Head(linear))
    try:
        yield True
    finally:
        inner.set_output_embeddings(head)
