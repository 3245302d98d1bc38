"""What ``spectral-surgery run`` checks before the flow starts, so that a run that cannot work exits 2 at once
instead of recording one failure per adapter: the device exists in this torch, the evaluator's ``dtype`` is a
torch dtype, and every enabled adapter's evaluation fits its base's context (:func:`tasks.base_fit.context_fit`,
with the run config's ``max_gen_toks``). Each message names the field and the fix."""

from __future__ import annotations

import re
from pathlib import Path

_DEVICE = re.compile(r"^(cpu|cuda|mps|xpu)(:\d+)?$")
DTYPES = ("auto", "float32", "float16", "bfloat16", "fp32", "fp16", "bf16", "half", "float")


def check_device(device: str) -> None:
    """``device`` names a torch device this process can use.

    Raises:
        ValueError: an unknown device string, or CUDA/MPS not available in this torch build or machine.
    """
    import torch

    if not isinstance(device, str) or not _DEVICE.match(device.strip()):
        raise ValueError(f"device {device!r} is not a torch device: use cpu, cuda, cuda:N or mps (--device or the "
                         "run config's device)")
    kind, _, index = device.strip().partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            built = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {device!r}: {built}; run with --device cpu, or install a CUDA build of torch "
                             "on a machine with a GPU")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible; use "
                             f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r}: MPS is not available here; run with --device cpu")
    if kind == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ValueError(f"device {device!r}: XPU is not available here; run with --device cpu")


def check_dtype(value: object) -> None:
    """The evaluator's ``dtype`` option is one lm-eval and torch understand.

    Raises:
        ValueError: naming ``evaluator_options.dtype`` and the accepted values.
    """
    if value is None:
        return
    if not isinstance(value, str) or value.strip().lower().removeprefix("torch.") not in DTYPES:
        raise ValueError(f"evaluator_options.dtype {value!r} is not a dtype: use one of {', '.join(DTYPES)} "
                         "(--evaluator-option dtype=... or the run config's evaluator_options)")


def context_problems(adapters, *, max_gen_toks: int | None, profile: str | None,
                     data_dir: Path | None) -> list[str]:
    """For each adapter (registry rows), why its evaluation cannot fit its base's context (empty: all fit)."""
    from spectral_surgery.tasks.register_checks import base_dir_offline, door_benchmarks
    from spectral_surgery.tasks.base_fit import base_layout, context_fit

    problems = []
    for a in adapters:
        base_dir = base_dir_offline(a.base_model_id, a.base_model_revision, data_dir)
        if base_dir is None:
            continue
        try:
            benchmarks = door_benchmarks(a.task_family, a.benchmark_override, profile)
            layout = base_layout(base_dir)
        except (KeyError, ValueError):
            continue  # reported by the run itself, per adapter
        problems += [f"adapter {a.name!r}: {m}" for m in context_fit(layout, benchmarks, max_gen_toks=max_gen_toks,
                                                                      tokenizer_dir=base_dir)]
    return problems
