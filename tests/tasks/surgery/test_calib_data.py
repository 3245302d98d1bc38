"""Calibration data: loaders, selection, hashing, formatters and batches (tasks/surgery/calib_data.py, METHOD §5)."""

from __future__ import annotations

import json

import pytest
import torch

from spectral_surgery.tasks.surgery.calib_data import (
    IGNORE_INDEX,
    CalibExample,
    build_batch,
    calibration_sha256,
    format_alpaca,
    format_commonsense_qa,
    format_fields,
    format_gsm8k,
    format_magicoder,
    format_metamath,
    get_calib_loader,
    load_calibration,
    register_calib_loader,
)
from spectral_surgery.tasks.config import CalibConfig
from spectral_surgery.tasks.names import UnknownNameError
from tests import tiny

EOS = "</s>"


@pytest.fixture(scope="module")
def tok():
    return tiny.make_tokenizer()


def _cfg(**kw) -> CalibConfig:
    return CalibConfig(**{"n_samples": 8, **kw})


def _write(tmp_path, lines: list[str], name: str = "c.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


# ---------------------------------------------------------------- build_batch (§5.1)

def _decode(tok, ids) -> str:
    return "".join(tok.convert_ids_to_tokens([int(i) for i in ids]))


@pytest.mark.parametrize(
    "prompt,answer,full",
    [
        ("Q: 2+2?", "4", "Q: 2+2? 4"),  # no trailing whitespace -> one space
        ("Q: 2+2?\n", "4", "Q: 2+2?\n4"),  # trailing newline is the separator
        ("Q: 2+2? ", "4", "Q: 2+2? 4"),  # trailing space: no extra space
        ("Q:\t", "4", "Q:\t4"),
        ("", "4 is it", "4 is it"),  # empty prompt: no separator, nothing masked
        ("Q: 2+2?", "", "Q: 2+2?"),  # empty answer: prompt + EOS only
    ],
)
def test_build_batch_text_and_masking(tok, prompt, answer, full):
    b = build_batch(tok, [CalibExample(prompt, answer)])
    ids, labels, mask = b["input_ids"][0], b["labels"][0], b["attention_mask"][0]
    assert _decode(tok, ids) == full + EOS  # EOS *string* appended and tokenised as the EOS token
    assert int(ids[-1]) == tok.eos_token_id and int(ids[0]) != tok.bos_token_id  # no BOS
    n_prompt = len(prompt)  # char-level tokenizer: one token per character
    assert labels[:n_prompt].tolist() == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:].tolist() == ids[n_prompt:].tolist()
    assert mask.tolist() == [1] * len(ids)
    assert all(v.dtype == torch.long for v in b.values())


def test_build_batch_right_pads_and_masks_attention(tok):
    exs = [CalibExample("ab", "c"), CalibExample("abcd\n", "efgh")]
    b = build_batch(tok, exs)
    assert b["input_ids"].shape == (2, len("abcd\nefgh") + 1)
    short = b["input_ids"][0]
    assert _decode(tok, short[:5]) == "ab c" + EOS
    assert short[5:].tolist() == [tok.pad_token_id] * 5
    assert b["labels"][0].tolist() == [IGNORE_INDEX] * 2 + short[2:5].tolist() + [IGNORE_INDEX] * 5
    assert b["attention_mask"].tolist() == [[1] * 5 + [0] * 5, [1] * 10]


def test_build_batch_pads_with_eos_without_pad_token(tok):
    tok2 = tiny.make_tokenizer()
    tok2.pad_token = None
    assert tok2.pad_token_id is None
    b = build_batch(tok2, [CalibExample("ab", "c"), CalibExample("abcd", "efg")])
    eos = tok2.eos_token_id
    assert b["input_ids"][0].tolist()[4:] == [eos] * 5
    # As in the reference, attention_mask = input_ids != pad, so the appended EOS is masked out too,
    # while its label stays.
    assert b["attention_mask"][0].tolist() == [1, 1, 1, 1] + [0] * 5
    assert b["attention_mask"][1].tolist() == [1] * 8 + [0]
    assert b["labels"][1].tolist()[-1] == eos


def test_build_batch_truncates(tok):
    b = build_batch(tok, [CalibExample("abcdef", "ghij"), CalibExample("a", "b")], max_seq_len=8)
    assert b["input_ids"].shape == (2, 8)
    assert _decode(tok, b["input_ids"][0]) == "abcdef g"
    assert b["labels"][0].tolist() == [IGNORE_INDEX] * 6 + b["input_ids"][0, 6:].tolist()


