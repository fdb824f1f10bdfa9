"""SequentialRec-v0: rank 1 held-out positive among sampled negatives, with tools, in text."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import gymnasium as gym

from envs.config import DEFAULTS
from envs.parsing import RANKING_TAGS, read_ranking
from envs.prompts import system_prompt, task_prompt
from envs.signals.signals import Signal, graph_signals
from envs.tools import InteractionGraph, Toolbox, ToolResult
from envs.turns import (answer_tool_calls, budget_spent, capped, chosen_tools, episode_task, read_action,
                        text_spaces, whitespace_tokens)
from envs.types import Catalog, RankingOutcome, RankingTask, ToolCall

class SequentialRecEnv(gym.Env):
    """A text environment over RankingTasks.

    ``reset`` returns the task prompt; each ``step`` takes the agent's text. Tool calls are answered
    with ``<tool_response>`` blocks (and their values in ``info["tool_results"]``); a ``<recommend>``,
    or a valid call of the ``finish`` tool where it is offered (MACRec's Finish), ends the episode
    with a ``RankingOutcome`` in ``info["outcome"]``. The step reward is rule-based: the reciprocal
    rank of the target on the final turn, 0 before (MACRec's sequential-recommendation reward); the
    reward used for learning is composed later, by ``rewards``. Malformed text is answered with an
    error observation, never an exception.
    """

    metadata = {"render_modes": []}
    task_kind = RankingTask.kind

    def __init__(
        self,
        catalog: Catalog,
        graph: InteractionGraph,
        tasks: Sequence[RankingTask] = (),
        *,
        signals: Mapping[str, Signal] | None = None,
        tool_names: Sequence[str] | None = None,
        max_turns: int = DEFAULTS.max_turns,
        max_episode_tokens: int = DEFAULTS.max_episode_tokens,
        history_in_prompt: int = DEFAULTS.history_in_prompt,
        count_tokens: Callable[[str], int] = whitespace_tokens,
        plan_turns: bool = DEFAULTS.plan_turns,
        env_id: str = DEFAULTS.env_id,
    ):
        self.catalog = catalog
        self.plan_turns = plan_turns
        self.graph = graph
        self.tasks = list(tasks)
        self.max_turns = max_turns
        self.max_episode_tokens = max_episode_tokens
        self.history_in_prompt = history_in_prompt
        self.count_tokens = count_tokens
        self.env_id = env_id
        self.signals = graph_signals(catalog, graph) if signals is None else dict(signals)
        self.tool_specs = chosen_tools(Toolbox(catalog, graph, signals=self.signals).specs, tool_names, env_id=env_id)
        self.system_prompt = system_prompt(self.tool_specs)
        self.observation_space, self.action_space = text_spaces(catalog)
        self._task: RankingTask | None = None

    # Gymnasium API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        task = episode_task(self, options, RankingTask)
        self._task = task
        self._toolbox = Toolbox(self.catalog, self.graph, task=task, signals=self.signals)
        prompt = task_prompt(task, self.catalog, history_in_prompt=self.history_in_prompt)
        self._turns = 0
        self._tokens = self.count_tokens(self.system_prompt) + self.count_tokens(prompt)
        self._format_clean = True
        self._done = False
        return prompt, {"task": task, "system_prompt": self.system_prompt, "tokens": self._tokens}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._task is None or self._done:
            raise RuntimeError("call reset() before step() (the episode is over or never started)")
        self._turns += 1
        text, parsed, errors = read_action(action, tags=RANKING_TAGS, plan_only=self.plan_turns)
        self._tokens += self.count_tokens(text)
        observation, reward, terminated, truncated = "", 0.0, False, False
        tool_results: list[ToolResult] = []
        outcome, format_valid = None, False
        tool_calls = parsed.tool_calls
        if parsed.recommend is None:
            # A valid finish call is recorded as the action's <recommend>, so what reads the
            # action later (credit assignment, logs) sees the same ranking either way.
            parsed.recommend, tool_calls = self._finish_call(tool_calls)
        if parsed.recommend is not None:
            if tool_calls:
                errors.append("tool calls in the same turn as <recommend> were ignored")
            outcome, format_valid = self._outcome(parsed.recommend, errors)
            reward = 1.0 / outcome.rank if outcome.rank else 0.0
            terminated = True
        else:
            if self.plan_turns and parsed.plan is not None and not tool_calls and not parsed.errors:
                observation, tool_results, failed = "", [], []  # a planning step: nothing to answer
            else:
                observation, tool_results, failed = answer_tool_calls(
                    self._toolbox, {spec.name for spec in self.tool_specs}, parsed,
                    finish_hint="finish with <recommend>id, ...</recommend>")
            errors.extend(failed)
            self._tokens += self.count_tokens(observation)
            spent = budget_spent(self._turns, self.max_turns, self._tokens, self.max_episode_tokens)
            errors.extend([spent] if spent else [])
            truncated = spent is not None
        self._format_clean = self._format_clean and not errors
        self._done = terminated or truncated
        info = {
            "turn": self._turns,
            "action": parsed,
            "errors": capped(errors),
            "tool_results": tool_results,
            "observation_role": "tool",
            "format_valid": format_valid,
            "outcome": outcome,
            "tokens": self._tokens,
        }
        return ("" if self._done else observation), reward, terminated, truncated, info

    # Internals -------------------------------------------------------------------------------

    def _finish_call(self, tool_calls: list[ToolCall]) -> tuple[list[str] | None, list[ToolCall]]:
        """The ids of the first offered ``finish`` call with valid arguments, which then stands for a
        ``<recommend>``, and the other calls (ignored beside it, as beside a ``<recommend>``); an
        invalid ``finish`` is answered like any failed tool call."""
        if "finish" in {spec.name for spec in self.tool_specs}:
            for index, call in enumerate(tool_calls):
                result = self._toolbox.call(call.name, call.arguments) if call.name == "finish" else None
                if result is not None and result.ok:
                    return result.data, tool_calls[:index] + tool_calls[index + 1:]
        return None, tool_calls

    def _outcome(self, item_ids: list[str], errors: list[str]) -> tuple[RankingOutcome, bool]:
        """The ranking a ``<recommend>`` gives, and whether the whole episode was well-formed."""
        ranking, wrong = read_ranking(item_ids, self._task.candidate_item_ids)
        errors.extend(wrong)
        rank = ranking.index(self._task.target_item_id) + 1 if ranking else None
        valid = bool(ranking) and not errors and self._format_clean
        return RankingOutcome(ranking=tuple(ranking), rank=rank), valid
