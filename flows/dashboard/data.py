"""What the audit dashboard shows, as plain dicts: read-only queries on the registry, no HTML.

The registry is the only writer of the database, and its read API (:mod:`registry.read`) the only reader: this
module shapes the rows of :func:`registry.read.dashboard_rows` (ONE read transaction, so a page is one consistent
snapshot) into views. Heavy JSON columns are read only where they are shown, which keeps a fleet of hundreds of
adapters × months of nights fast:

* decision statistics for the last ``history`` decisions of each adapter (trends, diagnostics),
* evaluations (benchmark names, standard errors) for the last ``detail_runs`` decisions,
* spectra and sensitivities for the candidates of each adapter's latest decision only.

Every value is a fraction on the metric's own scale (0..1 for accuracies); the renderer prints points (×100).

Over 400 lines: one query-to-dict function per dashboard section, each independent.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from datetime import UTC, datetime
from statistics import NormalDist, fmean, stdev
from typing import Any

from spectral_surgery.registry.read import dashboard_rows
from spectral_surgery.registry.validation import error_summary
from spectral_surgery.tasks.decision.arms import stored_arm_name
from spectral_surgery.tasks.surgery.diagnostics import short_module
from spectral_surgery.tasks.decision.gate import verdict_label
from spectral_surgery.tasks.decision.record import DecisionRecord, EvidenceKeys, PairedTestRecord, VerdictRecord
from spectral_surgery.tasks.decision.fleet_report import LatestDecision, what_wins
from spectral_surgery.tasks.decision.report import pairing_text, pairing_vs

HISTORY = 30  # decisions per adapter in trends and diagnostics
DETAIL_RUNS = 5  # decisions per adapter shown with every candidate's numbers
EVENTS_CAP = 30  # promotion/override/rollback events listed per adapter
FAILURES_CAP = 50  # failed adapter runs listed fleet-wide (10 per adapter)


# ----------------------------------------------------------------------------------------------- helpers
def arm_name(policy: str, seed: int, is_control: bool) -> str:
    """The gate's name of a candidate: the policy, or ``random_index-s<seed>`` for a random control
    (:func:`tasks.decision.arms.stored_arm_name`, the rule the flow names its arms by)."""
    return stored_arm_name(policy, seed)


def slug(name: str) -> str:
    """An HTML id for an adapter's section (the name with every other character replaced by ``-``)."""
    return "adapter-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if dt is not None else None


