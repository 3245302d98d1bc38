"""Scoring a visit's subjects: the baseline and its candidates on one benchmark, every score already recorded reused
(:func:`evaluate_subjects`, the reuse rule in :mod:`tasks.evaluation.subjects`), fixed or in sequential looks
(:func:`evaluate_sequential`)."""

from collections.abc import Callable
from pathlib import Path

from spectral_surgery.flows import interrupt, stage_hook, worker
from spectral_surgery.flows.refine import logger
from spectral_surgery.flows.refine.candidates import Candidates
from spectral_surgery.registry.evidence import Score
from spectral_surgery.tasks.decision.arms import BARE_BASE, BASELINE, Arm
from spectral_surgery.tasks.decision.sequential import design_for, run_looks
from spectral_surgery.tasks.evaluation.benchmarks import BenchmarkSpec
from spectral_surgery.tasks.evaluation.evaluate import doc_rows
from spectral_surgery.tasks.evaluation.sandbox import using_backend
from spectral_surgery.tasks.evaluation.subjects import evaluation_subjects, stored_outcomes, to_score
from spectral_surgery.tasks.keys import evaluation_key, sandbox_used
from spectral_surgery.tasks.run_config import RunConfig


def evaluator_key(identity: str, spec: BenchmarkSpec, limit: int | None, docs: tuple[int, int] | None = None,
                  sandbox: str | None = None) -> str:
    """The evaluation key of ``spec`` under an evaluator identity (:func:`tasks.keys.evaluation_key`)."""
    return evaluation_key(identity, spec.name, limit, docs, sandbox)


def evaluate_subjects(config: RunConfig, version, adapter, local: Path, cands: Candidates, spec: BenchmarkSpec,
                      limit: int | None, kind: str, arms: list[str] | None = None,
                      docs: tuple[int, int] | None = None) -> tuple[str, dict[str, list], dict[str, list]]:
    """Evaluate the baseline and every candidate on ``spec``, skipping scores already recorded.

    An evaluation is keyed by (subject, benchmark, limit, evaluator identity): the baseline's is reused across
    nights and configs until one of those changes, a candidate's as long as the candidate is. Nothing is loaded
    when every score is recorded.

    Args:
        arms: The arm names to score besides the baseline (default: every arm of ``cands``).
        docs: ``(start, stop)``: score documents ``start..stop-1`` instead of the first ``limit`` (one sequential
            look's new documents; keyed as such).

    Returns:
        ``(evaluator key, subject name -> per-document outcomes aligned by document, subject name -> continuous
        per-document scores)``; subjects are "baseline" and the arm names; a subject without scores (a generative
        benchmark, an evaluation recorded before scores existed) is absent from the scores.
    """
    reg = worker.registry(config)
    sandbox = sandbox_used(config, spec)
    ekey = evaluator_key(worker.evaluator_identity(config, adapter.base_model_id), spec, limit, docs, sandbox)
    subjects = evaluation_subjects(BASELINE, cands.ids, arms)
    # one query for the stored scores and one for the artifacts, whatever the number of subjects
    stored = reg.evaluations_by_subject(version.id, spec.name, ekey)
    todo = to_score(subjects, lambda cid: cid in stored, _artifact_uris(reg, version.id, cands.uris), local,
                    BARE_BASE)
    if todo:
        log = logger()
        with worker.model_lock(adapter.base_model_id):
            ev = worker.evaluator(config, adapter.base_model_id, adapter.base_model_revision)
            # the identity must be computable without the model
            if evaluator_key(ev.key, spec, limit, docs, sandbox) != ekey:
                raise RuntimeError(f"evaluator {config.evaluator!r}: its key {ev.key!r} differs from the identity "
                                   "computed before loading it; results could not be reused safely")
            out_dir = worker.store_dir(config, adapter.name, version.content_sha256, ekey) / "eval"
            log.info("%s: scoring %d subject(s) on %s (%s)", adapter.name, len(todo), spec.name,
                     f"documents {docs[0]}..{docs[1] - 1}" if docs else
                     f"{limit} documents" if limit is not None else "all documents")

            took: dict[str, float] = {}

            def on_result(r, seconds: float) -> None:
                took[r.subject] = seconds
                log.info("%s: %s on %s: %s %.3f (n=%d, %.0f s)", adapter.name, r.subject, spec.name, r.metric,
                         r.value, r.n, seconds)
                interrupt.check()  # between subjects: a stop does not wait for the whole evaluation

            chosen = {} if docs is None else {"docs": list(range(*docs))}
            with using_backend(config.sandbox):  # generated code of this evaluation runs in the configured sandbox
                results = ev.evaluate(adapter.base_model_id, todo, spec.name, limit=None if docs else limit,
                                      out_dir=out_dir, on_result=on_result, **chosen)
            # every new score in one transaction (its rows returned: another process's, if it wrote a key first)
            rows = reg.add_evaluations(version.id, spec.name, ekey, [
                Score(subjects[name], r.metric, r.value, r.higher_is_better, n=r.n, stderr=r.stderr,
                      samples_uri=r.samples_path, doc_outcomes=doc_rows(r), seconds=took.get(r.subject, took.get(name)))
                for name, r in results.items()], kind=kind)
            stored.update(zip((subjects[name] for name in results), rows))
            stage_hook.reached("evaluation")
            interrupt.check()
    out: dict[str, list] = {}
    scores: dict[str, list] = {}
    for name, cid in subjects.items():
        out[name], sc = stored_outcomes(stored[cid].doc_outcomes_json)
        if sc is not None:  # an evaluation recorded before scores existed has none
            scores[name] = sc
    logger().info("%s: %s evaluated (%d new subjects)", adapter.name, spec.name, len(todo))
    return ekey, out, scores


