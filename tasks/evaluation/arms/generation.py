"""Greedy ``generate_until`` for many arms of one base, decoded once and verified against a reference arm.

The arms are named PEFT adapters on one ``peft.PeftModel`` (:data:`BASE_ARM` is the bare base). Arm by arm,
lm-eval's ``HFLM.generate_until`` decodes every document token by token for every arm, although most arms agree
with the baseline on most documents. Here:

1. the reference arm decodes every document greedily (prompts encoded exactly as HFLM encodes its batches:
   left truncation to ``max_length - max_gen_toks``, the same special tokens);
2. every other arm is checked by ONE teacher-forced forward over prompt + the reference continuation, in PEFT
   mixed-adapter batches (an arm per row; the LoRA deltas by :mod:`~tasks.evaluation.arms.stacked_lora`'s
   stacked multiply, or PEFT's mixed batch where a layer is not stacked), comparing its argmax with the
   reference's tokens up to the reference's *useful length*: the first token that completes a stop string in the
   decoded text (stops are matched in text: a tokenizer may split ``"\n\n"`` into two tokens), or an EOS token,
   or ``max_gen_toks``;
   later tokens are batch filler and would only give false divergences;
3. only the (arm, document) pairs that diverge decode on, from the first divergent token, reusing the KV cache of
   the verified prefix (the cached keys are already rotated, so the continuation passes explicit
   ``position_ids``), until a stop, EOS or ``max_gen_toks``; then lm-eval's text post-processing;
4. the token prefix every prompt shares (the few-shot examples) is computed once per arm and its KV cache is
   stacked under each row, so each document costs an arm only its own question and the verified tokens.

Greedy requests only: sampling has no single continuation to verify and is refused with
:class:`UnsupportedGeneration` (the caller falls back to arm by arm). Exactness is "the same argmax": the
teacher-forced and cached passes compute the same logits as ``generate`` up to float rounding, so an arm whose
top-2 logits tie to rounding could in principle flip; the tests and the benchmark compare every string. On a
bf16/fp16 model every argmax here is taken on fp32 logits (:func:`~tasks.evaluation.arms.precision.fp32_logits`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from spectral_surgery.tasks.evaluation.arms import BASE_ARM
from spectral_surgery.tasks.evaluation.arms.decoding import Counts, Row, Runner, Stop, UnsupportedGeneration
from spectral_surgery.tasks.evaluation.arms.precision import fp32_logits

__all__ = ["ArmGenerationStats", "GenerationStats", "UnsupportedGeneration", "generate_until_arms"]

# generation_config fields that change a greedy argmax (logits processors) and the value that leaves it alone
_NEUTRAL_GENERATION = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1.0,
                       "bad_words_ids": None, "min_length": 0, "min_new_tokens": None, "forced_bos_token_id": None,
                       "forced_eos_token_id": None, "suppress_tokens": None, "begin_suppress_tokens": None,
                       "sequence_bias": None, "num_beams": 1, "guidance_scale": 1.0}  # fmt: skip


@dataclass(frozen=True)
class ArmGenerationStats:
    """What one arm cost and how often it agreed with the reference.

    Attributes:
        arm: Arm name.
        documents: Requests generated for this arm.
        verified: Documents whose output was proven equal to the reference's by the teacher-forced check
            (the reference arm itself: 0).
        diverged: Documents that decoded on from their first divergent token (the reference arm itself: 0).
        forward_passes: Model forward passes with at least one row of this arm (mixed batches count for each).
        decoded_tokens: Tokens this arm produced one step at a time (the reference: its own tokens, or with
            ``shared_prefix=False`` every position of every HFLM batch row, filler included; another arm: its
            tokens from its first divergence on).
    """

    arm: str
    documents: int
    verified: int
    diverged: int
    forward_passes: int
    decoded_tokens: int

    @property
    def divergence_rate(self) -> float:
        """Share of this arm's checked documents that diverged from the reference (0 for the reference)."""
        checked = self.verified + self.diverged
        return self.diverged / checked if checked else 0.0


@dataclass(frozen=True)
class GenerationStats:
    """Per-arm statistics of one :func:`generate_until_arms` call.

    Attributes:
        reference: The arm that decoded every document.
        arms: One record per arm, in the order the arms were given.
        forward_passes: Model forward passes in all (reference ``generate`` steps included).
        shared_prefix_tokens: Length of the prompt prefix computed once per arm (0: none shared or not asked).
    """

    reference: str
    arms: tuple[ArmGenerationStats, ...]
    forward_passes: int
    shared_prefix_tokens: int

    def arm(self, name: str) -> ArmGenerationStats:
        """The record of arm ``name``."""
        return next(a for a in self.arms if a.arm == name)


