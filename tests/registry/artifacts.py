"""Real (minimal) adapter directories for registry tests, since the registry verifies a target's files before
moving a production pointer (``registry.promotion.verify_target``)."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

_ROOT: Path | None = None


def artifact(tag: str) -> tuple[str, str]:
    """A directory holding an ``adapter_config.json`` and an ``adapter_model.safetensors`` unique to ``tag``;
    returns ``(path, content sha256)``. One temp root per process, removed at exit."""
    import torch
    from safetensors.torch import save_file

    from spectral_surgery.tasks.adapter_io import adapter_content_sha256

    global _ROOT
    if _ROOT is None:
        _ROOT = Path(tempfile.mkdtemp(prefix="ss-registry-artifacts-"))
        atexit.register(shutil.rmtree, _ROOT, True)
    d = _ROOT / tag.replace("/", "_")
    if not d.is_dir():
        d.mkdir(parents=True)
        (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 1, "lora_alpha": 1, "tag": tag}))
        save_file({"base_model.model.x.lora_A.weight": torch.ones(1, 2),
                   "base_model.model.x.lora_B.weight": torch.ones(2, 1)}, str(d / "adapter_model.safetensors"))
    return str(d), adapter_content_sha256(d)
