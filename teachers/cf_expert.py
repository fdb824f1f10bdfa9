"""The heuristic CF expert teacher: MARS roles played by rules over real tool calls. No LLM.

It exists so that a student can be trained anywhere, with no GPU and no API key: it acts in the
same environment through the same tools, and its episodes serialize exactly like an LLM teacher's.

Roles (MARS): the *planner* picks the tools; the *profile* and *historical/recent interest*
analysts read ``user_info`` / ``user_history``; the *ranker* fuses the ``item_cf`` and ``user_cf``
rankings (Borda count, nudged by genre overlap with recent interest); the *reflector* checks the
final list and states why the top pick leads.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from envs.parsing import render_tool_call
from envs.types import Catalog, RankingTask, ToolCall
from rollout.episode import AgentTurn, Episode

RANKING_TOOLS = ("item_cf", "user_cf")


class CFExpertTeacher:
    """An Agent (``rollout.episode.Agent``) that plays SequentialRec episodes by rules.

    It reads what its tool calls returned from the env's ``info["tool_results"]`` (values, not
    text), and speaks text only: its episodes carry no tokens (SFT tokenizes their messages).

    Args:
        catalog: item genres for the genre nudge.
        tools: tools the planner uses (a subset of user_info, user_history, item_cf, user_cf).
        num_recommend: how many ids the final ``<recommend>`` lists.
        genre_weight: how much shared genres with recent items move a candidate up (in Borda points).
    """

    role = "cf_expert"

    def __init__(self, catalog: Catalog, *, tools: Sequence[str] = ("user_history", "item_cf", "user_cf"),
                 num_recommend: int = 5, genre_weight: float = 0.0):
        self.catalog = catalog
        self.tools = list(tools)
        if not any(t in RANKING_TOOLS for t in self.tools):
            raise ValueError(f"the CF expert needs at least one ranking tool out of {RANKING_TOOLS}")
        analysis_tools = [t for t in self.tools if t not in RANKING_TOOLS]
        ranking_tools = [t for t in self.tools if t in RANKING_TOOLS]
        # Planner: analysts first (profile, interests), then the ranking signals, then the answer.
        self.plan = [analysis_tools, ranking_tools] if analysis_tools else [ranking_tools]
        self.num_recommend = num_recommend
        self.genre_weight = genre_weight

    def encode_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return []

    def encode_observation(self, text: str) -> list[int]:
        return []

    def act(self, episodes: Sequence[Episode]) -> list[AgentTurn]:
        return [AgentTurn(text=self._turn(episode)) for episode in episodes]

    def _turn(self, episode: Episode) -> str:
        task = episode.task
        if not isinstance(task, RankingTask):
            raise ValueError(f"the CF expert plays ranking tasks, not {type(task).__name__}")
        turn = len(episode.infos) - 1
        if turn < len(self.plan):
            tools = self.plan[turn]
            calls = [ToolCall(t, {"user_id": task.user_id}) for t in tools]
            return f"<plan>{self._plan_text(task, tools, first=turn == 0)}</plan>\n" + "\n".join(
                render_tool_call(c) for c in calls)
        results = [r for info in episode.infos for r in info.get("tool_results", ()) if r.ok]
        rankings = {r.name: list(r.data) for r in results if r.name in RANKING_TOOLS}
        recent_genres: Counter[str] = Counter(
            genre for r in results if r.name == "user_history" for item_id in r.data
            for genre in self._genres(item_id))
        ranking = self._rank(task, rankings, recent_genres)
        return (f"<reflection>{self._reflect(ranking, rankings)}</reflection>\n"
                f"<recommend>{', '.join(ranking[: self.num_recommend])}</recommend>")

    def _genres(self, item_id: str) -> tuple[str, ...]:
        item = self.catalog.items.get(item_id)
        return item.genres if item else ()

    def _plan_text(self, task: RankingTask, tools: Sequence[str], *, first: bool) -> str:
        if first and all(t in RANKING_TOOLS for t in tools):
            return f"Rank the candidates for user {task.user_id} with {' and '.join(tools)}."
        if first:
            return f"Profile user {task.user_id} with {' and '.join(tools)}."
        return f"Rank the candidates with {' and '.join(tools)}."

    def _rank(self, task: RankingTask, rankings: dict[str, list[str]], recent_genres: Counter) -> list[str]:
        """Borda fusion of the tool rankings; unranked candidates keep their shown order."""
        candidates = list(task.candidate_item_ids)
        points = {item_id: 0.0 for item_id in candidates}
        for ranked in rankings.values():
            for position, item_id in enumerate(ranked):
                if item_id in points:
                    points[item_id] += len(candidates) - position
        if self.genre_weight and recent_genres:
            total = max(sum(recent_genres.values()), 1)
            for item_id in candidates:
                overlap = sum(recent_genres[g] for g in self._genres(item_id))
                points[item_id] += self.genre_weight * overlap / total
        order = {item_id: i for i, item_id in enumerate(candidates)}
        return sorted(candidates, key=lambda i: (-points[i], order[i]))

    def _reflect(self, ranking: list[str], rankings: dict[str, list[str]]) -> str:
        top = ranking[0]
        agreeing = [tool for tool, ranked in rankings.items() if ranked[:1] == [top]]
        if agreeing:
            return f"{top} leads {' and '.join(agreeing)}."
        return f"{top} ranks high on every signal."
