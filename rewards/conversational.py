"""Conversational recommendation rewards (MACRS-style dialogues that end in a ``DialogueOutcome``).

Trajectory rewards, registered by name in :data:`rewards.compose.REWARD_FUNCTIONS`:

* ``success``: 1.0 when the simulated user accepted a recommendation, else 0.0;
* ``turn_penalty``: ``-0.1`` per agent turn taken, so that of two successful dialogues the shorter
  scores higher;
* ``justified_format``: +1 when every ``recommend`` act carries both a non-empty ``<say>`` (the
  justification the user reads) and a non-empty ``<recommend>`` list, -1 when one does not, 0 when
  the agent never recommended (nothing to judge, and never recommending must not earn a bonus).

``success`` and ``turn_penalty`` are 0.0 for other outcomes; ``justified_format`` reads only the
agent turns' parsed acts. To weigh turns differently, register a partial::

    register_reward("turn_penalty_0.05")(lambda trajectory: turn_penalty_reward(trajectory, per_turn=0.05))
"""

from __future__ import annotations

from collections.abc import Sequence

from envs.types import DialogueOutcome, ParsedAction, Trajectory

__all__ = ["RECOMMEND_ACT", "is_justified_recommendation", "justified_format", "justified_format_reward", "success",
           "success_reward", "turn_penalty", "turn_penalty_reward"]

RECOMMEND_ACT = "recommend"
"""The dialogue act that recommends items (MACRS's recommend + justify)."""


def success(accepted: bool) -> float:
    """1.0 if the user accepted a recommendation, else 0.0.

    >>> success(True), success(False)
    (1.0, 0.0)
    """
    return 1.0 if accepted else 0.0


def turn_penalty(turns: int, *, per_turn: float = 0.1) -> float:
    """``-per_turn`` for each agent turn.

    Args:
        turns: Agent turns the dialogue took.
        per_turn: The cost of one turn.

    >>> round(turn_penalty(3), 4), turn_penalty(0), turn_penalty(4, per_turn=0.25)
    (-0.3, 0.0, -1.0)
    """
    return 0.0 - per_turn * turns


def is_justified_recommendation(action: ParsedAction) -> bool:
    """Whether a turn's action is a ``recommend`` act with both a non-empty utterance and item ids.

    >>> is_justified_recommendation(ParsedAction(act="recommend", utterance="You liked Alien.", recommend=["7"]))
    True
    >>> is_justified_recommendation(ParsedAction(act="recommend", utterance="  ", recommend=["7"]))
    False
    """
    return (action.act is not None and action.act.strip() == RECOMMEND_ACT
            and bool(action.utterance and action.utterance.strip()) and bool(action.recommend))


def justified_format(actions: Sequence[ParsedAction]) -> float:
    """+1 if every ``recommend`` act in ``actions`` is justified, -1 if one is not, 0 without any.

    >>> ask = ParsedAction(act="ask_preference", utterance="Which genres?")
    >>> good = ParsedAction(act="recommend", utterance="A sci-fi classic.", recommend=["50"])
    >>> bare = ParsedAction(act="recommend", recommend=["50"])
    >>> justified_format([ask, good]), justified_format([ask, good, bare]), justified_format([ask])
    (1.0, -1.0, 0.0)
    """
    recommending = [a for a in actions if a.act is not None and a.act.strip() == RECOMMEND_ACT]
    if not recommending:
        return 0.0
    return 1.0 if all(is_justified_recommendation(a) for a in recommending) else -1.0


def success_reward(trajectory: Trajectory) -> float:
    """:func:`success` of a dialogue's outcome; 0.0 for other outcomes."""
    outcome = trajectory.outcome
    return success(outcome.accepted) if isinstance(outcome, DialogueOutcome) else 0.0


def turn_penalty_reward(trajectory: Trajectory, *, per_turn: float = 0.1) -> float:
    """:func:`turn_penalty` of the agent turns a dialogue took (``DialogueOutcome.turns``); 0.0 for
    other outcomes."""
    outcome = trajectory.outcome
    return turn_penalty(outcome.turns, per_turn=per_turn) if isinstance(outcome, DialogueOutcome) else 0.0


def justified_format_reward(trajectory: Trajectory) -> float:
    """:func:`justified_format` of the agent turns' parsed actions."""
    return justified_format(trajectory.actions)
