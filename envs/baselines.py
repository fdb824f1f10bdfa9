"""Non-LLM rankers over a RankingTask: the bars an agent has to clear.

``random``, and one baseline per signal the agent can read as a tool (``envs.signals``), scored on
``task.history`` exactly as the tool scores it. Each returns a full ranking of
``task.candidate_item_ids``, best first.
"""

from __future__ import annotations

from collections.abc import Mapping

from envs.data.splits import user_rng
from envs.signals.signals import Signal
from envs.tools.toolbox import rank_candidates
from envs.types import RankingTask

SIGNAL_BASELINES: dict[str, str] = {
    "pop": "popularity",
    "itemknn": "item_cf",
    "itemknn_recent": "recent_cf",
    "userknn": "user_cf",
    "genre_year": "genre_year",
    "sasrec": "sequential",
}
"""Baseline method -> the signal it ranks by."""

BASELINES: tuple[str, ...] = ("random", *SIGNAL_BASELINES)


def rank_random(task: RankingTask, *, seed: int) -> list[str]:
    """A random permutation that depends only on ``seed`` and ``task.task_id``."""
    candidates = list(task.candidate_item_ids)
    user_rng(seed, task.task_id).shuffle(candidates)
    return candidates


def rank_by_signal(signal: Signal, task: RankingTask) -> list[str]:
    """Candidates by the signal's score on ``task.history``; ties keep candidate order."""
    scores = signal.scores(task.user_id, task.history, task.candidate_item_ids)
    return rank_candidates(scores, task.candidate_item_ids)


def baseline_ranking(name: str, task: RankingTask, signals: Mapping[str, Signal], *, seed: int) -> list[str]:
    """The ranking of baseline ``name`` (one of ``BASELINES``).

    Raises:
        ValueError: unknown baseline, or its signal is not among ``signals`` (``sasrec`` needs a fitted
            sequential model).
    """
    if name == "random":
        return rank_random(task, seed=seed)
    if name not in SIGNAL_BASELINES:
        raise ValueError(f"unknown baseline '{name}'; available: {list(BASELINES)}")
    signal_name = SIGNAL_BASELINES[name]
    if signal_name not in signals:
        raise ValueError(f"baseline '{name}' needs the '{signal_name}' signal; available: {sorted(signals)}")
    return rank_by_signal(signals[signal_name], task)
