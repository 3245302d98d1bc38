"""lm-eval's ``HFLM`` that knows every arm: the first call of a benchmark scores all of them, later calls serve.

The evaluator runs ``simple_evaluate`` once per arm, as on the arm-by-arm path, so every arm's responses go through
lm-eval's own filters and metrics and its per-document samples stay lm-eval's. Only the first call of a
(benchmark, documents) does model work: it scores the requests for ALL arms together and caches the responses by
request; each later call (the same requests, rebuilt by lm-eval for the next arm) is answered from the cache::

    lm = ArmsLM(peft_model, tokenizer, arms=["subject1", "subject2", "__base__"], batch_size=8)
    for arm in lm.arms:
        lm.serve(arm)
        simple_evaluate(model=lm, tasks=["ss_mc"], ...)   # model work on the first iteration only

Request types: ``loglikelihood`` in one pass (:func:`~tasks.evaluation.arms.loglikelihood.loglikelihood_arms`; arm
by arm, recorded, where a DoRA arm would need PEFT's mixed batch, which refuses DoRA);
``generate_until`` through :meth:`ArmsLM._generate_all`: greedy requests by
:func:`~tasks.evaluation.arms.generation.generate_until_arms` (the reference arm decodes; every other arm is verified by
one teacher-forced pass over its continuation and decodes on only where it diverges), anything it refuses (sampling,
a setting that changes a greedy argmax) by HFLM's own ``generate_until`` with each adapter active in turn, recorded;
any other type (``loglikelihood_rolling``, ...) is scored arm by arm
for the arm being served, recorded in :attr:`ArmsLM.fallbacks`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lm_eval.models.huggingface import HFLM

from spectral_surgery.tasks.evaluation.arms import BASE_ARM
from spectral_surgery.tasks.evaluation.arms.loglikelihood import loglikelihood_arms
from spectral_surgery.tasks.evaluation.arms.memory import DEFAULT_ROWS, ModelDims, free_bytes, generation_rows, is_auto
from spectral_surgery.tasks.evaluation.arms.stacked_lora import MixedBatchRefused

OTHER_FALLBACK = "arm by arm: no all-arms scorer for this request type"


def generation_key(args: tuple) -> tuple[str, str]:
    """Cache key of a ``generate_until`` request: its context and its generation settings (``gen_kwargs`` as sorted
    JSON). Shared by the arms models (:class:`ArmsLM`, :class:`~tasks.evaluation.arms.vllm_lm.ArmsVLLM`): a request is
    generated once per arm.

    Args:
        args: The request's ``args``: ``(context, gen_kwargs)``.

    Returns:
        ``(context, gen_kwargs as JSON)``.
    """
    context, gen_kwargs = args
    return context, json.dumps(gen_kwargs, sort_keys=True, default=repr)


class ArmsLM(HFLM):
    """``HFLM`` over a ``PeftModel`` holding every arm as a named adapter, serving one arm at a time.

    Args:
        pretrained: The ``peft.PeftModel`` with every arm loaded (or the plain base when the only arm is
            ``"__base__"``).
        tokenizer: Its tokenizer.
        arms: Adapter names; ``"__base__"`` = the bare base model. The first one is served until :meth:`serve`.
        batch_size: Rows per forward pass (HFLM's for the fallbacks; packed rows for the one pass), or ``"auto"``:
            the one pass sizes its batches from the device's free memory (:mod:`tasks.evaluation.arms.memory`),
            HFLM's fallbacks find theirs as lm-eval does.
        reference: The arm that decodes every generative document, the others being verified against it (the
            baseline where there is one); default the first arm.
        lora_multiply: How the one pass computes the LoRA deltas of a mixed batch: ``"stacked"`` (default, every
            arm's A and B stacked per layer, one gathered batched multiply: :mod:`~tasks.evaluation.arms.
            stacked_lora`) or ``"peft"`` (PEFT's mixed-adapter batch, a loop over the adapters in every layer).
        **hflm_kwargs: Any other ``HFLM`` option.

    Attributes:
        arms: The arms, in order.
        serving: The arm whose responses the next calls return.
        pass_seconds: Seconds spent in model work for all arms together (the shared passes and the fallbacks
            that score every arm at once).
        requests_scored: Request type -> distinct requests scored for all arms.
        fallbacks: Request type -> why it was scored arm by arm; ``"lora_multiply"`` -> which LoRA layers kept
            PEFT's mixed batch on the stacked path and why (``lora_bias``, embeddings, ...).
        generation_stats: The last :class:`~tasks.evaluation.arms.generation.GenerationStats` (per arm: documents
            verified equal to the reference vs diverged, forward passes, decoded tokens), or None.
    """

    def __init__(self, pretrained: Any, tokenizer: Any, *, arms: Sequence[str], batch_size: int | str = 8,
                 reference: str | None = None, lora_multiply: str = "stacked", **hflm_kwargs: Any) -> None:
        super().__init__(pretrained=pretrained, tokenizer=tokenizer, batch_size=batch_size, **hflm_kwargs)
        if not arms:
            raise ValueError("ArmsLM: give at least one arm")
        self.arms = list(dict.fromkeys(arms))
        self.serving = self.arms[0]
        self.reference = self.arms[0] if reference is None else reference
        if self.reference not in self.arms:
            raise ValueError(f"ArmsLM: reference {self.reference!r} is not one of the arms {self.arms}")
        from spectral_surgery.tasks.evaluation.arms.stacked_lora import LORA_MULTIPLIES

        if lora_multiply not in LORA_MULTIPLIES:
            raise ValueError(f"ArmsLM: lora_multiply must be one of {LORA_MULTIPLIES}, got {lora_multiply!r}")
        self.lora_multiply = lora_multiply
        self.generation_stats = None
        self.pass_seconds = 0.0
        self.requests_scored: dict[str, int] = {}
        self.fallbacks: dict[str, str] = {}
        self._pass_batch_size = batch_size if is_auto(batch_size) else int(batch_size)
        self._ll: dict[tuple, dict[str, tuple[float, bool]]] = {}
        self._gen: dict[tuple[str, str], dict[str, str]] = {}
        self._model_info: dict | None = None

    def get_model_info(self) -> dict:
        """HFLM's model info (parameter count, dtype, sha), computed once: the model is the same for every arm, and
        HFLM's count walks and prints the whole ``PeftModel``, every resident adapter included (0.5 s per arm)."""
        if self._model_info is None:
            self._model_info = super().get_model_info()
        return dict(self._model_info)

    def serve(self, arm: str) -> None:
        """Make the next calls return ``arm``'s responses."""
        if arm not in self.arms:
            raise KeyError(f"ArmsLM: unknown arm {arm!r} (arms: {self.arms})")
        self.serving = arm

    @contextmanager
    def active(self, arm: str) -> Iterator[None]:
        """Make ``arm`` the model's active adapter (the bare base: every adapter disabled) for HFLM's own paths."""
        from peft import PeftModel

        model = self.model
        if not isinstance(model, PeftModel):
            if arm != BASE_ARM:
                raise KeyError(f"ArmsLM: a model without adapters has only the arm {BASE_ARM!r}, got {arm!r}")
            yield
        elif arm == BASE_ARM:
            with model.disable_adapter():
                yield
        else:
            model.set_adapter(arm)
            yield

    def _count(self, kind: str, n: int, seconds: float) -> None:
        self.requests_scored[kind] = self.requests_scored.get(kind, 0) + n
        self.pass_seconds += seconds

    # -- loglikelihood: every arm in one pass
    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``HFLM.loglikelihood`` of the served arm; the first call for these requests scores every arm (in one pass,
        or HFLM's own with each adapter active where the arms cannot share a mixed batch:
        :class:`~tasks.evaluation.arms.stacked_lora.MixedBatchRefused`, recorded in :attr:`fallbacks`)."""
        if self.enable_thinking:  # HFLM's own refusal
            raise ValueError("enable_thinking=True is not compatible with loglikelihood tasks.")
        missing = list({r.args: r for r in requests if r.args not in self._ll}.values())
        if missing:
            t0 = time.perf_counter()
            try:
                scores = loglikelihood_arms(self, missing, self.arms, batch_size=self._pass_batch_size,
                                            lora_multiply=self.lora_multiply, fallbacks=self.fallbacks)
            except MixedBatchRefused as e:  # a DoRA arm PEFT's mixed batch would run: HFLM's own, arm by arm
                self.fallbacks["loglikelihood"] = f"arm by arm: {e}"
                scores = {}
                for arm in self.arms:
                    with self.active(arm):
                        scores[arm] = HFLM.loglikelihood(self, missing, disable_tqdm=True)
            for i, req in enumerate(missing):
                self._ll[req.args] = {arm: scores[arm][i] for arm in self.arms}
            self._count("loglikelihood", len(missing), time.perf_counter() - t0)
        out = [self._ll[r.args][self.serving] for r in requests]
        for r, answer in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", r.args, answer)
        return out

    # -- generate_until: the seam for an all-arms generator
    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """``HFLM.generate_until`` of the served arm; the first call for these requests generates for every arm."""
        missing = list({generation_key(r.args): r for r in requests
                        if generation_key(r.args) not in self._gen}.values())
        if missing:
            t0 = time.perf_counter()
            texts = self._generate_all(missing)
            for i, req in enumerate(missing):
                self._gen[generation_key(req.args)] = {arm: texts[arm][i] for arm in self.arms}
            self._count("generate_until", len(missing), time.perf_counter() - t0)
        out = [self._gen[generation_key(r.args)][self.serving] for r in requests]
        for r, text in zip(requests, out):
            self.cache_hook.add_partial("generate_until", r.args, text)
        return out

    def _generate_all(self, requests: list) -> dict[str, list[str]]:
        """Every arm's greedy continuation of each request, in request order.

        Greedy requests: :func:`~tasks.evaluation.arms.generation.generate_until_arms` against :attr:`reference`.
        What it refuses (:class:`~tasks.evaluation.arms.generation.UnsupportedGeneration`: sampling, a setting that
        changes a greedy argmax, a model without adapters) is generated by HFLM's own ``generate_until`` with each
        arm's adapter active in turn, and recorded in :attr:`fallbacks` with the reason.
        """
        from spectral_surgery.tasks.evaluation.arms.generation import UnsupportedGeneration, generate_until_arms

        rows, decode_rows = self._generation_rows(requests)
        try:
            texts, self.generation_stats = generate_until_arms(self, requests, self.arms, reference=self.reference,
                                                               batch_size=rows, max_decode_rows=decode_rows,
                                                               lora_multiply=self.lora_multiply,
                                                               fallbacks=self.fallbacks)
            return texts
        except UnsupportedGeneration as e:
            self.fallbacks["generate_until"] = f"arm by arm: {e}"
        out = {}
        for arm in self.arms:
            with self.active(arm):
                out[arm] = HFLM.generate_until(self, requests, disable_tqdm=True)
        return out

    def _generation_rows(self, requests: list) -> tuple[int, int]:
        """``(rows per teacher-forced batch, rows decoding together)`` for these requests: the fixed batch size
        (and 128 decoding rows), or with ``"auto"`` sized from the free memory for the longest prompt and
        ``max_gen_toks`` (:func:`~tasks.evaluation.arms.memory.generation_rows`)."""
        if not is_auto(self._pass_batch_size):
            return self._pass_batch_size, 128
        free = free_bytes(self.device)
        if free is None:
            return DEFAULT_ROWS, 128
        prompt = min(max(len(self.tok_encode(r.args[0])) for r in requests), self.max_length)
        gen = max(int(r.args[1].get("max_gen_toks", self.max_gen_toks)) for r in requests)
        dims = ModelDims.of(self.model.config, next(self.model.parameters()).element_size())
        return generation_rows(free, dims, prompt_tokens=prompt, gen_tokens=gen, arms=len(self.arms))

    # -- anything else: arm by arm, recorded
    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        """HFLM's own, for the served arm only (a recorded fallback)."""
        self.fallbacks["loglikelihood_rolling"] = OTHER_FALLBACK
        with self.active(self.serving):
            return HFLM.loglikelihood_rolling(self, requests, disable_tqdm=disable_tqdm)
