"""Greedy ``generate_until`` for many arms of one base, decoded once and verified against a reference arm.

The arms are named PEFT adapters on one ``peft.PeftModel`` (:data:`BARE_BASE_ARM` is the bare base). Arm by arm,
lm-eval's ``HFLM.generate_until`` decodes every document token by token for every arm, although most arms agree
with the baseline on most documents. Here:

1. the reference arm decodes greedily through HFLM's own batched path (same batches, same padding, same
   ``generate`` call), so its strings are HFLM's;
2. every other arm is checked by ONE teacher-forced forward over prompt + the reference continuation, in PEFT
   mixed-adapter batches (``adapter_names`` per row), comparing its argmax with the reference's tokens up to the
   reference's *useful length*: the first token that completes a stop string in the decoded text (stops are
   matched in text: a tokenizer may split ``"\\n\\n"`` into two tokens), or an EOS token, or ``max_gen_toks``;
   later tokens are batch filler and would only give false divergences;
3. only the (arm, document) pairs that diverge decode on, from the first divergent token, reusing the KV cache of
   the verified prefix (the cached keys are already rotated, so the continuation passes explicit
   ``position_ids``), until a stop, EOS or ``max_gen_toks``; then lm-eval's text post-processing.

Greedy requests only: sampling has no single continuation to verify and is refused with
:class:`UnsupportedGeneration` (the caller falls back to arm by arm).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

BARE_BASE_ARM = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch
# generation_config fields that change a greedy argmax (logits processors) and the value that leaves it alone
_NEUTRAL_GENERATION = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "encoder_repetition_penalty": 1.0,
                       "bad_words_ids": None, "min_length": 0, "min_new_tokens": None, "forced_bos_token_id": None,
                       "forced_eos_token_id": None, "suppress_tokens": None, "begin_suppress_tokens": None,
                       "sequence_bias": None, "num_beams": 1, "guidance_scale": 1.0}  # fmt: skip


class UnsupportedGeneration(ValueError):
    """The requests or the model are outside what :func:`generate_until_arms` reproduces exactly (fall back)."""


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
        decoded_tokens: Tokens this arm produced one step at a time (the reference: every generated position of
            every batch row, filler included; another arm: its continuation tokens after a divergence).
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


@dataclass
class _Counts:
    documents: int = 0
    verified: int = 0
    diverged: int = 0
    forward_passes: int = 0
    decoded_tokens: int = 0


@dataclass
class _Stop:
    """How a row's generation ends: lm-eval's ``until`` (EOS string included) in text, EOS ids, a length cap."""

    until: list[str]
    eos_ids: frozenset[int]
    max_gen_toks: int
    decode: Any = field(repr=False)

    def ended(self, toks: list[int]) -> bool:
        """Whether ``toks`` (generated tokens) already determine lm-eval's output string."""
        if len(toks) >= self.max_gen_toks or (toks and toks[-1] in self.eos_ids):
            return True
        text = self.decode(toks)
        return any(term and term in text for term in self.until)

    def useful_length(self, toks: list[int]) -> int | None:
        """Tokens of a reference row up to the one that completes a stop, EOS or ``max_gen_toks`` (None: none)."""
        return next((t for t in range(1, len(toks) + 1) if self.ended(toks[:t])), None)


