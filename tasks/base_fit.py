"""Does the adapter fit its base, and does the evaluation fit the base's context? Read from files, no model pass.

:func:`base_layout` reads a base model directory: ``config.json`` (``model_type``, ``max_position_embeddings``) and
the shape of every linear weight, from the safetensors headers where the weights are there (shapes without loading
a tensor; sharded checkpoints through ``model.safetensors.index.json``), else computed from ``config.json`` for the
Llama-style decoders (Llama, Qwen2, Mistral, ...). :func:`adapter_fit` then refuses an adapter whose LoRA modules do
not exist in that base, whose ``lora_A``/``lora_B`` shapes do not fit the base's layers (a Qwen2 adapter with hidden
96 on a Llama base with hidden 64) or whose rank exceeds ``min(in, out)`` of a layer. :func:`context_fit` refuses a
base whose ``max_position_embeddings`` cannot hold the benchmark's generation budget (``max_gen_toks``, the
evaluator's override or the task's own) plus its longest prompt, which lm-eval would fail on after every other
evaluation. Every message names the file, the field and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from spectral_surgery.tasks.evaluation.benchmarks import BenchmarkSpec

# The linear layers of a Llama-style decoder layer: name -> (out, in) as a function of config.json.
_LLAMA_LIKE = ("llama", "qwen2", "qwen3", "mistral", "mixtral", "gemma", "gemma2", "phi3", "olmo", "olmo2", "granite",
               "smollm3")
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
# lm-eval's HFLM default when a generative task gives no max_gen_toks.
LM_EVAL_DEFAULT_MAX_GEN_TOKS = 256


@dataclass(frozen=True)
class BaseLayout:
    """What a base model directory says about itself.

    Attributes:
        config_file: Its ``config.json``.
        model_type: ``config.json``'s ``model_type``.
        max_positions: ``max_position_embeddings`` (None: not given).
        linear: Every linear weight's ``(out_features, in_features)`` by module name (``model.layers.0.mlp.up_proj``).
        shapes_from: The file the shapes were read from (a safetensors file or ``config.json``); None: unknown.
        num_layers: ``num_hidden_layers`` (None: not given).
    """

    config_file: Path
    model_type: str | None
    max_positions: int | None
    linear: dict[str, tuple[int, int]] = field(default_factory=dict)
    shapes_from: Path | None = None
    num_layers: int | None = None


def _header_shapes(files: list[Path]) -> dict[str, tuple[int, int]]:
    """``(out, in)`` of every 2-D ``*.weight`` in safetensors ``files``, from their headers (nothing loaded)."""
    from safetensors import safe_open

    out: dict[str, tuple[int, int]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                shape = st.get_slice(key).get_shape()
                if key.endswith(".weight") and len(shape) == 2:
                    out[key.removesuffix(".weight")] = (int(shape[0]), int(shape[1]))
    return out


def _config_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """The linear layers of a Llama-style decoder, computed from ``config.json`` (empty for other architectures)."""
    if cfg.get("model_type") not in _LLAMA_LIKE:
        return {}
    try:
        hidden, inter, layers = int(cfg["hidden_size"]), int(cfg["intermediate_size"]), int(cfg["num_hidden_layers"])
        heads = int(cfg["num_attention_heads"])
        kv = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or hidden // heads)
    except (KeyError, TypeError, ValueError):
        return {}
    per_layer = {"self_attn.q_proj": (heads * head_dim, hidden), "self_attn.k_proj": (kv * head_dim, hidden),
                 "self_attn.v_proj": (kv * head_dim, hidden), "self_attn.o_proj": (hidden, heads * head_dim),
                 "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden), "mlp.down_proj": (hidden, inter)}
    return {f"model.layers.{i}.{name}": shape for i in range(layers) for name, shape in per_layer.items()}


def base_layout(base_dir: str | Path) -> BaseLayout:
    """Read ``base_dir/config.json`` and the shapes of its linear weights (see the module docstring).

    Raises:
        ValueError: ``config.json`` is missing or not a JSON object (the file is named).
    """
    base_dir = Path(base_dir)
    cfg_file = base_dir / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{cfg_file}: cannot be read as JSON ({e}); the base model directory needs its config.json")
    if not isinstance(cfg, dict):
        raise ValueError(f"{cfg_file}: must be a JSON object")
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({base_dir / f for f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
    else:
        files = sorted(base_dir.glob("*.safetensors"))
    linear, source = (_header_shapes(files), files[0]) if files else ({}, None)
    if not linear:
        linear = _config_shapes(cfg)
        source = cfg_file if linear else None
    positions = cfg.get("max_position_embeddings")
    layers = cfg.get("num_hidden_layers")
    return BaseLayout(cfg_file, cfg.get("model_type"), int(positions) if isinstance(positions, int) else None,
                      linear, source, int(layers) if isinstance(layers, int) else None)


def adapter_fit(adapter, layout: BaseLayout, base_model_id: str) -> list[str]:
    """Why ``adapter`` (a :class:`tasks.adapter_io.LoraAdapter`) cannot be applied to the base ``layout`` describes.

    Returns:
        One message per kind of misfit (empty: it fits, or the base's shapes are unknown): modules missing from
        the base, ``lora_A``/``lora_B`` shapes that differ from the base's layers, ranks above ``min(in, out)``.
    """
    if not layout.linear:
        return []
    cfg_file = adapter.path / "adapter_config.json"
    fix = (f"register it on the base it was trained for (adapter_config.json names "
           f"{adapter.config.get('base_model_name_or_path')!r}) or retrain it on {base_model_id!r}")
    missing, shapes, ranks = [], [], []
    for name, m in sorted(adapter.modules.items()):
        base = layout.linear.get(name)
        if base is None:
            missing.append(name)
            continue
        out_f, in_f = base
        r_a, d_in = adapter.tensors[m.key_A].shape
        d_out, _ = adapter.tensors[m.key_B].shape
        if (d_in, d_out) != (in_f, out_f):
            shapes.append(f"{m.key_A} / {m.key_B} map {d_in} → {d_out} features, the base's {name} maps "
                          f"{in_f} → {out_f}")
        elif m.r > min(in_f, out_f):
            ranks.append(f"{name}: r={m.r} > min({in_f}, {out_f})")
    problems = []
    if missing:
        targets = adapter.config.get("target_modules")
        problems.append(f"{cfg_file}: target_modules {targets!r}: {len(missing)} of the adapter's "
                        f"{len(adapter.modules)} LoRA modules do not exist in the base {base_model_id!r} "
                        f"(e.g. {missing[0]!r}; {layout.shapes_from} has no such layer); {fix}")
    if shapes:
        problems.append(f"{adapter.weights_file}: the LoRA shapes do not fit the base {base_model_id!r} "
                        f"({layout.shapes_from}): {len(shapes)} module(s), e.g. {shapes[0]}; {fix}")
    if ranks:
        problems.append(f"{cfg_file}: r (or rank_pattern) exceeds min(in, out) of {len(ranks)} layer(s) of the base, "
                        f"e.g. {ranks[0]}: a LoRA rank above the layer's own rank adds nothing; retrain it with a "
                        "rank at most that")
    return problems


def _suite_yaml(spec: BenchmarkSpec) -> dict | None:
    """The lm-eval YAML of a benchmark's task (the project's suites, else lm-eval's own), ``!function`` tags
    read as plain strings; None when not found."""
    import yaml

    from spectral_surgery.tasks.evaluation.evaluate import SUITES_DIR

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    candidates = [SUITES_DIR / f"{spec.lm_eval_task}.yaml"]
    try:
        import lm_eval

        root = Path(lm_eval.__file__).parent / "tasks"
        candidates += [root / spec.lm_eval_task / f"{spec.lm_eval_task}.yaml"]
    except ImportError:  # pragma: no cover - lm-eval is a dependency
        pass
    for path in candidates:
        if path.is_file():
            doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
            if "include" in doc and isinstance(doc["include"], str):
                base = yaml.load((path.parent / doc["include"]).read_text(encoding="utf-8"), Loader=_Loader) or {}
                doc = {**base, **doc}
            doc["__file__"] = str(path)
            return doc
    return None


def generation_budget(spec: BenchmarkSpec, override: int | None = None) -> tuple[int, str] | None:
    """``(max_gen_toks, where it comes from)`` for a generative benchmark; None for a loglikelihood one."""
    doc = _suite_yaml(spec)
    if doc is None or doc.get("output_type", "generate_until") != "generate_until":
        return None
    if override:
        return int(override), "evaluator_options.max_gen_toks of the run config"
    own = (doc.get("generation_kwargs") or {}).get("max_gen_toks")
    if own:
        return int(own), f"{doc['__file__']}: generation_kwargs.max_gen_toks"
    return LM_EVAL_DEFAULT_MAX_GEN_TOKS, "lm-eval's default max_gen_toks"


def longest_prompt(spec: BenchmarkSpec) -> str | None:
    """The longest ``doc_to_text`` of a local suite's test documents, without few-shot examples (so a lower bound
    of the prompts lm-eval builds); None for a hub benchmark (its data are not here before the run)."""
    from jinja2 import Template

    from spectral_surgery.tasks.evaluation.suites import utils

    doc = _suite_yaml(spec)
    loaders = {"ss_arith": "load_ss_arith", "ss_mc": "load_ss_mc", "ss_ifeval": "load_ss_ifeval",
               "ss_code": "load_ss_code", "ss_humaneval": "load_ss_code"}
    if doc is None or spec.lm_eval_task not in loaders:
        return None
    rows = getattr(utils, loaders[spec.lm_eval_task])()[doc.get("test_split", "test")]
    text = str(doc.get("doc_to_text", ""))
    render = Template(text).render if "{{" in text else (lambda **row: str(row.get(text, "")))
    return max((render(**row) for row in rows), key=len, default=None)


def context_fit(layout: BaseLayout, benchmarks: list[BenchmarkSpec], *, max_gen_toks: int | None = None,
                tokenizer_dir: Path | None = None) -> list[str]:
    """Why the evaluation of ``benchmarks`` cannot fit the base's context: ``max_gen_toks`` plus the longest prompt
    (tokenized by the base's tokenizer when ``tokenizer_dir`` has one; else only ``max_gen_toks`` counts) must be
    below ``max_position_embeddings``. Empty when it fits or the base does not say its context."""
    if layout.max_positions is None:
        return []
    tokenizer = None
    if tokenizer_dir is not None and any((tokenizer_dir / f).is_file() for f in ("tokenizer.json",
                                                                                   "tokenizer_config.json")):
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        except Exception:  # noqa: BLE001 - the context check then counts max_gen_toks alone
            tokenizer = None
    problems = []
    for spec in dict.fromkeys(benchmarks):
        budget = generation_budget(spec, max_gen_toks)
        if budget is None:
            continue
        gen, where = budget
        prompt = longest_prompt(spec) if tokenizer is not None else None
        n_prompt = len(tokenizer(prompt)["input_ids"]) if prompt else 0
        if gen + n_prompt >= layout.max_positions:
            with_prompt = f" + its longest prompt ({n_prompt} tokens)" if n_prompt else ""
            problems.append(
                f"{layout.config_file}: max_position_embeddings is {layout.max_positions}, but benchmark "
                f"{spec.name!r} generates up to {gen} tokens ({where}){with_prompt} = {gen + n_prompt}: lm-eval "
                f"fails on it after every other evaluation; use a base with a longer context, lower max_gen_toks in "
                "the run config's evaluator_options, or --benchmark one with shorter prompts and generations")
    return problems
