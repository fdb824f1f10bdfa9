"""The GRPO driver: reads like a local training loop; workers may be Ray actors or plain objects."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from envs.types import Task, Trajectory
from rewards import score_batch
from rl.algorithms import KL_KINDS, grpo_advantages
from rl.estimators import LOSS_AGG_MODES, masked_gae, reinforce_pp_advantages, token_rewards, whiten
from rl.batch import TokenBatch
from rl.episode_credit import rank_credit, turn_credit
from rollout.actors import broadcast, map_actors
from rollout.agents import POLICY
from rollout.engines.base import SamplingParams, derive_seed
from rollout.episode import EpisodeRequest
from rollout.worker import RolloutWorker


@dataclass(frozen=True)
class GRPOConfig:
    """Group-relative policy optimisation (STAR uses G=8, lr 1e-6, KL 0.001, temperature 0.7)."""

    steps: int = 3
    """Rollout-and-update rounds."""
    tasks_per_step: int = 4
    """Distinct tasks per round."""
    group_size: int = 4
    """Samples per task; advantages are normalised within each group."""
    lr: float = 1e-5
    """AdamW learning rate."""
    kl_coef: float = 0.001
    """Weight of the k3 KL penalty to the reference (the policy GRPO starts from)."""
    clip_eps: float = 0.2
    """PPO ratio clipping."""
    temperature: float = 0.7
    """Sampling temperature of rollouts (and of the learner's log-probs)."""
    max_new_tokens: int = 96
    """Tokens per assistant turn."""
    micro_batch_size: int = 4
    """Episodes per learner forward pass."""
    micro_batch_tokens: int = 0
    """If set, a forward pass also holds at most this many tokens (its episodes padded to the
    longest; a longer episode goes alone), as veRL's dynamic batch size: memory bounded by tokens,
    so long episodes don't take a machine out of memory while short ones still go several at once.
    0: episodes are counted only."""
    mini_batches: int = 1
    """Optimizer steps per epoch over one round's episodes (1: fully on-policy)."""
    epochs: int = 1
    """Passes over one round's episodes."""
    tis_cap: float | None = None
    """Truncated importance sampling: cap of the learner/sampler probability ratio (None: off)."""
    dynamic_sampling_rounds: int = 0
    """DAPO's dynamic sampling: a group whose rewards are all equal (zero advantages) is dropped and
    groups of newly drawn tasks take its place, for at most this many more rollout rounds a step
    (0: off). A step still short of groups then trains on the ones it has."""
    one_step_off_policy: bool = False
    """Roll out round t+1 while the learner updates on round t (with the weights before that update);
    the ratio's denominator is then the engine's behaviour log-probs."""
    scale_by_std: bool = True
    """Divide group-centred rewards by the group std (False: Dr. GRPO)."""
    advantage_estimator: str = "grpo"
    """``grpo`` (group-relative, KL as a loss term), ``reinforce_pp`` (REINFORCE++: the k1 KL to the
    reference is a per-token penalty in the reward, returns are normalised over the whole batch) or
    ``gae`` (PPO: a critic's values and GAE over the policy tokens, the same per-token KL penalty,
    advantages whitened over the batch)."""
    credit: str = "episode"
    """``episode``: every token of an episode shares its advantage; ``turn`` (with ``grpo``): each
    agent turn gets its own, from its return-to-go (the env's rewards of that turn and the later
    ones, weighted by ``reward.weights.env``, and the rest of the episode's reward at its last turn),
    normalised among its group's episodes at the same turn index (GiGPO-style step groups); ``rank``
    (with ``grpo``, Rank-GRPO): the tokens of each item of the final ``<recommend>`` list get their
    position's advantage (the list's DCG from there on, normalised per group and position), the
    other tokens the episode's."""
    gamma: float = 1.0
    """PPO: discount per policy token; turn credit: discount per turn."""
    lam: float = 0.95
    """PPO: GAE lambda."""
    value_clip: float | None = 0.2
    """PPO: how far the critic's value may move from the one it scored unclipped (None: no clipping)."""
    critic_lr: float = 1e-5
    """PPO: the critic's learning rate."""
    loss_agg: str = "token-mean"
    """How the loss averages tokens: ``token-mean`` (DAPO), ``seq-mean-token-sum`` or ``seq-mean-token-mean``."""
    kl_estimator: str = "k3"
    """KL loss term's estimator: ``k1``, ``k2`` or ``k3``."""
    save_every: int = 1
    """Checkpoint every this many rounds (and after the last)."""
    keep_last: int = 2
    """Checkpoints kept (older step folders are deleted)."""

    def __post_init__(self):
        if self.credit != "episode" and self.advantage_estimator != "grpo":
            raise ValueError(f"grpo.credit={self.credit} assigns group-relative advantages: it needs "
                             f"advantage_estimator grpo, not {self.advantage_estimator}")
        for name, value, allowed in (("advantage_estimator", self.advantage_estimator, ADVANTAGE_ESTIMATORS),
                                     ("credit", self.credit, CREDITS),
                                     ("loss_agg", self.loss_agg, LOSS_AGG_MODES),
                                     ("kl_estimator", self.kl_estimator, KL_KINDS)):
            if value not in allowed:
                raise ValueError(f"unknown grpo.{name} '{value}'; use one of {', '.join(allowed)}")
        if self.micro_batch_size < 1 or self.micro_batch_tokens < 0:
            raise ValueError(f"grpo.micro_batch_size must be >= 1 and grpo.micro_batch_tokens >= 0 (0: off), got "
                             f"{self.micro_batch_size} and {self.micro_batch_tokens}")


ADVANTAGE_ESTIMATORS = ("grpo", "reinforce_pp", "gae")
CREDITS = ("episode", "turn", "rank")

STEP_PHASES = ("perf/rollout_seconds", "perf/reference_seconds", "perf/critic_seconds", "perf/update_seconds",
               "perf/weight_sync_seconds", "perf/checkpoint_seconds")
"""The parts of ``perf/step_seconds`` each round logs (see ``train_grpo``)."""

DATA_ORDER_KEYS = ("seed", "tasks_per_step", "group_size", "tasks")
"""Trainer-state fields that decide which tasks and seeds each step draws: resuming needs them unchanged."""


def train_grpo(*, learner, reference, workers: Sequence, tasks: Sequence[Task], config: GRPOConfig,
               reward_weights: Mapping[str, float], seed: int, checkpoint_root: str | Path,
               trainer_state: dict, log: Callable[[dict, int], None] | None = None,
               start_step: int = 0, critic=None, tokenizer=None,
               batch_rewards: Mapping[str, Callable] | None = None) -> list[dict[str, float]]:
    """Runs GRPO (or REINFORCE++, or PPO) rounds ``start_step + 1 .. config.steps`` and returns each
    round's metrics.

    Each round: sample tasks, roll out a group per task on the workers, score, compute
    group-relative advantages, get the reference's log-probs, update the learner, push the new
    weights to every worker, checkpoint, log. ``learner`` is a Learner (or LearnerGroup),
    ``reference`` a ReferenceModel and ``workers`` RolloutWorkers, each a plain object or a Ray
    ``Remote``; PPO (``advantage_estimator="gae"``) also needs a ``critic`` (``rl.critic.Critic``),
    which scores the batch before the update and is fitted to its returns after it; Rank-GRPO
    (``credit="rank"``) needs the policy's ``tokenizer`` to find the list's items among the tokens;
    model-based rewards (the learned critic) come as ``batch_rewards`` (``rewards.compose.score_batch``).

    Several named policies train in one run when ``learner`` and ``reference`` are mappings from
    role names (a planner and a caller) to each one's learner and reference: the workers hold one
    engine per role and route each turn to its role's (``rollout.policies``); each policy
    updates on the tokens of its own turns, keeps its checkpoints under ``checkpoint_root/<role>``,
    and logs its metrics prefixed ``<role>/``.

    Checkpoints are ``step-NNNNNN`` folders under ``checkpoint_root`` holding ``trainer_state``
    and the step (the critic's under ``checkpoint_root/critic``, written first); resuming from one
    (learner and workers loaded from it, ``start_step`` its step) draws the same tasks and seeds as
    an uninterrupted run. A Ray worker that dies is restarted and given the weights the others
    hold; the episodes it had are re-run (``rollout/worker_restarts``).

    With ``config.one_step_off_policy`` round t+1 rolls out (in a driver thread) while the learner
    updates on round t; the new weights reach the workers once those rollouts are done, so each
    batch comes from weights at most one update behind the learner's (``rollout/policy_lag``).

    Each round logs where its ``perf/step_seconds`` went, timed in the driver (Ray calls included):
    ``perf/rollout_seconds`` (rolling out and scoring), ``perf/reference_seconds``,
    ``perf/critic_seconds`` (PPO), ``perf/update_seconds``, ``perf/weight_sync_seconds`` and
    ``perf/checkpoint_seconds``; the rest is advantages, batching and metrics. With
    ``config.one_step_off_policy`` the rollouts run beside the reference and the update, so
    ``perf/rollout_seconds`` is only the time the driver waited for them (the part the update did
    not hide; all of round 1's), while ``perf/rollout_tokens_per_s`` still spans their whole run.
    Where both share the cores, the reference and update seconds include that contention.
    """
    if (config.advantage_estimator == "gae") != (critic is not None):
        raise ValueError("advantage_estimator 'gae' (PPO) needs a critic, and only it uses one: "
                         f"got '{config.advantage_estimator}' with critic={critic is not None}")
    if config.credit == "rank" and tokenizer is None:
        raise ValueError("grpo.credit=rank finds the recommended items among the tokens: pass the tokenizer")
    rng = random.Random(seed)
    for _ in range(start_step):
        rng.sample(list(tasks), min(config.tasks_per_step, len(tasks)))
    params = SamplingParams(max_new_tokens=config.max_new_tokens, temperature=config.temperature)
    learners = dict(learner) if isinstance(learner, Mapping) else {POLICY: learner}
    references = dict(reference) if isinstance(reference, Mapping) else {POLICY: reference}
    if critic is not None and len(learners) > 1:
        raise ValueError("PPO's critic serves one policy; train several policies with grpo or reinforce_pp")

    def routed(name: str) -> dict[str, str]:
        """Which of a worker's policies a weight update is for (a worker of one policy has one)."""
        return {} if len(learners) == 1 else {"policy": name}

    synced: dict[str, dict] = {}
    """The weights last pushed to the workers, by policy (none yet: the ones they started with)."""

    def revive(worker) -> None:
        """A restarted worker starts from its first weights: it gets the ones the others hold."""
        for name, state in synced.items():
            worker.update_weights(state, **routed(name))

    def credit(trajectories: list[Trajectory], advantages: torch.Tensor) -> torch.Tensor:
        """Each token's advantage (``[B, T]``): the episode's, or its turn's or list item's (``config.credit``)."""
        if config.credit == "episode":
            return advantages
        width = max(len(t.token_ids) for t in trajectories)  # the token batches' width
        if config.credit == "turn":
            return turn_credit(trajectories, env_weight=reward_weights.get("env", 0.0), gamma=config.gamma,
                               scale_by_std=config.scale_by_std, width=width)
        return rank_credit(trajectories, advantages, tokenizer, scale_by_std=config.scale_by_std, width=width)

    def learn(policy, policy_reference, trajectories: list[Trajectory], rewards: torch.Tensor,
              advantages: torch.Tensor, split: dict[str, float], *, role: str | None) -> dict[str, float]:
        """Scores one policy's tokens of the batch (those of its turns, ``role``; every policy token
        when None) and updates it (and the critic) on them; returns the update's metrics.
        ``advantages`` are per episode (``[B]``) or per token (``[B, T]``)."""
        batch = token_batch(trajectories, advantages, pad_id=policy.pad_token_id(), role=role)
        micro = {"micro_batch_size": config.micro_batch_size, "micro_batch_tokens": config.micro_batch_tokens}
        if role is not None and batch.num_tokens == 0:
            return {"train/idle": 1.0}  # this role played no turn this round: nothing to learn
        if config.kl_coef:
            with timed(split, "perf/reference_seconds"):
                batch = dataclasses.replace(batch, ref_logprobs=policy_reference.logprobs(
                    batch, temperature=config.temperature, **micro))
        kl_coef = config.kl_coef
        if config.advantage_estimator == "reinforce_pp":
            batch, kl_coef = reinforce_pp_batch(batch, rewards, kl_coef=config.kl_coef), 0.0
        if critic is not None:
            with timed(split, "perf/critic_seconds"):
                values = critic.values(batch, **micro)
            (batch, returns), kl_coef = ppo_batch(batch, rewards, values, kl_coef=config.kl_coef,
                                                  gamma=config.gamma, lam=config.lam), 0.0
        with timed(split, "perf/update_seconds"):
            metrics = policy.update(batch, clip_eps=config.clip_eps, kl_coef=kl_coef,
                                    temperature=config.temperature, **micro,
                                    mini_batches=config.mini_batches, epochs=config.epochs,
                                    tis_cap=config.tis_cap, behaviour_logprobs=config.one_step_off_policy,
                                    loss_agg=config.loss_agg, kl_estimator=config.kl_estimator)
        if critic is not None:
            with timed(split, "perf/critic_seconds"):
                metrics.update(critic.update(batch, values, returns, clip_eps=config.value_clip,
                                             **micro,
                                             mini_batches=config.mini_batches, epochs=config.epochs))
        return metrics

    def roll(step: int, batch_tasks: Sequence[Task], first: int) -> list[Trajectory]:
        """A scored group of episodes for each task; ``first`` numbers the step's first of these groups."""
        requests = [EpisodeRequest(task, group_id=f"{step}:{index}:{task.task_id}",
                                   seed=derive_seed(seed, step, index, sample))
                    for index, task in enumerate(batch_tasks, start=first) for sample in range(config.group_size)]
        trajectories = map_actors(workers, RolloutWorker.rollout, requests, params=params, revive=revive)
        score_batch(trajectories, reward_weights, batch_rewards=batch_rewards)
        return trajectories

    def play(step: int) -> tuple[list[Trajectory], list[Trajectory], float]:
        """Round ``step``'s rollouts on the weights the workers hold now: the groups to train on,
        every group sampled, and the seconds it took."""
        began = time.perf_counter()
        count = min(config.tasks_per_step, len(tasks))
        sampled = roll(step, rng.sample(list(tasks), count), 0)
        if not config.dynamic_sampling_rounds:
            return sampled, sampled, time.perf_counter() - began
        kept = informative_groups(sampled)
        refill = random.Random(derive_seed(seed, "refill", step))  # keeps the main draw order resumable
        for _ in range(config.dynamic_sampling_rounds):
            missing = count - len(kept) // config.group_size
            if missing <= 0:
                break
            more = roll(step, refill.sample(list(tasks), missing), len(sampled) // config.group_size)
            sampled += more
            kept += informative_groups(more)
        return kept[: count * config.group_size] or sampled, sampled, time.perf_counter() - began

    history = []
    workers_version = start_step
    """Learner updates the workers' weights include."""
    ahead: tuple[Future, int] | None = None
    """The next round's rollouts, running while the learner updates (one-step off-policy), and the
    weights version they run on."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout") as pool:
        for step in tqdm(range(start_step + 1, config.steps + 1), desc="grpo", unit="step", initial=start_step,
                         total=config.steps):
            started = time.perf_counter()
            split = dict.fromkeys(STEP_PHASES, 0.0)
            with timed(split, "perf/rollout_seconds"):
                if ahead is None:
                    (trajectories, sampled, rollout_seconds), behaviour_version = play(step), workers_version
                else:
                    (trajectories, sampled, rollout_seconds), behaviour_version = ahead[0].result(), ahead[1]
                    ahead = None
            if config.one_step_off_policy and step < config.steps:
                ahead = pool.submit(play, step + 1), workers_version
            rewards = torch.tensor([t.reward for t in trajectories], dtype=torch.float32)
            advantages = grpo_advantages(rewards, [t.group_id for t in trajectories], scale_by_std=config.scale_by_std)
            advantages = credit(trajectories, advantages)  # once a round, for every policy
            metrics = {}
            for name, policy in learners.items():
                learned = learn(policy, references.get(name), trajectories, rewards, advantages, split,
                                role=name if len(learners) > 1 else None)
                metrics.update({f"{name}/{key}" if len(learners) > 1 else key: v for key, v in learned.items()})
            if ahead is not None:
                with timed(split, "perf/rollout_seconds"):
                    wait([ahead[0]])  # the rollouts ahead finish on the weights they started with
            with timed(split, "perf/weight_sync_seconds"):
                for name, policy in learners.items():
                    synced[name] = policy.trainable_state()
                    workers = broadcast(workers, RolloutWorker.update_weights, synced[name], restart=True,
                                        **routed(name))
            workers_version = step
            if step % config.save_every == 0 or step == config.steps:
                with timed(split, "perf/checkpoint_seconds"):
                    if critic is not None:  # first: a step counts as saved once the learner's folder is there
                        critic.save_checkpoint(critic_root(checkpoint_root), step, trainer_state,
                                               keep_last=config.keep_last)
                    for name, policy in learners.items():
                        policy.save_checkpoint(policy_root(checkpoint_root, name, len(learners)), step,
                                               trainer_state, keep_last=config.keep_last)
            metrics.update(split)
            metrics.update(episode_metrics(sampled))
            # Groups whose samples all scored the same teach nothing but the KL term.
            metrics["rollout/uniform_group_frac"] = uniform_group_fraction(sampled)
            metrics["rollout/groups_sampled"] = float(len(sampled) // config.group_size)
            metrics["rollout/groups_trained"] = float(len(trajectories) // config.group_size)
            # Updates the learner had made that the rollouts' weights lacked (0 on-policy, at most 1 ahead).
            metrics["rollout/policy_lag"] = float(step - 1 - behaviour_version)
            metrics["rollout/worker_restarts"] = float(sum(getattr(w, "restarts", 0) for w in workers))
            policy_tokens = sum(sum(t.loss_mask) for t in sampled)
            metrics["perf/rollout_tokens_per_s"] = policy_tokens / max(rollout_seconds, 1e-9)
            metrics["perf/step_seconds"] = time.perf_counter() - started
            history.append(metrics)
            if log is not None:
                log(metrics, step)
    return history


@contextmanager
def timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    """Adds the wall-clock seconds its block takes to ``seconds[key]``."""
    began = time.perf_counter()
    try:
        yield
    finally:
        seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - began


def token_batch(trajectories: Sequence[Trajectory], advantages: torch.Tensor, *, pad_id: int,
                role: str | None = None) -> TokenBatch:
    """The learner's tensors: tokens, loss mask, the sampler's log-probs, and each episode's
    advantage spread over its policy tokens (with ``role``, only over the tokens of that role's turns);
    ``advantages`` ``[B]`` per episode, or ``[B, T]`` per token (kept on those tokens only)."""
    masks = [t.loss_mask if role is None else role_mask(t, role) for t in trajectories]
    if advantages.dim() == 2:
        advantages = [[value * kept for value, kept in zip(row, mask)] for row, mask in zip(advantages.tolist(), masks)]
    return TokenBatch.from_sequences([t.token_ids for t in trajectories], masks, pad_id=pad_id,
                                     rollout_logprobs=[t.logprobs for t in trajectories], advantages=advantages)


def role_mask(trajectory: Trajectory, role: str) -> list[int]:
    """``trajectory.loss_mask`` on the tokens of the turns ``role`` played, 0 elsewhere."""
    mask = [0] * len(trajectory.loss_mask)
    for turn in trajectory.turns:
        if turn.role == role:
            mask[turn.start : turn.end] = trajectory.loss_mask[turn.start : turn.end]
    return mask


def policy_root(checkpoint_root: str | Path, name: str, count: int) -> Path:
    """Where a policy keeps its ``step-NNNNNN`` checkpoints: the root itself when it is the only
    one, ``<root>/<name>`` when several policies train in one run."""
    return Path(checkpoint_root) if count == 1 else Path(checkpoint_root) / name


def reinforce_pp_batch(batch: TokenBatch, rewards: torch.Tensor, *, kl_coef: float) -> TokenBatch:
    """The batch with REINFORCE++ advantages: each episode's reward on its last policy token, minus
    ``kl_coef`` times the k1 KL (sampler log-prob minus reference log-prob) on every policy token,
    summed to the end and whitened over the batch. The KL is then in the advantages, not the loss."""
    mask = batch.policy_mask
    kl = sampled_kl(batch)
    advantages = reinforce_pp_advantages(rewards, mask, kl=kl, kl_coef=kl_coef if kl is not None else 0.0)
    return dataclasses.replace(batch, advantages=advantages)


def sampled_kl(batch: TokenBatch) -> torch.Tensor | None:
    """The k1 KL estimate of each policy token to the reference (sampler minus reference
    log-prob), None without reference log-probs."""
    return None if batch.ref_logprobs is None else (batch.rollout_logprobs - batch.ref_logprobs) * batch.policy_mask


def ppo_batch(batch: TokenBatch, rewards: torch.Tensor, values: torch.Tensor, *, kl_coef: float, gamma: float,
              lam: float) -> tuple[TokenBatch, torch.Tensor]:
    """The batch with PPO advantages, and the critic's returns: per-token rewards (the episode's on
    its last policy token, ``-kl_coef`` times the k1 KL to the reference on each), GAE over the
    policy tokens with the critic's ``values``, advantages whitened over the batch."""
    mask = batch.policy_mask
    kl = sampled_kl(batch)
    per_token = token_rewards(rewards, mask, kl=kl, kl_coef=kl_coef if kl is not None else 0.0)
    advantages, returns = masked_gae(per_token, values, mask, gamma=gamma, lam=lam)
    return dataclasses.replace(batch, advantages=whiten(advantages, mask)), returns


def critic_root(checkpoint_root: str | Path) -> Path:
    """Where PPO's critic keeps its ``step-NNNNNN`` checkpoints, beside the policy's."""
    return Path(checkpoint_root) / "critic"


def group_rewards(trajectories: Sequence[Trajectory]) -> dict[str, set[float]]:
    """The distinct rewards of each group."""
    groups: dict[str, set[float]] = {}
    for trajectory in trajectories:
        groups.setdefault(trajectory.group_id, set()).add(trajectory.reward)
    return groups


def informative_groups(trajectories: Sequence[Trajectory]) -> list[Trajectory]:
    """The episodes of every group whose rewards are not all equal (the others have zero advantages),
    in their order."""
    groups = group_rewards(trajectories)
    return [t for t in trajectories if len(groups[t.group_id]) > 1]


def uniform_group_fraction(trajectories: Sequence[Trajectory]) -> float:
    """The fraction of groups whose rewards are all equal (their advantages are all 0)."""
    groups = group_rewards(trajectories)
    return sum(len(rewards) == 1 for rewards in groups.values()) / len(groups)


def episode_metrics(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    """Mean of every reward component (``reward/<name>``) and episode statistics."""
    count = len(trajectories)
    metrics = {"reward/total": sum(t.reward for t in trajectories) / count}
    for name in trajectories[0].rewards:
        metrics[f"reward/{name}"] = sum(t.rewards.get(name, 0.0) for t in trajectories) / count
    metrics["rollout/format_rate"] = sum(t.format_valid for t in trajectories) / count
    metrics["rollout/tool_calls"] = sum(t.num_tool_calls for t in trajectories) / count
    metrics["rollout/tokens"] = sum(len(t.token_ids) for t in trajectories) / count
    return metrics
