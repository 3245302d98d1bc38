"""Evaluate a base model under several LoRA adapters ("subjects") on one benchmark, per document.

``LmEvalEvaluator`` loads the base model once and runs lm-eval's ``simple_evaluate`` per subject, returning
per-document outcomes that are aligned across subjects (same documents, same order) for the paired tests of the
gate. ``arms_pass="one_pass"`` (default) loads every subject as a named PEFT adapter on one ``PeftModel`` and
scores a benchmark's requests for all of them in one pass (:mod:`tasks.evaluation.arms`); ``arm_by_arm`` (the
reference) hot-swaps the subjects and lets lm-eval score each one on its own; ``vllm`` makes every subject a LoRA
request of one vLLM engine through lm-eval's vLLM backend (where vllm is installed).
``FakeEvaluator`` ("fake") is for tests only: deterministic pseudo-outcomes with no model at all.

Both are registered by name (:func:`register_evaluator` / :func:`get_evaluator`) and satisfy the
:class:`Evaluator` protocol; neither inherits from anything. A subject whose path is ``None``
(:data:`BARE_BASE`) is the bare base model, scored on the same documents (the "adapter is applied" canary).

Over 400 lines: the evaluator (subjects hot-swapped on one loaded base) and its per-document results are one
contract with lm-eval; split candidate: the per-document rows (doc_rows, split_doc_rows).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

from spectral_surgery.tasks.evaluation.arms import BASE_ARM, ArmsScoring
from spectral_surgery.tasks.evaluation.benchmarks import BenchmarkSpec, get_benchmark
from spectral_surgery.tasks.names import Registry

log = logging.getLogger(__name__)

BARE_BASE = None  # subject path meaning "the base model with every adapter disabled" (the adapter-applied canary)
SUITES_DIR = Path(__file__).resolve().parent / "suites"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
_SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+\-]*$")
# LmEvalEvaluator(arms_pass=...): all subjects together, one by one, or as LoRA requests of one vLLM engine
ARMS_PASSES = ("one_pass", "arm_by_arm", "vllm")


@dataclass(frozen=True)
class EvalResult:
    """One subject's score on one benchmark, with the per-document evidence behind it.

    Attributes:
        subject: Subject name (``baseline``, a candidate, a random control, ...).
        benchmark: Registered benchmark name.
        metric: The deciding metric (``BenchmarkSpec.metric``).
        value: Aggregate of ``metric`` over the documents (lm-eval's number).
        n: Number of documents.
        stderr: Standard error of ``value`` (None if undefined, e.g. n = 1).
        higher_is_better: Direction of ``metric``.
        doc_ids: Document ids, in the same order for every subject of one call.
        outcomes: Per-document values of ``metric`` (0/1 for accuracy-type metrics), aligned with ``doc_ids``.
        samples_path: JSONL of lm-eval's logged samples for this subject (None if not written).
        scores: Continuous per-document score aligned with ``doc_ids``: the gold answer's log-likelihood margin on
            multiple-choice tasks (:func:`continuous_scores_from_samples`), the reference answer's teacher-forced mean
            token log-prob on generative tasks that name one (:func:`reference_pairs`); None where there is none.
        scoring: How the call scored its subjects (path, fallbacks, shared seconds); None for test doubles.
    """

    subject: str
    benchmark: str
    metric: str
    value: float
    n: int
    stderr: float | None
    higher_is_better: bool
    doc_ids: list[str]
    outcomes: list[float]
    samples_path: str | None
    scores: list[float] | None = None
    scoring: ArmsScoring | None = None


def doc_rows(result: EvalResult) -> list[list]:
    """The stored per-document form of a result: ``[doc_id, outcome, score]`` triples, or ``[doc_id, outcome]`` pairs
    when it has no scores (``evaluations.doc_outcomes_json``; no schema change: the column is JSON)."""
    if result.scores is None:
        return [[d, o] for d, o in zip(result.doc_ids, result.outcomes)]
    return [[d, o, x] for d, o, x in zip(result.doc_ids, result.outcomes, result.scores)]


def split_doc_rows(rows: Sequence[Sequence[Any]]) -> tuple[list[str], list[float], list[float] | None]:
    """``(doc_ids, outcomes, scores)`` from stored rows in their order; scores None unless every row is a triple
    with a score (rows written before scores existed are ``[doc_id, value]`` pairs: no score)."""
    ids = [str(r[0]) for r in rows]
    outcomes = [float(r[1]) for r in rows]
    has = bool(rows) and all(len(r) > 2 and r[2] is not None for r in rows)
    return ids, outcomes, [float(r[2]) for r in rows] if has else None


class Evaluator(Protocol):
    """Scores subjects (PEFT adapter dirs on one base model, or None = the bare base) on a benchmark."""

    key: str  # identity of the evaluator and its settings; part of evaluation cache keys

    def evaluate(
        self, base_model: str, subjects: dict[str, Path | None], benchmark: str, *, limit: int | None, out_dir: Path,
        on_result: Callable[[EvalResult, float], None] | None = None, docs: Sequence[int] | None = None,
    ) -> dict[str, EvalResult]:
        """Evaluate every subject on the same first ``limit`` documents (or exactly the document indices ``docs``,
        with ``limit=None``: how a sequential look adds only new documents); write samples under ``out_dir``.

        ``on_result(result, seconds)`` is called as each subject finishes (progress for long nightly runs).
        """
        ...


EVALUATORS: Registry[Callable[..., Evaluator]] = Registry("evaluator")


def register_evaluator(name: str) -> Callable:
    """Class decorator registering an evaluator factory under ``name``; raises on duplicates."""
    return EVALUATORS.register(name)


def get_evaluator(name: str, **kwargs: Any) -> Evaluator:
    """Instantiate the evaluator registered as ``name`` with ``kwargs``; ``UnknownNameError`` with close matches."""
    return EVALUATORS.get(name)(**kwargs)


def require_evaluator(name: str) -> None:
    """Raise ``UnknownNameError`` (with close matches) unless ``name`` is registered; builds nothing."""
    EVALUATORS.canonical(name)


def runs_generated_code(name: str) -> bool:
    """Whether the evaluator ``name`` executes generated code on code benchmarks (False only for test doubles)."""
    return name not in EVALUATORS or bool(getattr(EVALUATORS.get(name), "runs_generated_code", True))


def evaluator_identity(name: str, **kwargs: Any) -> str:
    """The ``key`` the evaluator ``name`` built with ``kwargs`` would have, without building it (no model load).

    Evaluations are keyed by it, so a run can tell which scores are already recorded before it loads anything.
    """
    return EVALUATORS.get(name).identity(**kwargs)


# ----------------------------------------------------------------------------------------------- helpers
def mean_stderr(xs: list[float]) -> float | None:
    """Standard error of the mean, sample std (n-1) / sqrt(n), as lm-eval's ``mean_stderr``."""
    n = len(xs)
    if n < 2:
        return None
    m = sum(xs) / n
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


def adapter_weights_file(adapter_dir: Path) -> Path:
    """The weights file of a PEFT adapter dir; ``FileNotFoundError`` naming the dir otherwise."""
    for name in WEIGHT_FILES:
        if (Path(adapter_dir) / name).is_file():
            return Path(adapter_dir) / name
    raise FileNotFoundError(f"{adapter_dir}: no {' or '.join(WEIGHT_FILES)} (not a PEFT adapter dir)")


def _check_docs(docs: Sequence[int] | None, limit: int | None) -> list[int] | None:
    """``docs`` as a list of distinct non-negative document indices, ascending; None when not given."""
    if docs is None:
        return None
    if limit is not None:
        raise ValueError(f"evaluate: give limit (first N documents) or docs (chosen indices), not both "
                         f"(limit={limit!r}, {len(docs)} docs)")
    out = sorted(docs)
    if not out or any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in out) or len(set(out)) != len(out):
        raise ValueError(f"evaluate: docs must be distinct non-negative int document indices, got {list(docs)[:10]}")
    return out


