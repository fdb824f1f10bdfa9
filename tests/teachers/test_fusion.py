"""Weighted Borda fusion: hand-computed ranks, and fitted weights never below the best single signal."""

import numpy as np
import pytest

from envs.config import EnvConfig
from envs.data import build_tasks, leave_last_out, training_interactions
from envs.tools import InteractionGraph
from envs.types import Catalog
from rollout.worker import EnvSpec
from teachers.fusion import borda_points, fit_weights, hr_avg, target_ranks
from teachers.pipeline import fit_fusion, validation_split


def test_target_ranks_by_hand():
    # Two tasks, two signals, three candidates; ties break by candidate order.
    points = np.array([[[3.0, 2.0, 0.0], [0.0, 3.0, 2.0]],
                       [[0.0, 0.0, 3.0], [3.0, 0.0, 0.0]]])
    targets = np.array([1, 0])
    assert target_ranks(points, targets, np.array([1.0, 0.0])).tolist() == [2, 2]
    assert target_ranks(points, targets, np.array([0.0, 1.0])).tolist() == [1, 1]
    # Equal weights: task 0 scores [3, 5, 2] -> target first; task 1 [3, 0, 3] -> a tie won by candidate 0.
    assert target_ranks(points, targets, np.array([1.0, 1.0])).tolist() == [1, 1]


def test_fitted_weights_beat_or_match_every_single_signal():
    rng = np.random.default_rng(0)
    num_tasks, num_candidates = 300, 20
    targets = rng.integers(num_candidates, size=num_tasks)
    # Signal 0 and 1 each see the target in a different half of the tasks; signal 2 is noise.
    points = rng.random((num_tasks, 3, num_candidates)) * 10
    for task, target in enumerate(targets):
        points[task, task % 2, target] += 15
    weights, value = fit_weights(points, targets)
    singles = [hr_avg(target_ranks(points, targets, np.eye(3)[s])) for s in range(3)]
    assert value == pytest.approx(hr_avg(target_ranks(points, targets, weights)))
    assert value > max(singles) + 0.1  # fusing the two informative halves beats either
    assert weights[0] > 0 and weights[1] > 0
    # A fusion must beat the best single signal by the margin to be adopted.
    assert fit_weights(points, targets, margin=value - max(singles) + 1e-9)[0].tolist() == np.eye(3)[int(np.argmax(singles))].tolist()
    assert fit_weights(points, targets, margin=0.05)[0].tolist() == weights.tolist()
    with pytest.raises(ValueError, match="tasks, signals, candidates"):
        fit_weights(np.zeros((0, 2, 3)), np.array([], dtype=int))


def test_borda_points_ignore_unknown_ids():
    points = borda_points({"a": ["zz", "y"], "b": []}, ["a", "b"], ["x", "y"])
    assert points.tolist() == [[0.0, 1.0], [0.0, 0.0]]


@pytest.fixture(scope="module")
def ml100k_split(ml100k):
    eval_tasks = build_tasks(ml100k, num_negatives=19, seed=0)
    train_split, _ = leave_last_out(ml100k.interactions)
    train_catalog = Catalog("train", ml100k.users, ml100k.items, train_split)
    train_tasks = build_tasks(train_catalog, num_negatives=19, seed=1, exclude=ml100k.interactions)
    return train_tasks, eval_tasks


def test_validation_split_is_disjoint_from_held_out_tasks(ml100k, ml100k_split):
    train_tasks, eval_tasks = ml100k_split
    validation = validation_split(train_tasks, 300, seed=0)
    assert len(validation) == 300 and validation == validation_split(train_tasks, 300, seed=0)
    held_out = {(t.user_id, t.target_item_id) for t in eval_tasks}
    assert not {t.task_id for t in validation} & {t.task_id for t in eval_tasks}
    assert not {(t.user_id, t.target_item_id) for t in validation} & held_out
    # A validation task is scored on a graph without its own target, nor any held-out interaction.
    graph = InteractionGraph.from_interactions(training_interactions(ml100k.interactions, train_tasks))
    for task in validation:
        assert task.target_item_id not in graph.user_items(task.user_id)
        assert not held_out & {(task.user_id, item_id) for item_id in graph.user_items(task.user_id)}
        assert held_out.isdisjoint({(task.user_id, item_id) for item_id in task.history})


def test_fusion_on_ml100k_beats_the_best_signal_on_validation(ml100k, ml100k_split):
    train_tasks, _ = ml100k_split
    graph = InteractionGraph.from_interactions(training_interactions(ml100k.interactions, train_tasks))
    spec = EnvSpec(ml100k, graph, EnvConfig(), tokenizer="tiny-random")
    fusion = fit_fusion(spec, validation_split(train_tasks, 300, seed=0),
                        ["user_history", "item_cf", "user_cf", "recent_cf", "popularity", "genre_year"])
    scores = fusion["validation_hr_avg"]
    assert set(fusion["weights"]) == {"item_cf", "user_cf", "recent_cf", "popularity", "genre_year"}
    assert scores["fused"] > max(v for k, v in scores.items() if k != "fused")
