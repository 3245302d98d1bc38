"""Calibration data for Spectral Surgery: examples, dataset loaders, formatters and batches (METHOD §5).

Paper: https://arxiv.org/abs/2603.03995. Sources are a JSONL file of ``{"prompt", "answer"}`` rows or a
registered loader (``hf:<dataset>`` from the local ``datasets`` cache, with the reference's formatters for
GSM8K, MetaMathQA, Magicoder, Alpaca and CommonsenseQA). Selection, sequence building and prompt masking
follow ``src/finetune/spectral_edit/calib.py`` of ``TTtianTT/peft-sft-lab`` (the paper-era version).
:mod:`tasks.surgery.calibration` re-exports this API next to the sensitivity pass.

Over 400 lines: the example type, every registered loader and formatter and the batching are read together (one
registry of sources); split by source when one grows.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor

from spectral_surgery.tasks.config import CalibConfig
from spectral_surgery.tasks.names import Registry

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass(frozen=True)
class CalibExample:
    """One calibration pair; the loss is taken on the answer tokens only (METHOD §5.1)."""

    prompt: str
    answer: str


# --------------------------------------------------------------------------------------------------
# Formatters (METHOD §5.1): pure row -> CalibExample functions for the reference's datasets.
# --------------------------------------------------------------------------------------------------

def _text(row: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    if key not in row:
        if required:
            raise KeyError(f"missing field {key!r} (row has {sorted(row)})")
        return ""
    value = row[key]
    return "" if value is None else str(value)


def format_gsm8k(row: Mapping[str, Any]) -> CalibExample:
    """GSM8K: ``"Question: {question}\\nAnswer:"``; the answer is the full solution with its ``#### n`` line."""
    return CalibExample(f"Question: {_text(row, 'question')}\nAnswer:", _text(row, "answer"))


def format_metamath(row: Mapping[str, Any]) -> CalibExample:
    """MetaMathQA: ``"Question: {query}\\nAnswer:"`` → ``response``."""
    return CalibExample(f"Question: {_text(row, 'query')}\nAnswer:", _text(row, "response"))


def format_magicoder(row: Mapping[str, Any]) -> CalibExample:
    """Magicoder-Evol-Instruct: ``"### Instruction:\\n{instruction}\\n\\n### Response:"`` → ``response``."""
    return CalibExample(f"### Instruction:\n{_text(row, 'instruction')}\n\n### Response:", _text(row, "response"))


def format_alpaca(row: Mapping[str, Any]) -> CalibExample:
    """Alpaca: as Magicoder, with ``"\\n\\n### Input:\\n{input}"`` after the instruction when input is non-empty."""
    inst, inp = _text(row, "instruction"), _text(row, "input", required=False)
    middle = f"\n\n### Input:\n{inp}" if inp.strip() else ""
    return CalibExample(f"### Instruction:\n{inst}{middle}\n\n### Response:", _text(row, "output"))


def format_commonsense_qa(row: Mapping[str, Any]) -> CalibExample:
    """CommonsenseQA: question, lettered choices (A-E first, then others sorted), answer = the letter."""
    choices = row.get("choices")
    if isinstance(choices, Mapping) and all(isinstance(choices.get(k), list) for k in ("label", "text")):
        by_label = {str(lab): str(t) for lab, t in zip(choices["label"], choices["text"], strict=True)}
    elif isinstance(choices, list) and all(isinstance(c, Mapping) and "label" in c and "text" in c for c in choices):
        by_label = {str(c["label"]): str(c["text"]) for c in choices}
    else:
        raise ValueError(f"field 'choices' must be {{label: [...], text: [...]}} or [{{label, text}}], got {choices!r}")
    labels = [c for c in "ABCDE" if c in by_label] + sorted(c for c in by_label if c not in "ABCDE")
    lines = "\n".join(f"{c}. {by_label[c]}" for c in labels)
    prompt = (
        f"Question: {_text(row, 'question')}\n\nChoices:\n{lines}\n\n"
        "Answer with a single letter: A, B, C, D, or E.\nAnswer:"
    )
    return CalibExample(prompt, _text(row, "answerKey"))


