"""The dtype a base model is loaded in for evaluation, from the evaluator's ``dtype`` setting (pure, no CUDA).

``auto`` is bfloat16 on a CUDA device that supports it and float32 elsewhere (CPU, or a GPU without bf16);
an explicit name is used as given. The same function serves the lm-eval evaluator when it loads the base itself
and the worker that loads the shared base (:mod:`flows.worker`), so the model evaluated is the model the
evaluation key names (docs/evaluation.md, "bf16 / fp16 with fp32 scores").
"""

from __future__ import annotations

DTYPES = ("auto", "float32", "float16", "bfloat16")

__all__ = ["DTYPES", "model_dtype_name"]


def model_dtype_name(setting: str | None, device: str, *, cuda_bf16: bool) -> str:
    """The torch dtype name (``float32``, ``float16`` or ``bfloat16``) to load the base model in.

    Args:
        setting: ``evaluator_options.dtype``: one of :data:`DTYPES`; None means ``auto``.
        device: The device the model runs on (``cpu``, ``cuda``, ``cuda:1``, ...).
        cuda_bf16: Whether that CUDA device supports bfloat16 (``torch.cuda.is_bf16_supported()``; ignored for
            a device that is not CUDA).

    Raises:
        ValueError: ``setting`` is not a known dtype (the message names the field and the choices).
    """
    setting = "auto" if setting is None else str(setting)
    if setting not in DTYPES:
        raise ValueError(f"evaluator_options.dtype: {setting!r} is not a dtype the evaluator knows; to fix: use one "
                         f"of {', '.join(DTYPES)} (auto = bfloat16 on CUDA, float32 on CPU)")
    if setting != "auto":
        return setting
    return "bfloat16" if str(device).startswith("cuda") and cuda_bf16 else "float32"
