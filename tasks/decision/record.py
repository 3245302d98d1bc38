"""The decision record: what a decision stores as its statistics, typed and versioned (pydantic, pure).

The gate's :class:`tasks.decision.gate.Decision` and what the flow knows besides (the arms' means, the evidence keys,
the ladder, the guard plan, the sequential looks, the edit budget, a decision-metric fallback) make one
:class:`DecisionRecord` (:meth:`DecisionRecord.of`); the registry stores :meth:`DecisionRecord.to_json`, and every
reader (the CLI, the dashboard, the demo summary, the MLflow mirror, the artifacts) reads a row back through
:meth:`DecisionRecord.from_json`, which upgrades whatever older shape the registry holds.

**Versions.** ``schema_version`` 1 is today's shape: the keys of ``Decision.to_dict()`` plus the flow's sections
(``means``, ``guard_means``, ``keys``, ``ladder``, ``guard``, ``sequential``, ``edit_budget``, ``decision_metric``;
a section is absent where it does not apply) plus ``schema_version``; the registry adds ``candidate_ids`` (the
candidates weighed) when it records the row. A row without ``schema_version`` (version 0)
is any earlier shape: decisions recorded before verdicts existed lack ``verdict`` (upgraded: "promote" when
something was promoted, else "reject", as :func:`tasks.decision.gate.verdict_of` always read them), and a
candidate's verdict without its own ``verdict`` is "promote" when it passed, else "reject" (as ``why`` and the
dashboard read them: a passing candidate is one the gate would promote, the best of them is). Anything else absent
stays absent (a reader sees the field's default) and keys this module does not know are kept as they were. So
``to_json`` writes back exactly the keys it read, with the upgrades and ``schema_version`` (a null where a list, a
mapping or ``higher_is_better`` belongs is read as absent).

Every float is plain JSON: a non-finite one (an unreachable MDE, say) is recorded as None, also on PostgreSQL.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spectral_surgery.tasks.decision.gate import Decision

SCHEMA_VERSION = 1
Verdict = Literal["promote", "hold", "reject"]


class _Part(BaseModel):
    # extra="allow": keys of an older (or newer) shape are kept as they were and written back unchanged
    model_config = ConfigDict(extra="allow", frozen=True)

    @property
    def empty(self) -> bool:
        """Whether the stored object held no key at all (``{}``): a reader shows it as not recorded, as it shows a
        part that is absent or null (those read as None)."""
        return not self.model_fields_set and not self.model_extra


class PairedTestRecord(_Part):
    """A recorded paired test (:class:`tasks.decision.stats.PairedTest`)."""

    method: str | None = None
    n: int | None = None
    mean_a: float | None = None
    mean_b: float | None = None
    delta: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    n_a_only: int | None = None
    n_b_only: int | None = None
    alternative: str | None = None
    confidence: float | None = None


class PairingValues(_Part):
    """A recorded :class:`tasks.decision.stats.Pairing`."""

    values: str | None = None
    n: int | None = None
    correlation: float | None = None
    n_eff: float | None = None


class ReferencePairingRecord(_Part):
    """A recorded :class:`tasks.decision.gate.ReferencePairing`."""

    reference: str | None = None
    outcomes: PairingValues | None = None
    scores: PairingValues | None = None


class VerdictRecord(_Part):
    """One candidate's recorded verdict (:class:`tasks.decision.gate.CandidateVerdict`, same fields)."""

    name: str
    policy: str | None = None
    task_mean: float | None = None
    vs_baseline: PairedTestRecord | None = None
    vs_control: PairedTestRecord | None = None
    control_name: str | None = None
    guard_delta: float | None = None
    guard_test: PairedTestRecord | None = None
    beats_baseline: bool | None = None
    beats_control: bool | None = None
    guard_ok: bool | None = None
    passed: bool = False
    reason: str | None = None
    verdict: Verdict = "reject"
    n: int | None = None
    n_a_only: int | None = None
    n_b_only: int | None = None
    gain_upper: float | None = None
    vs_scalar: PairedTestRecord | None = None
    scalar_name: str | None = None
    beats_scalar: bool | None = None
    explained_by: str | None = None
    p_adjusted: float | None = None
    p_adjusted_vs_baseline: float | None = None
    p_adjusted_vs_control: float | None = None
    p_adjusted_vs_scalar: float | None = None
    mde: float | None = None
    n_needed: int | None = None
    guard_skipped: str | None = None
    pairing: list[ReferencePairingRecord] = Field(default_factory=list)

    def test(self, ref: Literal["baseline", "control", "scalar"]) -> PairedTestRecord | None:
        """The paired test against ``ref`` (None where there was none)."""
        return {"baseline": self.vs_baseline, "control": self.vs_control, "scalar": self.vs_scalar}[ref]


