"""MACRS (Fang et al., 2024) over an LLM backend: a Planner, one act agent per dialogue act and a
Reflection agent play ``ConversationalRec-v0``, each env turn serialized in the student's format.

One env turn:

1. **Reflection**, only after a setback (the user turned a recommendation down, or repeated an
   earlier answer: the dialogue stalls): a short lesson, what we learned about the wanted item
   (information level) and which acts to favour (strategy level). It is the turn's
   ``<reflection>``; the last ``max_notes`` lessons are read back from the trajectory as the notes
   every later role reads.
2. **Shortlist**: the acts that are usable in the env's current state (``usable_acts``) are drafted
   when they are at most ``max_drafts``; otherwise the Planner first names the ``max_drafts`` acts
   worth drafting (one call).
3. **Act agents**: each shortlisted act's agent drafts its reply (the question, or for ``narrow`` and
   ``recommend`` the ids in ``<recommend>`` and a sentence; a recommendation says why it fits).
   Ids that are not current candidates are dropped; a draft left without ids, or empty, is unusable.
4. **Planner**: picks the best draft from the dialogue, the notes and the drafts (skipped when one
   draft is left). The Response agent is merged with the act agents: the chosen draft is the turn's
   utterance as written, which saves a call a turn.

The turn is ``<reflection>`` (when one was written), ``<plan>`` (the Planner's cleaned words and its
choice) and ``<act>ACT</act><say>...</say>``, with ``<recommend>ids</recommend>`` for ``narrow`` and
``recommend``. The candidate set and the turns left are read from the env's infos each turn, never
tracked here.

LLM calls per turn, at most: 1 (reflection, after a setback) + 1 (shortlist, when more acts are
usable than ``max_drafts``) + ``max_drafts`` + 1 (planner, when two or more drafts are usable); 5 with
the default ``max_drafts=2``. ``max_drafts=len(DIALOGUE_ACTS)`` drafts every usable act, as MACRS does.

Never raises on model output: a shortlist or a choice that names no act falls back to the default
order, and a turn with no usable draft asks about preferences (or, on the last turn or with no
candidate left, wraps up), the reason logged and noted in ``<plan>``. A backend failure ends the
dialogue cleanly with ``wrap_up``, the reason in ``<plan>``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from envs.simulators import DIALOGUE_ACTS
from envs.types import Catalog, DialogueTask, Turn
from rollout.episode import Episode, TextAgent
from teachers.backends.base import ChatBackend, ChatParams
from teachers.crs_policies import ASKS
from teachers.systems.roles import Roles
from teachers.systems.settings import SystemSettings
from teachers.systems.text import clean, ids_in

ROLES = ("reflection", "shortlist", "planner", *DIALOGUE_ACTS)
ID_ACTS = ("narrow", "recommend")
"""Acts that carry candidate ids in ``<recommend>``."""
STOP_SAY = "Sorry, I have to stop here. Goodbye."
"""What a wrap-up says when the system cannot go on (no usable draft on the last turn, a backend failure)."""
_RECOMMEND_BLOCK = re.compile(r"<recommend>.*?(?:</recommend>|$)", re.DOTALL)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Draft:
    """One act's reply: the act, what it says, and the ids it carries (``narrow``, ``recommend``)."""

    act: str
    utterance: str
    item_ids: tuple[str, ...] = ()

    def render(self) -> str:
        """The ``<act>``, ``<say>`` and (with ids) ``<recommend>`` of a turn."""
        ids = f"<recommend>{', '.join(self.item_ids)}</recommend>" if self.item_ids else ""
        return f"<act>{self.act}</act><say>{self.utterance}</say>{ids}"

    @property
    def line(self) -> str:
        """How the Planner reads it."""
        ids = f" [{', '.join(self.item_ids)}]" if self.item_ids else ""
        return f"- {self.act}{ids}: {self.utterance}"


@dataclass(frozen=True)
class DialogueState:
    """What a turn's roles read, taken from the episode: the env's current candidates and turns
    left, the dialogue so far, the reflection notes, and the setback to reflect on ('' for none)."""

    candidate_item_ids: tuple[str, ...]
    turns_left: int
    dialogue: tuple[str, ...]
    notes: tuple[str, ...]
    setback: str
    rejected_before: bool


def usable_acts(candidates: int, turns_left: int, *, rejected_before: bool) -> list[str]:
    """The acts worth drafting, in ``DIALOGUE_ACTS`` order: with no candidate left only ``wrap_up``;
    on the last turn only ``recommend`` (asking can no longer help); otherwise every ask,
    ``narrow`` with two or more candidates, ``recommend``, and ``clarify_rejection`` after a rejection.

    >>> usable_acts(5, 4, rejected_before=False)
    ['ask_preference', 'ask_constraint', 'narrow', 'recommend']
    >>> usable_acts(1, 1, rejected_before=True), usable_acts(0, 3, rejected_before=True)
    (['recommend'], ['wrap_up'])
    """
    if candidates == 0:
        return ["wrap_up"]
    if turns_left <= 1:
        return ["recommend"]
    usable = {"ask_preference", "ask_constraint", "recommend"}
    usable |= {"narrow"} if candidates >= 2 else set()
    usable |= {"clarify_rejection"} if rejected_before else set()
    return [act for act in DIALOGUE_ACTS if act in usable]


