"""Scoring: the rewards used for learning, registered by name and combined by weight from config.

Scoring is its own step after rollout (``score_batch``): the env reports rule-based per-turn
rewards and the outcome, and this composes them with whatever else is configured (model-based
rewards such as a critic or an LLM judge join here, batched). A reward is any
``Callable[[Trajectory], float]``. The built-in ones wrap the functions in
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

from collections.abc import Sequence
from dataclasses import dataclass, field

from envs.types import Trajectory
from rewards.conversational import justified_format_reward, success_reward, turn_penalty_reward
from rewards.macrec import (delta_trajectory_reward, reflection_trajectory_reward, rp_v1_reward, rp_v2_reward,
                            sr_v1_reward)
from rewards.ranking import format_reward, hit_at_k, mrr, ndcg_at_k, tiered_hit

__all__ = ["REWARD_FUNCTIONS", "RewardConfig", "RewardFn", "check_weights", "register_reward", "score", "score_batch"]

RewardFn = Callable[[Trajectory], float]

REWARD_FUNCTIONS: dict[str, RewardFn] = {
    "env": lambda trajectory: sum(turn.reward for turn in trajectory.turns),
    "format": lambda trajectory: format_reward(trajectory.format_valid),
    "tiered_hit": lambda trajectory: tiered_hit(trajectory.rank),
    "hr@1": lambda trajectory: hit_at_k(trajectory.rank, 1),
    "hr@3": lambda trajectory: hit_at_k(trajectory.rank, 3),
    "hr@5": lambda trajectory: hit_at_k(trajectory.rank, 5),
    "ndcg@5": lambda trajectory: ndcg_at_k(trajectory.rank, 5),
    "mrr": lambda trajectory: mrr(trajectory.rank),
    # MACRec (rewards.macrec): rating and ranking answers, before and after a reflection
    "rp_v1": rp_v1_reward,
    "rp_v2": rp_v2_reward,
    "sr_v1": sr_v1_reward,
    "delta": delta_trajectory_reward,
    "reflection": reflection_trajectory_reward,
    # conversations (rewards.conversational)
    "success": success_reward,
    "turn_penalty": turn_penalty_reward,
    "justified_format": justified_format_reward,
}


BatchRewardFn = Callable[[Sequence[Trajectory]], Sequence[float]]
"""A model-based reward: a whole batch of trajectories scored in one call (one model pass)."""

MODEL_REWARDS = ("critic",)
"""Rewards a run provides as ``BatchRewardFn``s (``score_batch``'s ``batch_rewards``): the learned
critic (``rewards.critic_reward``, from ``reward.critic_dir``)."""


@dataclass(frozen=True)
class RewardConfig:
    """How the learning reward is composed."""

    weights: dict[str, float] = field(default_factory=lambda: {"format": 1.0, "tiered_hit": 1.0})
    """Reward components by name (``REWARD_FUNCTIONS``; ``env`` is the env's own per-turn rewards;
    ``critic`` the learned critic) and weights."""
    critic_dir: str = ""
    """A trained critic (``recrl critic train``'s folder) for the ``critic`` reward."""


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
    ValueError: Unknown reward 'hit' in reward weights. Available: ..., env, format, ...
    """
    if not weights:
        raise ValueError("Reward weights are empty; give at least one, e.g. {'format': 1.0}.")
    for name, weight in weights.items():
        if name not in REWARD_FUNCTIONS and name not in MODEL_REWARDS:
            available = ", ".join(sorted([*REWARD_FUNCTIONS, *MODEL_REWARDS]))
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

    >>> from envs.types import RankingOutcome
    >>> traj = Trajectory(task_id="t", env_id="e", source="s",
    ...                   outcome=RankingOutcome(ranking=("i1", "i2"), rank=2), format_valid=True)
    >>> total, values = score(traj, {"format": 1.0, "tiered_hit": 1.0})
    >>> round(total, 4), values["format"], round(values["tiered_hit"], 4)
    (1.6667, 1.0, 0.6667)
    """
    check_weights(weights)
    model = [name for name in weights if name in MODEL_REWARDS]
    if model:
        raise ValueError(f"{model} are model-based rewards: score batches with score_batch(..., batch_rewards=...)")
    values = {name: float(REWARD_FUNCTIONS[name](trajectory)) for name in weights}
    total = sum(weights[name] * value for name, value in values.items())
    return float(total), values


def score_batch(trajectories: Sequence[Trajectory], weights: Mapping[str, float], *,
                batch_rewards: Mapping[str, BatchRewardFn] | None = None) -> None:
    """Scores every trajectory in place (``reward`` and ``rewards``): the step between rollout and
    advantages. Checks the weights once, before anything is scored; each model-based reward
    (``MODEL_REWARDS``, given in ``batch_rewards``) scores the whole batch in one call.

    >>> from envs.types import RankingOutcome
    >>> batch = [Trajectory(task_id=str(i), env_id="e", source="s", format_valid=True) for i in range(2)]
    >>> score_batch(batch, {"format": 1.0, "critic": 0.5}, batch_rewards={"critic": lambda ts: [2.0, -2.0]})
    >>> [(t.reward, t.rewards["critic"]) for t in batch]
    [(2.0, 2.0), (0.0, -2.0)]
    """
    check_weights(weights)
    batch_rewards = batch_rewards or {}
    missing = [name for name in weights if name in MODEL_REWARDS and name not in batch_rewards]
    if missing:
        raise ValueError(f"reward weights name {missing}, but the run provides no such model: set "
                         "reward.critic_dir to a trained critic (`recrl critic train`)")
    batched = {name: [float(v) for v in batch_rewards[name](trajectories)] for name in weights if name in batch_rewards}
    if any(len(values) != len(trajectories) for values in batched.values()):
        raise ValueError(f"a model-based reward returned the wrong number of scores for {len(trajectories)} trajectories")
    for index, trajectory in enumerate(trajectories):
        values = {name: batched[name][index] if name in batched else float(REWARD_FUNCTIONS[name](trajectory))
                  for name in weights}
        trajectory.reward, trajectory.rewards = float(sum(weights[n] * v for n, v in values.items())), values
