"""Registries for the dashboard tests: one filled by the REAL nightly flow on tiny adapters, and a generated
fleet of hundreds of adapters × weeks of nights for the scale test.

The real one runs ``flows.refine_fleet.run_nightly`` twice (two configurations, one adapter changing content in
between) with the fake evaluator, plus a manual override and a rollback through the Registry API, so every view
of the dashboard has real rows to show: promotions, refusals, a failing adapter, an adapter that was never
fetched, an override and its rollback.

The generated one writes what the nightly flow would write, night by night. Rows with pointer semantics (adapter
registration, promotions, manual overrides, rollbacks) go through the Registry API under a simulated clock;
the bulk evidence (versions, runs, candidates, evaluations with per-document outcomes, guard results, decisions)
is inserted with the registry's own models in one transaction per night, because ~130,000 single-row
Registry calls would take minutes. Decision statistics come from the real gate (``tasks.decision.gate.decide``) on
synthetic paired outcomes.
"""

from __future__ import annotations

import base64
import gc
import gzip
import hashlib
import json
import random
import re
import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

from sqlalchemy import func, insert, select

from tests import tiny
from tests.records import stored

POLICIES = ("abs_select", "smooth_abs", "grad_direction")
CONTROL = "random_index-s42"
# the page's sections, in the navigation's order
SECTIONS = ("fleet", "evidence", "failures", "diagnostics", "reward-risk", "guided-random", "alignment", "adapters")
# Mean task gain / IFEval change of each policy in the generated fleet (roughly the paper's picture).
EFFECTS = {"abs_select": (0.02, 0.04, 0.0, 0.02), "smooth_abs": (0.03, 0.03, -0.005, 0.01),
           "grad_direction": (0.04, 0.08, -0.05, 0.05), CONTROL: (0.0, 0.02, 0.005, 0.01)}

_BUILT: dict[str, tuple] = {}


# ------------------------------------------------------------------------------------------ page checks
def unpack_sections(html: str) -> dict[str, str]:
    """Adapter section id -> its inner HTML (the page ships each body gzip+base64 and inflates it on opening)."""
    out = {}
    for m in re.finditer(r'<details class="adapter" id="([^"]+)">.*?data-gz="([A-Za-z0-9+/=]+)"', html, re.S):
        out[m.group(1)] = gzip.decompress(base64.b64decode(m.group(2))).decode("utf-8")
    return out


def chart_specs(section: str) -> list[tuple[str, dict]]:
    """``(kind, spec)`` of every chart a section ships as JSON for the page's script to draw
    (:mod:`flows.dashboard.charts_js`), in page order."""
    return [(m.group(1), json.loads(m.group(2).replace("<\\/", "</"))) for m in re.finditer(
        r'<script type="application/json" class="js-chart" data-chart="([a-z]+)">(.*?)</script>', section, re.S)]


