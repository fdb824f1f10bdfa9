"""RolloutWorker: one policy copy that plays episodes; a plain class, wrapped by Ray in rollout.actors."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from envs import make_env
from envs.types import Catalog, RecTask, Trajectory
from rollout.chat import ChatFormat
from rollout.engines.hf import HFEngine, SamplingParams
from rollout.episode import run_episodes
from rollout.policy import LoraSettings, is_lora, load_checkpoint_state, load_policy, set_trainable_state


@dataclass
class EnvSpec:
    """Everything needed to build environments in another process."""

    env_id: str
    catalog: Catalog
    graph: Any
    kwargs: dict[str, Any] = field(default_factory=dict)

    def make(self, **overrides: Any):
        return make_env(self.env_id, catalog=self.catalog, graph=self.graph, **{**self.kwargs, **overrides})


class RolloutWorker:
    """Holds a policy and plays batches of episodes with it.

    Args:
        model_name: a name ``rollout.models.resolve_model`` knows, or a model folder.
        env_spec: how to build environments.
        lora: LoRA shape of the policy (None for the bare model).
        adapter_dir: initial adapter weights.
        num_threads: torch CPU threads for this worker.
        max_batch_size: prompts per generate call.
        max_context_tokens: an episode is cut when its context would exceed this.
        device: ``cpu`` or ``cuda`` (static KV cache and compiled decoding there).
    """

    def __init__(self, *, model_name: str, env_spec: EnvSpec, lora: LoraSettings | None = None,
                 adapter_dir: str | Path | None = None, num_threads: int | None = None,
                 max_batch_size: int = 16, max_context_tokens: int = 2048, device: str = "cpu"):
        if num_threads:
            torch.set_num_threads(num_threads)
        self.model, tokenizer = load_policy(model_name, lora=lora, adapter_dir=adapter_dir, device=device)
        self._base_weights = adapter_dir is None
        self.chat = ChatFormat(tokenizer)
        self.engine = HFEngine(self.model, tokenizer, stop_token_ids=[self.chat.end_of_turn_id],
                               max_batch_size=max_batch_size)
        self.env_spec = env_spec
        self.max_context_tokens = max_context_tokens
        self._merged = False

    def rollout(self, tasks: Sequence[RecTask], params: SamplingParams, *, samples_per_task: int = 1,
                seed: int | None = None, use_adapter: bool = True, source: str = "student") -> list[Trajectory]:
        """Plays ``samples_per_task`` episodes per task; samples of one task are consecutive."""
        expanded = [task for task in tasks for _ in range(samples_per_task)]
        group_indices = [i % samples_per_task for i in range(len(expanded))]
        envs = [self.env_spec.make(count_tokens=self.chat.count_tokens) for _ in expanded]
        if not use_adapter and not is_lora(self.model) and not self._base_weights:
            raise ValueError("the base policy of a fully fine-tuned worker is gone; start a fresh worker")
        self._merge_adapter(use_adapter)
        adapter_off = self.model.disable_adapter() if not use_adapter and is_lora(self.model) \
            else contextlib.nullcontext()
        with adapter_off:
            return run_episodes(self.engine, self.chat, envs, expanded, params, group_indices=group_indices,
                                max_context_tokens=self.max_context_tokens, source=source, seed=seed)

    def set_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Takes the learner's new weights (LoRA, or all of them)."""
        self._merge_adapter(False)
        set_trainable_state(self.model, state)
        self._base_weights = False

    def load_checkpoint(self, checkpoint_dir: str | Path) -> None:
        """Loads a saved Learner checkpoint (e.g. to evaluate it)."""
        self.set_trainable_state(load_checkpoint_state(checkpoint_dir))

    def _merge_adapter(self, merged: bool) -> None:
        """Folds LoRA into the base weights while generating: decoding small batches is bound by
        per-op overhead, and unmerged LoRA doubles the ops of every adapted layer."""
        if not is_lora(self.model) or merged == self._merged:
            return
        if merged:
            self.model.merge_adapter()
        else:
            self.model.unmerge_adapter()
        self._merged = merged
