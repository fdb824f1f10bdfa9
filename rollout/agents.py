"""The student as an Agent: an Engine behind a chat format; several, each playing its turns."""

from __future__ import annotations

from collections.abc import Sequence

from rollout.chat import ChatFormat
from rollout.engines.base import Engine, SamplingParams
from rollout.episode import AgentTurn, Episode
from rollout.routing import Router, turn_order

POLICY = "policy"
"""The role of a run's policy when it trains one."""


class PolicyAgent:
    """Samples each turn from an engine, token-in/token-out: the context is the episode's token ids,
    and the policy's own tokens are never re-tokenized.

    Args:
        engine: generates from token ids.
        chat: the policy's chat format (tokenizes prompts and env replies, decodes actions).
        params: sampling parameters of every turn.
        role: the role recorded on its turns.
    """

    def __init__(self, engine: Engine, chat: ChatFormat, params: SamplingParams, *, role: str = POLICY):
        self.engine = engine
        self.chat = chat
        self.params = params
        self.role = role

    def encode_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.chat.prompt_ids(messages)

    def encode_observation(self, text: str) -> list[int]:
        return self.chat.observation_ids(text)

    def act(self, episodes: Sequence[Episode]) -> list[AgentTurn]:
        generations = self.engine.generate([e.trajectory.token_ids for e in episodes], self.params,
                                           seeds=[e.seed for e in episodes])
        turns = []
        for generation in generations:
            sampled = list(generation.token_ids)
            # A turn cut by the token limit is closed so the next message starts cleanly (not trained on).
            closing = [self.chat.end_of_turn_id] if generation.finish_reason == "length" else []
            turns.append(AgentTurn(
                text=self.chat.tokenizer.decode(sampled, skip_special_tokens=True),
                token_ids=sampled + closing,
                loss_mask=[1] * len(sampled) + [0] * len(closing),
                logprobs=list(generation.logprobs) + [0.0] * len(closing),
            ))
        return turns


class RoutedAgent:
    """Several policies playing each episode in turns (alpha-UMi's planner, caller and summarizer, a
    MACRec manager then analyst): ``route`` names the role of each turn from the turns so far
    (``rollout.routing``; by default turn k is played by ``agents[min(k, len(agents) - 1)]``), and
    each turn records its player's role. The agents share one chat format (the same tokenizer).

    Args:
        agents: the policies, in the order they first play.
        route: picks the next turn's role (``rollout.routing.Router``).
    """

    def __init__(self, agents: Sequence[PolicyAgent], *, route: Router = turn_order):
        if not agents:
            raise ValueError("a routed agent needs at least one agent")
        self.agents = list(agents)
        self.by_role = {agent.role: agent for agent in self.agents}
        self.route = route
        self.role = "+".join(agent.role for agent in self.agents)

    def encode_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return self.agents[0].encode_prompt(messages)

    def encode_observation(self, text: str) -> list[int]:
        return self.agents[0].encode_observation(text)

    def player(self, episode: Episode) -> PolicyAgent:
        """The agent whose turn it is in ``episode``."""
        return self.by_role[self.route(episode.trajectory.turns, list(self.by_role))]

    def act(self, episodes: Sequence[Episode]) -> list[AgentTurn]:
        turns: list[AgentTurn | None] = [None] * len(episodes)
        for agent in self.agents:  # each engine generates once, for every episode it plays now
            mine = [index for index, episode in enumerate(episodes) if self.player(episode) is agent]
            if mine:
                for index, turn in zip(mine, agent.act([episodes[i] for i in mine])):
                    turn.role = agent.role
                    turns[index] = turn
        return turns