def _check_inputs(subjects: dict[str, Path | None], limit: int | None) -> None:
    if not subjects:
        raise ValueError("evaluate: subjects is empty; give at least one name -> adapter dir (or None)")
    for name, path in subjects.items():
        if not _SUBJECT_RE.match(name) or name in (".", ".."):
            raise ValueError(f"evaluate: subject name {name!r} must be a plain file name ([A-Za-z0-9_.+-])")
        if path is not None:
            if not (Path(path) / "adapter_config.json").is_file():
                raise FileNotFoundError(f"subject {name!r}: {path}/adapter_config.json not found")
            adapter_weights_file(Path(path))
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"evaluate: limit must be a positive int or None, got {limit!r}")


def suites_digest() -> str:
    """sha256 over the offline suites' YAML, data and code, so a changed suite changes evaluator keys."""
    h = hashlib.sha256()
    for p in sorted(SUITES_DIR.iterdir()):
        if p.suffix in (".yaml", ".jsonl", ".py") and p.is_file():
            h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    from lm_eval.utils import handle_non_serializable

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, default=handle_non_serializable, ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # a reader never sees half a file
    return str(path)


def outcomes_from_samples(samples: list[dict], spec: BenchmarkSpec) -> tuple[list[str], list[float], list[dict]]:
    """Per-document ``spec.metric`` from lm-eval's logged samples of one task, sorted by doc id.

    Returns:
        ``(doc_ids, outcomes, rows)`` where ``rows`` are the samples of ``spec.filter``.

    Raises:
        KeyError: No sample carries the filter or the metric (names the task and what exists).
    """
    rows = sorted((s for s in samples if s.get("filter") == spec.filter), key=lambda s: int(s["doc_id"]))
    if not rows:
        filters = sorted({str(s.get("filter")) for s in samples})
        raise KeyError(f"{spec.lm_eval_task}: no logged samples for filter {spec.filter!r} (have {filters})")
    if spec.metric not in rows[0]:
        raise KeyError(f"{spec.lm_eval_task}: samples have no metric {spec.metric!r} (have {rows[0].get('metrics')})")
    return [str(s["doc_id"]) for s in rows], [float(s[spec.metric]) for s in rows], rows


def _ll(resp: Any) -> float:
    """The log-likelihood of one logged multiple-choice response: ``[ll, is_greedy]`` (or ``[[ll, is_greedy]]``)."""
    while isinstance(resp, (list, tuple)) and resp and isinstance(resp[0], (list, tuple)):
        resp = resp[0]
    return float(resp[0] if isinstance(resp, (list, tuple)) else resp)


def continuous_scores_from_samples(rows: list[dict], spec: BenchmarkSpec, *,
                                   target_delimiter: str = " ") -> list[float] | None:  # fmt: skip
    """Per-document continuous score beside the 0/1 outcome: the gold answer's log-likelihood margin.

    For a multiple-choice row (per-choice ``filtered_resps`` ``[ll, is_greedy]``, ``arguments`` ``[context,
    continuation]`` and the gold index in ``target``) the score is ``max_{gold} s_i − max_{wrong} s_j`` with ``s``
    the quantity lm-eval's ``process_results`` takes the argmax of for ``spec.metric``: the raw log-likelihood for
    ``acc``, ``ll / len(choice)`` in characters for ``acc_norm`` (the choice is the continuation without the task's
    ``target_delimiter``, lm-eval's default " "). So the margin is positive exactly when the document is solved
    (ties aside), and it says by how much.

    Args:
        rows: lm-eval's logged samples of one task and filter, one per document (:func:`outcomes_from_samples`).
        spec: The benchmark; its metric chooses the normalisation.
        target_delimiter: The task's delimiter between context and choice.

    Returns:
        One margin (nats, or nats per character for ``acc_norm``) per row, or None when the rows are not
        multiple-choice log-likelihoods or the metric is not ``acc``/``acc_norm`` (generative tasks: not scored yet).
    """
    if spec.metric not in ("acc", "acc_norm") or not rows:
        return None
    out = []
    for row in rows:
        resps, target = row.get("filtered_resps"), row.get("target")
        if not isinstance(resps, list) or len(resps) < 2 or isinstance(target, (str, bool)) or target is None:
            return None
        try:
            lls = [_ll(r) for r in resps]
        except (TypeError, ValueError, IndexError):
            return None
        if spec.metric == "acc_norm":
            conts = [str(a[1]) for a in row.get("arguments") or []]
            if len(conts) != len(lls):
                return None
            lens = [float(len(c[len(target_delimiter):] if c.startswith(target_delimiter) else c)) for c in conts]
            lls = [ll / n for ll, n in zip(lls, lens)]
        gold = {int(t) for t in (target if isinstance(target, list) else [target])}
        if not gold <= set(range(len(lls))) or len(gold) == len(lls):
            return None
        out.append(max(lls[i] for i in gold) - max(ll for i, ll in enumerate(lls) if i not in gold))
    return out


