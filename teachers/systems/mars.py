"""MARS (STAR's teacher) over an LLM backend: Planner, User Profile, Historical Interest, Recent
Interest, Interest Divergence, Reflector and Ranker, answered by the env's tools, serialized into the
student's single-agent format.

One episode takes three turns of ``SequentialRec-v0``:

1. The Planner names the analysts to consult; the turn is ``<plan>`` and the tool calls they read
   (``user_info`` for the profile, ``user_history`` for the interests).
2. The analysts each write one sentence on what the tools returned (the divergence analyst compares
   the other two); the turn is ``<plan>`` holding their notes and the signal tools' calls.
3. The Ranker ranks the candidates from the notes and the signals; the Reflector checks it (an LLM
   verdict, and the rule that the list names candidates) and sends it back once with its reason;
   the turn is ``<reflection>`` and ``<recommend>``.

Role text is cleaned before it enters a turn (``teachers.systems.text.clean``), so no model output
can break the turn's tags. A backend failure or a ranking with no candidate in it ends the episode
with an empty ``<recommend>`` and the reason in the ``<reflection>``, never the run.
"""

from __future__ import annotations

from collections.abc import Sequence

from envs.parsing import render_tool_call
from envs.signals.signals import SIGNAL_NAMES
from envs.types import Catalog, RankingTask, ToolCall
from rollout.episode import Episode, TextAgent
from teachers.backends.base import ChatBackend, ChatParams
from teachers.systems.roles import Roles
from teachers.systems.settings import SystemSettings
from teachers.systems.text import clean, ids_in, named, stopped

ANALYSTS = ("profile", "historical", "recent", "divergence")
ROLES = ("planner", *ANALYSTS, "ranker", "reflector")
ANALYST_TOOLS = {"profile": "user_info", "historical": "user_history", "recent": "user_history"}
HISTORY_ITEMS = 20
"""Items of the user's history the historical analyst reads."""
RECENT_ITEMS = 5
"""Of those, the last ones the recent analyst reads."""
CONSULT = "Consult "
"""Ends the first turn's plan with the analysts it consults (read back in the second turn)."""


