"""The nightly run's configuration: one pydantic model, validated at the edge, rendered by Prefect as a form.

Only fields that change results enter :meth:`RunConfig.result_hash` (the cache key of candidates, evaluations and
decisions); where things live and how much runs in parallel do not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.config import SurgeryConfig, default_data_dir
from tasks.gate import GateConfig


class RunConfig(BaseModel):
    """Everything a nightly refinement run needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(default_factory=default_data_dir, description="Registry, artifact store and model cache.")
    registry_url: str | None = Field(None, description="SQLAlchemy URL; None = SQLite file in data_dir.")
    surgery: SurgeryConfig = Field(default_factory=SurgeryConfig, description="Policies, targets, calibration.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Promotion thresholds.")
    evaluator: str = Field("lm_eval", description="Registered evaluator name (lm_eval; fake is for tests).")
    evaluator_options: dict[str, Any] = Field(default_factory=dict, description="Keyword options of the evaluator.")
    benchmark_profile: Literal["offline", "paper"] | None = Field(
        None, description="Benchmark set: offline = the suites shipped in the repo; paper = gsm8k/humaneval/ifeval/csqa."
    )
    task_limit: int | None = Field(100, ge=1, description="Documents per task benchmark (same for every candidate).")
    guard_limit: int | None = Field(100, ge=1, description="Prompts of the IFEval guard.")
    guard: bool = Field(True, description="Run the IFEval guard.")
    calib_source: str | None = Field(
        None, description="Default calibration source (JSONL path or loader) for adapters that name none."
    )
    concurrency: int = Field(1, ge=1, le=256, description="Adapters refined at once (1 on a CPU machine).")
    task_runner: Literal["thread", "dask"] = Field("thread", description="Prefect task runner for the fan-out.")
    dask_address: str | None = Field(None, description="Scheduler address of an existing Dask cluster.")
    promote: bool = Field(True, description="Move production pointers (False = dry run: decide, do not promote).")
    device: str = Field("cpu", description="Torch device for calibration and evaluation.")
    actor: str = Field("nightly", description="Name recorded in the audit history for automatic promotions.")

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, v):
        # a string, so that JSON-mode validation (a config sent to another process) accepts it too
        return str(Path(v).expanduser() if v is not None else default_data_dir())

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if "random_index" in self.surgery.policies:
            raise ValueError(
                "surgery.policies lists random_index: the random control is added automatically for every seed in "
                "surgery.random_control_seeds; remove it from policies."
            )
        if self.gate.require_control and not self.surgery.random_control_seeds:
            raise ValueError("gate.require_control is on but surgery.random_control_seeds is empty: add a seed or "
                             "set gate.require_control=false.")
        return self

    def result_hash(self, adapter_overrides: dict | None = None) -> str:
        """Hash of everything that determines candidates, evaluations and decisions for one adapter."""
        keyed = self.model_dump(
            mode="json",
            include={"surgery", "gate", "evaluator", "evaluator_options", "benchmark_profile", "task_limit",
                     "guard_limit", "guard", "calib_source"},
        )
        keyed["adapter_overrides"] = adapter_overrides or {}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()

    def surgery_for(self, overrides: dict | None) -> SurgeryConfig:
        """The surgery config with an adapter's own overrides (its registry ``config`` field, key ``surgery``)."""
        extra = (overrides or {}).get("surgery")
        if not extra:
            return self.surgery
        merged = self.surgery.model_dump()
        for section, values in extra.items():
            if isinstance(values, dict) and isinstance(merged.get(section), dict):
                merged[section].update(values)
            else:
                merged[section] = values
        return SurgeryConfig.model_validate(merged)