def reference_pairs(rows: list[dict], spec: BenchmarkSpec, *,
                    target_delimiter: str = " ") -> list[tuple[str, str]] | None:  # fmt: skip
    """``(context, continuation)`` per generative row whose reference answer is teacher-forced for its score.

    The context is the prompt the row was generated from (few-shot examples and chat template included, as logged in
    ``arguments``); the continuation is ``target_delimiter`` + the document's ``spec.reference`` field, the form the
    few-shot examples show an answer in. None when the benchmark names no reference or a row lacks it.
    """
    if spec.reference is None or not rows:
        return None
    out = []
    for row in rows:
        args, ref = row.get("arguments") or [], (row.get("doc") or {}).get(spec.reference)
        if not args or not isinstance(args[0], (list, tuple)) or not isinstance(ref, str) or not ref.strip():
            return None
        out.append((str(args[0][0]), target_delimiter + ref.strip()))
    return out


def _reference_scores(lm: Any, pairs: list[tuple[str, str]]) -> list[float]:
    """Mean per-token log-probability of each continuation given its context, from lm-eval's own ``loglikelihood``
    (same tokenisation, batching and model as the task's requests)."""
    from lm_eval.api.instance import Instance

    reqs = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    lls = lm.loglikelihood(reqs, disable_tqdm=True)
    return [float(ll) / max(1, len(lm._encode_pair(c, x)[1])) for (ll, _), (c, x) in zip(lls, pairs)]


# ------------------------------------------------------------------------------------------ lm-eval backend
@dataclass
class _Base:
    model: Any  # transformers.PreTrainedModel
    tokenizer: Any
    peft: Any = None  # peft.PeftModel wrapping ``model`` once the first adapter is loaded
    # Loaded adapter name -> its weight-shaping config: a subject with the same config is swapped into it in place
    slots: dict[str, dict] = field(default_factory=dict)
    # one pass: a slot's adapter name -> its LoRA layers (module name, module), found once per config
    layers: dict[str, list] = field(default_factory=dict)


def _quiet_git_hash() -> str | None:
    """lm-eval's ``get_git_commit_hash`` without git's stderr: the commit of the working directory, or None."""
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


_ENV_INFO: dict = {}


def _cached_env_info(storage: dict) -> None:
    """lm-eval's ``add_env_info``, computed on the first call of the process and copied after that."""
    if not _ENV_INFO:
        from lm_eval.loggers.utils import add_env_info

        add_env_info(_ENV_INFO)
    storage.update(_ENV_INFO)


