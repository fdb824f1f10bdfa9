import math

import pytest
import torch

from rl.algorithms import (
    gae,
    grpo_advantages,
    grpo_loss,
    kl_penalty,
    masked_mean,
    policy_loss,
    token_advantages,
    token_logprobs,
    truncated_importance_weights,
)

# ---------------------------------------------------------------- masked_mean


def test_masked_mean_all_and_per_row():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 0]])
    # (1 + 2 + 5) / 3
    assert masked_mean(values, mask).item() == pytest.approx(8 / 3)
    # row 0: (1 + 2) / 2, row 1: 5 / 1
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([1.5, 5.0]))


def test_masked_mean_empty_mask_is_zero_with_zero_gradient():
    values = torch.tensor([1.0, 2.0], requires_grad=True)
    result = masked_mean(values, torch.zeros(2))
    result.backward()
    assert result.item() == 0.0
    torch.testing.assert_close(values.grad, torch.zeros(2))


def test_masked_mean_ignores_nan_at_masked_positions():
    values = torch.tensor([1.0, float("nan"), 3.0])
    assert masked_mean(values, torch.tensor([1, 0, 1])).item() == pytest.approx(2.0)


# ----------------------------------------------------------- grpo_advantages


def test_grpo_advantages_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    # group 0: mean 2, population std sqrt(((-1)^2 + 0 + 1^2) / 3) = sqrt(2/3) = 0.81650
    # group 1: all equal -> zero advantages
    std = math.sqrt(2 / 3)
    expected = torch.tensor([-1 / std, 0.0, 1 / std, 0.0, 0.0, 0.0])
    group_ids = ["t0", "t0", "t0", "t1", "t1", "t1"]
    torch.testing.assert_close(grpo_advantages(rewards, group_ids, eps=1e-12), expected)
    # the default eps = 1e-6 shifts the result only slightly
    torch.testing.assert_close(grpo_advantages(rewards, group_ids), expected, atol=1e-5, rtol=1e-5)


def test_grpo_advantages_of_interleaved_groups_of_different_sizes():
    # group "a" at positions 0, 2, 5: rewards 1, 4, 1 -> mean 2, centred -1, 2, -1,
    #   population std sqrt((1 + 4 + 1) / 3) = sqrt(2)
    # group "b" at positions 1, 4: rewards 0, 2 -> mean 1, centred -1, 1, std 1
    # group "c" at position 3 alone -> 0
    rewards = torch.tensor([1.0, 0.0, 4.0, 9.0, 2.0, 1.0])
    group_ids = ["a", "b", "a", "c", "b", "a"]
    root2 = math.sqrt(2)
    expected = torch.tensor([-1 / root2, -1.0, 2 / root2, 0.0, 1.0, -1 / root2])
    torch.testing.assert_close(grpo_advantages(rewards, group_ids, eps=1e-12), expected)
    # integer ids in a tensor name the same groups
    as_tensor = torch.tensor([7, 3, 7, 5, 3, 7])
    torch.testing.assert_close(grpo_advantages(rewards, as_tensor, eps=1e-12), expected)


def test_grpo_advantages_without_std_scaling():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    torch.testing.assert_close(
        grpo_advantages(rewards, [0, 1, 0, 1, 0, 1], scale_by_std=False),
        # group 0 (1, 3, 5): mean 3; group 1 (2, 5, 5): mean 4
        torch.tensor([-2.0, -2.0, 0.0, 1.0, 2.0, 1.0]),
    )


def test_grpo_zero_variance_groups_give_zero_advantages():
    rewards = torch.tensor([0.1, 0.1, 0.1, 0.1, -1.0, -1.0, -1.0, -1.0])
    # exactly 0, although the float mean of four 0.1s is not exactly 0.1
    assert torch.equal(grpo_advantages(rewards, [0] * 4 + [1] * 4), torch.zeros(8))
    # a group of one has zero variance too
    torch.testing.assert_close(grpo_advantages(torch.tensor([3.0, 7.0]), ["x", "y"]), torch.zeros(2))


