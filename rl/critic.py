"""The critic: PPO's value model, trained beside the policy on the returns of its episodes."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor, nn

from rl.batch import TokenBatch, in_row_order
from rl.estimators import value_loss
from rl.learner import TrainedModel
from rl.logprobs import decoder_states, language_model, outputs_at, place


class ValueModel(nn.Module):
    """A causal LM's decoder with a scalar head: the value of the state each selected token is drawn in.

    Position t's value reads the hidden state at t - 1, the context the policy sampled token t
    from, so values line up with log-probs. The head starts at zero: every value is 0 until it learns.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.head = nn.Linear(language_model(model).config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, select: Tensor) -> Tensor:
        """The value at each position t + 1 where ``select[:, t]`` (``[B, T-1]``), ``[N]``."""
        hidden = decoder_states(self.model, input_ids, attention_mask)
        return self.head(hidden[:, :-1][select]).squeeze(-1)


class Critic(TrainedModel):
    """PPO's value model (a plain class; a Ray actor in the driver): the policy's network, LoRA or
    full, started from a policy checkpoint (or from one of its own, head included), with a value head.

    Arguments are ``TrainedModel``'s; ``adapter_dir`` is the policy's starting checkpoint or a
    critic checkpoint (which adds ``value_head.safetensors``).
    """

    HEAD_FILE = "value_head.safetensors"

    def trained_module(self, adapter_dir: str | Path | None) -> nn.Module:
        from safetensors.torch import load_file

        self.value_model = ValueModel(self.model).to(self.device)
        head = None if adapter_dir is None else Path(adapter_dir) / self.HEAD_FILE
        if head is not None and head.is_file():
            self.value_model.head.load_state_dict(load_file(head, device=str(self.device)))
        return self.value_model

    def _values(self, batch: TokenBatch) -> Tensor:
        values, select = outputs_at(self.strategy.module, batch.input_ids, batch.attention_mask, batch.policy_mask,
                                    bf16=self.bf16)
        return place(values, select, batch.input_ids.shape[1])

    @torch.no_grad()
    def values(self, batch: TokenBatch, *, micro_batch_size: int = 4, micro_batch_tokens: int = 0) -> Tensor:
        """The value of each policy token's state (0 elsewhere), ``[B, T]``, on the batch's device."""
        on_device = batch.to(self.device)
        parts = self._micro_batches(on_device, micro_batch_size, micro_batch_tokens)
        values = in_row_order(parts, [self._values(on_device.rows(rows)) for rows in parts])
        return values.to(batch.input_ids.device)

    def update(self, batch: TokenBatch, old_values: Tensor, returns: Tensor, *, clip_eps: float | None,
               micro_batch_size: int = 4, micro_batch_tokens: int = 0, mini_batches: int = 1,
               epochs: int = 1) -> dict[str, float]:
        """Fits the values to ``returns``: ``epochs`` passes of ``mini_batches`` optimizer steps, each
        on the clipped value loss (``rl.estimators.value_loss``), a token mean over its mini-batch.

        Args:
            batch: the episodes' tokens (its ``policy_mask`` marks the steps).
            old_values: ``[B, T]`` values when the episodes were scored (``values``).
            returns: ``[B, T]`` targets, e.g. from ``rl.estimators.masked_gae``.
            clip_eps: how far a value may move from ``old_values`` unclipped; None: no clipping.
            micro_batch_size: rows per forward pass.
            micro_batch_tokens: if set, also at most this many (padded) tokens per forward pass.
            mini_batches: optimizer steps per epoch.
            epochs: passes over the batch.

        Returns:
            ``critic/value_loss``, ``critic/value_clip_frac``, ``critic/explained_variance`` and
            ``critic/grad_norm`` averaged over the steps, and ``perf/critic_tokens_per_s``.
        """
        started = time.perf_counter()
        if not 1 <= mini_batches <= len(batch) or epochs < 1:
            raise ValueError(f"need 1 <= mini_batches <= {len(batch)} and epochs >= 1, got {mini_batches}, {epochs}")
        batch, old_values, returns = batch.to(self.device), old_values.to(self.device), returns.to(self.device)
        history = []
        for _ in range(epochs):
            for rows in torch.arange(len(batch), device=self.device).tensor_split(mini_batches):
                part = batch.rows(rows)
                history.append(self._step(part, old_values[rows], returns[rows], clip_eps=clip_eps,
                                          micro_batch_size=micro_batch_size,
                                          micro_batch_tokens=micro_batch_tokens))
        metrics = {f"critic/{key}": sum(m[key] for m in history) / len(history) for key in history[0]}
        metrics["perf/critic_tokens_per_s"] = int(batch.attention_mask.sum()) * epochs / (time.perf_counter() - started)
        return metrics

    def _step(self, batch: TokenBatch, old_values: Tensor, returns: Tensor, *, clip_eps: float | None,
              micro_batch_size: int, micro_batch_tokens: int) -> dict[str, float]:
        sums: dict[str, float] = {}
        group_tokens = self._group_sum(batch.num_tokens)
        parts = self._micro_batches(batch, micro_batch_size, micro_batch_tokens)
        for rows in parts:
            part = batch.rows(rows)
            loss, metrics = value_loss(self._values(part), old_values[rows], returns[rows], part.policy_mask,
                                       clip_eps=clip_eps)
            share = self._share(part.num_tokens, group_tokens)
            with self.strategy.no_sync(rows != parts[-1]):
                self.strategy.backward(loss * share)
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value * share
        sums["grad_norm"] = self.strategy.step()
        return sums

    def save_weights(self, path: Path) -> None:
        from safetensors.torch import save_file

        super().save_weights(path)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.value_model.head.state_dict().items()},
                  path / self.HEAD_FILE)