def format_fields(row: Mapping[str, Any], fields: Sequence[str]) -> CalibExample:
    """Generic formatter: 1 field = answer only; 2 = (prompt, answer); 3 = (part1, part2, answer) with the
    prompt ``part1 + "\\n\\n" + part2`` when part2 is non-empty."""
    vals = [_text(row, f) for f in fields]
    if len(vals) == 1:
        return CalibExample("", vals[0])
    if len(vals) == 2:
        return CalibExample(vals[0], vals[1])
    if len(vals) == 3:
        return CalibExample(vals[0] + ("\n\n" + vals[1] if vals[1].strip() else ""), vals[2])
    raise ValueError(f"a generic formatter takes 1, 2 or 3 fields, got {list(fields)}")


FORMATTERS: dict[str, Callable[[Mapping[str, Any]], CalibExample]] = {
    "gsm8k": format_gsm8k,
    "metamath": format_metamath,
    "magicoder": format_magicoder,
    "alpaca": format_alpaca,
    "commonsense_qa": format_commonsense_qa,
}
# Hub id (lower case) -> (config, split, formatter), as the reference's built-in defaults.
HF_DATASETS: dict[str, tuple[str | None, str, str]] = {
    "gsm8k": ("main", "train", "gsm8k"),
    "openai/gsm8k": ("main", "train", "gsm8k"),
    "meta-math/metamathqa": (None, "train", "metamath"),
    "ise-uiuc/magicoder-evol-instruct-110k": (None, "train", "magicoder"),
    "tatsu-lab/alpaca": (None, "train", "alpaca"),
    "tau/commonsense_qa": (None, "train", "commonsense_qa"),
}
# Column sets tried in order for datasets without a known formatter.
_GENERIC_FIELDS = [
    ("prompt", "answer"), ("prompt", "completion"), ("question", "answer"), ("query", "response"),
    ("instruction", "input", "output"), ("instruction", "response"), ("instruction", "output"), ("text",),
]


# --------------------------------------------------------------------------------------------------
# Loader registry: source string -> sequence of examples.
# --------------------------------------------------------------------------------------------------

CalibLoader = Callable[[str | None], Sequence[CalibExample]]
LOADERS: Registry[CalibLoader] = Registry("calibration source", unknown_hint="(or give a .jsonl path)")


def register_calib_loader(name: str) -> Callable[[CalibLoader], CalibLoader]:
    """Register ``fn(arg) -> Sequence[CalibExample]`` for sources ``"name"`` (arg None) or ``"name:arg"``.

    Raises:
        ValueError: empty, ``:``-containing or already registered name.
    """
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise ValueError(f"calibration loader names must be non-empty strings without ':', got {name!r}")
    if name in LOADERS:
        raise ValueError(f"calibration loader {name!r} is already registered; pick another name")
    return LOADERS.register(name)


def get_calib_loader(name: str) -> CalibLoader:
    """The loader registered under ``name``.

    Raises:
        UnknownNameError: neither a file nor a registered loader; the message lists the closest matches and all
            known loaders.
    """
    return LOADERS.get(name)


class _FormattedRows(Sequence):
    """Rows of a dataset formatted lazily, so only the selected rows are ever formatted."""

    def __init__(self, rows: Any, fmt: Callable[[Mapping[str, Any]], CalibExample], where: str) -> None:
        self.rows, self.fmt, self.where = rows, fmt, where

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> CalibExample:  # type: ignore[override]
        try:
            return self.fmt(self.rows[int(i)])
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{self.where} row {int(i)}: {e.args[0] if e.args else e}") from e


ROW_FORMAT = 'one {"prompt": "...", "answer": "..."} JSON object per line'