class _Refs(HTMLParser):
    """Every URL-bearing attribute of a document, and the tags that could load something."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        for k in ("src", "href", "xlink:href", "action", "poster", "srcset", "data", "formaction"):
            if a.get(k):
                self.urls.append((tag, k, a[k]))

    handle_startendtag = handle_starttag


def external_references(html: str) -> list[str]:
    """Everything in ``html`` that would reach the network: absolute or protocol-relative URLs in attributes,
    CSS ``url()``/``@import`` of such URLs, script or stylesheet files."""
    p = _Refs()
    p.feed(html)
    bad = []
    for tag, attr, url in p.urls:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("", "data") or url.strip().startswith("//"):
            bad.append(f"<{tag} {attr}={url[:80]!r}>")
    bad += [f"<script src={a['src']!r}>" for tag, a in p.tags if tag == "script" and a.get("src")]
    bad += [f"<link rel={a.get('rel')!r} href={a.get('href', '')[:60]!r}>" for tag, a in p.tags
            if tag == "link" and not (a.get("href") or "").startswith("data:")]
    bad += re.findall(r"url\(\s*['\"]?(?:https?:)?//[^)]*\)", html)
    bad += re.findall(r"@import[^;]*", html)
    return bad


# ------------------------------------------------------------------------------------------- real flow
def build_flow_registry(root: Path, base: Path):
    """Two real nightly runs on tiny adapters; memoised per process (both dashboard test modules share it).

    Returns:
        ``(registry, info)`` with info keys ``root``, ``data_dir``, ``adapters`` (name -> dir), ``seconds``.
    """
    if "flow" in _BUILT:
        return _BUILT["flow"]
    from spectral_surgery.flows import worker
    from spectral_surgery.flows.refine_fleet import run_nightly
    from spectral_surgery.tasks.config import CalibConfig, SurgeryConfig
    from spectral_surgery.tasks.run_config import LadderConfig, RunConfig

    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    dirs = {"ad-win": tiny.save_adapter(base, root / "ad-win", seed=1),
            "ad-mixed": tiny.save_adapter(base, root / "ad-mixed", seed=2),
            # Only q_proj is adapted: no o_proj/down_proj to edit, so its refinement fails (recorded, not raised).
            "ad-bad": tiny.save_adapter(base, root / "ad-bad", seed=3, targets=["q_proj"])}
    calib = root / "calib.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in tiny.calib_rows(8)))
    # The views under test are the candidates' and one random control's; the ladder's rungs are the flow's (tested
    # in tests/flows/test_nightly.py), so this registry is built without them, at one control seed.
    surgery = SurgeryConfig(calib=CalibConfig(n_samples=4, batch_size=4), random_control_seeds=(42,))
    # Every arm guarded, so each view has each subject's IFEval score (tests/flows/test_guard_arms.py renders the
    # views of a fleet guarded with the default guard_arms: promotable).
    common = dict(data_dir=root / "data", evaluator="fake", calib_source=str(calib), surgery=surgery,
                  ladder=LadderConfig(global_scalar=False, zero_rebuild=False, bare_base=False), guard_arms="all")
    # Night 1: the fake evaluator scripts smooth_abs to win, so there are promotions.
    night1 = RunConfig(**common, evaluator_options={"n_docs": 40, "rates": {
        "smooth_abs": 0.9, "baseline": 0.3, CONTROL: 0.3}})
    reg = worker.registry(night1)
    reg.register_adapter("ad-win", str(dirs["ad-win"]), str(base), "math")
    reg.register_adapter("ad-mixed", str(dirs["ad-mixed"]), str(base), "commonsense")
    reg.register_adapter("ad-bad", str(dirs["ad-bad"]), str(base), "math")
    reg.register_adapter("ad-gone", str(root / "never-there"), str(base), "instruction")  # never fetched
    run_nightly(night1)
    # A person overrides ad-mixed to another candidate, then rolls the override back.
    version = reg.list_versions("ad-mixed")[0]
    other = next(c for c in reg.list_candidates(version.id) if c.policy == "abs_select")
    reg.manual_promote(other.id, actor="alice", reason="prefer abs_select for the demo")
    reg.rollback("ad-mixed", actor="bob", reason="undo the demo override")
    # Night 2: ad-win has new content (a new version); a new configuration re-refines everyone.
    tiny.save_adapter(base, root / "ad-win", seed=11)
    night2 = RunConfig(**common, evaluator_options={"n_docs": 40})
    run_nightly(night2)
    info = {"root": root, "data_dir": root / "data", "adapters": dirs, "seconds": time.perf_counter() - t0}
    _BUILT["flow"] = (reg, info)
    return reg, info


def copy_registry(registry, dest: Path):
    """A writable copy of a SQLite registry in ``dest`` (SQLite's online backup: consistent even under WAL), so a
    test can change it without touching the shared one."""
    import sqlite3

    from spectral_surgery.registry.repository import Registry

    dest.mkdir(parents=True, exist_ok=True)
    src_path = registry.engine.url.database
    with sqlite3.connect(src_path) as src, sqlite3.connect(dest / "registry.db") as dst:
        src.backup(dst)
    return Registry.open(None, dest)


def build_generated_registry(root: Path, base: Path, **kw):
    """:func:`generate_fleet` (200 adapters × 30 nights by default) into a fresh registry under ``root``, with one
    real tiny adapter (``fleet-real``) for the alignment diagnostic; memoised per process.

    Returns:
        ``(registry, counts)``.
    """
    if "generated" in _BUILT:
        return _BUILT["generated"]
    from spectral_surgery.registry.repository import Registry

    (root / "data").mkdir(parents=True, exist_ok=True)
    real = tiny.save_adapter(base, root / "fleet-real", seed=7)
    reg = Registry.open(None, root / "data")
    counts = generate_fleet(reg, real_adapter=("fleet-real", real), **kw)
    _BUILT["generated"] = (reg, counts)
    return reg, counts


# ------------------------------------------------------------------------------------------ generated
def _outcomes(rng: random.Random, u: list[float], p: float, noise: float = 0.08) -> list[float]:
    """Paired 0/1 outcomes: document i succeeds when u_i < p (shared across arms), flipped with prob ``noise``."""
    return [float((ui < p) != (rng.random() < noise)) for ui in u]


def decision_pool(size: int, n_docs: int, seed: int) -> list[dict]:
    """Real gate decisions (``tasks.decision.gate.decide``) on synthetic paired outcomes, sorted by baseline score."""
    from spectral_surgery.tasks.decision.gate import ArmOutcomes, GateConfig, decide

    rng = random.Random(seed)
    cfg = GateConfig(n_boot=200)
    pool = []
    for _ in range(size):
        base, gbase = rng.uniform(0.25, 0.75), rng.uniform(0.45, 0.8)
        u, ug = [rng.random() for _ in range(n_docs)], [rng.random() for _ in range(n_docs)]
        arms = {"baseline": (_outcomes(rng, u, base), _outcomes(rng, ug, gbase))}
        for arm, (m, sd, gm, gsd) in EFFECTS.items():
            arms[arm] = (_outcomes(rng, u, base + rng.gauss(m, sd)), _outcomes(rng, ug, gbase + rng.gauss(gm, gsd)))
        outs = {a: ArmOutcomes(a, a.split("-s")[0] if a != "baseline" else "baseline", a == CONTROL, t, g)
                for a, (t, g) in arms.items()}
        d = decide(outs["baseline"], [outs[p] for p in POLICIES], [outs[CONTROL]], cfg)
        stats = stored(d, means={a: sum(t) / n_docs for a, (t, _) in arms.items()},
                       guard_means={a: sum(g) / n_docs for a, (_, g) in arms.items()})
        docs = {a: ([[str(j), v] for j, v in enumerate(t)], [[str(j), v] for j, v in enumerate(g)])
                for a, (t, g) in arms.items()}  # built once per entry and shared by every row that uses it
        pool.append({"stats": stats, "arms": arms, "docs": docs, "promoted": d.promoted,
                     "sentence": d.sentence})
    return sorted(pool, key=lambda p: p["stats"]["means"]["baseline"])


def _spectrum(rng: random.Random, policy: str, layers: int, rank: int) -> tuple[dict, dict]:
    sigma_scale = rng.uniform(0.5, 3.0)
    modules, sens = {}, {}
    for layer in range(layers):
        for kind, part in (("o_proj", "self_attn"), ("down_proj", "mlp")):
            name = f"base_model.model.model.layers.{layer}.{part}.{kind}"
            before = sorted((sigma_scale * rng.lognormvariate(0, 0.5) / (k + 1) ** 0.5 for k in range(rank)),
                            reverse=True)
            if policy.startswith("random_index"):
                factors = [rng.choice((0.8, 1.0, 1.25)) for _ in range(rank)]
            else:
                spread = {"abs_select": 0.2, "smooth_abs": 0.1, "grad_direction": 0.35}.get(policy, 0.1)
                factors = [max(0.05, rng.gauss(1.0, spread)) for _ in range(rank)]
            modules[name] = {"before": [round(s, 5) for s in before],
                             "after": [round(s * f, 5) for s, f in zip(before, factors)]}
            sens[name] = {"magnitude": [round(rng.expovariate(1.0) * 1e-3, 7) for _ in range(rank)],
                          "sign_agreement": [round(rng.uniform(0.4, 1.0), 3) for _ in range(rank)]}
    summary = {"modules_edited": len(modules), "scalars_edited": len(modules) * rank}
    return {"summary": summary, "modules": modules}, sens


def generate_fleet(registry, *, adapters: int = 200, nights: int = 30, n_docs: int = 100, layers: int = 8,
                   rank: int = 16, full_spectra_nights: int = 2, fail_rate: float = 0.02, seed: int = 0,
                   real_adapter: tuple[str, Path] | None = None) -> dict:
    """Fill an empty registry with ``adapters`` × ``nights`` of nightly-flow history.

    Args:
        registry: A migrated, empty ``Registry``.
        full_spectra_nights: Nights (latest first) whose candidates carry spectra and sensitivities of every
            module; older candidates carry 2 modules (the dashboard reads only each adapter's latest decision's,
            and full spectra for all 24,000 candidates would make a ~200 MB test database).
        real_adapter: ``(adapter name, dir)``: that adapter's latest version points at real files (and has their
            content hash), so the alignment diagnostic has something to compute.

    Returns:
        Row counts and the seconds taken.
    """
    t0 = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of small containers and no cycles: the collector would only rescan them over and over
    try:
        return _generate(registry, adapters, nights, n_docs, layers, rank, full_spectra_nights, fail_rate, seed,
                         real_adapter, t0)
    finally:
        if gc_was_enabled:
            gc.enable()


def _generate(registry, adapters, nights, n_docs, layers, rank, full_spectra_nights, fail_rate, seed, real_adapter,
              t0) -> dict:
    from spectral_surgery.registry.db import session_scope
    from spectral_surgery.registry.models import (AdapterRun, AdapterVersion, Candidate, Decision, Evaluation,
                                                  GuardResult,
                                 RefinementRun)
    from spectral_surgery.tasks.adapter_io import adapter_content_sha256

    from tests.registry.artifacts import artifact

    rng = random.Random(seed)
    pool = decision_pool(256, n_docs, seed)
    # Every generated candidate points at one small real adapter directory: promotions verify that the files exist
    # (no sha256 is recorded for them, so only existence and readability are checked).
    stub, _ = artifact("dashboard-generated-candidates")
    # A bank of spectra per policy (full: every module; reduced: one layer), sampled per candidate.
    bank = {(p, full): [_spectrum(rng, p, layers if full else 1, rank) for _ in range(24)]
            for p in (*POLICIES, "random_index") for full in (True, False)}
    start = datetime.now(UTC).replace(hour=2, minute=0, second=0, microsecond=0) - timedelta(days=nights)
    families = ("math", "code", "instruction", "commonsense")
    names = [f"fleet-{i:03d}" for i in range(adapters)]
    if real_adapter is not None:
        names[0] = real_adapter[0]
    for i, name in enumerate(names):
        registry.register_adapter(name, f"hf://acme/{name}@main", "acme/base-8b", families[i % 4],
                                  enabled=i % 97 != 5)
    adapter_ids = {a.name: a.id for a in registry.list_adapters()}
    chash = hashlib.sha256(b"generated-config").hexdigest()
    keys = {"task": hashlib.sha256(b"task").hexdigest(), "guard": hashlib.sha256(b"guard").hexdigest()}
    bench = {"math": ("gsm8k", "exact_match"), "code": ("humaneval", "pass@1"),
             "instruction": ("alpaca_eval", "win_rate"), "commonsense": ("commonsense_qa", "acc")}
    with session_scope(registry.engine, write=False) as s:
        ids = {m: (s.scalar(select(func.max(m.id))) or 0) for m in (AdapterVersion, AdapterRun, Candidate,
                                                                    Evaluation, GuardResult, Decision)}
    walk = {name: rng.randrange(len(pool)) for name in names}
    counts = dict.fromkeys(("versions", "adapter_runs", "candidates", "evaluations", "guard_results", "decisions",
                            "promotions", "overrides", "rollbacks", "failures"), 0)
    for k in range(nights):
        night = start + timedelta(days=k)
        rows: dict[type, list[dict]] = {m: [] for m in ids}
        promote: list[int] = []
        with session_scope(registry.engine, write=True) as s:
            run = RefinementRun(flow_run_id=f"generated-{k}", started_at=night, ended_at=night + timedelta(hours=2),
                                status="completed", config_snapshot={"generated": True}, config_hash=chash)
            s.add(run)
            s.flush()
            for i, name in enumerate(names):
                at = night + timedelta(seconds=20 * i)
                ids[AdapterVersion] += 1
                vid = ids[AdapterVersion]
                sha, path = hashlib.sha256(f"{name}|{k}".encode()).hexdigest(), None
                if real_adapter is not None and name == real_adapter[0] and k == nights - 1:
                    sha, path = adapter_content_sha256(real_adapter[1]), str(real_adapter[1])
                rows[AdapterVersion].append({"id": vid, "adapter_id": adapter_ids[name], "content_sha256": sha,
                                             "resolved_revision": f"rev-{k}", "local_path": path,
                                             "first_seen_at": at, "last_seen_at": at})
                ids[AdapterRun] += 1
                failed = rng.random() < fail_rate
                rows[AdapterRun].append({
                    "id": ids[AdapterRun], "run_id": run.id, "adapter_version_id": vid, "config_hash": chash,
                    "status": "failed" if failed else "completed", "started_at": at,
                    "ended_at": at + timedelta(seconds=15),
                    "error_type": "spectral_surgery.tasks.adapter_io.AdapterError" if failed else None,
                    "error_message": ("Traceback (most recent call last):\n  File \"flows/refine_adapter.py\", line "
                                      "228, in refine_adapter\ntasks.adapter_io.AdapterError: adapter_model.safetensors"
                                      f": field 'lora_B': shape mismatch in layer {k % 8}") if failed else None})
                if failed:
                    counts["failures"] += 1
                    continue
                walk[name] = min(len(pool) - 1, max(0, walk[name] + rng.randint(-12, 12)))
                entry = pool[walk[name]]
                cand_ids = {}
                full = k >= nights - full_spectra_nights
                for arm in (*POLICIES, CONTROL):
                    ids[Candidate] += 1
                    cand_ids[arm] = ids[Candidate]
                    policy = arm.split("-s")[0]
                    spec, sens = rng.choice(bank[(policy, full)])
                    rows[Candidate].append({
                        "id": ids[Candidate], "adapter_version_id": vid, "config_hash": chash, "policy": policy,
                        "params_json": {}, "seed": 42, "is_control": arm == CONTROL,
                        "artifact_uri": stub, "spectrum_json": spec, "sensitivity_json": sens,
                        "created_at": at})
                fam = families[i % 4]
                for arm, (task, guard) in entry["arms"].items():
                    cid = cand_ids.get(arm)
                    task_docs, guard_docs = entry["docs"][arm]
                    for kind, outs, docs, (bname, metric) in (
                            ("task", task, task_docs, bench[fam]),
                            ("guard", guard, guard_docs, ("ifeval", "prompt_level_strict_acc"))):
                        ids[Evaluation] += 1
                        mean = sum(outs) / len(outs)
                        rows[Evaluation].append({
                            "id": ids[Evaluation], "adapter_version_id": vid, "candidate_id": cid,
                            "subject": "baseline" if cid is None else f"candidate:{cid}", "benchmark": bname,
                            "metric": metric, "value": mean, "n": len(outs),
                            "stderr": (mean * (1 - mean) / (len(outs) - 1)) ** 0.5,
                            "doc_outcomes_json": docs,
                            "evaluator_key": keys[kind], "higher_is_better": True, "kind": kind, "created_at": at})
                for v in entry["stats"]["verdicts"]:
                    ids[GuardResult] += 1
                    g = v["guard_test"]
                    rows[GuardResult].append({
                        "id": ids[GuardResult], "candidate_id": cand_ids[v["name"]], "benchmark": "ifeval",
                        "baseline_value": g["mean_b"], "candidate_value": g["mean_a"], "delta": g["delta"],
                        "p_value": g["p_value"], "tolerance": 0.02, "passed": v["guard_ok"], "created_at": at})
                ids[Decision] += 1
                promoted = entry["promoted"]
                rows[Decision].append({
                    "id": ids[Decision], "adapter_version_id": vid, "config_hash": chash, "candidate_key": chash,
                    "run_id": run.id,
                    "promoted_candidate_id": cand_ids[promoted] if promoted else None, "promoted": bool(promoted),
                    "statistics_json": entry["stats"], "sentence": entry["sentence"],
                    "created_at": at + timedelta(seconds=10)})
                if promoted:
                    promote.append(ids[Decision])
            for model in (AdapterVersion, AdapterRun, Candidate, Evaluation, GuardResult, Decision):
                if rows[model]:
                    s.execute(insert(model), rows[model])
        for model, key in ((AdapterVersion, "versions"), (AdapterRun, "adapter_runs"), (Candidate, "candidates"),
                           (Evaluation, "evaluations"), (GuardResult, "guard_results"), (Decision, "decisions")):
            counts[key] += len(rows[model])
        _moves(registry, rng, rows, promote, night, counts)
    counts["seconds"] = time.perf_counter() - t0
    return counts


def _moves(registry, rng: random.Random, rows: dict, promote: list[int], night: datetime, counts: dict) -> None:
    """Promotions of the night through the Registry API (and a few overrides and rollbacks), on a simulated
    clock so the history's timestamps fall on the night they belong to."""
    from spectral_surgery.registry.models import Candidate, Decision
    from spectral_surgery.registry.validation import RegistryError

    clock = {"now": night + timedelta(hours=1)}
    with mock.patch("spectral_surgery.registry.promotion.utcnow", lambda: clock["now"]):
        for did in promote:
            clock["now"] += timedelta(seconds=1)
            registry.promote(did, actor="nightly")
            counts["promotions"] += 1
        clock["now"] = night + timedelta(hours=9)
        decisions = {d["adapter_version_id"]: d for d in rows[Decision]}
        for c in rows[Candidate]:
            if c["policy"] != "smooth_abs" or rng.random() > 0.01 or c["adapter_version_id"] not in decisions:
                continue
            clock["now"] += timedelta(minutes=1)
            if registry.manual_promote(c["id"], actor="alice", reason="pinned smooth_abs after a user report") is None:
                continue  # production already was that candidate: the registry appends no event
            counts["overrides"] += 1
            if rng.random() < 0.5:
                clock["now"] += timedelta(minutes=30)
                version = registry.get_version(c["adapter_version_id"])
                try:
                    registry.rollback(version.adapter.name, actor="bob", reason="override reverted after review")
                    counts["rollbacks"] += 1
                except RegistryError:
                    pass