def _artifact_uris(reg, version_id: int, known: dict[int, str | None]) -> Callable[[int], str | None]:
    """Candidate id -> where its written adapter lies: as the visit's candidates know it (``known``), else read on
    the first call for an id they lack (none when nothing is to score)."""
    uris: dict[int, str | None] = dict(known)

    def uri(cid: int) -> str | None:
        if cid not in uris:
            uris.update((c.id, c.artifact_uri) for c in reg.list_candidates(version_id))
        return uris[cid]

    return uri


def evaluate_sequential(config: RunConfig, version, adapter, local: Path, cands: Candidates, spec: BenchmarkSpec,
                        arms: list[Arm], evaluate: Callable = evaluate_subjects
                        ) -> tuple[tuple[str, dict[str, list], dict[str, list]], dict]:
    """The task benchmark in looks (:func:`tasks.decision.sequential.run_looks`), each look's new documents scored by
    :func:`evaluate_subjects` (``evaluate``: the flow passes its task, so each look is a task run of its own).

    Returns:
        ``((key, subject -> outcomes of the documents it was scored on, subject -> their scores), record)``; the
        record (design, looks, where each candidate stopped, documents evaluated) goes into the decision's statistics.
    """
    roles = {a.name: a.role for a in arms if a.name in cands.ids}
    n_candidates = sum(r in ("policy", "scalar_control") for r in roles.values())
    design = design_for(config.sequential, config.gate, config.limit_for(spec.name), n_candidates)

    def score(names: list[str], docs: tuple[int, int]):
        return evaluate(config, version, adapter, local, cands, spec, None, "task", names, docs=docs)

    run = run_looks(design, roles, score, higher_is_better=spec.higher_is_better,
                    canary_tolerance=config.gate.canary_tolerance, baseline=BASELINE)
    rec, stop_k = run.record, run.record["stopped_at_look"]
    logger().info("%s: %s in %d of %d looks (%d of %d documents)%s%s", adapter.name, spec.name, stop_k,
                  len(design.looks), design.looks[stop_k - 1], design.looks[-1],
                  f"; stopped for futility: {', '.join(f'{n} at look {k}' for n, k in rec['futile'].items())}"
                  if rec["futile"] else "", f"; {rec['canary_stop']}" if rec["canary_stop"] else "")
    return (run.key, run.outcomes, run.scores), rec
