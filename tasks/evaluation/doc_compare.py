"""Per-document comparisons behind the control ladder's canaries (EXTENSIONS §8.4, §11).

- **Adapter applied**: the baseline adapter must differ from the bare base model (subject path
  :data:`tasks.evaluation.evaluate.BARE_BASE`) on some documents; if not, the adapter was never applied.
- **Zero rebuild**: the documents on which ``zero_rebuild`` differs from the baseline are the noise floor of
  rebuilding alone; a candidate's gain should exceed it.

Both compare two :class:`tasks.evaluation.evaluate.EvalResult` of one evaluator call (same documents, same order).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from spectral_surgery.tasks.evaluation.evaluate import EvalResult


def _responses(r: EvalResult) -> dict[str, Any] | None:
    """doc id -> lm-eval's raw logged responses (``resps``), or None if the samples carry none (fake)."""
    if r.samples_path is None or not Path(r.samples_path).is_file():
        return None
    out = {}
    for line in Path(r.samples_path).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "resps" not in row:
            return None
        out[str(row["doc_id"])] = row["resps"]
    return out


def _same(x: Any, y: Any, rel_tol: float) -> bool:
    if isinstance(x, bool) or isinstance(y, bool):
        return x == y
    if isinstance(x, (int, float)) and isinstance(y, (int, float)):
        return math.isclose(float(x), float(y), rel_tol=rel_tol, abs_tol=rel_tol)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_same(a, b, rel_tol) for a, b in zip(x, y))
    return x == y


def differing_docs(
    a: EvalResult, b: EvalResult, *, by: Literal["outcome", "response"] = "outcome", rel_tol: float = 1e-6
) -> list[str]:
    """Document ids on which two subjects of one evaluation differ.

    Args:
        a: One subject's result.
        b: Another subject's result on the same documents.
        by: ``outcome``: the per-document metric differs (the zero-rebuild noise floor: flipped answers).
            ``response``: the outcome or the raw logged response differs (generated text exactly,
            log-likelihoods beyond ``rel_tol``), so an applied adapter shows even where both answers are wrong
            (the adapter-applied canary). Results without logged responses (the fake) compare outcomes.
        rel_tol: Relative (and absolute) tolerance for numbers in the responses.

    Returns:
        The differing doc ids, in document order.

    Raises:
        ValueError: the results are not aligned (different benchmarks or documents).
    """
    if a.benchmark != b.benchmark or a.doc_ids != b.doc_ids:
        raise ValueError(f"differing_docs: {a.subject!r} and {b.subject!r} were not scored on the same documents "
                         f"({a.benchmark}, {a.n} docs vs {b.benchmark}, {b.n} docs)")  # fmt: skip
    diff = {d for d, x, y in zip(a.doc_ids, a.outcomes, b.outcomes) if x != y}
    if by == "response":
        ra, rb = _responses(a), _responses(b)
        if ra is not None and rb is not None:
            diff |= {d for d in a.doc_ids if not _same(ra.get(d), rb.get(d), rel_tol)}
    elif by != "outcome":
        raise ValueError(f"by must be 'outcome' or 'response', got {by!r}")
    return [d for d in a.doc_ids if d in diff]
