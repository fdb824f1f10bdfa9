import pytest

from envs.parsing import parse_action
from envs.types import DialogueOutcome, ParsedAction, RatingOutcome, Trajectory, Turn
from rewards import REWARD_FUNCTIONS, score
from rewards.conversational import (
    is_justified_recommendation,
    justified_format,
    success,
    turn_penalty,
    turn_penalty_reward,
)

DIALOGUE_TAGS = ("act", "say", "recommend")
ASK = "<act>ask_preference</act><say>Which genres do you like?</say>"
JUSTIFIED = "<act>recommend</act><say>Alien: you loved Aliens.</say><recommend>50</recommend>"
BARE = "<act>recommend</act><recommend>50</recommend>"


def dialogue(agent_texts, outcome):
    turns = [Turn("user", "I want a film for tonight.")]
    for text in agent_texts:
        turns.append(Turn("policy", text, action=parse_action(text, tags=DIALOGUE_TAGS)))
        turns.append(Turn("user", "Hmm."))
    return Trajectory(task_id="t", env_id="ConversationalRec-v0", source="test", turns=turns, outcome=outcome)


def test_registered_names():
    assert {"success", "turn_penalty", "justified_format"} <= set(REWARD_FUNCTIONS)


def test_success_and_turn_penalty():
    assert success(True) == 1.0
    assert success(False) == 0.0
    assert turn_penalty(1) == pytest.approx(-0.1)
    assert turn_penalty(8) == pytest.approx(-0.8)
    assert turn_penalty(0) == 0.0
    assert turn_penalty(3, per_turn=0.5) == -1.5


@pytest.mark.parametrize("action, justified", [
    (ParsedAction(act="recommend", utterance="A classic.", recommend=["1", "2"]), True),
    (ParsedAction(act=" recommend ", utterance="A classic.", recommend=["1"]), True),
    (ParsedAction(act="recommend", utterance=None, recommend=["1"]), False),
    (ParsedAction(act="recommend", utterance=" \n", recommend=["1"]), False),
    (ParsedAction(act="recommend", utterance="A classic.", recommend=None), False),
    (ParsedAction(act="recommend", utterance="A classic.", recommend=[]), False),
    (ParsedAction(act="ask_preference", utterance="Which?", recommend=None), False),
])
def test_is_justified_recommendation(action, justified):
    assert is_justified_recommendation(action) is justified


def test_justified_format_judges_only_recommend_acts():
    ask = ParsedAction(act="ask_preference", utterance="Which?")
    good = ParsedAction(act="recommend", utterance="A classic.", recommend=["1"])
    bare = ParsedAction(act="recommend", recommend=["1"])
    assert justified_format([]) == 0.0
    assert justified_format([ask, ask]) == 0.0
    assert justified_format([ask, good]) == 1.0
    assert justified_format([good, good]) == 1.0
    assert justified_format([good, bare]) == -1.0
    assert justified_format([bare]) == -1.0


def test_accepted_dialogue_in_three_turns():
    trajectory = dialogue([ASK, ASK, JUSTIFIED],
                          DialogueOutcome(accepted=True, accepted_at=3, turns=3, recommended=("50",)))
    total, values = score(trajectory, {"success": 1.0, "turn_penalty": 1.0, "justified_format": 0.5})
    assert values == pytest.approx({"success": 1.0, "turn_penalty": -0.3, "justified_format": 1.0})
    assert total == pytest.approx(1.2)  # 1 - 0.3 + 0.5


def test_failed_dialogue_with_an_unjustified_recommendation():
    trajectory = dialogue([ASK, BARE, JUSTIFIED, "<act>recommend</act><say>Try this one.</say>"],
                          DialogueOutcome(accepted=False, turns=4, recommended=("50", "50")))
    total, values = score(trajectory, {"success": 1.0, "turn_penalty": 1.0, "justified_format": 1.0})
    assert values == pytest.approx({"success": 0.0, "turn_penalty": -0.4, "justified_format": -1.0})
    assert total == pytest.approx(-1.4)


def test_turn_penalty_reads_the_outcome_and_takes_its_constant():
    trajectory = dialogue([ASK], DialogueOutcome(accepted=False, turns=5))
    assert REWARD_FUNCTIONS["turn_penalty"](trajectory) == pytest.approx(-0.5)
    assert turn_penalty_reward(trajectory, per_turn=0.2) == pytest.approx(-1.0)


@pytest.mark.parametrize("outcome", [None, RatingOutcome(prediction=3.0, target=3.0)])
def test_dialogue_rewards_are_zero_for_other_outcomes(outcome):
    trajectory = dialogue([ASK], outcome)
    assert REWARD_FUNCTIONS["success"](trajectory) == 0.0
    assert REWARD_FUNCTIONS["turn_penalty"](trajectory) == 0.0
    assert REWARD_FUNCTIONS["justified_format"](trajectory) == 0.0
