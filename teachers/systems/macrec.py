"""MACRec (Wang et al., SIGIR 2024) over an LLM backend: a Manager that thinks and then acts, and the
Analyst, Searcher, Reflector and Interpreter it calls, answered by the env's tools and serialized into
the student's single-agent format.

The task comes from the env's task kind (or is fixed by the constructor): ``rp`` plays
``RatingPrediction-v0``, ``sr`` ``SequentialRec-v0`` (MACRec's own protocol, 1 + 7 candidates and at
most 5 history items, is ``envs.data.build_tasks(num_negatives=7, max_history=5, min_rating=4)``, as in
``configs/macrec_sr.yaml``), ``chat`` ``ConversationalRec-v0``.

**rp and sr.** The Manager works in trials of steps; a step is a thought (free text), then one action:

* ``Analyse[user, id]`` / ``Analyse[item, id]``: the Analyst reads the user's (``user_info``,
  ``user_history``) or the item's (``item_info``, ``item_history``) tools, those the env offers;
* ``Search[query]``: the Searcher reads what the env's ``search`` tool finds;
* ``Finish[answer]``: the trial's answer (a rating, or candidate ids best first).

An agent's tools are called in an env turn (``<plan>`` holding the Manager's thought, then the
``<tool_call>`` blocks); next turn, the agent writes one sentence on the env's tool responses, the
step's observation. A malformed action or answer is an observation too (as in MACRec): it costs a
step, not a turn. On the env's last turn no agent can be called, and the Manager is told to finish.

Between trials the Reflector reads the last one, by its strategy (``STRATEGIES``): ``none`` gives the
next trial nothing, ``last_trial`` the last trial's steps, ``reflexion`` every reflection so far (an
LLM verdict ``{"correctness": ..., "reason": ...}``), ``last_trial_and_reflexion`` the last trial and
its reflection. A verdict that the answer is correct ends the episode with it (MACRec's early stop);
otherwise the next trial starts, up to ``max_trials``, in the same env turn. The env ends the episode
at its first answer, so only the final answer reaches it: the final turn is ``<plan>`` (the last
thought), ``<reflection>`` (the agents' outputs, then the review of the first trial, which quotes the
answer it judged: ``{"answer": ..., "correctness": ..., "reason": ...}``) and the task's answer tag.
``rewards.macrec``'s delta and reflection rewards read the first answer from that review. A later
trial that finds no answer keeps the last answer found.

**chat.** Each env turn, the Interpreter turns the user's last message into a task for the Manager,
who thinks, then speaks one dialogue act (``recommend[id]``, ``narrow[id, id]``,
``ask_preference[question]``...). The turn is ``<plan>`` (the thought), ``<reflection>`` (the
Interpreter's task), ``<act>`` and ``<say>`` (and ``<recommend>`` for recommend and narrow). As in
MACRec, chat has no Reflector; the conversational env has no tools, so no Analyst or Searcher.

Role text is cleaned before it enters a turn (``teachers.systems.text.clean``). A backend failure, or
a Manager that finds no answer in its steps, ends the episode cleanly with the reason in
``<reflection>`` (an empty answer, or ``wrap_up`` in a conversation), never the run.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from envs.config import DEFAULTS
from envs.parsing import render_tool_call
from envs.rating_prediction import read_rating
from envs.simulators import DIALOGUE_ACTS
from envs.types import Catalog, DialogueTask, RankingTask, RatingTask, Task, ToolCall, Trajectory
from rewards.macrec import LOWER, UPPER, parse_verdict
from rollout.engines.base import derive_seed
from rollout.episode import AgentTurn, Episode, TextAgent
from teachers.backends.base import ChatBackend, ChatParams
from teachers.systems.roles import Roles
from teachers.systems.settings import SystemSettings
from teachers.systems.text import clean, ids_in, stopped

ROLES = ("manager_thought", "manager_action", "analyst", "searcher", "reflector", "interpreter")
TASKS = {RatingTask.kind: "rp", RankingTask.kind: "sr", DialogueTask.kind: "chat"}
"""MACRec's task for each env task kind."""
ANALYST_TOOLS = {"user": ("user_info", "user_history"), "item": ("item_info", "item_history")}
"""The tools the Analyst reads, by what it analyses."""
SEARCH_TOOL = "search"
HISTORY_LINES = 6
"""Lines of a conversation the Interpreter and the Manager read."""
_ACTION = re.compile(r"([A-Za-z_]+)\s*\[([^\]\n]*)\]")
_REASON = re.compile(r'"reason"\s*:\s*("(?:[^"\\]|\\.)*")')


