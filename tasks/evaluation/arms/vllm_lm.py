"""lm-eval's vLLM backend serving every arm from one engine (``arms_pass="vllm"``). Imports vllm: load it lazily.

The evaluator runs ``simple_evaluate`` once per subject, as on the other paths. The first run of a benchmark makes
lm-eval's engine calls once for all arms, each arm a LoRA request of the same ``vllm.LLM``
(:class:`~tasks.evaluation.arms.vllm_arms.FanOut`), and keeps every arm's responses; later runs are served from
them. lm-eval's own tokenisation, chunking and parsing (``VLLM._loglikelihood_tokens``, ``generate_until``) make
every response, so each arm's are what lm-eval's vLLM backend returns with ``lora_local_path`` set to its adapter.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from lm_eval.models.vllm_causallms import VLLM
from vllm import SamplingParams, TokensPrompt
from vllm.lora.request import LoRARequest

from spectral_surgery.tasks.evaluation.arms.lm import generation_key
from spectral_surgery.tasks.evaluation.arms.vllm_arms import FanOut, LoraArm


class ArmsVLLM(VLLM):
    """lm-eval ``VLLM`` whose engine holds every arm as a LoRA adapter, serving one subject at a time.

    Args:
        pretrained: The base model (hub id or local dir) vLLM loads.
        arms: The arms (:func:`~tasks.evaluation.arms.vllm_arms.lora_arms`), or none until :meth:`set_arms`; the
            first is served until :meth:`serve`.
        **vllm_kwargs: lm-eval ``VLLM`` options (:func:`~tasks.evaluation.arms.vllm_arms.engine_options`: LoRA
            capacity, dtype, batch size; ``gpu_memory_utilization``, ``max_model_len``, ...).

    Attributes:
        pass_seconds: Seconds of engine work done for all arms together.
        engine_calls: Engine calls made for all arms (each one fanned out over every arm).
    """

    def __init__(self, pretrained: str, *, arms: Sequence[LoraArm] = (), **vllm_kwargs: Any) -> None:
        super().__init__(pretrained=pretrained, **vllm_kwargs)
        if self.data_parallel_size > 1:
            raise ValueError("arms_pass vllm: data_parallel_size > 1 runs engines in ray workers, not one engine; "
                             "use data_parallel_size 1")
        self.pass_seconds = 0.0
        self.engine_calls = 0
        self._fan: FanOut | None = None
        self.arms: list[LoraArm] = []
        if arms:
            self.set_arms(arms)

    def set_arms(self, arms: Sequence[LoraArm]) -> None:
        """Serve these arms from now on (their adapters' ids must be new to the engine, or the same weights)."""
        if not arms:
            raise ValueError("ArmsVLLM: give at least one arm")
        self.arms = list(arms)
        self._index = {a.subject: i for i, a in enumerate(self.arms)}
        self._loras = [None if a.path is None else LoRARequest(f"arm{a.lora_id}", a.lora_id, a.path)
                       for a in self.arms]  # fmt: skip
        self._responses: dict[tuple, list[Any]] = {}
        self.serve(self.arms[0].subject)

    def serve(self, subject: str) -> None:
        """Make the next calls return ``subject``'s responses."""
        if subject not in self._index:
            raise KeyError(f"ArmsVLLM: unknown subject {subject!r} (arms: {list(self._index)})")
        self.serving = subject
        self.lora_request = self._loras[self._index[subject]]  # lm-eval's direct calls: the served arm

    def _engine(self, prompts: list, params: list, loras: list) -> list:
        return self.model.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sampling_params=params,
                                   use_tqdm=False, lora_request=loras)  # fmt: skip

    def _model_generate(self, requests: list[list[int]], generate: bool = False,
                        sampling_params: list[SamplingParams] | SamplingParams | None = None) -> Any:
        if self._fan is None:
            return super()._model_generate(requests, generate=generate, sampling_params=sampling_params)
        if not generate or sampling_params is None:  # lm-eval's log-likelihood call (VLLM._model_generate)
            sampling_params = SamplingParams(temperature=0, prompt_logprobs=1, max_tokens=1, detokenize=False)
        if not isinstance(sampling_params, list):
            sampling_params = [sampling_params] * len(requests)
        return self._fan.call([list(r) for r in requests], sampling_params)

    def _all_arms(self, kind: str, method: Callable, requests: list, key: Callable[[Any], Any]) -> list:
        """The served subject's responses; requests not seen yet are run for every arm first (one fan-out)."""
        missing = list({key(r): r for r in requests if (kind, key(r)) not in self._responses}.values())
        if missing:
            t0 = time.perf_counter()
            self._fan = FanOut(self._engine, self._loras)
            try:
                per_arm = self._fan.run(lambda: method(self, missing, disable_tqdm=True))
                self.engine_calls += self._fan.engine_calls
            finally:
                self._fan = None
            for i, req in enumerate(missing):
                self._responses[kind, key(req)] = [per_arm[a][i] for a in range(len(self.arms))]
            self.pass_seconds += time.perf_counter() - t0
        return [self._responses[kind, key(r)][self._index[self.serving]] for r in requests]

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self._all_arms("loglikelihood", VLLM.loglikelihood, requests, lambda r: r.args)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        return self._all_arms("loglikelihood_rolling", VLLM.loglikelihood_rolling, requests, lambda r: r.args)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        return self._all_arms("generate_until", VLLM.generate_until, requests, lambda r: generation_key(r.args))
