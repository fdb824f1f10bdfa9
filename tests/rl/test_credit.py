"""Rank- and turn-level credit, against values computed by hand."""

import math

import pytest
import torch

from rl.algorithms import grpo_advantages
from rl.credit import rank_advantages, rank_rewards, spread_turn_advantages, turn_advantages


def test_rank_rewards_by_hand():
    relevance = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 1]])
    # discounts 1 / log2(k + 2): 1, 0.630930, 0.5, 0.430677
    # row 0: hit at 2 -> 0.5 at positions 0..2, 0 after
    # row 1: hits at 0 and 3 -> 1 + 0.430677 at position 0, 0.430677 at 1..3
    expected = torch.tensor([[0.5, 0.5, 0.5, 0.0], [1.430677, 0.430677, 0.430677, 0.430677]])
    torch.testing.assert_close(rank_rewards(relevance), expected)
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        rank_rewards(torch.zeros(3))


POSITION_REWARDS = torch.tensor([[1.0, 0.5], [7.0, 7.0], [0.0, 0.5], [0.5, 2.0]])
RANK_GROUPS = ["a", "b", "a", "a"]


def test_rank_advantages_by_hand():
    # group a (rows 0, 2, 3), position 0: 1, 0, 0.5 -> mean 0.5, centred 0.5, -0.5, 0,
    #   population std sqrt(0.5 / 3) = 0.408248 -> 1.224745, -1.224745, 0
    # position 1: 0.5, 0.5, 2 -> mean 1, centred -0.5, -0.5, 1, std sqrt(1.5 / 3) = 0.707107
    #   -> -0.707107, -0.707107, 1.414214
    # group b is one episode -> 0
    expected = torch.tensor([[1.224745, -0.707107], [0.0, 0.0], [-1.224745, -0.707107], [0.0, 1.414214]])
    torch.testing.assert_close(rank_advantages(POSITION_REWARDS, RANK_GROUPS, eps=1e-12), expected)
    torch.testing.assert_close(
        rank_advantages(POSITION_REWARDS, RANK_GROUPS, scale_by_std=False),
        torch.tensor([[0.5, -0.5], [0.0, 0.0], [-0.5, -0.5], [0.0, 1.0]]),
    )


def test_rank_advantages_are_grpo_advantages_per_position():
    for k in range(2):
        torch.testing.assert_close(
            rank_advantages(POSITION_REWARDS, RANK_GROUPS)[:, k],
            grpo_advantages(POSITION_REWARDS[:, k], RANK_GROUPS),
        )


def test_rank_advantages_bad_inputs():
    with pytest.raises(ValueError, match="3 group ids for 4 episodes"):
        rank_advantages(POSITION_REWARDS, ["a", "b", "a"])
    with pytest.raises(ValueError, match=r"\[B, N\]"):
        rank_advantages(torch.zeros(4), RANK_GROUPS)


# -------------------------------------------------------------- turn credit

TURN_REWARDS = torch.tensor([[1.0, 0.0, 2.0], [0.0, 4.0, 9.0], [1.0, 99.0, 4.0], [1.0, 1.0, 1.0]])
TURN_VALID = torch.tensor([[True, True, True], [True, True, False], [True, False, True], [True, True, True]])
TURN_GROUPS = ["g", "g", "g", "h"]
# returns-to-go with gamma 0.5 over valid turns:
#   row 0: turn 2: 2, turn 1: 0 + 0.5 * 2 = 1, turn 0: 1 + 0.5 * 1 = 1.5
#   row 1: turn 2 invalid, turn 1: 4, turn 0: 0 + 0.5 * 4 = 2
#   row 2: turn 2: 4, turn 1 invalid (skipped), turn 0: 1 + 0.5 * 4 = 3
# group g, turn 0: 1.5, 2, 3 -> mean 13/6, centred -2/3, -1/6, 5/6, variance (16 + 1 + 25) / 36 / 3 = 7/18
# group g, turn 1: rows 0, 1 -> 1, 4, centred -1.5, 1.5; turn 2: rows 0, 2 -> 2, 4, centred -1, 1
# group h has one episode -> 0


def test_turn_advantages_by_hand():
    std = math.sqrt(7 / 18)
    expected = torch.tensor([
        [-2 / 3 / std, -1.0, -1.0],
        [-1 / 6 / std, 1.0, 0.0],
        [5 / 6 / std, 0.0, 1.0],
        [0.0, 0.0, 0.0],
    ])
    result = turn_advantages(TURN_REWARDS, TURN_VALID, TURN_GROUPS, gamma=0.5, eps=1e-12)
    torch.testing.assert_close(result, expected)


def test_turn_advantages_without_std_scaling():
    expected = torch.tensor([[-2 / 3, -1.5, -1.0], [-1 / 6, 1.5, 0.0], [5 / 6, 0.0, 1.0], [0.0, 0.0, 0.0]])
    result = turn_advantages(TURN_REWARDS, TURN_VALID, TURN_GROUPS, gamma=0.5, scale_by_std=False)
    torch.testing.assert_close(result, expected)


def test_turn_advantages_bad_inputs():
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        turn_advantages(TURN_REWARDS, TURN_VALID[:, :2], TURN_GROUPS)
    with pytest.raises(ValueError, match="2 group ids for 4 episodes"):
        turn_advantages(TURN_REWARDS, TURN_VALID, ["g", "h"])


def test_spread_turn_advantages_by_hand():
    advantages = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.0, 0.0]])
    turn_of_token = torch.tensor([[0, 0, -1, 1, 2], [-1, 0, 0, -1, -1]])
    torch.testing.assert_close(
        spread_turn_advantages(advantages, turn_of_token),
        torch.tensor([[1.0, 1.0, 0.0, -2.0, 3.0], [0.0, 0.5, 0.5, 0.0, 0.0]]),
    )
    with pytest.raises(ValueError, match=r"outside \[-1, 3\)"):
        spread_turn_advantages(advantages, torch.tensor([[0, 3], [0, 0]]))
    with pytest.raises(ValueError, match=r"outside \[-1, 3\)"):
        spread_turn_advantages(advantages, torch.tensor([[0, -2], [0, 0]]))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        spread_turn_advantages(advantages, torch.tensor([[0, 1]]))