def acts_named(text: str, acts: Sequence[str]) -> list[str]:
    """The ``acts`` a reply names, in the order it names them, each once (``ask preference`` and
    ``ask-preference`` count; ``recommender`` does not name ``recommend``).

    >>> acts_named("As a recommender I pick Narrow, then ask preference.", DIALOGUE_ACTS)
    ['narrow', 'ask_preference']
    """
    found = []
    for act in acts:
        match = re.search(r"\b" + act.replace("_", "[ _-]") + r"\b", text, re.IGNORECASE)
        if match:
            found.append((match.start(), act))
    return [act for _, act in sorted(found)]


class MACRSTeacher(TextAgent):
    """MACRS as an Agent (``rollout.episode.Agent``) that plays ``ConversationalRec-v0`` dialogues.

    Args:
        catalog: the items the ids refer to.
        backend: answers every role.
        params: how each role samples.
        max_drafts: act agents asked per turn at most (the Planner shortlists when more acts are usable).
        max_recommend: ids one ``recommend`` carries at most (the env's ``max_recommend``).
        history_messages: the last messages of the dialogue the roles read.
        max_notes: the last reflection lessons the roles read.
        concurrency: dialogues whose turns are played at once (their calls are batched by the backend).
    """

    role = "macrs"

    @classmethod
    def from_settings(cls, catalog: Catalog, backend: ChatBackend, params: ChatParams,
                      settings: SystemSettings) -> "MACRSTeacher":
        """MACRS with the run's concurrency (its acts are its tools)."""
        return cls(catalog, backend, params, concurrency=settings.concurrency)

    def __init__(self, catalog: Catalog, backend: ChatBackend, params: ChatParams, *, max_drafts: int = 2,
                 max_recommend: int = 1, history_messages: int = 8, max_notes: int = 3, concurrency: int = 8):
        if max_drafts < 1 or max_recommend < 1:
            raise ValueError(f"max_drafts and max_recommend must be >= 1, got {max_drafts} and {max_recommend}")
        self.catalog = catalog
        self.roles = Roles("macrs", ROLES, backend, params)
        self.max_drafts = max_drafts
        self.max_recommend = max_recommend
        self.history_messages = history_messages
        self.max_notes = max_notes
        self.concurrency = concurrency

    def turn(self, episode: Episode) -> str:
        if not isinstance(episode.task, DialogueTask):
            raise ValueError(f"MACRS plays dialogue tasks, not {type(episode.task).__name__}")
        state = self.state(episode)
        seed = episode.seed
        lesson = ""
        if state.setback:
            reply = self.roles.ask("reflection", seed=seed, setback=state.setback, **self._fields(state))
            if reply.error:
                return _stop(reply.error)
            lesson = clean(reply.text, max_chars=200)
            if lesson:
                state = replace(state, notes=(*state.notes, lesson)[-self.max_notes:])
        fields = self._fields(state)
        acts = usable_acts(len(state.candidate_item_ids), state.turns_left, rejected_before=state.rejected_before)
        fallbacks: list[str] = []
        if len(acts) > self.max_drafts:
            reply = self.roles.ask("shortlist", seed=seed, acts=", ".join(acts), max_drafts=self.max_drafts, **fields)
            if reply.error:
                return _stop(reply.error, lesson)
            shortlist = acts_named(reply.text, acts)[: self.max_drafts]
            if not shortlist:
                shortlist = acts[: self.max_drafts]
                fallbacks.append(_fallback(f"the shortlist named no usable act; drafting {', '.join(shortlist)}"))
            acts = shortlist
        drafts = []
        for act in acts:
            reply = self.roles.ask(act, seed=seed, **fields)
            if reply.error:
                return _stop(reply.error, lesson)
            draft = self.read_draft(act, reply.text, state.candidate_item_ids)
            if isinstance(draft, Draft):
                drafts.append(draft)
            else:
                fallbacks.append(_fallback(draft))
        if not drafts:
            chosen = self._fallback_draft(state)
            fallbacks.append(_fallback(f"no usable draft; {chosen.act} instead"))
            return _render(lesson, " ".join(fallbacks), chosen)
        if len(drafts) == 1:
            return _render(lesson, " ".join([*fallbacks, f"Act: {drafts[0].act} (the only usable draft)."]), drafts[0])
        reply = self.roles.ask("planner", seed=seed, drafts="\n".join(d.line for d in drafts), **fields)
        if reply.error:
            return _stop(reply.error, lesson)
        named = acts_named(reply.text, [d.act for d in drafts])
        chosen = next((d for d in drafts if named and d.act == named[0]), None)
        if chosen is None:
            chosen = drafts[0]
            fallbacks.append(_fallback(f"the planner named no drafted act; {chosen.act} instead"))
        return _render(lesson, " ".join([clean(reply.text, max_chars=200), *fallbacks, f"Act: {chosen.act}."]), chosen)

    # Reading the episode -----------------------------------------------------------------------

    def state(self, episode: Episode) -> DialogueState:
        """The dialogue as the env left it: its current candidates (``info["candidate_item_ids"]``),
        the turns left, the messages so far, the earlier lessons and the setback of the last turn."""
        infos = episode.infos
        candidates = tuple(infos[-1]["candidate_item_ids"])
        turns_left = infos[0]["max_turns"] - (len(infos) - 1)
        dialogue = [_said(turn) for turn in episode.trajectory.turns if turn.role != "system"]
        replies = [line for line in dialogue if line.startswith("User: ")]
        setback = ""
        if len(infos) > 1 and infos[-1]["act"] == "recommend":  # not accepted, as the dialogue goes on
            turned_down = [i for i in infos[-2]["candidate_item_ids"] if i not in candidates]
            setback = f"The user turned down {'; '.join(map(self._describe, turned_down)) or 'the recommendation'}."
        elif replies and replies[-1] in replies[:-1]:
            setback = "The user repeated an earlier answer: the dialogue is stalling."
        notes = [a.reflection for a in episode.trajectory.actions if a.reflection][-self.max_notes:]
        return DialogueState(candidates, turns_left, tuple(dialogue[-self.history_messages:]), tuple(notes), setback,
                             rejected_before=any(info["act"] == "recommend" for info in infos[1:]))

    def read_draft(self, act: str, text: str, candidate_item_ids: Sequence[str]) -> Draft | str:
        """The act agent's draft, or why it is unusable: ids are kept only when they are current
        candidates (at most ``max_recommend`` for ``recommend``); the rest of the text, cleaned, is
        the utterance."""
        utterance = clean(_RECOMMEND_BLOCK.sub(" ", text), max_chars=200)
        if not utterance:
            return f"the {act} draft said nothing"
        if act not in ID_ACTS:
            return Draft(act, utterance)
        item_ids = ids_in(text, candidate_item_ids)[: self.max_recommend if act == "recommend" else None]
        if not item_ids:
            return f"the {act} draft named no current candidate"
        return Draft(act, utterance, tuple(item_ids))

    def _fields(self, state: DialogueState) -> dict[str, object]:
        """What the role prompts are filled with (each uses the fields it names)."""
        return {"candidates": "\n".join(map(self._describe, state.candidate_item_ids)) or "none",
                "num_candidates": len(state.candidate_item_ids), "turns_left": state.turns_left,
                "dialogue": "\n".join(state.dialogue), "notes": " ".join(state.notes) or "none",
                "max_recommend": self.max_recommend}

    def _describe(self, item_id: str) -> str:
        item = self.catalog.items.get(item_id)
        if item is None:
            return item_id
        details = ", ".join(part for part in (item.year, "|".join(item.genres)) if part)
        return f"{item_id} {item.title[:40]}" + (f" ({details})" if details else "")

    def _fallback_draft(self, state: DialogueState) -> Draft:
        """A turn without a model's draft: ask about preferences while turns and candidates remain, else wrap up."""
        if state.candidate_item_ids and state.turns_left > 1:
            return Draft("ask_preference", ASKS["ask_preference"])
        return Draft("wrap_up", STOP_SAY)


