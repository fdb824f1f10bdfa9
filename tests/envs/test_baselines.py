"""Tests for envs.baselines: full, deterministic rankings with the expected skill."""

import pytest

from envs.baselines import BASELINES, rank_itemknn, rank_itemknn_recent, rank_pop, rank_random, rank_userknn
from envs.data import build_tasks, synthetic_catalog, training_interactions
from envs.tools import InteractionGraph
from envs.types import Interaction, RankingTask


@pytest.fixture(scope="module")
def synthetic_setup() -> tuple[list[RankingTask], InteractionGraph]:
    # 200 users, so hit rates are measured on enough tasks to be stable.
    catalog = synthetic_catalog(num_users=200)
    tasks = build_tasks(catalog)
    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, tasks))
    return tasks, graph


def hit_rate_at_1(name: str, tasks: list[RankingTask], graph: InteractionGraph) -> float:
    return sum(BASELINES[name](t, graph, 0)[0] == t.target_item_id for t in tasks) / len(tasks)


def test_registry_has_the_baselines_with_one_signature(synthetic_setup):
    tasks, graph = synthetic_setup
    assert set(BASELINES) == {"random", "pop", "itemknn", "itemknn_recent", "userknn"}
    for ranker in BASELINES.values():
        ranking = ranker(tasks[0], graph, 0)
        assert sorted(ranking) == sorted(tasks[0].candidate_item_ids)


def test_learned_baselines_beat_random_by_far(synthetic_setup):
    tasks, graph = synthetic_setup
    hit_rates = {name: hit_rate_at_1(name, tasks, graph) for name in BASELINES}
    assert hit_rates["random"] < 0.1  # expected 1/20
    assert hit_rates["pop"] > max(0.12, 2 * hit_rates["random"])
    assert hit_rates["itemknn"] > max(0.4, 5 * hit_rates["random"])
    assert hit_rates["userknn"] > max(0.4, 5 * hit_rates["random"])


def test_random_is_seeded_per_task(synthetic_setup):
    tasks, _ = synthetic_setup
    assert rank_random(tasks[0], seed=1) == rank_random(tasks[0], seed=1)
    seed_1 = [rank_random(t, seed=1) for t in tasks[:5]]
    assert seed_1 != [rank_random(t, seed=2) for t in tasks[:5]]
    # A task's ranking depends on its own id, not on which tasks were ranked before it.
    assert rank_random(tasks[3], seed=1) == BASELINES["random"](tasks[3], None, 1)


def test_rankers_on_a_hand_built_graph():
    rows = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "c"), ("u3", "c"),
            ("u3", "d"), ("u4", "d")]
    graph = InteractionGraph.from_interactions(Interaction(u, i, 5.0, 1.0) for u, i in rows)
    task = RankingTask(task_id="t", user_id="new", history=("a",), candidate_item_ids=("d", "c", "b", "zz"), target_item_id="b")
    assert rank_pop(task, graph) == ["d", "c", "b", "zz"]  # ties keep candidate order
    assert rank_itemknn(task, graph) == ["b", "c", "d", "zz"]
    assert rank_userknn(task, graph) == ["b", "c", "d", "zz"]


def test_itemknn_recent_scores_against_the_last_items_only():
    rows = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "c"), ("u3", "c"), ("u3", "d"),
            ("u4", "d"), ("u5", "c"), ("u5", "d")]
    graph = InteractionGraph.from_interactions(Interaction(u, i, 5.0, 1.0) for u, i in rows)
    task = RankingTask(task_id="t", user_id="new", history=("a", "c"), candidate_item_ids=("b", "d", "zz"),
                       target_item_id="d")
    assert rank_itemknn(task, graph) == ["b", "d", "zz"]  # "a" and "c" both point to "b"
    assert rank_itemknn_recent(task, graph, k=1) == ["d", "b", "zz"]  # "c" alone points to "d"
    assert rank_itemknn_recent(task, graph, k=2) == rank_itemknn(task, graph)


def test_recent_items_predict_the_next_one_better_on_ml100k(ml100k):
    """On every ml-100k held-out user, ItemCF over the last 5 items beats ItemCF over the history
    (hr_avg 0.583 vs 0.487 when written), by more than the 95% interval."""
    from rewards.ranking import rank_of, ranking_metrics

    tasks = build_tasks(ml100k, num_negatives=19, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(ml100k.interactions, tasks))
    scores = {name: ranking_metrics([rank_of(BASELINES[name](t, graph, 0), t.target_item_id) for t in tasks])
              for name in ("itemknn", "itemknn_recent")}
    recent, full = scores["itemknn_recent"], scores["itemknn"]
    assert recent["hr_avg"] - full["hr_avg"] > recent["hr_avg_ci95"] + full["hr_avg_ci95"]
