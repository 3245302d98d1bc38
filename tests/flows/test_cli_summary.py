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


def _demo_result() -> dict:
    """flows.demo.run_demo's result for three adapters, as the demo command renders it (nightly popped)."""
    row = {"adapter": "demo-commonsense-x3", "promoted": "global_scalar", "verdict": "promote", "baseline": 0.41625,
           "best_policy": "global_scalar", "task": 0.565, "delta_baseline": 0.14875, "p_baseline": 1.2e-14,
           "delta_random": 0.15125, "p_random": 3.3e-15, "guard_delta": 0.0, "decision": SENTENCE}
    failed = {"adapter": "demo-math", "decision": "failed or not refined", "promoted": None}
    return {"rows": [row, dict(row, adapter="demo-commonsense", guard_delta=None), failed],
            "seconds": {"base_model": 97.2, "fleet": 1070.4, "nightly": 2397.0}, "run_id": 7,
            "dashboard": "/home/u/.spectral-surgery/dashboard.html", "data_dir": "/home/u/.spectral-surgery"}


@pytest.mark.parametrize("width", [80, PIPE_WIDTH])
def test_the_demo_prints_numbers_in_a_table_and_the_reasons_as_the_run_summary(width):
    """The demo printed a table whose last column held the verdict and then each gate sentence on one line of
    300-1,600 characters; now a table of short numbers, then the run's own summary, every line within the width."""
    from spectral_surgery.flows.cli.demo_cmd import demo_lines

    lines = demo_lines(_demo_result(), _rows(), width)
    assert max(len(line) for line in lines) <= width
    assert lines[0] == "Demo nightly run over 3 adapters (base_model 97 s, fleet 1070 s, nightly 2397 s)"
    table = "\n".join(lines[1:lines.index("✓ ops-math@2    PROMOTE smooth_abs  +8.0 pts  38 s")])
    x3 = next(line for line in table.splitlines() if "demo-commonsense-x3" in line)
    assert x3.split() == ["demo-commonsense-x3", "41.6", "global_scalar", "56.5", "+14.9", "+15.1", "+0.0"]
    assert "— — — — — —" in " ".join(next(line for line in table.splitlines() if "demo-math" in line).split())
    assert "PROMOTE" not in table and "McNemar" not in table  # verdicts and sentences are the summary's, below
    assert render(_rows(), width) == lines[len(table.splitlines()) + 1:-2]
    assert lines[-2:] == ["Dashboard: /home/u/.spectral-surgery/dashboard.html",
                          "Registry: spectral-surgery list --data-dir /home/u/.spectral-surgery"]
    colored = demo_lines(_demo_result(), _rows(), width, color=True)
    assert "[green]PROMOTE smooth_abs[/]" in "\n".join(colored) and len(colored) == len(lines)


def test_the_demos_steps_are_wrapped_like_the_summary():
    """The demo's "[2/4] demo fleet: ..." step was one 455-character line in a pipe."""
    import io

    from rich.console import Console

    from spectral_surgery.flows.cli.demo_cmd import _say

    out = io.StringIO()
    step = "[2/4] demo fleet: 5 LoRA adapters on generated data; " + "; ".join(["math: trained on arithmetic"] * 12)
    _say(Console(file=out, width=200, soft_wrap=True), step)  # a file is no terminal: 100 columns
    lines = out.getvalue().splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= PIPE_WIDTH and lines[0].startswith("[2/4] demo fleet:")
    assert " ".join(line.strip() for line in lines) == step
