"""The multi-turn episode loop: a policy engine and many environments, stepped in lock-step batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rollout.chat import ChatFormat
from rollout.engines.hf import SamplingParams
from envs.types import RecTask, Trajectory


@dataclass
class _Episode:
    env: object
    group_index: int
    token_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    done: bool = False


def run_episodes(
    engine,
    chat: ChatFormat,
    envs: Sequence[object],
    tasks: Sequence[RecTask],
    params: SamplingParams,
    *,
    group_indices: Sequence[int] | None = None,
    max_context_tokens: int = 2048,
    source: str = "student",
    seed: int | None = None,
) -> list[Trajectory]:
    """Plays one episode per (env, task) pair and returns one Trajectory each, in order.

    Every live episode's turn is generated in one batched call; the env answers; tool or user
    replies are appended with loss-mask 0, the policy's tokens with mask 1 and their log-probs.
    """
    episodes = []
    for index, (env, task) in enumerate(zip(envs, tasks, strict=True)):
        env.reset(options={"task": task})
        prompt = chat.prompt_ids(env.trajectory(source=source).messages)
        group_index = group_indices[index] if group_indices is not None else 0
        episodes.append(_Episode(env, group_index, prompt, [0] * len(prompt), [0.0] * len(prompt)))
    turn = 0
    while live := [e for e in episodes if not e.done]:
        turn_seed = None if seed is None else seed + turn
        generations = engine.generate([e.token_ids for e in live], params, seed=turn_seed)
        turn += 1
        for episode, generation in zip(live, generations):
            ids = list(generation.token_ids)
            if not generation.finished:  # close the turn so the next message starts cleanly
                ids.append(chat.end_of_turn_id)
            episode.token_ids += ids
            episode.loss_mask += [1] * len(generation.token_ids) + [0] * (len(ids) - len(generation.token_ids))
            episode.logprobs += generation.logprobs + [0.0] * (len(ids) - len(generation.token_ids))
            text = chat.tokenizer.decode(generation.token_ids, skip_special_tokens=True)
            observation, _, terminated, truncated, _ = episode.env.step(text)
            if terminated or truncated:
                episode.done = True
                continue
            obs_ids = chat.observation_ids(observation)
            if len(episode.token_ids) + len(obs_ids) + params.max_new_tokens > max_context_tokens:
                episode.env.end_episode("context limit reached")
                episode.done = True
                continue
            episode.token_ids += obs_ids
            episode.loss_mask += [0] * len(obs_ids)
            episode.logprobs += [0.0] * len(obs_ids)
    trajectories = []
    for episode in episodes:
        trajectory = episode.env.trajectory(source=source, group_index=episode.group_index)
        trajectory.token_ids = episode.token_ids
        trajectory.loss_mask = episode.loss_mask
        trajectory.logprobs = episode.logprobs
        trajectories.append(trajectory)
    return trajectories