@register_evaluator("lm_eval")
class LmEvalEvaluator:
    """lm-eval ``simple_evaluate`` over hot-swapped PEFT adapters on one base model loaded once.

    Args:
        batch_size: Rows per forward pass, or ``"auto"``: on the one-pass path sized from the device's free memory
            before each pass (``torch.cuda.mem_get_info``, :mod:`tasks.evaluation.arms.memory`; 8 off CUDA), arm by
            arm lm-eval's own search.
        device: ``cuda``/``cpu``/...; None = CUDA if available.
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU) or a torch dtype name.
        max_gen_toks: Override of every generative task's ``max_gen_toks`` (None = the task's own).
        apply_chat_template: Wrap prompts in the tokenizer's chat template (instruct/chat bases).
        model: An already-loaded base model (used as-is: adapters are injected into it in place).
        tokenizer: Its tokenizer (required with ``model``).
        model_id: The ``base_model`` string that refers to ``model`` (default ``model.name_or_path``).
        max_cached_bases: Base models kept loaded at once (least recently used are dropped).
        reference_scores: On generative benchmarks with a reference answer (``BenchmarkSpec.reference``), also score
            it teacher-forced per subject for a continuous per-document score (off by default: on ss_arith with
            SmolLM2-135M on CPU the extra pass cost +66% of the generation time; log-likelihood benchmarks get their
            margin for free either way).
        arms_pass: ``one_pass`` (default): every subject is a named adapter of one ``PeftModel`` and a benchmark's
            requests are scored for all of them at once (:class:`tasks.evaluation.arms.lm.ArmsLM`), lm-eval still
            turning each subject's responses into its outcomes; ``arm_by_arm``: one lm-eval run per subject with
            its adapter swapped in (the reference path); ``vllm``: every subject a LoRA request of one vLLM engine
            through lm-eval's vLLM backend (:mod:`tasks.evaluation.arms.vllm_arms`; needs vllm, refused here
            without it; ``base_model`` must be a path or hub id vLLM loads). Part of :attr:`key`.
        lora_multiply: On the one-pass path, how a mixed batch's LoRA deltas are computed: ``stacked`` (default:
            each LoRA layer's arms stacked once per pass, one gathered batched multiply,
            :mod:`tasks.evaluation.arms.stacked_lora`) or ``peft`` (PEFT's mixed-adapter batch, a loop over the
            adapters in every layer; the path before the stacked one). The same outcomes by test; ``peft`` adds
            ``;lora=peft`` to :attr:`key`.
        vllm_options: Extra options of lm-eval's ``VLLM`` on the vllm path (``gpu_memory_utilization``,
            ``max_model_len``, ...).

    Attributes:
        base_loads: How many times a base model was loaded from disk/hub (for tests and logs).
        last_scoring: How the last :meth:`evaluate` call scored its subjects (also in each result's ``scoring``).

    Example:
        >>> ev = get_evaluator("lm_eval", batch_size=8)
        >>> res = ev.evaluate("HuggingFaceTB/SmolLM2-135M", {"baseline": Path("a/"), "cand": Path("b/")},
        ...                   "ss_mc", limit=100, out_dir=Path("runs/x"))
    """

    def __init__(self, *, batch_size: int | str = 8, device: str | None = None, dtype: str = "auto",
                 max_gen_toks: int | None = None, apply_chat_template: bool = False,
                 model: Any = None, tokenizer: Any = None,
                 model_id: str | None = None, max_cached_bases: int = 1,
                 reference_scores: bool = False, arms_pass: str = "one_pass", lora_multiply: str = "stacked",
                 vllm_options: dict[str, Any] | None = None) -> None:  # fmt: skip
        import torch

        if (model is None) != (tokenizer is None):
            raise ValueError("LmEvalEvaluator: give both model and tokenizer, or neither")
        self.arms_pass = check_arms_pass(arms_pass)
        self.lora_multiply = check_lora_multiply(lora_multiply)
        self.last_scoring: ArmsScoring | None = None
        self.batch_size = _check_batch_size(batch_size)
        if device is None:
            device = str(model.device) if model is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = device
        self.dtype = dtype
        self.max_gen_toks = max_gen_toks
        self.apply_chat_template = apply_chat_template
        self.max_cached_bases = max_cached_bases
        self.reference_scores = reference_scores
        self.base_loads = 0
        self._bases: OrderedDict[str, _Base] = OrderedDict()
        self._task_managers: dict[bool, Any] = {}
        self._adapter_seq = 0
        self.vllm_options = dict(vllm_options or {})
        self._vllm: dict[str, tuple[Any, dict]] = {}  # base model -> (ArmsVLLM, the options it was built with)
        if model is not None:
            self._bases[model_id or str(getattr(model, "name_or_path", "preloaded"))] = _Base(model.eval(), tokenizer)
        self.key = self.identity(batch_size=batch_size, device=self.device, dtype=dtype, max_gen_toks=max_gen_toks,
                                 apply_chat_template=apply_chat_template, arms_pass=arms_pass,
                                 lora_multiply=lora_multiply,
                                 model_dtype=None if model is None else str(model.dtype),
                                 reference_scores=reference_scores)

    @staticmethod
    def identity(*, batch_size: int | str = 8, device: str | None = None, dtype: str = "auto",
                 max_gen_toks: int | None = None, apply_chat_template: bool = False, model_dtype: str | None = None,
                 reference_scores: bool = False, arms_pass: str = "one_pass", lora_multiply: str = "stacked",
                 **_ignored: Any) -> str:
        """What determines this evaluator's scores (library versions, device kind, dtype, batch, generation, suites,
        how the arms are scored).

        ``arm_by_arm`` keeps the key the evaluator had before the one-pass path existed (its scores are those);
        ``one_pass`` adds ``;arms=one_pass`` (the same outcomes by test, log-likelihoods equal only to ~1e-5);
        its default LoRA multiply (``stacked``) keeps that key, ``lora_multiply="peft"`` adds ``;lora=peft``.
        ``model_dtype`` is the dtype of a preloaded model (it replaces ``dtype``); other options that do not change
        scores (``model``, ``tokenizer``, ``model_id``, ``max_cached_bases``) are ignored.
        """
        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dt = dtype if model_dtype is None else str(model_dtype).removeprefix("torch.")
        return (
            f"lm_eval={version('lm_eval')};transformers={version('transformers')};peft={version('peft')};"
            f"torch={torch.__version__.split('+')[0]};device={str(device).split(':')[0]};dtype={dt};"
            f"bs={batch_size};max_gen_toks={max_gen_toks};chat={apply_chat_template};suites={suites_digest()}"
            + (";reference_scores" if reference_scores else "")  # off: the keys of evaluations made before it
            + ("" if check_arms_pass(arms_pass) == "arm_by_arm" else f";arms={arms_pass}")
            + (f";lora={lora_multiply}" if arms_pass == "one_pass" and check_lora_multiply(lora_multiply) != "stacked"
               else "")
            + (f";vllm={version('vllm')}" if arms_pass == "vllm" else "")
        )

    # -- model handling
    def _torch_dtype(self):
        import torch

        from spectral_surgery.tasks.evaluation.dtypes import model_dtype_name

        cuda_bf16 = self.device.startswith("cuda") and torch.cuda.is_bf16_supported()
        return getattr(torch, model_dtype_name(self.dtype, self.device, cuda_bf16=cuda_bf16))

    def _base(self, base_model: str) -> _Base:
        if base_model in self._bases:
            self._bases.move_to_end(base_model)
            return self._bases[base_model]
        from transformers import AutoModelForCausalLM, AutoTokenizer

        while len(self._bases) >= self.max_cached_bases:
            self._bases.popitem(last=False)
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=self._torch_dtype()).to(self.device).eval()
        tokenizer = AutoTokenizer.from_pretrained(base_model)
        self.base_loads += 1
        self._bases[base_model] = entry = _Base(model, tokenizer)
        return entry

    def _load_adapter(self, base: _Base, path: Path) -> str:
        """Make the adapter at ``path`` the active one; returns its PEFT adapter name.

        Candidates of one adapter share its config (same targets, ranks, alphas): only their weights differ, so
        the first one is injected (PEFT walks every module to wrap the targets: ~0.7 s on a 30-layer model) and
        each next one is swapped into those LoRA layers in place (``set_peft_model_state_dict``: milliseconds).
        An adapter with another config gets layers of its own.
        """
        from peft import PeftModel
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        config = _weight_config(path)
        name = next((n for n, c in base.slots.items() if c == config), None)
        if name is not None:
            state = load_peft_weights(str(path), device=str(next(base.peft.parameters()).device))
            result = set_peft_model_state_dict(base.peft, state, adapter_name=name)
            missing = [k for k in result.missing_keys if ".lora_" in k and f".{name}." in k]
            if result.unexpected_keys or missing:  # never evaluate a half-swapped adapter
                raise RuntimeError(f"{path}: swapping its weights into loaded adapter layers left "
                                   f"{len(missing)} LoRA weights unset and {len(result.unexpected_keys)} unused "
                                   f"(first: {(missing + list(result.unexpected_keys))[:3]})")
        else:
            self._adapter_seq += 1
            name = f"subject{self._adapter_seq}"  # unique: subject names repeat across calls ("baseline")
            if base.peft is None:
                base.peft = PeftModel.from_pretrained(base.model, str(path), adapter_name=name, is_trainable=False)
            else:
                base.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
            base.peft.to(self.device).eval()
            base.slots[name] = config
        base.peft.set_adapter(name)
        return name

    def _task_manager(self, spec: BenchmarkSpec):
        from lm_eval.tasks import TaskManager

        # Indexing lm-eval's ~15k built-in YAMLs takes seconds; local suites do not need them.
        with_defaults = spec.kind == "hub"
        if with_defaults not in self._task_managers:
            self._task_managers[with_defaults] = TaskManager(
                include_path=str(SUITES_DIR), include_defaults=with_defaults
            )
        return self._task_managers[with_defaults]

    # -- evaluation
    def _run(self, lm_model: Any, tokenizer: Any, spec: BenchmarkSpec, limit: int | None,
             docs: list[int] | None = None) -> dict:
        from lm_eval.models.huggingface import HFLM

        hflm = HFLM(pretrained=lm_model, tokenizer=tokenizer, batch_size=self.batch_size)
        return self._simple_evaluate(hflm, spec, limit, docs)

    def _simple_evaluate(self, lm: Any, spec: BenchmarkSpec, limit: int | None, docs: list[int] | None) -> dict:
        """lm-eval's ``simple_evaluate`` of one task on the lm-eval model ``lm``, samples logged, caches off."""
        from lm_eval import evaluator as lm_evaluator
        from lm_eval import simple_evaluate

        # simple_evaluate records `git describe` of the caller's working directory (meaningless here: results
        # carry the adapter and config hashes) and lets git print "fatal: not a git repository" to our stderr
        # once per subject outside a checkout. Same lookup, git's stderr discarded.
        lm_evaluator.get_git_commit_hash = _quiet_git_hash
        # ... and it collects torch's full environment report (pip, conda, nvidia-smi subprocesses: 0.5-2 s) for
        # every call, i.e. for every subject; the environment does not change within a process: collect it once.
        lm_evaluator.add_env_info = _cached_env_info

        results = simple_evaluate(
            model=lm,
            tasks=[spec.lm_eval_task],
            limit=limit,
            samples=None if docs is None else {spec.lm_eval_task: docs},  # these document indices only
            log_samples=True,
            task_manager=self._task_manager(spec),
            # lm-eval's request cache is keyed by task and prompts, not by model: sharing it across
            # subjects would hand one adapter's answers to another. Both caches stay off.
            use_cache=None,
            cache_requests=False,
            gen_kwargs={"max_gen_toks": self.max_gen_toks} if self.max_gen_toks else None,
            confirm_run_unsafe_code=spec.executes_code,
            apply_chat_template=self.apply_chat_template,
            bootstrap_iters=0,  # we compute the stderr of the mean from the outcomes ourselves
        )
        if results is None:
            raise RuntimeError(f"lm-eval returned no results for {spec.lm_eval_task} (not rank 0?)")
        # generative tasks with a reference answer: its teacher-forced mean token log-prob, the continuous score
        pairs = None if not self.reference_scores else reference_pairs(
            outcomes_from_samples(results["samples"][spec.lm_eval_task], spec)[2], spec)
        if pairs is not None:
            results["reference_scores"] = _reference_scores(lm, pairs)
        return results

    def evaluate(
        self, base_model: str, subjects: dict[str, Path | None], benchmark: str, *, limit: int | None, out_dir: Path,
        on_result: Callable[[EvalResult, float], None] | None = None, docs: Sequence[int] | None = None,
    ) -> dict[str, EvalResult]:
        """Evaluate each subject on the first ``limit`` documents of ``benchmark`` (or on the indices ``docs``).

        Args:
            base_model: Hub id or local dir of the base model (or the ``model_id`` of a preloaded model).
            subjects: Name -> PEFT adapter dir; None = the bare base model.
            benchmark: Registered benchmark name (:mod:`tasks.evaluation.benchmarks`).
            limit: First N documents (None = ``spec.default_limit``, then all).
            out_dir: Samples go to ``out_dir/<subject>/<benchmark>.jsonl``.
            on_result: Called with each subject's result and its seconds as it finishes.
            docs: Document indices to evaluate instead of the first ``limit`` (lm-eval's ``samples=``); their
                ``doc_ids`` are these indices.

        Returns:
            Subject name -> :class:`EvalResult`, all with identical ``doc_ids``.
        """
        spec = get_benchmark(benchmark)
        _check_inputs(subjects, limit)
        chosen = _check_docs(docs, limit)
        limit = limit if limit is not None or chosen is not None else spec.default_limit
        if spec.executes_code:
            from spectral_surgery.tasks.evaluation.sandbox import resolve_backend

            resolve_backend()  # before the model loads: no usable sandbox refuses the benchmark, saying how to fix
            # HF_ALLOW_CODE_EVAL is never set here: every registered code benchmark runs in the sandbox; a user's
            # own hub task scored by HF evaluate's code_eval needs them to set it themselves
        if self.arms_pass == "vllm":  # vLLM loads the base itself: no transformers model here
            out = self._evaluate_vllm(base_model, subjects, spec, limit, chosen, Path(out_dir), on_result)
            _check_aligned(out)
            self.last_scoring = next(iter(out.values())).scoring
            return out
        base = self._base(base_model)
        try:
            if self.arms_pass == "one_pass":
                out = self._evaluate_one_pass(base, subjects, spec, limit, chosen, Path(out_dir), on_result)
            else:
                out = self._evaluate_arm_by_arm(base, subjects, spec, limit, chosen, Path(out_dir), on_result)
        finally:
            if base.peft is not None:
                # Drop this call's adapters and the LoRA layers themselves: the base goes back to pristine
                # (also a caller's preloaded model) and memory does not grow over a fleet of adapters.
                base.model = base.peft.unload()
                base.peft = None
                base.slots.clear()
                base.layers.clear()
        _check_aligned(out)
        self.last_scoring = next(iter(out.values())).scoring
        return out

    def _evaluate_arm_by_arm(self, base: _Base, subjects: dict[str, Path | None], spec: BenchmarkSpec,
                             limit: int | None, chosen: list[int] | None, out_dir: Path,
                             on_result: Callable[[EvalResult, float], None] | None) -> dict[str, EvalResult]:
        """One lm-eval run per subject, its adapter swapped in (the bare base: adapters disabled)."""
        out: dict[str, EvalResult] = {}
        scoring = ArmsScoring("arm_by_arm", 1)
        for subject, path in subjects.items():
            t0 = time.perf_counter()
            if path is None:
                if base.peft is not None:
                    with base.peft.disable_adapter():
                        res = self._run(base.peft, base.tokenizer, spec, limit, chosen)
                else:
                    res = self._run(base.model, base.tokenizer, spec, limit, chosen)
            else:
                self._load_adapter(base, Path(path))
                res = self._run(base.peft, base.tokenizer, spec, limit, chosen)
            out[subject] = self._result(subject, spec, res, out_dir, scoring)
            if on_result is not None:
                on_result(out[subject], time.perf_counter() - t0)
        return out

    def _evaluate_one_pass(self, base: _Base, subjects: dict[str, Path | None], spec: BenchmarkSpec,
                           limit: int | None, chosen: list[int] | None, out_dir: Path,
                           on_result: Callable[[EvalResult, float], None] | None) -> dict[str, EvalResult]:
        """Every subject a named adapter of one ``PeftModel``; lm-eval runs per subject, the model work once.

        The first subject's lm-eval run scores the requests for every subject (:class:`ArmsLM`); the others are
        served from its cache. A subject's ``on_result`` seconds are its own wall time outside that shared work
        plus an equal share of it (the shared seconds / the number of arms).
        """
        from spectral_surgery.tasks.evaluation.arms.lm import ArmsLM

        arm_of = {subject: BASE_ARM if path is None else self._add_adapter(base, Path(path))
                  for subject, path in subjects.items()}
        model = base.model if base.peft is None else base.peft
        if base.peft is not None:
            base.peft.to(self.device).eval()
        # the first subject (the flow's baseline, when it is to be scored) decodes generative documents; every
        # other subject is verified against its continuation and decodes on only where it diverges
        lm = ArmsLM(model, base.tokenizer, arms=list(arm_of.values()), batch_size=self.batch_size,
                    lora_multiply=self.lora_multiply)
        subject_of = {arm: subject for subject, arm in arm_of.items()}
        out: dict[str, EvalResult] = {}
        for subject in subjects:
            t0, shared0 = time.perf_counter(), lm.pass_seconds
            lm.serve(arm_of[subject])
            res = self._simple_evaluate(lm, spec, limit, chosen)
            own = time.perf_counter() - t0 - (lm.pass_seconds - shared0)
            # the first run did the model work for every arm: from then on the shared seconds are known
            gen = lm.generation_stats
            diverged = () if gen is None else tuple((subject_of[a.arm], a.diverged, a.verified + a.diverged)
                                                    for a in gen.arms if a.arm != gen.reference)
            scoring = ArmsScoring("one_pass", len(lm.arms), tuple(sorted(lm.fallbacks.items())), lm.pass_seconds,
                                  diverged)
            out[subject] = self._result(subject, spec, res, out_dir, scoring)
            if on_result is not None:
                on_result(out[subject], own + lm.pass_seconds / len(lm.arms))
        log.info("%s: %d subjects scored in one pass (%.1f s of shared model work; fallbacks: %s%s)", spec.name,
                 len(subjects), lm.pass_seconds, dict(lm.fallbacks) or "none",
                 "".join(f"; {s} diverged on {d}/{n}" for s, d, n in scoring.diverged) if subjects else "")
        return out

    def _evaluate_vllm(self, base_model: str, subjects: dict[str, Path | None], spec: BenchmarkSpec,
                       limit: int | None, chosen: list[int] | None, out_dir: Path,
                       on_result: Callable[[EvalResult, float], None] | None) -> dict[str, EvalResult]:
        """Every subject a LoRA request of one vLLM engine (:mod:`tasks.evaluation.arms.vllm_arms`); lm-eval runs
        per subject, the engine work once. The engine is built on the first call for ``base_model`` and rebuilt only
        when a call needs more LoRA slots or a larger rank than it has."""
        from spectral_surgery.tasks.evaluation.arms.vllm_arms import engine_options, lora_arms

        arms = lora_arms(subjects, first_id=self._adapter_seq + 1)
        self._adapter_seq += sum(a.path is not None for a in arms)  # vLLM caches adapters by id: never reuse one
        lm = self._vllm_engine(base_model, engine_options(arms, dtype=self._vllm_dtype(), batch_size=self.batch_size))
        lm.set_arms(arms)
        out: dict[str, EvalResult] = {}
        for subject in subjects:
            t0, shared0 = time.perf_counter(), lm.pass_seconds
            lm.serve(subject)
            res = self._simple_evaluate(lm, spec, limit, chosen)
            own = time.perf_counter() - t0 - (lm.pass_seconds - shared0)
            scoring = ArmsScoring("vllm", len(arms), (), lm.pass_seconds)
            out[subject] = self._result(subject, spec, res, out_dir, scoring)
            if on_result is not None:
                on_result(out[subject], own + lm.pass_seconds / len(arms))
        return out

    def _vllm_dtype(self) -> str:
        return "bfloat16" if self.dtype == "auto" else str(self.dtype).removeprefix("torch.")

    def _vllm_engine(self, base_model: str, options: dict) -> Any:
        """The cached ``ArmsVLLM`` of ``base_model``, rebuilt when ``options`` ask for more than it holds."""
        from spectral_surgery.tasks.evaluation.arms.vllm_lm import ArmsVLLM

        held = self._vllm.get(base_model)
        if held is not None:
            lm, have = held
            if (options["max_loras"] <= have["max_loras"] and options["max_lora_rank"] <= have["max_lora_rank"]
                    and options["enable_lora"] <= have["enable_lora"]):
                return lm
            del self._vllm[base_model]  # the engine's GPU memory goes with it before the larger one loads
        options = {**options, **self.vllm_options}
        lm = ArmsVLLM(base_model, **options)
        self._vllm[base_model] = (lm, options)
        return lm

    def _add_adapter(self, base: _Base, path: Path) -> str:
        """Load the adapter at ``path`` as a new named adapter of ``base.peft`` (all stay resident); its name.

        The first adapter of a config is injected by PEFT (walks over every module: ~1 s on a 30-layer model, and
        longer as adapters accumulate). A plain LoRA adapter with the config of a loaded one gets its layers next
        to that one's in the same modules (``update_layer``, the modules found once per config) and its weights
        copied in by name, every weight of the file used and every layer filled, else ``RuntimeError``.
        """
        import torch
        from peft import LoraConfig, PeftModel
        from peft.tuners.lora import LoraLayer
        from peft.utils import load_peft_weights

        self._adapter_seq += 1
        name = f"subject{self._adapter_seq}"  # unique: subject names repeat across calls ("baseline")
        config = _weight_config(path)
        twin = next((n for n, c in base.slots.items() if c == config), None)
        plain = not (config.get("modules_to_save") or config.get("use_dora") or config.get("lora_bias"))
        if base.peft is None:
            base.peft = PeftModel.from_pretrained(base.model, str(path), adapter_name=name, is_trainable=False)
        elif twin is None or not plain:
            base.peft.load_adapter(str(path), adapter_name=name, is_trainable=False)
        else:
            layers = base.layers.setdefault(twin, [(n, m) for n, m in base.peft.named_modules()
                                                   if isinstance(m, LoraLayer) and twin in m.lora_A])
            lora_config = LoraConfig.from_pretrained(str(path))
            lora_config.inference_mode = True
            layer_config = copy.copy(lora_config)
            layer_config.init_lora_weights = False  # every weight is overwritten below: skip the random init
            state = load_peft_weights(str(path), device="cpu")
            unused = set(state)
            with torch.no_grad():
                for module_name, module in layers:
                    module.update_layer(name, module.r[twin], module.lora_alpha[twin], layer_config)
                    for part in ("lora_A", "lora_B"):
                        key = f"{module_name}.{part}.weight"
                        if key not in state:
                            raise RuntimeError(f"{path}: no {key} although its config equals adapter {twin}'s")
                        getattr(module, part)[name].weight.copy_(state[key])
                        unused.discard(key)
            if unused:  # never evaluate a half-loaded adapter
                raise RuntimeError(f"{path}: {len(unused)} weights match no LoRA layer of adapter {twin}'s config "
                                   f"(first: {sorted(unused)[:3]})")
            base.peft.peft_config[name] = lora_config
        if twin is None:
            base.slots[name] = config
        return name

    def _result(self, subject: str, spec: BenchmarkSpec, res: dict, out_dir: Path,
                scoring: ArmsScoring | None = None) -> EvalResult:
        task = spec.lm_eval_task
        doc_ids, outcomes, rows = outcomes_from_samples(res["samples"][task], spec)
        agg = res["results"][task].get(f"{spec.metric},{spec.filter}")
        value = float(agg) if isinstance(agg, (int, float)) else sum(outcomes) / len(outcomes)
        scores = continuous_scores_from_samples(rows, spec)
        if scores is None and res.get("reference_scores") is not None:
            scores = list(res["reference_scores"])
            rows = [{**row, "reference_logprob": x} for row, x in zip(rows, scores)]  # kept with the samples
        path = _write_jsonl(out_dir / subject / f"{spec.name}.jsonl", rows)
        return EvalResult(subject, spec.name, spec.metric, value, len(outcomes), mean_stderr(outcomes),
                          spec.higher_is_better, doc_ids, outcomes, path, scores, scoring)  # fmt: skip


