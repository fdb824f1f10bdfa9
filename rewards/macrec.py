"""MACRec's rewards: rating prediction (RP v1, RP v2), sequential recommendation (SR v1), and the
delta and reflection rewards that score a Reflector by what its reflection did to the answer.

The formulas follow MACRec's code (github.com/wzf2000/MACRec, ``macrec/rl/reward/``: ``base.py``,
``rp.py``, ``sr.py``). There every reward compares two answers: ``Answer_1``, given before the
Reflector spoke, and ``Answer_2``, given after it (equal to ``Answer_1`` when the Reflector judged it
correct and the system stopped):

* RP v1 and SR v1 are delta rewards: an answer's metric after the reflection minus before, the metric
  ``-(gt - a)^2`` for a rating and ``1 / rank`` for a ranking (:func:`rp_v1`, :func:`sr_v1`,
  :func:`delta_reward`);
* RP v2 reshapes the rating delta around invalid and unchanged answers (:func:`rp_v2`);
* the reflection reward is ``+alpha`` when the Reflector's verdict on the first answer
  (``{"correctness": true|false}``) matches the truth, ``-alpha`` otherwise (:func:`reflection_reward`).

Trajectory rewards, registered by name in :data:`rewards.compose.REWARD_FUNCTIONS`:

* ``rp_v1`` / ``sr_v1``: the metric of the final answer alone (the outcome's prediction or rank),
  0.0 when the outcome is of another kind;
* ``rp_v2``: RP v2 of the answer before the first reflection and the final one; with no reflection
  both are the outcome's prediction (MACRec's unchanged answer), so a valid answer scores
  ``alpha - (gt - a)^2`` and a missing or out-of-range one ``invalid`` (-16); 0.0 for other outcomes;
* ``delta``: MACRec's RP v1 / SR v1 training reward, the metric after the reflection minus before;
* ``reflection``: MACRec's ±16 reflection reward.

``delta`` and ``reflection`` need a reflection: an agent turn holding ``<reflection>`` that comes
after the first answering turn (a reflection written before the first answer is reasoning, not a
reflection on an answer). The first answer is the ``answer`` (rating) or ``recommend`` list
(ranking) of the first agent turn that gives one; the final answer is the last one, both read as the
agent wrote them (a ranking that leaves the target out scores 0, as in MACRec). An env ends its
episode at the first answer, so a system that reflects within the episode (the MACRec teacher,
``teachers.systems.macrec``) writes the first answer into the final turn's reflection instead: a
verdict that quotes the answer it judged (``{"answer": "3", "correctness": false, "reason": ...}``,
a ranking as a list of ids) counts as a reflection on that answer, given before the turn's own.
Without a reflection, and for a ranking episode whose final answer gave no usable ranking (the target
item cannot then be read from the ``RankingOutcome``), they are 0.0. Ratings are valid in ``[1, 5]``
(ml-100k), the ground truth too: a target outside raises ``ValueError`` (bad data), as MACRec asserts.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from envs.parsing import parse_rating
from envs.types import RankingOutcome, RatingOutcome, Trajectory
from rewards.ranking import mrr, rank_of

__all__ = [
    "delta_reward",
    "delta_trajectory_reward",
    "parse_verdict",
    "quoted_answer",
    "reflection_reward",
    "reflection_trajectory_reward",
    "rp_v1",
    "rp_v1_reward",
    "rp_v2",
    "rp_v2_reward",
    "sr_v1",
    "sr_v1_reward",
]

LOWER, UPPER = 1.0, 5.0
"""The valid rating range (ml-100k's 1-5 stars)."""
_VERDICT = re.compile(r'"correctness"\s*:\s*(true|false)', re.IGNORECASE)
_QUOTED = re.compile(r'"answer"\s*:\s*("(?:[^"\\]|\\.)*"|\[[^\[\]]*\]|-?[0-9]+(?:\.[0-9]+)?)')


def _valid(rating: float | None, lower: float, upper: float) -> bool:
    return rating is not None and lower <= rating <= upper


def _check_target(target: float, lower: float, upper: float) -> None:
    if not lower <= target <= upper:
        raise ValueError(f"ground-truth rating {target} is outside [{lower}, {upper}]; check the task's target_rating.")


def rp_v1(prediction: float | None, target: float, *, lower: float = LOWER, upper: float = UPPER,
          invalid_rating: float = 0.0) -> float:
    """MACRec's RP v1 metric of one answer: ``-(target - prediction)^2``.

    A missing or out-of-range prediction is scored as the rating ``invalid_rating`` (MACRec's
    ``invalid=0``: ``-target^2``).

    Raises:
        ValueError: If ``target`` is outside ``[lower, upper]``.

    >>> rp_v1(4.0, 5.0), rp_v1(3.0, 3.0), rp_v1(None, 3.0), rp_v1(6.0, 2.0)
    (-1.0, 0.0, -9.0, -4.0)
    """
    _check_target(target, lower, upper)
    rating = prediction if _valid(prediction, lower, upper) else invalid_rating
    return 0.0 - (target - rating) ** 2


def rp_v2(before: float | None, after: float | None, target: float, *, invalid: float = -16.0, alpha: float = 4.0,
          gamma: float = 0.25, eta: float = 2.0, lower: float = LOWER, upper: float = UPPER) -> float:
    """MACRec's RP v2 (``RatingPredictionRewardV2``) of the answers before and after a reflection.

    With ``r(a) = -(target - a)^2`` (``invalid`` for a missing or out-of-range answer):

    * an invalid ``after`` scores ``invalid``;
    * from an invalid ``before``: ``gamma * (r(after) - r(before))`` if that is an improvement, else
      the plain difference;
    * otherwise ``d + exp(-eta * |d|) * (alpha + r(after))`` with ``d = r(after) - r(before)``: an
      unchanged correct answer earns ``alpha``, an unchanged wrong one ``alpha + r(after)``.

    Raises:
        ValueError: If ``target`` is outside ``[lower, upper]``.

    MACRec's own checks (``rp.py``):

    >>> round(rp_v2(3, 4, 5), 4), round(rp_v2(3, 4, 3), 4), round(rp_v2(1, 2, 5), 4)
    (3.0074, -0.594, 7.0)
    >>> rp_v2(0, 4, 1), rp_v2(3, 0, 1), rp_v2(0, 0, 2)
    (1.75, -16.0, -16.0)
    >>> rp_v2(3, 3, 5), rp_v2(3, 3, 3), rp_v2(5, 5, 1)
    (0.0, 4.0, -12.0)
    """
    _check_target(target, lower, upper)
    if not _valid(after, lower, upper):
        return invalid
    after_reward = 0.0 - (target - after) ** 2
    if not _valid(before, lower, upper):
        change = after_reward - invalid
        return gamma * change if change > 0 else change
    change = after_reward + (target - before) ** 2
    return change + math.exp(-abs(change) * eta) * (alpha + after_reward)


def sr_v1(rank: int | None) -> float:
    """MACRec's SR v1 metric of one ranking: ``1 / rank`` of the target, 0 when it is missing.

    >>> sr_v1(1), sr_v1(4), sr_v1(None)
    (1.0, 0.25, 0.0)
    """
    return mrr(rank)


def delta_reward(before: float, after: float) -> float:
    """MACRec's ``DeltaReward``: the metric after a reflection minus the metric before.

    >>> delta_reward(sr_v1(3), sr_v1(1))
    0.6666666666666667
    >>> delta_reward(rp_v1(4, 4), rp_v1(2, 4))
    -4.0
    """
    return after - before


def parse_verdict(reflection: str) -> bool | None:
    """The Reflector's verdict on the answer it reflected on: MACRec's ``{"correctness": true|false, ...}``,
    found anywhere in the text; None when there is none.

    >>> parse_verdict('{"correctness": false, "reason": "too high"}'), parse_verdict("looks fine")
    (False, None)
    """
    match = _VERDICT.search(reflection)
    return None if match is None else match.group(1).lower() == "true"


def quoted_answer(reflection: str) -> Any:
    """The answer a reflection's verdict quotes as the one it judged (``"answer": ...`` in MACRec's
    verdict JSON): a string, a number or a list, as written; None when it quotes none.

    >>> quoted_answer('{"answer": "3", "correctness": false}'), quoted_answer('{"answer": ["7", "9"]}')
    ('3', ['7', '9'])
    >>> quoted_answer('{"correctness": true}') is None
    True
    """
    match = _QUOTED.search(reflection)
    if match is None:
        return None
    try:
        return json.loads(match.group(1))
    except ValueError:
        return None


def reflection_reward(first_correct: bool, verdict: bool | None, *, alpha: float = 16.0) -> float:
    """MACRec's ``ReflectionReward``: ``+alpha`` when the verdict on the first answer matches whether
    it was correct, ``-alpha`` when it does not or there is no verdict.

    >>> reflection_reward(False, False), reflection_reward(True, False), reflection_reward(True, None)
    (16.0, -16.0, -16.0)
    """
    return alpha if verdict is first_correct else -alpha


# Trajectory rewards (registered in rewards.compose) ---------------------------------------------


@dataclass(frozen=True)
class _Reflected:
    """The first answer, the final one and the reflection between them, as the agent turns wrote them."""

    before: Any
    after: Any
    reflection: str


def _reflected(trajectory: Trajectory, kind: "_AnswerKind") -> _Reflected | None:
    """The answers around the first reflection after the first answer (or around the final turn's
    verdict that quotes the answer it judged); None without one."""
    agent_actions = [turn.action for turn in trajectory.turns if turn.is_agent and turn.action is not None]
    answering = [index for index, action in enumerate(agent_actions) if getattr(action, kind.answer_field) is not None]
    if not answering:
        return None
    final = agent_actions[answering[-1]]
    after = getattr(final, kind.answer_field)
    reflection = next((action.reflection for action in agent_actions[answering[0] + 1:]
                       if action.reflection is not None), None)
    if reflection is not None:
        return _Reflected(before=getattr(agent_actions[answering[0]], kind.answer_field), after=after,
                          reflection=reflection)
    quoted = kind.read_quoted(quoted_answer(final.reflection or ""))
    return None if quoted is None else _Reflected(before=quoted, after=after, reflection=final.reflection)


@dataclass(frozen=True)
class _AnswerKind:
    """How one kind of outcome's answers are read and judged."""

    answer_field: str
    """The ParsedAction field holding an answer."""
    truth: Callable[[Any], Any]
    """The ground truth an outcome holds (None when it cannot be told)."""
    metric: Callable[[Any, Any], float]
    """An answer's MACRec metric, given the truth."""
    correct: Callable[[Any, Any], bool]
    """Whether an answer is right (MACRec's ``judge``)."""
    read_quoted: Callable[[Any], Any]
    """A quoted answer (``quoted_answer``) in the form the answer field holds; None if it has another shape."""


def _target_item(outcome: RankingOutcome) -> str | None:
    return None if outcome.rank is None else outcome.ranking[outcome.rank - 1]


_ANSWER_KINDS: dict[type, _AnswerKind] = {
    RatingOutcome: _AnswerKind(
        answer_field="answer",
        truth=lambda outcome: outcome.target,
        metric=lambda answer, target: rp_v1(parse_rating(answer), target),
        correct=lambda answer, target: parse_rating(answer) == target,
        read_quoted=lambda quoted: str(quoted) if isinstance(quoted, (str, int, float)) else None,
    ),
    RankingOutcome: _AnswerKind(
        answer_field="recommend",
        truth=_target_item,
        metric=lambda ranking, target: sr_v1(rank_of(ranking, target)),
        correct=lambda ranking, target: bool(ranking) and ranking[0] == target,
        read_quoted=lambda quoted: [str(i) for i in quoted] if isinstance(quoted, list) else None,
    ),
}
"""Answer kinds by outcome type: rating (MACRec's rp task) and ranking (its sr task)."""


def _reflection_inputs(trajectory: Trajectory) -> tuple[_AnswerKind, _Reflected, Any] | None:
    kind = _ANSWER_KINDS.get(type(trajectory.outcome))
    if kind is None:
        return None
    truth = kind.truth(trajectory.outcome)
    reflected = _reflected(trajectory, kind)
    if truth is None or reflected is None:
        return None
    return kind, reflected, truth


def rp_v1_reward(trajectory: Trajectory) -> float:
    """RP v1 of a rating episode's final prediction; 0.0 for other outcomes."""
    outcome = trajectory.outcome
    return rp_v1(outcome.prediction, outcome.target) if isinstance(outcome, RatingOutcome) else 0.0


def rp_v2_reward(trajectory: Trajectory) -> float:
    """RP v2 of the answer before the first reflection and the final one (both the outcome's
    prediction without a reflection); 0.0 for other outcomes."""
    outcome = trajectory.outcome
    if not isinstance(outcome, RatingOutcome):
        return 0.0
    reflected = _reflected(trajectory, _ANSWER_KINDS[RatingOutcome])
    if reflected is None:
        return rp_v2(outcome.prediction, outcome.prediction, outcome.target)
    return rp_v2(parse_rating(reflected.before), parse_rating(reflected.after), outcome.target)


def sr_v1_reward(trajectory: Trajectory) -> float:
    """SR v1 of a ranking episode's final ranking (0.0 without one, and for other outcomes)."""
    return sr_v1(trajectory.rank)


def delta_trajectory_reward(trajectory: Trajectory) -> float:
    """RP v1 (rating) or SR v1 (ranking) of the final answer minus that of the first, across a reflection."""
    inputs = _reflection_inputs(trajectory)
    if inputs is None:
        return 0.0
    kind, reflected, truth = inputs
    return delta_reward(kind.metric(reflected.before, truth), kind.metric(reflected.after, truth))


def reflection_trajectory_reward(trajectory: Trajectory) -> float:
    """±16 as the reflection's verdict on the first answer is right or wrong (MACRec's ReflectionReward)."""
    inputs = _reflection_inputs(trajectory)
    if inputs is None:
        return 0.0
    kind, reflected, truth = inputs
    return reflection_reward(kind.correct(reflected.before, truth), parse_verdict(reflected.reflection))