def test_grpo_advantages_bad_inputs():
    with pytest.raises(ValueError, match="5 group ids for 6 rewards"):
        grpo_advantages(torch.zeros(6), [0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="1-D"):
        grpo_advantages(torch.zeros(2, 3), [0, 1])


def test_token_advantages_spread_over_policy_tokens():
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    torch.testing.assert_close(
        token_advantages(torch.tensor([0.5, -2.0]), mask),
        torch.tensor([[0.0, 0.5, 0.5], [-2.0, 0.0, -2.0]]),
    )


# ------------------------------------------------------------ token_logprobs


def test_token_logprobs_by_hand():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    token_ids = torch.tensor([[2, 1]])
    # logsumexp(1, 2, 3) = 3 + log(1 + e^-1 + e^-2) = 3.4076060; 3 - 3.4076060
    # uniform over 3: log(1/3) = -1.0986123
    expected = torch.tensor([[-0.4076060, -1.0986123]])
    torch.testing.assert_close(token_logprobs(logits, token_ids), expected)


def reference_logprobs(logits, token_ids):
    return torch.log_softmax(logits, dim=-1).gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)


def test_token_logprobs_matches_log_softmax_values_and_gradients():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    token_ids = torch.randint(0, 11, (3, 5))
    upstream = torch.randn(3, 5)
    result = token_logprobs(logits, token_ids)
    torch.testing.assert_close(result, reference_logprobs(logits, token_ids))
    (grad,) = torch.autograd.grad((result * upstream).sum(), logits)
    (expected_grad,) = torch.autograd.grad(
        (reference_logprobs(logits, token_ids) * upstream).sum(), logits
    )
    torch.testing.assert_close(grad, expected_grad)


def test_token_logprobs_gradient_by_hand():
    # logits [0, log 3]: softmax [0.25, 0.75]; d logp[id=1] / d logits = onehot - softmax
    logits = torch.tensor([[[0.0, math.log(3.0)]]], requires_grad=True)
    token_logprobs(logits, torch.tensor([[1]])).sum().backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[[-0.25, 0.25]]]))


def test_token_logprobs_gradcheck_float64():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    token_ids = torch.randint(0, 4, (2, 3))
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, token_ids), (logits,))


def test_token_logprobs_bf16_is_computed_in_float32():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7).to(torch.bfloat16).requires_grad_(True)
    token_ids = torch.randint(0, 7, (2, 4))
    result = token_logprobs(logits, token_ids)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, reference_logprobs(logits.float(), token_ids))
    result.sum().backward()
    assert logits.grad.dtype == torch.bfloat16


def test_token_logprobs_shape_mismatch():
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        token_logprobs(torch.zeros(1, 3, 5), torch.zeros(1, 2, dtype=torch.long))


# --------------------------------------------------------------- policy_loss

# Two sequences, two tokens each, ratios [1.5, 0.5] in both; clip_eps = 0.2.
#   seq 0, A = +1: tok 0 min(1.5, 1.2) = 1.2 (clipped)     tok 1 min(0.5, 0.8) = 0.5
#   seq 1, A = -2: tok 0 min(-3, -2.4) = -3                tok 1 min(-1.0, -1.6) = -1.6 (clipped)
# per-token loss (negated): [[-1.2, -0.5], [3.0, 1.6]]
RATIOS = torch.tensor([[1.5, 0.5], [1.5, 0.5]])
ADVANTAGES = torch.tensor([1.0, -2.0])


def make_logps():
    old_logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]])
    logp = (old_logp + RATIOS.log()).clone().requires_grad_(True)
    return logp, old_logp


def test_policy_loss_by_hand_full_mask():
    logp, old_logp = make_logps()
    loss, metrics = policy_loss(logp, old_logp, ADVANTAGES, torch.ones(2, 2), clip_eps=0.2)
    # (-1.2 - 0.5 + 3.0 + 1.6) / 4
    assert loss.item() == pytest.approx(0.725)
    assert metrics["clip_frac"] == pytest.approx(0.5)
    assert metrics["ratio_mean"] == pytest.approx(1.0)


def test_policy_loss_gradient_is_zero_on_clipped_tokens():
    logp, old_logp = make_logps()
    loss, _ = policy_loss(logp, old_logp, ADVANTAGES, torch.ones(2, 2), clip_eps=0.2)
    loss.backward()
    # unclipped token: d/dlogp (-A * ratio) / N = -A * ratio / 4; clipped tokens: 0
    #   (0, 1): -1 * 0.5 / 4 = -0.125      (1, 0): 2 * 1.5 / 4 = 0.75
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.125], [0.75, 0.0]]))


def test_policy_loss_is_a_token_level_mean():
    logp, old_logp = make_logps()
    mask = torch.tensor([[1, 1], [1, 0]])
    loss, metrics = policy_loss(logp, old_logp, ADVANTAGES, mask, clip_eps=0.2)
    # (-1.2 - 0.5 + 3.0) / 3 tokens, not the mean of per-sequence means
    assert loss.item() == pytest.approx(1.3 / 3)
    assert metrics["clip_frac"] == pytest.approx(1 / 3)
    assert metrics["ratio_mean"] == pytest.approx(3.5 / 3)


