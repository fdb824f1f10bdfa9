"""RL algorithm maths as pure torch functions: advantages, log-probs, losses, KL, GAE.

Tensors in, tensors out; no state, no config objects. Shapes use ``B`` (sequences), ``T``
(tokens per sequence) and ``V`` (vocabulary). ``mask`` is 1 on tokens the policy produced
(``Trajectory.loss_mask``) and 0 on prompt, tool-output and padding tokens.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

from rl.estimators import aggregate_loss

__all__ = [
    "gae",
    "grpo_advantages",
    "grpo_loss",
    "kl_penalty",
    "masked_mean",
    "policy_loss",
    "token_advantages",
    "token_logprobs",
    "truncated_importance_weights",
]

KL_KINDS = ("k1", "k2", "k3")


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over positions where ``mask`` is non-zero.

    Values at masked-out positions are ignored even if they are NaN or infinite. Where the
    mask sums to 0 the result is 0 (not NaN), and so is its gradient.

    Args:
        values: Any shape.
        mask: Same shape as ``values``; 0/1 or non-negative weights.
        dim: Dimension to reduce; ``None`` reduces everything to a scalar.

    Returns:
        The masked mean, with ``dim`` removed (or a 0-d tensor when ``dim`` is None).

    >>> masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1, 1, 0]))
    tensor(1.5000)
    >>> masked_mean(torch.tensor([[1.0, 3.0], [5.0, 7.0]]), torch.tensor([[1, 1], [0, 0]]), dim=1)
    tensor([2., 0.])
    """
    mask = mask.to(values.dtype)
    kept = values.masked_fill(mask == 0, 0.0) * mask
    if dim is None:
        total, count = kept.sum(), mask.sum()
    else:
        total, count = kept.sum(dim=dim), mask.sum(dim=dim)
    # Dividing by 1 where the count is 0 keeps both the value and its gradient at 0 (total is 0).
    return total / torch.where(count == 0, torch.ones_like(count), count)


