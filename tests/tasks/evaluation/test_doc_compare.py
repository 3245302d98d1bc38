"""Per-document comparisons of the canaries (tasks/evaluation/doc_compare.py); end to end with lm-eval in
test_evaluate.py."""

from __future__ import annotations

import json

import pytest

from spectral_surgery.tasks.evaluation.doc_compare import differing_docs
from spectral_surgery.tasks.evaluation.evaluate import EvalResult


def _result(tmp_path, name, outcomes, resps=None, benchmark="ss_mc") -> EvalResult:
    path = None
    if resps is not None or name.startswith("fake"):
        path = tmp_path / f"{name}.jsonl"
        rows = [{"doc_id": i, "acc": o, **({"resps": resps[i]} if resps is not None else {})}
                for i, o in enumerate(outcomes)]  # fmt: skip
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids = [str(i) for i in range(len(outcomes))]
    return EvalResult(name, benchmark, "acc", sum(outcomes) / len(outcomes), len(outcomes), None, True, ids,
                      list(outcomes), None if path is None else str(path))  # fmt: skip


def _lls(*values: float, greedy: int = 2) -> list:
    """lm-eval's logged ``resps`` of one-choice loglikelihood docs: [[[ll, is_greedy]]] per doc."""
    return [[[[v, i == greedy]]] for i, v in enumerate(values)]


def test_outcomes_and_loglikelihood_responses(tmp_path):
    base = _result(tmp_path, "base", [1, 0, 0, 1], _lls(-1.0, -2.0, -3.0, -4.0))
    noise = _result(tmp_path, "noise", [1, 0, 0, 1], _lls(-1.0 + 1e-9, -2.0, -3.0, -4.0))
    moved = _result(tmp_path, "moved", [1, 0, 1, 1], _lls(-1.5, -2.0, -3.0, -4.0, greedy=-1))
    assert differing_docs(base, moved) == ["2"]  # only the flipped answer
    assert differing_docs(base, moved, by="response") == ["0", "2"]  # the shifted log-likelihood too
    assert differing_docs(base, noise, by="response") == []  # below rel_tol
    assert differing_docs(base, noise, by="response", rel_tol=0.0) == ["0"]


def test_generated_text_and_fake_results(tmp_path):
    a = _result(tmp_path, "a", [0, 0], [[["12"]], [["x"]]])
    b = _result(tmp_path, "b", [0, 0], [[["12"]], [["y"]]])
    assert differing_docs(a, b) == [] and differing_docs(a, b, by="response") == ["1"]
    fa, fb = _result(tmp_path, "fake_a", [1, 0, 1]), _result(tmp_path, "fake_b", [1, 1, 1])
    assert differing_docs(fa, fb, by="response") == ["1"]  # no logged responses: outcomes only


def test_misaligned_results_and_bad_mode(tmp_path):
    a = _result(tmp_path, "a", [1, 0])
    with pytest.raises(ValueError, match="same documents"):
        differing_docs(a, _result(tmp_path, "b", [1, 0, 1]))
    with pytest.raises(ValueError, match="same documents"):
        differing_docs(a, _result(tmp_path, "c", [1, 0], benchmark="ss_arith"))
    with pytest.raises(ValueError, match="by must be"):
        differing_docs(a, a, by="vibes")  # type: ignore[arg-type]
