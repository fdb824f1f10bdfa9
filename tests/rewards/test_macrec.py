import math

import pytest

from envs.parsing import parse_action
from envs.types import DialogueOutcome, RankingOutcome, RatingOutcome, Trajectory, Turn
from rewards import REWARD_FUNCTIONS, score
from rewards.macrec import (
    delta_reward,
    parse_verdict,
    reflection_reward,
    rp_v1,
    rp_v2,
    sr_v1,
)

RATING_TAGS = ("plan", "reflection", "answer")
MACREC_NAMES = ("rp_v1", "rp_v2", "sr_v1", "delta", "reflection")


def episode(texts, outcome, *, tags=RATING_TAGS):
    """A trajectory whose agent turns (manager, reflector, manager, ...) wrote ``texts``, between env turns."""
    turns = [Turn("system", "task prompt")]
    for index, text in enumerate(texts):
        role = "reflector" if "<reflection>" in text and index > 0 else "manager"
        turns.append(Turn(role, text, action=parse_action(text, tags=tags)))
        turns.append(Turn("env", "observation"))
    return Trajectory(task_id="t", env_id="e", source="test", turns=turns, outcome=outcome, format_valid=True)


def values(trajectory, names=MACREC_NAMES):
    return {name: REWARD_FUNCTIONS[name](trajectory) for name in names}


# Pure functions ----------------------------------------------------------------------------------


def test_parse_rating():
    from envs.parsing import parse_rating

    assert parse_rating("4") == 4.0
    assert parse_rating(" 2.5\n") == 2.5
    assert parse_rating("four") is None
    assert parse_rating("nan") is None
    assert parse_rating("inf") is None
    assert parse_rating(None) is None


@pytest.mark.parametrize("prediction, target, expected", [
    (4.0, 5.0, -1.0),
    (2.0, 4.5, -6.25),
    (3.0, 3.0, 0.0),
    (1.0, 5.0, -16.0),  # both ends of the range are valid
    (5.0, 1.0, -16.0),
    (None, 3.0, -9.0),  # invalid answers count as rating 0 (MACRec's invalid=0)
    (0.5, 2.0, -4.0),
    (5.5, 2.0, -4.0),
])
def test_rp_v1(prediction, target, expected):
    assert rp_v1(prediction, target) == pytest.approx(expected)


def test_rp_v1_invalid_rating_and_range_are_keywords():
    assert rp_v1(None, 3.0, invalid_rating=1.0) == -4.0
    assert rp_v1(8.0, 9.0, lower=0.0, upper=10.0) == -1.0


def test_rp_v1_and_v2_refuse_a_target_outside_the_range():
    with pytest.raises(ValueError, match=r"ground-truth rating 0.0 is outside \[1.0, 5.0\]"):
        rp_v1(3.0, 0.0)
    with pytest.raises(ValueError, match="outside"):
        rp_v2(3.0, 3.0, 6.0)


@pytest.mark.parametrize("before, after, target, expected", [
    # valid -> valid: d = r(after) - r(before); d + exp(-2|d|) * (4 + r(after))
    (3, 4, 5, 3 + math.exp(-6) * 3),           # r -4 -> -1, d = 3
    (3, 4, 3, -1 + math.exp(-2) * 3),          # r 0 -> -1, d = -1
    (1, 2, 5, 7 + math.exp(-14) * -5),         # r -16 -> -9, d = 7
    (3, 3, 5, 0.0),                            # unchanged, wrong by 2: 4 - 4
    (3, 3, 3, 4.0),                            # unchanged and right: alpha
    (5, 5, 1, -12.0),                          # unchanged, wrong by 4: 4 - 16
    # invalid before: gamma * improvement over -16, or the plain change
    (0, 4, 1, 1.75),                           # 0.25 * (-9 + 16)
    (None, 5, 1, 0.0),                         # -16 -> -16: no improvement, change 0
    # invalid after: -16
    (3, 0, 1, -16.0),
    (0, 0, 2, -16.0),
    (3, None, 3, -16.0),
])
def test_rp_v2_matches_macrec(before, after, target, expected):
    assert rp_v2(before, after, target) == pytest.approx(expected, abs=1e-12)