def grpo_advantages(
    rewards: Tensor,
    group_ids: Sequence[Hashable] | Tensor,
    *,
    eps: float = 1e-6,
    scale_by_std: bool = True,
) -> Tensor:
    """Group-relative advantages (GRPO): each reward minus its group's mean, over its group's std.

    A group is the samples of one task: ``group_ids[i]`` names the group of ``rewards[i]`` (a task
    id, or an int). Samples of a group may sit anywhere in the batch, in any order. The std is the
    population std (divide by the group's size), so a group of one is well defined (advantage 0).
    TRL uses the unbiased std; for a group of G this only rescales advantages by
    ``sqrt((G - 1) / G)``. A group whose rewards are all equal gets exactly zero advantages.

    Args:
        rewards: Shape ``[B]``, one scalar reward per sample.
        group_ids: ``B`` hashables (a sequence) or a 1-D integer tensor: the group of each sample.
        eps: Added to the std to avoid dividing by 0.
        scale_by_std: If False (Dr. GRPO), return ``r - mean`` without dividing by the std.

    Returns:
        Advantages, shape ``[B]``, same dtype as ``rewards``; no gradient flows through them.

    Raises:
        ValueError: If ``rewards`` is not 1-D or ``group_ids`` does not hold one id per reward.

    >>> grpo_advantages(torch.tensor([1.0, 2.0, 0.0, 2.0]), ["a", "b", "a", "b"])
    tensor([ 1.0000,  0.0000, -1.0000,  0.0000])
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}.")
    keys = group_ids.tolist() if isinstance(group_ids, Tensor) else list(group_ids)
    if len(keys) != rewards.numel():
        raise ValueError(f"got {len(keys)} group ids for {rewards.numel()} rewards; give one id per sample.")
    numbering: dict[Hashable, int] = {}
    index = torch.tensor([numbering.setdefault(key, len(numbering)) for key in keys], dtype=torch.long,
                         device=rewards.device)
    rewards = rewards.detach()
    per_group = lambda values: rewards.new_zeros(len(numbering)).index_add_(0, index, values)  # noqa: E731
    sizes = per_group(torch.ones_like(rewards))
    centered = rewards - (per_group(rewards) / sizes)[index]
    if scale_by_std:
        std = (per_group(centered**2) / sizes).sqrt()
        centered = centered / (std[index] + eps)
    # A float mean of equal rewards can miss them by an ulp, which the std would then blow up.
    highest = rewards.new_zeros(len(numbering)).scatter_reduce(0, index, rewards, "amax", include_self=False)
    lowest = rewards.new_zeros(len(numbering)).scatter_reduce(0, index, rewards, "amin", include_self=False)
    return torch.where((highest == lowest)[index], torch.zeros_like(centered), centered)


def token_advantages(advantages: Tensor, mask: Tensor) -> Tensor:
    """Spreads one advantage per sequence over that sequence's policy tokens.

    Args:
        advantages: ``[B]``.
        mask: ``[B, T]``, 1 on policy tokens.

    Returns:
        ``[B, T]`` float: ``advantages[b]`` where ``mask[b, t]`` is non-zero, else 0.

    >>> token_advantages(torch.tensor([2.0, -1.0]), torch.tensor([[0, 1, 1], [1, 0, 0]]))
    tensor([[ 0.,  2.,  2.],
            [-1.,  0.,  0.]])
    """
    advantages = advantages.detach().unsqueeze(-1)
    return torch.where(mask != 0, advantages, torch.zeros_like(advantages))


def token_logprobs(logits: Tensor, token_ids: Tensor) -> Tensor:
    """Log-probability of each token id under ``logits``: ``log_softmax(logits)[..., id]``.

    The caller aligns the two (logits at position t predict token t + 1). To save memory this
    never materialises a ``[B, T, V]`` log-softmax: it subtracts a per-position ``logsumexp``
    from the chosen logits, one sequence at a time in float32 (so bf16 logits stay accurate),
    and its backward recomputes the softmax row by row from the saved logits instead of
    keeping float32 copies alive.

    Args:
        logits: Shape ``[B, T, V]``.
        token_ids: Shape ``[B, T]``, integer ids in ``[0, V)``.

    Returns:
        Shape ``[B, T]`` in float32 (float64 for float64 logits), differentiable w.r.t.
        ``logits`` (first-order gradients only).

    Raises:
        ValueError: If the shapes do not line up.

    >>> logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]]])
    >>> token_logprobs(logits, torch.tensor([[1, 0]])).exp()
    tensor([[0.5000, 0.8808]])
    """
    if logits.dim() != 3 or token_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"Expected logits [B, T, V] and token_ids [B, T], got {tuple(logits.shape)} "
            f"and {tuple(token_ids.shape)}."
        )
    return _TokenLogprobs.apply(logits, token_ids.long())


class _TokenLogprobs(torch.autograd.Function):
    """``token_logprobs`` with a row-by-row backward: d logp / d logits = onehot - softmax."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, token_ids: Tensor) -> Tensor:
        compute_dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        logsumexp = torch.empty(token_ids.shape, dtype=compute_dtype, device=logits.device)
        chosen = logits.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1).to(compute_dtype)
        for row in range(logits.shape[0]):
            logsumexp[row] = torch.logsumexp(logits[row].to(compute_dtype), dim=-1)
        ctx.save_for_backward(logits, token_ids, logsumexp)
        return chosen - logsumexp

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        logits, token_ids, logsumexp = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        for row in range(logits.shape[0]):
            row_grad = grad_output[row].unsqueeze(-1)
            probs = torch.exp(logits[row].to(logsumexp.dtype) - logsumexp[row].unsqueeze(-1))
            grad = (-row_grad * probs).scatter_add_(-1, token_ids[row].unsqueeze(-1), row_grad)
            grad_logits[row] = grad.to(logits.dtype)
        return grad_logits, None


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float = 0.2,
    weights: Tensor | None = None,
    loss_agg: str = "token-mean",
) -> tuple[Tensor, dict[str, float]]:
    """PPO/GRPO clipped surrogate loss, averaged over the masked tokens of the batch.

    Per token, with ``ratio = exp(logp - old_logp)``:
    ``loss = -w * min(ratio * A, clip(ratio, 1 - clip_eps, 1 + clip_eps) * A)``, where ``w`` is
    1 unless ``weights`` are given (e.g. :func:`truncated_importance_weights`). By default the mean
    is token-level (each policy token in the batch weighs the same, as in DAPO), not a mean of
    per-sequence means; ``loss_agg`` picks another (:func:`rl.estimators.aggregate_loss`).
    ``weights`` scale tokens, they do not change the divisor.

    Args:
        logp: Current policy log-probs, ``[B, T]``, with gradient.
        old_logp: Log-probs from the policy that sampled the tokens, ``[B, T]`` (detached here).
        advantages: ``[B]`` (one per sequence, broadcast over tokens) or ``[B, T]``.
        mask: ``[B, T]``, 1 on policy tokens.
        clip_eps: Clip range epsilon.
        weights: Optional ``[B, T]`` per-token weights of the surrogate (detached here).
        loss_agg: How tokens are averaged: one of :data:`rl.estimators.LOSS_AGG_MODES`. The
            metrics are token-level means whatever it is.

    Returns:
        ``(loss, metrics)``: the scalar loss, and ``clip_frac`` (fraction of masked tokens
        whose gradient is zeroed by clipping: ratio above ``1 + eps`` with A > 0 or below
        ``1 - eps`` with A < 0) and ``ratio_mean`` (masked mean ratio) as floats.

    Raises:
        ValueError: If ``loss_agg`` is unknown.

    >>> loss, metrics = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([2.0]),
    ...                             torch.ones(1, 2))
    >>> loss, metrics["ratio_mean"]
    (tensor(-2.), 1.0)
    """
    old_logp = old_logp.detach()
    advantages = advantages.detach()
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    if weights is not None:
        per_token = per_token * weights.detach()
    loss = aggregate_loss(per_token, mask, mode=loss_agg)
    with torch.no_grad():
        is_clipped = ((ratio > 1.0 + clip_eps) & (advantages > 0)) | (
            (ratio < 1.0 - clip_eps) & (advantages < 0)
        )
        metrics = {
            "clip_frac": masked_mean(is_clipped.to(ratio.dtype), mask).item(),
            "ratio_mean": masked_mean(ratio, mask).item(),
        }
    return loss, metrics