@dataclass(frozen=True)
class Strategy:
    """What the Reflector gives the next trial (MACRec's ``ReflectionStrategy``)."""

    last_trial: bool
    """The last trial's steps."""
    reflexion: bool
    """An LLM reflection with a verdict on the answer."""
    every_reflection: bool = False
    """Every reflection so far (else only the last one)."""


STRATEGIES = {
    "none": Strategy(last_trial=False, reflexion=False),
    "last_trial": Strategy(last_trial=True, reflexion=False),
    "reflexion": Strategy(last_trial=False, reflexion=True, every_reflection=True),
    "last_trial_and_reflexion": Strategy(last_trial=True, reflexion=True),
}
"""The Reflector's strategies by name (MACRec: ``base``, ``last_trial``, ``reflection``,
``last_trial_and_reflection``)."""


@dataclass(frozen=True)
class Answers:
    """How a task's answers are read from ``Finish[...]`` and written into the final turn."""

    description: str
    """The task, as the roles are told."""
    finish: str
    """The Finish action, as the Manager is told."""
    read: Callable[[str, Task], tuple[Any, str]]
    """The answer a Finish argument gives (None and why not, as the Manager's observation)."""
    tag: str
    """The env's tag for the answer."""
    empty: Any
    """No answer."""

    def render(self, answer: Any) -> str:
        body = ", ".join(answer) if isinstance(answer, list) else answer
        return f"<{self.tag}>{body}</{self.tag}>"


def _read_rating(argument: str, task: Task) -> tuple[str | None, str]:
    value, error = read_rating(argument, low=LOWER, high=UPPER)
    return (None, f"Invalid answer: {error}.") if value is None else (f"{value:g}", "")


def _read_ranking(argument: str, task: Task) -> tuple[list[str] | None, str]:
    ranking = ids_in(argument, task.candidate_item_ids)
    return (ranking, "") if ranking else (None, "Invalid answer: list candidate ids, best first.")


ANSWERS = {
    "rp": Answers(f"rating prediction: the rating the user gives the item, {LOWER:g} to {UPPER:g}",
                  f"Finish[rating]: the answer, {LOWER:g} to {UPPER:g}, e.g. Finish[4].", _read_rating, "answer", ""),
    "sr": Answers("sequential recommendation: rank the candidate items for the user, best first",
                  "Finish[id, id, ...]: the answer, candidate ids best first.", _read_ranking, "recommend", []),
}
CHAT = "conversational recommendation: find the one candidate item the user wants"
CHAT_ACTIONS = ("ask_preference[question]: ask what the user likes. ask_constraint[question]: ask about era or "
                "other limits. clarify_rejection[question]: ask why they turned the last one down. narrow[id, id]: "
                "keep only these candidates. recommend[id]: propose one candidate. wrap_up[goodbye]: end the chat.")
WRAP_UP = "<act>wrap_up</act><say>Sorry, I cannot help further.</say>"
INVALID_ACTION = "Invalid action: write one of the listed actions as Name[argument]."


class _Stopped(Exception):
    """A role's backend failed, or the Manager found no answer: the episode ends, saying why."""


@dataclass(frozen=True)
class _Call:
    """An agent called with its tools, waiting for the env's tool responses."""

    agent: str
    subject: str
    tool_calls: tuple[ToolCall, ...]


@dataclass
class _Progress:
    """What the system keeps of one rp/sr episode between its env turns."""

    trial: int = 1
    steps: int = 0
    scratchpad: list[str] = field(default_factory=list)
    """The current trial's steps (Thought n / Action n / Observation n)."""
    thought: str = ""
    pending: _Call | None = None
    notes: list[str] = field(default_factory=list)
    """Every agent's output, as the final turn's reflection condenses them."""
    answers: list[Any] = field(default_factory=list)
    """Each finished trial's answer (None: it halted without one)."""
    reflexions: list[str] = field(default_factory=list)
    reflections: str = ""
    """What the next trial's Manager reads of the earlier ones."""
    review: dict[str, Any] | None = None
    """The Reflector's review of the first trial, quoting its answer."""


class MACRecTeacher(TextAgent):
    """MACRec as an Agent (``rollout.episode.Agent``) that plays rp, sr and chat episodes.

    Args:
        catalog: the items the ids refer to.
        backend: answers every role.
        params: how each role samples.
        tools: the env's tools (the Analyst and the Searcher use those offered).
        task: ``rp``, ``sr`` or ``chat``; None plays whichever the env's tasks are.
        reflection_strategy: what the Reflector gives the next trial, a key of ``STRATEGIES``.
        max_trials: trials per rp/sr episode (MACRec's evaluation: 2).
        max_steps: Manager steps per trial (per env turn in chat).
        max_turns: the env's turn budget (its ``max_turns``): the last turn calls no agent.
        concurrency: episodes whose turns are played at once (their calls are batched by the backend).
    """

    role = "macrec"

    @classmethod
    def from_settings(cls, catalog: Catalog, backend: ChatBackend, params: ChatParams,
                      settings: SystemSettings) -> "MACRecTeacher":
        """MACRec with the run's tools, reflection strategy, turn budget and concurrency."""
        return cls(catalog, backend, params, tools=settings.tools, reflection_strategy=settings.reflection_strategy,
                   max_turns=settings.max_turns, concurrency=settings.concurrency)

    def __init__(self, catalog: Catalog, backend: ChatBackend, params: ChatParams, *, tools: Sequence[str],
                 task: str | None = None, reflection_strategy: str = "reflexion", max_trials: int = 2,
                 max_steps: int = 6, max_turns: int = DEFAULTS.max_turns, concurrency: int = 8):
        if reflection_strategy not in STRATEGIES:
            raise ValueError(f"unknown reflection strategy '{reflection_strategy}'; use one of {', '.join(STRATEGIES)}")
        if task is not None and task not in TASKS.values():
            raise ValueError(f"unknown MACRec task '{task}'; use one of {', '.join(TASKS.values())}, or None for the "
                             "env's task kind")
        if min(max_trials, max_steps, max_turns) < 1:
            raise ValueError(f"max_trials, max_steps and max_turns must be >= 1, got {max_trials}, {max_steps}, "
                             f"{max_turns}")
        self.catalog = catalog
        self.roles = Roles("macrec", ROLES, backend, params)
        self.task = task
        self.strategy = STRATEGIES[reflection_strategy]
        self.analyses = {kind: [t for t in names if t in tools] for kind, names in ANALYST_TOOLS.items()
                         if any(t in tools for t in names)}
        self.can_search = SEARCH_TOOL in tools
        self.max_trials, self.max_steps, self.max_turns = max_trials, max_steps, max_turns
        self.concurrency = concurrency
        self._progress: dict[int, tuple[Episode, _Progress]] = {}
        self._lock = threading.Lock()

    def act(self, episodes: Sequence[Episode]) -> list[AgentTurn]:
        with self._lock:  # episodes the env ended early (their token budget) are forgotten here
            for key, (episode, _) in list(self._progress.items()):
                if episode.trajectory.terminated or episode.trajectory.truncated:
                    del self._progress[key]
        return super().act(episodes)

    def turn(self, episode: Episode) -> str:
        task = self._task_of(episode.task)
        try:
            return self._converse(episode) if task == "chat" else self._solve(episode, ANSWERS[task])
        except _Stopped as stop:
            self._forget(episode)
            ending = WRAP_UP if task == "chat" else ANSWERS[task].render(ANSWERS[task].empty)
            return stopped(str(stop), ending)

    # rp and sr -------------------------------------------------------------------------------------

    def _solve(self, episode: Episode, answers: Answers) -> str:
        progress = self._progress_of(episode)
        if progress.pending is not None:
            self._observe(episode, progress, answers)
        last_turn = len(episode.infos) >= self.max_turns
        while True:
            if progress.steps >= self.max_steps:  # halted: the trial ends without an answer
                if self._end_trial(episode, progress, answers, None):
                    return self._final(episode, progress, answers)
                continue
            progress.steps += 1
            step, seed = progress.steps, derive_seed(episode.seed, progress.trial, progress.steps)
            fields = dict(task=answers.description, input=episode.trajectory.turns[1].text,
                          actions=self._actions(answers), reflections=progress.reflections,
                          hint="This is the last step: use Finish.\n" if last_turn or step == self.max_steps else "")
            thought = clean(self._ask("manager_thought", seed, scratchpad=_lines(progress.scratchpad), **fields),
                            max_chars=300)
            progress.thought = thought
            progress.scratchpad.append(f"Thought {step}: {thought}")
            action = self._ask("manager_action", seed, scratchpad=_lines(progress.scratchpad), **fields)
            name, argument = _action(action)
            progress.scratchpad.append(f"Action {step}: {name}[{argument}]")
            if name == "finish":
                answer, error = answers.read(argument, episode.task)
                progress.scratchpad.append(f"Observation {step}: {error or 'finished.'}")
                if answer is not None and self._end_trial(episode, progress, answers, answer):
                    return self._final(episode, progress, answers)
                continue
            call, error = self._agent_call(name, argument)
            if call is None or last_turn:
                progress.scratchpad.append(f"Observation {step}: {error or 'no turns are left for agents: Finish.'}")
                continue
            progress.pending = call
            return f"<plan>{thought}</plan>\n" + "\n".join(map(render_tool_call, call.tool_calls))

    def _observe(self, episode: Episode, progress: _Progress, answers: Answers) -> None:
        """The called agent reads the env's responses to its tools: the step's observation."""
        call, progress.pending = progress.pending, None
        output = "\n".join(r.text for r in episode.infos[-1].get("tool_results", ())) or "no tool output"
        note = clean(self._ask(call.agent, derive_seed(episode.seed, call.agent), task=answers.description,
                               subject=call.subject, tool_output=output), max_chars=160)
        progress.scratchpad.append(f"Observation {progress.steps}: {note}")
        progress.notes.append(f"{call.agent.capitalize()} on {call.subject}: {note}".replace('"', "'"))

    def _end_trial(self, episode: Episode, progress: _Progress, answers: Answers, answer: Any) -> bool:
        """Closes the trial with its answer (None: it halted); True when the episode's answer is final.
        Otherwise the Reflector reflects and the next trial starts."""
        progress.answers.append(answer)
        if len(progress.answers) >= self.max_trials:
            return True
        trial = _lines(progress.scratchpad)
        review: dict[str, Any] = {"answer": answers.empty if answer is None else answer}
        correct = None
        if self.strategy.reflexion:
            reply = self._ask("reflector", derive_seed(episode.seed, "reflector", progress.trial),
                              task=answers.description, input=episode.trajectory.turns[1].text, trial=trial)
            correct, reason = parse_verdict(reply), _reason(reply)
            progress.reflexions.append(reason)
            review.update({"correctness": correct} if correct is not None else {}, reason=reason)
        if progress.review is None:
            progress.review = review
        shown = progress.reflexions if self.strategy.every_reflection else progress.reflexions[-1:]
        last = f"Your last trial at this task:\n{trial}\n(END OF LAST TRIAL)\n" if self.strategy.last_trial else ""
        reflected = "".join(f"- {r}\n" for r in shown)
        progress.reflections = last + (f"Reflections on your earlier trials, to do better:\n{reflected}"
                                       if reflected else "")
        if correct and answer is not None:
            return True
        progress.trial, progress.steps, progress.scratchpad = progress.trial + 1, 0, []
        return False

    def _final(self, episode: Episode, progress: _Progress, answers: Answers) -> str:
        self._forget(episode)
        answer = next((a for a in reversed(progress.answers) if a is not None), None)
        if answer is None:
            raise _Stopped(f"the Manager gave no answer in {len(progress.answers)} trial(s) of {self.max_steps} steps")
        notes = " ".join(progress.notes) or "No agent was consulted."
        review = f" Review of the first answer: {json.dumps(progress.review)}" if progress.review else ""
        return f"<plan>{progress.thought}</plan>\n<reflection>{notes}{review}</reflection>\n{answers.render(answer)}"

    def _actions(self, answers: Answers) -> str:
        actions = []
        if self.analyses:
            actions.append(f"Analyse[{'/'.join(self.analyses)}, id]: the Analyst studies that "
                           f"{' or '.join(self.analyses)}.")
        if self.can_search:
            actions.append("Search[query]: the Searcher finds items by title, year or genre.")
        return " ".join([*actions, answers.finish])

    def _agent_call(self, name: str, argument: str) -> tuple[_Call | None, str]:
        """The agent an action calls, with its tool calls; or None and why not."""
        if name == "analyse":
            kind, _, item = (part.strip() for part in argument.partition(","))
            if kind.lower() in self.analyses and item:
                key = f"{kind.lower()}_id"
                calls = tuple(ToolCall(tool, {key: item}) for tool in self.analyses[kind.lower()])
                return _Call("analyst", f"{kind.lower()} {item}", calls), ""
        elif name == "search" and self.can_search and argument.strip():
            query = argument.strip()[:200]
            return _Call("searcher", query, (ToolCall(SEARCH_TOOL, {"query": query}),)), ""
        return None, INVALID_ACTION

    # chat ------------------------------------------------------------------------------------------

    def _converse(self, episode: Episode) -> str:
        history = _dialogue(episode.trajectory)
        message = next((line[len("User: "):] for line in reversed(history.splitlines()) if line.startswith("User: ")),
                       "")
        request = clean(self._ask("interpreter", derive_seed(episode.seed, "interpreter"), history=history,
                                  message=message), max_chars=200)
        candidates = list(episode.infos[-1]["candidate_item_ids"])
        titles = "; ".join(f"{i} {self.catalog.items[i].title[:40]}" for i in candidates if i in self.catalog.items)
        fields = dict(task=CHAT, actions=CHAT_ACTIONS, reflections="", hint="",
                      input=f"Conversation:\n{history}\nCandidates: {titles}\nTask from the Interpreter: {request}")
        scratchpad: list[str] = []
        for step in range(1, self.max_steps + 1):
            seed = derive_seed(episode.seed, step)
            thought = clean(self._ask("manager_thought", seed, scratchpad=_lines(scratchpad), **fields), max_chars=200)
            scratchpad.append(f"Thought {step}: {thought}")
            name, argument = _action(self._ask("manager_action", seed, scratchpad=_lines(scratchpad), **fields))
            scratchpad.append(f"Action {step}: {name}[{argument}]")
            move, error = _dialogue_act(name, argument, candidates, thought)
            if move:
                return f"<plan>{thought}</plan>\n<reflection>Interpreter: {request}</reflection>\n{move}"
            scratchpad.append(f"Observation {step}: {error}")
        raise _Stopped(f"the Manager named no valid dialogue act in {self.max_steps} steps")

    # Helpers ---------------------------------------------------------------------------------------

    def _ask(self, role: str, seed: int, **fields: object) -> str:
        reply = self.roles.ask(role, seed=seed, **fields)
        if reply.error:
            raise _Stopped(reply.error)
        return reply.text

    def _task_of(self, task: Task) -> str:
        name = TASKS.get(task.kind)
        if name is None:
            raise ValueError(f"MACRec plays {', '.join(TASKS)} tasks, not {type(task).__name__}")
        if self.task is not None and name != self.task:
            raise ValueError(f"this MACRec teacher plays {self.task}, but the env gives {task.kind} tasks ({name}): "
                             f"build it with task='{name}' or task=None")
        return name

    def _progress_of(self, episode: Episode) -> _Progress:
        with self._lock:
            kept = self._progress.get(id(episode))
            if kept is None or kept[0] is not episode:
                kept = self._progress[id(episode)] = (episode, _Progress())
            return kept[1]

    def _forget(self, episode: Episode) -> None:
        with self._lock:
            self._progress.pop(id(episode), None)


