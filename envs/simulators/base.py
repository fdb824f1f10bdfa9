"""What every user simulator shares: the dialogue acts, the dialogue state, and the verdict rule.

A simulator holds a hidden target (``DialogueTask.target_item_id``) and answers each agent turn.
Whether a recommendation is accepted is decided here, by rule, for every simulator: it is accepted
exactly when it lists the target; after ``patience`` rejections the user leaves. An LLM simulator
only words the answer (iEvaLM's protocol), so success never depends on a generator's judgement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from envs.types import Catalog, DialogueTask

DIALOGUE_ACTS = ("ask_preference", "ask_constraint", "narrow", "recommend", "clarify_rejection", "wrap_up")
"""MACRS's dialogue acts; every agent turn carries exactly one."""


@dataclass(frozen=True)
class AgentMove:
    """One well-formed agent turn as the simulator hears it: the act, what was said, and the ids
    it carries (recommended for ``recommend``, kept for ``narrow``; empty otherwise)."""

    act: str
    utterance: str = ""
    item_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SimulatorReply:
    """The user's answer: its text, whether it accepts the recommendation, whether the user leaves."""

    text: str
    accepted: bool = False
    left: bool = False


@dataclass
class Dialogue:
    """One conversation's state, kept by the env and read (never owned) by the simulator.

    ``revealed`` lists the facts the user has stated (``"genre:Comedy"``, ``"decade:1990s"``...), so a
    simulator does not repeat itself; ``rng`` is seeded by the env's ``reset(seed=...)``.
    """

    task: DialogueTask
    catalog: Catalog
    rng: np.random.Generator
    candidate_item_ids: list[str]
    """The current candidate set, in the order shown."""
    moves: list[AgentMove] = field(default_factory=list)
    """Every well-formed agent turn so far (the one being answered included)."""
    replies: list[str] = field(default_factory=list)
    """The user's messages so far, the opening first."""
    rejected: list[str] = field(default_factory=list)
    """Item ids of rejected recommendations, in order."""
    revealed: set[str] = field(default_factory=set)


class UserSimulator(Protocol):
    """A simulated user with a hidden target."""

    def opening(self, dialogue: Dialogue) -> str:
        """The user's first message (used when the task has no ``opening``)."""
        ...

    def reply(self, dialogue: Dialogue, move: AgentMove) -> SimulatorReply:
        """The user's answer to ``move`` (already appended to ``dialogue.moves``)."""
        ...


@dataclass(frozen=True)
class Verdict:
    """What happens to a turn, by rule: accepted, rejected (and whether patience ran out), or neither."""

    accepted: bool = False
    rejected: bool = False
    left: bool = False


def judge(dialogue: Dialogue, move: AgentMove, *, patience: int) -> Verdict:
    """Accepts a recommendation exactly when it lists the target; the user leaves on the
    ``patience``-th rejection, and on ``wrap_up``.

    >>> from envs.types import Catalog, DialogueTask
    >>> task = DialogueTask(task_id="t", user_id="u", history=(), candidate_item_ids=("1", "2"), target_item_id="2")
    >>> d = Dialogue(task, Catalog("c", {}, {}, []), np.random.default_rng(0), ["1", "2"])
    >>> judge(d, AgentMove("recommend", item_ids=("1",)), patience=2)
    Verdict(accepted=False, rejected=True, left=False)
    >>> d.rejected.append("1"); judge(d, AgentMove("recommend", item_ids=("1",)), patience=2)
    Verdict(accepted=False, rejected=True, left=True)
    >>> judge(d, AgentMove("recommend", item_ids=("2",)), patience=2)
    Verdict(accepted=True, rejected=False, left=False)
    """
    if move.act == "wrap_up":
        return Verdict(left=True)
    if move.act != "recommend":
        return Verdict()
    if dialogue.task.target_item_id in move.item_ids:
        return Verdict(accepted=True)
    return Verdict(rejected=True, left=len(dialogue.rejected) + 1 >= patience)


def check_patience(patience: int) -> int:
    if patience < 1:
        raise ValueError(f"patience is the number of rejections before the user leaves: at least 1, got {patience}")
    return patience
