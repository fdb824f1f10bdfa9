"""Finer credit than one advantage per episode: per position of a ranked list (Rank-GRPO) and per
turn of a multi-turn episode (turn-level, GiGPO-style step groups). Pure torch functions; each
normalises within groups as :func:`rl.algorithms.grpo_advantages` does, one column at a time.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from rl.algorithms import grpo_advantages

__all__ = ["per_column_grpo", "rank_advantages", "rank_rewards", "spread_turn_advantages", "turn_advantages"]


def per_column_grpo(values: Tensor, valid: Tensor, group_ids: Sequence[Hashable] | Tensor, *, scale_by_std: bool,
                    eps: float) -> Tensor:
    """:func:`rl.algorithms.grpo_advantages` of each column of ``values`` ``[B, N]`` over its valid
    entries (the episodes that have that position or turn); 0 elsewhere.

    >>> per_column_grpo(torch.tensor([[1.0, 2.0], [3.0, 9.0]]), torch.tensor([[True, True], [True, False]]),
    ...                 ["a", "a"], scale_by_std=False, eps=1e-6)
    tensor([[-1.,  0.],
            [ 1.,  0.]])
    """
    keys = group_ids.tolist() if isinstance(group_ids, Tensor) else list(group_ids)
    if len(keys) != values.shape[0]:
        raise ValueError(f"got {len(keys)} group ids for {values.shape[0]} episodes; give one per episode.")
    values = values.detach() if values.is_floating_point() else values.to(torch.get_default_dtype())
    advantages = torch.zeros_like(values)
    for column in range(values.shape[1]):
        rows = valid[:, column].nonzero().squeeze(1)
        if len(rows):
            advantages[rows, column] = grpo_advantages(values[rows, column], [keys[i] for i in rows.tolist()],
                                                       eps=eps, scale_by_std=scale_by_std)
    return advantages


def rank_rewards(relevance: Tensor) -> Tensor:
    """Rank-GRPO credit: the reward of each list position is the DCG of the list from there on.

    ``reward[b, k] = sum_{j >= k} relevance[b, j] / log2(j + 2)`` (0-based positions), so a
    position is credited with what it and the positions after it achieve.

    Args:
        relevance: ``[B, N]``, 1.0 where the item at that position is the target, else 0.

    Returns:
        ``[B, N]`` rewards.

    Raises:
        ValueError: If ``relevance`` is not 2-D.

    >>> rank_rewards(torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    tensor([[0.6309, 0.6309, 0.0000],
            [1.0000, 0.0000, 0.0000]])
    """
    if relevance.dim() != 2:
        raise ValueError(f"relevance must be [B, N], got shape {tuple(relevance.shape)}.")
    relevance = relevance.detach()
    if not relevance.is_floating_point():
        relevance = relevance.to(torch.get_default_dtype())
    positions = torch.arange(relevance.shape[1], dtype=relevance.dtype, device=relevance.device)
    return (relevance / torch.log2(positions + 2.0)).flip(1).cumsum(1).flip(1)


def rank_advantages(
    position_rewards: Tensor, group_ids: Sequence[Hashable] | Tensor, *, scale_by_std: bool = True,
    eps: float = 1e-6,
) -> Tensor:
    """Group-relative advantages per list position: GRPO run separately at each position.

    At position ``k``: each episode's reward minus its group's mean at ``k``, over the group's
    population std at ``k`` plus ``eps`` (the convention of :func:`rl.algorithms.grpo_advantages`).
    A group of one episode, or whose rewards at ``k`` are all equal, gets 0 there.

    Args:
        position_rewards: ``[B, N]``, e.g. from :func:`rank_rewards`.
        group_ids: ``B`` hashables or a 1-D integer tensor: the group (task) of each episode.
        scale_by_std: If False, only subtract the mean (Dr. GRPO).
        eps: Added to the std.

    Returns:
        ``[B, N]`` advantages, without gradient.

    Raises:
        ValueError: If ``position_rewards`` is not 2-D or the ids are not one per episode.

    >>> rank_advantages(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), ["a", "a"])
    tensor([[ 1.0000,  0.0000],
            [-1.0000,  0.0000]])
    """
    if position_rewards.dim() != 2:
        raise ValueError(f"position_rewards must be [B, N], got shape {tuple(position_rewards.shape)}.")
    valid = torch.ones_like(position_rewards, dtype=torch.bool)
    return per_column_grpo(position_rewards, valid, group_ids, scale_by_std=scale_by_std, eps=eps)


def turn_advantages(
    turn_rewards: Tensor, turn_valid: Tensor, group_ids: Sequence[Hashable] | Tensor, *, gamma: float = 1.0,
    scale_by_std: bool = True, eps: float = 1e-6,
) -> Tensor:
    """Turn-level advantages: discounted return-to-go per turn, normalised per (group, turn index).

    A valid turn's return is its reward plus ``gamma`` times the next valid turn's return. Returns
    are normalised among a group's episodes at the same turn index, as :func:`rank_advantages`
    does per position (GiGPO-style step groups, keyed by turn index rather than by identical
    state). Invalid turns get 0 and take no part.

    Args:
        turn_rewards: ``[B, K]`` reward after each turn.
        turn_valid: ``[B, K]`` bool, True where episode ``b`` has a turn ``k``.
        group_ids: ``B`` hashables or a 1-D integer tensor: the group (task) of each episode.
        gamma: Discount factor per turn.
        scale_by_std: If False, only subtract the mean.
        eps: Added to the std.

    Returns:
        ``[B, K]`` advantages without gradient; :func:`spread_turn_advantages` puts them on tokens.

    Raises:
        ValueError: If the shapes differ or the ids are not one per episode.

    >>> valid = torch.tensor([[True, True], [True, False]])
    >>> turn_advantages(torch.tensor([[0.0, 1.0], [0.0, 5.0]]), valid, ["a", "a"])
    tensor([[ 1.0000,  0.0000],
            [-1.0000,  0.0000]])
    """
    if turn_rewards.dim() != 2 or turn_rewards.shape != turn_valid.shape:
        raise ValueError(f"turn_rewards and turn_valid must both be [B, K]; got {tuple(turn_rewards.shape)} "
                         f"and {tuple(turn_valid.shape)}.")
    turn_valid, rewards = turn_valid.bool(), turn_rewards.detach()
    returns, running = torch.zeros_like(rewards), rewards.new_zeros(rewards.shape[0])
    for k in reversed(range(rewards.shape[1])):
        running = torch.where(turn_valid[:, k], rewards[:, k] + gamma * running, running)
        returns[:, k] = torch.where(turn_valid[:, k], running, 0.0)
    return per_column_grpo(returns, turn_valid, group_ids, scale_by_std=scale_by_std, eps=eps)


def spread_turn_advantages(advantages: Tensor, turn_of_token: Tensor) -> Tensor:
    """Places each turn's advantage on the tokens of that turn.

    Args:
        advantages: ``[B, K]``, e.g. from :func:`turn_advantages`.
        turn_of_token: ``[B, T]`` turn index of each policy token, -1 on other tokens.

    Returns:
        ``[B, T]``: ``advantages[b, turn_of_token[b, t]]``, 0 where the index is -1.

    Raises:
        ValueError: On mismatched shapes or a turn index outside ``[-1, K)``.

    >>> spread_turn_advantages(torch.tensor([[1.0, -2.0]]), torch.tensor([[-1, 0, 0, -1, 1]]))
    tensor([[ 0.,  1.,  1.,  0., -2.]])
    """
    if advantages.dim() != 2 or turn_of_token.dim() != 2 or len(advantages) != len(turn_of_token):
        raise ValueError(f"Expected advantages [B, K] and turn_of_token [B, T], got "
                         f"{tuple(advantages.shape)} and {tuple(turn_of_token.shape)}.")
    turn_of_token = turn_of_token.long()
    if ((turn_of_token < -1) | (turn_of_token >= advantages.shape[1])).any():
        raise ValueError(f"turn_of_token holds indices outside [-1, {advantages.shape[1]}); -1 marks tokens "
                         f"of no turn.")
    spread = advantages.detach().gather(1, turn_of_token.clamp(min=0))
    return torch.where(turn_of_token >= 0, spread, 0.0)
