"""Rows per forward pass of the one-pass path from the accelerator's free memory (``batch_size="auto"`` on CUDA).

lm-eval's ``batch_size="auto"`` finds a batch size by running forward passes until one runs out of memory; the
one-pass path's rows are not HFLM's (a packed row holds a context and every continuation, a generation row a
KV cache), so its size is computed instead, from numbers known before the first pass: the free bytes
(:func:`free_bytes`: ``torch.cuda.mem_get_info`` plus what PyTorch's allocator holds unused), the model's dimensions
(:class:`ModelDims`), the row length and the number of arms. The estimate is deliberately generous per row (the
attention scores of a row counted as materialised, as SDPA's math kernel does for an arbitrary mask) and spends
:data:`FREE_FRACTION` of the free memory. On other devices "auto" means :data:`DEFAULT_ROWS`.

Pure: the sizing functions take numbers; only :func:`free_bytes` reads the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_ROWS = 8  # "auto" where free memory cannot be read (CPU, MPS): the evaluator's default batch size
FREE_FRACTION = 0.85  # of the free bytes: the rest covers the allocator's fragmentation and kernels' workspaces
MAX_ROWS = 1024  # beyond this a larger batch no longer shortens a pass (and Python-side packing dominates)


@dataclass(frozen=True)
class ModelDims:
    """What a forward pass's memory depends on.

    Attributes:
        layers: Decoder layers.
        hidden: Hidden size.
        intermediate: MLP intermediate size.
        heads: Attention heads.
        kv_heads: Key/value heads.
        head_dim: Dimension per head.
        vocab: Vocabulary size (rows of ``lm_head``).
        dtype_bytes: Bytes per activation (2 for bf16/fp16, 4 for fp32).
    """

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    dtype_bytes: int

    @classmethod
    def of(cls, config: Any, dtype_bytes: int) -> ModelDims:
        """The dimensions of a ``transformers`` decoder config (Llama, Qwen2, Mistral, Gemma naming)."""
        heads = int(config.num_attention_heads)
        hidden = int(config.hidden_size)
        return cls(int(config.num_hidden_layers), hidden, int(getattr(config, "intermediate_size", 4 * hidden)),
                   heads, int(getattr(config, "num_key_value_heads", None) or heads),
                   int(getattr(config, "head_dim", None) or hidden // heads), int(config.vocab_size), dtype_bytes)

    def activation_bytes(self, tokens: int, keys: int) -> int:
        """Peak activations of one row of ``tokens`` query tokens attending to ``keys`` keys, within one layer:
        the residual stream and its copies (PEFT's mixed batch slices rows per adapter), q/k/v, the MLP's three
        intermediate tensors, the attention scores and their softmax, and the boolean + additive masks."""
        b = self.dtype_bytes
        per_token = (8 * self.hidden + 3 * self.intermediate + 2 * self.kv_heads * self.head_dim) * b
        return tokens * per_token + tokens * keys * (1 + b + 2 * self.heads * b)

    def kv_bytes(self, tokens: int) -> int:
        """The KV cache of one row of ``tokens`` tokens, every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * tokens * self.dtype_bytes

    def head_copy_bytes(self) -> int:
        """The fp32 copy of ``lm_head``'s weight the scores are computed with (none for an fp32 model)."""
        return 0 if self.dtype_bytes >= 4 else 4 * self.vocab * self.hidden


def _fit(budget: float, per_row: int, arms: int, needed: int | None) -> int:
    """Rows that fit ``budget``: at least 1, at most :data:`MAX_ROWS` and ``needed``, a multiple of ``arms`` when
    at least ``arms`` fit (a context's rows, one per arm, then share a batch and its padding)."""
    rows = int(budget // per_row) if budget > 0 else 0
    rows = min(rows, MAX_ROWS, needed if needed else MAX_ROWS)
    if rows >= arms > 1 and (needed is None or rows < needed):
        rows -= rows % arms
    return max(rows, 1)


def loglikelihood_rows(free: int, dims: ModelDims, *, row_tokens: int, scored_tokens: int, arms: int,
                       needed: int | None = None) -> int:
    """Packed rows per forward pass of :func:`~tasks.evaluation.arms.loglikelihood.loglikelihood_arms`.

    Args:
        free: Free accelerator bytes (:func:`free_bytes`).
        dims: The model's dimensions.
        row_tokens: Tokens of the longest row of the batch (context + every continuation but its last token).
        scored_tokens: Positions projected onto the vocabulary in that row.
        arms: Arms scored together.
        needed: Rows left to score (no larger batch is returned).

    Returns:
        The number of rows, >= 1.
    """
    per_row = dims.activation_bytes(row_tokens, row_tokens) + 3 * 4 * scored_tokens * dims.vocab  # fp32 logits
    return _fit(free * FREE_FRACTION - dims.head_copy_bytes(), per_row, arms, needed)


def generation_rows(free: int, dims: ModelDims, *, prompt_tokens: int, gen_tokens: int, arms: int) -> tuple[int, int]:
    """``(rows per teacher-forced batch, rows decoding together)`` of
    :func:`~tasks.evaluation.arms.generation.generate_until_arms`.

    A verification batch and the caches of the rows that diverged (kept until they decode together) live at once:
    each gets half of the budget. A verified row holds the KV cache of its prompt and reference continuation plus
    the activations of that pass and ``gen_tokens`` fp32 logits; a decoding row its KV cache at full length.

    Args:
        free: Free accelerator bytes.
        dims: The model's dimensions.
        prompt_tokens: Tokens of the longest prompt.
        gen_tokens: ``max_gen_toks``.
        arms: Arms generated for.

    Returns:
        ``(rows_per_batch, max_decode_rows)``, each >= 1.
    """
    total = prompt_tokens + gen_tokens
    half = (free * FREE_FRACTION - dims.head_copy_bytes()) / 2
    verify = dims.kv_bytes(total) + dims.activation_bytes(total, total) + 3 * 4 * gen_tokens * dims.vocab
    decode = dims.kv_bytes(total) + dims.activation_bytes(1, total) + 3 * 4 * dims.vocab
    return _fit(half, verify, arms, None), _fit(half, decode, 1, None)


def free_bytes(device: Any) -> int | None:
    """Bytes a new allocation can use on ``device``: the driver's free memory plus what PyTorch's caching allocator
    reserved and does not use; None where it cannot be read (not CUDA)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def is_auto(batch_size: Any) -> bool:
    """Whether ``batch_size`` asks for sizing from free memory (``"auto"``)."""
    return isinstance(batch_size, str) and batch_size == "auto"
