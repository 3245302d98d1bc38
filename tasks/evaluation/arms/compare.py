"""Two result sets of the same subjects compared document by document: outcome mismatches with their gaps.

The one-pass path must give the arm-by-arm path's per-document outcomes. Where it does not, what matters is how
close the call was: a log-likelihood task's answer is the argmax over its choices, so a mismatch is reported with
the top-2 gap (best minus second-best choice log-likelihood) on each side and the largest |ΔLL| between the two
sets; a generative task's mismatch with both generations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Mismatch:
    """One document whose outcome differs between the two sets.

    Attributes:
        subject: Subject name.
        doc_id: Document id.
        reference: Outcome in the reference set.
        other: Outcome in the other set.
        gap_reference: Best minus second-best choice log-likelihood in the reference (None: not a choice task).
        gap_other: The same in the other set.
        max_abs_dll: Largest |ΔLL| over the document's choices (None: no log-likelihood responses).
        detail: The two responses (generations) where there are no log-likelihoods.
    """

    subject: str
    doc_id: str
    reference: float
    other: float
    gap_reference: float | None
    gap_other: float | None
    max_abs_dll: float | None
    detail: str = ""


@dataclass(frozen=True)
class Comparison:
    """Outcome mismatches between two result sets and the largest log-likelihood difference.

    Attributes:
        documents: (subject, document) pairs compared.
        mismatches: Every pair whose outcome differs.
        max_abs_dll: Largest |ΔLL| over every log-likelihood response compared (None: none were).
        responses_differing: Pairs whose raw responses differ (generated text unequal; log-likelihoods: never
            counted here, see ``max_abs_dll``).
    """

    documents: int
    mismatches: tuple[Mismatch, ...]
    max_abs_dll: float | None
    responses_differing: int


def _responses(samples_path: str | None) -> dict[str, Any]:
    if samples_path is None or not Path(samples_path).is_file():
        return {}
    rows = (json.loads(line) for line in Path(samples_path).read_text(encoding="utf-8").splitlines())
    return {str(r["doc_id"]): r.get("resps") for r in rows}


def _lls(resps: Any) -> list[float] | None:
    """Per-choice log-likelihoods of a log-likelihood document's ``resps`` (``[[[ll, greedy]], ...]``), else None."""
    try:
        return [float(c[0][0]) for c in resps]
    except (TypeError, IndexError, ValueError):
        return None


def _gap(lls: list[float] | None) -> float | None:
    if not lls or len(lls) < 2:
        return None
    top = sorted(lls, reverse=True)
    return top[0] - top[1]


def compare_results(reference: Mapping[str, Any], other: Mapping[str, Any]) -> Comparison:
    """Compare two ``{subject: EvalResult}`` sets of the same subjects and documents (e.g. arm by arm vs one pass).

    Args:
        reference: The reference set (the arm-by-arm path).
        other: The set to check.

    Returns:
        A :class:`Comparison`.

    Raises:
        ValueError: The sets hold other subjects, benchmarks or documents.
    """
    if set(reference) != set(other):
        raise ValueError(f"compare_results: subjects differ ({sorted(reference)} vs {sorted(other)})")
    mismatches: list[Mismatch] = []
    documents, responses_differing, max_dll = 0, 0, None
    for subject, ref in reference.items():
        got = other[subject]
        if ref.benchmark != got.benchmark or ref.doc_ids != got.doc_ids:
            raise ValueError(f"compare_results: {subject!r} was scored on other documents or benchmarks")
        ref_resps, got_resps = _responses(ref.samples_path), _responses(got.samples_path)
        for doc, x, y in zip(ref.doc_ids, ref.outcomes, got.outcomes):
            documents += 1
            a, b = ref_resps.get(doc), got_resps.get(doc)
            lla, llb = _lls(a), _lls(b)
            dll = None
            if lla is not None and llb is not None and len(lla) == len(llb):
                dll = max(abs(p - q) for p, q in zip(lla, llb))
                max_dll = dll if max_dll is None else max(max_dll, dll)
            elif a != b:
                responses_differing += 1
            if x != y:
                detail = "" if lla is not None else f"reference {json.dumps(a)[:200]} vs {json.dumps(b)[:200]}"
                mismatches.append(Mismatch(subject, doc, x, y, _gap(lla), _gap(llb), dll, detail))
    return Comparison(documents, tuple(mismatches), max_dll, responses_differing)
