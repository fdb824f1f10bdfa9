"""Credit assignment as pure torch functions: loss aggregation, whitening, per-token rewards, GAE
over policy tokens, the clipped value loss and REINFORCE++ (rank- and turn-level advantages are in
:mod:`rl.credit`).

Conventions of :mod:`rl.algorithms`: ``B`` sequences of ``T`` tokens, ``mask`` 1 on the tokens the
policy produced. Tool outputs and user turns between them (mask 0) are not steps. This module needs
torch alone, so that :mod:`rl.algorithms` can build its losses on :func:`aggregate_loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "LOSS_AGG_MODES", "aggregate_loss", "masked_gae", "reinforce_pp_advantages", "token_rewards", "value_loss",
    "whiten",
]

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean")


def _check_tokens(name: str, values: Tensor, mask: Tensor) -> None:
    if values.dim() != 2 or values.shape != mask.shape:
        raise ValueError(f"{name} and mask must both be [B, T]; got {tuple(values.shape)} and "
                         f"{tuple(mask.shape)}.")


def _divide(total: Tensor, count: Tensor) -> Tensor:
    # Dividing by 1 where the count is 0 keeps both the value and its gradient at 0 (total is 0).
    return total / torch.where(count == 0, torch.ones_like(count), count)


def _masked_mean_var(values: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and population variance of ``values`` over the non-zero positions of ``mask``."""
    mask = mask.to(values.dtype)
    count = mask.sum()
    mean = _divide((values.masked_fill(mask == 0, 0.0) * mask).sum(), count)
    centered = (values - mean).masked_fill(mask == 0, 0.0)
    return mean, _divide((centered**2 * mask).sum(), count)


