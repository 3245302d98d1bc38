"""Every arm of an adapter (baseline, candidates, controls, canaries, the bare base) scored in one pass.

* :mod:`~tasks.evaluation.arms.loglikelihood`: ``loglikelihood`` requests for all arms at once (packed rows,
  PEFT mixed-adapter batches, the vocabulary projection only where a score is read);
* :mod:`~tasks.evaluation.arms.lm`: :class:`~tasks.evaluation.arms.lm.ArmsLM`, lm-eval's ``HFLM`` that scores a
  benchmark's requests for every arm on its first call and then serves each arm's responses, so lm-eval's own
  filters and metrics turn them into per-document outcomes;
* :mod:`~tasks.evaluation.arms.stacked_lora`: a mixed batch's LoRA deltas in one gathered batched multiply per layer
  (every arm's A and B stacked once per pass) instead of PEFT's loop over the adapters;
* :mod:`~tasks.evaluation.arms.compare`: two result sets compared document by document, mismatches with their gaps;
* :mod:`~tasks.evaluation.arms.precision`: scores from fp32 logits on a bf16/fp16 model;
* :mod:`~tasks.evaluation.arms.memory`: rows per pass from free GPU memory (``batch_size="auto"``);
* :mod:`~tasks.evaluation.arms.vllm_arms` / :mod:`~tasks.evaluation.arms.vllm_lm`: every arm a LoRA request of one
  vLLM engine (``arms_pass="vllm"``, where vllm is installed).

Pure: no Prefect, no registry.
"""

from dataclasses import dataclass

BASE_ARM = "__base__"  # PEFT's adapter name for "no adapter" in a mixed-adapter batch (the bare base model)


@dataclass(frozen=True)
class ArmsScoring:
    """How one call of the evaluator scored its subjects.

    Attributes:
        path: ``one_pass`` (every arm scored together, then served to lm-eval arm by arm), ``arm_by_arm``, or
            ``vllm`` (every arm a LoRA request of one vLLM engine, :mod:`~tasks.evaluation.arms.vllm_arms`).
        arms: Arms scored together (1 per subject on the arm-by-arm path).
        fallbacks: ``(request type, why)`` for every request type that was scored arm by arm on the one-pass path
            (also ``loglikelihood`` / ``generate_until`` when a DoRA arm would need PEFT's mixed batch, which refuses
            DoRA: DoRA on an embedding, ``lora_multiply="peft"``), and ``("lora_multiply", why)`` when LoRA layers
            kept PEFT's mixed batch instead of the stacked multi-arm multiply
            (:mod:`~tasks.evaluation.arms.stacked_lora`: ``lora_bias``, embeddings, LoRA variants other than DoRA).
        shared_seconds: Seconds of model work done for all arms together (0.0 arm by arm); each subject's
            ``on_result`` seconds are its own wall time outside that work plus ``shared_seconds / arms``.
        diverged: Generative requests on the one-pass path: ``(subject, documents diverged, documents checked)``
            per subject verified against the reference subject (the first one), whose greedy output it shares on
            every other document.
    """

    path: str
    arms: int
    fallbacks: tuple[tuple[str, str], ...] = ()
    shared_seconds: float = 0.0
    diverged: tuple[tuple[str, int, int], ...] = ()
