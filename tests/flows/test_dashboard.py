"""The audit dashboard (issue 6): the data of every view, the self-contained page, the CLI, the Prefect artifacts
and the 200 adapters × 30 nights scale budget.

The evidence comes from a registry filled by the REAL nightly flow on tiny adapters (``dashboard_support``: two
nights, a promotion per healthy adapter, a manual override and its rollback, an adapter that always fails and one
that was never fetched); every expected value is read back from the registry's own rows or recomputed from the
adapter files, never typed in.
"""

from __future__ import annotations

import json
import math
import re
from html import escape, unescape

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session

from spectral_surgery.flows.dashboard import adapter_data, adapter_markdown, build_page, render_dashboard
from spectral_surgery.flows.dashboard.data import HISTORY, collect, diagnostics
from spectral_surgery.registry.read import registry_fingerprint
from spectral_surgery.registry.models import AdapterVersion, Decision, Evaluation
from spectral_surgery.tasks.decision.record import DecisionRecord
from tests.flows.dashboard_support import (
    CONTROL,
    POLICIES,
    SECTIONS,
    build_flow_registry,
    build_generated_registry,
    chart_specs,
    decision_pool,
    external_references,
    unpack_sections,
)

ARMS = {"baseline", *POLICIES, CONTROL}


# --------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def flow(prefect_harness, fleet_base, tmp_path_factory):
    """(registry, info) after two real nightly runs (built once per process, shared with the other modules)."""
    return build_flow_registry(tmp_path_factory.mktemp("dash_flow"), fleet_base)


@pytest.fixture(scope="module")
def page(flow, tmp_path_factory):
    """``(html, data, fingerprint)`` of the flow registry's page."""
    reg, _ = flow
    return build_page(reg, cache_dir=tmp_path_factory.mktemp("dash_cache"))


def views(data: dict) -> dict[str, dict]:
    return {a["name"]: a for a in data["adapters"]}


def decisions_of(reg, name: str) -> list[Decision]:
    """The adapter's decisions from the registry's rows, newest first (the ground truth of the views)."""
    with Session(reg.engine) as s:
        rows = s.scalars(select(Decision).join(AdapterVersion, AdapterVersion.id == Decision.adapter_version_id)
                         .where(AdapterVersion.adapter_id == reg.get_adapter(name).id)
                         .order_by(Decision.created_at.desc(), Decision.id.desc())).all()
        s.expunge_all()
        return list(rows)


def evaluations_of(reg, d: Decision) -> dict[tuple[int | None, str], Evaluation]:
    """The evaluations a decision was made on: its candidates' and the unedited version's by the same evaluator
    (a version decided under two configurations has a baseline evaluation per evaluator)."""
    cands = {c.id for c in reg.decision_candidates(d)}
    evals = reg.list_evaluations(d.adapter_version_id)
    stage = (d.statistics_json or {}).get("keys")  # stage-keyed decisions name the evaluations they weighed
    if stage:
        wanted = {stage.get("task_evaluation"), stage.get("guard_evaluation")} - {None}
        evals = [e for e in evals if e.evaluator_key in wanted]
    keys = {(e.kind, e.evaluator_key) for e in evals if e.candidate_id in cands}
    return {(e.candidate_id, e.kind): e for e in evals
            if e.candidate_id in cands or (e.candidate_id is None and (e.kind, e.evaluator_key) in keys)}


def svgs(html: str) -> list[str]:
    return re.findall(r'<svg class="chart".*?</svg>', html, re.S)


def svg_texts(chart: str) -> list[str]:
    return [unescape(re.sub(r"<[^>]+>", "", t)) for t in re.findall(r"<text[^>]*>(.*?)</text>", chart, re.S)]


def chart_labelled(html: str, label_part: str) -> str:
    found = [c for c in svgs(html) if label_part in unescape(re.search(r'aria-label="([^"]*)"', c).group(1))]
    assert found, f"no chart whose label contains {label_part!r}"
    return found[0]


