"""Our multi-turn episode loop as a veRL agent loop, registered as ``recrl_episode``.

Each dataset row (``agent_name: recrl_episode``) is one episode of our environment, played by
``rollout.episode.run_episodes``, the loop our own rollout workers use, with veRL's LLM server as
the policy's engine: the env writes the prompt, answers every tool call and ends the episode;
token-in/token-out, the policy's tokens are never re-tokenized and the env's replies are
tokenized by ``rollout.chat.ChatFormat``. The episode is scored here with our reward weights
(``rewards.compose.score``), so veRL's reward manager is not called for it; each reward's value is
logged as ``reward/<name>``.

veRL runs agent loops as coroutines; ``run_episodes`` is plain code, so each episode runs in a
thread of its own and the engine hands each generation back to the event loop.

Imported only where veRL is installed (``.venv-verl``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import (AgentLoopBase, AgentLoopMetrics, AgentLoopOutput,
                                                     _agent_loop_registry, register)

from envs.types import Trajectory
from launch.verl_export import AGENT_NAME
from launch.verl_export.bundle import load_bundle
from rewards.compose import score
from rollout.agents import PolicyAgent
from rollout.chat import ChatFormat
from rollout.engines.base import Generation, SamplingParams
from rollout.episode import EpisodeRequest, run_episodes

EPISODE_THREADS = 512
"""Episodes in flight per agent-loop worker. Their threads mostly wait on the LLM server; a pool of
their own keeps them from starving the event loop's default executor, which veRL also uses."""

_episode_pool: ThreadPoolExecutor | None = None


def episode_pool() -> ThreadPoolExecutor:
    global _episode_pool
    if _episode_pool is None:
        _episode_pool = ThreadPoolExecutor(max_workers=EPISODE_THREADS, thread_name_prefix="recrl-episode")
    return _episode_pool


class ServerEngine:
    """Our ``Engine`` over veRL's LLM server, called from an episode's thread.

    Sampling is veRL's (``sampling_params``: its temperature, top-p, validation settings); the turn's
    length is ours (``SamplingParams.max_new_tokens``), and a turn ends at the chat format's end of
    turn. One request id per episode lets the server keep its turns on one replica (prefix cache).
    """

    def __init__(self, server_manager: Any, sampling_params: dict[str, Any], loop: asyncio.AbstractEventLoop,
                 *, stop_token_ids: Sequence[int]):
        self.server_manager = server_manager
        self.sampling_params = dict(sampling_params)
        self.loop = loop
        self.stop_token_ids = list(stop_token_ids)
        self.request_id = uuid4().hex
        self.generate_seconds = 0.0
        self.sampled_logprobs = True

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
                 seeds: Sequence[int] | None = None) -> list[Generation]:
        # veRL samples the n rollouts of a row with one set of parameters: our per-turn seeds would
        # make them identical, so they are not passed.
        started = time.perf_counter()
        sampling = {**self.sampling_params, "max_tokens": params.max_new_tokens,
                    "stop_token_ids": sorted({*self.sampling_params.get("stop_token_ids", []), *self.stop_token_ids})}
        futures = [asyncio.run_coroutine_threadsafe(
            self.server_manager.generate(request_id=self.request_id, prompt_ids=list(prompt),
                                         sampling_params=dict(sampling)), self.loop) for prompt in prompts]
        outputs = [future.result() for future in futures]
        self.generate_seconds += time.perf_counter() - started
        generations = []
        for output in outputs:
            token_ids = list(output.token_ids)
            self.sampled_logprobs = self.sampled_logprobs and output.log_probs is not None
            logprobs = list(output.log_probs) if output.log_probs is not None else [0.0] * len(token_ids)
            stopped = bool(token_ids) and token_ids[-1] in self.stop_token_ids
            generations.append(Generation(token_ids, logprobs, "stop" if stopped else "length"))
        return generations

    def update_weights(self, state) -> None:
        raise NotImplementedError("veRL syncs the server's weights itself")

    def release_memory(self) -> None:
        pass


