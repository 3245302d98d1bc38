"""Which subjects an evaluation scores, which of them need a model pass, and their stored outcomes in order.

Pure (no Prefect, no registry): the flow's ``evaluate_subjects`` reads the stored evaluations and candidates, asks
here what is left to score (:func:`to_score`, the reuse rule: a subject whose evaluation under this key is stored is
never scored again), scores it, and reads every subject's outcomes back through :func:`stored_outcomes`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spectral_surgery.tasks.evaluation.evaluate import split_doc_rows


def evaluation_subjects(baseline: str, candidate_ids: Mapping[str, int],
                        arms: Sequence[str] | None = None) -> dict[str, int | None]:
    """Subject name -> candidate row id (``None``: the baseline, the unedited adapter), the baseline first.

    Args:
        baseline: The baseline's subject name.
        candidate_ids: Arm name -> candidate row id of every candidate of the visit.
        arms: The arm names to score besides the baseline (default: every arm of ``candidate_ids``).
    """
    return {baseline: None, **{n: i for n, i in candidate_ids.items() if arms is None or n in arms}}


def to_score(subjects: Mapping[str, int | None], stored: Callable[[int | None], bool],
             artifact_uri: Callable[[int], str | None], local: Path, bare_base: str) -> dict[str, Path | None]:
    """The subjects whose evaluation under this key is not stored yet, each with the adapter directory to score.

    Args:
        subjects: :func:`evaluation_subjects`.
        stored: Candidate id (``None``: the baseline) -> whether its evaluation under this key is recorded.
        artifact_uri: Candidate id -> where its written adapter lies.
        local: The baseline's files (the adapter version itself).
        bare_base: The name of the arm scored with the adapter off (no directory: the bare base model).

    Returns:
        Subject name -> adapter directory (``None``: the bare base), in ``subjects``' order; empty when every
        score is recorded (nothing needs a model).
    """
    todo: dict[str, Path | None] = {}
    for name, cid in subjects.items():
        if stored(cid):
            continue
        if cid is None:
            todo[name] = local
        else:
            uri = artifact_uri(cid)
            todo[name] = None if name == bare_base else Path(uri)
    return todo


def doc_order(doc_id: Any) -> tuple:
    """Documents in benchmark order (numeric ids as numbers: "10" after "9"), so a look's first n are the first n."""
    text = str(doc_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def stored_outcomes(rows: Sequence[Sequence[Any]]) -> tuple[list[float], list[float] | None]:
    """``(outcomes, scores)`` of one stored evaluation's per-document rows, in benchmark order (:func:`doc_order`);
    scores None for an evaluation recorded before scores existed."""
    _, outcomes, scores = split_doc_rows(sorted(rows, key=lambda p: doc_order(p[0])))
    return outcomes, scores