def test_rp_v2_constants_are_keywords():
    # unchanged 4 against 5: d = 0, so 0 + 1 * (alpha - 1)
    assert rp_v2(4, 4, 5, alpha=2.0) == pytest.approx(1.0)
    assert rp_v2(4, None, 5, invalid=-3.0) == -3.0
    # invalid before, r(after) = -1: 1.0 * (-1 + 16)
    assert rp_v2(None, 4, 5, gamma=1.0) == pytest.approx(15.0)
    # d = 1 (4 -> 5 against 5): 1 + exp(-eta) * (4 + 0)
    assert rp_v2(4, 5, 5, eta=1.0) == pytest.approx(1 + 4 * math.exp(-1))


def test_sr_v1_and_delta():
    assert [sr_v1(rank) for rank in (1, 2, 4, None)] == [1.0, 0.5, 0.25, 0.0]
    assert delta_reward(0.25, 1.0) == 0.75
    assert delta_reward(1.0, 0.0) == -1.0
    assert delta_reward(-4.0, -4.0) == 0.0


@pytest.mark.parametrize("text, verdict", [
    ('{"correctness": true, "reason": "fine"}', True),
    ('{"correctness": false, "reason": "too high"}', False),
    ('The answer is off. {"Correctness": FALSE, "reason": "x"}', False),
    ('{"correctness":true}', True),
    ("I think it is correct", None),
    ('{"correctness": "yes"}', None),
    ("", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) is verdict


@pytest.mark.parametrize("first_correct, verdict, expected", [
    (True, True, 16.0),
    (False, False, 16.0),
    (True, False, -16.0),
    (False, True, -16.0),
    (False, None, -16.0),
    (True, None, -16.0),
])
def test_reflection_reward(first_correct, verdict, expected):
    assert reflection_reward(first_correct, verdict) == expected


def test_reflection_reward_alpha():
    assert reflection_reward(True, True, alpha=2.0) == 2.0
    assert reflection_reward(True, False, alpha=2.0) == -2.0


# Trajectory rewards: rating ----------------------------------------------------------------------


def test_registered_names():
    assert set(MACREC_NAMES) <= set(REWARD_FUNCTIONS)


def test_rating_reflection_that_fixes_a_wrong_answer():
    trajectory = episode(['<answer>3</answer>',
                          '<reflection>{"correctness": false, "reason": "too low"}</reflection>',
                          '<answer>4</answer>'],
                         RatingOutcome(prediction=4.0, target=4.0))
    assert values(trajectory) == pytest.approx({
        "rp_v1": 0.0,                         # final 4 against 4
        "rp_v2": 1 + math.exp(-2) * 4,        # r -1 -> 0, d = 1: 1 + e^-2 * (4 + 0) = 1.5413
        "sr_v1": 0.0,
        "delta": 1.0,                         # 0 - (-1)
        "reflection": 16.0,                   # 3 was wrong and the verdict said so
    })
    # 1.5413 + 0.5 * 16 = 9.5413
    total, _ = score(trajectory, {"rp_v2": 1.0, "reflection": 0.5})
    assert total == pytest.approx(9.5413411, abs=1e-6)


def test_rating_reflection_with_a_wrong_verdict_or_none():
    wrong = episode(['<answer>4</answer>', '<reflection>{"correctness": false}</reflection>', '<answer>2</answer>'],
                    RatingOutcome(prediction=2.0, target=4.0))
    # 4 was right, the verdict says wrong: -16; the metric fell from 0 to -4
    assert REWARD_FUNCTIONS["reflection"](wrong) == -16.0
    assert REWARD_FUNCTIONS["delta"](wrong) == -4.0
    # r 0 -> -4, d = -4: -4 + e^-8 * (4 - 4) = -4
    assert REWARD_FUNCTIONS["rp_v2"](wrong) == pytest.approx(-4.0)
    silent = episode(['<answer>4</answer>', '<reflection>Looks about right.</reflection>', '<answer>4</answer>'],
                     RatingOutcome(prediction=4.0, target=4.0))
    assert REWARD_FUNCTIONS["reflection"](silent) == -16.0
    assert REWARD_FUNCTIONS["delta"](silent) == 0.0


def test_rating_reflection_that_confirms_and_stops():
    # The Reflector judged the answer right and the system stopped: the answer is unchanged.
    trajectory = episode(['<answer>3</answer>', '<reflection>{"correctness": true}</reflection>'],
                         RatingOutcome(prediction=3.0, target=3.0))
    assert values(trajectory) == pytest.approx({"rp_v1": 0.0, "rp_v2": 4.0, "sr_v1": 0.0, "delta": 0.0,
                                                "reflection": 16.0})


def test_rating_reflection_from_an_invalid_first_answer():
    trajectory = episode(['<answer>six</answer>', '<reflection>{"correctness": false}</reflection>',
                          '<answer>4</answer>'],
                         RatingOutcome(prediction=4.0, target=5.0))
    # rp_v2: invalid before scores -16, after -1: 0.25 * 15
    assert REWARD_FUNCTIONS["rp_v2"](trajectory) == pytest.approx(3.75)
    # delta of RP v1: the invalid answer counts as rating 0, -25 -> -1
    assert REWARD_FUNCTIONS["delta"](trajectory) == pytest.approx(24.0)
    assert REWARD_FUNCTIONS["reflection"](trajectory) == 16.0


def test_rating_without_reflection():
    trajectory = episode(['<answer>3</answer>'], RatingOutcome(prediction=3.0, target=4.0))
    # rp_v2 treats the one answer as unchanged: 0 + (4 - 1)
    assert values(trajectory) == pytest.approx({"rp_v1": -1.0, "rp_v2": 3.0, "sr_v1": 0.0, "delta": 0.0,
                                                "reflection": 0.0})


def test_a_reflection_before_the_first_answer_is_not_one():
    trajectory = episode(['<reflection>{"correctness": false}</reflection><answer>3</answer>'],
                         RatingOutcome(prediction=3.0, target=4.0))
    assert REWARD_FUNCTIONS["delta"](trajectory) == 0.0
    assert REWARD_FUNCTIONS["reflection"](trajectory) == 0.0
    assert REWARD_FUNCTIONS["rp_v2"](trajectory) == pytest.approx(3.0)


def test_a_final_turn_whose_verdict_quotes_the_first_answer_is_a_reflection_on_it():
    # One env turn: the first answer (3) lives in the verdict that judged it, the final one in <answer>.
    trajectory = episode(['<reflection>Analyst: likes it. {"answer": "3", "correctness": false, "reason": "low"}'
                          '</reflection><answer>4</answer>'], RatingOutcome(prediction=4.0, target=4.0))
    assert values(trajectory) == pytest.approx({"rp_v1": 0.0, "rp_v2": 1 + math.exp(-2) * 4, "sr_v1": 0.0,
                                                "delta": 1.0, "reflection": 16.0})
    # A quoted answer that is not a rating is an invalid first answer; a list is not a rating.
    invalid = episode(['<reflection>{"answer": "", "correctness": false}</reflection><answer>4</answer>'],
                      RatingOutcome(prediction=4.0, target=5.0))
    assert REWARD_FUNCTIONS["delta"](invalid) == pytest.approx(24.0)
    listed = episode(['<reflection>{"answer": ["3"]}</reflection><answer>4</answer>'],
                     RatingOutcome(prediction=4.0, target=4.0))
    assert REWARD_FUNCTIONS["delta"](listed) == 0.0 and REWARD_FUNCTIONS["reflection"](listed) == 0.0


def test_rating_without_a_usable_answer():
    trajectory = episode(['<answer>many</answer>'], RatingOutcome(prediction=None, target=4.0))
    assert REWARD_FUNCTIONS["rp_v1"](trajectory) == -16.0  # -(4 - 0)^2
    assert REWARD_FUNCTIONS["rp_v2"](trajectory) == -16.0  # invalid


@pytest.mark.parametrize("outcome", [None, RankingOutcome(ranking=("a",), rank=1), DialogueOutcome(accepted=True)])
def test_rating_rewards_are_zero_for_other_outcomes(outcome):
    trajectory = episode(['<answer>3</answer>'], outcome)
    assert REWARD_FUNCTIONS["rp_v1"](trajectory) == 0.0
    assert REWARD_FUNCTIONS["rp_v2"](trajectory) == 0.0


# Trajectory rewards: ranking ---------------------------------------------------------------------


def ranking_episode(texts, final_ranking, target):
    rank = final_ranking.index(target) + 1 if target in final_ranking else None
    return episode(texts, RankingOutcome(ranking=tuple(final_ranking), rank=rank),
                   tags=("plan", "tool_call", "reflection", "recommend"))


def test_ranking_reflection_that_moves_the_target_up():
    trajectory = ranking_episode(['<recommend>a, b, c</recommend>',
                                  '<reflection>{"correctness": false, "reason": "c fits"}</reflection>',
                                  '<recommend>c, a, b</recommend>'], ["c", "a", "b"], "c")
    # target c: rank 3 -> 1, so SR v1 1/3 -> 1; a was not the target and the verdict said so
    assert values(trajectory) == pytest.approx({"rp_v1": 0.0, "rp_v2": 0.0, "sr_v1": 1.0, "delta": 2 / 3,
                                                "reflection": 16.0})


def test_ranking_reflection_that_ruins_a_hit():
    trajectory = ranking_episode(['<recommend>c, a, b</recommend>', '<reflection>{"correctness": false}</reflection>',
                                  '<recommend>a, b, c</recommend>'], ["a", "b", "c"], "c")
    assert REWARD_FUNCTIONS["delta"](trajectory) == pytest.approx(1 / 3 - 1)
    assert REWARD_FUNCTIONS["reflection"](trajectory) == -16.0  # c was first: right, judged wrong
    assert REWARD_FUNCTIONS["sr_v1"](trajectory) == pytest.approx(1 / 3)


def test_ranking_answers_are_scored_as_written():
    # The first list leaves the target out (MACRec scores it 0); the final one lists it second.
    trajectory = ranking_episode(['<recommend>a, b</recommend>', '<reflection>{"correctness": false}</reflection>',
                                  '<recommend>b, c</recommend>'], ["b", "c", "a"], "c")
    assert REWARD_FUNCTIONS["delta"](trajectory) == pytest.approx(0.5)


def test_a_ranking_verdict_that_quotes_the_first_ranking():
    trajectory = ranking_episode(['<reflection>{"answer": ["a", "b", "c"], "correctness": true}</reflection>'
                                  '<recommend>c, a, b</recommend>'], ["c", "a", "b"], "c")
    assert REWARD_FUNCTIONS["delta"](trajectory) == pytest.approx(2 / 3)
    assert REWARD_FUNCTIONS["reflection"](trajectory) == -16.0  # a was first: wrong, judged right


def test_ranking_without_a_usable_final_ranking_scores_zero():
    trajectory = ranking_episode(['<recommend>c, a</recommend>', '<reflection>{"correctness": true}</reflection>',
                                  '<recommend>x</recommend>'], [], "c")
    assert values(trajectory) == {name: 0.0 for name in MACREC_NAMES}


def test_dialogue_outcome_scores_zero_on_every_macrec_reward():
    trajectory = episode(['<answer>3</answer>', '<reflection>{"correctness": false}</reflection>'],
                         DialogueOutcome(accepted=True, turns=2))
    assert values(trajectory) == {name: 0.0 for name in MACREC_NAMES}