@pytest.mark.parametrize(
    ("advantage", "ratio", "expected_loss", "clipped"),
    [
        (1.0, 1.5, -1.2, True),  # A > 0: gain capped at 1 + eps
        (1.0, 0.5, -0.5, False),  # A > 0: a falling ratio is not clipped
        (-1.0, 0.5, 0.8, True),  # A < 0: gain capped at 1 - eps
        (-1.0, 1.5, 1.5, False),  # A < 0: a rising ratio is penalised in full
    ],
)
def test_policy_loss_clipping_by_sign(advantage, ratio, expected_loss, clipped):
    logp = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, metrics = policy_loss(
        logp, torch.zeros(1, 1), torch.tensor([advantage]), torch.ones(1, 1), clip_eps=0.2
    )
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss)
    assert metrics["clip_frac"] == (1.0 if clipped else 0.0)
    expected_grad = 0.0 if clipped else -advantage * ratio
    assert logp.grad.item() == pytest.approx(expected_grad)


def test_policy_loss_accepts_per_token_advantages():
    logp, old_logp = make_logps()
    per_token = ADVANTAGES.unsqueeze(-1).expand(2, 2)
    loss_seq, _ = policy_loss(logp, old_logp, ADVANTAGES, torch.ones(2, 2))
    loss_tok, _ = policy_loss(logp, old_logp, per_token, torch.ones(2, 2))
    torch.testing.assert_close(loss_seq, loss_tok)


def test_policy_loss_weights_scale_each_token():
    logp, old_logp = make_logps()
    weights = torch.tensor([[2.0, 1.0], [0.5, 0.0]])
    loss, metrics = policy_loss(logp, old_logp, ADVANTAGES, torch.ones(2, 2), clip_eps=0.2, weights=weights)
    # per-token losses [[-1.2, -0.5], [3.0, 1.6]] times the weights, over 4 tokens:
    # (-2.4 - 0.5 + 1.5 + 0) / 4 = -0.35
    assert loss.item() == pytest.approx(-0.35)
    assert metrics["clip_frac"] == pytest.approx(0.5)  # the weights do not change what is clipped
    loss.backward()
    # unclipped tokens' gradients times their weights: (0, 1): -0.125 * 1, (1, 0): 0.75 * 0.5
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.125], [0.375, 0.0]]))


# Two sequences with 1 and 3 policy tokens, ratio 1 everywhere, A = [2, -1]:
# per-token losses -A * ratio: row 0 [-2], row 1 [1, 1, 1]; the gradient of a token is -A times its weight.
@pytest.mark.parametrize(
    ("loss_agg", "expected_loss", "row0_grad", "row1_grad"),
    [
        # (-2 + 3) / 4 tokens; each token weighs 1/4
        ("token-mean", 0.25, -2 / 4, 1 / 4),
        # row sums -2 and 3 over 2 rows; each token weighs 1/2
        ("seq-mean-token-sum", 0.5, -2 / 2, 1 / 2),
        # row means -2 and 1 over 2 rows; row 0's token weighs 1/2, row 1's tokens 1/6
        ("seq-mean-token-mean", -0.5, -2 / 2, 1 / 6),
    ],
)
def test_policy_loss_aggregation_modes_by_hand(loss_agg, expected_loss, row0_grad, row1_grad):
    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    loss, metrics = policy_loss(logp, torch.zeros(2, 3), torch.tensor([2.0, -1.0]), mask, loss_agg=loss_agg)
    assert loss.item() == pytest.approx(expected_loss)
    assert metrics == {"clip_frac": 0.0, "ratio_mean": 1.0}
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[row0_grad, 0.0, 0.0], [row1_grad] * 3]))


def test_policy_loss_default_aggregation_is_token_mean():
    logp, old_logp = make_logps()
    mask = torch.tensor([[1, 1], [1, 0]])
    default, _ = policy_loss(logp, old_logp, ADVANTAGES, mask)
    token_mean, _ = policy_loss(logp, old_logp, ADVANTAGES, mask, loss_agg="token-mean")
    assert torch.equal(default, token_mean)
    with pytest.raises(ValueError, match="'seq-sum'"):
        policy_loss(logp, old_logp, ADVANTAGES, mask, loss_agg="seq-sum")


