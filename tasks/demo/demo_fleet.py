"""The demo fleet: small LoRA adapters trained on the base model from generated data, cached by content key.

Three adapters (``math``, ``commonsense``, ``instruction``), each trained with peft as in METHOD §13.7 but
small: r 16, α 32, dropout 0.05 on all seven projections; AdamW β (0.9, 0.95), wd 0, grad clip 1.0, cosine
schedule with 10 % warm-up and min-lr ratio 0.01; seed 42. The data come from :mod:`tasks.demo.demo_data`
(generated, seeded, no downloads). Sequences are built like the calibration sequences (METHOD §5.1):
``prompt + " " + answer + EOS``, no BOS, prompt tokens labelled -100, right-padded.

:func:`build_demo_fleet` trains each adapter once and reuses it afterwards: the directory
``<data_dir>/fleet/<name>-<key12>/`` (``adapter/``, ``calib.jsonl``, ``fleet.json``) is named by the sha256
of everything that determines the adapter (base content marker, spec, steps, training and calibration rows,
recipe version); ``fleet.json`` is written last and marks it complete.

Measured on 2 CPU cores with SmolLM2-135M (fp32): one step at batch 8 × 64 tokens takes about 4.4 s, so the
default steps keep the whole fleet's first training under about 10 minutes; ``steps=2`` makes a smoke run.

Over 400 lines: the demo fleet's specs, training and cache are used together and only by the demo.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from spectral_surgery.tasks.demo.demo_data import make_instruction_rows, make_math_rows, make_mc_rows
from spectral_surgery.tasks.model import SOURCE_MARKER, load_tokenizer, make_tmp_dir, publish_dir, sha256_file

__all__ = ["DEMO_FLEET", "DemoAdapterSpec", "build_demo_fleet", "encode_row", "train_lora",
           "make_math_rows", "make_mc_rows", "make_instruction_rows"]  # fmt: skip

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TRAIN_SEED = 42  # data seed of the training rows
CALIB_SEED = 4242  # data seed of the held-out calibration rows (same generator)
N_CALIB = 128  # METHOD §13: the headline calibration size
# Rows written per calibration file: the sensitivity slice plus the global scalar's held-out examples after it
# (GlobalScalarConfig.holdout, 32), so the control ladder's γ is chosen on rows the sensitivities never saw.
N_CALIB_ROWS = N_CALIB + 32
RECIPE_VERSION = 1  # bump when train_lora's recipe changes, so cached adapters are retrained
MARKER = "fleet.json"
TRAIN_LOG = "train_log.json"
MIN_LR_RATIO = 0.01
WARMUP_FRAC = 0.1


@dataclass(frozen=True)
class DemoAdapterSpec:
    """One demo adapter.

    Attributes:
        name: Adapter name (directory prefix, registry name).
        task_family: ``math`` / ``commonsense`` / ``instruction`` (see ``tasks.evaluation.benchmarks.FAMILIES``).
        make_rows: ``(n, seed) -> [{"prompt", "answer"}]`` generator, deterministic.
        n_train: Training rows generated.
        steps: Optimiser steps (batch 8).
        lr: Peak learning rate.
        max_len: Tokens per sequence (longer sequences are cut at the end).
        scaled_from: Not trained: the adapter of the spec of this name (earlier in the fleet), written again with
            ``lora_alpha`` multiplied by ``alpha_scale`` (the same weights, a wrong export scale). Its training
            fields are then the source's and are ignored.
        alpha_scale: The factor on ``lora_alpha`` of a ``scaled_from`` adapter.
        untrained: Saved at initialisation, before any training step (``lora_B`` = 0, as PEFT initialises it):
            what a training job that died before its first step uploads. It changes nothing, so its nightly
            decision is REJECT by the "adapter is applied" canary. ``steps`` is ignored (and any override of it).
        overrides: The adapter's own registry config (e.g. ``{"surgery": {"targets": ...}}``), merged over the
            nightly configuration for this adapter only.
        about: One line on what the adapter honestly is (shown by the demo and the README).
    """

    name: str
    task_family: str
    make_rows: Callable[[int, int], list[dict]]
    n_train: int
    steps: int
    lr: float
    max_len: int
    scaled_from: str | None = None
    alpha_scale: float = 1.0
    untrained: bool = False
    overrides: dict | None = None
    about: str = ""


DEMO_FLEET: tuple[DemoAdapterSpec, ...] = (
    DemoAdapterSpec("math", "math", make_math_rows, n_train=320, steps=36, lr=1e-3, max_len=72,
                    about="trained on generated arithmetic"),
    DemoAdapterSpec("commonsense", "commonsense", make_mc_rows, n_train=320, steps=36, lr=1e-3, max_len=48,
                    about="trained on generated multiple-choice questions"),
    DemoAdapterSpec("instruction", "instruction", make_instruction_rows, n_train=320, steps=30, lr=1e-3, max_len=96,
                    about="trained on generated instruction-following rows"),
    # The honest PROMOTE path of issue 9: an over-scaled adapter (a known export mistake, lora_alpha written 3x
    # the training value), which the calibrated global scalar undoes; its whole update is over-scaled, so its
    # edits reach every module it adapts.
    DemoAdapterSpec("commonsense-x3", "commonsense", make_mc_rows, n_train=320, steps=36, lr=1e-3, max_len=48,
                    scaled_from="commonsense", alpha_scale=3.0,
                    overrides={"surgery": {"targets": {"target_modules": list(TARGETS)}}},
                    about="the commonsense adapter exported with lora_alpha 3x its training value (over-scaled)"),
    # The honest REJECT path: a math job that died before its first step and uploaded its initialisation
    # (lora_B = 0): the baseline IS the bare base, so the "adapter is applied" canary rejects every edit.
    DemoAdapterSpec("math-untrained", "math", make_math_rows, n_train=320, steps=0, lr=1e-3, max_len=72,
                    untrained=True,
                    about="the math adapter saved at initialisation, before its first training step (lora_B = 0)"),
)


# ------------------------------------------------------------------------------------------------ data
def encode_row(tokenizer, prompt: str, answer: str, max_len: int) -> tuple[list[int], list[int]]:
    """Token ids and labels of one row, as METHOD §5.1 builds a calibration sequence.

    ``prompt + " " + answer + eos`` (no space when the prompt is empty or ends in whitespace), tokenised
    without special tokens (no BOS); the first ``len(tokenize(prompt))`` labels are -100. Cut to
    ``max_len`` tokens.

    Returns:
        ``(input_ids, labels)``, equal lengths ≤ ``max_len``.
    """
    sep = " " if prompt and not prompt[-1].isspace() else ""
    eos = tokenizer.eos_token or ""
    ids = tokenizer(prompt + sep + answer + eos, add_special_tokens=False)["input_ids"]
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
    labels = [-100] * min(n_prompt, len(ids)) + ids[n_prompt:]
    return ids[:max_len], labels[:max_len]


def _collate(batch: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    # The mask comes from the lengths, not from ids != pad: pad may equal EOS, which is a real token here.
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        attention[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def lr_factor(step: int, steps: int) -> float:
    """Multiplier of the peak lr before optimiser step ``step`` (0-based): linear warm-up over 10 % of the
    steps, then cosine decay to ``MIN_LR_RATIO``."""
    warmup = max(1, round(WARMUP_FRAC * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _check_rows(rows: list[dict], where: str) -> None:
    if not rows:
        raise ValueError(f"{where}: no training rows")
    for i, row in enumerate(rows):
        for field in ("prompt", "answer"):
            if not isinstance(row, dict) or not isinstance(row.get(field), str):
                raise ValueError(f"{where}: row {i} needs a string field {field!r}, got {row!r:.120}")


# ------------------------------------------------------------------------------------------------ training
def train_lora(base_dir: Path, rows: list[dict], out_dir: Path, *, steps: int, lr: float, batch_size: int = 8,
               max_len: int = 64, r: int = 16, alpha: int = 32, dropout: float = 0.05, seed: int = 42,
               on_step: Callable[[int, int, float], None] | None = None,
               device: str | None = None) -> Path:  # fmt: skip
    """Train a PEFT LoRA adapter on the model in ``base_dir`` and save it to ``out_dir`` atomically.

    A plain torch loop: token-averaged cross-entropy on the answer tokens, AdamW (β 0.9/0.95, wd 0), grad
    clip 1.0, :func:`lr_factor` schedule. Batches cycle through seeded permutations of ``rows``. The same
    inputs and seed give the same adapter on the same machine; the global torch RNG is left as it was.
    The base is loaded privately from ``base_dir`` (not from ``tasks.model``'s shared cache), because
    peft injects its layers into the model in place.

    Args:
        base_dir: Local model directory (see ``tasks.model.resolve_base``).
        rows: ``[{"prompt", "answer"}]``.
        out_dir: Adapter directory to write (replaced if it exists).
        steps: Optimiser steps; 0 saves the initialised adapter (``lora_B`` = 0: it changes nothing).
        lr: Peak learning rate.
        batch_size: Rows per step.
        max_len: Tokens per sequence.
        r, alpha, dropout: LoRA rank, alpha and dropout (all seven projections).
        seed: Seeds LoRA init, dropout and the data order.
        on_step: Called as ``on_step(step, steps, loss)`` after each step (1-based).
        device: Torch device; None = CUDA if available, else CPU.

    Returns:
        ``out_dir``, holding ``adapter_config.json``, ``adapter_model.safetensors`` and ``train_log.json``
        (per-step losses and settings).

    Raises:
        ValueError: Bad rows or settings, or no row keeps an answer token within ``max_len``.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir, out_dir = Path(base_dir), Path(out_dir).expanduser().absolute()
    _check_rows(rows, f"train_lora({out_dir.name})")
    if steps < 0 or batch_size < 1 or max_len < 2 or not lr > 0:
        raise ValueError(f"train_lora: need steps >= 0, batch_size >= 1, max_len >= 2, lr > 0; got "
                         f"steps={steps}, batch_size={batch_size}, max_len={max_len}, lr={lr}")  # fmt: skip
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(base_dir)
    encoded = [encode_row(tokenizer, row["prompt"], row["answer"], max_len) for row in rows]
    examples = [e for e in encoded if any(t != -100 for t in e[1])]
    if not examples:
        raise ValueError(f"train_lora: no row keeps an answer token within max_len={max_len}; raise max_len")
    t0 = time.perf_counter()
    losses: list[float] = []
    tmp = make_tmp_dir(out_dir)
    try:
        cuda = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)  # LoRA A init (kaiming) and dropout draw from the global RNG
            model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).to(device)
            cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(TARGETS),
                             bias="none", task_type="CAUSAL_LM")  # fmt: skip
            pm = get_peft_model(model, cfg)
            params = [p for p in pm.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps))
            gen = torch.Generator().manual_seed(seed)
            order: list[int] = []
            pm.train()
            for step in range(1, steps + 1):
                while len(order) < batch_size:
                    order += torch.randperm(len(examples), generator=gen).tolist()
                idx, order = order[:batch_size], order[batch_size:]
                batch = {k: v.to(device) for k,
                         v in _collate([examples[i] for i in idx], tokenizer.pad_token_id).items()}
                loss = pm(**batch).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                if on_step is not None:
                    on_step(step, steps, losses[-1])
            pm.save_pretrained(tmp, safe_serialization=True)
        log = {"losses": losses, "steps": steps, "lr": lr, "batch_size": batch_size, "max_len": max_len, "r": r,
               "alpha": alpha, "dropout": dropout, "seed": seed, "targets": list(TARGETS), "rows": len(rows),
               "rows_used": len(examples), "rows_at_max_len": sum(len(ids) == max_len for ids, _ in examples),
               "seconds": round(time.perf_counter() - t0, 2), "device": device}  # fmt: skip
        (tmp / TRAIN_LOG).write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return publish_dir(tmp, out_dir)