class CanaryRecord(_Part):
    """One canary's check (:func:`tasks.decision.canaries.canaries`)."""

    arm: str | None = None
    n_differ: int | None = None
    fraction: float | None = None
    ok: bool | None = None
    tolerance: float | None = None

    @property
    def held(self) -> bool:
        """Whether the canary held: ``ok`` as recorded; a row that did not record ``ok`` reads as held, a recorded
        null as failed (as the report always read them; the gate records a bool)."""
        return bool(self.ok) if "ok" in self.model_fields_set else True


class EvidenceKeys(_Part):
    """The stage keys of what the decision weighed."""

    candidates: str | None = None
    task_evaluation: str | None = None
    guard_evaluation: str | None = None
    candidate_arms: dict[str, str] | None = None  # arm name -> its own candidate key (one key per candidate)


class LadderRecord(_Part):
    """The role of every arm weighed, and the ladder members skipped with why."""

    roles: dict[str, str] = Field(default_factory=dict)
    skipped: dict[str, str] = Field(default_factory=dict)


class GuardRecord(_Part):
    """The guard plan (``RunConfig.guard_arms``) and the arms whose guard was not evaluated, with why."""

    arms: str | None = None
    skipped: dict[str, str] = Field(default_factory=dict)


class SequentialRecord(_Part):
    """A sequential run's looks (:func:`tasks.decision.sequential.run_looks`)."""

    design: dict[str, Any] = Field(default_factory=dict)
    looks: list[dict[str, Any]] = Field(default_factory=list)
    stopped_at_look: int | None = None
    documents: int | None = None
    futile: dict[str, int] = Field(default_factory=dict)
    evaluation_keys: list[str] = Field(default_factory=list)
    canary_stop: str | None = None
    efficacy_deferred_at: list[int] = Field(default_factory=list)
    canary_documents: dict[str, int] = Field(default_factory=dict)
    subject_documents: int | None = None
    fixed_subject_documents: int | None = None


class MetricFallback(_Part):
    """A requested continuous decision metric that fell back to the task metric, and why."""

    requested: str
    used: str
    why: str


