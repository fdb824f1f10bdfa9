"""The heuristic CF expert teacher: MARS roles played by rules over real tool calls. No LLM.

It exists so that a student can be trained anywhere, with no GPU and no API key: it acts in the
same environment through the same tools, and its episodes serialize exactly like an LLM teacher's.

Roles (MARS): the *planner* picks the tools; the *profile* and *historical/recent interest*
analysts read ``user_info`` / ``user_history``; the *ranker* fuses the ``item_cf`` and ``user_cf``
rankings (Borda count, nudged by genre overlap with recent interest); the *reflector* checks the
final list and states why the top pick leads.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from envs.parsing import render_tool_call
from envs.types import RecTask, ToolCall

RANKING_TOOLS = ("item_cf", "user_cf")
_IDS_AFTER_COLON = re.compile(r":\s*(.*)$", re.DOTALL)
_GENRES = re.compile(r"\[([^\]]*)\]")


class CFExpertTeacher:
    """Plays one episode in a SequentialRec env.

    Args:
        tools: tools the planner uses (a subset of user_info, user_history, item_cf, user_cf).
        num_recommend: how many ids the final ``<recommend>`` lists.
        genre_weight: how much shared genres with recent items move a candidate up (in Borda points).
    """

    name = "cf_expert"

    def __init__(self, *, tools: Sequence[str] = ("user_history", "item_cf", "user_cf"),
                 num_recommend: int = 5, genre_weight: float = 0.0):
        self.tools = list(tools)
        if not any(t in RANKING_TOOLS for t in self.tools):
            raise ValueError(f"the CF expert needs at least one ranking tool out of {RANKING_TOOLS}")
        self.num_recommend = num_recommend
        self.genre_weight = genre_weight

    def play(self, env, task: RecTask) -> None:
        """Runs the episode to its end; read it back with ``env.trajectory()``."""
        env.reset(options={"task": task})
        analysis_tools = [t for t in self.tools if t not in RANKING_TOOLS]
        ranking_tools = [t for t in self.tools if t in RANKING_TOOLS]
        rankings: dict[str, list[str]] = {}
        recent_genres: Counter[str] = Counter()
        # Planner: analysts first (profile, interests), then the ranking signals.
        turns = [analysis_tools, ranking_tools] if analysis_tools else [ranking_tools]
        for turn_index, tools in enumerate(turns):
            plan = self._plan(task, tools, first=turn_index == 0)
            calls = [ToolCall(t, {"user_id": task.user_id}) for t in tools]
            action = f"<plan>{plan}</plan>\n" + "\n".join(render_tool_call(c) for c in calls)
            observation, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                return
            for tool, response in zip(tools, _responses(observation)):
                if tool in RANKING_TOOLS:
                    rankings[tool] = _ids(response)
                elif tool == "user_history":
                    recent_genres.update(g for block in _GENRES.findall(response) for g in block.split())
        ranking = self._rank(task, rankings, recent_genres, env)
        env.step(f"<reflection>{self._reflect(ranking, rankings)}</reflection>\n"
                 f"<recommend>{', '.join(ranking[: self.num_recommend])}</recommend>")

    def _plan(self, task: RecTask, tools: Sequence[str], *, first: bool) -> str:
        if first and all(t in RANKING_TOOLS for t in tools):
            return f"Rank the candidates for user {task.user_id} with {' and '.join(tools)}."
        if first:
            return f"Profile user {task.user_id} with {' and '.join(tools)}."
        return f"Rank the candidates with {' and '.join(tools)}."

    def _rank(self, task: RecTask, rankings: dict[str, list[str]], recent_genres: Counter, env) -> list[str]:
        """Borda fusion of the tool rankings; unranked candidates keep their shown order."""
        candidates = list(task.candidate_item_ids)
        points = {item_id: 0.0 for item_id in candidates}
        for ranked in rankings.values():
            for position, item_id in enumerate(ranked):
                if item_id in points:
                    points[item_id] += len(candidates) - position
        if self.genre_weight and recent_genres:
            for item_id in candidates:
                item = env.catalog.items.get(item_id)
                overlap = sum(recent_genres[g] for g in (item.genres if item else ()))
                points[item_id] += self.genre_weight * overlap / max(sum(recent_genres.values()), 1)
        order = {item_id: i for i, item_id in enumerate(candidates)}
        return sorted(candidates, key=lambda i: (-points[i], order[i]))

    def _reflect(self, ranking: list[str], rankings: dict[str, list[str]]) -> str:
        top = ranking[0]
        agreeing = [tool for tool, ranked in rankings.items() if ranked[:1] == [top]]
        if agreeing:
            return f"{top} leads {' and '.join(agreeing)}."
        return f"{top} ranks high on every signal."


def _responses(observation: str) -> list[str]:
    return re.findall(r"<tool_response>(.*?)</tool_response>", observation, re.DOTALL)


def _ids(response: str) -> list[str]:
    if response.startswith("error"):
        return []
    match = _IDS_AFTER_COLON.search(response)
    return [i.strip() for i in match.group(1).split(",") if i.strip()] if match else []