# ------------------------------------------------------------------------------------------ fleet view
def test_fleet_view_data_matches_the_registry(flow, page):
    reg, _ = flow
    _, data, _ = page
    v = views(data)
    assert sorted(v) == ["ad-bad", "ad-gone", "ad-mixed", "ad-win"]
    assert [r["id"] for r in data["runs"]] == [1, 2]  # both nightly runs, oldest first
    for name in ("ad-win", "ad-mixed"):
        a = v[name]
        prod = reg.production(name)
        cand = reg.get_candidate(prod.candidate_id)
        # Current production version: the pointer's candidate and version, with the score the gate measured.
        assert a["production"]["candidate_id"] == prod.candidate_id and not a["production"]["implicit"]
        assert a["production"]["label"] == f"{cand.policy} @ {prod.content_sha256[:8]}"
        # Last run and last decision (with its sentence) are the newest rows.
        decs = decisions_of(reg, name)
        assert a["last_run"]["run_id"] == 2 and a["last_run"]["status"] == "completed"
        assert a["last_decision"]["id"] == decs[0].id
        assert a["last_decision"]["sentence"] == decs[0].sentence and a["last_decision"]["sentence"]
        # Trend: one point per decision, oldest first, with the task metric as the gate saw it.
        assert [p["decision_id"] for p in a["trend"]] == [d.id for d in reversed(decs)]
        for p, d in zip(a["trend"], reversed(decs)):
            assert p["baseline"] == pytest.approx(d.statistics_json["means"]["baseline"])
            assert p["promoted_arm"] == (d.statistics_json["promoted"] if d.promoted else None)
        # Night 1 promoted smooth_abs (scripted by the fake evaluator); night 2 promoted nothing, so production
        # stays at the value the night-1 promotion gave it (the step line does not move).
        first, second = a["trend"]
        assert first["promoted_arm"] == "smooth_abs" and second["promoted_arm"] is None
        assert first["production"] == pytest.approx(decs[-1].statistics_json["means"]["smooth_abs"])
        assert second["production"] == first["production"] == a["production"]["value"]
    assert v["ad-win"]["n_versions"] == 2  # new content before night 2
    assert v["ad-win"]["trend"][0]["version_sha"] != v["ad-win"]["trend"][1]["version_sha"]
    # The failing adapter: failed last run, its error, and a failure per night with the stored traceback.
    bad = v["ad-bad"]
    assert bad["last_run"]["status"] == "failed" and bad["last_run"]["error_type"].endswith("AdapterError")
    assert "target_modules" in bad["last_run"]["error"] and bad["last_decision"] is None
    assert bad["production"]["implicit"] and bad["n_failures"] == 2
    assert sorted(f["adapter"] for f in data["failures"]) == ["ad-bad", "ad-bad", "ad-gone"]
    assert all(f["message"].startswith("Traceback") and "q_proj" in f["summary"]
               for f in data["failures"] if f["adapter"] == "ad-bad")
    # Never fetched: no version, no run; the scan's fetch error is on the adapter and in the failures.
    gone = v["ad-gone"]
    assert gone["production"] is None and gone["last_run"] is None and gone["trend"] == []
    assert "never-there" in gone["fetch_error"] and gone["n_failures"] == 1
    (fetch,) = [f for f in data["failures"] if f["adapter"] == "ad-gone"]
    assert fetch["run_id"] is None and fetch["error_type"] == "fetch failed" and "never-there" in fetch["message"]
    events = {n: reg.history(n) for n in v}
    s = data["summary"]
    assert s["adapters"] == 4 and s["failing"] == 2 and s["edited_in_production"] == 2
    assert s["promotions"] == sum(e.kind == "promotion" for es in events.values() for e in es) == 2
    assert s["overrides"] == s["rollbacks"] == 1


def test_fleet_view_html(page):
    html, data, _ = page
    for sid in SECTIONS:
        assert f'id="{sid}"' in html, sid
    fleet = html.split('<section id="fleet">', 1)[1].split("</section>", 1)[0]
    rows = re.findall(r'<tr data-search="[^"]*"[^>]*>(.*?)</tr>', fleet, re.S)
    assert len(rows) == len(data["adapters"]) == 4
    by_name = {re.search(r'<a href="#adapter-[^"]+">([^<]+)</a>', r).group(1): r for r in rows}
    win = by_name["ad-win"]
    assert "smooth_abs @" in win and 'class="spark"' in win and "completed" in win
    assert "failed" in by_name["ad-bad"] and "AdapterError" in by_name["ad-bad"]
    assert "never run" in by_name["ad-gone"] and "source not fetched" in by_name["ad-gone"]
    # The decision's sentence is shown (shortened in the cell, whole in the tooltip).
    sentence = views(data)["ad-win"]["last_decision"]["sentence"]
    assert f'title="{escape(sentence)}"' in win and escape(sentence[:40]) in win
    # Real charts: axes with units and a legend.
    bars = chart_labelled(html, "adapter versions per nightly run")
    texts = svg_texts(bars)
    assert {"refinement run (id)", "adapter versions", "refined and promoted", "failed"} <= set(texts)
    assert "#1" in texts and "#2" in texts
    failures = html.split('<section id="failures">', 1)[1].split("</section>", 1)[0]
    assert failures.count("<details>") == 3 and "Traceback" in failures  # 2 refinements + 1 fetch of ad-gone
    assert "never-there" in failures and ">scan</td>" in failures
    # the evidence table: one row per candidate of each latest decision, the promoted one marked
    evidence = html.split('<section id="evidence">', 1)[1].split("</section>", 1)[0]
    latest = [(a["name"], r) for a in data["adapters"] if a["nights"] for r in a["nights"][0]["rows"]
              if r["role"] != "baseline"]
    assert evidence.count("<tr><td>") == len(latest) > 0
    assert "Δ vs global scalar" in evidence and "promoted" in evidence and "control" in evidence


