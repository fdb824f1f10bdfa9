"""Evaluation helpers: metrics of episodes and of baselines on the same tasks."""

import pytest

from envs.data import build_tasks, training_interactions
from envs.signals.signals import graph_signals
from envs.tools import InteractionGraph
from envs.types import ParsedAction, RankingOutcome, ToolCall, Trajectory, Turn
from rl.evaluate import baseline_metrics, baseline_ranks, format_table, trajectory_metrics


def episode(rank, valid, calls):
    action = ParsedAction(tool_calls=[ToolCall("user_cf", {"user_id": "1"})] * calls)
    return Trajectory(task_id="t", env_id="e", source="s", turns=[Turn("policy", "...", action=action)],
                      outcome=RankingOutcome(rank=rank), format_valid=valid)


def test_trajectory_metrics_by_hand():
    metrics = trajectory_metrics([episode(1, True, 1), episode(4, True, 2), episode(None, False, 0)])
    assert metrics["hr@1"] == pytest.approx(1 / 3)
    assert metrics["hr@3"] == pytest.approx(1 / 3)
    assert metrics["hr@5"] == pytest.approx(2 / 3)
    assert metrics["hr_avg"] == pytest.approx((1 / 3 + 1 / 3 + 2 / 3) / 3)
    assert metrics["mrr"] == pytest.approx((1 + 1 / 4) / 3)
    assert metrics["format_rate"] == pytest.approx(2 / 3)
    assert metrics["tool_calls"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        trajectory_metrics([])


def test_baselines_on_the_same_tasks(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=19, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    signals = graph_signals(synthetic_catalog, graph)
    random_ranks = baseline_ranks("random", tasks, signals, seed=0)
    assert len(random_ranks) == len(tasks) and all(1 <= r <= 20 for r in random_ranks)
    random = baseline_metrics(random_ranks)
    itemknn = baseline_metrics(baseline_ranks("itemknn", tasks, signals, seed=0))
    assert itemknn["hr_avg"] > random["hr_avg"] + 0.2 and itemknn["format_rate"] == 1.0
    assert random_ranks == baseline_ranks("random", tasks, signals, seed=0)
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_ranks("oracle", tasks, signals, seed=0)
    table = format_table({"random": random, "itemknn": itemknn})
    assert table.splitlines()[0].split()[:3] == ["method", "hr@1", "hr@3"] and "itemknn" in table