def register_once(agent_class: type[AgentLoopBase]) -> type[AgentLoopBase]:
    """veRL's ``register``, unless ``agent_loop.yaml`` registered the name first: veRL imports this module
    while instantiating the loop from that entry, which must keep its ``bundle``."""
    if AGENT_NAME not in _agent_loop_registry:
        register(AGENT_NAME)(agent_class)
    return agent_class


@register_once
class RecEpisodeAgentLoop(AgentLoopBase):
    """One episode of our environment per row; the row's ``extra_info`` names its task and split.

    Args:
        bundle: The exported environment bundle (``agent_loop.yaml`` sets it).
        max_new_tokens: Tokens per turn (default: the bundle's, from ``grpo.max_new_tokens``).
        tools: veRL's tool list; unused (the env serves our tools itself).
    """

    def __init__(self, *args: Any, bundle: str | None = None, max_new_tokens: int | None = None,
                 tools: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not bundle:
            raise ValueError(f"agent loop {AGENT_NAME!r} needs its bundle: set "
                             "actor_rollout_ref.rollout.agent.agent_loop_config_path to the agent_loop.yaml "
                             "that `recrl export verl` writes.")
        self.bundle = load_bundle(bundle)
        self.chat = ChatFormat(self.tokenizer)
        self.max_new_tokens = int(max_new_tokens or self.bundle.max_new_tokens)
        self.response_length = self.rollout_config.response_length

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        extra_info = kwargs.get("extra_info") or {}
        if "task_id" not in extra_info:
            raise ValueError(f"a {AGENT_NAME} row needs extra_info.task_id (and split); this one has "
                             f"{sorted(extra_info)}: use the parquet files `recrl export verl` writes.")
        split = str(extra_info.get("split") or "train")
        task = self.bundle.split(split).task(str(extra_info["task_id"]))
        env = self.bundle.make_env(split, count_tokens=self.chat.count_tokens)
        engine = ServerEngine(self.server_manager, sampling_params, asyncio.get_running_loop(),
                              stop_token_ids=[self.chat.end_of_turn_id])
        agent = PolicyAgent(engine, self.chat, SamplingParams(max_new_tokens=self.max_new_tokens))
        started = time.perf_counter()
        trajectory, = await asyncio.get_running_loop().run_in_executor(
            episode_pool(), lambda: run_episodes(agent, [env], [EpisodeRequest(task)], source="verl"))
        elapsed = time.perf_counter() - started
        total, values = score(trajectory, self.bundle.reward_weights)
        return self.output(trajectory, total, values, logprobs=engine.sampled_logprobs,
                           metrics=AgentLoopMetrics(generate_sequences=engine.generate_seconds,
                                                    tool_calls=elapsed - engine.generate_seconds))

    def output(self, trajectory: Trajectory, total: float, values: dict[str, float], *, logprobs: bool,
               metrics: AgentLoopMetrics) -> AgentLoopOutput:
        """veRL's view of an episode: the opening messages are the prompt; everything after is the
        response, its mask 1 on the policy's sampled tokens only, cut at ``response_length``."""
        start = next(turn.start for turn in trajectory.turns if turn.is_agent)
        limit = start + self.response_length
        extra_fields = {"reward_extra_info": {f"reward/{name}": value for name, value in values.items()},
                        "turn_scores": [turn.reward for turn in trajectory.turns if turn.is_agent],
                        "tool_rewards": []}
        return AgentLoopOutput(
            prompt_ids=trajectory.token_ids[:start],
            response_ids=trajectory.token_ids[start:limit],
            response_mask=trajectory.loss_mask[start:limit],
            response_logprobs=trajectory.logprobs[start:limit] if logprobs else None,
            reward_score=total,
            num_turns=len(trajectory.turns),
            metrics=metrics,
            extra_fields=extra_fields,
        )