# ---------------------------------------------------------------------------------------- adapter view
def test_adapter_view_runs_and_candidates(flow, page):
    reg, _ = flow
    _, data, _ = page
    for name in ("ad-win", "ad-mixed"):
        a = views(data)[name]
        decs = decisions_of(reg, name)
        assert [n["decision_id"] for n in a["nights"]] == [d.id for d in decs]
        assert a["metric"]["benchmark"] and a["metric"]["guard_benchmark"]
        for night, d in zip(a["nights"], decs):
            stats = d.statistics_json
            verdicts = {v["name"]: v for v in stats["verdicts"]}
            evals = evaluations_of(reg, d)
            assert {r["arm"] for r in night["rows"]} == ARMS
            assert night["sentence"] == d.sentence and night["promoted"] == d.promoted
            assert len(evals) == 2 * len(ARMS)  # task and guard of every subject
            for r in night["rows"]:
                # Task metric and guard score with confidence intervals, from the evaluations themselves.
                for x, e in ((r["task"], evals[(r["candidate_id"], "task")]),
                             (r["guard"], evals[(r["candidate_id"], "guard")])):
                    z = 1.959964
                    assert x["mean"] == pytest.approx(e.value)
                    assert (x["lo"], x["hi"]) == pytest.approx((e.value - z * e.stderr, e.value + z * e.stderr))
                if r["role"] != "candidate":
                    assert r["vs_baseline"] is None and r["promoted"] is False
                    continue
                v = verdicts[r["arm"]]
                # Deltas vs baseline and vs the random control, with their intervals and p-values.
                for mine, theirs in ((r["vs_baseline"], v["vs_baseline"]), (r["vs_control"], v["vs_control"])):
                    assert mine["delta"] == pytest.approx(theirs["delta"])
                    assert (mine["lo"], mine["hi"]) == pytest.approx((theirs["ci_low"], theirs["ci_high"]))
                    assert mine["p"] == pytest.approx(theirs["p_value"]) and 0.0 <= mine["p"] <= 1.0
                    assert mine["lo"] <= mine["delta"] <= mine["hi"]
                assert r["control"] == CONTROL
                assert r["guard_delta"]["delta"] == pytest.approx(v["guard_delta"])
                # The decision.
                assert r["passed"] == v["passed"]
                assert r["promoted"] == (d.promoted and stats["promoted"] == r["arm"])
        older = a["nights"][-1]
        assert older["promoted_arm"] == "smooth_abs"
        assert [r["arm"] for r in older["rows"] if r["promoted"]] == ["smooth_abs"]


def test_adapter_view_spectra_match_the_adapter_files(flow, page):
    """σ before is the SVD of the unedited adapter's B·A, read back from its files; after differs per policy."""
    from spectral_surgery.tasks.adapter_io import load_adapter

    reg, info = flow
    _, data, _ = page
    a = views(data)["ad-win"]
    sp = a["spectrum"]
    assert sp["decision_id"] == a["last_decision"]["id"]
    assert {m.rsplit(".", 1)[-1] for m in sp["module_names"]} == {"o_proj", "down_proj"}
    assert len(sp["module_names"]) == 4  # 2 layers × (o_proj, down_proj) of the tiny model
    assert {c["arm"] for c in sp["candidates"]} == ARMS - {"baseline"}
    files = load_adapter(info["adapters"]["ad-win"])
    assert files.sha256.startswith(sp["version_sha"])
    mods = {m.name: m for m in files.modules.values()}
    for i, name in enumerate(sp["module_names"]):
        m = mods[name]
        expected = torch.linalg.svdvals(files.tensors[m.key_B].float() @ files.tensors[m.key_A].float())[: m.r]
        for c in sp["candidates"]:
            assert torch.allclose(torch.tensor(c["before"][i]), expected, rtol=1e-4, atol=1e-6), (c["arm"], name)
            assert len(c["after"][i]) == m.r and all(x >= 0 for x in c["after"][i])
    for c in sp["candidates"]:
        assert c["before"] != c["after"], f"{c['arm']} edited nothing"
    se = a["sensitivity"]
    assert set(se["module_names"]) == set(sp["module_names"]) and se["modules"][0].startswith("L")
    for mags, agree in zip(se["magnitude"], se["sign_agreement"]):
        assert len(mags) == len(agree) == 4
        assert all(x >= 0 for x in mags) and any(x > 0 for x in mags)
        assert all(0.0 <= x <= 1.0 for x in agree)


def test_adapter_view_history_of_promotions_overrides_rollbacks(flow, page):
    reg, _ = flow
    _, data, _ = page
    a = views(data)["ad-mixed"]
    history = reg.history("ad-mixed")
    assert [e["id"] for e in a["events"]] == sorted((e.id for e in history), reverse=True)  # newest first
    assert [e["kind"] for e in a["events"]] == ["rollback", "manual_override", "promotion"]
    rollback, override, promotion = a["events"]
    assert (override["actor"], override["reason"]) == ("alice", "prefer abs_select for the demo")
    assert (rollback["actor"], rollback["reason"]) == ("bob", "undo the demo override")
    assert rollback["reverts"] == override["id"] and promotion["actor"] == "nightly"
    assert override["from"] == promotion["to"] == rollback["to"] and override["to"].startswith("abs_select @")
    assert promotion["decision_id"] == decisions_of(reg, "ad-mixed")[-1].id


