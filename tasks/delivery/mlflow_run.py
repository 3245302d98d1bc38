"""What one decision looks like in MLflow: the pure mapping of a recorded decision to a run's params, metrics and
tags, and to the evidence tags of a registered model version (the MLflow calls are in
``flows/integrations/mlflow_client.py``).

One MLflow run per decided adapter version, in one experiment for the fleet, named ``<adapter>@<sha256[:12]>``:

* **params**: what decided: the adapter (name, version, base model, family), the benchmarks and their document
  limits, the evaluator, every surgery setting (``surgery.edit.eta``, ``surgery.policies`` …), the control
  ladder and the gate settings in force (``gate.alpha`` …, read from the decision itself: a sequential decision
  records the level of the look where it stopped);
* **metrics**: every evaluated arm's task and guard score (``task/<arm>``, ``guard/<arm>``: the baseline, each
  policy, the random controls, the scalar and the canaries), and per candidate its gains and one-sided p-values
  against each reference (``delta_vs_baseline/<arm>``, ``p_vs_baseline/<arm>``, ``p_adjusted/<arm>`` …), its
  IFEval change, MDE and documents needed; the decision's own (``decision/promoted`` 1/0, ``decision/n_needed``);
  keys are the same in every run, so MLflow's compare view lines adapter versions and nights up side by side;
* **tags**: the verdict, its words, the promoted candidate, the decision id and key, the registry run, the
  canary flags and the decision sentence (also the run's description, ``mlflow.note.content``).

Everything is read from the decision's recorded statistics (:meth:`tasks.decision.gate.Decision.to_dict` plus the flow's
``means``/``guard_means``/``keys``/``sequential``), never recomputed.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from spectral_surgery.tasks.decision.gate import verdict_label
from spectral_surgery.tasks.decision.record import DecisionRecord, VerdictRecord
from spectral_surgery.tasks.secrets import redact_url

# MLflow's limits (mlflow.utils.validation): longer values are cut, keys are made of the allowed characters.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-./ ]")
_MODEL_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-.]")
TAG = "spectral_surgery."  # prefix of every tag this project writes (runs and model versions)


class MlflowConfig(BaseModel):
    """Mirror each decision into an MLflow tracking server (off unless the run config has an ``mlflow:`` section).

    The registry stays the record: the mirror only copies decisions out, and a mirror that fails (server down,
    bad URI) is logged as a warning and never fails a refinement.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tracking_uri: str | None = Field(None, description="MLflow tracking server (http://host:5000); None = "
                                     "$MLFLOW_TRACKING_URI. Its password is never written down (see tasks.secrets): "
                                     "prefer $MLFLOW_TRACKING_USERNAME / $MLFLOW_TRACKING_PASSWORD.")
    experiment: str = Field("spectral-surgery", min_length=1, description="Experiment of the runs (created if new).")
    registered_model_prefix: str = Field("spectral-surgery-", description="Registered model per adapter: this "
                                         "prefix + the adapter's name; its promoted versions carry alias "
                                         "'production'.")
    register_models: bool = Field(True, description="Register promoted adapters (their files as the run's "
                                  "'adapter' artifacts, one model version each, alias 'production').")

    @field_validator("tracking_uri")
    @classmethod
    def _uri(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            return None
        return v

    @field_serializer("tracking_uri")
    def _no_password(self, uri: str | None) -> str | None:
        return redact_url(uri)


def metric_key(*parts: str) -> str:
    """A metric, param or tag key of MLflow's characters (alphanumerics, ``_ - . /`` and space); others → ``_``."""
    return "/".join(_KEY_CHARS.sub("_", str(p)) for p in parts)[:250]


def registered_model_name(prefix: str, adapter_name: str) -> str:
    """The registered model of ``adapter_name``: ``prefix + name``, characters other than ``A-Za-z0-9_-.`` → ``-``."""
    return _MODEL_NAME_CHARS.sub("-", f"{prefix}{adapter_name}")


def run_name(adapter_name: str, content_sha256: str) -> str:
    """``<adapter>@<first 12 of the version's sha256>``: one run per adapter version (and decision)."""
    return f"{adapter_name}@{content_sha256[:12]}"


def _flat(prefix: str, obj: Any, out: dict[str, str]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
        return
    text = obj if isinstance(obj, str) else json.dumps(obj)
    out[metric_key(prefix)] = text[:MAX_PARAM_VALUE]


def run_params(*, adapter: dict[str, Any], run_config: dict[str, Any], surgery: dict[str, Any],
               statistics: dict[str, Any] | DecisionRecord) -> dict[str, str]:
    """The run's params: the adapter, the run settings that decided, the surgery settings and the gate in force.

    Args:
        adapter: ``{"name", "version_sha256", "base_model", "base_model_revision", "task_family", "benchmark",
            "guard_benchmark"}`` (None values are written as ``null``).
        run_config: ``RunConfig.model_dump(mode="json")`` (only the keys that decide are read).
        surgery: The adapter's surgery settings (``RunConfig.surgery_for(overrides).model_dump(mode="json")``).
        statistics: The decision's recorded statistics; its ``config`` is the gate in force.

    Returns:
        Flat ``{key: string}``; nested settings are dotted (``surgery.edit.eta``), lists JSON.
    """
    out: dict[str, str] = {}
    _flat("adapter", adapter, out)
    for key in ("evaluator", "evaluator_options", "benchmark_profile", "task_limit", "task_limits", "guard_limit",
                "guard", "calib_source", "ladder", "promote"):
        if key in run_config:
            _flat(key, run_config[key], out)
    sequential = run_config.get("sequential") or {}
    _flat("sequential", sequential if sequential.get("enabled") else {"enabled": False}, out)
    _flat("surgery", surgery, out)
    _flat("gate", DecisionRecord.from_json(statistics).config or run_config.get("gate") or {}, out)
    return out


def _put(out: dict[str, float], value: Any, *key: str) -> None:
    if isinstance(value, bool):
        value = float(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        out[metric_key(*key)] = float(value)


def run_metrics(statistics: dict[str, Any] | DecisionRecord) -> dict[str, float]:
    """The run's metrics from a decision's statistics (None and non-finite values are left out).

    Per evaluated arm: ``task/<arm>``, ``guard/<arm>``. Per candidate (policy or scalar): ``delta_vs_<ref>/<arm>``
    with its interval (``ci_low_vs_<ref>``, ``ci_high_vs_<ref>``) and ``p_vs_<ref>/<arm>`` for ``ref`` in baseline,
    control (the best random control) and scalar; ``p_adjusted/<arm>`` (what promotion requires under alpha),
    ``guard_delta/<arm>``, ``guard_p/<arm>``, ``mde/<arm>``, ``n_needed/<arm>``, ``n/<arm>``, ``passed/<arm>``
    (1/0); what the pairing bought per reference: ``corr_vs_<ref>/<arm>`` and ``n_eff_vs_<ref>/<arm>`` on the 0/1
    outcomes, ``score_corr_vs_<ref>/<arm>`` and ``score_n_eff_vs_<ref>/<arm>`` on the continuous scores. The
    decision: ``decision/promoted``, ``decision/baseline_task``, ``decision/n_needed``,
    ``canary/<name>/n_differ`` and ``/fraction``, ``sequential/stopped_at_look`` and ``/documents``.
    Differences and scores are fractions of the metric's 0..1 scale, as recorded.
    """
    out: dict[str, float] = {}
    rec = DecisionRecord.from_json(statistics)
    for arm, mean in rec.means.items():
        _put(out, mean, "task", arm)
    for arm, mean in (rec.guard_means or {}).items():
        _put(out, mean, "guard", arm)
    for v in rec.verdicts:
        name = v.name
        _put(out, v.task_mean, "task", name)
        for ref in ("baseline", "control", "scalar"):
            test = v.test(ref)
            if test:
                _put(out, test.delta, f"delta_vs_{ref}", name)
                _put(out, test.ci_low, f"ci_low_vs_{ref}", name)
                _put(out, test.ci_high, f"ci_high_vs_{ref}", name)
                _put(out, test.p_value, f"p_vs_{ref}", name)
            _put(out, getattr(v, f"p_adjusted_vs_{ref}"), f"p_adjusted_vs_{ref}", name)
        _put(out, v.p_adjusted, "p_adjusted", name)
        _put(out, v.guard_delta, "guard_delta", name)
        _put(out, v.guard_test.p_value if v.guard_test else None, "guard_p", name)
        for key in ("mde", "n_needed", "n", "passed"):
            _put(out, getattr(v, key), key, name)
        role = {"baseline": "baseline", v.control_name: "control", v.scalar_name: "scalar"}
        for p in v.pairing:
            ref = role.get(p.reference)
            for prefix, values in (("", p.outcomes), ("score_", p.scores)):
                if ref and values:
                    _put(out, values.correlation, f"{prefix}corr_vs_{ref}", name)
                    _put(out, values.n_eff, f"{prefix}n_eff_vs_{ref}", name)
    _put(out, rec.promoted is not None, "decision", "promoted")
    _put(out, rec.baseline_task_mean, "decision", "baseline_task")
    _put(out, rec.n_needed, "decision", "n_needed")
    for name, canary in rec.canaries.items():
        _put(out, canary.n_differ, "canary", name, "n_differ")
        _put(out, canary.fraction, "canary", name, "fraction")
    if rec.sequential is not None:
        _put(out, rec.sequential.stopped_at_look, "sequential", "stopped_at_look")
        _put(out, rec.sequential.documents, "sequential", "documents")
    return out


def run_tags(statistics: dict[str, Any] | DecisionRecord, sentence: str, *, decision_id: int,
             registry_run_id: int | None, promoted: bool) -> dict[str, str]:
    """The run's tags: the verdict and its words, the decision, its sentence (also the run's description).

    Args:
        statistics: The decision's recorded statistics.
        sentence: The decision sentence.
        decision_id: The registry's decision id (the mirror finds its run by it: one run per decision).
        registry_run_id: The registry's refinement run that decided.
        promoted: Whether production moved (False in a dry run even when the gate promoted a candidate).
    """
    rec = DecisionRecord.from_json(statistics)
    tags = {
        f"{TAG}decision_id": str(decision_id),
        f"{TAG}verdict": rec.verdict,
        f"{TAG}verdict_label": verdict_label(rec.verdict, rec.n_needed, rec.promoted),
        f"{TAG}promoted_candidate": rec.promoted or "",
        f"{TAG}production_moved": str(bool(promoted)).lower(),
        f"{TAG}registry_run_id": "" if registry_run_id is None else str(registry_run_id),
        f"{TAG}candidate_key": (rec.keys.candidates if rec.keys else None) or "",
        f"{TAG}flags": " | ".join(rec.flags),
        f"{TAG}correction": rec.correction or "",
        f"{TAG}sentence": sentence,
        "mlflow.note.content": sentence,
    }
    return {k: v[:MAX_TAG_VALUE] for k, v in tags.items()}


def model_version_tags(statistics: dict[str, Any] | DecisionRecord, sentence: str, *, decision_id: int,
                       candidate: dict[str, Any], adapter_sha256: str) -> dict[str, str]:
    """The evidence on a promoted adapter's model version: the decision, the policy, its gains and p-values.

    Args:
        statistics: The decision's recorded statistics (its ``promoted`` names the verdict read).
        sentence: The decision sentence.
        decision_id: The registry's decision id.
        candidate: ``{"id", "policy", "seed", "artifact_sha256"}`` of the promoted candidate.
        adapter_sha256: The unedited version's content hash.
    """
    rec = DecisionRecord.from_json(statistics)
    name = rec.promoted
    v = rec.promoted_verdict or VerdictRecord(name=name or "")
    tags: dict[str, Any] = {
        "decision_id": decision_id, "candidate": name, "candidate_id": candidate.get("id"),
        "policy": candidate.get("policy"), "seed": candidate.get("seed"),
        "artifact_sha256": candidate.get("artifact_sha256"), "adapter_sha256": adapter_sha256,
        "baseline_task": rec.baseline_task_mean, "task": v.task_mean,
        "p_adjusted": v.p_adjusted, "guard_delta": v.guard_delta,
        "correction": rec.correction, "alpha": rec.alpha,
        "sentence": sentence,
    }
    for ref in ("baseline", "control", "scalar"):
        test = v.test(ref)
        tags[f"delta_vs_{ref}"] = test.delta if test else None
        tags[f"p_vs_{ref}"] = test.p_value if test else None
    return {f"{TAG}{k}": str(x)[:MAX_TAG_VALUE] for k, x in tags.items() if x is not None}