def aggregate_loss(per_token: Tensor, mask: Tensor, *, mode: str) -> Tensor:
    """Reduces a per-token loss to a scalar over the masked tokens.

    ``"token-mean"`` weighs every policy token of the batch the same (DAPO). ``"seq-mean-token-sum"``
    averages per-sequence sums, so longer sequences weigh more (close to Dr. GRPO, which divides the
    sums by a constant). ``"seq-mean-token-mean"`` averages per-sequence means, so each sequence
    weighs the same (the original GRPO). Sequences without a masked token are left out; an empty
    mask gives 0 with zero gradient. Values off the mask are ignored even if NaN.

    Args:
        per_token: ``[B, T]`` loss of each token.
        mask: ``[B, T]``, 1 on policy tokens (or non-negative token weights).
        mode: One of :data:`LOSS_AGG_MODES`.

    Returns:
        A 0-d tensor, differentiable w.r.t. ``per_token``.

    Raises:
        ValueError: If ``mode`` is unknown or the shapes are not both ``[B, T]``.

    >>> per_token = torch.tensor([[1.0, 0.0, 0.0], [2.0, 4.0, 6.0]])
    >>> mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    >>> [aggregate_loss(per_token, mask, mode=mode).item() for mode in LOSS_AGG_MODES]
    [3.25, 6.5, 2.5]
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"Unknown loss aggregation {mode!r}; choose one of {', '.join(LOSS_AGG_MODES)}.")
    _check_tokens("per_token", per_token, mask)
    mask = mask.to(per_token.dtype)
    kept = per_token.masked_fill(mask == 0, 0.0) * mask
    if mode == "token-mean":
        return _divide(kept.sum(), mask.sum())
    row_total, row_count = kept.sum(dim=1), mask.sum(dim=1)
    if mode == "seq-mean-token-mean":
        row_total = _divide(row_total, row_count)
    return _divide(row_total.sum(), (row_count != 0).sum().to(per_token.dtype))


def whiten(values: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """``(values - mean) / sqrt(var + eps)`` on masked positions, 0 elsewhere.

    The mean and the population variance are taken over masked positions only. For whitening
    rewards, or normalising advantages over a whole batch.

    Args:
        values: Any shape.
        mask: Same shape; 1 where a value counts.
        shift_mean: If False, add the mean back, so only the scale changes.
        eps: Added to the variance.

    Returns:
        Same shape as ``values``.

    Raises:
        ValueError: If the shapes differ.

    >>> whiten(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0]))
    tensor([-1.,  1.,  0.])
    """
    if values.shape != mask.shape:
        raise ValueError(f"values and mask must have one shape; got {tuple(values.shape)} and "
                         f"{tuple(mask.shape)}.")
    mean, var = _masked_mean_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    return (whitened if shift_mean else whitened + mean).masked_fill(mask == 0, 0.0)


def token_rewards(
    rewards: Tensor,
    mask: Tensor,
    *,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    turn_rewards: Tensor | None = None,
    turn_ends: Tensor | None = None,
) -> Tensor:
    """The reward after each policy token: a KL penalty on each, the episode reward on the last.

    Every policy token gets ``-kl_coef * kl``, the last one of row ``b`` also ``rewards[b]``, and
    turn ``k`` adds ``turn_rewards[b, k]`` at its last token ``turn_ends[b, k]``. A row without
    policy tokens has no token to credit and gets nothing.

    Args:
        rewards: ``[B]`` episode rewards.
        mask: ``[B, T]``, 1 on policy tokens.
        kl: Optional ``[B, T]`` per-token KL estimate.
        kl_coef: Weight of the KL penalty.
        turn_rewards: Optional ``[B, K]`` reward after each turn, given with ``turn_ends``.
        turn_ends: ``[B, K]`` index of each turn's last policy token; -1 for no such turn.

    Returns:
        ``[B, T]``, 0 off the mask, without gradient.

    Raises:
        ValueError: On mismatched shapes, or a turn that does not end on a policy token.

    >>> kl = torch.full((1, 4), 0.5)
    >>> token_rewards(torch.tensor([1.0]), torch.tensor([[0, 1, 1, 0]]), kl=kl, kl_coef=0.1)
    tensor([[ 0.0000, -0.0500,  0.9500,  0.0000]])
    """
    if rewards.dim() != 1 or mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(f"Expected rewards [B] and mask [B, T], got {tuple(rewards.shape)} and "
                         f"{tuple(mask.shape)}.")
    if (turn_rewards is None) != (turn_ends is None):
        raise ValueError("Give turn_rewards and turn_ends together (one reward per turn end).")
    dtype = rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()
    policy, length = mask != 0, mask.shape[1]
    result = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    if kl is not None:
        _check_tokens("kl", kl, mask)
        result = torch.where(policy, -kl_coef * kl.detach().to(dtype), result)
    last = torch.where(policy, torch.arange(length, device=mask.device), -1).amax(dim=1)
    episode = torch.where(last >= 0, rewards.detach().to(dtype), 0.0)
    result.scatter_add_(1, last.clamp(min=0).unsqueeze(1), episode.unsqueeze(1))
    if turn_ends is not None:
        if turn_ends.dim() != 2 or len(turn_ends) != len(rewards) or turn_rewards.shape != turn_ends.shape:
            raise ValueError(f"turn_rewards and turn_ends must both be [B, K] with B = {mask.shape[0]}; got "
                             f"{tuple(turn_rewards.shape)} and {tuple(turn_ends.shape)}.")
        turn_ends = turn_ends.long()
        index = turn_ends.clamp(min=0, max=length - 1)
        bad = (turn_ends >= 0) & ((turn_ends >= length) | ~policy.gather(1, index))
        if bad.any():
            row, turn = bad.nonzero()[0].tolist()
            raise ValueError(f"turn_ends[{row}, {turn}] = {turn_ends[row, turn].item()} is not a policy "
                             f"token of row {row}; a turn must end on a token where mask is 1 (-1 for none).")
        result.scatter_add_(1, index, torch.where(turn_ends >= 0, turn_rewards.detach().to(dtype), 0.0))
    return result


def masked_gae(
    token_rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """GAE over the policy tokens of each row, skipping the tokens where ``mask`` is 0.

    Prompt, tool-output, user and padding tokens are not steps: the next value of a policy token
    is the value at the next policy token of its row, 0 after the last (terminal, no bootstrap).
    Equals :func:`rl.algorithms.gae` on each row's policy tokens alone.

    Args:
        token_rewards: ``[B, T]``, e.g. from :func:`token_rewards`; ignored off the mask.
        values: ``[B, T]`` critic values; ignored off the mask.
        mask: ``[B, T]``, 1 on policy tokens.
        gamma: Discount factor per policy token.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, each ``[B, T]``, 0 off the mask, without gradient.

    Raises:
        ValueError: If the shapes are not all ``[B, T]``.

    >>> rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 9.0, 0.5]])
    >>> masked_gae(rewards, values, torch.tensor([[1, 0, 1]]), gamma=1.0, lam=1.0)
    (tensor([[0.5000, 0.0000, 0.5000]]), tensor([[1., 0., 1.]]))
    """
    _check_tokens("token_rewards", token_rewards, mask)
    _check_tokens("values", values, mask)
    rewards, values, policy = token_rewards.detach(), values.detach(), mask != 0
    advantages = torch.zeros_like(values)
    next_value, running = values.new_zeros(values.shape[0]), values.new_zeros(values.shape[0])
    for t in reversed(range(values.shape[1])):
        step = policy[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = torch.where(step, delta + gamma * lam * running, running)
        next_value = torch.where(step, values[:, t], next_value)
        advantages[:, t] = torch.where(step, running, 0.0)
    return advantages, torch.where(policy, advantages + values, 0.0)


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *, clip_eps: float | None
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped value loss, a token-level mean over the masked tokens.

    Per token ``0.5 * max((v - R)**2, (old + clip(v - old, -clip_eps, clip_eps) - R)**2)``, or
    ``0.5 * (v - R)**2`` when ``clip_eps`` is None.

    Args:
        values: ``[B, T]`` current critic values, with gradient.
        old_values: ``[B, T]`` values when the batch was collected.
        returns: ``[B, T]`` targets, e.g. from :func:`masked_gae`.
        mask: ``[B, T]``, 1 on policy tokens.
        clip_eps: How far a value may move from ``old_values`` unclipped; None for no clipping.

    Returns:
        ``(loss, metrics)``: the scalar loss, and as floats ``value_loss``, ``value_clip_frac``
        (fraction of masked tokens whose clipped term is strictly larger, so their gradient is 0)
        and ``explained_variance`` (``1 - Var[R - v] / Var[R]`` over masked tokens; 0 when the
        returns do not vary, where it is undefined).

    Raises:
        ValueError: If the shapes are not all ``[B, T]``.

    >>> values, old_values = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 2.0]])
    >>> value_loss(values, old_values, torch.tensor([[2.0, 4.0]]), torch.ones(1, 2), clip_eps=0.5)[1]
    {'value_loss': 1.5625, 'value_clip_frac': 0.5, 'explained_variance': 0.75}
    """
    for name, tensor in (("values", values), ("old_values", old_values), ("returns", returns)):
        _check_tokens(name, tensor, mask)
    old_values, returns = old_values.detach(), returns.detach()
    per_token = (values - returns) ** 2
    clipped_larger = torch.zeros_like(per_token, dtype=torch.bool)
    if clip_eps is not None:
        clipped = (old_values + torch.clamp(values - old_values, -clip_eps, clip_eps) - returns) ** 2
        clipped_larger = clipped > per_token
        per_token = torch.where(clipped_larger, clipped, per_token)
    loss = 0.5 * aggregate_loss(per_token, mask, mode="token-mean")
    with torch.no_grad():
        _, returns_var = _masked_mean_var(returns, mask)
        _, residual_var = _masked_mean_var(returns - values, mask)
        metrics = {
            "value_loss": loss.item(),
            "value_clip_frac": _masked_mean_var(clipped_larger.to(per_token.dtype), mask)[0].item(),
            "explained_variance": (1.0 - residual_var / returns_var).item() if returns_var > 0 else 0.0,
        }
    return loss, metrics


