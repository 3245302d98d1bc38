"""Tiny random Llama-architecture models, tokenizers and PEFT LoRA adapters, built in seconds offline.

Shared by the unit tests of every module. Nothing here downloads anything.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

TARGETS_ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_tokenizer():
    """A character-level fast tokenizer (pad=0, bos=1, eos=2) that round-trips ASCII text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for c in string.ascii_letters + string.digits + string.punctuation + " \n\t":
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def make_model(tokenizer=None, *, layers: int = 2, hidden: int = 32, intermediate: int = 64, seed: int = 0,
               arch: str = "llama", max_positions: int = 512):
    """A tiny random causal LM in fp32, eval mode: ``arch`` ``llama`` (LlamaForCausalLM) or ``qwen2``
    (Qwen2ForCausalLM: the same layer names, biased q/k/v), with ``max_positions`` positions."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    tokenizer = tokenizer or make_tokenizer()
    torch.manual_seed(seed)
    cfg = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    return model_cls(cfg).eval()


def save_base(dir_: Path, *, layers: int = 2, hidden: int = 32, intermediate: int = 64, seed: int = 0,
              arch: str = "llama", max_positions: int = 2048) -> Path:
    """Save a tiny model + tokenizer to ``dir_`` (a local model id for from_pretrained).

    ``max_positions`` defaults to 2048 so that the evaluations fit its context (the IFEval guard generates up to
    512 tokens after its prompts): ``register`` refuses an adapter whose evaluation cannot fit (issue 25); the
    tests of that refusal pass 512. Rotary positions: the weights do not depend on it.
    """
    tok = make_tokenizer()
    model = make_model(tok, layers=layers, hidden=hidden, intermediate=intermediate, seed=seed, arch=arch,
                       max_positions=max_positions)
    dir_.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dir_)
    tok.save_pretrained(dir_)
    return dir_


def save_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    r: int = 4,
    alpha: float = 8,
    targets=TARGETS_ALL,
    seed: int = 1,
    use_rslora: bool = False,
    rank_pattern: dict | None = None,
    alpha_pattern: dict | None = None,
    dtype: torch.dtype = torch.float32,
    init_scale: float = 0.2,
) -> Path:
    """Create a PEFT LoRA adapter on the base in ``base_dir`` with random non-zero A and B; save it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=list(targets),
        lora_dropout=0.05,
        use_rslora=use_rslora,
        rank_pattern=rank_pattern or {},
        alpha_pattern=alpha_pattern or {},
        task_type="CAUSAL_LM",
    )
    pm = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * init_scale)
    if dtype != torch.float32:
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.data = p.data.to(dtype)
    out_dir.mkdir(parents=True, exist_ok=True)
    pm.save_pretrained(out_dir)
    return out_dir


def calib_rows(n: int = 8) -> list[dict]:
    """Small arithmetic prompt/answer pairs."""
    rows = []
    for i in range(n):
        a, b = 3 + i, 5 + 2 * i
        rows.append({"prompt": f"Question: what is {a} plus {b}?\nAnswer:",
                     "answer": f"{a} + {b} = {a + b}. #### {a + b}"})
    return rows


BROKEN_KINDS = ("scale", "mispair", "transpose")


def write_broken_rebuild(prepared, out_dir: Path, *, kind: str = "scale", factor: float = 2.0) -> Path:
    """Write a deliberately WRONG rebuild of ``prepared``'s edited modules, for canary tests (EXTENSIONS §8.4).

    The starting point is the correct balanced zero rebuild (t = σ); then, per edited module:
    ``scale`` multiplies B' by ``factor``; ``mispair`` reverses the rows of A', pairing u_k with v_{r-1-k};
    ``transpose`` swaps the factors as (A', B') = (B'ᵀ, A'ᵀ), so B'A' = (BA)ᵀ (square modules only; the
    others are mispaired). Each changes the model's outputs, so a check that the zero rebuild is a no-op
    must reject it. Written with the production writer and a manifest naming the breakage.

    Args:
        prepared: A :class:`tasks.surgery.edit.PreparedAdapter`.
        out_dir: Destination directory.
        kind: One of :data:`BROKEN_KINDS`.
        factor: The ``scale`` factor.

    Returns:
        ``out_dir``.
    """
    from spectral_surgery.tasks.adapter_io import write_adapter
    from spectral_surgery.tasks.surgery.edit import rebuilt_tensors

    if kind not in BROKEN_KINDS:
        raise ValueError(f"kind must be one of {BROKEN_KINDS}, got {kind!r}")
    sigmas = {m.name: prepared.spectra[m.name].S.detach().cpu().float() for m in prepared.edited_modules}
    tensors = rebuilt_tensors(prepared, sigmas)
    for m in prepared.edited_modules:
        a, b = tensors[m.key_A], tensors[m.key_B]
        if kind == "scale":
            b = b * factor
        elif kind == "transpose" and a.shape[1] == b.shape[0]:
            a, b = b.T.contiguous(), a.T.contiguous()
        else:
            a = a.flip(0).contiguous()
        tensors[m.key_A], tensors[m.key_B] = a, b
    return write_adapter(prepared.adapter, tensors, out_dir, {"policy": f"broken_{kind}", "is_control": True})