def test_adapter_section_html(page):
    html, data, _ = page
    sections = unpack_sections(html)
    assert set(sections) == {a["slug"] for a in data["adapters"]}
    win = sections["adapter-ad-win"]
    for title in ("Task metric across nights", "Latest decision: paired differences", "Runs and candidates",
                  "Singular values before → after", "Sensitivity profile",
                  "Promotion, override and rollback history"):
        assert title in win, title
    assert win.count('<p class="guide">Reading guide') >= 4
    # Every chart and the runs table ship as JSON the page draws on opening (drawn in Chromium:
    # test_dashboard_browser, which also checks the drawings against svg.py's).
    specs = {spec["label"].split(": ", 1)[1]: (kind, spec) for kind, spec in chart_specs(win) if kind != "runs"}
    a = views(data)["ad-win"]
    kind, trend = specs["task metric across nights"]
    metric = a["metric"]
    assert kind == "line" and trend["y_label"] == f"{metric['benchmark']} {metric['metric']} (%)"  # with its unit
    assert [s["name"] for s in trend["series"]][:2] == ["production (served after the night)", "unedited (baseline)"]
    assert {m["legend"] for m in trend["markers"]} == {"promotion"}
    assert [p[1] for p in trend["series"][1]["points"]] == [pytest.approx(t["baseline"] * 100) for t in a["trend"]]
    kind, forest = specs["latest decision's paired deltas"]
    assert kind == "forest" and {p["x_label"] for p in forest["panels"]} == {"Δ task (pts)", "Δ IFEval (pts)"}
    for p in forest["panels"]:  # intervals inside ±100 points, the estimate inside its interval
        assert all(-100 <= v[1] <= v[0] <= v[2] <= 100 for v in p["values"] if v and v[1] is not None)
    [runs] = [spec for kind, spec in chart_specs(win) if kind == "runs"]
    assert [n["sentence"] for n in runs["nights"]] == [n["sentence"] for n in a["nights"]]
    rows = [r for n in runs["nights"] for r in n["rows"]]
    assert any(r.get("promoted") for r in rows) and any(r.get("verdict") in ("reject", "hold") for r in rows)
    assert any(r.get("vs_baseline") and r["vs_baseline"]["p"] < 0.001 for r in rows)
    shown = {(n["decision_id"], r["arm"]): r for n in a["nights"] for r in n["rows"]}
    for n, night in zip(runs["nights"], a["nights"]):  # the scores as printed: 0.001 points, p to 3 digits
        for r in n["rows"]:
            full = shown[(night["decision_id"], r["arm"])]
            assert r["task"]["mean"] == pytest.approx(full["task"]["mean"], abs=5e-6)
            if full["vs_baseline"]:
                assert r["vs_baseline"]["lo"] == pytest.approx(full["vs_baseline"]["lo"], abs=5e-6)
                assert r["vs_baseline"]["p"] == pytest.approx(full["vs_baseline"]["p"], rel=5e-3)
    sp, se = a["spectrum"], a["sensitivity"]
    kind, sigma = specs[f"singular values before and after ({sp['focus']})"]
    focus = next(c for c in sp["candidates"] if c["arm"] == sp["focus"])
    assert kind == "multiples" and sigma["y_label"] == "singular value σ"
    assert ["σ before (unedited)", "#4B5563", "line"] in sigma["legend"]
    assert [p[0] for p in sigma["panels"]] == sp["modules"]
    for (_, series), before, after in zip(sigma["panels"], focus["before"], focus["after"]):
        assert series[0][2] == pytest.approx(before, rel=1e-3) and series[1][2] == pytest.approx(after, rel=1e-3)
    kind, ratio = specs["σ'/σ per module and component"]
    assert kind == "heatmap" and ratio["cbar_label"] == "σ'/σ" and ratio["rows"] == sp["modules"]
    assert [p[0] for p in ratio["panels"]] == [c["arm"] for c in sp["candidates"]]
    for (_, matrix), c in zip(ratio["panels"], sp["candidates"]):
        expected = [[math.log2(s1 / s0) if s0 > 1e-12 and s1 > 0 else None for s0, s1 in zip(b, af)]
                    for b, af in zip(c["before"], c["after"])]
        assert [[v if v is None else pytest.approx(v, abs=6e-4) for v in row] for row in expected] == matrix
    biggest = max(abs(v) for _, m in ratio["panels"] for r in m for v in r if v)
    assert -ratio["vmin"] == ratio["vmax"] >= min(biggest, 8.0)  # a symmetric scale, clipped at ×256
    kind, agree = specs["sign agreement"]
    assert kind == "heatmap" and agree["cbar_label"] == "fraction agreeing"
    assert agree["panels"][0][1] == [[pytest.approx(v, abs=6e-4) for v in row] for row in se["sign_agreement"]]
    kind, mag = specs["sensitivity magnitude"]
    for row, values in zip(mag["panels"][0][1], se["magnitude"]):
        top = max(abs(v) for v in values)
        assert row == [pytest.approx(abs(v) / top, abs=6e-4) for v in values] and max(row) == 1.0
    mixed = sections["adapter-ad-mixed"]
    assert "manual override" in mixed and "rollback" in mixed and "alice" in mixed and "bob" in mixed
    bad = sections["adapter-ad-bad"]
    assert "Failures (2)" in bad and "No decision yet" in bad