def test_truncated_importance_weights_by_hand():
    old_logp = torch.tensor([[-1.0, -2.0, -0.5]])
    sampler_logp = torch.tensor([[-1.0, -1.0, -2.0]])
    # exp(0) = 1, exp(-1) = 0.367879, exp(1.5) = 4.48 capped at 2
    torch.testing.assert_close(
        truncated_importance_weights(old_logp, sampler_logp, cap=2.0),
        torch.tensor([[1.0, 0.367879, 2.0]]),
    )


# ---------------------------------------------------------------- kl_penalty


def test_kl_penalty_by_hand():
    logp = torch.tensor([math.log(0.5), math.log(0.25)])
    ref_logp = torch.tensor([math.log(0.25), math.log(0.5)])
    # log_r = ref - logp = [-log 2, log 2] = [-0.693147, 0.693147]
    torch.testing.assert_close(
        kl_penalty(logp, ref_logp, kind="k1"), torch.tensor([0.693147, -0.693147])
    )
    # 0.5 * 0.693147^2 = 0.240227
    torch.testing.assert_close(
        kl_penalty(logp, ref_logp, kind="k2"), torch.tensor([0.240227, 0.240227])
    )
    # [0.5 + 0.693147 - 1, 2 - 0.693147 - 1]
    torch.testing.assert_close(
        kl_penalty(logp, ref_logp, kind="k3"), torch.tensor([0.193147, 0.306853])
    )
    assert torch.equal(kl_penalty(logp, ref_logp), kl_penalty(logp, ref_logp, kind="k3"))


def test_k3_is_non_negative_and_zero_when_equal():
    torch.manual_seed(0)
    logp, ref_logp = -torch.rand(100) * 5, -torch.rand(100) * 5
    assert (kl_penalty(logp, ref_logp) >= 0).all()
    assert torch.equal(kl_penalty(logp, logp), torch.zeros(100))


def test_kl_penalty_unknown_kind():
    with pytest.raises(ValueError, match="'k4'"):
        kl_penalty(torch.zeros(1), torch.zeros(1), kind="k4")


# ----------------------------------------------------------------- grpo_loss


def test_grpo_loss_by_hand():
    logp, old_logp = make_logps()
    # ref = logp - log 2 on every token: k3 = 0.5 + log 2 - 1 = 0.193147
    ref_logp = logp.detach() - math.log(2)
    loss, metrics = grpo_loss(
        logp, old_logp, ref_logp, ADVANTAGES, torch.ones(2, 2), clip_eps=0.2, kl_coef=0.1
    )
    assert metrics["policy_loss"] == pytest.approx(0.725)
    assert metrics["kl"] == pytest.approx(0.193147, abs=1e-6)
    assert loss.item() == pytest.approx(0.725 + 0.1 * 0.193147, abs=1e-6)
    assert metrics["loss"] == pytest.approx(loss.item())
    assert metrics["clip_frac"] == pytest.approx(0.5)
    loss.backward()
    # policy grads as above, plus kl_coef * d(k3)/dlogp / N = 0.1 * (1 - 0.5) / 4 = 0.0125
    torch.testing.assert_close(
        logp.grad, torch.tensor([[0.0125, -0.1125], [0.7625, 0.0125]])
    )


def test_grpo_loss_with_k1_and_k2_estimators_by_hand():
    # ref = logp - log 2 on every token, so log_r = ref - logp = -log 2
    logp, old_logp = make_logps()
    ref_logp = logp.detach() - math.log(2)
    loss, metrics = grpo_loss(
        logp, old_logp, ref_logp, ADVANTAGES, torch.ones(2, 2), clip_eps=0.2, kl_coef=0.1, kl_estimator="k1"
    )
    # k1 = -log_r = log 2 = 0.693147
    assert metrics["kl"] == pytest.approx(0.693147, abs=1e-6)
    assert loss.item() == pytest.approx(0.725 + 0.1 * 0.693147, abs=1e-6)
    loss.backward()
    # d(k1)/dlogp = 1: policy grads plus 0.1 * 1 / 4 = 0.025
    torch.testing.assert_close(logp.grad, torch.tensor([[0.025, -0.1], [0.775, 0.025]]))

    logp, old_logp = make_logps()
    loss, metrics = grpo_loss(
        logp, old_logp, ref_logp, ADVANTAGES, torch.ones(2, 2), clip_eps=0.2, kl_coef=0.1, kl_estimator="k2"
    )
    # k2 = 0.5 * (log 2)^2 = 0.240227
    assert metrics["kl"] == pytest.approx(0.240227, abs=1e-6)
    assert loss.item() == pytest.approx(0.725 + 0.1 * 0.240227, abs=1e-6)
    loss.backward()
    # d(k2)/dlogp = -log_r = log 2: policy grads plus 0.1 * 0.693147 / 4 = 0.017329
    torch.testing.assert_close(
        logp.grad, torch.tensor([[0.017329, -0.107671], [0.767329, 0.017329]])
    )