def generate_until_arms(
    lm: Any, requests: Sequence[Any], arms: Sequence[str], *, reference: str, batch_size: int | None = None,
    shared_prefix: bool = True, max_decode_rows: int = 128,
) -> tuple[dict[str, list[str]], GenerationStats]:
    """Greedy ``generate_until`` of every arm, string for string what ``HFLM.generate_until`` returns per arm.

    Args:
        lm: lm-eval ``HFLM`` (causal backend, integer batch size) whose ``.model`` is a ``peft.PeftModel`` holding
            every arm as a named adapter.
        requests: lm-eval ``Instance``s of type ``generate_until``; ``args == (context, gen_kwargs)`` with the
            context already chat-templated.
        arms: Arm names: PEFT adapter names of ``lm.model`` or :data:`BARE_BASE_ARM`; unique.
        reference: The arm that decodes every document (one of ``arms``; the baseline where there is one).
        batch_size: Rows per teacher-forced / continuation batch (default ``lm.batch_size``).
        shared_prefix: Compute the token prefix shared by every prompt (the few-shot examples) once per arm and
            reuse its KV cache, the reference decoding in these batches too; False: the reference decodes through
            HFLM's own ``generate`` batches (its strings are HFLM's by construction) and no prefix is shared.
        max_decode_rows: Most rows decoding together (the rows that diverged in several teacher-forced batches
            decode as one batch, so the sequential steps are paid once, not once per batch; this bounds its cache).

    Returns:
        ``(outputs, stats)``: arm -> generated strings aligned with ``requests``, and the per-arm
        :class:`GenerationStats`.

    Raises:
        UnsupportedGeneration: Sampling requests, generation kwargs or generation-config settings that change a
            greedy argmax, a thinking-token or seq2seq HFLM, ``batch_size="auto"``, a model that is not a
            ``PeftModel``; the caller falls back to ``HFLM.generate_until`` arm by arm.
        ValueError: Unknown, repeated or empty arms, or a reference that is not one of them.
    """
    from lm_eval.models.utils import Collator

    model = _check_model(lm, arms, reference)
    args = [_check_request(r) for r in requests]
    counts = {a: _Counts() for a in arms}
    outputs: dict[str, list[str]] = {a: [] for a in arms}
    # HFLM's own order and batches: longest context first, grouped by gen_kwargs
    re_ords = Collator(args, sort_fn=lambda req: (-len(lm.tok_encode(req[0])), req[0]),
                       group_by="gen_kwargs", group_fn=lambda x: x[1])  # fmt: skip
    chunks = [_encode(lm, model, chunk) for chunk in re_ords.get_batched(n=lm.batch_size, batch_fn=None)]
    prompts = [p for c in chunks for p in c.prompts]
    runner = _Runner(model, lm, counts, int(batch_size or lm.batch_size), max_decode_rows,
                     _common_prefix(prompts) if shared_prefix and prompts else [])  # fmt: skip
    docs = [(c, i) for c in chunks for i in range(len(c.prompts))]  # HFLM's order
    if shared_prefix:  # the reference decodes in the runner's batches, every document's steps together
        refs = runner.run([_Row(reference, c.prompts[i], [], c.stop) for c, i in docs])
        ref_strings = [c.text(t) for (c, _), t in zip(docs, refs, strict=True)]
    else:
        refs, ref_strings = [], []
        for c in chunks:
            toks, strings = runner.hflm_reference(reference, c)
            refs, ref_strings = refs + toks, ref_strings + strings
    outputs[reference] = ref_strings
    others = [a for a in arms if a != reference]
    rows = [_Row(a, c.prompts[i], refs[k], c.stop) for k, (c, i) in enumerate(docs) for a in others]
    toks = iter(runner.run(rows))
    for k in range(len(docs)):
        for a in others:
            t = next(toks)
            outputs[a].append(ref_strings[k] if t is None else docs[k][0].text(t))
    results = {a: re_ords.get_original(outputs[a]) for a in arms}
    stats = GenerationStats(reference, tuple(ArmGenerationStats(a, **vars(counts[a])) for a in arms), runner.passes,
                            len(runner.prefix))
    return results, stats


class _Row(NamedTuple):
    """One (arm, document): its prompt tokens, the reference tokens to verify ([] = decode from the prompt)."""

    arm: str
    prompt: list[int]
    target: list[int]
    stop: _Stop


@dataclass
class _Chunk:
    """One HFLM batch: its contexts encoded as HFLM encodes them, and how its rows end."""

    contexts: list[str]
    kwargs: dict  # what HFLM passes on to ``generate`` (do_sample, temperature)
    stop: _Stop
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
    return _Chunk(list(contexts), kwargs, _Stop(until, _eos_ids(model, lm), max_gen_toks, lm.tok_decode), enc, mask,
                  prompts)  # fmt: skip