def test_adapter_markdown_summary(flow):
    from spectral_surgery.registry.validation import NotFoundError

    reg, _ = flow
    a = adapter_data(reg, "ad-mixed")
    md = adapter_markdown(a)
    assert md.startswith("### ad-mixed (commonsense)")
    assert a["last_decision"]["sentence"] in md
    assert "| subject | task | IFEval | Δ vs unedited | Δ vs random control | Δ IFEval | decision |" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("| subject")]
    assert len(table) == len(ARMS)
    assert "manual override by alice" in md and "rollback by bob" in md
    bad = adapter_markdown(adapter_data(reg, "ad-bad"))
    assert "**Failures** (2)" in bad and "AdapterError" in bad
    with pytest.raises(NotFoundError, match="ad-win"):
        adapter_data(reg, "ad-wni")


# ------------------------------------------------------------------------------------------ diagnostics

def _assert_points_close(got: list[tuple], expected: list[tuple], rel: float = 1e-9, abs_: float = 1e-12) -> None:
    """(adapter, policy, x, y) points: names equal, coordinates equal within a float tolerance (summation order)."""
    got, expected = sorted(got), sorted(expected)
    assert [p[:2] for p in got] == [p[:2] for p in expected]
    for g, e in zip(got, expected):
        assert g[2:] == pytest.approx(e[2:], rel=rel, abs=abs_), (g, e)

def test_reward_risk_and_guided_random_from_the_fleet(flow, page):
    reg, _ = flow
    _, data, _ = page
    diag = data["diagnostics"]
    rr, gr = diag["reward_risk"], diag["guided_random"]
    expected_rr, expected_gr = [], []
    for name in ("ad-mixed", "ad-win"):
        stats = decisions_of(reg, name)[0].statistics_json
        means, gmeans = stats["means"], stats["guard_means"]
        for v in stats["verdicts"]:
            # Task gain vs IFEval drop per policy; guided vs its random control.
            expected_rr.append((name, v["policy"], v["vs_baseline"]["delta"], -v["guard_delta"]))
            expected_gr.append((name, v["policy"], means[CONTROL] - means["baseline"], v["vs_baseline"]["delta"]))
        expected_rr.append((name, "random_index", means[CONTROL] - means["baseline"],
                            gmeans["baseline"] - gmeans[CONTROL]))
    got_rr = [(p["adapter"], p["policy"], p["gain"], p["risk"]) for p in rr["points"]]
    got_gr = [(p["adapter"], p["policy"], p["x"], p["y"]) for p in gr["points"]]
    _assert_points_close(got_rr, expected_rr)
    _assert_points_close(got_gr, expected_gr)
    for s in rr["policies"]:
        gains = [p["gain"] for p in rr["points"] if p["policy"] == s["policy"]]
        assert s["n"] == len(gains) == 2 and s["gain"] == pytest.approx(sum(gains) / 2)
        assert s["gain_lo"] <= s["gain"] <= s["gain_hi"]
    for s in gr["policies"]:
        pts = [p for p in gr["points"] if p["policy"] == s["policy"]]
        assert s["above"] == sum(p["y"] > p["x"] for p in pts)


def test_diagnostics_summaries_on_real_gate_decisions():
    """Per-policy means, intervals and the above-diagonal counts, over many real gate decisions."""
    pool = decision_pool(40, 60, seed=3)
    diag = diagnostics([(f"a{i}", DecisionRecord.from_json(p["stats"], p["promoted"] is not None))
                        for i, p in enumerate(pool)])
    by_policy = {s["policy"]: s for s in diag["reward_risk"]["policies"]}
    assert set(by_policy) == {*POLICIES, "random_index"}
    for pol, s in by_policy.items():
        gains = [p["gain"] for p in diag["reward_risk"]["points"] if p["policy"] == pol]
        risks = [p["risk"] for p in diag["reward_risk"]["points"] if p["policy"] == pol]
        assert s["n"] == len(gains) == 40
        mean = sum(gains) / len(gains)
        sd = math.sqrt(sum((g - mean) ** 2 for g in gains) / (len(gains) - 1))
        assert s["gain"] == pytest.approx(mean)
        assert (s["gain_lo"], s["gain_hi"]) == pytest.approx((mean - 1.96 * sd / math.sqrt(40),
                                                               mean + 1.96 * sd / math.sqrt(40)))
        assert s["risk"] == pytest.approx(sum(risks) / len(risks))
    promoted = [p for p in diag["reward_risk"]["points"] if p["promoted"]]
    assert len(promoted) == sum(1 for p in pool if p["promoted"])
    for s in diag["guided_random"]["policies"]:
        pts = [p for p in diag["guided_random"]["points"] if p["policy"] == s["policy"]]
        assert s["above"] == sum(p["y"] > p["x"] for p in pts)
        assert s["mean_margin"] == pytest.approx(sum(p["y"] - p["x"] for p in pts) / len(pts))


