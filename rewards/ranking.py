"""Ranking rewards and metrics for a single relevant (target) item.

Every function takes the 1-based ``rank`` of the target in the agent's ranking, or ``None`` when
the agent produced no valid ranking or left the target out; ``None`` always scores as a miss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "format_reward",
    "hit_at_k",
    "mrr",
    "ndcg_at_k",
    "rank_of",
    "ranking_metrics",
    "tiered_hit",
]


def rank_of(ranking: Sequence[str], target: str) -> int | None:
    """The 1-based position of ``target`` in ``ranking``.

    Args:
        ranking: Item ids, best first.
        target: The item id to look for.

    Returns:
        The position of the first occurrence, or ``None`` if ``target`` is absent.

    >>> rank_of(["a", "b", "c"], "b")
    2
    >>> rank_of(["a", "b"], "z") is None
    True
    """
    for position, item_id in enumerate(ranking, start=1):
        if item_id == target:
            return position
    return None


def hit_at_k(rank: int | None, k: int) -> float:
    """1.0 if the target is in the top ``k``, else 0.0.

    >>> hit_at_k(3, 3), hit_at_k(4, 3), hit_at_k(None, 3)
    (1.0, 0.0, 0.0)
    """
    return 1.0 if rank is not None and rank <= k else 0.0


def ndcg_at_k(rank: int | None, k: int) -> float:
    """NDCG@k with one relevant item: ``1 / log2(rank + 1)`` if ``rank <= k``, else 0.

    The ideal DCG is 1 (the target at rank 1), so DCG and NDCG coincide.

    >>> ndcg_at_k(1, 5)
    1.0
    >>> ndcg_at_k(3, 5)
    0.5
    >>> ndcg_at_k(6, 5), ndcg_at_k(None, 5)
    (0.0, 0.0)
    """
    if rank is None or rank > k:
        return 0.0
    return 1.0 / math.log2(rank + 1)


def mrr(rank: int | None) -> float:
    """Reciprocal rank: ``1 / rank``, or 0 for a miss.

    >>> mrr(1), mrr(4), mrr(None)
    (1.0, 0.25, 0.0)
    """
    return 0.0 if rank is None else 1.0 / rank


def tiered_hit(rank: int | None) -> float:
    """A shaped hit reward: 1 for rank 1, 2/3 for rank <= 3, 1/3 for rank <= 5, else 0.

    >>> tiered_hit(1)
    1.0
    >>> round(tiered_hit(3), 4), round(tiered_hit(5), 4)
    (0.6667, 0.3333)
    >>> tiered_hit(6), tiered_hit(None)
    (0.0, 0.0)
    """
    if rank is None:
        return 0.0
    if rank == 1:
        return 1.0
    if rank <= 3:
        return 2.0 / 3.0
    if rank <= 5:
        return 1.0 / 3.0
    return 0.0


def format_reward(valid: bool) -> float:
    """+1 for a well-formed final answer, -1 otherwise.

    >>> format_reward(True), format_reward(False)
    (1.0, -1.0)
    """
    return 1.0 if valid else -1.0


def ranking_metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    """Mean ranking metrics over tasks (a ``None`` rank counts as a miss).

    Args:
        ranks: One target rank per task.

    Returns:
        ``hr@1``, ``hr@3``, ``hr@5``, ``hr_avg`` (mean of the three hit rates), ``ndcg@5`` and
        ``mrr``, each averaged over tasks, and ``hr_avg_ci95``: the half-width of a normal 95%
        confidence interval of ``hr_avg`` over tasks (1.96 standard errors; 0 for one task).
        Keys are bare; callers namespace them (``eval/hr@1``).

    Raises:
        ValueError: If ``ranks`` is empty.

    >>> m = ranking_metrics([1, 4, None])
    >>> m["hr@1"], m["hr@5"], m["mrr"]
    (0.3333333333333333, 0.6666666666666666, 0.4166666666666667)
    >>> round(m["hr_avg_ci95"], 4)  # per-task hr_avg 1, 2/3, 0: sd 0.5092
    0.5762
    """
    if len(ranks) == 0:
        raise ValueError("ranking_metrics needs at least one rank; got an empty sequence.")
    n = len(ranks)
    metrics = {
        "hr@1": sum(hit_at_k(r, 1) for r in ranks) / n,
        "hr@3": sum(hit_at_k(r, 3) for r in ranks) / n,
        "hr@5": sum(hit_at_k(r, 5) for r in ranks) / n,
    }
    metrics["hr_avg"] = (metrics["hr@1"] + metrics["hr@3"] + metrics["hr@5"]) / 3.0
    per_task = [(hit_at_k(r, 1) + hit_at_k(r, 3) + hit_at_k(r, 5)) / 3.0 for r in ranks]
    variance = sum((x - metrics["hr_avg"]) ** 2 for x in per_task) / (n - 1) if n > 1 else 0.0
    metrics["hr_avg_ci95"] = 1.96 * math.sqrt(variance / n)
    metrics["ndcg@5"] = sum(ndcg_at_k(r, 5) for r in ranks) / n
    metrics["mrr"] = sum(mrr(r) for r in ranks) / n
    return metrics
