"""The one episode loop: any Agent plays many environments through ``reset``/``step``, in lock-step.

Every live episode's turn is produced in one batched ``Agent.act`` call; the env answers; the loop
records each turn with its token span. Agent tokens keep the agent's loss mask and log-probs;
environment text is tokenized by the agent (``Agent.encode_observation``) with loss mask 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from envs.types import Task, Trajectory, Turn
from rollout.engines.base import derive_seed


@dataclass(frozen=True)
class EpisodeRequest:
    """One episode to play: the task, its group (samples of one prompt share it) and its seed."""

    task: Task
    group_id: str = ""
    seed: int = 0


@dataclass
class AgentTurn:
    """What an agent said in one turn. Token lists are empty for agents without a tokenizer;
    otherwise ``loss_mask`` is 1 on tokens the agent sampled (and is trained on). ``role`` names
    who spoke when an agent speaks through several (None: the agent's own role)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    role: str | None = None


@dataclass
class Episode:
    """A running episode as an agent sees it: its request, the trajectory so far, and every info
    dict the env returned (reset first)."""

    request: EpisodeRequest
    trajectory: Trajectory
    infos: list[dict[str, Any]]

    @property
    def task(self) -> Task:
        return self.request.task

    @property
    def seed(self) -> int:
        """The seed of the turn to be played: distinct per request and per turn."""
        return derive_seed(self.request.seed, len(self.infos) - 1)


class Agent(Protocol):
    """Anything that plays episodes: a policy behind an engine, or a teacher system."""

    role: str
    """Recorded as the role of its turns."""

    def encode_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of the opening messages, ready for the agent's first turn ([] without a tokenizer)."""
        ...

    def encode_observation(self, text: str) -> list[int]:
        """Token ids of an env reply, handing the turn back to the agent ([] without a tokenizer)."""
        ...

    def act(self, episodes: Sequence[Episode]) -> list[AgentTurn]:
        """One turn for every episode, in order."""
        ...


class TextAgent(ABC):
    """An Agent without a model: it writes each episode's turn as text (``turn``), so its episodes
    carry no tokens. Rule-based teachers, baselines and LLM teacher systems subclass it.

    ``concurrency`` > 1 plays that many episodes' turns at once in threads: an LLM system's calls
    then reach its backend together (and are batched there). A system whose roles take turns (an
    alpha-UMi planner, then its caller) returns each turn as an ``AgentTurn`` naming its ``role``."""

    role = "text"
    concurrency = 1

    def encode_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return []

    def encode_observation(self, text: str) -> list[int]:
        return []

    def act(self, episodes: Sequence[Episode]) -> list[AgentTurn]:
        if self.concurrency <= 1 or len(episodes) <= 1:
            turns = [self.turn(episode) for episode in episodes]
        else:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                turns = list(pool.map(self.turn, episodes))
        return [turn if isinstance(turn, AgentTurn) else AgentTurn(text=turn) for turn in turns]

    @abstractmethod
    def turn(self, episode: Episode) -> str | AgentTurn:
        """The text of the episode's next turn, or an AgentTurn with its text and the ``role`` that
        wrote it (recorded on the turn instead of the agent's own ``role``)."""


def run_episodes(agent: Agent, envs: Sequence[Any], requests: Sequence[EpisodeRequest], *,
                 source: str) -> list[Trajectory]:
    """Plays one episode per (env, request) pair and returns one Trajectory each, in order.

    Args:
        agent: plays every episode.
        envs: Gymnasium-shaped text environments, one per request.
        requests: tasks with their group ids and seeds; turn ``t`` samples with
            ``derive_seed(request.seed, t)``, so no two turns or episodes share a seed.
        source: recorded on each Trajectory (who played: ``student``, ``teacher:cf_expert``...).
    """
    episodes = []
    for env, request in zip(envs, requests, strict=True):
        prompt, info = env.reset(options={"task": request.task})
        trajectory = Trajectory(task_id=request.task.task_id, env_id=env.env_id, source=source,
                                group_id=request.group_id)
        _append_env_turns(trajectory, agent, [("system", info["system_prompt"]), ("user", prompt)])
        episodes.append((env, Episode(request, trajectory, [info])))
    while live := [(env, episode) for env, episode in episodes if not _done(episode.trajectory)]:
        agent_turns = agent.act([episode for _, episode in live])
        for (env, episode), agent_turn in zip(live, agent_turns, strict=True):
            observation, reward, terminated, truncated, info = env.step(agent_turn.text)
            trajectory = episode.trajectory
            start = len(trajectory.token_ids)
            trajectory.token_ids += agent_turn.token_ids
            trajectory.loss_mask += agent_turn.loss_mask
            trajectory.logprobs += agent_turn.logprobs
            trajectory.turns.append(Turn(agent_turn.role or agent.role, agent_turn.text, start, len(trajectory.token_ids), reward,
                                         info["action"], list(info["errors"])))
            episode.infos.append(info)
            if terminated or truncated:
                trajectory.terminated, trajectory.truncated = terminated, truncated
                trajectory.outcome, trajectory.format_valid = info["outcome"], info["format_valid"]
            else:
                _append_env_turns(trajectory, agent, [(info["observation_role"], observation)])
    return [episode.trajectory for _, episode in episodes]


def _done(trajectory: Trajectory) -> bool:
    return trajectory.terminated or trajectory.truncated


def _append_env_turns(trajectory: Trajectory, agent: Agent, turns: Sequence[tuple[str, str]]) -> None:
    """Environment turns. The opening system and user messages are tokenized together, so their
    tokens form the span of the last of them (the system turn's span is empty)."""
    start = len(trajectory.token_ids)
    if not trajectory.turns:
        ids = agent.encode_prompt([{"role": role, "content": text} for role, text in turns])
    else:
        (_, text), = turns
        ids = agent.encode_observation(text)
    trajectory.token_ids += ids
    trajectory.loss_mask += [0] * len(ids)
    trajectory.logprobs += [0.0] * len(ids)
    for index, (role, text) in enumerate(turns):
        end = len(trajectory.token_ids) if index == len(turns) - 1 else start
        trajectory.turns.append(Turn(role, text, start, end))
        start = end
