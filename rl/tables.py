"""Sample episodes as table rows (``Tracker.table``): what the agent was asked, did and got."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from envs.types import DialogueOutcome, RankingOutcome, RatingOutcome, Task, Trajectory

__all__ = ["TRAJECTORY_COLUMNS", "outcome_text", "trajectory_rows"]

TRAJECTORY_COLUMNS = ("task_id", "source", "prompt", "tool_calls", "turn_rewards", "recommendation", "target",
                      "outcome", "reward")
"""The columns of ``trajectory_rows``, in order."""


def trajectory_rows(trajectories: Sequence[Trajectory], limit: int, *, tasks: Sequence[Task] = ()
                    ) -> list[dict[str, Any]]:
    """The first ``limit`` episodes as rows of ``TRAJECTORY_COLUMNS``.

    Args:
        trajectories: Episodes, e.g. one method's evaluation episodes.
        limit: Rows returned at most (the first episodes, so a seeded task order gives the same ones).
        tasks: The episodes' tasks, matched by ``task_id``, for the ``target`` column (empty without them).

    Returns:
        One dict per episode: ``prompt`` is the first user message, ``tool_calls`` the answered calls
        as ``name{json arguments}`` joined by ``; ``, ``turn_rewards`` the agent turns' env rewards,
        ``recommendation`` the last final action (a ranking, a rating answer, a dialogue act with its
        items), ``target`` the task's target item id or rating, ``outcome`` a line such as ``rank 3``,
        and ``reward`` the episode's total reward.
    """
    targets = {task.task_id: _target(task) for task in tasks}
    return [{
        "task_id": trajectory.task_id,
        "source": trajectory.source,
        "prompt": next((turn.text for turn in trajectory.turns if turn.role == "user"), ""),
        "tool_calls": "; ".join(f"{call.name}{json.dumps(call.arguments, separators=(',', ':'))}"
                                for action in trajectory.actions if action.recommend is None  # as num_tool_calls
                                for call in action.tool_calls),
        "turn_rewards": [turn.reward for turn in trajectory.turns if turn.is_agent],
        "recommendation": _recommendation(trajectory),
        "target": targets.get(trajectory.task_id, ""),
        "outcome": outcome_text(trajectory.outcome),
        "reward": trajectory.reward,
    } for trajectory in trajectories[: max(limit, 0)]]


def _target(task: Task) -> str:
    """A rating task's held-out rating, else the task's target item id ("" if it has neither)."""
    for name in ("target_rating", "target_item_id"):  # a RatingTask's target_item_id is the rated item
        if hasattr(task, name):
            return str(getattr(task, name))
    return ""


def _recommendation(trajectory: Trajectory) -> str:
    """The last agent action that ended a turn with an act, a ranking or an answer, as one line."""
    for action in reversed(trajectory.actions):
        ranking = None if action.recommend is None else ", ".join(action.recommend)
        parts = [part for part in (action.act, ranking, action.answer) if part is not None]
        if parts:
            return ": ".join(parts)
    return ""


@functools.singledispatch
def outcome_text(outcome: Any) -> str:
    """How an episode ended, in a few words.

    >>> outcome_text(RankingOutcome(ranking=("7", "3"), rank=2))
    'rank 2'
    >>> outcome_text(None)
    'unfinished'
    """
    return "unfinished" if outcome is None else str(outcome)


@outcome_text.register
def _(outcome: RankingOutcome) -> str:
    return "no usable ranking" if outcome.rank is None else f"rank {outcome.rank}"


@outcome_text.register
def _(outcome: RatingOutcome) -> str:
    return "no usable answer" if outcome.prediction is None else f"predicted {outcome.prediction:g}"


@outcome_text.register
def _(outcome: DialogueOutcome) -> str:
    ended = f"accepted at turn {outcome.accepted_at}" if outcome.accepted else f"not accepted in {outcome.turns} turns"
    return ended + (f"; recommended {', '.join(outcome.recommended)}" if outcome.recommended else "")
