"""Every arm as a LoRA request of ONE vLLM engine (``arms_pass="vllm"``): the pieces that need no vllm.

lm-eval's vLLM backend (``lm_eval.models.vllm_causallms.VLLM``) evaluates one model, or one LoRA adapter
(``lora_local_path``), per engine. Here one engine holds every arm (``enable_lora``, ``max_loras`` = the adapters
of the call) and :class:`~tasks.evaluation.arms.vllm_lm.ArmsVLLM` runs lm-eval's own request methods once per arm
while each of their engine calls is made ONCE for all arms: the prompts fanned out arm-major with one
``LoRARequest`` per prompt (None = the bare base), the outputs split back per arm (:class:`FanOut`). vLLM schedules
the K x N prompts together (continuous batching), so an arm costs its own tokens, not another engine pass.

vllm is imported only by :mod:`tasks.evaluation.arms.vllm_lm`, and only when this path is used; without it the
option is refused at config validation with :data:`VLLM_MISSING`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

VLLM_MISSING = "vllm is not installed: pip install vllm, or use arms_pass one_pass"
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted max_lora_rank values


def vllm_installed() -> bool:
    """Whether ``import vllm`` would find the package (nothing is imported)."""
    return find_spec("vllm") is not None


def require_vllm() -> None:
    """Raise ``ValueError(VLLM_MISSING)`` unless vllm is installed."""
    if not vllm_installed():
        raise ValueError(VLLM_MISSING)


@dataclass(frozen=True)
class LoraArm:
    """One arm of the engine.

    Attributes:
        subject: The evaluator's subject name.
        lora_id: vLLM's integer id of the adapter (unique for the engine's life: vLLM caches adapters by id, so an
            id is never reused for other weights); 0 for the bare base.
        path: The PEFT adapter dir (None: the bare base, served without a LoRA request).
    """

    subject: str
    lora_id: int
    path: str | None


def lora_arms(subjects: dict[str, Path | None], first_id: int) -> list[LoraArm]:
    """One :class:`LoraArm` per subject, in order; adapters numbered from ``first_id`` (>= 1)."""
    if first_id < 1:
        raise ValueError(f"lora_arms: vLLM LoRA ids start at 1, got {first_id}")
    out, next_id = [], first_id
    for subject, path in subjects.items():
        if path is None:
            out.append(LoraArm(subject, 0, None))
        else:
            out.append(LoraArm(subject, next_id, str(path)))
            next_id += 1
    return out


def max_lora_rank(arms: Sequence[LoraArm]) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds every arm's rank (``r`` of its adapter_config.json).

    Raises:
        ValueError: An adapter of rank above vLLM's largest, naming it.
    """
    ranks = [int(json.loads((Path(a.path) / "adapter_config.json").read_text(encoding="utf-8"))["r"])
             for a in arms if a.path is not None]  # fmt: skip
    need = max(ranks, default=1)
    fit = next((r for r in LORA_RANKS if r >= need), None)
    if fit is None:
        raise ValueError(f"arms_pass vllm: an adapter of rank {need} exceeds vLLM's max_lora_rank {LORA_RANKS[-1]}; "
                         f"use arms_pass one_pass")
    return fit


def engine_options(arms: Sequence[LoraArm], *, dtype: str, batch_size: int | str) -> dict[str, Any]:
    """The keyword arguments of lm-eval's ``VLLM`` for an engine that serves ``arms`` as LoRA requests."""
    loras = sum(a.path is not None for a in arms)
    return {"dtype": dtype, "batch_size": batch_size, "enable_lora": loras > 0, "max_loras": max(loras, 1),
            "max_cpu_loras": max(loras, 1), "max_lora_rank": max_lora_rank(arms)}


def fan_out(prompts: Sequence[Any], params: Sequence[Any], loras: Sequence[Any]) -> tuple[list, list, list]:
    """Every prompt once per arm, arm-major: ``(prompts, params, lora per prompt)`` of one engine call."""
    if len(prompts) != len(params):
        raise ValueError(f"fan_out: {len(prompts)} prompts but {len(params)} sampling params")
    return ([p for _ in loras for p in prompts], [s for _ in loras for s in params],
            [lora for lora in loras for _ in prompts])


def split(outputs: Sequence[Any], arms: int) -> list[list[Any]]:
    """The outputs of a :func:`fan_out` call, one list per arm (in the prompts' order)."""
    if arms < 1 or len(outputs) % arms:
        raise ValueError(f"split: {len(outputs)} outputs cannot be {arms} arms' equal shares")
    n = len(outputs) // arms
    return [list(outputs[a * n:(a + 1) * n]) for a in range(arms)]


class FanOut:
    """Runs one lm-eval request method per arm while every engine call it makes runs once for all arms.

    The first arm's run records: each engine call is fanned out over every arm (:func:`fan_out`), and the other
    arms' shares are kept. Each later arm's run replays: lm-eval's method rebuilds the same chunks from the same
    requests (its order depends only on the requests), so its n-th engine call is answered with the n-th recorded
    share, and lm-eval's own parsing turns it into that arm's responses.

    Args:
        engine: ``(prompts, params, loras) -> outputs``, one output per prompt (``vllm.LLM.generate``).
        loras: One LoRA request per arm (None: the bare base).
    """

    def __init__(self, engine: Callable[[list, list, list], Sequence[Any]], loras: Sequence[Any]) -> None:
        self.engine, self.loras = engine, list(loras)
        self.engine_calls = 0
        self._recorded: list[list[list[Any]]] | None = None
        self._arm: int | None = None
        self._cursor = 0

    def call(self, prompts: list, params: list) -> list:
        """Answer one engine call of the arm being run (recording, or replaying what was recorded)."""
        if self._arm is None:
            raise RuntimeError("FanOut.call outside FanOut.run")
        if self._arm > 0:
            if self._recorded is None or self._cursor >= len(self._recorded):
                raise RuntimeError("FanOut: an arm's run made more engine calls than the first arm's")
            share = self._recorded[self._cursor][self._arm]
            if len(share) != len(prompts):
                raise RuntimeError("FanOut: an arm's run chunked its requests unlike the first arm's")
            self._cursor += 1
            return share
        shares = split(self.engine(*fan_out(prompts, params, self.loras)), len(self.loras))
        self.engine_calls += 1
        assert self._recorded is not None
        self._recorded.append(shares)
        return shares[0]

    def run(self, method: Callable[[], Any]) -> list[Any]:
        """``method()`` once per arm (each calling :meth:`call` for its engine work); one result per arm."""
        results = []
        self._recorded = []
        try:
            for arm in range(len(self.loras)):
                self._arm, self._cursor = arm, 0
                results.append(method())
                if arm > 0 and self._cursor != len(self._recorded):
                    raise RuntimeError("FanOut: an arm's run made fewer engine calls than the first arm's")
        finally:
            self._arm, self._recorded = None, None
        return results
