"""SequentialRec-v0: rank 1 held-out positive among sampled negatives, with tools, in text."""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence

import gymnasium as gym
from gymnasium import spaces

from envs.parsing import parse_action
from envs.prompts import system_prompt, task_prompt
from envs.tools import InteractionGraph, Toolbox
from envs.types import Catalog, ParsedAction, RecTask, Trajectory
from rewards.compose import check_weights, score

DEFAULT_REWARD_WEIGHTS = {"format": 1.0, "tiered_hit": 1.0}
MAX_TEXT = 16_384


def whitespace_tokens(text: str) -> int:
    """A tokenizer-free token count, used when the caller gives none."""
    return len(text.split())


class SequentialRecEnv(gym.Env):
    """A text environment over RecTasks.

    ``reset`` returns the task prompt; each ``step`` takes the agent's text. Tool calls are answered
    with ``<tool_response>`` blocks; a ``<recommend>`` ends the episode and is scored by the
    weighted rewards. Malformed text is answered with an error observation (and costs the format
    reward), never an exception. ``trajectory()`` returns the episode so far.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        catalog: Catalog,
        graph: InteractionGraph,
        tasks: Sequence[RecTask] = (),
        *,
        tool_names: Sequence[str] | None = None,
        max_turns: int = 4,
        max_episode_tokens: int = 2048,
        history_in_prompt: int = 3,
        reward_weights: Mapping[str, float] | None = None,
        count_tokens: Callable[[str], int] = whitespace_tokens,
        env_id: str = "SequentialRec-v0",
    ):
        self.catalog = catalog
        self.graph = graph
        self.tasks = list(tasks)
        self.max_turns = max_turns
        self.max_episode_tokens = max_episode_tokens
        self.history_in_prompt = history_in_prompt
        self.reward_weights = dict(reward_weights or DEFAULT_REWARD_WEIGHTS)
        check_weights(self.reward_weights)
        self.count_tokens = count_tokens
        self.env_id = env_id
        all_specs = Toolbox(catalog, graph).specs
        known = [spec.name for spec in all_specs]
        chosen = list(tool_names) if tool_names is not None else known
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            raise ValueError(f"unknown tool name(s) {unknown}; available: {known}")
        self.tool_specs = [spec for spec in all_specs if spec.name in chosen]
        self.system_prompt = system_prompt(self.tool_specs)
        charset = set(string.printable) | {c for item in catalog.items.values() for c in item.title}
        self.observation_space = spaces.Text(max_length=MAX_TEXT, min_length=0, charset="".join(sorted(charset)))
        self.action_space = spaces.Text(max_length=MAX_TEXT, min_length=0, charset=self.observation_space.character_set)
        self._task: RecTask | None = None

    # Gymnasium API ---------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        options = options or {}
        if "task" in options:
            task = options["task"]
        elif self.tasks:
            index = options.get("task_index", int(self.np_random.integers(len(self.tasks))))
            task = self.tasks[index]
        else:
            raise ValueError("reset needs options={'task': RecTask} when the env was built without tasks")
        self._task = task
        self._toolbox = Toolbox(self.catalog, self.graph, task=task)
        prompt = task_prompt(task, self.catalog, history_in_prompt=self.history_in_prompt)
        self._messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": prompt},
        ]
        self._actions: list[ParsedAction] = []
        self._errors: list[str] = []
        self._turns = 0
        self._tokens = self.count_tokens(self.system_prompt) + self.count_tokens(prompt)
        self._num_tool_calls = 0
        self._done = False
        self._outcome: dict = {"ranking": [], "rank": None, "format_valid": False}
        self._rewards: dict[str, float] = {}
        self._reward = 0.0
        self._terminated = self._truncated = False
        return prompt, {"task_id": task.task_id, "system_prompt": self.system_prompt,
                        "candidate_item_ids": list(task.candidate_item_ids)}

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._task is None or self._done:
            raise RuntimeError("call reset() before step() (the episode is over or never started)")
        self._turns += 1
        self._tokens += self.count_tokens(action)
        parsed = parse_action(action)
        self._actions.append(parsed)
        self._messages.append({"role": "assistant", "content": action})
        turn_errors = list(parsed.errors)
        observation = ""
        if parsed.recommend is not None:
            if parsed.tool_calls:
                turn_errors.append("tool calls in the same turn as <recommend> were ignored")
            self._finish_with_recommendation(parsed.recommend, turn_errors)
        else:
            observation = self._answer_tool_calls(parsed, turn_errors)
            self._tokens += self.count_tokens(observation)
            if self._turns >= self.max_turns:
                self._truncate("turn budget exhausted", turn_errors)
            elif self._tokens >= self.max_episode_tokens:
                self._truncate("token budget exhausted", turn_errors)
            else:
                self._messages.append({"role": "user", "content": observation})
        self._errors.extend(turn_errors)
        info = {
            "turn": self._turns,
            "errors": turn_errors,
            "num_tool_calls": self._num_tool_calls,
            "tokens": self._tokens,
            "format_valid": self._outcome["format_valid"],
            "rank": self._outcome["rank"],
            "rewards": dict(self._rewards),
        }
        reward = self._reward if self._done else 0.0
        return observation, reward, self._terminated, self._truncated, info

    # Episode record --------------------------------------------------------------------------

    def trajectory(self, *, source: str, group_index: int = 0) -> Trajectory:
        """The episode so far as a Trajectory (text fields; rollouts add the tokens)."""
        if self._task is None:
            raise RuntimeError("no episode: call reset() first")
        return Trajectory(
            task_id=self._task.task_id,
            env_id=self.env_id,
            source=source,
            messages=[dict(m) for m in self._messages],
            actions=list(self._actions),
            target_item_id=self._task.target_item_id,
            ranking=list(self._outcome["ranking"]),
            rank=self._outcome["rank"],
            format_valid=self._outcome["format_valid"],
            num_tool_calls=self._num_tool_calls,
            terminated=self._terminated,
            truncated=self._truncated,
            errors=list(self._errors),
            rewards=dict(self._rewards),
            reward=self._reward,
            group_index=group_index,
        )

    def end_episode(self, reason: str) -> None:
        """Ends the episode from outside (e.g. the policy's context is full), as truncated."""
        if self._task is None or self._done:
            raise RuntimeError("no running episode to end")
        self._errors.append(reason)
        self._truncated = True
        self._end()

    # Internals -------------------------------------------------------------------------------

    def _answer_tool_calls(self, parsed: ParsedAction, turn_errors: list[str]) -> str:
        allowed = {spec.name for spec in self.tool_specs}
        responses = []
        for call in parsed.tool_calls:
            self._num_tool_calls += 1
            if call.name not in allowed:
                text = f"error: unknown tool '{call.name}'; available: {', '.join(sorted(allowed))}"
            else:
                text = self._toolbox.call(call.name, call.arguments).text
            responses.append(f"<tool_response>{text}</tool_response>")
        if not parsed.tool_calls:
            detail = "; ".join(parsed.errors) or "no action"
            responses.append(
                f"<tool_response>error: {detail}. Call a tool with <tool_call> or finish with "
                "<recommend>id, ...</recommend>.</tool_response>"
            )
        return "\n".join(responses)

    def _finish_with_recommendation(self, item_ids: list[str], turn_errors: list[str]) -> None:
        candidates = self._task.candidate_item_ids
        candidate_set = set(candidates)
        listed: list[str] = []
        for item_id in item_ids:
            if item_id not in candidate_set:
                turn_errors.append(f"recommended id '{item_id}' is not a candidate")
            elif item_id in listed:
                turn_errors.append(f"recommended id '{item_id}' is listed twice")
            else:
                listed.append(item_id)
        if not item_ids:
            turn_errors.append("empty <recommend>")
        # Unlisted candidates follow in the order they were shown, so partial rankings still rank.
        listed_set = set(listed)
        ranking = listed + [i for i in candidates if i not in listed_set] if listed else []
        rank = ranking.index(self._task.target_item_id) + 1 if ranking else None
        parse_clean = not any(a.errors for a in self._actions)
        valid = bool(listed) and not turn_errors and parse_clean
        self._outcome = {"ranking": ranking, "rank": rank, "format_valid": valid}
        self._terminated = True
        self._end()

    def _truncate(self, reason: str, turn_errors: list[str]) -> None:
        turn_errors.append(reason)
        self._truncated = True
        self._end()

    def _end(self) -> None:
        self._done = True
        self._reward, self._rewards = score(self.trajectory(source="env"), self.reward_weights)