def read_jsonl(path: str | Path) -> list[CalibExample]:
    """Read ``{"prompt": str, "answer": str}`` lines (blank lines skipped, other fields ignored).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not a JSON object or lacks a string ``prompt``/``answer``; names file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist: give an existing JSONL file (or a "
                                "registered loader such as gsm8k)")
    out: list[CalibExample] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {lineno}: invalid JSON ({e.msg}); write {ROW_FORMAT}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {lineno}: expected a JSON object, got {type(row).__name__}; write "
                                 f"{ROW_FORMAT}")
            for key in ("prompt", "answer"):
                if key not in row:
                    raise ValueError(f"{path} line {lineno}: missing field {key!r}; write {ROW_FORMAT}")
                if not isinstance(row[key], str):
                    got = type(row[key]).__name__
                    raise ValueError(f"{path} line {lineno}: field {key!r} must be a string, got {got}; write "
                                     f"{ROW_FORMAT}")
            out.append(CalibExample(row["prompt"], row["answer"]))
    return out


@register_calib_loader("jsonl")
def _load_jsonl(arg: str | None) -> Sequence[CalibExample]:
    if not arg:
        raise ValueError("the jsonl loader needs a path: 'jsonl:/path/to/calib.jsonl'")
    return read_jsonl(arg)


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Force ``datasets``/``huggingface_hub`` offline so only the local cache is read (no network ever)."""
    import datasets.config as dcfg
    import huggingface_hub.constants as hcfg

    saved = dcfg.HF_HUB_OFFLINE, hcfg.HF_HUB_OFFLINE
    dcfg.HF_HUB_OFFLINE = hcfg.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        dcfg.HF_HUB_OFFLINE, hcfg.HF_HUB_OFFLINE = saved


def _resolve_formatter(spec: str | None, dataset: str, columns: Sequence[str]) -> Callable[[Mapping], CalibExample]:
    if spec:
        if spec in FORMATTERS:
            return FORMATTERS[spec]
        fields = [f.strip() for f in spec.split(",") if f.strip()]
        if "," in spec or (fields and all(f in columns for f in fields)):
            return lambda row: format_fields(row, fields)
        close = difflib.get_close_matches(spec, list(FORMATTERS), n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown formatter {spec!r} for {dataset}.{hint} Known: {', '.join(FORMATTERS)}, "
                         "or a comma-separated field list.")
    known = HF_DATASETS.get(dataset.lower())
    if known:
        return FORMATTERS[known[2]]
    for fields in _GENERIC_FIELDS:
        if all(f in columns for f in fields):
            return lambda row, fs=fields: format_fields(row, fs)
    raise ValueError(f"no formatter for dataset {dataset} with columns {list(columns)}; add '#<formatter>' "
                     f"({', '.join(FORMATTERS)}) or '#prompt_field,answer_field' to the source")


@register_calib_loader("hf")
def load_hf(arg: str | None) -> Sequence[CalibExample]:
    """``hf:<dataset>[:<config>][@<split>][#<formatter or fields>]`` from the LOCAL datasets cache only.

    ``<dataset>`` is a hub id (read from the cache) or a local data directory. Config and split default to
    the reference's for the known datasets (GSM8K: ``main``/``train``), else none/``train``. The formatter
    defaults to the dataset's built-in one, else the first matching generic column set.
    """
    if not arg:
        raise ValueError("the hf loader needs a dataset: 'hf:openai/gsm8k' or 'hf:<id>[:config][@split][#formatter]'")
    spec, _, fmt = arg.partition("#")
    spec, _, split = spec.partition("@")
    dataset, _, config = spec.partition(":")
    known = HF_DATASETS.get(dataset.lower())
    config = config or (known[0] if known else None)
    split = split or (known[1] if known else "train")
    from datasets import load_dataset

    where = f"hf:{dataset}" + (f":{config}" if config else "") + f"@{split}"
    try:
        with _hub_offline():
            rows = load_dataset(dataset, config, split=split) if config else load_dataset(dataset, split=split)
    except (ConnectionError, OSError, ValueError) as e:  # offline + not cached surfaces as ConnectionError
        raise FileNotFoundError(
            f"{where}: not available from the local datasets cache or disk ({type(e).__name__}: {e}). Cache it once "
            "with datasets.load_dataset on a machine with network access, or give a .jsonl file instead."
        ) from e
    return _FormattedRows(rows, _resolve_formatter(fmt or None, dataset, rows.column_names), where)