# adapter_config.json fields that do not shape the LoRA layers (where the base came from, bookkeeping)
_NOT_SHAPING = ("base_model_name_or_path", "revision", "inference_mode", "auto_mapping", "peft_version")


def _check_batch_size(batch_size: int | str) -> int | str:
    if isinstance(batch_size, str) and batch_size.strip().isdigit():  # --evaluator-option batch_size=16
        batch_size = int(batch_size)
    if batch_size == "auto" or (isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1):
        return batch_size
    raise ValueError(f"LmEvalEvaluator: batch_size must be an int >= 1 or 'auto' (sized from free GPU memory), "
                     f"got {batch_size!r}")


def check_arms_pass(arms_pass: str) -> str:
    """``arms_pass`` if this process can run it.

    Raises:
        ValueError: Not one of :data:`ARMS_PASSES` (with the close match), or ``vllm`` without vllm installed
            (:data:`~tasks.evaluation.arms.vllm_arms.VLLM_MISSING`).
    """
    if arms_pass not in ARMS_PASSES:
        close = difflib.get_close_matches(str(arms_pass), ARMS_PASSES, n=1)
        raise ValueError(f"LmEvalEvaluator: arms_pass must be one of {', '.join(ARMS_PASSES)}, got {arms_pass!r}"
                         + (f"; did you mean {close[0]!r}?" if close else ""))
    if arms_pass == "vllm":
        from spectral_surgery.tasks.evaluation.arms.vllm_arms import require_vllm

        require_vllm()
    return arms_pass