def _common_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest token prefix of every prompt, one token short of the shortest (each row feeds a token)."""
    first, n = prompts[0], min(map(len, prompts)) - 1
    for p in prompts[1:]:
        n = next((k for k in range(n) if p[k] != first[k]), n)
    return first[:max(n, 0)]


class _Runner:
    """Runs (arm, prompt, reference tokens) rows in mixed-adapter batches and counts what it costs."""

    def __init__(self, model: Any, lm: Any, counts: dict[str, _Counts], rows_per_batch: int, max_decode_rows: int,
                 prefix: list[int]) -> None:  # fmt: skip
        self.model, self.lm, self.counts, self.rows_per_batch = model, lm, counts, rows_per_batch
        self.max_decode_rows = max_decode_rows
        self.prefix = prefix
        self.prefix_kv: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.passes = 0

    def forward(self, names: list[str], **kwargs: Any) -> Any:
        """One forward pass of the mixed batch whose row ``r`` runs adapter ``names[r]``."""
        with _forward_context(self.lm):
            out = self.model(adapter_names=names, use_cache=True, **kwargs)
        self.passes += 1
        for a in set(names):
            self.counts[a].forward_passes += 1
        return out

    def prefix_cache(self, names: list[str]) -> Any:
        """A batch KV cache holding, for row ``r``, the shared prefix under adapter ``names[r]`` (None: none)."""
        from transformers import DynamicCache

        if not self.prefix:
            return None
        for a in names:
            if a not in self.prefix_kv:  # once per arm: a single row through the prefix
                ids = torch.tensor([self.prefix], device=self.lm.device)
                out = self.forward([a], input_ids=ids, position_ids=torch.arange(len(self.prefix),
                                                                                  device=ids.device)[None])
                if any(type(layer).__name__ != "DynamicLayer" for layer in out.cache.layers):
                    raise UnsupportedGeneration("a sliding-window or hybrid KV cache cannot be stacked per row; "
                                                "call with shared_prefix=False")  # fmt: skip
                self.prefix_kv[a] = [(layer.keys, layer.values) for layer in out.cache.layers]
        layers = zip(*(self.prefix_kv[a] for a in names), strict=True)
        return DynamicCache([(torch.cat([k for k, _ in kv]), torch.cat([v for _, v in kv])) for kv in layers])

    def run(self, rows: list[_Row]) -> list[list[int] | None]:
        """Per row: None where the arm provably generates the row's reference tokens, else its own tokens.

        The rows are teacher-forced ``rows_per_batch`` at a time; the rows that diverge, from several batches,
        then decode on together (their KV caches joined, up to ``max_decode_rows``), so the sequential decoding
        steps are paid once for many batches.
        """
        result: list[list[int] | None] = []
        live: list[_Live] = []
        for s in range(0, len(rows), self.rows_per_batch):
            part, state = self._verify(rows[s:s + self.rows_per_batch], offset=s)
            result.extend(part)
            live += [state] if state is not None else []
            if live and (s + self.rows_per_batch >= len(rows)
                         or sum(len(x.rows) for x in live) + self.rows_per_batch > self.max_decode_rows):
                self._decode(_Live.join(live), rows, result)
                live = []
        return result

    def hflm_reference(self, reference: str, c: _Chunk) -> tuple[list[list[int]], list[str]]:
        """The reference's tokens (cut at their useful length) and strings from HFLM's own ``generate`` call."""
        from lm_eval.models.utils import postprocess_generated_text

        with _only_adapter(self.model, reference):
            cont = self.lm._model_generate(context=c.enc, attention_mask=c.mask, stop=c.stop.until,
                                           max_length=c.enc.shape[1] + c.stop.max_gen_toks, **c.kwargs)  # fmt: skip
        gen = cont[:, c.enc.shape[1]:].tolist()
        steps = len(gen[0])
        self.passes += steps
        count = self.counts[reference]
        count.forward_passes += steps
        count.decoded_tokens += steps * len(gen)  # every row runs every step (filler after its own end)
        count.documents += len(gen)
        lengths = [c.stop.useful_length(g) for g in gen]
        if any(k is None for k in lengths):  # a batch stopped by a criterion our text rule does not see
            raise UnsupportedGeneration("a reference row ended before any stop, EOS or max_gen_toks")
        strings = [postprocess_generated_text(self.lm.tok_decode(g), c.stop.until, None) for g in gen]
        return [g[:k] for g, k in zip(gen, lengths, strict=True)], strings

    def _verify(self, rows: list[_Row], offset: int) -> tuple[list[list[int] | None], _Live | None]:
        """Teacher-force each row's reference tokens in one forward pass.

        Returns:
            Per row: None where the arm's argmax reproduces the reference up to its useful length, else the
            reference up to the first divergence + the arm's own token there (an empty reference: the arm's first
            token); and the KV cache, mask and positions of the rows that still have to decode (None: no row).
        """
        p = len(self.prefix)
        seqs = [row.prompt[p:] + row.target[:-1] for row in rows]  # the last target token is only predicted
        width, keep = max(map(len, seqs)), max(max(len(row.target), 1) for row in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), p + width), dtype=torch.long)
        mask[:, :p] = 1
        for r, s in enumerate(seqs):  # left padding (after the shared prefix), as lm-eval pads generation batches
            ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[r, p + width - len(s):] = 1
        ids, mask = ids.to(self.lm.device), mask.to(self.lm.device)
        names = [row.arm for row in rows]
        out = self.forward(names, input_ids=ids, attention_mask=mask, position_ids=_positions(mask)[:, p:],
                           cache=self.prefix_cache(names), logits_to_keep=keep)  # fmt: skip
        pred = out.logits.argmax(-1).tolist()  # (rows, keep): column keep-1 predicts each row's last target token
        result: list[list[int] | None] = [None] * len(rows)
        live: list[tuple[int, int]] = []  # (row, position id of its next input token)
        for r, (a, prompt, target, stop) in enumerate(rows):
            n = len(target)
            mine = pred[r][keep - max(n, 1):]
            j = next((k for k in range(n) if mine[k] != target[k]), None if n else 0)
            count = self.counts[a]
            count.documents += 1
            if j is None:
                count.verified += 1
                continue
            count.diverged += bool(n)
            count.decoded_tokens += 1
            result[r] = target[:j] + [mine[j]]
            # the cache is valid for prompt + target[:j]; target[j:] were fed but are not this arm's tokens
            mask[r, p + width - max(n - 1, 0) + j:] = 0
            if not stop.ended(result[r]):
                live.append((r, len(prompt) + j))
        if not live:
            return result, None
        sel = torch.tensor([r for r, _ in live], device=mask.device)
        kv = [(layer.keys[sel], layer.values[sel]) for layer in out.cache.layers]
        return result, _Live([offset + r for r, _ in live], [q for _, q in live], mask[sel], kv)

    def _decode(self, live: _Live, all_rows: list[_Row], result: list[list[int] | None]) -> None:
        """Greedy steps for the rows of ``live`` until each ends (stop text, EOS, ``max_gen_toks``), in place."""
        from transformers import DynamicCache

        cache, mask, rows, pos = DynamicCache(live.kv), live.mask, live.rows, live.positions
        while rows:
            mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=mask.device)], dim=1)
            inp = torch.tensor([[result[r][-1]] for r in rows], device=mask.device)
            at = torch.tensor([[q] for q in pos], device=mask.device)  # explicit: the cached keys are rotated
            out = self.forward([all_rows[r].arm for r in rows], input_ids=inp, attention_mask=mask, position_ids=at,
                               cache=cache)  # fmt: skip
            cache = out.cache
            for r, t in zip(rows, out.logits[:, -1].argmax(-1).tolist(), strict=True):
                result[r].append(t)
                self.counts[all_rows[r].arm].decoded_tokens += 1
            kept = [k for k, r in enumerate(rows) if not all_rows[r].stop.ended(result[r])]
            if len(kept) < len(rows) and kept:
                idx = torch.tensor(kept, device=mask.device)
                cache.batch_select_indices(idx)
                mask = mask[idx]
            rows, pos = [rows[k] for k in kept], [pos[k] + 1 for k in kept]


@dataclass
class _Live:
    """Rows that still decode: global row indices, next position ids, attention mask, per-layer (keys, values)."""

    rows: list[int]
    positions: list[int]
    mask: torch.Tensor  # (n, width)
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, (n, kv heads, width, head dim)

    @staticmethod
    def join(parts: list[_Live]) -> _Live:
        """One batch from several: shorter caches are padded on the left with masked-out columns."""
        width = max(p.mask.shape[1] for p in parts)

        def pad(t: torch.Tensor, n: int) -> torch.Tensor:  # n masked-out columns before the sequence dim
            dim = 1 if t.dim() == 2 else 2
            return torch.cat([t.new_zeros((*t.shape[:dim], n, *t.shape[dim + 1:])), t], dim=dim)

        short = [width - p.mask.shape[1] for p in parts]
        mask = torch.cat([pad(p.mask, n) for p, n in zip(parts, short, strict=True)])
        kv = [tuple(torch.cat([pad(p.kv[i][j], n) for p, n in zip(parts, short, strict=True)]) for j in (0, 1))
              for i in range(len(parts[0].kv))]  # fmt: skip
        return _Live([r for p in parts for r in p.rows], [q for p in parts for q in p.positions], mask, kv)


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch, as ``generate`` derives them: count of real tokens before each."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


@contextlib.contextmanager
def _forward_context(lm: Any) -> Iterator[None]:
    """No gradients and HFLM's own autocast (its ``mixed_precision_dtype``), as ``HFLM._model_call`` runs."""
    dtype = getattr(lm, "mixed_precision_dtype", None)
    with torch.no_grad(), torch.autocast(device_type=lm.device.type, dtype=dtype, enabled=dtype is not None):
        yield


@contextlib.contextmanager
def _only_adapter(model: Any, arm: str) -> Iterator[None]:
    """Make ``arm`` the active adapter (or disable adapters for the bare base); restore the previous one after."""
    if arm == BARE_BASE_ARM:
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
    if not isinstance(lm.batch_size, int):
        raise UnsupportedGeneration(f"batch_size={lm.batch_size!r}: give HFLM an integer batch size")
    if not arms or len(set(arms)) != len(arms):
        raise ValueError(f"arms must be non-empty and unique, got {list(arms)}")
    unknown = [a for a in arms if a != BARE_BASE_ARM and a not in model.peft_config]
    if unknown:
        raise ValueError(f"arms {unknown} are not adapters of lm.model (loaded: {sorted(model.peft_config)}); "
                         f"load them with PeftModel.load_adapter or name the bare base {BARE_BASE_ARM!r}")
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