def generate_until_arms(
    lm: Any, requests: Sequence[Any], arms: Sequence[str], *, reference: str, batch_size: int | None = None,
    shared_prefix: bool = True, max_decode_rows: int = 128, lora_multiply: str = "stacked",
    fallbacks: dict[str, str] | None = None,
) -> tuple[dict[str, list[str]], GenerationStats]:
    """Greedy ``generate_until`` of every arm, string for string what ``HFLM.generate_until`` returns per arm.

    Args:
        lm: lm-eval ``HFLM`` (causal backend, integer batch size) whose ``.model`` is a ``peft.PeftModel`` holding
            every arm as a named adapter.
        requests: lm-eval ``Instance``s of type ``generate_until``; ``args == (context, gen_kwargs)`` with the
            context already chat-templated.
        arms: Arm names: PEFT adapter names of ``lm.model`` or :data:`BASE_ARM`; unique.
        reference: The arm that decodes every document (one of ``arms``; the baseline where there is one).
        batch_size: Rows per teacher-forced / continuation batch (default ``lm.batch_size``).
        shared_prefix: Compute the token prefix shared by every prompt (the few-shot examples) once per arm and
            reuse its KV cache, the reference decoding in these batches too; False: the reference decodes through
            HFLM's own ``generate`` batches (its strings are HFLM's by construction) and no prefix is shared.
        max_decode_rows: Most rows decoding together (the rows that diverged in several teacher-forced batches
            decode as one batch, so the sequential steps are paid once, not once per batch; this bounds its cache).
        lora_multiply: How a mixed batch's LoRA deltas are computed: ``"stacked"`` (default: one gathered batched
            multiply per layer, :mod:`~tasks.evaluation.arms.stacked_lora`) or ``"peft"`` (PEFT's mixed batch).
        fallbacks: Where given, ``fallbacks["lora_multiply"]`` says which LoRA layers kept PEFT's mixed batch on
            the stacked path and why; untouched when every layer is stacked.

    Returns:
        ``(outputs, stats)``: arm -> generated strings aligned with ``requests``, and the per-arm
        :class:`GenerationStats`.

    Raises:
        UnsupportedGeneration: Sampling requests, generation kwargs or generation-config settings that change a
            greedy argmax, a thinking-token or seq2seq HFLM, HFLM's ``batch_size="auto"`` without this call's
            ``batch_size`` (or with ``shared_prefix=False``), a model that is not a ``PeftModel``, a DoRA arm that
            PEFT's mixed batch would have to run (:class:`~tasks.evaluation.arms.stacked_lora.MixedBatchRefused`);
            the caller falls back to ``HFLM.generate_until`` arm by arm.
        ValueError: Unknown, repeated or empty arms, or a reference that is not one of them.
    """
    model = _check_model(lm, arms, reference)
    if not isinstance(lm.batch_size, int) and (batch_size is None or not shared_prefix):
        raise UnsupportedGeneration(f"HFLM batch_size={lm.batch_size!r}: give an integer batch_size (HFLM's or "
                                    "this call's, with shared_prefix)")
    # every argmax below (the reference's decoding, verification, decoding on) from fp32 logits: a bf16/fp16 model's
    # head is run in fp32 on upcast hidden states (tasks.evaluation.arms.precision)
    from spectral_surgery.tasks.evaluation.arms.stacked_lora import MixedBatch, MixedBatchRefused

    try:
        mixed = MixedBatch(model, arms, lora_multiply)  # every arm's LoRA factors stacked once per call
    except MixedBatchRefused as e:  # a DoRA arm PEFT's mixed batch would refuse: the caller goes arm by arm
        raise UnsupportedGeneration(str(e)) from e
    if mixed.fallback is not None and fallbacks is not None:
        fallbacks["lora_multiply"] = mixed.fallback
    with fp32_logits(model):
        results, stats = _generate_all(lm, model, requests, arms, reference, batch_size, shared_prefix,
                                       max_decode_rows, mixed)
    return results, stats