class MARSTeacher(TextAgent):
    """MARS as an Agent (``rollout.episode.Agent``) that plays ``SequentialRec-v0`` episodes.

    Args:
        catalog: the items the ids refer to.
        backend: answers every role.
        params: how each role samples.
        tools: the env's tools the system may call (its analysts and signals use those offered).
        num_recommend: ids in the final ``<recommend>``.
        concurrency: episodes whose turns are played at once (their calls are batched by the backend).
    """

    role = "mars"

    @classmethod
    def from_settings(cls, catalog: Catalog, backend: ChatBackend, params: ChatParams,
                      settings: SystemSettings) -> "MARSTeacher":
        """MARS with the run's tools, ranking length and concurrency."""
        return cls(catalog, backend, params, tools=settings.tools, num_recommend=settings.num_recommend,
                   concurrency=settings.concurrency)

    def __init__(self, catalog: Catalog, backend: ChatBackend, params: ChatParams, *, tools: Sequence[str],
                 num_recommend: int = 5, concurrency: int = 8):
        self.catalog = catalog
        self.roles = Roles("mars", ROLES, backend, params)
        self.signal_tools = [t for t in tools if t in SIGNAL_NAMES]
        self.analysts = [a for a in ANALYSTS if ANALYST_TOOLS.get(a, "user_history") in tools]
        self.num_recommend = num_recommend
        self.concurrency = concurrency

    def turn(self, episode: Episode) -> str:
        task = episode.task
        if not isinstance(task, RankingTask):
            raise ValueError(f"MARS plays ranking tasks, not {type(task).__name__}")
        turn = len(episode.infos) - 1
        if turn == 0:
            return self._plan(episode, task)
        if turn == 1 and self._consulted(episode):
            return self._analyze(episode, task)
        return self._rank(episode, task)

    # Turns -----------------------------------------------------------------------------------------

    def _plan(self, episode: Episode, task: RankingTask) -> str:
        plan = self.roles.ask("planner", seed=episode.seed, task=episode.trajectory.turns[1].text)
        if plan.error:
            return stopped(plan.error)
        chosen = named(plan.text, self.analysts) or list(self.analysts)
        if "divergence" in chosen:  # it compares the other two interests
            chosen = [a for a in self.analysts if a in {*chosen, "historical", "recent"}]
        tools = list(dict.fromkeys(ANALYST_TOOLS[a] for a in chosen if a in ANALYST_TOOLS))
        calls = [ToolCall(tool, _arguments(tool, task)) for tool in tools] or self._signal_calls(task)
        note = f"{CONSULT}{', '.join(chosen)}." if tools else "Read the signals."
        return f"<plan>{clean(plan.text)} {note}</plan>\n" + "\n".join(map(render_tool_call, calls))

    def _analyze(self, episode: Episode, task: RankingTask) -> str:
        outputs = {r.name: r for r in episode.infos[1].get("tool_results", ()) if r.ok}
        notes: dict[str, str] = {}
        for analyst in self._consulted(episode):
            fields = self._analyst_fields(analyst, task, outputs, notes)
            if fields is None:
                continue
            reply = self.roles.ask(analyst, seed=episode.seed, user_id=task.user_id, **fields)
            if reply.error:
                return stopped(reply.error)
            notes[analyst] = clean(reply.text, max_chars=160)
        summary = " ".join(f"{analyst.capitalize()}: {note}" for analyst, note in notes.items()) or "No notes."
        return f"<plan>{summary}</plan>\n" + "\n".join(map(render_tool_call, self._signal_calls(task)))

    def _rank(self, episode: Episode, task: RankingTask) -> str:
        analyses = next((a.plan for a in reversed(episode.trajectory.actions) if a.plan), "") or "none"
        signals = "\n".join(r.text for info in episode.infos for r in info.get("tool_results", ())
                            if r.ok and r.name in SIGNAL_NAMES) or "none"
        fields = dict(user_id=task.user_id, analyses=analyses, signals=signals,
                      candidates=", ".join(task.candidate_item_ids), num_recommend=self.num_recommend)
        ranking, verdict = [], ""
        for attempt in range(2):
            reply = self.roles.ask("ranker", seed=episode.seed + attempt, feedback=_feedback(verdict), **fields)
            if reply.error:
                return stopped(reply.error)
            ranking = ids_in(reply.text, task.candidate_item_ids)[: self.num_recommend]
            if not ranking:
                verdict = "REVISE: the ranking named no candidate id."
                continue
            check = self.roles.ask("reflector", seed=episode.seed + attempt, analyses=analyses, signals=signals,
                                   ranking=", ".join(ranking))
            if check.error:
                return stopped(check.error)
            verdict = clean(check.text, max_chars=200) or "OK"
            if not verdict.upper().startswith("REVISE"):
                break
        if not ranking:
            return stopped(f"ranker named no candidate id in 2 tries ({verdict})")
        return f"<reflection>{verdict}</reflection>\n<recommend>{', '.join(ranking)}</recommend>"

    # Helpers ---------------------------------------------------------------------------------------

    def _consulted(self, episode: Episode) -> list[str]:
        """The analysts the first turn's plan consulted."""
        first = (episode.trajectory.actions[0].plan if episode.trajectory.actions else None) or ""
        return named(first.rpartition(CONSULT)[2], self.analysts) if CONSULT in first else []

    def _signal_calls(self, task: RankingTask) -> list[ToolCall]:
        return [ToolCall(tool, {"user_id": task.user_id}) for tool in self.signal_tools]

    def _analyst_fields(self, analyst: str, task: RankingTask, outputs: dict, notes: dict[str, str]) -> dict | None:
        """What an analyst reads, or None when its input is missing (its tool failed, a note it compares)."""
        if analyst == "divergence":
            if "historical" in notes and "recent" in notes:
                return {"historical": notes["historical"], "recent": notes["recent"]}
            return None
        result = outputs.get(ANALYST_TOOLS[analyst])
        if result is None:
            return None
        if analyst == "recent":
            recent = list(result.data or [])[-RECENT_ITEMS:]
            titles = "; ".join(f"{i} {self.catalog.items[i].title}" for i in recent if i in self.catalog.items)
            return {"recent_items": titles or "none"}
        return {"tool_output": result.text}


def _arguments(tool: str, task: RankingTask) -> dict:
    return {"user_id": task.user_id, "k": HISTORY_ITEMS} if tool == "user_history" else {"user_id": task.user_id}


def _feedback(verdict: str) -> str:
    return f"The reflector asked for a revision: {verdict}\n" if verdict else ""