def _register_shortcut(name: str, hub_id: str) -> None:
    @register_calib_loader(name)
    def _load(arg: str | None) -> Sequence[CalibExample]:  # arg = split, e.g. "gsm8k:test"
        return load_hf(hub_id + (f"@{arg}" if arg else ""))


for _name, _hub_id in [("gsm8k", "openai/gsm8k"), ("metamath", "meta-math/MetaMathQA"),
                       ("magicoder", "ise-uiuc/Magicoder-Evol-Instruct-110K"), ("alpaca", "tatsu-lab/alpaca"),
                       ("commonsense_qa", "tau/commonsense_qa")]:
    _register_shortcut(_name, _hub_id)


def select_examples(
    rows: Sequence[CalibExample], cfg: CalibConfig, *, where: str = "calibration data"
) -> list[CalibExample]:
    """The first ``cfg.n_samples`` rows from ``cfg.start``; with ``cfg.shuffle`` the rows are first permuted by
    ``np.random.default_rng(cfg.seed).permutation``, the permutation of ``datasets.Dataset.shuffle(seed)``
    that the reference uses. Fewer rows than asked is a warning; none is an error."""
    total = len(rows)
    order = np.random.default_rng(cfg.seed).permutation(total) if cfg.shuffle else np.arange(total)
    chosen = [rows[int(i)] for i in order[cfg.start : cfg.start + cfg.n_samples]]
    if not chosen:
        raise ValueError(f"{where}: no calibration examples selected ({total} available, start={cfg.start}); add rows "
                         f"(at least {cfg.start + 1}), or lower start")
    if len(chosen) < cfg.n_samples:
        log.warning("%s: only %d calibration examples available from start=%d (asked for %d)",
                    where, len(chosen), cfg.start, cfg.n_samples)
    return chosen


def load_calibration(source: str | Path, cfg: CalibConfig) -> list[CalibExample]:
    """Load and select calibration examples.

    Args:
        source: A ``.jsonl`` path, ``"<loader>"`` or ``"<loader>:<arg>"`` for a registered loader
            (``jsonl:<path>``, ``hf:<dataset>[:config][@split][#formatter]``, ``gsm8k``, ``metamath``, …).
        cfg: Calibration settings (``n_samples``, ``start``, ``shuffle``, ``seed``).

    Raises:
        FileNotFoundError: a path-like source does not exist.
        UnknownNameError: neither a file nor a registered loader (with did-you-mean).
        ValueError: bad rows (file and line named) or no example selected.
    """
    s = str(source)
    if isinstance(source, Path) or Path(s).is_file():
        return select_examples(read_jsonl(s), cfg, where=s)
    name, sep, arg = s.partition(":")
    if name not in LOADERS and (s.endswith((".jsonl", ".json")) or "/" in s or "\\" in s):
        raise FileNotFoundError(f"calibration file {s} does not exist: give an existing JSONL file (or a "
                                "registered loader such as gsm8k)")
    rows = get_calib_loader(name)(arg if sep else None)
    return select_examples(rows, cfg, where=s)