@pytest.mark.parametrize(
    ("loss_agg", "policy", "kl"),
    [
        # policy as in test_policy_loss_aggregation_modes_by_hand; k1 tokens [1] and [2, 2, 2]:
        ("token-mean", 0.25, (1 + 2 + 2 + 2) / 4),
        ("seq-mean-token-mean", -0.5, (1 + 2) / 2),
    ],
)
def test_grpo_loss_aggregates_the_kl_term_like_the_policy_term(loss_agg, policy, kl):
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    # k1 = logp - ref = 0 - ref; the -5 sits on a non-policy token
    ref_logp = torch.tensor([[-1.0, -5.0, -5.0], [-2.0, -2.0, -2.0]])
    loss, metrics = grpo_loss(
        torch.zeros(2, 3), torch.zeros(2, 3), ref_logp, torch.tensor([2.0, -1.0]), mask, clip_eps=0.2,
        kl_coef=0.1, loss_agg=loss_agg, kl_estimator="k1",
    )
    assert metrics["policy_loss"] == pytest.approx(policy)
    assert metrics["kl"] == pytest.approx(kl)
    assert loss.item() == pytest.approx(policy + 0.1 * kl)


def test_grpo_loss_weights_the_policy_term_only():
    logp, old_logp = make_logps()
    ref_logp = logp.detach() - math.log(2)
    loss, metrics = grpo_loss(
        logp, old_logp, ref_logp, ADVANTAGES, torch.ones(2, 2), clip_eps=0.2, kl_coef=0.1,
        weights=torch.full((2, 2), 2.0),
    )
    assert metrics["policy_loss"] == pytest.approx(2 * 0.725)
    assert metrics["kl"] == pytest.approx(0.193147, abs=1e-6)
    assert loss.item() == pytest.approx(2 * 0.725 + 0.1 * 0.193147, abs=1e-6)


def test_grpo_loss_without_reference():
    logp, old_logp = make_logps()
    loss, metrics = grpo_loss(
        logp, old_logp, None, ADVANTAGES, torch.ones(2, 2), clip_eps=0.2, kl_coef=0.0
    )
    assert loss.item() == pytest.approx(0.725)
    assert "kl" not in metrics
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(logp, old_logp, None, ADVANTAGES, torch.ones(2, 2), clip_eps=0.2, kl_coef=0.1)


# ----------------------------------------------------------------------- gae


def test_gae_by_hand():
    rewards = torch.tensor([1.0, 0.0, 2.0])
    values = torch.tensor([0.5, 1.0, 0.0])
    # gamma = 0.9, lam = 0.8, gamma * lam = 0.72, V_3 = 0
    # t=2: delta = 2 + 0 - 0 = 2                  A = 2
    # t=1: delta = 0 + 0.9 * 0 - 1.0 = -1          A = -1 + 0.72 * 2 = 0.44
    # t=0: delta = 1 + 0.9 * 1.0 - 0.5 = 1.4       A = 1.4 + 0.72 * 0.44 = 1.7168
    advantages, returns = gae(rewards, values, gamma=0.9, lam=0.8)
    torch.testing.assert_close(advantages, torch.tensor([1.7168, 0.44, 2.0]))
    torch.testing.assert_close(returns, torch.tensor([2.2168, 1.44, 2.0]))


def test_gae_lambda_extremes():
    rewards = torch.tensor([1.0, 0.0, 2.0])
    values = torch.tensor([0.5, 1.0, 0.0])
    # lam = 1: returns are discounted returns [1 + 0.81 * 2, 0.9 * 2, 2]
    _, returns = gae(rewards, values, gamma=0.9, lam=1.0)
    torch.testing.assert_close(returns, torch.tensor([2.62, 1.8, 2.0]))
    # lam = 0: advantages are the one-step TD errors
    advantages, _ = gae(rewards, values, gamma=0.9, lam=0.0)
    torch.testing.assert_close(advantages, torch.tensor([1.4, -1.0, 2.0]))


def test_gae_shape_mismatch():
    with pytest.raises(ValueError, match=r"\[T\]"):
        gae(torch.zeros(3), torch.zeros(2), gamma=1.0, lam=1.0)
