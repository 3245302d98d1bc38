"""flows/cli/summary.py: the run's summary, one headline per adapter and its reasons wrapped below (issue 27 §3)."""

from __future__ import annotations

import pytest

from spectral_surgery.flows.cli.summary import PIPE_WIDTH, SummaryRow, fmt_seconds, render, row_of
from tests.records import statistics

SENTENCE = " | ".join([
    "PROMOTE smooth_abs: task 0.620 vs baseline 0.540 (+8.0 pts, McNemar p=0.0031, Holm-adjusted p=0.0093, "
    "95% interval +2.9 to +13.1 pts over 200 documents)",
    "vs random_index (best of 3 seeds) +6.5 pts, p=0.012; vs the calibrated global scalar +4.0 pts, p=0.041",
    "IFEval guard 0.433 vs 0.433 (+0.0 pts, tolerance 2.0 pts, no significant drop: p=1)",
    "abs_select rejected: +1.0 pts, p=0.38 (the gain's upper bound +5.2 pts is above min_effect 1.0 pts: HOLD "
    "would need ~1,200 documents)",
] * 3)  # the length of a real four-policy decision: ~1,600 characters
VERDICTS = [{"name": "smooth_abs", "task_mean": 0.62, "p_adjusted": 0.009},
            {"name": "abs_select", "task_mean": 0.55, "p_adjusted": 0.38},
            {"name": "random_index", "task_mean": 0.555, "p_adjusted": None}]


def _results() -> list[dict]:
    common = {"baseline_task_mean": 0.54, "higher_is_better": True, "verdicts": VERDICTS,
              "decision": {"metric": "task"}}
    return [
        {"adapter": "ops-math", "status": "completed", "verdict": "promote", "promoted": "smooth_abs",
         "statistics": statistics(verdict="promote", promoted="smooth_abs", **common), "sentence": SENTENCE},
        {"adapter": "ops-code", "status": "completed", "verdict": "hold", "sentence": SENTENCE,
         "statistics": statistics(verdict="hold", promoted=None, n_needed=1200, **common)},
        {"adapter": "ops-chat", "status": "completed", "verdict": "reject", "sentence": SENTENCE,
         "statistics": statistics(verdict="reject", promoted=None, **common)},
        {"adapter": "ops-broken", "status": "failed",
         "error": "AdapterError: /srv/loras/ops-broken/adapter_model.safetensors: not a safetensors file (header "
                  "length 1953719668 > file size 15): re-export the adapter with save_pretrained"},
    ]


def _rows() -> list[SummaryRow]:
    return [row_of(r, "@2", 38.4, "smooth_abs (promoted by this run)" if i == 0 else None)
            for i, r in enumerate(_results())]


@pytest.mark.parametrize("width", [80, PIPE_WIDTH])
def test_one_headline_per_adapter_and_the_reasons_wrapped_below(width):
    lines = render(_rows(), width)
    assert max(len(line) for line in lines) <= width
    heads = [line for line in lines if not line.startswith(" ")]
    assert heads == [
        "✓ ops-math@2    PROMOTE smooth_abs  +8.0 pts  38 s",
        "✓ ops-code@2    HOLD  needs ~1,200 docs  38 s",
        "✓ ops-chat@2    REJECT  best smooth_abs +8.0 pts  38 s",
        "✗ ops-broken@2  FAILED  AdapterError  38 s",
    ]
    assert lines[1] == "    served now: smooth_abs (promoted by this run)"
    # every word of every reason is there, whole (none cut, none broken)
    body = " ".join(line.strip() for line in lines)
    for part in SENTENCE.split(" | "):
        assert " ".join(part.split()) in body
    assert "/srv/loras/ops-broken/adapter_model.safetensors:" in lines[-3] + lines[-2] + lines[-1]


def test_a_terminal_gets_the_verdicts_coloured():
    lines = render(_rows()[:1], 80, color=True)
    assert "[green]PROMOTE smooth_abs[/]" in lines[0]


def test_seconds_read_as_a_person_says_them():
    assert [fmt_seconds(s) for s in (None, 4.4, 245, 3725)] == ["", "4 s", "4 min 05 s", "1 h 02 min"]


def test_a_deferred_adapter_is_one_line_with_the_window_s_reason_below():
    reason = "would end at 0:00:12, past the window"
    row = row_of({"adapter": "ops-math", "version_id": 3, "status": "deferred", "reason": reason}, "@4", None, None)
    assert (row.status, row.verdict, row.key, row.details) == ("deferred", "DEFERRED", "next night", (reason,))
    lines = render([row], 80)
    assert lines[0].startswith("… ops-math@4") and "DEFERRED" in lines[0] and "next night" in lines[0]
    assert lines[1].strip() == reason and all(len(line) <= 80 for line in lines)
