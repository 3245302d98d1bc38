"""Which subjects an evaluation scores and their stored outcomes in order (tasks/evaluation/subjects.py).

The registry is stood in by two callables (is an evaluation stored, where does a candidate lie); the flow's use
(a re-run scores nothing, a new candidate alone is scored) is covered in tests/flows/test_nightly.py.
"""

from __future__ import annotations

from pathlib import Path

from spectral_surgery.tasks.evaluation.subjects import doc_order, evaluation_subjects, stored_outcomes, to_score

IDS = {"smooth_abs": 7, "bare_base": 3, "random_s0": 5}
LOCAL = Path("/adapters/v1")


def _uri(cid: int) -> str:
    return f"/store/{cid}"


def test_the_baseline_comes_first_and_arms_select_the_others():
    assert list(evaluation_subjects("baseline", IDS)) == ["baseline", "smooth_abs", "bare_base", "random_s0"]
    assert evaluation_subjects("baseline", IDS, ["random_s0"]) == {"baseline": None, "random_s0": 5}


def test_nothing_stored_scores_every_subject_the_bare_base_without_an_adapter():
    todo = to_score(evaluation_subjects("baseline", IDS), lambda cid: False, _uri, LOCAL, "bare_base")
    assert todo == {"baseline": LOCAL, "smooth_abs": Path("/store/7"), "bare_base": None,
                    "random_s0": Path("/store/5")}


def test_a_stored_evaluation_is_reused_and_nothing_is_looked_up_for_it():
    asked: list[int] = []

    def uri(cid: int) -> str:
        asked.append(cid)
        return _uri(cid)

    subjects = evaluation_subjects("baseline", IDS)
    assert to_score(subjects, lambda cid: cid in (None, 3, 5), uri, LOCAL, "bare_base") == {
        "smooth_abs": Path("/store/7")}
    assert asked == [7]
    assert to_score(subjects, lambda cid: True, uri, LOCAL, "bare_base") == {}  # nothing needs a model


def test_documents_come_back_in_benchmark_order_with_scores_only_when_every_row_has_one():
    rows = [["10", 1.0, 0.9], ["9", 0.0, 0.2], ["b", 1.0, 0.7], ["a", 0.0, 0.1]]
    assert sorted(["10", "9", "a"], key=doc_order) == ["9", "10", "a"]
    assert stored_outcomes(rows) == ([0.0, 1.0, 0.0, 1.0], [0.2, 0.9, 0.1, 0.7])
    assert stored_outcomes([["2", 1.0], ["1", 0.0]]) == ([0.0, 1.0], None)  # recorded before scores existed
