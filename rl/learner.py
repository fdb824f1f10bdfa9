"""Learner: the trainable policy (LoRA or full), its optimizer, and the SFT and GRPO updates.

A plain class (a Ray actor in the driver). It holds no reference model: the KL term reads the
batch's ``ref_logprobs``, scored beforehand by ``rl.reference.ReferenceModel``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from rl.algorithms import grpo_loss, masked_mean, truncated_importance_weights
from rl.batch import TokenBatch
from rl.checkpoints import save_checkpoint
from rl.logprobs import batch_logprobs, masked_token_logprobs
from rollout.policy import LoraSettings, load_policy, trainable_state


class Learner:
    """Owns the policy being trained.

    Args:
        model_name: base model name or folder (``rollout.models.resolve_model``).
        lora: adapter shape; None fine-tunes every weight.
        lr: AdamW learning rate.
        adapter_dir: start from this checkpoint (e.g. the SFT result): adapter or full weights.
        num_threads: torch CPU threads.
        max_grad_norm: gradient clipping.
        seed: torch seed.
        bf16: bfloat16 autocast for matmuls (weights and optimizer stay fp32).
        device: ``cpu`` or ``cuda``; the weights it hands out are always on the CPU.
    """

    OPTIMIZER_FILE = "optimizer.pt"

    def __init__(self, *, model_name: str, lora: LoraSettings | None, lr: float, adapter_dir: str | Path | None = None,
                 num_threads: int | None = None, max_grad_norm: float = 1.0, seed: int = 0, bf16: bool = True,
                 device: str = "cpu"):
        if num_threads:
            torch.set_num_threads(num_threads)
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.model, self.tokenizer = load_policy(model_name, lora=lora, adapter_dir=adapter_dir, trainable=True,
                                                 device=device)
        self.model.train()
        self.parameters = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.parameters, lr=lr, weight_decay=0.0)
        self.max_grad_norm = max_grad_norm
        self.pad_id = self.tokenizer.pad_token_id
        self.bf16 = bf16

    def logprobs(self, batch: TokenBatch, *, temperature: float = 1.0, micro_batch_size: int = 4) -> torch.Tensor:
        """The current policy's log-prob of each policy token of ``batch`` (0 elsewhere), ``[B, T]``, no gradient."""
        return batch_logprobs(self.model, batch.to(self.device), temperature=temperature,
                              micro_batch_size=micro_batch_size, bf16=self.bf16)

    def sft_step(self, sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[int]]) -> dict[str, float]:
        """One optimizer step of masked next-token cross-entropy (assistant tokens only)."""
        started = time.perf_counter()
        batch = TokenBatch.from_sequences(sequences, masks, pad_id=self.pad_id).to(self.device)
        mask = batch.policy_mask
        logp = masked_token_logprobs(self.model, batch.input_ids, batch.attention_mask, mask, bf16=self.bf16)
        loss = -masked_mean(logp, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm)
        self.optimizer.step()
        tokens = int(batch.attention_mask.sum())
        return {"train/loss": loss.item(), "train/grad_norm": float(grad_norm),
                "perf/tokens_per_s": tokens / (time.perf_counter() - started)}

    def update(self, batch: TokenBatch, *, clip_eps: float, kl_coef: float, temperature: float,
               micro_batch_size: int = 4, mini_batches: int = 1, epochs: int = 1,
               tis_cap: float | None = None, behaviour_logprobs: bool = False) -> dict[str, float]:
        """GRPO/PPO update on a scored batch: ``epochs`` passes of ``mini_batches`` optimizer steps each.

        The old log-probs (the ratio's denominator) are the policy's before the first step, under
        the sampling temperature; with a single step they come from that step's own forward pass.
        With ``behaviour_logprobs`` they are the sampler's own (``batch.rollout_logprobs``): the
        policy that generated the batch, when it lags the learner (one-step off-policy).
        Each mini-batch (consecutive rows) takes one optimizer step on its token-level mean loss,
        accumulated over micro-batches of ``micro_batch_size`` rows weighted by their tokens.

        Args:
            batch: tokens, advantages and rollout log-probs; ``ref_logprobs`` when ``kl_coef != 0``.
            clip_eps: PPO ratio clipping.
            kl_coef: weight of the k3 KL penalty to ``batch.ref_logprobs``.
            temperature: the sampling temperature.
            micro_batch_size: rows per forward pass.
            mini_batches: optimizer steps per epoch, at most one per row.
            epochs: passes over the batch.
            tis_cap: if set, weight each token's policy gradient by the truncated importance ratio
                ``min(exp(old - rollout_logprobs), tis_cap)`` (sampler != learner correction);
                needs the sampler's ``rollout_logprobs``.
            behaviour_logprobs: take the ratio's denominator from ``batch.rollout_logprobs``.

        Returns:
            ``train/*`` metrics averaged over the optimizer steps (``loss``, ``policy_loss``,
            ``clip_frac``, ``ratio_mean``, ``grad_norm``, ``kl`` when the batch has reference
            log-probs), ``train/optimizer_steps``, ``train/logprob_mismatch`` (mean absolute
            difference of the rollout's log-probs and the learner's before the update: the engine's
            numerics, plus the policy lag in off-policy mode), ``train/tis_weight_mean`` with ``tis_cap``,
            and ``perf/learner_tokens_per_s``.

        Raises:
            ValueError: if the batch has no policy tokens, lacks ``ref_logprobs`` while
                ``kl_coef != 0``, or ``mini_batches`` / ``epochs`` are out of range.
        """
        started = time.perf_counter()
        if batch.num_tokens == 0:
            raise ValueError("no policy tokens in the batch: every loss_mask is empty")
        if kl_coef != 0 and batch.ref_logprobs is None:
            raise ValueError(f"kl_coef is {kl_coef} but the batch has no ref_logprobs: score it with "
                             "ReferenceModel.logprobs first, or set kl_coef to 0")
        if not 1 <= mini_batches <= len(batch) or epochs < 1:
            raise ValueError(f"need 1 <= mini_batches <= {len(batch)} (the batch's rows) and epochs >= 1, "
                             f"got mini_batches={mini_batches}, epochs={epochs}")
        batch = batch.to(self.device)
        # A single step runs on the policy before the update itself: its own forward pass gives the
        # learner's log-probs, saving a pass. Otherwise they are taken once, before any step moves the policy.
        single_step = mini_batches == 1 and epochs == 1
        policy_logprobs = None if single_step else self.logprobs(batch, temperature=temperature,
                                                                 micro_batch_size=micro_batch_size)
        old_logprobs = batch.rollout_logprobs if behaviour_logprobs else policy_logprobs
        history = []
        for _ in range(epochs):
            for rows in torch.arange(len(batch), device=self.device).tensor_split(mini_batches):
                mini_batch = batch.rows(rows)
                if mini_batch.num_tokens == 0:
                    continue
                metrics, step_logprobs = self._step(
                    mini_batch, None if old_logprobs is None else old_logprobs[rows], clip_eps=clip_eps,
                    kl_coef=kl_coef, temperature=temperature, micro_batch_size=micro_batch_size, tis_cap=tis_cap)
                history.append(metrics)
        if single_step:
            policy_logprobs = step_logprobs
            old_logprobs = policy_logprobs if old_logprobs is None else old_logprobs
        metrics = {f"train/{key}": sum(m[key] for m in history) / len(history) for key in history[0]}
        metrics["train/optimizer_steps"] = float(len(history))
        mask = batch.policy_mask
        metrics["train/logprob_mismatch"] = masked_mean((batch.rollout_logprobs - policy_logprobs).abs(), mask).item()
        if tis_cap is not None:
            weights = truncated_importance_weights(old_logprobs, batch.rollout_logprobs, cap=tis_cap)
            metrics["train/tis_weight_mean"] = masked_mean(weights, mask).item()
        metrics["perf/learner_tokens_per_s"] = (
            int(batch.attention_mask.sum()) * epochs / (time.perf_counter() - started))
        return metrics

    def _step(self, batch: TokenBatch, old_logprobs: torch.Tensor | None, *, clip_eps: float, kl_coef: float,
              temperature: float, micro_batch_size: int, tis_cap: float | None):
        """One optimizer step on ``batch``; old log-probs None: this forward pass's own (detached).

        Returns the step's metrics and the policy's log-probs before the step, ``[b, T]``.
        """
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        policy_logprobs = []
        for start in range(0, len(batch), micro_batch_size):
            part = batch.rows(slice(start, start + micro_batch_size))
            mask = part.policy_mask
            if part.num_tokens == 0:
                policy_logprobs.append(torch.zeros_like(mask, dtype=torch.float32))
                continue
            logp = masked_token_logprobs(self.model, part.input_ids, part.attention_mask, mask,
                                         temperature=temperature, bf16=self.bf16)
            policy_logprobs.append(logp.detach())
            old = logp.detach() if old_logprobs is None else old_logprobs[start : start + micro_batch_size]
            weights = None if tis_cap is None else truncated_importance_weights(old, part.rollout_logprobs,
                                                                                cap=tis_cap)
            loss, metrics = grpo_loss(logp, old, part.ref_logprobs, part.advantages, mask, clip_eps=clip_eps,
                                      kl_coef=kl_coef, weights=weights)
            share = part.num_tokens / batch.num_tokens  # the step's loss is a mean over all its tokens
            (loss * share).backward()
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value * share
        sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.max_grad_norm))
        self.optimizer.step()
        return sums, torch.cat(policy_logprobs)

    def pad_token_id(self) -> int:
        """The id that pads token batches for this policy."""
        return self.pad_id

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

    def save_checkpoint(self, root: str | Path, step: int, trainer_state: dict, *, keep_last: int) -> str:
        """Writes ``root/step-NNNNNN`` atomically (weights, optimizer, ``trainer_state.json`` with the
        step), keeping the last ``keep_last``; see ``rl.checkpoints``. Returns the folder."""
        write = functools.partial(self.save, with_optimizer=True)
        return str(save_checkpoint(root, step, write, trainer_state, keep_last=keep_last))

    def load_optimizer(self, path: str | Path) -> None:
        """Restores the optimizer state saved with ``save(..., with_optimizer=True)``."""
        file = Path(path) / self.OPTIMIZER_FILE
        if not file.is_file():
            raise FileNotFoundError(f"no optimizer state in {path} ({self.OPTIMIZER_FILE} missing)")
        self.optimizer.load_state_dict(torch.load(file, map_location=self.device))