class DecisionRecord(_Part):
    """A decision's statistics as the registry stores them (module docstring).

    Attributes mirror :meth:`tasks.decision.gate.Decision.to_dict` (``promoted`` … ``verdicts``) and the flow's
    sections (``means`` … ``decision_metric``; None where absent). ``candidate_ids`` lists the candidates weighed
    (ids, sorted) where the registry recorded them.
    """

    schema_version: int = 0
    promoted: str | None = None
    verdict: Verdict = "reject"
    sentence: str | None = None
    baseline: str | None = None
    baseline_task_mean: float | None = None
    higher_is_better: bool = True
    flags: list[str] = Field(default_factory=list)
    canaries: dict[str, CanaryRecord] = Field(default_factory=dict)
    correction: str | None = None
    n_needed: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    decision: dict[str, Any] = Field(default_factory=dict)
    verdicts: list[VerdictRecord] = Field(default_factory=list)
    means: dict[str, float | None] = Field(default_factory=dict)
    guard_means: dict[str, float | None] | None = None
    keys: EvidenceKeys | None = None
    ladder: LadderRecord | None = None
    guard: GuardRecord | None = None
    sequential: SequentialRecord | None = None
    edit_budget: dict[str, Any] | None = None
    decision_metric: MetricFallback | None = None
    # Added by the registry on recording (``Registry.record_decision``), after ``to_json``: None in a row recorded
    # before per-candidate keys, whose candidates all shared the decision's ``candidate_key``.
    candidate_ids: list[int] | None = None

    # ------------------------------------------------------------------------------------------ reading
    @classmethod
    def from_json(cls, data: dict[str, Any] | None, promoted: bool | None = None) -> DecisionRecord:
        """A stored decision's statistics, upgraded from any older shape (module docstring, "Versions").

        Args:
            data: The row's ``statistics_json`` (None or ``{}`` for a decision recorded without statistics).
            promoted: The row's ``promoted`` flag, where known: decides the verdict of a row recorded before verdicts
                existed (default: whether the statistics name a promoted candidate).

        Raises:
            ValueError: ``data`` is not a dict, or a known key holds a value of another type (the field is named).
        """
        if isinstance(data, DecisionRecord):
            return data
        if data is not None and not isinstance(data, dict):
            raise ValueError(f"decision statistics must be a JSON object, got {type(data).__name__}")
        raw = dict(data or {})
        for key in ("verdicts", "flags", "canaries", "config", "decision", "means", "higher_is_better"):
            if key in raw and raw[key] is None:  # a null where a value has a default: read as absent
                del raw[key]
        was_promoted = raw.get("promoted") is not None if promoted is None else bool(promoted)
        if raw.get("verdict") not in ("promote", "hold", "reject"):
            raw["verdict"] = "promote" if was_promoted else "reject"
        if isinstance(raw.get("verdicts"), list):
            raw["verdicts"] = [v if not isinstance(v, dict) or v.get("verdict") in ("promote", "hold", "reject")
                               else {**v, "verdict": "promote" if v.get("passed") else "reject"}
                               for v in raw["verdicts"]]  # fmt: skip
        raw["schema_version"] = SCHEMA_VERSION
        return cls.model_validate(raw)

    def to_json(self) -> dict[str, Any]:
        """The stored form: exactly the keys this record was built or read with, plus ``schema_version``."""
        return _json_safe({"schema_version": self.schema_version, **self.model_dump(mode="json", exclude_unset=True)})

    def verdict_of(self, name: str | None) -> VerdictRecord | None:
        """The verdict of candidate ``name`` (None if it has none)."""
        return next((v for v in self.verdicts if v.name == name), None)

    @property
    def promoted_verdict(self) -> VerdictRecord | None:
        """The promoted candidate's verdict (None when nothing was promoted)."""
        return self.verdict_of(self.promoted) if self.promoted is not None else None

    @property
    def metric(self) -> str:
        """The decision metric used: ``task`` or ``continuous``."""
        return str(self.decision.get("metric", "task"))

    @property
    def alpha(self) -> float | None:
        """The gate's level in force."""
        return self.config.get("alpha")

    # ------------------------------------------------------------------------------------------ writing
    @classmethod
    def of(cls, decision: Decision, *, means: dict[str, float], guard_means: dict[str, float] | None = None,
           keys: EvidenceKeys, ladder: LadderRecord, guard: GuardRecord | None = None,
           sequential: dict[str, Any] | None = None, edit_budget: dict[str, Any] | None = None,
           decision_metric: MetricFallback | None = None) -> DecisionRecord:  # fmt: skip
        """The record of a decision the gate just made, with what the flow knows besides.

        Args:
            decision: The gate's decision (fixed or sequential).
            means: Subject name -> task mean (the baseline's under its name).
            guard_means: Subject name -> guard mean (None: no guard evaluated; the key is then absent).
            keys: The stage keys of the candidates and evaluations weighed.
            ladder: Every weighed arm's role and the ladder members skipped.
            guard: The guard plan (None: no guard configured).
            sequential: The sequential run's record (None: one look).
            edit_budget: What the edit budget kept and skipped (None: no budget).
            decision_metric: Why a requested continuous metric fell back (None: as requested).
        """
        data: dict[str, Any] = {**decision.to_dict(), "means": means}
        if guard_means:
            data["guard_means"] = guard_means
        data["keys"] = keys.model_dump(mode="json", exclude_unset=True)
        data["ladder"] = ladder.model_dump(mode="json", exclude_unset=True)
        sections = {"guard": guard, "sequential": sequential, "edit_budget": edit_budget,
                    "decision_metric": decision_metric}
        for key, value in sections.items():
            if value is not None:
                data[key] = value.model_dump(mode="json", exclude_unset=True) if isinstance(value, BaseModel) else value
        return cls.from_json(_json_safe(data))


def _json_safe(obj: Any) -> Any:
    """Plain JSON (PostgreSQL's too): floats that are not finite (an unreachable MDE, say) become None."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) or hasattr(obj, "__float__") and not isinstance(obj, (int, bool, str)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj
