"""alpha-UMi (Shen et al., 2024) over an LLM backend: a Planner, a Caller and a Summarizer take turns
in ``SequentialRec-v0``. Each env turn is written by one of them and recorded with its name
(``Turn.role``), so the episodes train the several-policies student
(``rollout.policies: [planner, caller, summarizer]``) role by role, and ``glpft_sets`` makes its GLPFT
data.

Who plays each turn is ``rollout.routing.alpha_umi`` of the turns so far (the students' router, too):

- the **Planner**, first and after every Caller turn: it reads the task, the tools' names and what
  was done so far, and writes ``<plan>rationale Next: caller</plan>`` (or ``Next: summarizer``). A
  plan that names neither hands over to nobody and the Planner plays again (the env's turn budget
  ends a Planner that never hands over). Told the env's ``max_turns``, the Planner hands over to the
  Summarizer once fewer than ``ROUND_TURNS`` turns are left (a call then leaves no turn to rank in).
- the **Caller**, when the Planner hands over to it: it writes the calls the rationale asks for;
  the turn is the valid ones, re-rendered as ``<tool_call>`` blocks, which the env answers.
- the **Summarizer**, when the Planner hands over to it: it ranks the candidates from the tools'
  results; the turn is ``<recommend>ids</recommend>`` (candidates only), which ends the episode.

One tool round is four env turns (Planner, Caller, Planner, Summarizer). The env must take a Planner
turn (a ``<plan>`` alone) as a planning step: ``env.plan_turns: true``.

Never raises on model output or a backend failure: a Caller with no valid call (a tool not offered,
unreadable JSON, a user id other than the task's, an item id not in the catalog), a Summarizer that
names no candidate, or a failing backend ends the episode on that role's turn with an empty
``<recommend>`` and the reason in ``<reflection>`` (the env scores it invalid).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envs.parsing import parse_action, render_tool_call
from envs.types import Catalog, RankingTask, ToolCall, Trajectory, Turn
from rollout.episode import AgentTurn, Episode, TextAgent
from rollout.routing import CALLER, HANDOVER, PLANNER, SUMMARIZER, handover
from rollout.routing import alpha_umi as next_role
from teachers.backends.base import ChatBackend, ChatParams
from teachers.systems.roles import Roles
from teachers.systems.settings import SystemSettings
from teachers.systems.text import clean, ids_in, stopped

ROLES = (PLANNER, CALLER, SUMMARIZER)
ROUND_TURNS = 4
"""Turns a tool round takes from a Planner turn to the ranking: Planner, Caller, Planner, Summarizer."""
LAST_ROUND = "Only the final ranking fits in the turns left.\n"
"""What the Planner reads when it must hand over to the Summarizer."""


class AlphaUMiTeacher(TextAgent):
    """alpha-UMi as an Agent (``rollout.episode.Agent``) that plays ``SequentialRec-v0`` episodes,
    each turn an ``AgentTurn`` naming the role that wrote it.

    Args:
        catalog: the items the ids refer to.
        backend: answers every role.
        params: how each role samples.
        tools: the env's tools the Caller may call (``finish`` is left to the Summarizer).
        num_recommend: ids in the final ``<recommend>``.
        max_turns: the env's turn budget, so the Planner hands over to the Summarizer in time (None:
            it decides alone, and the budget may end an episode before its ranking).
        concurrency: episodes whose turns are played at once (their calls are batched by the backend).
    """

    role = "alpha_umi"

    @classmethod
    def from_settings(cls, catalog: Catalog, backend: ChatBackend, params: ChatParams,
                      settings: SystemSettings) -> "AlphaUMiTeacher":
        """alpha-UMi with the run's tools, ranking length, turn budget and concurrency; its planner's
        turns are plans alone, so the env must allow them (``env.plan_turns``)."""
        if not settings.plan_turns:
            raise ValueError("teacher.system alpha_umi needs env.plan_turns: true (its planner's turns are plans alone)")
        return cls(catalog, backend, params, tools=settings.tools, num_recommend=settings.num_recommend,
                   max_turns=settings.max_turns, concurrency=settings.concurrency)

    def __init__(self, catalog: Catalog, backend: ChatBackend, params: ChatParams, *, tools: Sequence[str],
                 num_recommend: int = 5, max_turns: int | None = None, concurrency: int = 8):
        self.catalog = catalog
        self.roles = Roles("alpha_umi", ROLES, backend, params)
        self.tools = [tool for tool in tools if tool != "finish"]
        self.num_recommend = num_recommend
        self.max_turns = max_turns
        self.concurrency = concurrency

    def turn(self, episode: Episode) -> AgentTurn:
        task = episode.task
        if not isinstance(task, RankingTask):
            raise ValueError(f"alpha-UMi plays ranking tasks, not {type(task).__name__}")
        role = next_role(episode.trajectory.turns)
        play = {PLANNER: self._plan, CALLER: self._call, SUMMARIZER: self._summarize}[role]
        return AgentTurn(play(episode, task), role=role)

    # Roles -----------------------------------------------------------------------------------------

    def _plan(self, episode: Episode, task: RankingTask) -> str:
        played = sum(turn.is_agent for turn in episode.trajectory.turns)
        last_round = self.max_turns is not None and self.max_turns - played < ROUND_TURNS
        reply = self.roles.ask(PLANNER, seed=episode.seed, task=episode.trajectory.turns[1].text,
                               tools=", ".join(self.tools) or "none", history=_history(episode),
                               budget=LAST_ROUND if last_round else "")
        if reply.error:
            return stopped(reply.error)
        decision = SUMMARIZER if last_round else handover(reply.text)
        words = [clean(HANDOVER.sub("", reply.text)), f"Next: {decision}" if decision else ""]
        return f"<plan>{' '.join(w for w in words if w)}</plan>"

    def _call(self, episode: Episode, task: RankingTask) -> str:
        reply = self.roles.ask(CALLER, seed=episode.seed, tools=self._tool_lines(episode), user_id=task.user_id,
                               rationale=_rationale(episode))
        if reply.error:
            return stopped(reply.error)
        # A call written without its tags is read too: small models often drop them.
        written = (parse_action(reply.text).tool_calls
                   or parse_action(f"<tool_call>{reply.text.strip()}</tool_call>").tool_calls)
        calls = dict.fromkeys(render_tool_call(call) for call in written if self._valid(call, task))
        if not calls:
            return stopped(f"the caller wrote no valid tool call: {reply.text or 'nothing'}")
        return "\n".join(calls)

    def _summarize(self, episode: Episode, task: RankingTask) -> str:
        reply = self.roles.ask(SUMMARIZER, seed=episode.seed, user_id=task.user_id, rationale=_rationale(episode),
                               results=_results(episode), candidates=", ".join(task.candidate_item_ids),
                               num_recommend=self.num_recommend)
        if reply.error:
            return stopped(reply.error)
        ranking = ids_in(reply.text, task.candidate_item_ids)[: self.num_recommend]
        if not ranking:
            return stopped(f"the summarizer named no candidate id: {reply.text or 'nothing'}")
        return f"<recommend>{', '.join(ranking)}</recommend>"

    # Helpers ---------------------------------------------------------------------------------------

    def _valid(self, call: ToolCall, task: RankingTask) -> bool:
        """A call of an offered tool about the task's user, naming only catalog items (the env
        checks the rest of its arguments against the tool's schema)."""
        arguments = call.arguments
        return (call.name in self.tools and arguments.get("user_id", task.user_id) == task.user_id
                and ("item_id" not in arguments or arguments["item_id"] in self.catalog.items))

    def _tool_lines(self, episode: Episode) -> str:
        """The env's own description of the Caller's tools (its system prompt's ``- name(args): ...`` lines)."""
        lines = episode.trajectory.turns[0].text.splitlines()
        return "\n".join(line for line in lines if line.startswith("- ") and line[2:].split("(")[0] in self.tools)


def _history(episode: Episode) -> str:
    """What the team did so far, as the Planner reads it: its plans and every tool's reply."""
    lines = []
    agent_turns = [turn for turn in episode.trajectory.turns if turn.is_agent]
    for turn, info in zip(agent_turns, episode.infos[1:]):
        if turn.role == PLANNER and turn.action is not None and turn.action.plan:
            lines.append(f"Planner: {turn.action.plan}")
        lines += [f"{result.name}: {result.text}" for result in info.get("tool_results", ())]
    return "\n".join(lines) or "nothing yet"


def _rationale(episode: Episode) -> str:
    """The last Planner turn's rationale (its plan without the handover)."""
    plan = next((turn.action.plan for turn in reversed(episode.trajectory.turns)
                 if turn.role == PLANNER and turn.action is not None and turn.action.plan), "")
    return HANDOVER.sub("", plan).strip() or "none"


def _results(episode: Episode) -> str:
    return "\n".join(r.text for info in episode.infos for r in info.get("tool_results", ()) if r.ok) or "none"



# GLPFT -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SFTSet:
    """One supervised set of GLPFT: whole episodes, and whose turns in them are trained on."""

    trajectories: list[Trajectory]
    target_role: str | None = None
    """The role whose turns are the targets, the other turns being context (None: every agent turn)."""

    def targets(self, trajectory: Trajectory) -> list[Turn]:
        """The turns of ``trajectory`` the set trains on."""
        return [turn for turn in trajectory.turns if turn.is_agent and self.target_role in (None, turn.role)]

    @property
    def num_targets(self) -> int:
        return sum(len(self.targets(trajectory)) for trajectory in self.trajectories)


def glpft_sets(trajectories: Sequence[Trajectory], roles: Sequence[str] = ROLES) -> dict[str, SFTSet]:
    """GLPFT's data from alpha-UMi episodes (pass the kept ones, ``teachers.pipeline.keep_hits``):
    ``global``, every episode with every agent turn a target, then one local set per role, the
    episodes that role played a turn in with its turns the targets.

    ``recrl sft`` trains on them in this order: the global pass on whole episodes into
    ``sft/adapter``; then, with ``rollout.policies: [planner, caller, summarizer]`` and
    ``sft.local_epochs`` > 0, a copy of that adapter per role with the loss on the role's turns only
    (``rl.sft.sft_examples(role=...)``; the other roles' turns stay in the context) into
    ``sft/adapter/<role>``, where each policy starts GRPO. These sets are what each pass reads
    (``num_targets`` counts its target turns); ``teachers.pipeline.write_dataset(s.trajectories,
    folder / name)`` writes one in the teacher dataset's row format.

    Raises:
        ValueError: an agent turn was played by a role not in ``roles`` (not alpha-UMi's episode).
    """
    for trajectory in trajectories:
        strangers = sorted({turn.role for turn in trajectory.turns if turn.is_agent} - set(roles))
        if strangers:
            raise ValueError(f"episode {trajectory.task_id} ({trajectory.source}) has turns of {strangers}, "
                             f"not of alpha-UMi's roles {list(roles)}: play it with AlphaUMiTeacher")
    episodes = list(trajectories)
    sets = {"global": SFTSet(episodes)}
    for role in roles:
        sets[role] = SFTSet([t for t in episodes if any(turn.role == role for turn in t.turns)], target_role=role)
    return sets