def test_build_batch_rejects_empty(tok):
    with pytest.raises(ValueError, match="at least one"):
        build_batch(tok, [])


# ---------------------------------------------------------------- JSONL loading and selection

def test_jsonl_good_file(calib_file):
    exs = load_calibration(calib_file, _cfg())
    rows = tiny.calib_rows(8)
    assert exs == [CalibExample(r["prompt"], r["answer"]) for r in rows]
    assert load_calibration(str(calib_file), _cfg()) == exs
    assert load_calibration(f"jsonl:{calib_file}", _cfg()) == exs


@pytest.mark.parametrize(
    "line,match",
    [
        ("{not json", r"line 2: invalid JSON"),
        ('{"prompt": "p"}', r"line 2: missing field 'answer'"),
        ('{"answer": "a"}', r"line 2: missing field 'prompt'"),
        ('{"prompt": 3, "answer": "a"}', r"line 2: field 'prompt' must be a string, got int"),
        ('["p", "a"]', r"line 2: expected a JSON object, got list"),
    ],
)
def test_jsonl_bad_lines_name_file_and_line(tmp_path, line, match):
    p = _write(tmp_path, ['{"prompt": "p", "answer": "a"}', line])
    with pytest.raises(ValueError, match=match) as e:
        load_calibration(p, _cfg())
    assert str(p) in str(e.value)


def test_jsonl_blank_lines_and_extra_fields(tmp_path):
    p = _write(tmp_path, ['{"prompt": "p", "answer": "a", "id": 1}', "", '{"prompt": "q", "answer": "b"}'])
    assert load_calibration(p, _cfg()) == [CalibExample("p", "a"), CalibExample("q", "b")]


def test_empty_or_missing_sources(tmp_path):
    with pytest.raises(ValueError, match="no calibration examples"):
        load_calibration(_write(tmp_path, [""]), _cfg())
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_calibration(tmp_path / "nope.jsonl", _cfg())
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_calibration(str(tmp_path / "nope.jsonl"), _cfg())


def test_first_n_and_start(calib_file):
    rows = [CalibExample(r["prompt"], r["answer"]) for r in tiny.calib_rows(8)]
    assert load_calibration(calib_file, _cfg(n_samples=3)) == rows[:3]
    assert load_calibration(calib_file, _cfg(n_samples=3, start=2)) == rows[2:5]
    assert load_calibration(calib_file, _cfg(n_samples=5, start=6)) == rows[6:]  # fewer than asked: a warning
    with pytest.raises(ValueError, match="start=8"):
        load_calibration(calib_file, _cfg(start=8))


def test_shuffle_is_reproducible_and_matches_datasets_shuffle(calib_file):
    datasets = pytest.importorskip("datasets")
    a = load_calibration(calib_file, _cfg(n_samples=4, start=1, shuffle=True, seed=7))
    assert a == load_calibration(calib_file, _cfg(n_samples=4, start=1, shuffle=True, seed=7))
    assert a != load_calibration(calib_file, _cfg(n_samples=4, start=1, shuffle=True, seed=8))
    assert a != load_calibration(calib_file, _cfg(n_samples=4, start=1))
    # The reference shuffles the datasets.Dataset with the seed, then selects range(start, start + n).
    ds = datasets.Dataset.from_list(tiny.calib_rows(8)).shuffle(seed=7).select(range(1, 5))
    assert a == [CalibExample(r["prompt"], r["answer"]) for r in ds]


def test_sha256_stable_and_order_sensitive():
    exs = [CalibExample("a", "b"), CalibExample("c", "d")]
    h = calibration_sha256(exs)
    assert len(h) == 64 and h == calibration_sha256(list(exs))
    assert h == calibration_sha256([CalibExample("a", "b"), CalibExample("c", "d")])
    assert h != calibration_sha256(exs[::-1])
    assert h != calibration_sha256(exs[:1])
    assert calibration_sha256([CalibExample("a", "b c")]) != calibration_sha256([CalibExample("a b", "c")])


# ---------------------------------------------------------------- registry

def test_unknown_loader_suggests_close_names():
    with pytest.raises(UnknownNameError, match=r"Did you mean 'gsm8k'") as e:
        load_calibration("gsm8kk", _cfg())
    assert isinstance(e.value, KeyError) and "jsonl" in str(e.value)
    with pytest.raises(UnknownNameError):
        get_calib_loader("hff")