def _weight_config(path: Path) -> dict:
    """The part of an adapter's config that decides which LoRA layers exist and how they compute."""
    cfg = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    return {k: v for k, v in cfg.items() if k not in _NOT_SHAPING}


def _check_aligned(results: dict[str, EvalResult]) -> None:
    ref = next(iter(results.values()))
    for r in results.values():
        if r.doc_ids != ref.doc_ids:
            raise RuntimeError(f"{r.benchmark}: subjects {ref.subject!r} and {r.subject!r} saw different documents")


# --------------------------------------------------------------------------------------- fake, for tests
@register_evaluator("fake")
class FakeEvaluator:
    """FOR TESTS ONLY: deterministic pseudo-outcomes without a model, so flow tests run in milliseconds.

    Document ``i`` of a subject succeeds iff ``u_i < p + 0.8·p(1−p)·sin(s_i / 0.5)`` with ``p`` its rate: ``u_i`` in
    [0, 1) comes from sha256(the base model's name, benchmark, i) (its last path component, so a base saved in a
    temporary directory draws the same documents in every test session), and ``s_i = Σ_m x_{m,i}ᵀ B_m A_m y_{m,i}``
    is a random projection of the adapter's update (Gaussian ``x``, ``y`` seeded by module name and benchmark;
    document ``i`` uses row ``i``). Outcomes are therefore a continuous function of the update B·A, as a real
    model's are: a refactored adapter with the same B·A (the zero rebuild) scores identically, an edited or rescaled
    one differs on some documents, and the bare base model (None: ``s_i = 0``) differs from an adapter. They never
    depend on the subject's name except through ``rates``. The constants suit tests/tiny.py's adapters (``s_i`` of
    order 10). The continuous score of document ``i`` is the margin ``p + 0.8·p(1−p)·sin(s_i / 0.5) − u_i``: its
    sign is the outcome, as a real gold-answer margin's is.

    Args:
        n_docs: Documents per benchmark when no limit is given.
        rate: Default success probability per document.
        seed: Draw ``u_i`` from this seed instead of the base model's name (the same documents whatever the base).
        rates: Per-subject success probabilities overriding ``rate`` (to script a winner in tests): keyed by subject
            name (``"smooth_abs"``) or, more specific and winning over it, by ``"<benchmark>/<subject>"``
            (``"ss_mc/smooth_abs"``), so one fleet can hold adapters whose benchmarks script different outcomes.
    """

    runs_generated_code = False  # scores pseudo-outcomes: a code benchmark needs no sandbox here

    def __init__(self, *, n_docs: int = 64, rate: float = 0.5, rates: dict[str, float] | None = None,
                 seed: int | None = None) -> None:
        if not 0.0 <= rate <= 1.0 or any(not 0.0 <= r <= 1.0 for r in (rates or {}).values()):
            raise ValueError("FakeEvaluator: rates must be in [0, 1]")
        self.n_docs, self.rate, self.rates, self.seed = n_docs, rate, dict(rates or {}), seed
        self.key = self.identity(n_docs=n_docs, rate=rate, rates=rates, seed=seed)

    @staticmethod
    def identity(*, n_docs: int = 64, rate: float = 0.5, rates: dict[str, float] | None = None,
                 seed: int | None = None, **_ignored: Any) -> str:
        """What determines the fake outcomes (see :func:`evaluator_identity`)."""
        return (f"fake/v2;n_docs={n_docs};rate={rate};rates={sorted(dict(rates or {}).items())}"
                + ("" if seed is None else f";seed={seed}"))

    def evaluate(
        self, base_model: str, subjects: dict[str, Path | None], benchmark: str, *, limit: int | None, out_dir: Path,
        on_result: Callable[[EvalResult, float], None] | None = None, docs: Sequence[int] | None = None,
    ) -> dict[str, EvalResult]:
        """Same contract as :meth:`LmEvalEvaluator.evaluate`; samples hold ``doc_id`` and the outcome.

        Document ``i`` scores the same whichever call evaluates it (first ``limit`` or chosen ``docs``).
        """
        spec = get_benchmark(benchmark)
        _check_inputs(subjects, limit)
        chosen = _check_docs(docs, limit)
        if chosen is None:
            chosen = list(range(limit or spec.default_limit or self.n_docs))
        n = len(chosen)
        out = {}
        # the base's name, not its path: a test's base in pytest's numbered temporary directory (a new one every
        # session) would otherwise draw other documents every session, and a borderline assertion would flake
        draw = (Path(base_model).name or base_model) if self.seed is None else f"seed={self.seed}"
        u = [int.from_bytes(hashlib.sha256(f"base:{draw}|{spec.name}|{i}".encode()).digest()[:8], "big") / 2**64
             for i in chosen]
        for subject, path in subjects.items():
            t0 = time.perf_counter()  # what scoring this subject cost, recorded as a real evaluator's seconds are
            s = [0.0] * n if path is None else _update_projections(Path(path), spec.name, chosen[-1] + 1)
            s = s if path is None else [s[i] for i in chosen]
            p = self.rates.get(f"{spec.name}/{subject}", self.rates.get(subject, self.rate))
            amp = 0.8 * p * (1.0 - p)  # 0.2 at rate 0.5; a rate of 0 or 1 stays exact
            # the margin of the draw under the threshold: positive exactly on the documents the subject solves
            scores = [p + amp * math.sin(s[j] / 0.5) - u[j] for j in range(n)]
            outcomes = [1.0 if x > 0 else 0.0 for x in scores]
            doc_ids = [str(i) for i in chosen]
            rows = [{"doc_id": i, "filter": spec.filter, spec.metric: o, "score": x}
                    for i, o, x in zip(chosen, outcomes, scores)]
            path_out = _write_jsonl(Path(out_dir) / subject / f"{spec.name}.jsonl", rows)
            out[subject] = EvalResult(subject, spec.name, spec.metric, sum(outcomes) / n, n, mean_stderr(outcomes),
                                      spec.higher_is_better, doc_ids, outcomes, path_out, scores)  # fmt: skip
            if on_result is not None:
                on_result(out[subject], time.perf_counter() - t0)
        return out


