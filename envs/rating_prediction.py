"""RatingPrediction-v0: predict a user's rating of an item, with tools, in text (MACRec's rp)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import gymnasium as gym

from envs.config import DEFAULTS
from envs.parsing import RATING_TAGS, parse_rating
from envs.prompts import system_prompt
from envs.signals.signals import Signal
from envs.tools import InteractionGraph, Toolbox, ToolResult
from envs.turns import (answer_tool_calls, budget_spent, capped, chosen_tools, episode_task, read_action,
                        text_spaces, whitespace_tokens)
from envs.types import Catalog, RatingOutcome, RatingTask

INSTRUCTIONS = (
    "You predict the rating a user gives an item, on a scale of {low:g} to {high:g}. Each turn write "
    '<plan>...</plan> and then either call tools with <tool_call>{{"name": ..., "arguments": {{...}}}}'
    "</tool_call>, or finish with <reflection>...</reflection><answer>rating</answer>."
)
DEFAULT_TOOLS = ("user_info", "item_info", "user_history")


def read_rating(answer: str, *, low: float, high: float) -> tuple[float | None, str | None]:
    """The rating an ``<answer>`` holds on the scale, or None and why not.

    >>> read_rating(" 4 ", low=1, high=5), read_rating("4.5", low=1, high=5)
    ((4.0, None), (4.5, None))
    >>> read_rating("7", low=1, high=5)[1], read_rating("four", low=1, high=5)[1]
    ('rating 7 is outside 1-5', "answer 'four' is not a finite number")
    """
    value = parse_rating(answer)
    if value is None:
        return None, f"answer {answer.strip()[:40]!r} is not a finite number"
    if not low <= value <= high:
        return None, f"rating {value:g} is outside {low:g}-{high:g}"
    return value, None


class RatingPredictionEnv(gym.Env):
    """A text environment over RatingTasks.

    ``reset`` shows the user's earlier ratings and the item; each ``step`` takes the agent's text.
    Tool calls are answered with ``<tool_response>`` blocks; an ``<answer>`` ends the episode with a
    ``RatingOutcome`` in ``info["outcome"]`` (without a prediction when the budget runs out first). ``signals`` (ranking signals) are taken for a uniform
    signature and unused: there are no candidates to rank. The step reward is MACRec's RP v1, minus the squared
    error, on the final turn (an unusable answer costs the largest squared error on the scale);
    the reward used for learning is composed later, by ``rewards``. Malformed text is answered with
    an error observation, never an exception.
    """

    metadata = {"render_modes": []}
    task_kind = RatingTask.kind

    def __init__(
        self,
        catalog: Catalog,
        graph: InteractionGraph,
        tasks: Sequence[RatingTask] = (),
        *,
        signals: Mapping[str, Signal] | None = None,
        tool_names: Sequence[str] | None = DEFAULT_TOOLS,
        max_turns: int = DEFAULTS.max_turns,
        max_episode_tokens: int = DEFAULTS.max_episode_tokens,
        history_in_prompt: int = 5,
        rating_scale: tuple[float, float] = (1.0, 5.0),
        count_tokens: Callable[[str], int] = whitespace_tokens,
        env_id: str = "RatingPrediction-v0",
    ):
        self.catalog = catalog
        self.graph = graph
        self.tasks = list(tasks)
        self.max_turns = max_turns
        self.max_episode_tokens = max_episode_tokens
        self.history_in_prompt = history_in_prompt
        self.low, self.high = rating_scale
        self.count_tokens = count_tokens
        self.env_id = env_id
        # Ranking signals have no candidates to rank here: the tools read users, items and histories.
        self.tool_specs = chosen_tools(Toolbox(catalog, graph, signals={}).specs, tool_names, env_id=env_id)
        self.system_prompt = system_prompt(self.tool_specs, instructions=INSTRUCTIONS.format(low=self.low, high=self.high))
        self.observation_space, self.action_space = text_spaces(catalog)
        self._task: RatingTask | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[str, dict]:
        super().reset(seed=seed)
        task = episode_task(self, options, RatingTask)
        self._task = task
        self._toolbox = Toolbox(self.catalog, self.graph, task=task, signals={})
        prompt = self.task_prompt(task)
        self._turns = 0
        self._tokens = self.count_tokens(self.system_prompt) + self.count_tokens(prompt)
        self._format_clean = True
        self._done = False
        return prompt, {"task": task, "system_prompt": self.system_prompt, "tokens": self._tokens}

    def task_prompt(self, task: RatingTask) -> str:
        """The first user message: who, their latest ratings, and the item to rate."""
        shown = list(zip(task.history, task.history_ratings))[-self.history_in_prompt:] if self.history_in_prompt else []
        rated = "; ".join(f"{item_id} {self._label(item_id)} {rating:g}" for item_id, rating in shown) or "none"
        return f"User {task.user_id}. Rated: {rated}.\nItem {task.item_id} {self._label(task.item_id)}. Rating?"

    def _label(self, item_id: str) -> str:
        item = self.catalog.items.get(item_id)
        if item is None:
            return "?"
        genres = f" [{', '.join(item.genres[:3])}]" if item.genres else ""
        return f"{item.title[:40]}{genres}"

    def step(self, action: str) -> tuple[str, float, bool, bool, dict]:
        if self._task is None or self._done:
            raise RuntimeError("call reset() before step() (the episode is over or never started)")
        self._turns += 1
        text, parsed, errors = read_action(action, tags=RATING_TAGS)
        self._tokens += self.count_tokens(text)
        observation, reward, terminated, truncated = "", 0.0, False, False
        tool_results: list[ToolResult] = []
        outcome, format_valid = None, False
        if parsed.answer is not None:
            if parsed.tool_calls:
                errors.append("tool calls in the same turn as <answer> were ignored")
            prediction, error = read_rating(parsed.answer, low=self.low, high=self.high)
            errors.extend([error] if error else [])
            outcome = RatingOutcome(prediction=prediction, target=self._task.target_rating)
            worst = (self.high - self.low) ** 2
            reward = -worst if prediction is None else -((prediction - self._task.target_rating) ** 2)
            format_valid = prediction is not None and not errors and self._format_clean
            terminated = True
        else:
            observation, tool_results, failed = answer_tool_calls(
                self._toolbox, {spec.name for spec in self.tool_specs}, parsed,
                finish_hint="finish with <answer>rating</answer>")
            errors.extend(failed)
            self._tokens += self.count_tokens(observation)
            spent = budget_spent(self._turns, self.max_turns, self._tokens, self.max_episode_tokens)
            errors.extend([spent] if spent else [])
            truncated = spent is not None
            if truncated:  # no answer: the rating rewards score it as an invalid one
                outcome = RatingOutcome(prediction=None, target=self._task.target_rating)
        self._format_clean = self._format_clean and not errors
        self._done = terminated or truncated
        info = {"turn": self._turns, "action": parsed, "errors": capped(errors), "tool_results": tool_results,
                "observation_role": "tool", "format_valid": format_valid, "outcome": outcome, "tokens": self._tokens}
        return ("" if self._done else observation), float(reward), terminated, truncated, info
