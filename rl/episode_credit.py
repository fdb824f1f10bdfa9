"""Finer credit than one advantage an episode, from the episodes themselves: per turn, and per
position of the recommended list (Rank-GRPO). The tensor maths is :mod:`rl.credit`'s; this module
finds the turns and the list items among an episode's tokens."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from envs.types import Trajectory
from rl.credit import per_column_grpo, rank_rewards, spread_turn_advantages, turn_advantages

_RECOMMEND = re.compile(r"<recommend>(.*?)</recommend>", re.DOTALL)
_ITEM = re.compile(r"[^,\s]+")
INVALID_ITEM = -1.0
"""Relevance of a repeated or unknown id in a ranked list (Rank-GRPO penalises them)."""


def turn_credit(trajectories: Sequence[Trajectory], *, env_weight: float, gamma: float, scale_by_std: bool,
                width: int) -> torch.Tensor:
    """Turn-level advantages on each agent turn's tokens, ``[B, width]`` (0 elsewhere).

    Turn k of an episode is rewarded ``env_weight`` times the env's reward for it, and its last turn
    also the rest of the episode's scored reward, so the turns' rewards add up to ``reward``; advantages
    are ``rl.credit.turn_advantages`` of those (returns-to-go normalised per group and turn index).
    """
    turns = [[turn for turn in t.turns if turn.is_agent] for t in trajectories]
    count = max(len(agent_turns) for agent_turns in turns)
    rewards = torch.zeros(len(trajectories), count)
    valid = torch.zeros(len(trajectories), count, dtype=torch.bool)
    turn_of_token = torch.full((len(trajectories), width), -1, dtype=torch.long)
    for row, (trajectory, agent_turns) in enumerate(zip(trajectories, turns)):
        for k, turn in enumerate(agent_turns):
            rewards[row, k] = env_weight * turn.reward
            valid[row, k] = True
            turn_of_token[row, turn.start : turn.end] = k
        if agent_turns:
            rewards[row, len(agent_turns) - 1] += trajectory.reward - float(rewards[row].sum())
    advantages = turn_advantages(rewards, valid, [t.group_id for t in trajectories], gamma=gamma,
                                 scale_by_std=scale_by_std)
    return spread_turn_advantages(advantages, turn_of_token)


def item_token_spans(token_ids: Sequence[int], tokenizer, items: Sequence[str]) -> list[tuple[int, int]] | None:
    """Where each of ``items`` (a ``<recommend>`` list, in order) lies among a turn's sampled
    ``token_ids``: one ``(first, end)`` token range per item, found by decoding the tokens one more at
    a time (the sampled ids, never re-tokenized text). None when the decoded list is not ``items``."""
    ends, text = [], ""
    for count in range(1, len(token_ids) + 1):
        text = tokenizer.decode(token_ids[:count], skip_special_tokens=True)
        ends.append(len(text))
    block = _RECOMMEND.search(text)
    if block is None:
        return None
    found = list(_ITEM.finditer(text, block.start(1), block.end(1)))
    if [match.group() for match in found] != list(items):
        return None
    spans = []
    for match in found:
        first = next(i for i, end in enumerate(ends) if end > match.start())
        last = next(i for i, end in enumerate(ends) if end >= match.end())
        spans.append((first, last + 1))
    return spans


def item_relevance(items: Sequence[str], ranking: Sequence[str], rank: int) -> list[float]:
    """The relevance of each listed item: 1 for the target (``ranking[rank - 1]``), 0 for another
    candidate, and ``INVALID_ITEM`` for an id listed before or not among the candidates (the full
    ``ranking``), so a position is not credited for repeating the target."""
    candidates, target, seen, relevance = set(ranking), ranking[rank - 1], set(), []
    for item in items:
        relevance.append(INVALID_ITEM if item in seen or item not in candidates else float(item == target))
        seen.add(item)
    return relevance


def rank_credit(trajectories: Sequence[Trajectory], episode_advantages: torch.Tensor, tokenizer, *,
                scale_by_std: bool, width: int) -> torch.Tensor:
    """Rank-GRPO's credit on each episode's tokens, ``[B, width]`` (0 off the policy tokens).

    The tokens of the k-th item of an episode's final ``<recommend>`` list get that position's
    advantage: the DCG of the list from position k on (``rl.credit.rank_rewards`` of
    ``item_relevance``), normalised among the group's episodes whose list reaches position k.
    Every other policy token (tool calls, tags, an episode without a readable list) keeps the
    episode's advantage, ``episode_advantages`` ``[B]``.
    """
    result = torch.zeros(len(trajectories), width)
    spans: list[list[tuple[int, int]]] = []
    relevance_rows: list[list[float]] = []
    for row, trajectory in enumerate(trajectories):
        result[row, : len(trajectory.loss_mask)] = episode_advantages[row] * torch.tensor(trajectory.loss_mask,
                                                                                          dtype=torch.float32)
        final = next((turn for turn in reversed(trajectory.turns) if turn.is_agent), None)
        items = final.action.recommend if final is not None and final.action is not None else None
        found = None
        if items and trajectory.rank is not None:
            found = item_token_spans(trajectory.token_ids[final.start : final.end], tokenizer, items)
        if found is None:
            spans.append([])
            relevance_rows.append([])
            continue
        spans.append([(final.start + first, final.start + end) for first, end in found])
        relevance_rows.append(item_relevance(items, trajectory.outcome.ranking, trajectory.rank))
    positions = max((len(r) for r in relevance_rows), default=0)
    if positions == 0:
        return result
    relevance = torch.tensor([r + [0.0] * (positions - len(r)) for r in relevance_rows])
    listed = torch.tensor([[k < len(r) for k in range(positions)] for r in relevance_rows])
    advantages = per_column_grpo(rank_rewards(relevance), listed, [t.group_id for t in trajectories],
                                 scale_by_std=scale_by_std, eps=1e-6)
    for row, (trajectory, item_spans) in enumerate(zip(trajectories, spans)):
        mask = torch.tensor(trajectory.loss_mask, dtype=torch.float32)
        for k, (first, end) in enumerate(item_spans):
            result[row, first:end] = advantages[row, k] * mask[first:end]
    return result