def test_subspace_alignment_matches_an_svd_of_the_adapter_files(flow, page):
    from spectral_surgery.tasks.adapter_io import load_adapter

    reg, info = flow
    _, data, _ = page
    al = data["alignment"]
    assert "error" not in al, al.get("error")
    adapter = views(data)[al["adapter"]]
    files = load_adapter(adapter["latest_version"]["local_path"])
    assert files.sha256.startswith(al["version_sha"])
    mods = {m.name: m for m in files.modules.values()}
    assert [n.rsplit(".", 1)[-1] for n in al["names"]] == ["o_proj", "down_proj"] * 2
    us = []
    for name in al["names"]:
        m = mods[name]
        u, _, _ = torch.linalg.svd(files.tensors[m.key_B].double() @ files.tensors[m.key_A].double())
        us.append(u[:, : al["m"]])
    n = len(us)
    for i in range(n):
        assert al["principal"][i][i] == pytest.approx(1.0, abs=1e-4)
        assert al["overlap"][i][i] == pytest.approx(1.0, abs=1e-4)
        for j in range(n):
            principal = abs(float(us[i][:, 0] @ us[j][:, 0]))
            overlap = float((us[i].T @ us[j]).pow(2).sum()) / al["m"]
            assert al["principal"][i][j] == pytest.approx(principal, abs=1e-3)
            assert al["overlap"][i][j] == pytest.approx(overlap, abs=1e-3)
    # o_proj vs down_proj of the same layer.
    assert [r["layer"] for r in al["intra_layer"]] == [0, 1]
    for r in al["intra_layer"]:
        i, j = 2 * r["layer"], 2 * r["layer"] + 1
        assert (r["principal"], r["overlap"]) == pytest.approx((al["principal"][i][j], al["overlap"][i][j]),
                                                               abs=1e-4)
    assert al["random_overlap"] == pytest.approx(al["m"] / al["d"])


def test_diagnostics_html_has_reading_guides_and_real_charts(page):
    html, _, _ = page
    diag = html.split('<section id="diagnostics">', 1)[1].split("</section>", 1)[0]
    for hid in ("reward-risk", "guided-random", "alignment"):
        after = diag.split(f'<h3 id="{hid}">', 1)[1]
        assert re.match(r'.*?</h3>\s*<p class="guide">Reading guide: ', after, re.S), hid
    rr = svg_texts(chart_labelled(diag, "Reward vs risk"))
    assert "risk: IFEval drop vs unedited (pts; right = worse)" in rr
    assert "reward: task gain vs unedited (pts)" in rr
    assert {f"{p} (n=2)" for p in (*POLICIES, "random_index")} <= set(rr)
    assert any(t.startswith("guard tolerance") for t in rr)
    gr = svg_texts(chart_labelled(diag, "Guided policy gain vs random control gain"))
    assert "random control's gain vs unedited (pts)" in gr and "y = x" in gr
    heat = chart_labelled(diag, "principal direction similarity")
    assert "|cosine|" in svg_texts(heat)
    # Module names label rows and (written vertically, so they do not overprint each other) columns.
    assert svg_texts(heat).count("L0 down_proj") == 2 and heat.count('rotate(-90)" text-anchor="end"') == 4
    synergy = svg_texts(chart_labelled(diag, "o_proj vs down_proj per layer"))
    assert "layer" in synergy and "o_proj ↔ down_proj overlap (same layer)" in synergy


# ------------------------------------------------------------------------------ self-contained page, CLI
def test_render_dashboard_writes_one_self_contained_file(flow, tmp_path):
    reg, _ = flow
    out = render_dashboard(reg, tmp_path / "site" / "dashboard.html")
    assert out == tmp_path / "site" / "dashboard.html" and out.is_file()
    assert not list(out.parent.glob("*.tmp"))
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert external_references(html) == []
    for inner in unpack_sections(html).values():
        assert external_references(inner) == []
    assert 'data-live="0"' in html and "static snapshot" in html
    assert re.findall(r"<script[^>]*>", html) == ["<script>"]  # one inline script, no file