def truncated_importance_weights(old_logp: Tensor, sampler_logp: Tensor, *, cap: float) -> Tensor:
    """Truncated importance sampling (TIS) weights for tokens drawn by a different sampler.

    The learner's log-probs of the sampled tokens (``old_logp``) differ from the sampler's
    (``sampler_logp``) when the two compute differently (a bf16 vLLM engine, other kernels), so
    the samples are slightly off-policy. Weighting each token's policy gradient by
    ``min(exp(old_logp - sampler_logp), cap)`` corrects for it with bounded variance (Yao et al.
    2025, "Your efficient RL framework secretly brings you off-policy RL training").

    Args:
        old_logp: Learner log-probs before the update, any shape.
        sampler_logp: The sampler's log-probs of the same tokens, same shape.
        cap: Upper bound of a weight (e.g. 2).

    Returns:
        Weights, same shape, without gradient.

    >>> old_logp, sampler_logp = torch.tensor([0.0, 0.0, -1.0]), torch.tensor([0.0, -1.0, 0.0])
    >>> truncated_importance_weights(old_logp, sampler_logp, cap=2.0)
    tensor([1.0000, 2.0000, 0.3679])
    """
    return torch.clamp(torch.exp(old_logp.detach() - sampler_logp.detach()), max=cap)


def kl_penalty(logp: Tensor, ref_logp: Tensor, *, kind: str = "k3") -> Tensor:
    """Per-token estimate of KL(policy || reference) from sampled-token log-probs.

    With ``log_r = ref_logp - logp`` (Schulman's estimators, "Approximating KL Divergence"):
    ``k1 = -log_r`` (unbiased, can be negative), ``k2 = log_r**2 / 2``,
    ``k3 = exp(log_r) - log_r - 1`` (unbiased, always >= 0, the GRPO default).

    Args:
        logp: Policy log-probs, any shape.
        ref_logp: Reference-model log-probs, same shape.
        kind: ``"k1"``, ``"k2"`` or ``"k3"``.

    Returns:
        The per-token penalty, same shape as ``logp``.

    Raises:
        ValueError: If ``kind`` is unknown.

    >>> kl_penalty(torch.tensor([0.0]), torch.tensor([0.0]))
    tensor([0.])
    """
    log_ratio = ref_logp - logp
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"Unknown KL estimator {kind!r}; choose one of {', '.join(KL_KINDS)}.")