# ------------------------------------------------------------------------------------------------ fleet
def base_fingerprint(base_dir: Path, *, small: int = 16 << 20) -> str:
    """A content marker of a base model directory for cache keys.

    A GGUF conversion made by ``tasks.model`` is identified by the GGUF's sha256 from its marker file.
    Any other directory: sha256 over its files' names and, for files up to ``small`` bytes, contents;
    larger (weight) files contribute name, size and mtime, so a 14 GB base is not re-hashed every run.
    """
    base_dir = Path(base_dir)
    marker = base_dir / SOURCE_MARKER
    if marker.is_file():
        return "gguf:" + json.loads(marker.read_text(encoding="utf-8"))["sha256"]
    h = hashlib.sha256()
    for p in sorted(q for q in base_dir.rglob("*") if q.is_file() and not q.name.startswith(".")):
        st = p.stat()
        part = sha256_file(p) if st.st_size <= small else f"{st.st_size}:{st.st_mtime_ns}"
        h.update(f"{p.relative_to(base_dir).as_posix()}\0{part}\n".encode())
    return "dir:" + h.hexdigest()


def held_out_rows(make_rows: Callable[[int, int], list[dict]], n: int, train: list[dict]) -> list[dict]:
    """The first ``n`` rows of ``make_rows(·, CALIB_SEED)`` whose prompt is not a training prompt."""
    seen = {r["prompt"] for r in train}
    fresh = [r for r in make_rows(4 * n, CALIB_SEED) if r["prompt"] not in seen][:n]
    if len(fresh) < n:
        raise ValueError(f"{_callable_name(make_rows)}: only {len(fresh)} of {n} calibration rows differ from the "
                         "training rows")
    return fresh


