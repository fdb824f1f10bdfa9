"""Weighted Borda fusion of signal rankings, with weights fitted on a validation split.

Each signal's tool lists its top candidates; a listed candidate at position p (0-based) of a list
gets ``num_candidates - p`` points from that signal, an unlisted one 0. The fused score is the
weighted sum of points; ties keep the order the candidates were shown in. Weights are fitted by
coordinate ascent on validation tasks (never held-out ones), starting from the best single signal,
so on the validation split the fusion is never worse than any one signal it reads. A fusion that
beats that signal by less than an optional margin is not adopted (on ml-100k the CF signals gain a
little on the second-to-last items and lose it on the last ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

WEIGHT_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
"""Values coordinate ascent tries for each weight."""


def borda_points(rankings: Mapping[str, Sequence[str]], signal_names: Sequence[str],
                 candidate_item_ids: Sequence[str]) -> np.ndarray:
    """Points of each candidate from each signal's list, shape ``[signals, candidates]``.

    >>> borda_points({"a": ["y", "x"]}, ["a", "b"], ["x", "y", "z"]).tolist()
    [[2.0, 3.0, 0.0], [0.0, 0.0, 0.0]]
    """
    index = {item_id: i for i, item_id in enumerate(candidate_item_ids)}
    points = np.zeros((len(signal_names), len(candidate_item_ids)))
    for row, name in enumerate(signal_names):
        for position, item_id in enumerate(rankings.get(name, ())):
            if item_id in index:
                points[row, index[item_id]] = len(candidate_item_ids) - position
    return points


def fused_order(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Candidate indices, best first, by weighted points (stable: ties keep candidate order).

    >>> fused_order(np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]), np.array([1.0, 1.0])).tolist()
    [0, 1, 2]
    """
    return np.argsort(-(weights @ points), kind="stable")


def target_ranks(points: np.ndarray, target_index: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """1-based rank of each task's target under the fusion; ``points`` is ``[tasks, signals, candidates]``."""
    scores = np.einsum("tsc,s->tc", points, weights)
    target = scores[np.arange(len(scores)), target_index][:, None]
    columns = np.arange(scores.shape[1])[None, :]
    ahead = (scores > target) | ((scores == target) & (columns < target_index[:, None]))
    return 1 + ahead.sum(axis=1)


def hr_avg(ranks: np.ndarray) -> float:
    """Mean of HR@1, HR@3 and HR@5 over tasks.

    >>> hr_avg(np.array([1, 6]))
    0.5
    """
    return float(np.mean([(ranks <= k).mean() for k in (1, 3, 5)]))


def fit_weights(points: np.ndarray, target_index: np.ndarray, *, grid: Sequence[float] = WEIGHT_GRID,
                rounds: int = 3, margin: float = 0.0) -> tuple[np.ndarray, float]:
    """Fusion weights maximising validation ``hr_avg`` (mean reciprocal rank breaks ties).

    Args:
        points: ``[tasks, signals, candidates]`` Borda points of validation tasks.
        target_index: each task's target position among its candidates.
        grid: values tried for each weight.
        rounds: passes of coordinate ascent.
        margin: the ``hr_avg`` by which the fusion must beat the best single signal to be adopted.

    Returns:
        The weights (the best single signal's one-hot if no fusion beats it by ``margin``) and their
        ``hr_avg``.
    """
    if points.ndim != 3 or len(points) == 0:
        raise ValueError(f"fit_weights needs [tasks, signals, candidates] points of >= 1 task, got {points.shape}")

    def objective(weights: np.ndarray) -> tuple[float, float]:
        ranks = target_ranks(points, target_index, weights)
        return hr_avg(ranks), float((1.0 / ranks).mean())

    num_signals = points.shape[1]
    singles = [np.eye(num_signals)[s] for s in range(num_signals)]
    best = single = max(singles, key=objective)
    best_value = single_value = objective(best)
    for _ in range(rounds):
        improved = False
        for signal in range(num_signals):
            for value in grid:
                trial = best.copy()
                trial[signal] = value
                if trial.any() and objective(trial) > best_value:
                    best, best_value, improved = trial, objective(trial), True
        if not improved:
            break
    if best_value[0] < single_value[0] + margin:
        return single, single_value[0]
    return best, best_value[0]