def grpo_loss(
    logp: Tensor,
    old_logp: Tensor,
    ref_logp: Tensor | None,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps: float,
    kl_coef: float,
    weights: Tensor | None = None,
    loss_agg: str = "token-mean",
    kl_estimator: str = "k3",
) -> tuple[Tensor, dict[str, float]]:
    """GRPO loss: clipped surrogate plus ``kl_coef`` times the masked mean KL to the reference.

    Args:
        logp: Current policy log-probs, ``[B, T]``.
        old_logp: Sampling-policy log-probs, ``[B, T]``.
        ref_logp: Reference-model log-probs, ``[B, T]``; may be None only when ``kl_coef == 0``
            (no reference model, as in DAPO / Dr. GRPO).
        advantages: ``[B]`` or ``[B, T]``, e.g. from :func:`grpo_advantages`.
        mask: ``[B, T]``, 1 on policy tokens.
        clip_eps: Clip range epsilon.
        kl_coef: Weight of the KL term.
        weights: Optional ``[B, T]`` per-token weights of the surrogate term only (see
            :func:`policy_loss`); the KL term is not weighted.
        loss_agg: How tokens are averaged, in both terms: one of
            :data:`rl.estimators.LOSS_AGG_MODES` (see :func:`rl.estimators.aggregate_loss`).
        kl_estimator: Per-token KL estimator, ``"k1"``, ``"k2"`` or ``"k3"`` (see :func:`kl_penalty`).

    Returns:
        ``(loss, metrics)`` with metrics ``loss``, ``policy_loss``, ``clip_frac``,
        ``ratio_mean`` and, when ``ref_logp`` is given, ``kl`` (the KL term before ``kl_coef``).

    Raises:
        ValueError: If ``ref_logp`` is None while ``kl_coef != 0``, if ``loss_agg`` is unknown,
            or if ``kl_estimator`` is unknown while ``ref_logp`` is given.
    """
    loss, metrics = policy_loss(logp, old_logp, advantages, mask, clip_eps=clip_eps, weights=weights,
                                loss_agg=loss_agg)
    metrics["policy_loss"] = loss.item()
    if ref_logp is None:
        if kl_coef != 0:
            raise ValueError(f"kl_coef is {kl_coef} but no reference log-probs were given.")
    else:
        kl = aggregate_loss(kl_penalty(logp, ref_logp.detach(), kind=kl_estimator), mask, mode=loss_agg)
        loss = loss + kl_coef * kl
        metrics["kl"] = kl.item()
    metrics["loss"] = loss.item()
    return loss, metrics


def gae(
    rewards: Tensor,
    values: Tensor,
    *,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation for one trajectory that ends after its last step.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V_T = 0`` (terminal, no bootstrap), and
    ``A_t = delta_t + gamma * lam * A_{t+1}``; returns are ``A_t + V_t``.

    Args:
        rewards: ``[T]``, reward after each step.
        values: ``[T]``, critic value of each step's state (detached here).
        gamma: Discount factor.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, each ``[T]``, without gradient.

    Raises:
        ValueError: If the inputs are not 1-D tensors of the same length.

    >>> gae(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5]), gamma=1.0, lam=1.0)
    (tensor([0.5000, 0.5000]), tensor([1., 1.]))
    """
    if rewards.dim() != 1 or rewards.shape != values.shape:
        raise ValueError(
            f"rewards and values must both be [T]; got {tuple(rewards.shape)} "
            f"and {tuple(values.shape)}."
        )
    rewards, values = rewards.detach(), values.detach()
    advantages = torch.zeros_like(values)
    next_value = torch.zeros((), dtype=values.dtype, device=values.device)
    running = torch.zeros((), dtype=values.dtype, device=values.device)
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values