def _update_projections(adapter_dir: Path, benchmark: str, n: int) -> list[float]:
    """``s_i = Σ_m x_{m,i}ᵀ B_m A_m y_{m,i}`` for i < n (FakeEvaluator), without forming B·A."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    tensors = load_file(str(adapter_weights_file(adapter_dir)))
    total = np.zeros(n)

    def rows(tag: str, prefix: str, d: int) -> np.ndarray:  # row i is the same whatever n is
        seed = int.from_bytes(hashlib.sha256(f"{tag}|{prefix}|{benchmark}".encode()).digest()[:8], "big")
        return np.random.default_rng(seed).standard_normal((n, d))

    for key in sorted(k for k in tensors if k.endswith("lora_A.weight")):
        prefix = key[: -len("lora_A.weight")]
        b = tensors.get(prefix + "lora_B.weight")
        if b is None:
            continue
        a, b = (t.to(torch.float64).numpy() for t in (tensors[key], b))
        total += np.einsum("ir,ir->i", rows("x", prefix, b.shape[0]) @ b, rows("y", prefix, a.shape[1]) @ a.T)
    return total.tolist()
def check_lora_multiply(lora_multiply: str) -> str:
    """``lora_multiply`` if it is one of :data:`~tasks.evaluation.arms.stacked_lora.LORA_MULTIPLIES`.

    Raises:
        ValueError: Another value (with the close match).
    """
    from spectral_surgery.tasks.evaluation.arms.stacked_lora import LORA_MULTIPLIES

    if lora_multiply not in LORA_MULTIPLIES:
        close = difflib.get_close_matches(str(lora_multiply), LORA_MULTIPLIES, n=1)
        raise ValueError(f"LmEvalEvaluator: lora_multiply must be one of {', '.join(LORA_MULTIPLIES)}, got "
                         f"{lora_multiply!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
    return lora_multiply
