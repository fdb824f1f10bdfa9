"""Loss aggregation, whitening, per-token rewards, masked GAE, the value loss and REINFORCE++, by hand."""


import pytest
import torch

from rl.algorithms import gae
from rl.estimators import (
    LOSS_AGG_MODES,
    aggregate_loss,
    masked_gae,
    reinforce_pp_advantages,
    token_rewards,
    value_loss,
    whiten,
)

# ------------------------------------------------------------ aggregate_loss

# Row 0: three policy tokens (1, 2, 3); row 1: two (4, 6) around a NaN that is masked out;
# row 2: no policy token at all.
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, float("nan"), 6.0], [7.0, 8.0, 9.0]])
AGG_MASK = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 0, 0]])


@pytest.mark.parametrize(
    ("mode", "expected", "row0_grad", "row1_grad"),
    [
        # (1 + 2 + 3 + 4 + 6) / 5 tokens; every token weighs 1/5
        ("token-mean", 16 / 5, 1 / 5, 1 / 5),
        # row sums 6 and 10 over the 2 non-empty rows; every token weighs 1/2
        ("seq-mean-token-sum", 16 / 2, 1 / 2, 1 / 2),
        # row means 2 and 5 over 2 rows; a token weighs 1 / (2 * its row's length)
        ("seq-mean-token-mean", (2 + 5) / 2, 1 / 6, 1 / 4),
    ],
)
def test_aggregate_loss_by_hand(mode, expected, row0_grad, row1_grad):
    per_token = PER_TOKEN.clone().requires_grad_(True)
    loss = aggregate_loss(per_token, AGG_MASK, mode=mode)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    expected_grad = torch.tensor(
        [[row0_grad] * 3, [row1_grad, 0.0, row1_grad], [0.0, 0.0, 0.0]]
    )
    torch.testing.assert_close(per_token.grad, expected_grad)


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_aggregate_loss_empty_mask_is_zero_with_zero_gradient(mode):
    per_token = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    loss = aggregate_loss(per_token, torch.zeros(2, 2), mode=mode)
    loss.backward()
    assert loss.item() == 0.0
    torch.testing.assert_close(per_token.grad, torch.zeros(2, 2))


def test_aggregate_loss_bad_inputs():
    with pytest.raises(ValueError, match="'seq-sum'.*token-mean"):
        aggregate_loss(torch.zeros(1, 2), torch.ones(1, 2), mode="seq-sum")
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        aggregate_loss(torch.zeros(1, 2), torch.ones(1, 3), mode="token-mean")
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        aggregate_loss(torch.zeros(2), torch.ones(2), mode="token-mean")


# -------------------------------------------------------------------- whiten


def test_whiten_by_hand():
    values = torch.tensor([[1.0, 2.0, 50.0], [3.0, 4.0, float("nan")]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # masked values 1, 2, 3, 4: mean 2.5, population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25,
    # std sqrt(1.25) = 1.118034; (v - 2.5) / 1.118034
    torch.testing.assert_close(
        whiten(values, mask, eps=0.0),
        torch.tensor([[-1.341641, -0.447214, 0.0], [0.447214, 1.341641, 0.0]]),
    )
    # shift_mean=False adds the mean 2.5 back on masked positions only
    torch.testing.assert_close(
        whiten(values, mask, shift_mean=False, eps=0.0),
        torch.tensor([[1.158359, 2.052786, 0.0], [2.947214, 3.841641, 0.0]]),
    )


def test_whiten_constant_and_empty():
    # no spread: every masked value is the mean, so 0 (not NaN)
    torch.testing.assert_close(whiten(torch.full((3,), 0.1), torch.ones(3)), torch.zeros(3))
    assert torch.equal(whiten(torch.tensor([1.0, 2.0]), torch.zeros(2)), torch.zeros(2))
    with pytest.raises(ValueError, match="one shape"):
        whiten(torch.zeros(3), torch.ones(2))


# ------------------------------------------------------------- token_rewards

TR_MASK = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]])
TR_KL = torch.tensor([[9.0, 0.5, 1.0, 9.0, 2.0], [0.1, 0.3, 9.0, 9.0, 9.0]])


