"""What a visit writes: which planned arms need a candidate, and whether a model pass or a γ choice is needed.

Pure (no Prefect, no registry): the flow's ``make_candidates`` reads the stored candidates and the stored
decomposition, asks here what is left to do, does it, and records each written candidate as
:func:`candidate_record` says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectral_surgery.tasks.decision.arms import Arm


def is_data_free(arms: Sequence[Arm]) -> bool:
    """Every arm to write is a data-free edit (post-hoc reshapes, the zero-rebuild canary): it depends on the adapter
    alone, so no calibration source is read and no model runs (the key holds no calibration either)."""
    from spectral_surgery.tasks.surgery.policies import get_policy

    return all(not get_policy(a.policy).needs_data for a in arms if a.role != "bare_base")


def fresh_holdout(examples: Sequence, holdout: Sequence) -> list:
    """The held-out calibration rows that are not sensitivity rows: a row repeated in the file is the same data, so
    γ is chosen only on rows the sensitivities never saw."""
    seen = {(e.prompt, e.answer) for e in examples}
    return [e for e in holdout if (e.prompt, e.answer) not in seen]


def no_holdout_reason(source: str, start: int, n_samples: int, wanted: int) -> str:
    """Why the global scalar is skipped when no held-out row is left to choose γ on (the ladder records it)."""
    return (f"no held-out calibration examples to choose γ on: {source} has no new rows after the first "
            f"{start + n_samples}; add {wanted} more")


@dataclass(frozen=True)
class WritePlan:
    """The planned arms a visit still has to store, given the candidates already stored under the key.

    Attributes:
        missing: Every arm without a usable stored candidate (written or recorded this visit).
        bare: The missing ``bare_base`` arms: recorded with no artifact (scored with the adapter off).
        writes: The missing arms whose adapter is written.
    """

    missing: tuple[Arm, ...]
    bare: tuple[Arm, ...]
    writes: tuple[Arm, ...]

    @property
    def needs_gamma(self) -> bool:
        """A global scalar is written: γ is chosen on held-out calibration rows with the base model."""
        return any(a.role == "scalar_control" for a in self.writes)

    def needs_model(self, prepared_stored: bool) -> bool:
        """The base model is loaded: to decompose and calibrate (nothing usable stored) or to choose γ."""
        return bool(self.writes) and (not prepared_stored or self.needs_gamma)


def plan_writes(arms: Sequence[Arm], stored: dict[tuple[str, int], Any],
                is_dir: Callable[[str], bool] = lambda p: Path(p).is_dir()) -> WritePlan:
    """Which arms still need a candidate: those with no stored row under the key, or whose artifact is gone.

    Args:
        arms: The planned arms.
        stored: ``(policy, seed) -> stored candidate`` (anything with ``artifact_uri``) under the candidate key.
        is_dir: Whether an artifact directory exists (the default looks on disk).
    """

    def done(a: Arm) -> bool:
        c = stored.get((a.policy, a.seed))
        return c is not None and (a.role == "bare_base" or bool(c.artifact_uri and is_dir(c.artifact_uri)))

    missing = tuple(a for a in arms if not done(a))
    return WritePlan(missing, tuple(a for a in missing if a.role == "bare_base"),
                     tuple(a for a in missing if a.role != "bare_base"))


def stage_seconds(prepared, needs_data: bool) -> dict[str, float]:
    """What the stages a candidate was written from cost when they were computed (not what reusing them cost).

    ``decompose`` always; ``calibrate`` only for an edit that needs data (a data-free edit written from a
    calibrated stage did not need the calibration). A stage loaded from the store reports its stored cost.
    """
    t = prepared.timings
    out = {"decompose": float(t.get("stored_decompose", t.get("decompose", 0.0)))}
    if needs_data:
        out["calibrate"] = float(t.get("stored_calibrate", t.get("calibrate", 0.0)))
    return out


def write_seconds(write: float, prepared, needs_data: bool, gamma: float | None = None) -> dict[str, float]:
    """What a written candidate cost: ``write`` (its own write), the stages it was written from
    (:func:`stage_seconds`) and, for the global scalar, ``gamma`` (the γ choice, when this visit made it)."""
    seconds = {"write": write, **stage_seconds(prepared, needs_data)}
    if gamma is not None:
        seconds["gamma"] = gamma
    return seconds


def arm_ids(arms: Sequence[Arm], keys: dict[str, str], rows: Sequence[Any]) -> dict[str, int]:
    """Arm name -> the id of the stored candidate row written under that arm's own key (policy, seed, key).

    Raises:
        KeyError: an arm has no stored row under its key (the visit did not write it).
    """
    by_key = {(c.policy, c.seed, c.config_hash): c for c in rows}
    return {a.name: by_key[(a.policy, a.seed, keys[a.name])].id for a in arms}


@dataclass(frozen=True)
class CandidateRecord:
    """What the registry stores of one written candidate, from its edit manifest (:func:`candidate_record`)."""

    params: dict[str, Any]
    spectrum: dict[str, Any]
    sensitivity: dict[str, Any]


def candidate_record(manifest: dict, scalar: bool) -> CandidateRecord:
    """The stored parameters, spectrum (σ before/after per module) and sensitivity summary of a written candidate.

    Args:
        manifest: :func:`tasks.surgery.edit.write_candidate`'s manifest.
        scalar: The candidate is the global scalar: its parameters carry the γ choice.
    """
    spectrum = {name: {"before": m["sigma_before"], "after": m["sigma_after"]}
                for name, m in manifest["modules"].items()}
    sens = {name: {"magnitude": m["sensitivity"]["magnitude"], "sign_agreement": m["sensitivity"]["sign_agreement"]}
            for name, m in manifest["modules"].items() if m.get("sensitivity")}  # none without data
    params = dict(manifest["parameters"])
    if scalar:
        params.update({k: manifest[k] for k in ("gamma", "gamma_rule", "gamma_grid", "gamma_scores")})
    return CandidateRecord(params, {"summary": manifest["summary"], "modules": spectrum}, sens)