def _generate_all(lm: Any, model: Any, requests: Sequence[Any], arms: Sequence[str], reference: str,
                  batch_size: int | None, shared_prefix: bool, max_decode_rows: int,
                  mixed: Any) -> tuple[dict[str, list[str]], GenerationStats]:
    """The body of :func:`generate_until_arms` once the model is checked (see there)."""
    from lm_eval.models.utils import Collator

    args = [_check_request(r) for r in requests]
    counts = {a: Counts() for a in arms}
    outputs: dict[str, list[str]] = {a: [] for a in arms}
    # HFLM's own order and batches: longest context first, grouped by gen_kwargs
    re_ords = Collator(args, sort_fn=lambda req: (-len(lm.tok_encode(req[0])), req[0]),
                       group_by="gen_kwargs", group_fn=lambda x: x[1])  # fmt: skip
    hflm_batch = lm.batch_size if isinstance(lm.batch_size, int) else 0  # "auto" (with our batch_size): one chunk
    chunks = [_encode(lm, model, chunk) for chunk in re_ords.get_batched(n=hflm_batch, batch_fn=None)]
    prompts = [p for c in chunks for p in c.prompts]
    runner = Runner(model, lm, counts, int(batch_size or lm.batch_size), max_decode_rows,
                     _common_prefix(prompts) if shared_prefix and prompts else [], mixed)  # fmt: skip
    docs = [(c, i) for c in chunks for i in range(len(c.prompts))]  # HFLM's order
    if shared_prefix:  # the reference decodes in the runner's batches, every document's steps together
        refs = runner.run([Row(reference, c.prompts[i], [], c.stop) for c, i in docs])
        ref_strings = [c.text(t) for (c, _), t in zip(docs, refs, strict=True)]
    else:
        refs, ref_strings = [], []
        for c in chunks:
            toks, strings = _hflm_reference(runner, reference, c)
            refs, ref_strings = refs + toks, ref_strings + strings
    outputs[reference] = ref_strings
    others = [a for a in arms if a != reference]
    rows = [Row(a, c.prompts[i], refs[k], c.stop) for k, (c, i) in enumerate(docs) for a in others]
    toks = iter(runner.run(rows))
    for k in range(len(docs)):
        for a in others:
            t = next(toks)
            outputs[a].append(ref_strings[k] if t is None else docs[k][0].text(t))
    results = {a: re_ords.get_original(outputs[a]) for a in arms}
    stats = GenerationStats(reference, tuple(ArmGenerationStats(a, **vars(counts[a])) for a in arms), runner.passes,
                            len(runner.prefix))
    return results, stats


@dataclass
class _Chunk:
    """One HFLM batch: its contexts encoded as HFLM encodes them, and how its rows end."""

    contexts: list[str]
    kwargs: dict  # what HFLM passes on to ``generate`` (do_sample, temperature)
    stop: Stop
    enc: torch.Tensor  # (B, W) left-padded, left-truncated
    mask: torch.Tensor
    prompts: list[list[int]]  # each row without its padding

    def text(self, toks: list[int]) -> str:
        """lm-eval's output string for generated tokens: decoded, cut at the first stop string."""
        from lm_eval.models.utils import postprocess_generated_text

        return postprocess_generated_text(self.stop.decode(toks), self.stop.until, None)


def _encode(lm: Any, model: Any, chunk: Sequence[tuple[str, dict]]) -> _Chunk:
    """Encode one HFLM batch exactly as ``HFLM.generate_until`` does (kwargs normalised, EOS added to ``until``)."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

    contexts, all_kwargs = zip(*chunk, strict=True)
    kwargs = normalize_gen_kwargs(all_kwargs[0], lm.max_gen_toks)
    until = handle_stop_sequences(kwargs.pop("until", None), eos=lm.tok_decode(lm.eot_token_id,
                                                                                skip_special_tokens=False))
    max_gen_toks = kwargs.pop("max_gen_toks")
    _check_greedy(kwargs)
    enc, mask = lm.tok_batch_encode(list(contexts), left_truncate_len=lm.max_length - max_gen_toks,
                                    truncation=lm.truncation)  # fmt: skip
    enc, mask = enc.to(lm.device), mask.to(lm.device)
    prompts = [enc[i][mask[i].bool()].tolist() for i in range(enc.shape[0])]
    return _Chunk(list(contexts), kwargs, Stop(until, _eos_ids(model, lm), max_gen_toks, lm.tok_decode), enc, mask,
                  prompts)  # fmt: skip


def _common_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest token prefix of every prompt, one token short of the shortest (each row feeds a token)."""
    first, n = prompts[0], min(map(len, prompts)) - 1
    for p in prompts[1:]:
        n = next((k for k in range(n) if p[k] != first[k]), n)
    return first[:max(n, 0)]