def test_token_rewards_kl_and_episode_reward_by_hand():
    rewards = torch.tensor([2.0, -1.0])
    result = token_rewards(rewards, TR_MASK, kl=TR_KL, kl_coef=0.1)
    # -0.1 * kl on policy tokens; the episode reward on each row's last policy token:
    # row 0: last policy token 4: -0.2 + 2 = 1.8     row 1: last policy token 1: -0.03 - 1 = -1.03
    expected = torch.tensor([[0.0, -0.05, -0.1, 0.0, 1.8], [-0.01, -1.03, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(result, expected)
    # without kl: only the episode rewards
    torch.testing.assert_close(
        token_rewards(rewards, TR_MASK),
        torch.tensor([[0.0, 0.0, 0.0, 0.0, 2.0], [0.0, -1.0, 0.0, 0.0, 0.0]]),
    )


def test_token_rewards_with_turn_rewards_by_hand():
    turn_ends = torch.tensor([[2, 4], [1, -1]])
    turn_rewards = torch.tensor([[0.5, 0.25], [3.0, 100.0]])
    result = token_rewards(torch.tensor([2.0, -1.0]), TR_MASK, kl=TR_KL, kl_coef=0.1,
                           turn_rewards=turn_rewards, turn_ends=turn_ends)
    # on top of the previous test: row 0 +0.5 at token 2 (-0.1 -> 0.4), +0.25 at token 4 (1.8 -> 2.05);
    # row 1 +3 at token 1 (-1.03 -> 1.97); the turn marked -1 adds nothing
    expected = torch.tensor([[0.0, -0.05, 0.4, 0.0, 2.05], [-0.01, 1.97, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(result, expected)


def test_token_rewards_row_without_policy_tokens_gets_nothing():
    mask = torch.tensor([[0, 0, 0], [0, 1, 0]])
    torch.testing.assert_close(
        token_rewards(torch.tensor([5.0, 1.0]), mask),
        torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    )


def test_token_rewards_bad_turns():
    rewards = torch.tensor([2.0, -1.0])
    with pytest.raises(ValueError, match=r"turn_ends\[0, 1\] = 3 is not a policy token of row 0"):
        token_rewards(rewards, TR_MASK, turn_rewards=torch.ones(2, 2),
                      turn_ends=torch.tensor([[2, 3], [1, -1]]))
    with pytest.raises(ValueError, match=r"turn_ends\[1, 0\] = 5"):
        token_rewards(rewards, TR_MASK, turn_rewards=torch.ones(2, 1), turn_ends=torch.tensor([[4], [5]]))
    with pytest.raises(ValueError, match="together"):
        token_rewards(rewards, TR_MASK, turn_ends=torch.tensor([[4], [1]]))
    with pytest.raises(ValueError, match=r"\[B, K\]"):
        token_rewards(rewards, TR_MASK, turn_rewards=torch.ones(2, 2), turn_ends=torch.tensor([[4], [1]]))
    with pytest.raises(ValueError, match=r"rewards \[B\]"):
        token_rewards(torch.ones(3), TR_MASK)


# ---------------------------------------------------------------- masked_gae


def test_masked_gae_by_hand_with_gaps():
    # Row 0: policy tokens at 0, 2, 5 with rewards 1, 0, 2 and values 0.5, 1.0, 0.0; the 5.0 reward
    # and 7.0 values sit on non-policy tokens and are ignored. gamma = 0.9, lam = 0.8, gamma * lam = 0.72
    #   t=5: delta = 2 + 0 - 0 = 2                         A = 2
    #   t=2: delta = 0 + 0.9 * 0.0 - 1.0 = -1              A = -1 + 0.72 * 2 = 0.44
    #   t=0: delta = 1 + 0.9 * 1.0 - 0.5 = 1.4             A = 1.4 + 0.72 * 0.44 = 1.7168
    # Row 1: policy tokens at 2, 3 with rewards 0, 1 and values 0.5, 0.2
    #   t=3: delta = 1 + 0 - 0.2 = 0.8                     A = 0.8
    #   t=2: delta = 0 + 0.9 * 0.2 - 0.5 = -0.32           A = -0.32 + 0.72 * 0.8 = 0.256
    rewards = torch.tensor([[1.0, 5.0, 0.0, 0.0, 0.0, 2.0], [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 7.0, 1.0, 7.0, 7.0, 0.0], [3.0, 3.0, 0.5, 0.2, 3.0, 3.0]])
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 0, 1, 1, 0, 0]])
    advantages, returns = masked_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    torch.testing.assert_close(
        advantages, torch.tensor([[1.7168, 0.0, 0.44, 0.0, 0.0, 2.0], [0.0, 0.0, 0.256, 0.8, 0.0, 0.0]])
    )
    # returns = A + V on policy tokens
    torch.testing.assert_close(
        returns, torch.tensor([[2.2168, 0.0, 1.44, 0.0, 0.0, 2.0], [0.0, 0.0, 0.756, 1.0, 0.0, 0.0]])
    )


def test_masked_gae_equals_gae_on_the_policy_tokens():
    torch.manual_seed(0)
    rewards, values = torch.randn(5, 12), torch.randn(5, 12, requires_grad=True)
    mask = (torch.rand(5, 12) < 0.6).long()
    mask[3] = 0  # a row with no policy token
    advantages, returns = masked_gae(rewards, values, mask, gamma=0.95, lam=0.9)
    assert not advantages.requires_grad and not returns.requires_grad
    for row in range(5):
        keep = mask[row] != 0
        expected_advantages, expected_returns = gae(
            rewards[row, keep], values[row, keep], gamma=0.95, lam=0.9
        )
        torch.testing.assert_close(advantages[row, keep], expected_advantages)
        torch.testing.assert_close(returns[row, keep], expected_returns)
        assert torch.equal(advantages[row, ~keep], torch.zeros(int((~keep).sum())))
        assert torch.equal(returns[row, ~keep], torch.zeros(int((~keep).sum())))


def test_masked_gae_shape_mismatch():
    with pytest.raises(ValueError, match=r"values and mask must both be \[B, T\]"):
        masked_gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), gamma=1.0, lam=1.0)


# ---------------------------------------------------------------- value_loss

# clip_eps = 0.5, per token (v, old, R):
#   (1, 0, 2): unclipped (1 - 2)^2 = 1, clipped (0.5 - 2)^2 = 2.25 -> 2.25, clipped is larger
#   (2, 2, 4): both (2 - 4)^2 = 4 -> 4, a tie is not counted as clipped
#   (5, 4, 4): unclipped (5 - 4)^2 = 1, clipped (4.5 - 4)^2 = 0.25 -> 1
#   (5, 4, 6): unclipped 1, clipped (4.5 - 6)^2 = 2.25 -> 2.25, clipped is larger
VALUES = torch.tensor([[1.0, 2.0], [5.0, 5.0]])
OLD_VALUES = torch.tensor([[0.0, 2.0], [4.0, 4.0]])
RETURNS = torch.tensor([[2.0, 4.0], [4.0, 6.0]])


def test_value_loss_clipped_by_hand():
    values = VALUES.clone().requires_grad_(True)
    loss, metrics = value_loss(values, OLD_VALUES, RETURNS, torch.ones(2, 2), clip_eps=0.5)
    # 0.5 * (2.25 + 4 + 1 + 2.25) / 4 = 1.1875
    assert loss.item() == pytest.approx(1.1875)
    assert metrics["value_loss"] == pytest.approx(1.1875)
    assert metrics["value_clip_frac"] == pytest.approx(0.5)
    # R = 2, 4, 4, 6: mean 4, Var[R] = (4 + 0 + 0 + 4) / 4 = 2
    # R - v = 1, 2, -1, 1: mean 0.75, Var = (0.0625 + 1.5625 + 3.0625 + 0.0625) / 4 = 1.1875
    # explained variance 1 - 1.1875 / 2 = 0.40625
    assert metrics["explained_variance"] == pytest.approx(0.40625)
    loss.backward()
    # clipped tokens: the clamp is saturated, gradient 0; others 0.5 * 2 * (v - R) / 4:
    #   (0, 1): (2 - 4) / 4 = -0.5      (1, 0): (5 - 4) / 4 = 0.25
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -0.5], [0.25, 0.0]]))


