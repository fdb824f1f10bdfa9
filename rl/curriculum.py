"""STAR's RL data: tasks the SFT student solves sometimes, binned by difficulty and mixed.

The student samples each candidate training task ``samples`` times. Tasks it always or never solves
give GRPO groups with equal rewards (nothing to learn), so only tasks with 1 to ``samples - 1``
successes are kept, binned by success rate (of 8 samples: hard 1-2, medium 3-5, easy 6-7), and
mixed easy:medium:hard = 3:4:3 (an empty bin leaves the mix).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


BINS = ("easy", "medium", "hard")


@dataclass(frozen=True)
class CurriculumConfig:
    """Which training tasks GRPO trains on (STAR's RL data)."""

    enabled: bool = False
    """Curate the tasks (``recrl curate``) and train GRPO on them; False trains on every training task."""
    candidate_tasks: int = 0
    """Training tasks the SFT student samples (a seeded sample; 0 = all)."""
    samples: int = 8
    """Episodes per candidate task."""
    success_at: int = 1
    """A sampled episode succeeds when its ranking puts the target at or above this (1: a hit@1)."""
    mix: list[float] = field(default_factory=lambda: [3.0, 4.0, 3.0])
    """easy : medium : hard in the curated set."""
    temperature: float = 0.7
    """Sampling temperature."""
    max_new_tokens: int = 96
    """Tokens per assistant turn."""

    def __post_init__(self):
        if self.samples < 2:
            raise ValueError(f"curriculum.samples must be >= 2 to tell tasks apart, got {self.samples}")
        if len(self.mix) != len(BINS) or min(self.mix) < 0 or not sum(self.mix):
            raise ValueError(f"curriculum.mix must be 3 non-negative weights (easy, medium, hard), got {self.mix}")


def difficulty(successes: int, samples: int) -> str | None:
    """The bin of a task solved ``successes`` times out of ``samples``; None when it is always or never solved.

    Cut points are STAR's for 8 samples (hard 1-2, medium 3-5, easy 6-7), as success rates.

    >>> [difficulty(s, 8) for s in range(9)]
    [None, 'hard', 'hard', 'medium', 'medium', 'medium', 'easy', 'easy', None]
    """
    if not 0 < successes < samples:
        return None
    rate = successes / samples
    if rate <= 2 / 8:
        return "hard"
    if rate <= 5 / 8:
        return "medium"
    return "easy"


def mix_counts(available: Mapping[str, int], mix: Sequence[float]) -> dict[str, int]:
    """How many tasks of each bin to take: the largest set in the ``mix`` proportions the bins can supply.

    A bin with no task leaves the mix, and the others keep their proportions among themselves: an SFT
    student that solves tasks either always or mostly (no hard or medium task) still gives GRPO the
    easy ones, rather than nothing.

    >>> mix_counts({"easy": 30, "medium": 10, "hard": 50}, [3, 4, 3])
    {'easy': 8, 'medium': 10, 'hard': 8}
    >>> mix_counts({"easy": 5, "medium": 0, "hard": 5}, [3, 4, 3])
    {'easy': 5, 'medium': 0, 'hard': 5}
    """
    weights = {name: weight for name, weight in zip(BINS, mix) if weight > 0 and available.get(name, 0) > 0}
    if not weights:
        return dict.fromkeys(BINS, 0)
    shares = {name: weight / sum(weights.values()) for name, weight in weights.items()}
    total = min(available[name] / share for name, share in shares.items())
    return {name: min(available.get(name, 0), round(total * shares.get(name, 0))) for name in BINS}


def curate(successes: Mapping[str, int], *, samples: int, mix: Sequence[float], seed: int
           ) -> tuple[dict[str, str], dict[str, int]]:
    """The curated tasks and the counts behind them.

    Args:
        successes: successful samples per task id.
        samples: samples per task.
        mix: easy, medium, hard weights.
        seed: seeds which tasks of a bin are kept when it has more than its share.

    Returns:
        ``{task_id: bin}`` of the kept tasks (in ``successes`` order), and counts: candidates, per
        success count, per bin before and after mixing.
    """
    bins: dict[str, list[str]] = {name: [] for name in BINS}
    for task_id, count in successes.items():
        name = difficulty(count, samples)
        if name is not None:
            bins[name].append(task_id)
    take = mix_counts({name: len(ids) for name, ids in bins.items()}, mix)
    rng = random.Random(seed)
    chosen = {task_id: name for name, ids in bins.items() for task_id in rng.sample(ids, take[name])}
    kept = {task_id: chosen[task_id] for task_id in successes if task_id in chosen}
    histogram = {str(s): sum(count == s for count in successes.values()) for s in range(samples + 1)}
    counts = {"candidates": len(successes), "successes": histogram,
              **{f"{name}_available": len(ids) for name, ids in bins.items()},
              **{name: take[name] for name in BINS}, "kept": len(kept)}
    return kept, counts