def test_cli_dashboard_renders_the_file(flow, tmp_path, capsys):
    from spectral_surgery.flows.cli import main

    reg, info = flow
    out = tmp_path / "cli" / "dash.html"
    assert main(["dashboard", "--data-dir", str(info["data_dir"]), "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(out)}
    html = out.read_text(encoding="utf-8")
    assert external_references(html) == [] and all(f'id="{s}"' in html for s in SECTIONS)
    assert all(f'id="adapter-{n}"' in html for n in ("ad-win", "ad-mixed", "ad-bad", "ad-gone"))
    # Unknown data dir: a clear error, not a traceback.
    assert main(["dashboard", "--data-dir", str(tmp_path / "nowhere")]) != 0
    assert "no registry at" in capsys.readouterr().err


def test_evidence_markdown_has_a_row_per_arm_of_each_latest_decision(flow, capsys):
    from spectral_surgery.flows.cli import main
    from spectral_surgery.flows.dashboard import evidence_markdown
    from spectral_surgery.flows.dashboard.data import collect

    reg, info = flow
    data = collect(reg)
    md = evidence_markdown(data)
    lines = md.splitlines()
    assert lines[0].startswith("| adapter | candidate | task (%) | Δ vs unedited (pts) | Δ vs best random (pts) |")
    rows = [ln.split(" | ") for ln in lines[2:]]
    latest = [(a["name"], r) for a in data["adapters"] if a["nights"] for r in a["nights"][0]["rows"]]
    assert len(rows) == len(latest) > 0
    for cells, (name, r) in zip(rows, latest):
        assert cells[0] == f"| {name}" and cells[1] == ("unedited" if r["role"] == "baseline" else r["arm"])
    verdicts = {c[-1].rstrip(" |") for c in rows}
    assert {"reference", "random control (best)"} <= verdicts
    assert all(v in ("reference", "random control", "random control (best)", "canary", "**promoted**", "passed",
                     "rejected", "held for evidence") or v.startswith("held: needs ~") for v in verdicts), verdicts
    assert any(v == "**promoted**" or v.startswith("held: needs ~") for v in verdicts)
    # the same table from the command line (stdout, nothing else), and in --json
    assert main(["dashboard", "--data-dir", str(info["data_dir"]), "--evidence"]) == 0
    assert capsys.readouterr().out == md
    assert main(["dashboard", "--data-dir", str(info["data_dir"]), "--evidence", "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)["rows"]  # plain values, not Markdown in a string
    assert [(r["adapter"], r["candidate"]) for r in as_json] == [(c[0].removeprefix("| "), c[1]) for c in rows]
    assert [r["verdict"] for r in as_json] == [c[-1].rstrip(" |").strip("*") for c in rows]
    for r, (_, arm) in zip(as_json, latest):
        assert r["task"] == arm["task"] and r["vs_baseline"] == arm["vs_baseline"]


def test_fingerprint_is_stable_and_moves_with_the_registry(flow, tmp_path):
    from tests.flows.dashboard_support import copy_registry

    reg, _ = flow
    copy = copy_registry(reg, tmp_path / "copy")
    before = registry_fingerprint(copy)
    assert registry_fingerprint(copy) == before == registry_fingerprint(reg)
    # ad-win's first version was overwritten in place (night 2): rolling back to it would serve other bytes
    from spectral_surgery.registry.repository import RegistryError

    with pytest.raises(RegistryError, match="changed after they were evaluated"):
        copy.rollback("ad-win", actor="carol", reason="fingerprint test")
    assert registry_fingerprint(copy) == before  # a refused move changes nothing
    copy.rollback("ad-mixed", actor="carol", reason="fingerprint test")
    assert registry_fingerprint(copy) != before
    assert registry_fingerprint(reg) == before  # the shared registry is untouched
    view = views(collect(copy, only=None))["ad-mixed"]
    assert view["events"][0]["actor"] == "carol"
    copy.close()


# --------------------------------------------------------------------------------------- prefect artifacts
def _artifacts(key: str) -> list:
    """Every version of the artifact ``key``, newest first, read from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import Artifact

    with get_client(sync_client=True) as client:
        # Raw request: prefect 3.8.8's ``read_artifacts`` sends null for omitted filters (the server rejects it),
        # and empty flow-run/task-run filters turn into joins that drop artifacts made outside a task run.
        response = client.request("POST", "/artifacts/filter", json={
            "artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC", "limit": 50, "offset": 0})
        return Artifact.model_validate_list(response.json())


def test_prefect_artifacts_per_adapter_per_run(flow):
    """Each refinement leaves a table and a markdown artifact under a per-adapter key: one version per run, so
    the Prefect UI shows the adapter's history under that key."""
    reg, _ = flow
    for name in ("ad-win", "ad-mixed"):
        decs = decisions_of(reg, name)  # newest first, like the artifacts
        tables, notes = _artifacts(f"refine-{name}"), _artifacts(f"refine-{name}-summary")
        assert [t.type for t in tables] == ["table"] * 2 and [n.type for n in notes] == ["markdown"] * 2
        assert len({t.flow_run_id for t in tables}) == 2  # one nightly flow run each night
        assert {t.flow_run_id for t in tables} == {n.flow_run_id for n in notes}
        # posted by the night's publisher off the adapter's path, still linked to the adapter's own task run
        assert all(a.task_run_id is not None for a in tables + notes)
        assert [t.task_run_id for t in tables] == [n.task_run_id for n in notes]
        for table, note, d in zip(tables, notes, decs):
            rows = json.loads(table.data) if isinstance(table.data, str) else table.data
            verdicts = {v["name"]: v for v in d.statistics_json["verdicts"]}
            assert [r["candidate"] for r in rows] == list(verdicts)
            for r in rows:
                v = verdicts[r["candidate"]]
                assert r["passed"] == v["passed"]
                assert r["task"] == pytest.approx(v["task_mean"], abs=1e-4)
                assert r["p vs baseline"] == pytest.approx(v["vs_baseline"]["p_value"], abs=1e-4)
            assert d.sentence in note.data and table.description.startswith(f"{name}: ")
    # The failing adapter is in the night's fleet summary artifact with its error.
    run = reg.get_run(2)
    fleet = [a for a in _artifacts("nightly-refinement") if str(a.flow_run_id) == run.flow_run_id]
    assert len(fleet) == 1
    rows = {r["adapter"]: r for r in (json.loads(fleet[0].data) if isinstance(fleet[0].data, str)
                                      else fleet[0].data)}
    assert rows["ad-bad"]["status"] == "failed" and "AdapterError" in rows["ad-bad"]["decision"]


# ---------------------------------------------------------------------------------------------- scale
@pytest.fixture(scope="module")
def fleet(fleet_base, tmp_path_factory):
    """A generated registry of 200 adapters × 30 nights (built once per process)."""
    return build_generated_registry(tmp_path_factory.mktemp("dash_fleet"), fleet_base)


@pytest.mark.slow
def test_200_adapters_by_30_nights_render_completely(fleet, tmp_path):
    """The whole fleet renders into one self-contained page (its speed: tests/benchmarks/bench_dashboard.py)."""
    reg, counts = fleet
    assert counts["adapter_runs"] == 200 * 30 and counts["promotions"] > 0 and counts["failures"] > 0
    out = render_dashboard(reg, tmp_path / "dashboard.html")
    size_mb = out.stat().st_size / 1e6
    assert size_mb < 15
    html = out.read_text(encoding="utf-8")
    assert external_references(html) == []
    assert html.count('<details class="adapter"') == 200 and html.count("<tr data-search=") == 200
    data = collect(reg)
    v = views(data)
    assert len(v) == 200
    s = data["summary"]
    assert (s["promotions"], s["overrides"], s["rollbacks"]) == (counts["promotions"], counts["overrides"],
                                                                 counts["rollbacks"])
    assert len(data["runs"]) == 30 and sum(r["failed"] for r in data["runs"]) == counts["failures"]
    # Trends cover every decision (30 nights, fewer where a night failed), capped at HISTORY.
    assert sum(len(a["trend"]) for a in v.values()) == counts["decisions"]
    assert max(len(a["trend"]) for a in v.values()) <= HISTORY
    assert "Adapter <b>fleet-real</b>" in html  # the alignment diagnostic, from the one adapter with files
    # Spectra of each adapter's latest decision: every module of the 8 layers.
    with_spectra = [a for a in v.values() if a["spectrum"]]
    assert with_spectra and all(len(a["spectrum"]["modules"]) == 16 for a in with_spectra)


def test_what_wins_section_matches_the_report(flow, tmp_path):
    """The dashboard's "What wins" view and ``spectral-surgery report`` are the same numbers: the dashboard builds
    it from its own snapshot, the CLI from registry.read.latest_decisions, both through
    tasks.decision.fleet_report.what_wins."""
    from spectral_surgery.registry.read import latest_decisions
    from spectral_surgery.tasks.decision.fleet_report import what_wins

    reg, _ = flow
    data = collect(reg)
    assert data["what_wins"] == what_wins(latest_decisions(reg))
    assert data["what_wins"] and {r.edit for r in data["what_wins"]} >= {"smooth_abs"}
    html = render_dashboard(reg, tmp_path / "d.html").read_text()
    assert 'id="what-wins"' in html and "What wins, for which adapters" in html


@pytest.mark.parametrize("mean, stderr, n, lo, hi", [
    (0.975, 0.025, 40, 0.975 - 1.959964 * 0.025, 1.0),  # issue 27: "97.5 [92.6, 102.4]" reads [92.6, 100.0]
    (0.02, 0.02, 50, 0.0, 0.02 + 1.959964 * 0.02),
    (0.5, 0.05, 100, 0.5 - 1.959964 * 0.05, 0.5 + 1.959964 * 0.05),  # inside the range: unchanged
])
def test_task_intervals_stay_inside_the_metric_range(mean, stderr, n, lo, hi):
    from spectral_surgery.flows.dashboard.data import mean_ci

    ci = mean_ci(mean, stderr, n, 0.95)
    assert ci["mean"] == mean and ci["lo"] == pytest.approx(lo, abs=1e-6) and ci["hi"] == pytest.approx(hi, abs=1e-6)
    wilson = mean_ci(1.0, None, 10, 0.95)  # no stderr: Wilson, always inside [0, 1]
    assert 0.0 <= wilson["lo"] <= wilson["hi"] <= 1.0