def _action(text: str) -> tuple[str, str]:
    """The first ``Name[argument]`` of a reply, the name lower-cased (``("", text)`` without one).

    >>> _action("I will do Analyse[user, 7] now"), _action("no idea")
    (('analyse', 'user, 7'), ('', 'no idea'))
    """
    match = _ACTION.search(text)
    return (match.group(1).lower(), match.group(2).strip()) if match else ("", clean(text, max_chars=80))


def _reason(reply: str) -> str:
    """The reason of a Reflector's JSON verdict, else its whole text, cleaned."""
    match = _REASON.search(reply)
    if match:
        try:
            return clean(json.loads(match.group(1)), max_chars=200)
        except ValueError:
            pass
    return clean(reply, max_chars=200)


def _lines(scratchpad: list[str]) -> str:
    return "\n".join(scratchpad) + "\n" if scratchpad else ""


def _dialogue(trajectory: Trajectory) -> str:
    """The conversation's last lines: the user's messages and what the system said."""
    lines = []
    for turn in trajectory.turns[1:]:
        action = turn.action
        if turn.is_agent and action is not None and action.act:
            ids = f" {', '.join(action.recommend)}" if action.recommend else ""
            lines.append(f"You ({action.act}{ids}): {action.utterance or ''}")
        elif not turn.is_agent:
            lines += [line for line in turn.text.splitlines() if line.startswith("User: ")]
    return "\n".join(lines[-HISTORY_LINES:])


def _dialogue_act(name: str, argument: str, candidates: Sequence[str], thought: str) -> tuple[str, str]:
    """The turn's ``<act>``, ``<say>`` (and ``<recommend>``) for a chat action, or "" and why not."""
    if name not in DIALOGUE_ACTS:
        return "", INVALID_ACTION
    if name in ("recommend", "narrow"):
        item_ids = ids_in(argument, candidates)[: 1 if name == "recommend" else None]
        if not item_ids:
            return "", f"Invalid action: {name} takes ids of the current candidates."
        say = thought or "These fit what you told me."
        return f"<act>{name}</act><say>{say}</say><recommend>{', '.join(item_ids)}</recommend>", ""
    say = clean(argument, max_chars=200)
    if not say:
        return "", f"Invalid action: {name}[...] takes what to say."
    return f"<act>{name}</act><say>{say}</say>", ""