def reinforce_pp_advantages(
    rewards: Tensor, mask: Tensor, *, kl: Tensor | None = None, kl_coef: float = 0.0, gamma: float = 1.0
) -> Tensor:
    """REINFORCE++ advantages (Hu 2025): discounted return-to-go, normalised over the whole batch.

    Per-token rewards come from :func:`token_rewards` (episode reward on the last policy token,
    ``-kl_coef * kl`` on each); a token's advantage is its discounted return-to-go over the policy
    tokens of its row, whitened over all the batch's policy tokens at once (not per group).

    Args:
        rewards: ``[B]`` episode rewards.
        mask: ``[B, T]``, 1 on policy tokens.
        kl: Optional ``[B, T]`` per-token KL estimate.
        kl_coef: Weight of the KL penalty.
        gamma: Discount factor per policy token.

    Returns:
        ``[B, T]`` advantages, 0 off the mask, without gradient.

    >>> reinforce_pp_advantages(torch.tensor([1.0, 0.0]), torch.tensor([[1, 1], [1, 0]]))
    tensor([[ 0.7071,  0.7071],
            [-1.4142,  0.0000]])
    """
    per_token = token_rewards(rewards, mask, kl=kl, kl_coef=kl_coef)
    # With values 0 and lambda 1, GAE's advantages are the discounted returns-to-go.
    returns, _ = masked_gae(per_token, torch.zeros_like(per_token), mask, gamma=gamma, lam=1.0)
    return whiten(returns, mask)
