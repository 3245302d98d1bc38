"""The nightly run's configuration: one pydantic model, validated at the edge, rendered by Prefect as a form.

Every result key (prepared state, each candidate, evaluations, decisions, and :meth:`RunConfig.result_hash`) is
computed in :mod:`tasks.keys` from resolved values; :func:`prepared_key`, :func:`candidate_key` and
:func:`decision_key` are re-exported here for older callers. :data:`SETTING_KEYS` says where each field enters them.

A config may be written flat or in four sections (``where``, ``run``, ``evaluate``, ``decide``:
:data:`tasks.run_sections.SECTIONS`); both validate to the same flat model, so sections change no key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from spectral_surgery.tasks.config import SurgeryConfig, default_data_dir, names_edit_sections
from spectral_surgery.tasks.decision.gate import DecisionConfig, GateConfig
from spectral_surgery.tasks.delivery.mlflow_run import MlflowConfig
from spectral_surgery.tasks.secrets import redact_url
from spectral_surgery.tasks.decision.sequential import SequentialConfig
from spectral_surgery.tasks.decision.edit_budget import EditBudgetConfig
from spectral_surgery.tasks.night_plan import WindowConfig, parse_duration
from spectral_surgery.tasks.run_sections import SECTIONS, flatten_sections, sectioned




class LadderConfig(BaseModel):
    """The control ladder every decision carries besides the random controls (issue 9; EXTENSIONS.md §8.3, §8.4).

    Each is evaluated like a candidate on the task benchmark and recorded in the decision sentence. All on by
    default: a decision that cannot say whether a global rescale explains its gain, or whether the adapter was applied
    at all, is not one a platform team can act on. Each costs one more evaluation per adapter (the scalar also a few
    calibration-loss passes to choose γ); turn one off only knowingly.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    global_scalar: bool = Field(True, description="Calibrated global scalar σ·γ (γ on held-out calibration data): "
                                "a policy that does not beat it is explained by a global rescale; it may be promoted.")
    zero_rebuild: bool = Field(True, description="Zero-rebuild canary (σ unchanged, same write path): must match the "
                               "baseline's per-document outcomes within gate.canary_tolerance, else nothing is "
                               "promoted.")
    bare_base: bool = Field(True, description="Adapter-applied canary: the baseline must differ from the bare base "
                            "model on some documents, else nothing is promoted.")


# Where each RunConfig setting enters the keys (tests/tasks/test_run_config.py fails on a field missing here):
# "result" = RunConfig.result_hash (and through it every stage key that reads it); "evaluation" = the evaluator
# identity of every evaluation key (flows.worker.evaluator_identity); "adapter" = the per-adapter result key, only
# where it is used (flows.refine_adapter.adapter_config_hash: the sandbox, for code benchmarks); "no" = determines
# no result (where things live, how much runs at once, whether and how production moves, who is recorded).
# Within "surgery", each candidate is keyed by its own policy's settings only (tasks.keys.candidate_key).
SETTING_KEYS: dict[str, str] = {
    "surgery": "result", "gate": "result", "ladder": "result", "sequential": "result", "edit_budget": "result",
    "evaluator": "result", "evaluator_options": "result", "benchmark_profile": "result", "task_limit": "result",
    "task_limits": "result", "guard_limit": "result", "guard": "result", "guard_arms": "result",
    "calib_source": "result", "decision": "result", "device": "evaluation", "sandbox": "adapter",
    "data_dir": "no", "registry_url": "no", "concurrency": "no", "task_runner": "no", "dask_address": "no",
    "dask_workers": "no", "window": "no", "promote": "no", "review_window": "no", "actor": "no", "mlflow": "no",
}


