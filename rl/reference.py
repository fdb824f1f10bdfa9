"""ReferenceModel: the frozen policy GRPO starts from, which the KL penalty keeps the learner near."""

from __future__ import annotations

from pathlib import Path

import torch

from rl.batch import TokenBatch
from rl.logprobs import batch_logprobs
from rollout.policy import LoraSettings, load_policy


class ReferenceModel:
    """Scores token batches under the starting policy (a plain class; a Ray actor in the driver).

    The reference is the checkpoint GRPO starts from (usually the SFT result), not the base
    model: KL to it is 0 at step 0. With LoRA the checkpoint's adapter is merged into the base
    weights, so the reference is a plain model and costs no adapter matmuls.

    Args:
        model_name: base model name or folder (``rollout.models.resolve_model``).
        checkpoint_dir: a Learner checkpoint (LoRA adapter or full weights); None: the base model.
        lora: the checkpoint's adapter shape; None when it holds full fine-tuned weights.
        device: ``cpu`` or ``cuda``.
        num_threads: torch CPU threads.
        bf16: bfloat16 autocast for matmuls (use the learner's setting, so the two compute alike).
    """

    def __init__(self, *, model_name: str, checkpoint_dir: str | Path | None = None, lora: LoraSettings | None,
                 device: str = "cpu", num_threads: int | None = None, bf16: bool = True):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.device = torch.device(device)
        self.bf16 = bf16
        # A LoRA policy without an adapter is the base model: no adapter to load or merge.
        adapter_lora = lora if checkpoint_dir is not None else None
        self.model, self.tokenizer = load_policy(model_name, lora=adapter_lora, adapter_dir=checkpoint_dir,
                                                 trainable=False, device=device)
        if adapter_lora is not None:
            self.model = self.model.merge_and_unload()
        self.model.eval().requires_grad_(False)

    def logprobs(self, batch: TokenBatch, *, temperature: float, micro_batch_size: int = 4,
                 micro_batch_tokens: int = 0) -> torch.Tensor:
        """Reference log-prob of each policy token of ``batch`` (0 elsewhere), ``[B, T]``, no gradient.

        Args:
            batch: the token batch, on any device; the result comes back on the same one.
            temperature: the sampling temperature (the learner's log-probs use it too).
            micro_batch_size: rows per forward pass.
            micro_batch_tokens: if set, also at most this many (padded) tokens per forward pass.
        """
        scored = batch_logprobs(self.model, batch.to(self.device), temperature=temperature,
                                micro_batches=batch.micro_batches(micro_batch_size, micro_batch_tokens), bf16=self.bf16)
        return scored.to(batch.input_ids.device)
