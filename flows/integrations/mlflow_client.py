"""The MLflow mirror's calls (optional extra ``mlflow``): one recorded decision → one MLflow run, and a promoted
adapter → a registered model version with alias ``production``.

What is logged is decided by the pure mapping in :mod:`tasks.delivery.mlflow_run`; this module only talks to the
tracking server through :class:`mlflow.MlflowClient`. The mirror is idempotent: the run of a decision is found by its
``spectral_surgery.decision_id`` tag, so a re-visit that finds the decision done logs nothing again; a run left
unfinished by a failed attempt is marked FAILED and a new one is made. The refinement flow calls
:func:`mirror_decision` after the decision and treats any error as a warning (the registry stays the record).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from spectral_surgery.tasks.delivery.mlflow_run import (
    TAG,
    model_version_tags,
    registered_model_name,
    run_metrics,
    run_name,
    run_params,
    run_tags,
)
from spectral_surgery.tasks.decision.record import DecisionRecord
from spectral_surgery.tasks.decision.report import decision_markdown
from spectral_surgery.tasks.run_config import RunConfig
from spectral_surgery.tasks.secrets import password_of, redact_text, redact_url

ALIAS = "production"
_BATCH = 100  # MLflow's log_batch takes at most 100 params and 100 tags per call (1000 metrics)


def _client(uri: str):
    # offline, and quiet: no usage telemetry, and no "View run at <URI>" lines on stdout (the URI may carry a
    # password); set either variable to override
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise RuntimeError("the MLflow mirror needs the 'mlflow' extra: pip install 'spectral-surgery[mlflow]'") \
            from None
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def tracking_uri(config: RunConfig) -> str:
    """The tracking server: ``config.mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``.

    Raises:
        ValueError: neither is set (MLflow would otherwise write to a local store in the working directory).
    """
    uri = (config.mlflow.tracking_uri if config.mlflow else None) or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ValueError("mlflow.tracking_uri is not set and $MLFLOW_TRACKING_URI is empty: set one to the tracking "
                         "server (http://host:5000)")
    return uri


def _experiment_id(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as e:  # another adapter of the same night created it first
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def _find_run(client, experiment_id: str, decision_id: int):
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{TAG}decision_id` = '{decision_id}'",
                              max_results=10)
    finished = [r for r in runs if r.info.status == "FINISHED"]
    for r in runs:
        if r.info.status == "RUNNING":  # a failed attempt's leftover: closed, never reused
            client.set_terminated(r.info.run_id, "FAILED")
    return finished[0] if finished else None


def _log(client, run_id: str, params: dict[str, str], metrics: dict[str, float], tags: dict[str, str],
         timestamp_ms: int) -> None:
    from mlflow.entities import Metric, Param, RunTag

    p = [Param(k, v) for k, v in params.items()]
    t = [RunTag(k, v) for k, v in tags.items()]
    m = [Metric(k, v, timestamp_ms, 0) for k, v in metrics.items()]
    for i in range(0, max(len(p), len(t), len(m), 1), _BATCH):
        client.log_batch(run_id, metrics=m[i:i + _BATCH], params=p[i:i + _BATCH], tags=t[i:i + _BATCH])


def _register(client, run_id: str, name: str, adapter_dir: Path, tags: dict[str, str], sentence: str):
    from mlflow.exceptions import MlflowException

    client.log_artifacts(run_id, str(adapter_dir), artifact_path="adapter")
    try:
        client.create_registered_model(name, description="Adapter promoted by spectral-surgery's gate; alias "
                                       f"'{ALIAS}' = what the nightly run promoted last.")
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    mv = client.create_model_version(name, f"runs:/{run_id}/adapter", run_id=run_id, tags=tags,
                                     description=sentence[:5000])
    client.set_registered_model_alias(name, ALIAS, mv.version)
    return mv


def mirror_decision(config: RunConfig, reg, version, adapter, decision_id: int, *, benchmark: str,
                    guard_benchmark: str | None, production_moved: bool) -> dict[str, Any]:
    """Log decision ``decision_id`` of ``version`` as an MLflow run; register the promoted adapter.

    Args:
        config: The run config (its ``mlflow`` section says where; it must be set).
        reg: The registry (read only: the decision, the promoted candidate).
        version: The adapter version decided on (``content_sha256``).
        adapter: Its adapter row (name, base model, family).
        decision_id: The recorded decision.
        benchmark: The task benchmark it weighed; ``guard_benchmark`` the guard's (None: no guard).
        production_moved: Production now serves the promoted candidate (False in a dry run: nothing registered).

    Returns:
        ``{"run_id", "experiment_id", "reused", "model", "model_version"}`` (``model*`` None when nothing was
        registered; ``reused`` when the decision's run existed already).

    Raises:
        RuntimeError: the ``mlflow`` extra is not installed. ValueError: no tracking URI. Any MLflow or
        connection error (the caller logs it as a warning).
    """
    mcfg = config.mlflow
    if mcfg is None:
        raise ValueError("the run config has no mlflow section")
    client = _client(tracking_uri(config))
    experiment_id = _experiment_id(client, mcfg.experiment)
    found = _find_run(client, experiment_id, decision_id)
    if found is not None:
        return {"run_id": found.info.run_id, "experiment_id": experiment_id, "reused": True, "model": None,
                "model_version": None}
    decision = reg.get_decision_by_id(decision_id)
    stats = decision.statistics_json or {}  # as recorded: logged unchanged (decision/statistics.json); every field
    # the mirror reads and the report renders goes through the record (without the row's flag: the MLflow mirror
    # always read a row recorded before verdicts by the gate's ``promoted``)
    rec = DecisionRecord.from_json(stats)
    surgery = config.surgery_for(adapter.config_json).model_dump(mode="json")
    info = {"name": adapter.name, "version_sha256": version.content_sha256, "base_model": adapter.base_model_id,
            "base_model_revision": adapter.base_model_revision, "task_family": adapter.task_family,
            "benchmark": benchmark, "guard_benchmark": guard_benchmark}
    run_config = config.model_dump(mode="json", exclude={"data_dir", "registry_url", "mlflow"})
    moved = bool(production_moved and decision.promoted and decision.promoted_candidate_id is not None)
    tags = run_tags(rec, decision.sentence, decision_id=decision_id, registry_run_id=decision.run_id,
                    promoted=moved)
    run = client.create_run(experiment_id, run_name=run_name(adapter.name, version.content_sha256),
                            tags={f"{TAG}decision_id": str(decision_id)})
    run_id = run.info.run_id
    try:
        stamp = int(decision.created_at.timestamp() * 1000) if decision.created_at else int(time.time() * 1000)
        _log(client, run_id, run_params(adapter=info, run_config=run_config, surgery=surgery, statistics=rec),
             run_metrics(rec), tags, stamp)
        client.log_dict(run_id, stats, "decision/statistics.json")
        client.log_text(run_id, decision_markdown(adapter.name, rec, decision.sentence,
                                                  promoted=rec.promoted if moved else None),
                        "decision/decision.md")
        model = mv = None
        if moved and mcfg.register_models:
            cand = reg.get_candidate(decision.promoted_candidate_id)
            path = Path(cand.artifact_uri or "")
            if not cand.artifact_uri or not path.is_dir():
                raise FileNotFoundError(f"promoted candidate {cand.id}: its files {cand.artifact_uri!r} are gone; "
                                        "nothing registered in MLflow")
            model = registered_model_name(mcfg.registered_model_prefix, adapter.name)
            mv = _register(client, run_id, model, path, model_version_tags(
                stats, decision.sentence, decision_id=decision_id, adapter_sha256=version.content_sha256,
                candidate={"id": cand.id, "policy": cand.policy, "seed": cand.seed,
                           "artifact_sha256": cand.artifact_sha256}), decision.sentence)
        client.set_terminated(run_id, "FINISHED")
    except BaseException:
        try:
            client.set_terminated(run_id, "FAILED")
        except Exception:  # never mask the mirror's own error
            pass
        raise
    return {"run_id": run_id, "experiment_id": experiment_id, "reused": False, "model": model,
            "model_version": mv.version if mv is not None else None}


def mirror_or_warn(config: RunConfig, reg, version, adapter, result: dict[str, Any], guard_benchmark: str | None,
                   log) -> dict[str, Any]:
    """:func:`mirror_decision` for the refinement flow: an error is logged as a warning and returned, never raised.

    Args:
        result: The flow's result of the adapter (``decision_id``, ``benchmark``, ``promoted``: None unless
            production moved).
        log: The flow's logger.

    Returns:
        :func:`mirror_decision`'s answer, or ``{"error": "<type>: <message>"}`` (passwords redacted).
    """
    try:
        out = mirror_decision(config, reg, version, adapter, result["decision_id"], benchmark=result["benchmark"],
                              guard_benchmark=guard_benchmark, production_moved=result.get("promoted") is not None)
    except Exception as e:  # the registry is the record: a mirror that fails never fails the refinement
        uri = (config.mlflow.tracking_uri if config.mlflow else None) or os.environ.get("MLFLOW_TRACKING_URI")
        message = redact_text(f"{type(e).__name__}: {e}", [password_of(uri) or ""])
        where = redact_url(uri) if uri else "(no tracking URI)"
        log.warning("could not mirror %s's decision to MLflow at %s: %s", adapter.name, where, message)
        return {"error": message}
    log.info("%s: decision %s %s MLflow run %s%s", adapter.name, result["decision_id"],
             "already in" if out["reused"] else "mirrored to", out["run_id"],
             f"; registered {out['model']} version {out['model_version']} (alias {ALIAS})" if out["model_version"]
             else "")
    return out


# ------------------------------------------------------------------------------------ production moves
def _served(reg, name: str) -> dict[str, Any]:
    """What ``name`` serves now: its files, their hash, the candidate (``None``: the unedited version)."""
    state = reg.production(name)
    if state is None:
        raise ValueError(f"adapter {name!r} has no version: nothing in production")
    cand = reg.get_candidate(state.candidate_id) if state.candidate_id is not None else None
    version = reg.get_version(state.adapter_version_id)
    return {"candidate": cand, "version": version, "path": Path(cand.artifact_uri if cand else state.local_path or ""),
            "sha256": cand.artifact_sha256 if cand else state.content_sha256}


def follow_move(reg, event, mcfg, uri: str) -> dict[str, Any]:
    """Point alias ``production`` of the adapter's registered model at what the registry serves after ``event``.

    A gate promotion registers its version when the decision is mirrored (:func:`mirror_decision`); every other
    move (``promote`` by hand, ``rollback``, ``approve``) comes here. The model version whose
    ``spectral_surgery.artifact_sha256`` tag is the served files' hash gets the alias (a rollback returns to the
    version registered before); if there is none, the served files are registered as a new version: in the
    decision's run when the move carries a decision that was mirrored (an approval), else in a new run of the
    experiment tagged with the move (kind, actor, reason, event id), with those tags on the version too.

    Args:
        reg: The registry (read only).
        event: The recorded :class:`registry.models.PromotionEvent`.
        mcfg: The :class:`tasks.delivery.mlflow_run.MlflowConfig` (experiment, model prefix).
        uri: The tracking server.

    Returns:
        ``{"model", "model_version", "registered"}`` (``registered``: a new version was made for this move).

    Raises:
        Any MLflow or connection error; ``FileNotFoundError`` if the served files are gone (the caller warns).
    """
    name = reg.get_version(event.to_version_id).adapter.name
    served = _served(reg, name)
    client = _client(uri)
    model = registered_model_name(mcfg.registered_model_prefix, name)
    sha = served["sha256"]
    for mv in client.search_model_versions(f"name='{model}'"):
        if mv.tags.get(f"{TAG}artifact_sha256") == sha:
            client.set_registered_model_alias(model, ALIAS, mv.version)
            return {"model": model, "model_version": mv.version, "registered": False}
    if not served["path"].is_dir():
        raise FileNotFoundError(f"{served['path']}: the files {name!r} serves are gone; the MLflow alias was not moved")
    cand, version = served["candidate"], served["version"]
    move = {"event_id": event.id, "event_kind": event.kind, "event_actor": event.actor, "event_reason": event.reason}
    tags = {f"{TAG}{k}": str(v)[:5000] for k, v in move.items()}
    tags |= {f"{TAG}artifact_sha256": sha, f"{TAG}adapter_sha256": version.content_sha256,
             f"{TAG}policy": cand.policy if cand else "unedited"}
    if cand is not None:
        tags[f"{TAG}candidate_id"] = str(cand.id)
    experiment_id = _experiment_id(client, mcfg.experiment)
    run = _find_run(client, experiment_id, event.decision_id) if event.decision_id is not None else None
    sentence = f"{event.kind} by {event.actor}: {event.reason}"
    if run is not None:  # an approved decision: its evidence run holds the files
        decision = reg.get_decision_by_id(event.decision_id)
        tags = model_version_tags(DecisionRecord.from_json(decision.statistics_json), decision.sentence,
                                  decision_id=decision.id, adapter_sha256=version.content_sha256,
                                  candidate={"id": cand.id, "policy": cand.policy, "seed": cand.seed,
                                             "artifact_sha256": cand.artifact_sha256} if cand else {}) | tags
        mv = _register(client, run.info.run_id, model, served["path"], tags, sentence)
        client.set_tag(run.info.run_id, f"{TAG}production_moved", "true")
    else:
        run_id = client.create_run(experiment_id, run_name=f"{run_name(name, version.content_sha256)} {event.kind}",
                                   tags={**tags, "mlflow.note.content": sentence}).info.run_id
        try:
            mv = _register(client, run_id, model, served["path"], tags, sentence)
        finally:
            client.set_terminated(run_id, "FINISHED")
    return {"model": model, "model_version": mv.version, "registered": True}


def follow_or_warn(reg, event, mcfg, log) -> dict[str, Any] | None:
    """:func:`follow_move` for the command line, when a tracking server is known: ``mcfg``'s ``tracking_uri``,
    else ``$MLFLOW_TRACKING_URI`` (``mcfg`` None: the defaults). Nothing is done without one (``None``); an error is
    logged as a warning and returned as ``{"error": ...}``, never raised (the registry's move stands)."""
    from spectral_surgery.tasks.delivery.mlflow_run import MlflowConfig

    mcfg = mcfg or MlflowConfig()
    uri = mcfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return None
    try:
        out = follow_move(reg, event, mcfg, uri)
    except Exception as e:  # the registry is the record: the move is done whatever MLflow says
        message = redact_text(f"{type(e).__name__}: {e}", [password_of(uri) or ""])
        log.warning("could not move the MLflow alias %r at %s: %s", ALIAS, redact_url(uri), message)
        return {"error": message}
    log.info("MLflow: %s@%s = version %s%s", out["model"], ALIAS, out["model_version"],
             " (registered for this move)" if out["registered"] else "")
    return out