def _hflm_reference(runner: Runner, reference: str, c: _Chunk) -> tuple[list[list[int]], list[str]]:
    """The reference's tokens (cut at their useful length) and strings from HFLM's own ``generate`` call."""
    from lm_eval.models.utils import postprocess_generated_text

    with _only_adapter(runner.model, reference):
        cont = runner.lm._model_generate(context=c.enc, attention_mask=c.mask, stop=c.stop.until,
                                       max_length=c.enc.shape[1] + c.stop.max_gen_toks, **c.kwargs)  # fmt: skip
    gen = cont[:, c.enc.shape[1]:].tolist()
    steps = len(gen[0])
    runner.passes += steps
    count = runner.counts[reference]
    count.forward_passes += steps
    count.decoded_tokens += steps * len(gen)  # every row runs every step (filler after its own end)
    count.documents += len(gen)
    lengths = [c.stop.useful_length(g) for g in gen]
    if any(k is None for k in lengths):  # a batch stopped by a criterion our text rule does not see
        raise UnsupportedGeneration("a reference row ended before any stop, EOS or max_gen_toks")
    strings = [postprocess_generated_text(runner.lm.tok_decode(g), c.stop.until, None) for g in gen]
    return [g[:k] for g, k in zip(gen, lengths, strict=True)], strings


@contextlib.contextmanager
def _only_adapter(model: Any, arm: str) -> Iterator[None]:
    """Make ``arm`` the active adapter (or disable adapters for the bare base); restore the previous one after."""
    if arm == BASE_ARM:
        with model.disable_adapter():
            yield
        return
    previous = model.active_adapter
    model.set_adapter(arm)
    try:
        yield
    finally:
        model.set_adapter(previous)


def _eos_ids(model: Any, lm: Any) -> frozenset[int]:
    """Token ids that end a row inside ``generate`` (the generation config's EOS, else the tokenizer's)."""
    eos = model.generation_config.eos_token_id
    eos = lm.tokenizer.eos_token_id if eos is None else eos
    return frozenset(eos if isinstance(eos, (list, tuple)) else [eos])


def _check_model(lm: Any, arms: Sequence[str], reference: str) -> Any:
    """The ``PeftModel`` behind ``lm``, after checking the arms and what HFLM would do differently."""
    from peft import PeftModel

    model = lm.model
    if not isinstance(model, PeftModel):
        raise UnsupportedGeneration(f"lm.model is a {type(model).__name__}, not a peft.PeftModel holding the arms")
    if getattr(lm, "backend", "causal") != "causal" or getattr(lm, "think_end_token", None) is not None:
        raise UnsupportedGeneration("only a causal HFLM without think_end_token is reproduced; fall back arm by arm")
    if not arms or len(set(arms)) != len(arms):
        raise ValueError(f"arms must be non-empty and unique, got {list(arms)}")
    unknown = [a for a in arms if a != BASE_ARM and a not in model.peft_config]
    if unknown:
        raise ValueError(f"arms {unknown} are not adapters of lm.model (loaded: {sorted(model.peft_config)}); "
                         f"load them with PeftModel.load_adapter or name the bare base {BASE_ARM!r}")
    if reference not in arms:
        raise ValueError(f"reference {reference!r} is not one of the arms {list(arms)}")
    config = model.generation_config
    changed = {k: v for k, neutral in _NEUTRAL_GENERATION.items()
               if (v := getattr(config, k, None)) is not None and v != neutral}  # fmt: skip
    if changed:
        raise UnsupportedGeneration(f"the model's generation_config changes greedy argmaxes: {changed}")
    return model


def _check_request(request: Any) -> tuple[str, dict]:
    """``(context, gen_kwargs)`` of a ``generate_until`` request."""
    kind = getattr(request, "request_type", "generate_until")
    if kind != "generate_until":
        raise UnsupportedGeneration(f"request type {kind!r}: only generate_until is handled here")
    context, gen_kwargs = request.args
    return context, gen_kwargs


def _check_greedy(kwargs: dict) -> None:
    """Refuse sampling and any generation kwarg beyond greedy decoding (after lm-eval's normalisation)."""
    if kwargs.get("do_sample"):
        raise UnsupportedGeneration(f"sampling requests (do_sample=True, temperature={kwargs.get('temperature')}) "
                                    "have no single continuation to verify; evaluate them arm by arm")  # fmt: skip
    extra = sorted(set(kwargs) - {"do_sample", "temperature"})
    if extra:
        raise UnsupportedGeneration(f"generation kwargs {extra} are not reproduced here; evaluate arm by arm")
