"""Learner: the trainable policy (LoRA or full), its optimizer, and the SFT and GRPO update steps.

A plain class (a Ray actor in the driver). With LoRA the frozen reference policy is the same
network with the adapter switched off (the base model), so KL to the reference costs a forward
pass, not a model copy; with full fine-tuning it is a frozen copy of the starting weights (or of
``reference_dir``, when training resumes from a later checkpoint).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from envs.types import Trajectory
from rl.algorithms import grpo_loss, token_logprobs
from rollout.policy import LoraSettings, is_lora, load_policy, trainable_state


def pad_batch(sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[int]], pad_id: int, *,
              device: torch.device | str = "cpu"):
    """Right-pads to ``(input_ids, attention_mask, loss_mask)`` tensors of shape [B, T] on ``device``."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    loss_mask = torch.zeros((len(sequences), width), dtype=torch.float32)
    for row, (ids, mask) in enumerate(zip(sequences, masks)):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        loss_mask[row, : len(mask)] = torch.tensor(mask, dtype=torch.float32)
    return input_ids.to(device), attention.to(device), loss_mask.to(device)


class Learner:
    """Owns the policy being trained.

    Args:
        model_name: base model name or folder (``rollout.models.resolve_model``).
        lora: adapter shape; None fine-tunes every weight and keeps a frozen copy as reference.
        lr: AdamW learning rate.
        adapter_dir: start from these adapter weights (e.g. the SFT result).
        num_threads: torch CPU threads.
        max_grad_norm: gradient clipping.
        seed: torch seed.
        bf16: bfloat16 autocast for matmuls (weights and optimizer stay fp32).
        device: ``cpu`` or ``cuda``; the weights it hands out are always on the CPU.
        reference_dir: full fine-tuning only: the KL reference's weights (default: the starting ones).
    """

    OPTIMIZER_FILE = "optimizer.pt"

    def __init__(self, *, model_name: str, lora: LoraSettings | None, lr: float, adapter_dir: str | Path | None = None,
                 num_threads: int | None = None, max_grad_norm: float = 1.0, seed: int = 0, bf16: bool = True,
                 device: str = "cpu", reference_dir: str | Path | None = None):
        if num_threads:
            torch.set_num_threads(num_threads)
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.model, self.tokenizer = load_policy(model_name, lora=lora, adapter_dir=adapter_dir, trainable=True,
                                                 device=device)
        self.model.train()
        self.reference = None
        if not is_lora(self.model) and reference_dir is not None:
            self.reference, _ = load_policy(model_name, lora=None, adapter_dir=reference_dir, device=device)
        elif not is_lora(self.model):
            self.reference = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=lr, weight_decay=0.0)
        self.max_grad_norm = max_grad_norm
        self.pad_id = self.tokenizer.pad_token_id
        self.bf16 = bf16

    @contextlib.contextmanager
    def _reference_model(self):
        """The frozen reference: the base under the LoRA adapter, or the frozen copy."""
        if self.reference is not None:
            yield self.reference
        else:
            with self.model.disable_adapter():
                yield self.model

    def _masked_logprobs(self, input_ids, attention, loss_mask, *, temperature: float = 1.0,
                         model=None) -> torch.Tensor:
        """Log-probs of the masked tokens only, flat [N] in batch order.

        The vocabulary projection runs only where ``loss_mask`` is 1: with a 49k vocabulary it is a
        third of a small model's FLOPs, and most tokens of an episode are prompt and tool text.
        """
        select = loss_mask[:, 1:] > 0
        model = self.model if model is None else model
        language_model = model.get_base_model() if hasattr(model, "get_base_model") else model
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            hidden = language_model.get_decoder()(input_ids=input_ids, attention_mask=attention).last_hidden_state
            logits = language_model.get_output_embeddings()(hidden[:, :-1][select]).float()
        if temperature != 1.0:
            logits = logits / temperature
        return token_logprobs(logits.unsqueeze(0), input_ids[:, 1:][select].unsqueeze(0)).squeeze(0)

    def sft_step(self, sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[int]]) -> dict[str, float]:
        """One optimizer step of masked next-token cross-entropy (assistant tokens only)."""
        started = time.perf_counter()
        input_ids, attention, loss_mask = pad_batch(sequences, masks, self.pad_id, device=self.device)
        loss = -self._masked_logprobs(input_ids, attention, loss_mask).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.optimizer.step()
        tokens = int(attention.sum())
        return {"train/loss": loss.item(), "train/grad_norm": float(grad_norm),
                "perf/tokens_per_s": tokens / (time.perf_counter() - started)}

    def grpo_step(self, trajectories: Sequence[Trajectory], advantages: Sequence[float], *, clip_eps: float,
                  kl_coef: float, temperature: float, micro_batch_size: int = 4) -> dict[str, float]:
        """One on-policy GRPO update over a batch of trajectories with precomputed advantages.

        Old log-probs are the current policy's (detached) under the sampling temperature, so the
        ratio starts at 1; the reference log-probs come from the same network with LoRA disabled.
        The token-level mean runs over the whole batch: micro-batches are weighted by their tokens.
        """
        started = time.perf_counter()
        total_tokens = sum(sum(t.loss_mask[1:]) for t in trajectories)
        if total_tokens == 0:
            raise ValueError("no policy tokens in the batch: every loss_mask is empty")
        self.optimizer.zero_grad(set_to_none=True)
        sums = {"policy_loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "loss": 0.0}
        seen_tokens = 0
        for start in range(0, len(trajectories), micro_batch_size):
            part = trajectories[start : start + micro_batch_size]
            input_ids, attention, loss_mask = pad_batch([t.token_ids for t in part], [t.loss_mask for t in part],
                                                        self.pad_id, device=self.device)
            tokens_per_row = loss_mask[:, 1:].sum(dim=1).long()
            if int(tokens_per_row.sum()) == 0:
                continue
            with torch.no_grad(), self._reference_model() as reference:
                ref_logp = self._masked_logprobs(input_ids, attention, loss_mask, temperature=temperature,
                                                 model=reference)
            logp = self._masked_logprobs(input_ids, attention, loss_mask, temperature=temperature)
            row_advantages = torch.tensor(advantages[start : start + micro_batch_size], dtype=torch.float32,
                                          device=self.device)
            token_advantages = torch.repeat_interleave(row_advantages, tokens_per_row)
            flat = lambda x: x.unsqueeze(0)  # noqa: E731 - one row holding every masked token
            loss, metrics = grpo_loss(flat(logp), flat(logp.detach()), flat(ref_logp), flat(token_advantages),
                                      torch.ones_like(flat(logp)), clip_eps=clip_eps, kl_coef=kl_coef)
            weight = logp.numel() / total_tokens
            (loss * weight).backward()
            seen_tokens += int(attention.sum())
            sums["loss"] += loss.item() * weight
            for key in ("policy_loss", "kl", "clip_frac"):
                sums[key] += float(metrics[key]) * weight
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.optimizer.step()
        metrics = {f"train/{k}": v for k, v in sums.items()}
        metrics["train/grad_norm"] = float(grad_norm)
        metrics["perf/learner_tokens_per_s"] = seen_tokens / (time.perf_counter() - started)
        return metrics

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Current trained weights (LoRA, or all), for the rollout workers."""
        return trainable_state(self.model)

    def save(self, path: str | Path, *, with_optimizer: bool = False) -> str:
        """Saves the adapter (or the full model) as safetensors, with the tokenizer, and optionally
        the optimizer state (to resume training); returns the folder."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        if with_optimizer:
            torch.save(self.optimizer.state_dict(), path / self.OPTIMIZER_FILE)
        return str(path)

    def load_optimizer(self, path: str | Path) -> None:
        """Restores the optimizer state saved with ``save(..., with_optimizer=True)``."""
        file = Path(path) / self.OPTIMIZER_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no optimizer state in {path} ({self.OPTIMIZER_FILE} missing)")
        self.optimizer.load_state_dict(torch.load(file, map_location=self.device))
