"""Learner: the trainable policy (LoRA or full), its optimizer, and the SFT and GRPO updates.

A plain class (a Ray actor in the driver). It holds no reference model: the KL term reads the
batch's ``ref_logprobs``, scored beforehand by ``rl.reference.ReferenceModel``. Several learners
form one torch.distributed group (``rl.learner_group``): each takes a share of a batch's rows, and
its ``rl.strategy.Strategy`` (DDP or DeepSpeed ZeRO) reduces their gradients, so the group steps as
one learner would on the whole batch. ``TrainedModel`` is what it shares with PPO's critic
(``rl.critic``): the model, the strategy, the process group and the checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from rl.algorithms import grpo_loss, masked_mean, truncated_importance_weights
from rl.batch import TokenBatch, in_row_order
from rl.checkpoints import save_checkpoint, step_dir
from rl.logprobs import PolicyLogits, batch_logprobs, masked_token_logprobs
from rl.strategy import LearnerConfig, Strategy, distributed, free_port, init_process_group, resolve_backend
from rollout.policy import LoraSettings, load_policy, trainable_state


class TrainedModel:
    """A model trained through a strategy and saved in checkpoints: what the policy learner and the
    critic (``rl.critic``) share.

    Args:
        model_name: base model name or folder (``rollout.models.resolve_model``).
        lora: adapter shape; None fine-tunes every weight.
        lr: peak AdamW learning rate.
        adapter_dir: start from this checkpoint (e.g. the SFT result): adapter or full weights.
        num_threads: torch CPU threads.
        seed: torch seed (the same on every learner of a group, so they start alike).
        bf16: bfloat16 autocast for matmuls (weights and optimizer stay fp32).
        device: ``cpu`` or ``cuda``; the weights it hands out are always on the CPU.
        config: strategy, optimizer, schedule and clipping (``rl.strategy.LearnerConfig``).
        total_steps: optimizer steps the learning-rate schedule spans.
        rank: this learner's rank in its group of ``config.num_learners``.
        master: address and port of rank 0's process group, when the group has several learners.
    """

    OPTIMIZER_FILE = "optimizer.pt"

    def __init__(self, *, model_name: str, lora: LoraSettings | None, lr: float, adapter_dir: str | Path | None = None,
                 num_threads: int | None = None, seed: int = 0, bf16: bool = True, device: str = "cpu",
                 config: LearnerConfig = LearnerConfig(), total_steps: int = 0, rank: int = 0,
                 master: tuple[str, int] | None = None):
        if num_threads:
            torch.set_num_threads(num_threads)
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.rank = rank
        if config.strategy != "torch" and not distributed():  # DDP and DeepSpeed need a group, even of one
            if master is None and config.num_learners > 1:
                raise ValueError(f"a group of {config.num_learners} learners needs its master (address, port)")
            address, port = master or ("127.0.0.1", free_port())
            init_process_group(rank=rank, world_size=config.num_learners, address=address, port=port,
                               backend=resolve_backend(config.backend, self.device))
        self.model, self.tokenizer = load_policy(model_name, lora=lora, adapter_dir=adapter_dir, trainable=True,
                                                 device=device)
        self.model.train()
        if config.gradient_checkpointing:  # non-reentrant: LoRA's frozen inputs need no requires_grad
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        module = self.trained_module(adapter_dir)
        self.parameters = [p for p in module.parameters() if p.requires_grad]
        self.strategy = Strategy(module, self.parameters, lr=lr, config=config,
                                 total_steps=total_steps, device=self.device)
        self.pad_id = self.tokenizer.pad_token_id
        self.bf16 = bf16

    def trained_module(self, adapter_dir: str | Path | None) -> torch.nn.Module:
        """The module the strategy trains, and DDP or DeepSpeed wrap (built around ``self.model``)."""
        return PolicyLogits(self.model)

    def _group_sum(self, count: int) -> int:
        """``count`` summed over the group's learners (``count`` alone for one learner)."""
        if not distributed():
            return count
        total = torch.tensor([count], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(total)
        return int(total.item())

    def _micro_batches(self, batch: TokenBatch, rows: int, tokens: int) -> list[list[int]]:
        """``batch.micro_batches(rows, tokens)``; in a group, as many as the learner with the most:
        every learner runs each pass with the others (ZeRO-3 gathers the weights in each)."""
        parts = batch.micro_batches(rows, tokens)
        if tokens and distributed():  # row counts alone split every learner's equal share alike
            most = torch.tensor([len(parts)], device=self.device)
            torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
            parts = batch.micro_batches(rows, tokens, at_least=int(most.item()))
        return parts

    def _share(self, units: int, group_units: int) -> float:
        """What a part with ``units`` (tokens, or sequences) weighs in a step's mean loss over
        ``group_units``; the group's gradient reduction averages over its learners, hence the
        factor of their number."""
        return units * self.strategy.world_size / max(group_units, 1)

    def pad_token_id(self) -> int:
        """The id that pads token batches for this policy."""
        return self.pad_id

    def optimizer_file(self, rank: int | None = None) -> str:
        """Where a learner (this one by default) keeps its optimizer state in a checkpoint: each
        keeps its own ZeRO partition."""
        rank = self.rank if rank is None else rank
        return self.OPTIMIZER_FILE if rank == 0 else f"optimizer-rank{rank}.pt"

    def save(self, path: str | Path, *, with_optimizer: bool = False) -> str:
        """Saves the adapter (or the full model) as safetensors, with the tokenizer, and optionally
        the optimizer state (to resume training); returns the folder. In a group every learner
        calls it: the first writes the weights, each writes its optimizer state."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        with self.strategy.gathered():
            if self.rank == 0:
                self.save_weights(path)
        if with_optimizer:
            torch.save(self.strategy.optimizer_state(), path / self.optimizer_file())
        if distributed():
            torch.distributed.barrier()
        return str(path)

    def save_weights(self, path: Path) -> None:
        """Writes the trained weights (and the tokenizer) into ``path``."""
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)

    def save_checkpoint(self, root: str | Path, step: int, trainer_state: dict, *, keep_last: int) -> str:
        """Writes ``root/step-NNNNNN`` atomically (weights, optimizer, ``trainer_state.json`` with the
        step), keeping the last ``keep_last``; see ``rl.checkpoints``. Returns the folder. In a group
        every learner calls it: the first renames the folder in once all have written into it."""
        if self.rank != 0:
            folder = [None]
            torch.distributed.broadcast_object_list(folder, src=0)
            self.save(folder[0], with_optimizer=True)
            torch.distributed.barrier()  # the first learner has renamed it
            return str(step_dir(root, step))

        def write(folder: Path) -> None:
            if distributed():
                torch.distributed.broadcast_object_list([str(folder)], src=0)
            self.save(folder, with_optimizer=True)

        saved = save_checkpoint(root, step, write, trainer_state, keep_last=keep_last)
        if distributed():
            torch.distributed.barrier()
        return str(saved)

    def load_optimizer(self, path: str | Path) -> None:
        """Restores the optimizer and schedule state saved with ``save(..., with_optimizer=True)``
        (tensors and plain containers only: loading runs no pickled code)."""
        files = [Path(path) / self.optimizer_file(rank) for rank in range(self.strategy.world_size)]
        for file in files:
            if not file.is_file():
                raise FileNotFoundError(f"no optimizer state in {path} ({file.name} missing)")
        states = [torch.load(file, map_location=self.device, weights_only=True) for file in files]
        self.strategy.load_optimizer_state(states, self.rank)


class Learner(TrainedModel):
    """Owns the policy being trained: SFT steps, GRPO/PPO updates, the weights rollout workers need
    (arguments: ``TrainedModel``)."""

    def logprobs(self, batch: TokenBatch, *, temperature: float = 1.0, micro_batch_size: int = 4,
                 micro_batch_tokens: int = 0) -> torch.Tensor:
        """The current policy's log-prob of each policy token of ``batch`` (0 elsewhere), ``[B, T]``, no gradient."""
        return batch_logprobs(self.strategy.module, batch.to(self.device), temperature=temperature,
                              micro_batches=self._micro_batches(batch, micro_batch_size, micro_batch_tokens),
                              bf16=self.bf16)

    def sft_step(self, sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[int]]) -> dict[str, float]:
        """One optimizer step of masked next-token cross-entropy (assistant tokens only; in a group,
        the mean over every learner's tokens)."""
        started = time.perf_counter()
        batch = TokenBatch.from_sequences(sequences, masks, pad_id=self.pad_id).to(self.device)
        mask = batch.policy_mask
        logp = masked_token_logprobs(self.strategy.module, batch.input_ids, batch.attention_mask, mask, bf16=self.bf16)
        loss = -masked_mean(logp, mask) * self._share(batch.num_tokens, self._group_sum(batch.num_tokens))
        self.strategy.backward(loss)
        grad_norm = self.strategy.step()
        tokens = int(batch.attention_mask.sum())
        return {"train/loss": loss.item(), "train/grad_norm": grad_norm, "train/lr": self.strategy.learning_rate(),
                "perf/tokens_per_s": tokens / (time.perf_counter() - started)}

    def update(self, batch: TokenBatch, *, clip_eps: float, kl_coef: float, temperature: float,
               micro_batch_size: int = 4, micro_batch_tokens: int = 0, mini_batches: int = 1, epochs: int = 1,
               tis_cap: float | None = None, behaviour_logprobs: bool = False, loss_agg: str = "token-mean",
               kl_estimator: str = "k3") -> dict[str, float]:
        """GRPO/PPO update on a scored batch: ``epochs`` passes of ``mini_batches`` optimizer steps each.

        The old log-probs (the ratio's denominator) are the policy's before the first step, under
        the sampling temperature; with a single step they come from that step's own forward pass.
        With ``behaviour_logprobs`` they are the sampler's own (``batch.rollout_logprobs``): the
        policy that generated the batch, when it lags the learner (one-step off-policy).
        Each mini-batch (consecutive rows) takes one optimizer step on its mean loss (over tokens, or
        over sequences: ``loss_agg``), accumulated over micro-batches of ``micro_batch_size`` rows
        (and ``micro_batch_tokens`` tokens) weighted by their tokens (or sequences).

        Args:
            batch: tokens, advantages and rollout log-probs; ``ref_logprobs`` when ``kl_coef != 0``.
            clip_eps: PPO ratio clipping.
            kl_coef: weight of the k3 KL penalty to ``batch.ref_logprobs``.
            temperature: the sampling temperature.
            micro_batch_size: rows per forward pass.
            micro_batch_tokens: if set, also at most this many tokens per forward pass (its rows
                padded to the longest; ``TokenBatch.micro_batches``).
            mini_batches: optimizer steps per epoch, at most one per row.
            epochs: passes over the batch.
            tis_cap: if set, weight each token's policy gradient by the truncated importance ratio
                ``min(exp(old - rollout_logprobs), tis_cap)`` (sampler != learner correction);
                needs the sampler's ``rollout_logprobs``.
            behaviour_logprobs: take the ratio's denominator from ``batch.rollout_logprobs``.
            loss_agg: how the loss averages tokens (``rl.estimators.LOSS_AGG_MODES``).
            kl_estimator: ``k1``, ``k2`` or ``k3`` (``rl.algorithms.kl_penalty``).

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
        alone = not distributed()  # in a group every learner takes every step, even with nothing to learn
        # A single step runs on the policy before the update itself: its own forward pass gives the
        # learner's log-probs, saving a pass. Otherwise they are taken once, before any step moves the policy.
        single_step = mini_batches == 1 and epochs == 1
        micro = {"micro_batch_size": micro_batch_size, "micro_batch_tokens": micro_batch_tokens}
        policy_logprobs = None if single_step else self.logprobs(batch, temperature=temperature, **micro)
        old_logprobs = batch.rollout_logprobs if behaviour_logprobs else policy_logprobs
        history = []
        for _ in range(epochs):
            for rows in torch.arange(len(batch), device=self.device).tensor_split(mini_batches):
                mini_batch = batch.rows(rows)
                if alone and mini_batch.num_tokens == 0:
                    continue
                metrics, step_logprobs = self._step(
                    mini_batch, None if old_logprobs is None else old_logprobs[rows], clip_eps=clip_eps,
                    kl_coef=kl_coef, temperature=temperature, tis_cap=tis_cap, loss_agg=loss_agg,
                    kl_estimator=kl_estimator, **micro)
                history.append(metrics)
        if single_step:
            policy_logprobs = step_logprobs
            old_logprobs = policy_logprobs if old_logprobs is None else old_logprobs
        metrics = {f"train/{key}": sum(m[key] for m in history) / len(history) for key in history[0]}
        metrics["train/optimizer_steps"] = float(len(history))
        metrics["train/lr"] = self.strategy.learning_rate()
        mask = batch.policy_mask
        metrics["train/logprob_mismatch"] = masked_mean((batch.rollout_logprobs - policy_logprobs).abs(), mask).item()
        if tis_cap is not None:
            weights = truncated_importance_weights(old_logprobs, batch.rollout_logprobs, cap=tis_cap)
            metrics["train/tis_weight_mean"] = masked_mean(weights, mask).item()
        metrics["perf/learner_tokens_per_s"] = (
            int(batch.attention_mask.sum()) * epochs / (time.perf_counter() - started))
        return metrics

    def _step(self, batch: TokenBatch, old_logprobs: torch.Tensor | None, *, clip_eps: float, kl_coef: float,
              temperature: float, micro_batch_size: int, micro_batch_tokens: int, tis_cap: float | None,
              loss_agg: str, kl_estimator: str):
        """One optimizer step on ``batch``; old log-probs None: this forward pass's own (detached).

        Returns the step's metrics and the policy's log-probs before the step, ``[b, T]``.
        """
        sums: dict[str, float] = {}
        policy_logprobs = []
        def units(part: TokenBatch) -> int:  # what the step's loss averages over
            return part.num_tokens if loss_agg == "token-mean" else int((part.policy_mask.sum(dim=1) > 0).sum())

        group_units = self._group_sum(units(batch))
        parts = self._micro_batches(batch, micro_batch_size, micro_batch_tokens)
        for rows in parts:
            part = batch.rows(rows)
            mask = part.policy_mask
            # In a group every learner runs as many backward passes as the others (each one may reduce).
            if part.num_tokens == 0 and not distributed():
                policy_logprobs.append(torch.zeros_like(mask, dtype=torch.float32))
                continue
            logp = masked_token_logprobs(self.strategy.module, part.input_ids, part.attention_mask, mask,
                                         temperature=temperature, bf16=self.bf16)
            policy_logprobs.append(logp.detach())
            old = logp.detach() if old_logprobs is None else old_logprobs[rows]
            weights = None if tis_cap is None else truncated_importance_weights(old, part.rollout_logprobs,
                                                                                cap=tis_cap)
            loss, metrics = grpo_loss(logp, old, part.ref_logprobs, part.advantages, mask, clip_eps=clip_eps,
                                      kl_coef=kl_coef, weights=weights, loss_agg=loss_agg, kl_estimator=kl_estimator)
            share = self._share(units(part), group_units)  # the step's loss is a mean over all of them
            with self.strategy.no_sync(rows != parts[-1]):  # DDP reduces in a step's last backward
                self.strategy.backward(loss * share)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value * share
        sums["grad_norm"] = self.strategy.step()
        return sums, in_row_order(parts, policy_logprobs)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Current trained weights (LoRA, or all), for the rollout workers (in a group, every learner
        returns them whole)."""
        with self.strategy.gathered():
            return trainable_state(self.model)

