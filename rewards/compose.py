"""Trajectory-level rewards, registered by name and combined by weight from config.

A reward is any ``Callable[[Trajectory], float]``. The built-in ones wrap the functions in
:mod:`rewards.ranking`; add your own with :func:`register_reward`::

    @register_reward("few_tools")
    def few_tools(trajectory: Trajectory) -> float:
        return -0.1 * trajectory.num_tool_calls

and enable it with a weight, e.g. ``{"format": 1.0, "tiered_hit": 1.0, "few_tools": 1.0}``.
The per-name values returned by :func:`score` are meant to be logged as ``reward/<name>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from envs.types import Trajectory
from rewards.ranking import format_reward, hit_at_k, mrr, ndcg_at_k, tiered_hit

__all__ = ["REWARD_FUNCTIONS", "RewardFn", "check_weights", "register_reward", "score"]

RewardFn = Callable[[Trajectory], float]

REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "format": lambda trajectory: format_reward(trajectory.format_valid),
    "tiered_hit": lambda trajectory: tiered_hit(trajectory.rank),
    "hr@1": lambda trajectory: hit_at_k(trajectory.rank, 1),
    "hr@3": lambda trajectory: hit_at_k(trajectory.rank, 3),
    "hr@5": lambda trajectory: hit_at_k(trajectory.rank, 5),
    "ndcg@5": lambda trajectory: ndcg_at_k(trajectory.rank, 5),
    "mrr": lambda trajectory: mrr(trajectory.rank),
}


def register_reward(name: str, *, overwrite: bool = False) -> Callable[[RewardFn], RewardFn]:
    """Decorator that adds a trajectory reward to :data:`REWARD_FUNCTIONS` under ``name``.

    Args:
        name: The name used in reward weight configs and in the ``reward/<name>`` log key.
        overwrite: Replace an existing reward of the same name instead of raising.

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        ValueError: If ``name`` is already registered and ``overwrite`` is False.
    """

    def decorator(fn: RewardFn) -> RewardFn:
        if name in REWARD_FUNCTIONS and not overwrite:
            raise ValueError(
                f"A reward named {name!r} is already registered; pick another name "
                "or pass overwrite=True."
            )
        REWARD_FUNCTIONS[name] = fn
        return fn

    return decorator


def check_weights(weights: Mapping[str, float]) -> None:
    """Validate a reward-weight config early, before any rollout runs.

    Args:
        weights: Reward name to weight.

    Raises:
        ValueError: If ``weights`` is empty, names an unregistered reward, or has a weight that
            is not a finite number.

    >>> check_weights({"format": 1.0, "tiered_hit": 1.0})
    >>> check_weights({"hit": 1.0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Unknown reward 'hit' in reward weights. Available: format, hr@1, ...
    """
    if not weights:
        raise ValueError("Reward weights are empty; give at least one, e.g. {'format': 1.0}.")
    for name, weight in weights.items():
        if name not in REWARD_FUNCTIONS:
            available = ", ".join(sorted(REWARD_FUNCTIONS))
            raise ValueError(
                f"Unknown reward {name!r} in reward weights. Available: {available}."
            )
        is_number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        if not is_number or not math.isfinite(weight):
            raise ValueError(f"Reward weight for {name!r} must be a finite number, got {weight!r}.")


def score(trajectory: Trajectory, weights: Mapping[str, float]) -> tuple[float, dict[str, float]]:
    """Score a trajectory with a weighted sum of named rewards.

    Args:
        trajectory: The finished episode.
        weights: Reward name to weight; only these rewards are computed.

    Returns:
        ``(total, values)``: the weighted sum, and each reward's unweighted value by name.

    Raises:
        ValueError: If a weight is invalid or names an unregistered reward
            (see :func:`check_weights`).

    >>> traj = Trajectory(task_id="t", env_id="e", source="s", messages=[], actions=[],
    ...                   target_item_id="i2", ranking=["i1", "i2"], rank=2, format_valid=True)
    >>> total, values = score(traj, {"format": 1.0, "tiered_hit": 1.0})
    >>> round(total, 4), values["format"], round(values["tiered_hit"], 4)
    (1.6667, 1.0, 0.6667)
    """
    check_weights(weights)
    values = {name: float(REWARD_FUNCTIONS[name](trajectory)) for name in weights}
    total = sum(weights[name] * value for name, value in values.items())
    return float(total), values
