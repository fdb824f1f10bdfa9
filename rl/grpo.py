"""The GRPO driver: reads like a local training loop; workers may be Ray actors or plain objects."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from envs.types import RecTask, Trajectory
from rl.algorithms import grpo_advantages
from rollout.actors import broadcast, call, map_actors
from rollout.engines.hf import SamplingParams


@dataclass(frozen=True)
class GRPOConfig:
    """Group-relative policy optimisation (STAR uses G=8, lr 1e-6, KL 0.001, temperature 0.7)."""

    steps: int = 3
    """Policy updates."""
    tasks_per_step: int = 4
    """Distinct tasks per update."""
    group_size: int = 4
    """Samples per task; advantages are normalised within each group."""
    lr: float = 1e-5
    """AdamW learning rate for the LoRA weights."""
    kl_coef: float = 0.001
    """Weight of the k3 KL penalty to the reference (the base model)."""
    clip_eps: float = 0.2
    """PPO ratio clipping."""
    temperature: float = 0.7
    """Sampling temperature of rollouts (and of the learner's log-probs)."""
    max_new_tokens: int = 96
    """Tokens per assistant turn."""
    micro_batch_size: int = 4
    """Episodes per learner forward pass."""
    scale_by_std: bool = True
    """Divide group-centred rewards by the group std (False: Dr. GRPO)."""
    save_every: int = 1
    """Checkpoint the adapter every this many steps."""


TRAINER_STATE = "trainer_state.json"


def read_trainer_state(checkpoint_dir: str | Path) -> dict | None:
    """What ``train_grpo`` wrote next to its last checkpoint (``{"step": ..., **checkpoint_info}``)."""
    path = Path(checkpoint_dir) / TRAINER_STATE
    return json.loads(path.read_text()) if path.is_file() else None


def train_grpo(*, learner, workers: Sequence, tasks: Sequence[RecTask], config: GRPOConfig, seed: int,
               checkpoint_dir: str | Path, log: Callable[[dict, int], None] | None = None, start_step: int = 0,
               checkpoint_info: dict | None = None) -> list[dict[str, float]]:
    """Runs GRPO updates ``start_step + 1 .. config.steps`` and returns each step's metrics.

    Each step: sample tasks, roll out groups on the workers, score, compute group-normalised
    advantages, update the learner, push the new weights to every worker, checkpoint, log.
    A checkpoint holds the weights, the optimizer state and ``trainer_state.json`` (the step and
    ``checkpoint_info``); resuming from it (learner and workers loaded from it, ``start_step`` its
    step) draws the same tasks as an uninterrupted run.
    """
    rng = random.Random(seed)
    for _ in range(start_step):
        rng.sample(list(tasks), min(config.tasks_per_step, len(tasks)))
    params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature)
    history = []
    steps = range(start_step + 1, config.steps + 1)
    for step in tqdm(steps, desc="grpo", unit="step", initial=start_step, total=config.steps):
        started = time.perf_counter()
        batch_tasks = rng.sample(list(tasks), min(config.tasks_per_step, len(tasks)))
        trajectories: list[Trajectory] = map_actors(
            workers, "rollout", batch_tasks, params=params, samples_per_task=config.group_size,
            seed=seed * 100_003 + step,
        )
        rollout_seconds = time.perf_counter() - started
        rewards = torch.tensor([t.reward for t in trajectories], dtype=torch.float32)
        advantages = grpo_advantages(rewards, config.group_size, scale_by_std=config.scale_by_std)
        metrics = call(learner, "grpo_step", trajectories, advantages.tolist(), clip_eps=config.clip_eps,
                       kl_coef=config.kl_coef, temperature=config.temperature,
                       micro_batch_size=config.micro_batch_size)
        workers = broadcast(workers, "set_trainable_state", call(learner, "trainable_state"))
        if step % config.save_every == 0 or step == config.steps:
            call(learner, "save", Path(checkpoint_dir), with_optimizer=True)
            trainer_state = {"step": step, **(checkpoint_info or {})}
            (Path(checkpoint_dir) / TRAINER_STATE).write_text(json.dumps(trainer_state))
        metrics.update(episode_metrics(trajectories))
        # Groups whose samples all scored the same teach nothing but the KL term.
        metrics["rollout/uniform_group_frac"] = float(
            (rewards.view(-1, config.group_size).std(dim=1, unbiased=False) == 0).float().mean())
        policy_tokens = sum(sum(t.loss_mask) for t in trajectories)
        metrics["perf/rollout_tokens_per_s"] = policy_tokens / max(rollout_seconds, 1e-9)
        metrics["perf/step_seconds"] = time.perf_counter() - started
        history.append(metrics)
        if log is not None:
            log(metrics, step)
    return history


def episode_metrics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Mean of every reward component (``reward/<name>``) and episode statistics."""
    count = len(trajectories)
    metrics = {"reward/total": sum(t.reward for t in trajectories) / count}
    for name in trajectories[0].rewards:
        metrics[f"reward/{name}"] = sum(t.rewards.get(name, 0.0) for t in trajectories) / count
    metrics["rollout/format_rate"] = sum(t.format_valid for t in trajectories) / count
    metrics["rollout/tool_calls"] = sum(t.num_tool_calls for t in trajectories) / count
    metrics["rollout/tokens"] = sum(len(t.token_ids) for t in trajectories) / count
    return metrics