def _callable_name(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"


def _rows_sha(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def fleet_specs(names: Sequence[str] | None = None, fleet: Sequence[DemoAdapterSpec] = DEMO_FLEET,
                ) -> tuple[DemoAdapterSpec, ...]:  # fmt: skip
    """The specs :func:`build_demo_fleet` must build to give the adapters ``names`` (None: the whole fleet): those
    named plus the source of every over-scaled one (``scaled_from``), in fleet order.

    Raises:
        ValueError: A name that is not in ``fleet``, naming the fleet's adapters.
    """
    known = {s.name: s for s in fleet}
    wanted = set(known if names is None else names)
    if unknown := sorted(wanted - set(known)):
        raise ValueError(f"unknown demo adapter(s) {unknown}; the demo fleet is {sorted(known)}")
    needed = wanted | {known[n].scaled_from for n in wanted if known[n].scaled_from}
    return tuple(s for s in fleet if s.name in needed)


def build_demo_fleet(base_dir: Path, data_dir: Path, *, steps: int | None = None, n_train: int | None = None,
                     on_progress: Callable[[str], None] | None = None, fleet: Sequence[DemoAdapterSpec] = DEMO_FLEET,
                     n_calib: int = N_CALIB_ROWS, batch_size: int = 8) -> list[dict]:  # fmt: skip
    """Train, or reuse from ``<data_dir>/fleet/``, every adapter of ``fleet`` on the base in ``base_dir``.

    Args:
        base_dir: Local base model directory (``tasks.model.resolve_base``).
        data_dir: The product's data directory.
        steps: Override of every spec's steps (e.g. 2 for a smoke run).
        n_train: Override of every spec's training rows.
        on_progress: Called with one line of progress text (start, every step, done / reused).
        fleet: The specs (default :data:`DEMO_FLEET`).
        n_calib: Calibration rows written per adapter (held out: same generator, seed ``CALIB_SEED``, no
            prompt that is also a training prompt).
        batch_size: Rows per training step.

    Returns:
        One dict per spec: ``name, task_family, path`` (PEFT adapter dir), ``calib_path`` (JSONL of
        prompt/answer rows), ``reused`` (no training this call), ``key`` (cache key), ``losses``.
    """
    say = on_progress or (lambda _msg: None)
    base_dir = Path(base_dir).absolute()
    base_mark = base_fingerprint(base_dir)
    out: list[dict] = []
    for spec in fleet:
        if spec.scaled_from is not None:
            out.append(_scaled_entry(spec, out, data_dir, say))
            continue
        n, st = n_train or spec.n_train, 0 if spec.untrained else (steps or spec.steps)
        rows = spec.make_rows(n, TRAIN_SEED)
        calib = held_out_rows(spec.make_rows, n_calib, rows)
        key_doc = {"recipe": RECIPE_VERSION, "base": base_mark, "name": spec.name, "family": spec.task_family,
                   "generator": _callable_name(spec.make_rows), "n_train": n,
                   "steps": st, "lr": spec.lr, "max_len": spec.max_len, "batch_size": batch_size,
                   "seeds": [TRAIN_SEED, CALIB_SEED], "rows": _rows_sha(rows), "calib": _rows_sha(calib)}  # fmt: skip
        key, entry, marker = _cache_entry(data_dir, spec.name, key_doc)
        complete = (entry / "adapter" / "adapter_model.safetensors").is_file() and (entry / "calib.jsonl").is_file()
        reused = bool(marker and marker.get("key") == key and complete)
        if reused:
            say(f"{spec.name}: reusing {entry}")
        else:
            say(f"{spec.name}: saving the initialised adapter (no training step)" if spec.untrained else
                f"{spec.name}: training {st} steps on {n} rows (lr {spec.lr:g}, max_len {spec.max_len})")
            tmp = make_tmp_dir(entry)

            def on_step(i: int, total: int, loss: float, _name: str = spec.name) -> None:
                say(f"{_name}: step {i}/{total} loss {loss:.4f}")

            train_lora(base_dir, rows, tmp / "adapter", steps=st, lr=spec.lr, batch_size=batch_size,
                       max_len=spec.max_len, on_step=on_step)  # fmt: skip
            _write_jsonl(tmp / "calib.jsonl", calib)
            log = json.loads((tmp / "adapter" / TRAIN_LOG).read_text(encoding="utf-8"))
            marker = {"key": key, "spec": key_doc, "losses": log["losses"], "seconds": log["seconds"]}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            publish_dir(tmp, entry)
            if log["losses"]:
                say(f"{spec.name}: trained in {log['seconds']:.0f} s, loss {log['losses'][0]:.3f} -> "
                    f"{log['losses'][-1]:.3f}")
        out.append({"name": spec.name, "task_family": spec.task_family, "path": entry / "adapter",
                    "calib_path": entry / "calib.jsonl", "reused": reused, "key": key, "losses": marker["losses"],
                    "overrides": dict(spec.overrides or {}), "about": spec.about})  # fmt: skip
    return out


def _cache_entry(data_dir: Path, name: str, key_doc: dict) -> tuple[str, Path, dict | None]:
    """``(key, entry dir, its marker or None)`` of a fleet entry keyed by the sha256 of ``key_doc``."""
    key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()
    entry = Path(data_dir).expanduser().absolute() / "fleet" / f"{name}-{key[:12]}"
    try:
        marker = json.loads((entry / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        marker = None
    return key, entry, marker


def _scaled_entry(spec: DemoAdapterSpec, built: list[dict], data_dir: Path, say: Callable[[str], None]) -> dict:
    """The ``scaled_from`` adapter of ``spec``: its source's files with ``lora_alpha × alpha_scale``, cached by key."""
    src = next((b for b in built if b["name"] == spec.scaled_from), None)
    if src is None:
        raise ValueError(f"demo adapter {spec.name!r}: scaled_from={spec.scaled_from!r} must name an adapter "
                         f"listed before it in the fleet (have: {', '.join(b['name'] for b in built) or 'none'})")
    if not (spec.alpha_scale > 0 and math.isfinite(spec.alpha_scale)):
        raise ValueError(f"demo adapter {spec.name!r}: alpha_scale must be a positive number, got {spec.alpha_scale!r}")
    key_doc = {"recipe": RECIPE_VERSION, "name": spec.name, "family": spec.task_family, "source": src["key"],
               "alpha_scale": spec.alpha_scale}
    key, entry, marker = _cache_entry(data_dir, spec.name, key_doc)
    reused = bool(marker and marker.get("key") == key and (entry / "adapter" / "adapter_model.safetensors").is_file())
    if reused:
        say(f"{spec.name}: reusing {entry}")
    else:
        tmp = make_tmp_dir(entry)
        try:
            shutil.copytree(src["path"], tmp / "adapter")
            shutil.copy2(src["calib_path"], tmp / "calib.jsonl")
            cfg_path = tmp / "adapter" / "adapter_config.json"
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            trained_alpha = cfg["lora_alpha"]
            written = trained_alpha * spec.alpha_scale
            cfg["lora_alpha"] = int(written) if float(written).is_integer() else written
            cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            marker = {"key": key, "spec": key_doc, "losses": src["losses"], "seconds": 0.0,
                      "trained_alpha": trained_alpha, "written_alpha": cfg["lora_alpha"]}
            (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        publish_dir(tmp, entry)
        say(f"{spec.name}: {spec.scaled_from}'s weights written with lora_alpha {trained_alpha:g} -> "
            f"{cfg['lora_alpha']:g} (not trained)")
    return {"name": spec.name, "task_family": spec.task_family, "path": entry / "adapter",
            "calib_path": entry / "calib.jsonl", "reused": reused, "key": key, "losses": marker["losses"],
            "overrides": dict(spec.overrides or {}), "about": spec.about}
