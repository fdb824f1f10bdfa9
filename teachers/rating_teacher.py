"""A rating teacher without an LLM, and the rating baselines as agents (MACRec's rp).

``BiasRater`` answers with a baseline predictor (``envs.rating_baselines``). With ``tools`` it first
reads the item's recent ratings (MACRec's analyst looks up the item before the manager answers),
then reflects on the user's and the item's averages and answers; without, it answers at once, which
is how ``recrl eval`` plays the baselines through the same env as the students.
"""

from __future__ import annotations

from collections.abc import Sequence

from envs.parsing import render_tool_call
from envs.rating_baselines import RATING_BASELINES, BiasModel
from envs.types import RatingTask, ToolCall
from rollout.episode import Episode, TextAgent

RATING_TEACHER_TOOLS = ("item_history",)
"""Tools the rating teacher knows how to call."""


class BiasRater(TextAgent):
    """Answers each rating task with baseline ``method``'s prediction, to one decimal.

    Args:
        model: the bias model, fitted on training ratings only.
        method: one of ``RATING_BASELINES`` (``bias``: user and item offsets).
        tools: ``RATING_TEACHER_TOOLS`` to call in a first turn (empty: answer at once).
        k: ratings ``item_history`` returns.
        decimals: digits of the answer (what a student learns to write); None writes the exact prediction.
    """

    def __init__(self, model: BiasModel, *, method: str = "bias", tools: Sequence[str] = (), k: int = 10,
                 decimals: int | None = 1):
        if method not in RATING_BASELINES:
            raise ValueError(f"unknown rating baseline '{method}'; available: {list(RATING_BASELINES)}")
        unknown = sorted(set(tools) - set(RATING_TEACHER_TOOLS))
        if unknown:
            raise ValueError(f"the rating teacher cannot call {unknown}; it calls {list(RATING_TEACHER_TOOLS)}")
        self.model = model
        self.method = method
        self.role = method if not tools else "rating_teacher"
        self.tools = list(tools)
        self.k = k
        self.decimals = decimals

    def turn(self, episode: Episode) -> str:
        task = episode.task
        if not isinstance(task, RatingTask):
            raise ValueError(f"the rating teacher plays rating tasks, not {type(task).__name__}")
        if self.tools and len(episode.infos) == 1:
            call = ToolCall("item_history", {"item_id": task.item_id, "k": self.k})
            return f"<plan>Read item {task.item_id}'s ratings.</plan>\n{render_tool_call(call)}"
        prediction = self.model.predict(self.method, task)
        answer = repr(prediction) if self.decimals is None else f"{prediction:.{self.decimals}f}"
        return f"<reflection>{self._reflect(episode)}</reflection>\n<answer>{answer}</answer>"

    def _reflect(self, episode: Episode) -> str:
        """The averages the answer rests on, as the episode showed them."""
        task = episode.task
        parts = []
        if task.history_ratings:
            mean = sum(task.history_ratings) / len(task.history_ratings)
            parts.append(f"user {task.user_id} averages {mean:.1f}")
        ratings = [row["rating"] for info in episode.infos for result in info.get("tool_results", ())
                   if result.ok and result.name == "item_history" for row in result.data]
        if ratings:
            parts.append(f"item {task.item_id} averages {sum(ratings) / len(ratings):.1f} over {len(ratings)}")
        text = "; ".join(parts)
        return f"{text[:1].upper()}{text[1:]}." if text else f"Baseline {self.method}."