def calibration_sha256(examples: Sequence[CalibExample]) -> str:
    """Content hash of the examples, order-sensitive (a canonical JSON list of [prompt, answer] pairs)."""
    payload = json.dumps([[e.prompt, e.answer] for e in examples], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------------------------------
# Batches (METHOD §5.1)
# --------------------------------------------------------------------------------------------------

def pad_id(tokenizer) -> int:
    """The padding id: the tokenizer's pad token, else EOS (as the reference sets pad = EOS)."""
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pid is None:
        raise ValueError("tokenizer has neither a pad token nor an EOS token; cannot pad calibration batches")
    return int(pid)


def model_positions(model) -> int | None:
    """The number of positions the base model was built for (``config.max_position_embeddings``), if it says."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def sequence_limit(model, max_seq_len: int | None) -> int | None:
    """The length calibration sequences are cut to: ``max_seq_len`` (METHOD's ``--calib_max_seq_len``), and
    never more than the base model's positions (a longer sequence would index past them)."""
    limits = [n for n in (max_seq_len, model_positions(model)) if n is not None]
    return min(limits) if limits else None


def warn_if_truncated(tokenizer, examples: Sequence[CalibExample], model, max_seq_len: int | None,
                      *, what: str = "calibration") -> int:
    """Log one warning when examples are longer than the base model's positions; returns how many are.

    Only the base's limit warns: a ``max_seq_len`` the user set truncates as asked. The sequences themselves
    are cut by :func:`build_batch` (``max_seq_len=sequence_limit(model, max_seq_len)``).
    """
    n_pos = model_positions(model)
    if n_pos is None or (max_seq_len is not None and max_seq_len <= n_pos):
        return 0
    lengths = [token_length(tokenizer, ex) for ex in examples]
    over = [i for i, n in enumerate(lengths) if n > n_pos]
    if over:
        log.warning("%s: %d of %d examples are longer than the base model's %d positions (longest %d tokens, "
                    "e.g. example %d); they are truncated to %d tokens. Set calib.max_seq_len to choose the length, "
                    "or shorten those rows.", what, len(over), len(examples), n_pos, max(lengths), over[0], n_pos)
    return len(over)


def token_length(tokenizer, ex: CalibExample) -> int:
    """Tokens of ``ex``'s full teacher-forcing text as :func:`build_batch` tokenises it (before truncation)."""
    return len(tokenizer(_full_text(tokenizer, ex), add_special_tokens=False)["input_ids"])


def _full_text(tokenizer, ex: CalibExample) -> str:
    """``prompt + " " + answer`` (or ``prompt + answer`` after whitespace), then the EOS string (METHOD §5.1)."""
    if ex.answer:
        full = ex.prompt + (" " if ex.prompt and not ex.prompt[-1].isspace() else "") + ex.answer
    else:
        full = ex.prompt
    return full + (tokenizer.eos_token or "")


def build_batch(tokenizer, examples: Sequence[CalibExample], *, max_seq_len: int | None = None) -> dict[str, Tensor]:
    """Teacher-forcing batch exactly as the reference builds it (METHOD §5.1).

    Full text = ``prompt + " " + answer`` if the prompt is non-empty and does not end in whitespace, else
    ``prompt + answer`` (just ``prompt`` when the answer is empty), then the tokenizer's EOS *string*. Prompt
    and full text are tokenised separately without special tokens (no BOS); the first ``len(prompt_ids)``
    labels are -100. Right padding with the pad id (EOS if none), labels padded with -100, attention mask =
    ``input_ids != pad_id`` (so with pad = EOS the appended EOS is masked too, like the reference).

    Args:
        tokenizer: A Hugging Face tokenizer.
        examples: At least one example.
        max_seq_len: Keep only the first ``max_seq_len`` tokens of each sequence (None: no truncation).

    Returns:
        ``input_ids``, ``attention_mask`` and ``labels``, each a (B, T) int64 tensor.
    """
    if not examples:
        raise ValueError("build_batch needs at least one example")
    pid = pad_id(tokenizer)
    ids_list, labels_list = [], []
    for i, ex in enumerate(examples):
        full = _full_text(tokenizer, ex)
        prompt_ids = tokenizer(ex.prompt, add_special_tokens=False)["input_ids"] if ex.prompt else []
        full_ids = list(tokenizer(full, add_special_tokens=False)["input_ids"])
        if not full_ids:
            raise ValueError(f"calibration example {i} tokenises to no tokens (empty prompt and answer)")
        n_prompt = min(len(prompt_ids), len(full_ids))
        labels = [IGNORE_INDEX] * n_prompt + full_ids[n_prompt:]
        if max_seq_len is not None:
            full_ids, labels = full_ids[:max_seq_len], labels[:max_seq_len]
        ids_list.append(full_ids)
        labels_list.append(labels)
    width = max(len(x) for x in ids_list)
    input_ids = torch.tensor([x + [pid] * (width - len(x)) for x in ids_list], dtype=torch.long)
    labels = torch.tensor([y + [IGNORE_INDEX] * (width - len(y)) for y in labels_list], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": (input_ids != pid).long(), "labels": labels}