class RunConfig(BaseModel):
    """Everything a nightly refinement run needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(default_factory=default_data_dir, description="Registry, artifact store and model cache.")
    registry_url: str | None = Field(None, description="SQLAlchemy URL; None = $SPECTRAL_SURGERY_DB, else a SQLite "
                                     "file in data_dir. Its password is never written down (see tasks.secrets).")
    surgery: SurgeryConfig = Field(default_factory=SurgeryConfig, description="Policies, targets, calibration.")
    gate: GateConfig = Field(default_factory=GateConfig, description="Promotion thresholds.")
    decision: DecisionConfig = Field(
        default_factory=DecisionConfig, description="Which per-document values decide: task (0/1 outcomes, the "
        "default) or continuous (the gold answer's log-likelihood margin, paired t-test; opt-in).")
    ladder: LadderConfig = Field(default_factory=LadderConfig, description="Controls and canaries of every decision.")
    sequential: SequentialConfig = Field(default_factory=SequentialConfig,
                                         description="Evaluate the task benchmark in looks and stop early.")
    edit_budget: EditBudgetConfig = Field(
        default_factory=EditBudgetConfig, description="Per task family, evaluate only the configured edits that won "
        "on past nights (off: every configured edit).")
    evaluator: str = Field("lm_eval", description="Registered evaluator name (lm_eval; fake is for tests).")
    evaluator_options: dict[str, Any] = Field(
        default_factory=dict, description="Keyword options of the evaluator (lm_eval: batch_size, max_gen_toks, "
        "arms_pass = one_pass | arm_by_arm, lora_multiply = stacked | peft, ...).")
    benchmark_profile: Literal["offline", "paper"] | None = Field(
        None,
        description="Benchmark set: offline = the suites shipped in the repo; paper = gsm8k/humaneval/ifeval/csqa."
    )
    sandbox: Literal["bwrap", "python-guard"] | None = Field(
        None, description="Where generated code of code benchmarks runs: bwrap = bubblewrap's OS boundary (needs "
        "the bubblewrap package); python-guard = the Python-level guard only, which hostile code can undo (opt-in, "
        "logged as a warning). None = $SPECTRAL_SURGERY_SANDBOX, else bwrap. Without a working bubblewrap a code "
        "benchmark is refused unless python-guard is chosen."
    )
    task_limit: int | None = Field(100, ge=1, description="Documents per task benchmark (same for every candidate).")
    task_limits: dict[str, int] = Field(
        default_factory=dict, description="Per task benchmark, documents instead of task_limit (e.g. {ss_mc: 200}): "
        "a cheap suite can be given the documents its decisions need (the power table) without paying as much on a "
        "generative one.")
    guard_limit: int | None = Field(100, ge=1, description="Prompts of the IFEval guard.")
    guard: bool = Field(True, description="Run the IFEval guard.")
    guard_arms: Literal["promotable", "all"] = Field(
        "promotable", description="Which arms the IFEval guard scores. promotable: only those whose verdict it can "
        "still change (an arm the gate rejects on its task evidence, or a random control, is not scored; the "
        "decision records each skip): the same verdicts and promotions as all, with fewer evaluations. all: every "
        "candidate and random control (the dashboard's reward-vs-risk view then has every arm's IFEval change).")
    calib_source: str | None = Field(
        None, description="Default calibration source (JSONL path or loader) for adapters that name none."
    )
    concurrency: int = Field(1, ge=1, le=256, description="Adapters refined at once (1 on a CPU machine).")
    task_runner: Literal["thread", "dask"] = Field("thread", description="Prefect task runner for the fan-out.")
    dask_address: str | None = Field(None, description="Scheduler address of an existing Dask cluster.")
    dask_workers: Literal["processes", "threads"] = Field(
        "processes", description="Workers of the LocalCluster started without dask_address: processes (adapters "
        "refined in parallel, one base model loaded in each worker) or threads of this process (one shared base "
        "model, so adapters take turns on it).")
    window: WindowConfig | None = Field(
        None, description="The night's window: wall_clock (e.g. 6h) and/or gpu_hours. The flow forecasts each "
        "adapter's cost from past nights, starts what fits in priority order and defers the rest to the next night "
        "(first in line); none = start everything. Decides what runs tonight, never what a result is.")
    promote: bool | Literal["review"] = Field(
        True, description="Move production pointers: true (the gate promotes), false (dry run: decide, do not "
        "promote) or review (a passing decision waits for `spectral-surgery approve REVIEW_ID` for review_window, "
        "then expires).")
    review_window: timedelta = Field(
        timedelta(hours=24), description="How long a decision under promote: review waits for approval: hours as a "
        "number or with a unit (36, '36h', '90m', '2d'), or an ISO 8601 duration ('PT36H').")
    device: str = Field("cpu", description="Torch device for calibration and evaluation.")
    actor: str = Field("nightly", description="Name recorded in the audit history for automatic promotions.")
    mlflow: MlflowConfig | None = Field(None, description="Mirror every decision into MLflow (a run per adapter "
                                        "version, promoted adapters as model versions with alias 'production'); "
                                        "None = off. Needs the 'mlflow' extra.")

    @model_validator(mode="before")
    @classmethod
    def _open_sections(cls, data: Any) -> Any:
        # a sectioned config (where/run/evaluate/decide) is the same flat config: the model and its keys stay flat
        if isinstance(data, dict) and any(s.name in data for s in SECTIONS):
            data = flatten_sections(data)
        if isinstance(data, dict) and isinstance(data.get("surgery"), dict):
            _register_edits_for(data["surgery"])
        return data

    def sections(self, mode: Literal["json", "python"] = "json") -> dict[str, dict[str, Any]]:
        """This config's dump grouped into its sections (:data:`tasks.run_sections.SECTIONS`): a file written from
        it validates to this config again."""
        return sectioned(self.model_dump(mode=mode))

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, v):
        # a string, so that JSON-mode validation (a config sent to another process) accepts it too
        return str(Path(v).expanduser() if v is not None else default_data_dir())

    @field_validator("review_window", mode="before")
    @classmethod
    def _window(cls, v):
        # hours by default: "review_window: 36" in a YAML file means a day and a half, not 36 seconds
        return parse_duration(v, "review_window")

    @field_validator("review_window")
    @classmethod
    def _positive_window(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError(f"review_window must be positive (e.g. 24 for a day), got {v}")
        return v

    @property
    def moves(self) -> bool:
        """Whether the gate's promotions move production pointers at once (``promote: true``)."""
        return self.promote is True

    @model_validator(mode="after")
    def _check(self) -> "RunConfig":
        if "random_index" in self.surgery.policies:
            raise ValueError(
                "surgery.policies lists random_index: the random control is added automatically for every seed in "
                "surgery.random_control_seeds; remove it from policies."
            )
        import spectral_surgery.tasks.surgery.policies  # noqa: F401  (registers every policy, the ladder's included)
        from spectral_surgery.tasks.surgery.policy_registry import ladder_member_problem

        if problem := ladder_member_problem(self.surgery.policies):
            raise ValueError(problem)
        from spectral_surgery.tasks.evaluation.benchmarks import list_benchmarks

        known = list_benchmarks()
        for name, n in self.task_limits.items():
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                raise ValueError(f"task_limits: unknown benchmark {name!r}" + (f"; did you mean {close[0]!r}?" if close
                                 else f"; known: {', '.join(known)}"))
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"task_limits.{name}: documents must be a whole number >= 1, got {n!r}")
        small = {b: n for b, n in self.task_limits.items() if n < self.sequential.looks}
        if self.sequential.enabled and small:
            raise ValueError(f"sequential.enabled needs every task_limits entry >= sequential.looks "
                             f"({self.sequential.looks}); got {small}")
        if self.sequential.enabled and (self.task_limit is None or self.task_limit < self.sequential.looks):
            raise ValueError(f"sequential.enabled needs task_limit >= sequential.looks ({self.sequential.looks}), got "
                             f"task_limit={self.task_limit}: set task_limit to the document budget of the last look")
        if self.sequential.enabled and self.decision.metric == "continuous":
            raise ValueError("decision.metric: continuous cannot be combined with sequential.enabled (the looks spend "
                             "alpha for the task metric's McNemar test): set decision.metric: task or turn sequential "
                             "off.")
        if "arms_pass" in self.evaluator_options:
            from spectral_surgery.tasks.evaluation.evaluate import ARMS_PASSES, check_arms_pass

            arms_pass = self.evaluator_options["arms_pass"]
            if self.evaluator != "lm_eval":
                raise ValueError(f"evaluator_options.arms_pass: only the lm_eval evaluator takes it (evaluator is "
                                 f"{self.evaluator!r}); remove it or set evaluator: lm_eval")
            if arms_pass not in ARMS_PASSES:
                raise ValueError(f"evaluator_options.arms_pass must be one_pass (every arm of an adapter scored "
                                 f"together, the default) or arm_by_arm (one lm-eval run per arm, the reference "
                                 f"path), got {arms_pass!r}")
            try:
                check_arms_pass(arms_pass)  # vllm: refused here when it is not installed
            except ValueError as e:
                raise ValueError(f"evaluator_options.arms_pass: {e}") from None
        if "dtype" in self.evaluator_options:
            from spectral_surgery.tasks.evaluation.dtypes import model_dtype_name

            model_dtype_name(self.evaluator_options["dtype"], self.device, cuda_bf16=False)  # raises naming the fix
        if "lora_multiply" in self.evaluator_options:
            from spectral_surgery.tasks.evaluation.evaluate import check_lora_multiply

            if self.evaluator != "lm_eval":
                raise ValueError(f"evaluator_options.lora_multiply: only the lm_eval evaluator takes it (evaluator "
                                 f"is {self.evaluator!r}); remove it or set evaluator: lm_eval")
            try:
                check_lora_multiply(self.evaluator_options["lora_multiply"])
            except ValueError as e:
                raise ValueError(f"evaluator_options.lora_multiply: {e} (stacked: the one pass's batched LoRA "
                                 f"multiply, the default; peft: PEFT's mixed-adapter batch)") from None
        if self.gate.require_control and not self.surgery.random_control_seeds:
            raise ValueError("gate.require_control is on but surgery.random_control_seeds is empty: add a seed or "
                             "set gate.require_control=false.")
        return self

    @field_serializer("registry_url")
    def _no_password(self, url: str | None) -> str | None:
        # every dump (the registry's run snapshot, Prefect's flow parameters, --json) leaves the password out
        return redact_url(url)

    @property
    def profile(self) -> str:
        """The benchmark profile in force: ``benchmark_profile``, else the environment's
        (:func:`tasks.evaluation.benchmarks.default_profile`)."""
        from spectral_surgery.tasks.evaluation.benchmarks import default_profile

        return self.benchmark_profile or default_profile()

    def resolved(self) -> "RunConfig":
        """This config with what it would read from the environment pinned (``benchmark_profile``, ``sandbox``), so
        that every process of a run, and every key, uses the same values whatever their environment."""
        from spectral_surgery.tasks.evaluation.sandbox import chosen_backend

        return self.model_copy(update={"benchmark_profile": self.profile, "sandbox": chosen_backend(self.sandbox)})

    def result_hash(self, adapter_overrides: dict | None = None) -> str:
        """Hash of everything that determines candidates, evaluations and decisions for one adapter.

        Resolved values, not requests: ``benchmark_profile: null`` is keyed as the profile it resolves to here (the
        environment picks it), so switching ``HF_HUB_OFFLINE`` switches the key with the suites. The sandbox is
        keyed per adapter, where a code benchmark uses it (``flows.refine_adapter.adapter_config_hash``).
        """
        keyed = self.model_dump(
            mode="json",
            include={"surgery", "gate", "ladder", "evaluator", "evaluator_options", "task_limit",
                     "guard_limit", "guard", "calib_source"},
        )
        keyed["benchmark_profile"] = self.profile
        if self.task_limits:  # empty, it changes nothing: hashes stay those of runs made before it existed
            keyed["task_limits"] = dict(sorted(self.task_limits.items()))
        if self.guard_arms != "promotable":  # the default changes nothing: it decides as every arm guarded does
            keyed["guard_arms"] = self.guard_arms
        if self.edit_budget.enabled:  # off, it changes nothing: hashes stay those of runs made before it existed
            keyed["edit_budget"] = self.edit_budget.model_dump(mode="json")
        if self.sequential.enabled:  # off, it changes nothing: hashes stay those of runs made before it existed
            keyed["sequential"] = self.sequential.model_dump(mode="json")
        if self.decision != DecisionConfig():  # the default changes nothing: hashes stay those made before it existed
            keyed["decision"] = self.decision.model_dump(mode="json")
        keyed["adapter_overrides"] = adapter_overrides or {}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()

    def limit_for(self, benchmark: str) -> int | None:
        """Documents of ``benchmark`` as a task benchmark: its ``task_limits`` entry, else ``task_limit``."""
        return self.task_limits.get(benchmark, self.task_limit)

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
        _register_edits_for(merged)
        return SurgeryConfig.model_validate(merged)


