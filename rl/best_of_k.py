"""Best-of-k curves: how good the best of k sampled episodes per task is, for k = 1, 2, 4, 8.

A task is sampled ``n`` times; the curve at ``k`` is the expected metric of the best of ``k`` of
those episodes drawn without replacement, computed exactly from all ``n`` (the pass@k estimator,
generalised from hit rates to any metric). A curve that rises steeply with ``k`` means the policy
often finds the target but does not rank it first reliably: room for RL to sharpen it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from rl.compare import METRICS, per_task_metrics

__all__ = ["best_of_k_metrics", "expected_best_of_k", "plot_best_of_k"]


@lru_cache(maxsize=256)
def _order_weights(n: int, k: int) -> tuple[float, ...]:
    """P(the best of k draws from n is the i-th best sample), for i = 1..n.

    The i-th best is the best drawn when it is drawn and the k - 1 others come from the n - i
    worse samples: ``C(n - i, k - 1) / C(n, k)``.

    >>> _order_weights(3, 2)
    (0.6666666666666666, 0.3333333333333333, 0.0)
    """
    total = math.comb(n, k)
    return tuple(math.comb(n - i, k - 1) / total for i in range(1, n + 1))


def expected_best_of_k(values: Sequence[float], k: int) -> float:
    """The expected maximum of ``k`` of ``values`` drawn without replacement.

    Exact and unbiased: sorting the values best first, the i-th best is the maximum with
    probability ``C(n - i, k - 1) / C(n, k)``. For 0/1 values with ``c`` ones this equals the
    pass@k estimator ``1 - C(n - c, k) / C(n, k)``.

    Args:
        values: One score per sampled episode (higher is better).
        k: How many episodes are drawn, ``1 <= k <= len(values)``.

    Raises:
        ValueError: If ``k`` is outside ``[1, len(values)]``.

    >>> expected_best_of_k([1.0, 0.0], 1), expected_best_of_k([1.0, 0.0], 2)
    (0.5, 1.0)
    >>> expected_best_of_k([1.0, 0.0, 0.0, 0.0], 2)  # pass@2 with c=1 of n=4: 1 - C(3,2)/C(4,2)
    0.5
    >>> expected_best_of_k([0.25, 1.0, 0.5], 2)  # pairs (1, .5), (1, .25), (.5, .25) -> 2.5 / 3
    0.8333333333333333
    """
    n = len(values)
    if not 1 <= k <= n:
        raise ValueError(f"best-of-{k} needs at least {k} samples per task; got {n}. Sample more "
                         f"episodes per task or drop k={k}.")
    best_first = sorted(values, reverse=True)
    return float(np.dot(best_first, _order_weights(n, k)))


def best_of_k_metrics(
    samples: Sequence[Sequence[int | None]], ks: Sequence[int] = (1, 2, 4, 8)
) -> dict[int, dict[str, float]]:
    """Mean over tasks of the expected ranking metrics of the best of ``k`` sampled episodes.

    Every metric of ``METRICS`` only improves as the target's rank improves, so the best episode
    by rank is also the best by each metric, and each metric's expectation is taken separately
    with ``expected_best_of_k``. ``hr_avg`` is the mean of the three hit rates, as in evaluation.

    Args:
        samples: ``samples[t]`` holds the target ranks of the ``n`` episodes sampled for task
            ``t`` (``None`` is a miss); ``n`` may differ between tasks but must be at least
            ``max(ks)``.
        ks: The numbers of episodes to take the best of.

    Returns:
        For each ``k``, the keys of ``METRICS`` averaged over tasks.

    Raises:
        ValueError: If there are no tasks or no ``ks``, a ``k`` is below 1, or a task has fewer
            than ``max(ks)`` samples.

    >>> curve = best_of_k_metrics([[1, None]], ks=(1, 2))
    >>> curve[1]["hr@1"], curve[2]["hr@1"]
    (0.5, 1.0)
    >>> curve = best_of_k_metrics([[3, 1], [None, None]], ks=(1, 2))
    >>> curve[1]["mrr"], curve[2]["mrr"]  # task 1: (1/3 + 1) / 2, then 1; task 2: 0
    (0.3333333333333333, 0.5)
    """
    if len(samples) == 0:
        raise ValueError("best_of_k_metrics needs at least one task; got no samples.")
    if len(ks) == 0 or min(ks) < 1:
        raise ValueError(f"ks must be positive numbers of episodes, e.g. (1, 2, 4, 8); got {tuple(ks)}.")
    for task_index, task_samples in enumerate(samples):
        if len(task_samples) < max(ks):
            raise ValueError(f"task {task_index} has {len(task_samples)} sampled episodes but best-of-"
                             f"{max(ks)} needs at least {max(ks)}; sample more episodes per task or "
                             f"drop the larger k.")
    per_task = [per_task_metrics(task_samples) for task_samples in samples]
    return {
        k: {metric: float(np.mean([expected_best_of_k(task[metric], k) for task in per_task]))
            for metric in METRICS}
        for k in ks
    }


def plot_best_of_k(
    curves: Mapping[str, Mapping[int, Mapping[str, float]]],
    path: str | Path,
    *,
    metric: str = "hr_avg",
) -> Path:
    """Draws best-of-k curves, one line per method, into a PNG.

    Args:
        curves: Per method, what ``best_of_k_metrics`` returns. Keys of ``k`` may be strings, as
            read back from JSON.
        path: Where to write the PNG; missing folders are created.
        metric: Which metric to plot, a key of ``METRICS``.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: If ``curves`` is empty or a method's curve lacks ``metric``.
    """
    from matplotlib.figure import Figure  # lazy: plotting is the only user of matplotlib

    if not curves:
        raise ValueError("no best-of-k curves to plot; evaluate at least one method with samples.")
    figure = Figure(figsize=(6, 4), dpi=120, layout="constrained")
    axes = figure.subplots()
    all_ks: set[int] = set()
    for method, curve in curves.items():
        points = sorted((int(k), metrics) for k, metrics in curve.items())
        if not points:
            raise ValueError(f"the best-of-k curve of {method!r} is empty; it needs at least one k.")
        for k, metrics in points:
            if metric not in metrics:
                raise ValueError(f"the best-of-k curve of {method!r} has no {metric!r} at k={k}; "
                                 f"available metrics: {sorted(metrics)}")
        all_ks.update(k for k, _ in points)
        axes.plot([k for k, _ in points], [metrics[metric] for _, metrics in points], marker="o", label=method)
    ticks = sorted(all_ks)
    axes.set_xscale("log", base=2)
    axes.set_xticks(ticks, labels=[str(k) for k in ticks])
    axes.minorticks_off()
    axes.set_xlabel("k (sampled episodes per task)")
    axes.set_ylabel(metric)
    axes.set_title(f"Best of k: {metric}")
    axes.grid(alpha=0.3)
    axes.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