def test_register_loader_and_duplicates(calib_file):
    @register_calib_loader("unit_test_rows")
    def _rows(arg):
        return [CalibExample(f"p{i}{arg or ''}", f"a{i}") for i in range(5)]

    assert load_calibration("unit_test_rows", _cfg(n_samples=2)) == [CalibExample("p0", "a0"), CalibExample("p1", "a1")]
    assert load_calibration("unit_test_rows:x", _cfg(n_samples=1, start=4)) == [CalibExample("p4x", "a4")]
    with pytest.raises(ValueError, match="already registered"):
        register_calib_loader("unit_test_rows")
    with pytest.raises(ValueError, match="without ':'"):
        register_calib_loader("a:b")


def test_hf_loader_reads_local_data_with_formatters(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "my_gsm8k"
    d.mkdir()
    rows = [{"question": f"What is {i}+1?", "answer": f"{i}+1={i + 1}\n#### {i + 1}"} for i in range(4)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_calibration(f"hf:{d}@train#gsm8k", _cfg(n_samples=2, start=1))
    assert got == [format_gsm8k(rows[1]), format_gsm8k(rows[2])]
    assert got[0].prompt == "Question: What is 1+1?\nAnswer:"
    # No formatter named: generic columns (question, answer); or an explicit field list.
    assert load_calibration(f"hf:{d}", _cfg(n_samples=1)) == [CalibExample(rows[0]["question"], rows[0]["answer"])]
    assert load_calibration(f"hf:{d}#answer", _cfg(n_samples=1)) == [CalibExample("", rows[0]["answer"])]
    with pytest.raises(ValueError, match="Did you mean 'gsm8k'"):
        load_calibration(f"hf:{d}#gsm8kk", _cfg())


def test_hf_dataset_not_in_local_cache_is_a_clear_error(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants as hub

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty"))
    before = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    with pytest.raises(FileNotFoundError, match=r"hf:openai/gsm8k:main@train: not available from the local"):
        load_calibration("gsm8k", _cfg())  # the shortcut for hf:openai/gsm8k (config main, split train)
    assert (datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE) == before  # offline forcing is undone


# ---------------------------------------------------------------- formatters (§5.1)

def test_reference_formatters():
    gsm = {"question": "Q?", "answer": "so 4\n#### 4"}
    assert format_gsm8k(gsm) == CalibExample("Question: Q?\nAnswer:", "so 4\n#### 4")
    assert format_metamath({"query": "Q?", "response": "R"}) == CalibExample("Question: Q?\nAnswer:", "R")
    assert format_magicoder({"instruction": "Do X", "response": "code"}) == CalibExample(
        "### Instruction:\nDo X\n\n### Response:", "code"
    )
    assert format_alpaca({"instruction": "Do X", "input": "", "output": "O"}) == CalibExample(
        "### Instruction:\nDo X\n\n### Response:", "O"
    )
    blank_input = {"instruction": "Do X", "input": "  ", "output": "O"}
    assert format_alpaca(blank_input).prompt == "### Instruction:\nDo X\n\n### Response:"
    assert format_alpaca({"instruction": "Do X", "input": "in", "output": "O"}) == CalibExample(
        "### Instruction:\nDo X\n\n### Input:\nin\n\n### Response:", "O"
    )
    csqa = {"question": "Where?", "choices": {"label": ["B", "A", "C", "D", "E"], "text": ["b", "a", "c", "d", "e"]},
            "answerKey": "C"}
    want = CalibExample(
        "Question: Where?\n\nChoices:\nA. a\nB. b\nC. c\nD. d\nE. e\n\n"
        "Answer with a single letter: A, B, C, D, or E.\nAnswer:",
        "C",
    )
    assert format_commonsense_qa(csqa) == want
    as_list = {**csqa, "choices": [{"label": lab, "text": t} for lab, t in zip("BACDE", "bacde")]}
    assert format_commonsense_qa(as_list) == want
    with pytest.raises(ValueError, match="choices"):
        format_commonsense_qa({**csqa, "choices": "A,B"})
    with pytest.raises(KeyError, match="'question'"):
        format_gsm8k({"answer": "x"})


def test_generic_formatter():
    row = {"a": "x", "b": "y", "c": "z", "e": ""}
    assert format_fields(row, ["c"]) == CalibExample("", "z")
    assert format_fields(row, ["a", "c"]) == CalibExample("x", "z")
    assert format_fields(row, ["a", "b", "c"]) == CalibExample("x\n\ny", "z")
    assert format_fields(row, ["a", "e", "c"]) == CalibExample("x", "z")
    with pytest.raises(ValueError, match="1, 2 or 3"):
        format_fields(row, ["a", "b", "c", "e"])
