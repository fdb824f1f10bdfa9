"""Supervised fine-tuning of the student on teacher trajectories (assistant tokens only)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from tqdm import tqdm

from envs.types import Trajectory
from rollout.chat import ChatFormat


@dataclass(frozen=True)
class SFTConfig:
    """Supervised fine-tuning on the teacher dataset."""

    lr: float = 3e-4
    """AdamW learning rate for the LoRA weights."""
    epochs: int = 1
    """Passes over the examples."""
    batch_size: int = 4
    """Episodes per optimizer step."""
    max_examples: int = 160
    """Teacher episodes used (a seeded sample); on CPU, cost is tokens."""
    max_seq_len: int = 1024
    """Longer episodes are skipped, not cut (a cut episode teaches a broken format)."""
    local_epochs: int = 0
    """GLPFT (alpha-UMi) with several ``rollout.policies``: after the global pass on whole episodes,
    this many passes fine-tune a copy of that adapter per policy on its own turns only, into
    ``sft/adapter/<role>``, where each policy then starts GRPO (0: every policy starts from the
    global adapter)."""


def sft_examples(trajectories: Sequence[Trajectory], chat: ChatFormat, *, max_seq_len: int,
                 max_examples: int, seed: int, role: str | None = None) -> list[tuple[list[int], list[int]]]:
    """Tokenizes a seeded sample of trajectories into (token_ids, loss_mask) pairs; with ``role``, the
    loss is on that role's turns only (GLPFT's local pass: the other roles' turns stay as context),
    and episodes it did not play in are skipped."""
    pool = list(trajectories)
    random.Random(seed).shuffle(pool)
    examples = []
    for trajectory in pool:
        targets = None if role is None else [turn.role == role for turn in trajectory.turns]
        token_ids, loss_mask = chat.conversation(trajectory.messages, targets=targets)
        if len(token_ids) <= max_seq_len and any(loss_mask):
            examples.append((token_ids, loss_mask))
        if len(examples) == max_examples:
            break
    if not examples:
        played = "" if role is None else f" with a turn of role '{role}'"
        raise ValueError(f"no SFT example{played} fits max_seq_len={max_seq_len} (out of {len(pool)} trajectories)")
    return examples


def train_sft(learner, examples: Sequence[tuple[list[int], list[int]]], config: SFTConfig, *, seed: int,
              log=None) -> list[float]:
    """Runs ``config.epochs`` shuffled passes; returns the loss of every step.

    Args:
        learner: anything with ``sft_step(sequences, masks) -> metrics`` (a Learner).
        examples: from ``sft_examples``.
        config: batch size and epochs.
        seed: shuffling seed.
        log: optional ``log(metrics, step)`` callback (the W&B tracker's ``log``).
    """
    order = list(range(len(examples)))
    rng = random.Random(seed)
    losses: list[float] = []
    steps_per_epoch = -(-len(examples) // config.batch_size)
    progress = tqdm(total=config.epochs * steps_per_epoch, desc="sft", unit="step")
    for epoch in range(config.epochs):
        rng.shuffle(order)
        for start in range(0, len(order), config.batch_size):
            batch = [examples[i] for i in order[start : start + config.batch_size]]
            metrics = learner.sft_step([ids for ids, _ in batch], [mask for _, mask in batch])
            losses.append(metrics["train/loss"])
            metrics["train/epoch"] = epoch
            if log is not None:
                log(metrics, len(losses))
            progress.set_postfix(loss=f"{metrics['train/loss']:.3f}")
            progress.update(1)
    progress.close()
    return losses
