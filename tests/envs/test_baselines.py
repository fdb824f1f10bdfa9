"""Tests for envs.baselines: full, deterministic rankings with the expected skill."""

import pytest

from envs.baselines import BASELINES, SIGNAL_BASELINES, baseline_ranking, rank_by_signal, rank_random
from envs.data import build_tasks, synthetic_catalog, training_interactions
from envs.signals.signals import ItemCFSignal, graph_signals
from envs.tools import InteractionGraph
from envs.types import Catalog, Interaction, RankingTask


@pytest.fixture(scope="module")
def synthetic_setup() -> tuple[list[RankingTask], dict]:
    # 200 users, so hit rates are measured on enough tasks to be stable.
    catalog = synthetic_catalog(num_users=200)
    tasks = build_tasks(catalog)
    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, tasks))
    return tasks, graph_signals(catalog, graph)


def hit_rate_at_1(name: str, tasks: list[RankingTask], signals: dict) -> float:
    return sum(baseline_ranking(name, t, signals, seed=0)[0] == t.target_item_id for t in tasks) / len(tasks)


def test_every_baseline_ranks_every_candidate(synthetic_setup):
    tasks, signals = synthetic_setup
    assert BASELINES == ("random", "pop", "itemknn", "itemknn_recent", "userknn", "genre_year", "sasrec")
    for name in BASELINES:
        if SIGNAL_BASELINES.get(name) not in (None, *signals):
            with pytest.raises(ValueError, match="needs the 'sequential' signal"):
                baseline_ranking(name, tasks[0], signals, seed=0)
            continue
        ranking = baseline_ranking(name, tasks[0], signals, seed=0)
        assert sorted(ranking) == sorted(tasks[0].candidate_item_ids)
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_ranking("oracle", tasks[0], signals, seed=0)


def test_learned_baselines_beat_random_by_far(synthetic_setup):
    tasks, signals = synthetic_setup
    hit_rates = {name: hit_rate_at_1(name, tasks, signals) for name in ("random", "pop", "itemknn", "userknn")}
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
    assert rank_random(tasks[3], seed=1) == baseline_ranking("random", tasks[3], {}, seed=1)


def test_rankers_on_a_hand_built_graph():
    rows = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "c"), ("u3", "c"),
            ("u3", "d"), ("u4", "d")]
    graph = InteractionGraph.from_interactions(Interaction(u, i, 5.0, 1.0) for u, i in rows)
    task = RankingTask(task_id="t", user_id="new", history=("a",), candidate_item_ids=("d", "c", "b", "zz"), target_item_id="b")
    signals = graph_signals(Catalog("toy", {}, {}, []), graph)
    assert baseline_ranking("pop", task, signals, seed=0) == ["d", "c", "b", "zz"]  # ties keep candidate order
    assert baseline_ranking("itemknn", task, signals, seed=0) == ["b", "c", "d", "zz"]
    assert baseline_ranking("userknn", task, signals, seed=0) == ["b", "c", "d", "zz"]


def test_itemknn_recent_scores_against_the_last_items_only():
    rows = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "c"), ("u3", "c"), ("u3", "d"),
            ("u4", "d"), ("u5", "c"), ("u5", "d")]
    graph = InteractionGraph.from_interactions(Interaction(u, i, 5.0, 1.0) for u, i in rows)
    task = RankingTask(task_id="t", user_id="new", history=("a", "c"), candidate_item_ids=("b", "d", "zz"),
                       target_item_id="d")
    signals = graph_signals(Catalog("toy", {}, {}, []), graph)
    assert rank_by_signal(signals["item_cf"], task) == ["b", "d", "zz"]  # "a" and "c" both point to "b"
    assert rank_by_signal(ItemCFSignal(graph, recent=1), task) == ["d", "b", "zz"]  # "c" alone points to "d"
    assert rank_by_signal(ItemCFSignal(graph, recent=2), task) == rank_by_signal(signals["item_cf"], task)


def test_recent_items_predict_the_next_one_better_on_ml100k(ml100k):
    """On every ml-100k held-out user, ItemCF over the last 5 items beats ItemCF over the history
    (hr_avg 0.583 vs 0.487 when written), by more than the 95% interval."""
    from rewards.ranking import rank_of, ranking_metrics

    tasks = build_tasks(ml100k, num_negatives=19, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(ml100k.interactions, tasks))
    signals = graph_signals(ml100k, graph)
    scores = {name: ranking_metrics([rank_of(baseline_ranking(name, t, signals, seed=0), t.target_item_id)
                                     for t in tasks])
              for name in ("itemknn", "itemknn_recent")}
    recent, full = scores["itemknn_recent"], scores["itemknn"]
    assert recent["hr_avg"] - full["hr_avg"] > recent["hr_avg_ci95"] + full["hr_avg_ci95"]
