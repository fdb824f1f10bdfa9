"""Scores methods on the same tasks: classic baselines, the teacher, and student checkpoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from envs.baselines import baseline_ranking
from envs.signals.signals import Signal
from envs.types import RankingTask, Trajectory
from rewards.ranking import rank_of, ranking_metrics

METRIC_KEYS = ("hr@1", "hr@3", "hr@5", "hr_avg", "hr_avg_ci95", "ndcg@5", "mrr", "format_rate", "turn_format_rate", "tool_calls")


def trajectory_metrics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Ranking metrics of the episodes, plus how well they speak the protocol.

    ``format_rate``: episodes that end in a valid ranking with every turn well-formed.
    ``turn_format_rate``: assistant turns whose tags parse (a finer signal early in training).
    ``tool_calls``: tool calls per episode.
    """
    if not trajectories:
        raise ValueError("no trajectories to score")
    metrics = ranking_metrics([t.rank for t in trajectories])
    metrics["format_rate"] = sum(t.format_valid for t in trajectories) / len(trajectories)
    turns = [action for t in trajectories for action in t.actions]
    metrics["turn_format_rate"] = sum(not a.errors for a in turns) / len(turns) if turns else 0.0
    metrics["tool_calls"] = sum(t.num_tool_calls for t in trajectories) / len(trajectories)
    return metrics


def baseline_ranks(name: str, tasks: Sequence[RankingTask], signals: Mapping[str, Signal], *,
                   seed: int) -> list[int | None]:
    """The target's rank under a classic recommender (``envs.baselines``), task by task."""
    return [rank_of(baseline_ranking(name, task, signals, seed=seed), task.target_item_id) for task in tasks]


def baseline_metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    """A classic recommender's ranking metrics (its output is always well-formed)."""
    metrics = ranking_metrics(ranks)
    metrics.update(format_rate=1.0, turn_format_rate=1.0, tool_calls=0.0)
    return metrics


def format_table(methods: dict[str, dict[str, float]]) -> str:
    """A fixed-width table, one method per row: the ranking metrics, or whatever metrics a rating or
    conversational evaluation's methods have."""
    keys = METRIC_KEYS
    if not any("hr@1" in metrics for metrics in methods.values()):
        keys = list(dict.fromkeys(key for metrics in methods.values() for key in metrics))
    widths = [max(10, len(k)) + 2 for k in keys]
    header = f"{'method':<14}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths))
    rows = [header, "-" * len(header)]
    for name, metrics in methods.items():
        rows.append(f"{name:<14}" + "".join(f"{metrics.get(k, float('nan')):>{w}.3f}" for k, w in zip(keys, widths)))
    return "\n".join(rows)
