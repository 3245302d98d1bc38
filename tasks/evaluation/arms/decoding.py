"""The decoding machinery of :mod:`tasks.evaluation.arms.generation`: rows of (arm, prompt, reference tokens)
teacher-forced in PEFT mixed-adapter batches, and the rows that diverge decoded on together.

Internal: :func:`tasks.evaluation.arms.generation.generate_until_arms` is the entry point.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch


class UnsupportedGeneration(ValueError):
    """The requests or the model are outside what :func:`generate_until_arms` reproduces exactly (fall back)."""


@dataclass
class Counts:
    documents: int = 0
    verified: int = 0
    diverged: int = 0
    forward_passes: int = 0
    decoded_tokens: int = 0


@dataclass
class Stop:
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


class Row(NamedTuple):
    """One (arm, document): its prompt tokens, the reference tokens to verify ([] = decode from the prompt)."""

    arm: str
    prompt: list[int]
    target: list[int]
    stop: Stop



class Runner:
    """Runs (arm, prompt, reference tokens) rows in mixed-adapter batches and counts what it costs."""

    def __init__(self, model: Any, lm: Any, counts: dict[str, Counts], rows_per_batch: int, max_decode_rows: int,
                 prefix: list[int], mixed: Any) -> None:  # fmt: skip
        self.model, self.lm, self.counts, self.rows_per_batch = model, lm, counts, rows_per_batch
        self.mixed = mixed  # tasks.evaluation.arms.stacked_lora.MixedBatch: row r of a pass runs names[r]
        self.max_decode_rows = max_decode_rows
        self.prefix = prefix
        self.prefix_kv: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.passes = 0

    def forward(self, names: list[str], **kwargs: Any) -> Any:
        """One forward pass of the mixed batch whose row ``r`` runs adapter ``names[r]``."""
        with forward_context(self.lm), self.mixed.rows(names):
            out = self.model(use_cache=True, **kwargs)
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

    def run(self, rows: list[Row]) -> list[list[int] | None]:
        """Per row: None where the arm provably generates the row's reference tokens, else its own tokens.

        The rows are teacher-forced ``rows_per_batch`` at a time; the rows that diverge, from several batches,
        then decode on together (their KV caches joined, up to ``max_decode_rows``), so the sequential decoding
        steps are paid once for many batches.
        """
        result: list[list[int] | None] = []
        live: list[Live] = []
        for s in range(0, len(rows), self.rows_per_batch):
            part, state = self._verify(rows[s:s + self.rows_per_batch], offset=s)
            result.extend(part)
            live += [state] if state is not None else []
            if live and (s + self.rows_per_batch >= len(rows)
                         or sum(len(x.rows) for x in live) + self.rows_per_batch > self.max_decode_rows):
                self._decode(Live.join(live), rows, result)
                live = []
        return result

    def _verify(self, rows: list[Row], offset: int) -> tuple[list[list[int] | None], Live | None]:
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
        out = self.forward(names, input_ids=ids, attention_mask=mask, position_ids=positions(mask)[:, p:],
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
        return result, Live([offset + r for r, _ in live], [q for _, q in live], mask[sel], kv)

    def _decode(self, live: Live, all_rows: list[Row], result: list[list[int] | None]) -> None:
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
class Live:
    """Rows that still decode: global row indices, next position ids, attention mask, per-layer (keys, values)."""

    rows: list[int]
    positions: list[int]
    mask: torch.Tensor  # (n, width)
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, (n, kv heads, width, head dim)

    @staticmethod
    def join(parts: list[Live]) -> Live:
        """One batch from several: shorter caches are padded on the left with masked-out columns."""
        width = max(p.mask.shape[1] for p in parts)

        def pad(t: torch.Tensor, n: int) -> torch.Tensor:  # n masked-out columns before the sequence dim
            dim = 1 if t.dim() == 2 else 2
            return torch.cat([t.new_zeros((*t.shape[:dim], n, *t.shape[dim + 1:])), t], dim=dim)

        short = [width - p.mask.shape[1] for p in parts]
        mask = torch.cat([pad(p.mask, n) for p, n in zip(parts, short, strict=True)])
        kv = [tuple(torch.cat([pad(p.kv[i][j], n) for p, n in zip(parts, short, strict=True)]) for j in (0, 1))
              for i in range(len(parts[0].kv))]  # fmt: skip
        return Live([r for p in parts for r in p.rows], [q for p in parts for q in p.positions], mask, kv)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch, as ``generate`` derives them: count of real tokens before each."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)


@contextlib.contextmanager
def forward_context(lm: Any) -> Iterator[None]:
    """No gradients and HFLM's own autocast (its ``mixed_precision_dtype``), as ``HFLM._model_call`` runs."""
    dtype = getattr(lm, "mixed_precision_dtype", None)
    with torch.no_grad(), torch.autocast(device_type=lm.device.type, dtype=dtype, enabled=dtype is not None):
        yield