def test_value_loss_unclipped_and_masked():
    loss, metrics = value_loss(VALUES, OLD_VALUES, RETURNS, torch.ones(2, 2), clip_eps=None)
    # 0.5 * (1 + 4 + 1 + 1) / 4
    assert loss.item() == pytest.approx(0.875)
    assert metrics["value_clip_frac"] == 0.0
    loss, metrics = value_loss(VALUES, OLD_VALUES, RETURNS, torch.tensor([[1, 0], [1, 1]]), clip_eps=0.5)
    # 0.5 * (2.25 + 1 + 2.25) / 3 tokens
    assert loss.item() == pytest.approx(5.5 / 6)
    assert metrics["value_clip_frac"] == pytest.approx(2 / 3)


def test_value_loss_explained_variance_of_constant_returns_is_zero():
    _, metrics = value_loss(VALUES, OLD_VALUES, torch.full((2, 2), 3.0), torch.ones(2, 2), clip_eps=None)
    assert metrics["explained_variance"] == 0.0
    with pytest.raises(ValueError, match=r"returns and mask must both be \[B, T\]"):
        value_loss(VALUES, OLD_VALUES, torch.zeros(2), torch.ones(2, 2), clip_eps=None)


# --------------------------------------------------- reinforce_pp_advantages


def test_reinforce_pp_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0])
    mask = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0]])
    kl = torch.ones(2, 4)
    # per-token rewards with kl_coef 0.1: row 0 [-0.1, -0.1, -, 0.9], row 1 [-, -0.1, -0.1, -]
    # returns-to-go (gamma 1) over policy tokens: row 0 [0.7, 0.8, -, 0.9], row 1 [-, -0.2, -0.1, -]
    # batch mean (0.7 + 0.8 + 0.9 - 0.2 - 0.1) / 5 = 0.42; deviations 0.28, 0.38, 0.48, -0.62, -0.52;
    # variance (0.0784 + 0.1444 + 0.2304 + 0.3844 + 0.2704) / 5 = 0.2216, std 0.470744
    expected = torch.tensor([[0.594803, 0.807233, 0.0, 1.019662], [0.0, -1.317064, -1.104634, 0.0]])
    torch.testing.assert_close(reinforce_pp_advantages(rewards, mask, kl=kl, kl_coef=0.1), expected)


def test_reinforce_pp_advantages_discount_over_policy_tokens_only():
    # one row, policy tokens 0, 2, 3, reward 1, gamma 0.5: returns-to-go 0.25, 0.5, 1 (token 1 is skipped)
    # mean 7/12; deviations -1/3, -1/12, 5/12; variance (16 + 1 + 25) / 144 / 3 = 7/72, std 0.311805
    advantages = reinforce_pp_advantages(torch.tensor([1.0]), torch.tensor([[1, 0, 1, 1]]), gamma=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[-1.069045, 0.0, -0.267261, 1.336306]]))


# -------------------------------------------------------------- rank credit