def _epoch(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


def mean_ci(mean: float | None, stderr: float | None, n: int | None, confidence: float,
            bounds: tuple[float, float] = (0.0, 1.0)) -> dict | None:
    """A score with its two-sided interval: ``mean ± z·SE`` when the evaluator gave a standard error, else the
    Wilson score interval (0/1 outcomes) from ``n``; ``lo``/``hi`` are None when neither is known.

    The normal interval is clipped to the metric's range ``bounds`` (every task and guard metric here is a rate in
    [0, 1]): 97.5 % ± 4.9 reads ``[92.6, 100.0]``, never a score above 100 %. A mean outside ``bounds`` is not a
    rate and is left unclipped.
    """
    if mean is None or not math.isfinite(mean):
        return None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    if stderr is not None and math.isfinite(stderr):
        lo, hi = mean - z * stderr, mean + z * stderr
        if bounds[0] <= mean <= bounds[1]:
            lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
        return {"mean": mean, "lo": lo, "hi": hi}
    if n and 0.0 <= mean <= 1.0:
        centre = (mean + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(mean * (1 - mean) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return {"mean": mean, "lo": centre - half, "hi": centre + half}
    return {"mean": mean, "lo": None, "hi": None}


RATE_DIFF = (-1.0, 1.0)  # the range of a difference of two rates (±100 points)


def _test(t: PairedTestRecord | None, bounds: tuple[float, float] | None = RATE_DIFF) -> dict | None:
    """A stored ``PairedTest`` as ``{delta, lo, hi, p, n}``, its interval clipped to ``bounds`` (the range of a
    difference of two rates, so a paired interval never reads past ±100 points; None: a continuous metric, left
    unclipped)."""
    if not t:
        return None
    lo, hi = t.ci_low, t.ci_high
    if bounds is not None:
        lo = None if lo is None else min(max(lo, bounds[0]), bounds[1])
        hi = None if hi is None else min(max(hi, bounds[0]), bounds[1])
    return {"delta": t.delta, "lo": lo, "hi": hi, "p": t.p_value, "n": t.n}


def _pairing(v: VerdictRecord | None) -> str | None:
    """What pairing bought against the baseline, in words (None where not recorded)."""
    p = pairing_vs(v) if v is not None else None
    return pairing_text(p) if p is not None else None


def _better(values: dict[str, float], names: list[str], hib: bool) -> str | None:
    scored = [n for n in names if isinstance(values.get(n), (int, float))]
    if not scored:
        return None
    return max(scored, key=lambda n: values[n]) if hib else min(scored, key=lambda n: values[n])


# ------------------------------------------------------------------------------------------------- views
class _Index:
    """Rows of one snapshot, indexed for the per-adapter views."""

    def __init__(self, rows: dict[str, Any]) -> None:
        self.versions = {v.id: v for v in rows["versions"]}
        self.versions_of: dict[int, list] = defaultdict(list)  # adapter -> versions, latest first
        for v in sorted(rows["versions"], key=lambda v: (v.last_seen_at, v.id), reverse=True):
            self.versions_of[v.adapter_id].append(v)
        self.records: dict[int, DecisionRecord] = rows["records"]  # decision id -> its statistics, typed
        self.cands = {c.id: c for c in rows["extra_candidates"]} | {c.id: c for c in rows["candidates"]}
        self.by_decision: dict[int, list] = defaultdict(list)  # decision id -> the candidates it weighed
        for did, cs in rows["decision_candidates"].items():
            self.by_decision[did] = sorted(cs, key=lambda c: c.id)
        self.decisions: dict[int, list] = defaultdict(list)  # adapter -> decisions, newest first
        for d in sorted(rows["decisions"], key=lambda d: d.rank):
            self.decisions[d.adapter_id].append(d)
        self.evals: dict[tuple, Any] = {}  # (version, candidate|None, kind) -> latest evaluation
        self.evals_by_key: dict[tuple, Any] = {}  # (version, candidate|None, kind, evaluator key) -> evaluation
        for e in rows["evaluations"]:
            self.evals[(e.adapter_version_id, e.candidate_id, e.kind)] = e
            self.evals_by_key[(e.adapter_version_id, e.candidate_id, e.kind, e.evaluator_key)] = e
        self.spectra = {c.id: c for c in rows["spectra"]}
        self.runs: dict[int, list] = defaultdict(list)  # adapter -> adapter runs, newest first
        for r in sorted(rows["adapter_runs"], key=lambda r: r.id, reverse=True):
            v = self.versions.get(r.adapter_version_id)
            if v is not None:
                self.runs[v.adapter_id].append(r)
        self.messages = rows["failure_messages"]
        self.events: dict[int, list] = defaultdict(list)  # adapter -> events, oldest first
        for e in rows["events"]:
            self.events[e.adapter_id].append(e)
        self.pointers = {p.adapter_id: p for p in rows["pointers"]}
        self.review_of = {r.decision_id: r for r in rows["reviews"]}  # decision -> its review
        self.pending = {r.adapter_id: r for r in rows["reviews"] if r.state == "pending"}  # newest wins
        self.superseded: dict[int, list] = defaultdict(list)  # adapter -> superseded reviews, newest first
        for r in sorted(rows["reviews"], key=lambda r: r.id, reverse=True):
            if r.state == "superseded":
                self.superseded[r.adapter_id].append(r)
        self.arm_of = {d.id: self.records[d.id].promoted for d in rows["decisions"]}
        # Task score of each candidate and of each unedited version, as the gate saw it (oldest decision first,
        # so the latest decision of a version wins).
        # Candidates are reused across decisions (stage keys): a promoted candidate keeps the score of the decision
        # that promoted it, whatever later decisions (other benchmarks or limits) measured.
        self.cand_value: dict[int, float] = {}
        self.version_value: dict[int, float] = {}
        promoted_value: dict[int, float] = {}
        for d in sorted(rows["decisions"], key=lambda d: (d.created_at, d.id)):
            means = self.records[d.id].means
            if isinstance(means.get("baseline"), (int, float)):
                self.version_value[d.adapter_version_id] = means["baseline"]
            for c in self.by_decision[d.id]:
                arm = arm_name(c.policy, c.seed, c.is_control)
                if isinstance(means.get(arm), (int, float)):
                    self.cand_value[c.id] = means[arm]
                    if d.promoted_candidate_id == c.id:
                        promoted_value[c.id] = means[arm]
        self.cand_value.update(promoted_value)

    def review(self, r, now: datetime) -> dict[str, Any] | None:
        """A review (``promote: review``) as the views show it. A pending review past its window is shown as
        ``expired`` (``marked`` False: the registry marks it at the next run, list or approval)."""
        if r is None:
            return None
        overdue = r.state == "pending" and r.expires_at <= now
        return {"id": r.id, "decision_id": r.decision_id, "state": "expired" if overdue else r.state,
                "marked": not overdue, "candidate": self.arm_of.get(r.decision_id),
                "requested_by": r.requested_by, "requested_at": _iso(r.requested_at), "expires_at": _iso(r.expires_at),
                "decided_by": r.decided_by, "decided_at": _iso(r.decided_at), "reason": r.reason,
                "superseded_by": r.superseded_by_id}

    def record(self, d) -> DecisionRecord:
        """A decision's statistics as a typed record (:class:`tasks.decision.record.DecisionRecord`): the whole
        document for the itemised decisions, else the fields the database extracted for every decision
        (:func:`registry.read.indexed_record`)."""
        return self.records[d.id]

    def sha(self, version_id: int | None) -> str:
        v = self.versions.get(version_id)
        return v.content_sha256[:8] if v is not None else "?"

    def state_label(self, candidate_id: int | None, version_id: int | None) -> str:
        """``smooth_abs @ 1a2b3c4d`` or ``unedited @ 1a2b3c4d``."""
        c = self.cands.get(candidate_id) if candidate_id is not None else None
        what = arm_name(c.policy, c.seed, c.is_control) if c is not None else (
            "unedited" if candidate_id is None else f"candidate {candidate_id}")
        return f"{what} @ {self.sha(version_id)}"

    def state_value(self, candidate_id: int | None, version_id: int | None) -> float | None:
        if candidate_id is not None:
            return self.cand_value.get(candidate_id)
        return self.version_value.get(version_id)


def _eval_of(ix: _Index, d, candidate_id: int | None, kind: str):
    """The evaluation decision ``d`` weighed for a subject: by the evaluator key its statistics name (stage-keyed
    decisions reuse candidates, so a candidate can have several), else the subject's latest."""
    keys = ix.record(d).keys or EvidenceKeys()
    ekey = keys.task_evaluation if kind == "task" else keys.guard_evaluation
    if ekey:
        e = ix.evals_by_key.get((d.adapter_version_id, candidate_id, kind, ekey))
        if e is None and kind == "guard" and keys.guard_evaluation == keys.task_evaluation:
            e = ix.evals_by_key.get((d.adapter_version_id, candidate_id, "task", ekey))
        if e is not None:
            return e
    return ix.evals.get((d.adapter_version_id, candidate_id, kind))


def _baseline_eval(ix: _Index, d, cands, kind: str):
    """The unedited version's evaluation this decision used: the one scored by the same evaluator (key) as the
    decision's candidates. A version re-decided under another configuration has one baseline evaluation per
    evaluator, and the latest one would give an older decision the wrong interval or benchmark."""
    if (ix.record(d).keys or EvidenceKeys()).task_evaluation:
        return _eval_of(ix, d, None, kind)
    for c in cands:
        e = ix.evals.get((d.adapter_version_id, c.id, kind))
        if e is not None:
            base = ix.evals_by_key.get((d.adapter_version_id, None, kind, e.evaluator_key))
            if base is not None:
                return base
    return ix.evals.get((d.adapter_version_id, None, kind))


def _night(ix: _Index, d) -> dict[str, Any]:
    """One decision with every candidate's scores, deltas, p-values and verdict."""
    rec = ix.record(d)
    hib = rec.higher_is_better
    conf = float(rec.config.get("confidence", 0.95))
    means, gmeans = rec.means, rec.guard_means or {}
    verdicts = {v.name: v for v in rec.verdicts}
    cands = {arm_name(c.policy, c.seed, c.is_control): c for c in ix.by_decision[d.id]}
    controls = [a for a, c in cands.items() if c.is_control]
    best_control = next((v.control_name for v in verdicts.values() if v.control_name), None)
    best_control = best_control or _better(means, controls, hib)
    base_task = _baseline_eval(ix, d, cands.values(), "task")
    base_guard = _baseline_eval(ix, d, cands.values(), "guard")
    promoted_arm = rec.promoted if d.promoted else None
    order = ["baseline"] + [a for a, c in cands.items() if not c.is_control] + controls
    order += [a for a in verdicts if a not in order]
    task_bounds = None if rec.metric == "continuous" else RATE_DIFF  # nats have no range to clip to
    rows = []
    for arm in order:
        c = cands.get(arm)
        v = verdicts.get(arm)
        if arm not in means and v is None:
            continue  # planned but never evaluated
        cid = c.id if c is not None else None
        te = base_task if arm == "baseline" else _eval_of(ix, d, cid, "task")
        ge = base_guard if arm == "baseline" else _eval_of(ix, d, cid, "guard")
        n_task = (v and v.vs_baseline and v.vs_baseline.n) or (te.n if te is not None else None)
        n_guard = (v and v.guard_test and v.guard_test.n) or (ge.n if ge is not None else None) or n_task
        task_mean = means.get(arm, v.task_mean if v is not None else te.value if te is not None else None)
        guard_mean = gmeans.get(arm, ge.value if ge is not None else None)
        guard = _test(v.guard_test) if v is not None else None
        if guard is None and v is not None and v.guard_delta is not None:
            guard = {"delta": v.guard_delta, "lo": None, "hi": None, "p": None, "n": None}
        rows.append({
            "arm": arm, "policy": (v.policy if v is not None else None) or (c.policy if c is not None else "baseline"),
            "role": "baseline" if arm == "baseline" else ("control" if c is not None and c.is_control else "candidate"),
            "candidate_id": cid,
            "task": mean_ci(task_mean, te.stderr if te is not None else None, n_task, conf),
            "guard": mean_ci(guard_mean, ge.stderr if ge is not None else None, n_guard, conf),
            "vs_baseline": _test(v and v.vs_baseline, task_bounds),
            "vs_control": _test(v and v.vs_control, task_bounds),
            "vs_scalar": _test(v and v.vs_scalar, task_bounds),
            "control": v and v.control_name, "guard_delta": guard,
            "passed": v.passed if v is not None else None, "promoted": arm == promoted_arm,
            "verdict": v.verdict if v is not None else None,  # recorded before verdicts: promote if it passed
            "n_needed": v and v.n_needed,
            "best_control": arm == best_control, "reason": v and v.reason,
            "pairing": _pairing(v),
            "failed": [what for what, ok in (("vs unedited", v.beats_baseline),
                                             ("vs random control", v.beats_control),
                                             ("IFEval guard", v.guard_ok)) if ok is False] if v is not None else [],
        })
    return {
        "decision_id": d.id, "at": _iso(d.created_at), "t": _epoch(d.created_at), "run_id": d.run_id,
        "version_sha": ix.sha(d.adapter_version_id), "config_hash": d.config_hash[:8], "promoted": bool(d.promoted),
        "promoted_arm": promoted_arm, "sentence": d.sentence,
        "verdict": rec.verdict, "n_needed": rec.n_needed,
        "higher_is_better": hib, "confidence": conf,
        "gate": rec.config, "rows": rows,
        "decision_metric": rec.metric,
        "benchmark": base_task.benchmark if base_task is not None else None,
        "metric": base_task.metric if base_task is not None else None,
        "guard_benchmark": base_guard.benchmark if base_guard is not None else None,
        "guard_metric": base_guard.metric if base_guard is not None else None,
    }


def _trend(ix: _Index, adapter_id: int, decisions: list, now: datetime) -> list[dict]:
    """One point per decision, oldest first: baseline, best guided candidate, best control, and what production
    served after that night (the pointer's state until the next decision)."""
    events = ix.events.get(adapter_id, [])
    out = []
    chrono = list(reversed(decisions))
    for i, d in enumerate(chrono):
        rec = ix.record(d)
        hib = rec.higher_is_better
        means = rec.means
        cands = ix.by_decision[d.id]
        guided = [arm_name(c.policy, c.seed, c.is_control) for c in cands if not c.is_control]
        controls = [arm_name(c.policy, c.seed, c.is_control) for c in cands if c.is_control]
        best, ctrl = _better(means, guided, hib), _better(means, controls, hib)
        until = chrono[i + 1].created_at if i + 1 < len(chrono) else now
        state = None
        for e in events:
            if e.at <= until:
                state = (e.to_candidate_id, e.to_version_id)
        if state is None:  # nothing promoted yet: production is the unedited version
            state = (None, d.adapter_version_id)
        promoted = rec.promoted if d.promoted else None
        out.append({
            "t": _epoch(d.created_at), "at": _iso(d.created_at), "decision_id": d.id,
            "version_sha": ix.sha(d.adapter_version_id), "baseline": means.get("baseline"),
            "best": means.get(best) if best else None, "best_arm": best,
            "control": means.get(ctrl) if ctrl else None, "control_arm": ctrl,
            "promoted_arm": promoted, "promoted_value": means.get(promoted) if promoted else None,
            "production": ix.state_value(*state), "production_label": ix.state_label(*state),
        })
    return out


def _spectrum(ix: _Index, latest) -> tuple[dict | None, dict | None]:
    """σ before/after of every candidate of the latest decision, and the version's sensitivity profile."""
    if latest is None:
        return None, None
    cands = [c for c in ix.by_decision[latest.id] if c.id in ix.spectra]
    rec = ix.record(latest)
    modules: list[str] = []
    panels, sens = [], None
    for c in cands:
        spec = (ix.spectra[c.id].spectrum_json or {}).get("modules") or {}
        for name in spec:
            if name not in modules:
                modules.append(name)
        panels.append({"arm": arm_name(c.policy, c.seed, c.is_control), "policy": c.policy,
                       "is_control": c.is_control, "modules": spec,
                       "summary": (ix.spectra[c.id].spectrum_json or {}).get("summary") or {}})
        if sens is None and ix.spectra[c.id].sensitivity_json:
            sens = ix.spectra[c.id].sensitivity_json
    if not panels:
        return None, None
    guided = [p for p in panels if not p["is_control"]]
    focus = rec.promoted if latest.promoted else _better(rec.means, [p["arm"] for p in guided], rec.higher_is_better)
    spectrum = {
        "decision_id": latest.id, "version_sha": ix.sha(latest.adapter_version_id), "module_names": modules,
        "modules": [short_module(m) for m in modules], "focus": focus or panels[0]["arm"],
        "candidates": [{"arm": p["arm"], "policy": p["policy"], "is_control": p["is_control"],
                        "summary": p["summary"],
                        "before": [p["modules"].get(m, {}).get("before") or [] for m in modules],
                        "after": [p["modules"].get(m, {}).get("after") or [] for m in modules]} for p in panels],
    }
    sensitivity = None
    if sens:
        names = [m for m in modules if m in sens] + [m for m in sens if m not in modules]
        sensitivity = {"modules": [short_module(m) for m in names], "module_names": names,
                       "magnitude": [sens[m].get("magnitude") or [] for m in names],
                       "sign_agreement": [sens[m].get("sign_agreement") or [] for m in names]}
    return spectrum, sensitivity


def _adapter(ix: _Index, a, detail_runs: int, now: datetime) -> dict[str, Any]:
    decisions = ix.decisions.get(a.id, [])
    runs = ix.runs.get(a.id, [])
    versions = ix.versions_of.get(a.id, [])
    pointer = ix.pointers.get(a.id)
    if pointer is not None:
        production = {"implicit": False, "candidate_id": pointer.candidate_id,
                      "label": ix.state_label(pointer.candidate_id, pointer.adapter_version_id),
                      "since": _iso(pointer.updated_at),
                      "value": ix.state_value(pointer.candidate_id, pointer.adapter_version_id)}
    elif versions:
        production = {"implicit": True, "candidate_id": None, "label": ix.state_label(None, versions[0].id),
                      "since": None, "value": ix.state_value(None, versions[0].id)}
    else:
        production = None
    failures = [{"run_id": r.run_id, "at": _iso(r.ended_at or r.started_at),
                 "version_sha": ix.sha(r.adapter_version_id),
                 "error_type": r.error_type, "summary": error_summary(ix.messages.get(r.id)),
                 "message": ix.messages.get(r.id) or ""} for r in runs if r.status == "failed"]
    if a.fetch_error:  # the source itself could not be fetched on the latest scan (no run to hang it on)
        failures.insert(0, {"run_id": None, "at": _iso(a.fetch_error_at), "version_sha": "source",
                            "error_type": "fetch failed", "summary": error_summary(a.fetch_error),
                            "message": a.fetch_error})
    last = runs[0] if runs else None
    nights = [_night(ix, d) for d in decisions[:detail_runs]]
    spectrum, sensitivity = _spectrum(ix, decisions[0] if decisions else None)
    events = [{"id": e.id, "kind": e.kind, "actor": e.actor, "at": _iso(e.at),
               "from": ix.state_label(e.from_candidate_id, e.from_version_id),
               "to": ix.state_label(e.to_candidate_id, e.to_version_id), "reason": e.reason,
               "decision_id": e.decision_id, "reverts": e.reverts_event_id}
              for e in reversed(ix.events.get(a.id, [])[-EVENTS_CAP:])]
    metric = next(({"benchmark": n["benchmark"], "metric": n["metric"], "higher_is_better": n["higher_is_better"],
                    "guard_benchmark": n["guard_benchmark"], "guard_metric": n["guard_metric"]}
                   for n in nights if n["benchmark"]), None)
    return {
        "name": a.name, "slug": slug(a.name), "family": a.task_family, "enabled": bool(a.enabled),
        "source_uri": a.source_uri, "base_model": a.base_model_id, "benchmark_override": a.benchmark_override,
        "n_versions": len(versions),
        "latest_version": ({"id": versions[0].id, "sha": versions[0].content_sha256[:8],
                            "revision": versions[0].resolved_revision, "seen": _iso(versions[0].last_seen_at),
                            "local_path": versions[0].local_path} if versions else None),
        "production": production,
        "last_run": ({"run_id": last.run_id, "status": last.status, "started": _iso(last.started_at),
                      "ended": _iso(last.ended_at), "version_sha": ix.sha(last.adapter_version_id),
                      "error_type": last.error_type, "error": error_summary(ix.messages.get(last.id))}
                     if last is not None else None),
        "last_decision": (_last_decision(decisions[0], ix.record(decisions[0]),
                                         ix.review(ix.review_of.get(decisions[0].id), now)) if decisions else None),
        "review": ix.review(ix.pending.get(a.id), now),
        "superseded_reviews": [ix.review(r, now) for r in ix.superseded[a.id][:3]],  # each says why
        "metric": metric, "trend": _trend(ix, a.id, decisions, now), "nights": nights,
        "spectrum": spectrum, "sensitivity": sensitivity, "events": events,
        "failures": failures[:10], "n_failures": len(failures),
        "fetch_error": error_summary(a.fetch_error) if a.fetch_error else None,
    }


# ------------------------------------------------------------------------------------------- diagnostics
def _last_decision(d, rec: DecisionRecord, review: dict | None) -> dict[str, Any]:
    """``review``: the decision's review (``promote: review``), which says whether a passing decision moved
    production (approved) or waits (pending), or never will (expired, superseded)."""
    verdict = rec.verdict
    arm = rec.promoted if d.promoted else None
    n_needed = rec.n_needed if verdict == "hold" else None
    label = verdict_label(verdict, n_needed, arm)
    if review is not None and review["state"] != "approved":
        label += " awaiting review" if review["state"] == "pending" else f" (review {review['state']})"
    return {"id": d.id, "at": _iso(d.created_at), "promoted": bool(d.promoted), "sentence": d.sentence, "arm": arm,
            "verdict": verdict, "n_needed": n_needed, "label": label, "review": review}


def _summary(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """Mean and a normal-approximation 95% interval of the mean (None where undefined), clipped to the range of a
    difference of rates (:data:`RATE_DIFF`): the values are gains and IFEval drops."""
    if not values:
        return None, None, None
    m = fmean(values)
    if len(values) < 2:
        return m, None, None
    half = 1.96 * stdev(values) / math.sqrt(len(values))
    return m, max(m - half, RATE_DIFF[0]), min(m + half, RATE_DIFF[1])


def diagnostics(latest: list[tuple[str, DecisionRecord]]) -> dict[str, Any]:
    """The paper's Fig. 3 (guided vs random) and Fig. 4 (reward vs risk) from each adapter's latest decision.

    Args:
        latest: ``(adapter name, decision record)`` per adapter.

    Returns:
        ``reward_risk``: points ``{adapter, policy, gain, risk, promoted}`` (gain = task improvement over the
        unedited adapter, risk = IFEval drop, both fractions, sign-adjusted for lower-is-better metrics) and a
        per-policy summary; ``guided_random``: points ``{adapter, policy, control, x, y}`` with x the best
        random control's gain and y the policy's gain, and per policy how many lie above the diagonal.
    """
    rr, gr = [], []
    for name, rec in latest:
        sign = 1.0 if rec.higher_is_better else -1.0
        means, gmeans = rec.means, rec.guard_means or {}
        base, gbase = means.get("baseline"), gmeans.get("baseline")
        controls = set()
        for v in rec.verdicts:
            delta = v.vs_baseline.delta if v.vs_baseline is not None else None
            gain = sign * (float("nan") if delta is None else delta)
            risk = -v.guard_delta if v.guard_delta is not None else None
            if math.isfinite(gain):
                rr.append({"adapter": name, "policy": v.policy or v.name, "gain": gain, "risk": risk,
                           "promoted": v.name == rec.promoted})
            ctrl = v.control_name
            if ctrl and isinstance(means.get(ctrl), (int, float)) and base is not None and math.isfinite(gain):
                gr.append({"adapter": name, "policy": v.policy or v.name, "control": ctrl,
                           "x": sign * (means[ctrl] - base), "y": gain})
                controls.add(ctrl)
        for ctrl in sorted(controls):  # the random control itself, as the paper's random_index point
            if base is None:
                continue
            risk = (gbase - gmeans[ctrl]) if gbase is not None and ctrl in gmeans else None
            rr.append({"adapter": name, "policy": ctrl.rsplit("-s", 1)[0], "gain": sign * (means[ctrl] - base),
                       "risk": risk, "promoted": False})
    policies = sorted({p["policy"] for p in rr})
    rr_summary = []
    for pol in policies:
        pts = [p for p in rr if p["policy"] == pol]
        g, glo, ghi = _summary([p["gain"] for p in pts])
        r, rlo, rhi = _summary([p["risk"] for p in pts if p["risk"] is not None])
        rr_summary.append({"policy": pol, "n": len(pts), "gain": g, "gain_lo": glo, "gain_hi": ghi,
                           "risk": r, "risk_lo": rlo, "risk_hi": rhi})
    gr_summary = []
    for pol in sorted({p["policy"] for p in gr}):
        pts = [p for p in gr if p["policy"] == pol]
        above = sum(1 for p in pts if p["y"] > p["x"])
        gr_summary.append({"policy": pol, "n": len(pts), "above": above,
                           "mean_margin": fmean(p["y"] - p["x"] for p in pts)})
    return {"reward_risk": {"points": rr, "policies": rr_summary},
            "guided_random": {"points": gr, "policies": gr_summary}}


# ------------------------------------------------------------------------------------------------- entry
def collect(registry, *, history: int = HISTORY, detail_runs: int = DETAIL_RUNS, only: str | None = None,
            now: datetime | None = None) -> dict[str, Any]:
    """Everything the dashboard shows, from one read-only snapshot of the registry.

    Args:
        registry: A ``registry.repository.Registry`` (only its ``engine`` is used, read-only).
        history: Decisions per adapter in trends and diagnostics (older ones are not read).
        detail_runs: Decisions per adapter shown with every candidate's numbers.
        only: Restrict to the adapter with this name (a single adapter's section / markdown).
        now: The snapshot's time (default: now, UTC).

    Returns:
        A dict of plain values: ``summary``, ``runs``, ``failures``, ``adapters`` (one view per adapter) and
        ``diagnostics``; see the module docstring for units. ``what_wins`` is the fleet report's typed rows
        (:class:`tasks.decision.fleet_report.WhatWinsRow`, differences in points), as ``spectral-surgery report``
        computes them.
    """
    now = now or datetime.now(UTC)
    rows = dashboard_rows(registry, history=history, detail_runs=detail_runs, only=only)
    ix = _Index(rows)
    names = {a.id: a.name for a in rows["adapters"]}
    adapters = [_adapter(ix, a, detail_runs, now) for a in rows["adapters"]]
    seen: set[str] = set()
    for view in adapters:  # distinct anchors even when two names sanitise alike ("a/b", "a-b")
        while view["slug"] in seen:
            view["slug"] += "-"
        seen.add(view["slug"])
    latest = [(names[aid], ix.record(ds[0])) for aid, ds in ix.decisions.items() if aid in names and ds]
    families = {a.id: a.task_family for a in rows["adapters"]}
    run_seconds = {(r.run_id, r.adapter_version_id): (r.ended_at - r.started_at).total_seconds()
                   for r in rows["adapter_runs"] if r.started_at is not None and r.ended_at is not None}
    wins = what_wins([LatestDecision(adapter=names[aid], family=families[aid], decision_id=ds[0].id,
                                     at=ds[0].created_at, record=ix.record(ds[0]),
                                     seconds=run_seconds.get((ds[0].run_id, ds[0].adapter_version_id)),
                                     costs=rows["costs"].get(ds[0].id, {}))
                      for aid, ds in ix.decisions.items() if aid in names and ds])
    per_run: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows["adapter_runs"]:
        per_run[r.run_id][r.status] += 1
    for d in rows["decisions"]:
        if d.promoted and d.run_id is not None:
            per_run[d.run_id]["promoted"] += 1
    runs = [{"id": r.id, "started": _iso(r.started_at), "ended": _iso(r.ended_at), "status": r.status,
             "t": _epoch(r.started_at), "completed": per_run[r.id]["completed"], "failed": per_run[r.id]["failed"],
             "running": per_run[r.id]["running"] + per_run[r.id]["pending"], "promoted": per_run[r.id]["promoted"]}
            for r in reversed(rows["runs"])]
    failures = sorted(({"adapter": v["name"], "slug": v["slug"], **f} for v in adapters for f in v["failures"]),
                      key=lambda f: f["at"] or "", reverse=True)[:FAILURES_CAP]
    summary = {
        "adapters": len(adapters), "enabled": sum(1 for v in adapters if v["enabled"]),
        "edited_in_production": sum(1 for v in adapters if v["production"] and v["production"]["candidate_id"]),
        "promotions": sum(1 for e in rows["events"] if e.kind in ("promotion", "approval")),  # approved: reviewed
        "overrides": sum(1 for e in rows["events"] if e.kind == "manual_override"),
        "rollbacks": sum(1 for e in rows["events"] if e.kind == "rollback"),
        "awaiting_review": sum(1 for v in adapters if v["review"] and v["review"]["state"] == "pending"),
        "failing": sum(1 for v in adapters
                       if (v["last_run"] and v["last_run"]["status"] == "failed") or v["fetch_error"]),
        "last_run": runs[-1] if runs else None,
    }
    return {"generated_at": _iso(now), "registry_url": registry.engine.url.render_as_string(hide_password=True),
            "history": history, "detail_runs": detail_runs, "summary": summary, "runs": runs,
            "failures": failures, "adapters": adapters, "diagnostics": diagnostics(latest), "what_wins": wins,
            "night": night_window(rows["adapter_runs"], ix, names)}


def night_window(adapter_runs, ix: _Index, names: dict[int, str]) -> dict[str, Any] | None:
    """The latest windowed night, planned against actual per adapter (None: no run had a window).

    Returns:
        ``{"run_id", "rows": [{"adapter", "status", "forecast_s", "actual_s", "error", "reason"}], "forecast_s",
        "actual_s", "error"}``: ``error`` is ``(actual − forecast) / forecast`` (per adapter; in total over the
        adapters that ran).
    """
    planned = [r for r in adapter_runs if r.forecast_seconds is not None]
    if not planned:
        return None
    run_id = max(r.run_id for r in planned)
    rows = []
    for r in planned:
        v = ix.versions.get(r.adapter_version_id)
        if r.run_id != run_id or v is None or v.adapter_id not in names:
            continue
        actual = r.wall_seconds if r.status in ("completed", "failed") else None
        rows.append({"adapter": names[v.adapter_id], "status": r.status, "forecast_s": r.forecast_seconds,
                     "actual_s": actual, "reason": r.plan_reason,
                     "error": None if actual is None else (actual - r.forecast_seconds) / r.forecast_seconds})
    ran = [r for r in rows if r["actual_s"] is not None]
    total_f, total_a = sum(r["forecast_s"] for r in ran), sum(r["actual_s"] for r in ran)
    return {"run_id": run_id, "rows": sorted(rows, key=lambda r: r["adapter"]), "forecast_s": total_f,
            "actual_s": total_a, "error": (total_a - total_f) / total_f if ran and total_f > 0 else None}