def _register_edits_for(surgery: dict[str, Any]) -> None:
    """Import the edits (their registrations say what each ``edit.<name>`` section is) when a surgery mapping
    names such a section; a config without one does not pay for importing torch."""
    if names_edit_sections(surgery.get("edit")):
        import spectral_surgery.tasks.surgery.policies  # noqa: F401  (registers every edit and its settings)


def read_config_file(path: str | Path, *, option: str = "--config") -> dict[str, Any]:
    """The mapping in a YAML (or ``.json``) run-config file: the one loader of every config file the project reads.

    Values only (never validated here: defaults such as ``data_dir`` resolve on the machine that runs the flow);
    :class:`RunConfig` validates the mapping where it is used. A sectioned file (``where``, ``run``, ``evaluate``,
    ``decide``) is returned flat (:func:`tasks.run_sections.flatten_sections`), so command-line options override its
    fields as they do a flat file's.

    Args:
        path: The file.
        option: How the caller names it in errors (``--config``).

    Raises:
        FileNotFoundError: no such file. ValueError: not valid YAML/JSON, not a mapping, or a section holds what
            it cannot (naming the file, the section and the field).
    """
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{option} {path}: no such file; give the path of an existing YAML or JSON file")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a run config is a mapping of RunConfig fields, got {type(data).__name__}")
    return flatten_sections(data, where=str(path))


if __name__ == "__main__":  # python -m spectral_surgery.tasks.run_config docs/operations.md: rewrite the sections table
    import sys

    from spectral_surgery.tasks.run_sections import BEGIN, END, sections_markdown

    for arg in sys.argv[1:]:
        page = Path(arg)
        text = page.read_text()
        start, stop = text.find(BEGIN), text.find(END)
        if start < 0 or stop < start:
            raise SystemExit(f"{page}: needs the lines {BEGIN!r} and {END!r} (in that order) around the table")
        page.write_text(text[: start + len(BEGIN)] + "\n" + sections_markdown(SETTING_KEYS) + "\n" + text[stop:])
