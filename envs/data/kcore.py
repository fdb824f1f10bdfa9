"""The k-core filter: keep users and items with at least k interactions, repeated until stable."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from envs.types import Interaction


def k_core(interactions: Sequence[Interaction], k: int) -> list[Interaction]:
    """The interactions of the k-core of the user-item graph.

    Dropping a user's interactions can leave an item with fewer than ``k``, and dropping that item's
    can push another user below ``k``, so the filter repeats until no user and no item is under
    ``k``. Each interaction counts once, so a user who rated an item twice counts it twice (the
    Amazon and ReDial loaders remove such repeats first).

    Args:
        interactions: All interactions, in any order.
        k: The minimum interactions per user and per item; ``k <= 1`` keeps everything.

    Returns:
        The interactions kept, input order kept.

    Raises:
        ValueError: ``k`` is negative.

    >>> rows = [Interaction(u, i, 5.0, 0.0) for u, i in [("u1", "a"), ("u1", "b"), ("u2", "a")]]
    >>> [(it.user_id, it.item_id) for it in k_core(rows, 2)]
    []
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    kept = list(interactions)
    while True:
        per_user = Counter(it.user_id for it in kept)
        per_item = Counter(it.item_id for it in kept)
        remaining = [it for it in kept if per_user[it.user_id] >= k and per_item[it.item_id] >= k]
        if len(remaining) == len(kept):
            return kept
        kept = remaining