def _said(turn: Turn) -> str:
    """One message of the dialogue as the roles read it."""
    if turn.is_agent:
        action = turn.action
        ids = f" [{', '.join(action.recommend)}]" if action.recommend else ""
        return f"You ({action.act or 'unreadable'}){ids}: {action.utterance or ''}"
    if turn.role != "user":
        return "(Your turn could not be used.)"
    # The first prompt ends "User: <opening>\nTurns left: n."; later ones are "User: <reply>\nCandidates (...".
    said = turn.text.rpartition("\nUser: ")[2].removeprefix("User: ")
    return "User: " + clean(said.split("\nCandidates (")[0].split("\nTurns left:")[0], max_chars=200)


def _fallback(reason: str) -> str:
    log.info("macrs falls back: %s", reason)
    return f"Fallback: {reason}."


def _render(lesson: str, plan: str, draft: Draft) -> str:
    reflection = f"<reflection>{lesson}</reflection>\n" if lesson else ""
    return f"{reflection}<plan>{clean(plan, max_chars=400)}</plan>\n{draft.render()}"


def _stop(reason: str, lesson: str = "") -> str:
    """A final turn that ends the dialogue cleanly (``wrap_up``) and says why in its plan."""
    return _render(lesson, f"Stopped: {clean(reason, max_chars=200)}", Draft("wrap_up", STOP_SAY))
