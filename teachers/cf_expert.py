"""The heuristic MARS teacher: MARS roles played by rules over real tool calls. No LLM.

It exists so that a student can be trained anywhere, with no GPU and no API key: it acts in the
same environment through the same tools, and its episodes serialize exactly like an LLM teacher's.

Roles (MARS): the *planner* picks the tools; the *profile* and *historical/recent interest*
analysts read ``user_info`` / ``user_history``; the *ranker* fuses the signal tools' rankings
(weighted Borda count, weights fitted on a validation split by ``teachers.fusion``); the
*reflector* checks the final list and states which signals back the top pick.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from envs.parsing import render_tool_call
from envs.signals.signals import SIGNAL_NAMES
from envs.types import Catalog, RankingTask, ToolCall
from rollout.episode import Episode, TextAgent
from teachers.fusion import borda_points, fused_order


class CFExpertTeacher(TextAgent):
    """An Agent (``rollout.episode.Agent``) that plays SequentialRec episodes by rules.

    It reads what its tool calls returned from the env's ``info["tool_results"]`` (values, not
    text), and speaks text only: its episodes carry no tokens (SFT tokenizes their messages).

    Args:
        catalog: the items the ids refer to.
        tools: tools the planner uses: analysis tools (user_info, user_history) and at least one
            signal tool (``envs.signals.SIGNAL_NAMES``).
        weights: fusion weight of each signal tool (missing ones weigh 1; all 1 is plain Borda).
        num_recommend: how many ids the final ``<recommend>`` lists.
    """

    role = "cf_expert"

    def __init__(self, catalog: Catalog, *, tools: Sequence[str] = ("user_history", "item_cf", "user_cf"),
                 weights: Mapping[str, float] | None = None, num_recommend: int = 5):
        self.catalog = catalog
        self.tools = list(tools)
        self.ranking_tools = [t for t in self.tools if t in SIGNAL_NAMES]
        if not self.ranking_tools:
            raise ValueError(f"the teacher needs at least one signal tool out of {list(SIGNAL_NAMES)}")
        weights = dict(weights or {})
        self.weights = np.array([weights.get(t, 1.0) for t in self.ranking_tools])
        if not self.weights.any():
            raise ValueError(f"every fusion weight of {self.ranking_tools} is 0: nothing would rank")
        analysis_tools = [t for t in self.tools if t not in SIGNAL_NAMES]
        # Planner: analysts first (profile, interests), then the ranking signals, then the answer.
        self.plan = [analysis_tools, self.ranking_tools] if analysis_tools else [self.ranking_tools]
        self.num_recommend = num_recommend

    def turn(self, episode: Episode) -> str:
        task = episode.task
        if not isinstance(task, RankingTask):
            raise ValueError(f"the teacher plays ranking tasks, not {type(task).__name__}")
        turn = len(episode.infos) - 1
        if turn < len(self.plan):
            tools = self.plan[turn]
            calls = [ToolCall(t, {"user_id": task.user_id}) for t in tools]
            return f"<plan>{self._plan_text(task, tools, first=turn == 0)}</plan>\n" + "\n".join(
                render_tool_call(c) for c in calls)
        results = [r for info in episode.infos for r in info.get("tool_results", ()) if r.ok]
        rankings = {r.name: list(r.data) for r in results if r.name in self.ranking_tools}
        ranking = self.rank(task, rankings)
        return (f"<reflection>{self._reflect(ranking, rankings)}</reflection>\n"
                f"<recommend>{', '.join(ranking[: self.num_recommend])}</recommend>")

    def rank(self, task: RankingTask, rankings: Mapping[str, Sequence[str]]) -> list[str]:
        """Weighted Borda fusion of the signal tools' lists; unranked candidates keep their shown order."""
        candidates = list(task.candidate_item_ids)
        points = borda_points(rankings, self.ranking_tools, candidates)
        return [candidates[i] for i in fused_order(points, self.weights)]

    def _plan_text(self, task: RankingTask, tools: Sequence[str], *, first: bool) -> str:
        """Short: every planning token is one the student must learn to write."""
        if all(t in SIGNAL_NAMES for t in tools):
            return f"Read {len(tools)} signals for user {task.user_id}." if first else f"Read {len(tools)} signals."
        return f"Profile user {task.user_id}."

    def _reflect(self, ranking: list[str], rankings: Mapping[str, Sequence[str]]) -> str:
        top = ranking[0]
        weight = dict(zip(self.ranking_tools, self.weights))
        agreeing = [tool for tool, ranked in rankings.items() if list(ranked[:1]) == [top] and weight[tool] > 0]
        if agreeing:
            return f"{top} leads {', '.join(agreeing)}."
        return f"{top} ranks high across the signals."
