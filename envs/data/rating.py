"""Rating-prediction tasks (MACRec's rp): each user's last rating held out, to be predicted from
the ratings before it."""

from __future__ import annotations

from envs.data.splits import _indices_by_user, id_sort_key, leave_last_out
from envs.types import Catalog, RatingTask


def build_rating_tasks(catalog: Catalog, *, max_history: int = 5) -> list[RatingTask]:
    """One leave-last-out rating task per user with at least two ratings.

    Args:
        catalog: The dataset.
        max_history: Keep at most this many of the user's most recent earlier ratings
            (MACRec: 5); 0 keeps none.

    Returns:
        Tasks sorted by user id; each one's history is from the training split only
        (``leave_last_out``), so no task holds its own target rating.
    """
    if max_history < 0:
        raise ValueError(f"max_history must be >= 0, got {max_history}")
    train, held_out = leave_last_out(catalog.interactions)
    by_user = _indices_by_user(train)
    tasks = []
    for user_id in sorted(held_out, key=id_sort_key):
        target = held_out[user_id]
        earlier = [train[index] for index in by_user[user_id]][-max_history:] if max_history else []
        tasks.append(RatingTask(task_id=f"{catalog.name}:rating:{user_id}", user_id=user_id, item_id=target.item_id,
                                history=tuple(i.item_id for i in earlier),
                                history_ratings=tuple(float(i.rating) for i in earlier),
                                target_rating=float(target.rating)))
    return tasks
