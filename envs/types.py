"""Types shared by every layer: catalog records, tasks, parsed actions and the one Trajectory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Item:
    """One catalog item."""

    item_id: str
    title: str
    year: str = ""
    genres: tuple[str, ...] = ()


@dataclass(frozen=True)
class User:
    """One user with whatever demographic fields the dataset has."""

    user_id: str
    attributes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Interaction:
    """A user consumed (rated, bought, watched) an item at a time."""

    user_id: str
    item_id: str
    rating: float
    timestamp: float


@dataclass
class Catalog:
    """A dataset: users, items and their interactions."""

    name: str
    users: dict[str, User]
    items: dict[str, Item]
    interactions: list[Interaction]


@dataclass(frozen=True, kw_only=True)
class Task:
    """One episode's problem for ``user_id``; each task kind adds its own fields."""

    kind: ClassVar[str] = "task"
    task_id: str
    user_id: str

    def to_json(self) -> dict[str, Any]:
        row = {"kind": self.kind}
        for name, value in asdict(self).items():
            row[name] = list(value) if isinstance(value, tuple) else value
        return row


@dataclass(frozen=True, kw_only=True)
class RankingTask(Task):
    """Rank ``candidate_item_ids`` for ``user_id`` given ``history``.

    ``history`` holds the item ids the user interacted with before the target, oldest first;
    it never contains ``target_item_id``.
    """

    kind: ClassVar[str] = "ranking"
    history: tuple[str, ...]
    candidate_item_ids: tuple[str, ...]
    target_item_id: str

    @staticmethod
    def from_json(row: dict[str, Any]) -> "RankingTask":
        return RankingTask(
            task_id=str(row["task_id"]),
            user_id=str(row["user_id"]),
            history=tuple(str(i) for i in row["history"]),
            candidate_item_ids=tuple(str(i) for i in row["candidate_item_ids"]),
            target_item_id=str(row["target_item_id"]),
        )


@dataclass(frozen=True, kw_only=True)
class RatingTask(Task):
    """Predict ``user_id``'s rating of ``item_id`` (MACRec's rating prediction) given ``history``,
    the items the user rated before, oldest first, and ``history_ratings``, their ratings."""

    kind: ClassVar[str] = "rating"
    item_id: str
    history: tuple[str, ...]
    history_ratings: tuple[float, ...]
    target_rating: float

    @property
    def target_item_id(self) -> str:
        """The item whose rating is held out (what training data must not hold)."""
        return self.item_id

    @staticmethod
    def from_json(row: dict[str, Any]) -> "RatingTask":
        return RatingTask(task_id=str(row["task_id"]), user_id=str(row["user_id"]), item_id=str(row["item_id"]),
                          history=tuple(str(i) for i in row["history"]),
                          history_ratings=tuple(float(r) for r in row["history_ratings"]),
                          target_rating=float(row["target_rating"]))


@dataclass(frozen=True, kw_only=True)
class DialogueTask(Task):
    """Converse with a simulator of ``user_id`` who wants ``target_item_id`` (hidden from the agent)
    until it accepts a recommendation from ``candidate_item_ids``. ``history`` is what the user
    consumed before, oldest first; ``opening`` the user's first message (empty: the simulator's own)."""

    kind: ClassVar[str] = "dialogue"
    history: tuple[str, ...]
    candidate_item_ids: tuple[str, ...]
    target_item_id: str
    opening: str = ""

    @staticmethod
    def from_json(row: dict[str, Any]) -> "DialogueTask":
        return DialogueTask(task_id=str(row["task_id"]), user_id=str(row["user_id"]),
                            history=tuple(str(i) for i in row["history"]),
                            candidate_item_ids=tuple(str(i) for i in row["candidate_item_ids"]),
                            target_item_id=str(row["target_item_id"]), opening=str(row.get("opening", "")))


TASK_KINDS: dict[str, type[Task]] = {"ranking": RankingTask, "rating": RatingTask, "dialogue": DialogueTask}
"""Task classes by ``kind``."""


def task_from_json(row: dict[str, Any]) -> Task:
    """The task a ``to_json`` row describes (rows without ``kind`` are ranking tasks)."""
    kind = row.get("kind", "ranking")
    if kind not in TASK_KINDS:
        raise ValueError(f"unknown task kind '{kind}'; known: {sorted(TASK_KINDS)}")
    return TASK_KINDS[kind].from_json(row)


@dataclass(frozen=True)
class RankingOutcome:
    """How a ranking episode ended: the full candidate ranking and the target's 1-based rank
    (None when the agent gave no usable ranking)."""

    kind: ClassVar[str] = "ranking"
    ranking: tuple[str, ...] = ()
    rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "ranking": list(self.ranking), "rank": self.rank}

    @staticmethod
    def from_json(row: dict[str, Any]) -> "RankingOutcome":
        return RankingOutcome(ranking=tuple(row["ranking"]), rank=row["rank"])


RATING_HIT_ERROR = 0.5
"""A predicted rating this close to the truth counts as a hit (it rounds to the right star)."""


@dataclass(frozen=True)
class RatingOutcome:
    """How a rating episode ended: the agent's predicted rating (None without a usable answer) and the truth."""

    kind: ClassVar[str] = "rating"
    prediction: float | None = None
    target: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "prediction": self.prediction, "target": self.target}

    @staticmethod
    def from_json(row: dict[str, Any]) -> "RatingOutcome":
        return RatingOutcome(prediction=row["prediction"], target=row["target"])


@dataclass(frozen=True)
class DialogueOutcome:
    """How a conversation ended: whether the simulator accepted a recommendation, at which agent turn
    (1-based; None if never), the agent turns taken, and every item recommended, in order."""

    kind: ClassVar[str] = "dialogue"
    accepted: bool = False
    accepted_at: int | None = None
    turns: int = 0
    recommended: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "accepted": self.accepted, "accepted_at": self.accepted_at, "turns": self.turns,
                "recommended": list(self.recommended)}

    @staticmethod
    def from_json(row: dict[str, Any]) -> "DialogueOutcome":
        return DialogueOutcome(accepted=row["accepted"], accepted_at=row["accepted_at"], turns=row["turns"],
                               recommended=tuple(row["recommended"]))


Outcome = RankingOutcome | RatingOutcome | DialogueOutcome
"""Every outcome type."""
OUTCOME_KINDS: dict[str, Any] = {"ranking": RankingOutcome, "rating": RatingOutcome, "dialogue": DialogueOutcome}


@dataclass(frozen=True)
class ToolCall:
    """A tool invocation parsed from a ``<tool_call>`` block."""

    name: str
    arguments: dict[str, Any]


@dataclass
class ParsedAction:
    """What one agent turn said, parsed from its tags; ``errors`` lists what could not be parsed."""

    plan: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    reflection: str | None = None
    recommend: list[str] | None = None
    answer: str | None = None
    """A rating episode's final answer (``<answer>4</answer>``), as written."""
    act: str | None = None
    """A conversational turn's dialogue act (``<act>ask_preference</act>``), as written."""
    utterance: str | None = None
    """What a conversational turn says to the user (``<say>...</say>``)."""
    errors: list[str] = field(default_factory=list)

    @staticmethod
    def from_json(row: dict[str, Any]) -> "ParsedAction":
        return ParsedAction(plan=row["plan"], tool_calls=[ToolCall(**c) for c in row["tool_calls"]],
                            reflection=row["reflection"], recommend=row["recommend"], answer=row.get("answer"),
                            act=row.get("act"), utterance=row.get("utterance"), errors=list(row["errors"]))


ENV_ROLES = ("system", "env", "tool", "user")
"""Roles of turns the environment speaks; any other role names the agent (or policy) that spoke."""


@dataclass
class Turn:
    """One message of an episode.

    ``role`` is an agent's name (``policy``, ``cf_expert``, a planner...) or one of ``ENV_ROLES``.
    ``start``/``end`` delimit the turn's tokens in ``Trajectory.token_ids`` (equal when the
    episode carries no tokens). Agent turns carry their parsed ``action``; ``reward`` is the
    env's rule-based reward for the step the turn took.
    """

    role: str
    text: str
    start: int = 0
    end: int = 0
    reward: float = 0.0
    action: ParsedAction | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def is_agent(self) -> bool:
        return self.role not in ENV_ROLES

    @property
    def chat_role(self) -> str:
        """The ChatML role: agents are the assistant; tool, env and user replies come as user messages."""
        if self.is_agent:
            return "assistant"
        return "system" if self.role == "system" else "user"

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["action"] = None if self.action is None else asdict(self.action)
        return row

    @staticmethod
    def from_json(row: dict[str, Any]) -> "Turn":
        action = None if row["action"] is None else ParsedAction.from_json(row["action"])
        return Turn(role=row["role"], text=row["text"], start=row["start"], end=row["end"],
                    reward=row["reward"], action=action, errors=list(row["errors"]))


TOKEN_FIELDS = ("token_ids", "loss_mask", "logprobs", "ref_logprobs", "values", "advantages")
"""Per-token lists of a Trajectory, each as long as ``token_ids`` (or empty when not filled)."""


@dataclass
class Trajectory:
    """One episode, from the first prompt to the end, as every layer sees it.

    The env's side (turns, outcome, flags) comes from the episode loop; ``rewards``/``reward`` from
    the scoring step; per-token fields from the rollout (``token_ids``, ``loss_mask`` — 1 exactly
    on tokens the policy produced — and the sampler's ``logprobs``) and from learners
    (``ref_logprobs``, ``values``, ``advantages``). ``group_id`` is shared by samples of one prompt.
    """

    task_id: str
    env_id: str
    source: str
    group_id: str = ""
    turns: list[Turn] = field(default_factory=list)
    outcome: Outcome | None = None
    format_valid: bool = False
    terminated: bool = False
    truncated: bool = False
    rewards: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ref_logprobs: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)

    @property
    def messages(self) -> list[dict[str, str]]:
        """The episode as chat messages (``role``/``content``)."""
        return [{"role": turn.chat_role, "content": turn.text} for turn in self.turns]

    @property
    def actions(self) -> list[ParsedAction]:
        """The parsed action of every agent turn, in order."""
        return [turn.action for turn in self.turns if turn.action is not None]

    @property
    def errors(self) -> list[str]:
        return [error for turn in self.turns for error in turn.errors]

    @property
    def num_tool_calls(self) -> int:
        """Tool calls the env answered (calls beside a final ``<recommend>`` are ignored)."""
        return sum(len(a.tool_calls) for a in self.actions if a.recommend is None)

    @property
    def rank(self) -> int | None:
        """The target's rank for ranking episodes (None otherwise, or without a usable ranking)."""
        return self.outcome.rank if isinstance(self.outcome, RankingOutcome) else None

    @property
    def success_rank(self) -> int | None:
        """The rank success is counted by, for every kind of task: a ranking's target rank; 1 for a
        conversation the user accepted, or a rating within ``RATING_HIT_ERROR`` of the truth; else None.

        >>> Trajectory(task_id="t", env_id="e", source="s", outcome=RatingOutcome(4.4, 4.0)).success_rank
        1
        """
        if isinstance(self.outcome, DialogueOutcome):
            return 1 if self.outcome.accepted else None
        if isinstance(self.outcome, RatingOutcome):
            hit = self.outcome.prediction is not None and abs(self.outcome.prediction - self.outcome.target) <= RATING_HIT_ERROR
            return 1 if hit else None
        return self.rank

    def to_row(self) -> dict[str, Any]:
        """A flat row for a HF dataset (turns, outcome and rewards as JSON strings); lossless."""
        row = {name: getattr(self, name) for name in
               ("task_id", "env_id", "source", "group_id", "format_valid", "terminated", "truncated", "reward")}
        row["turns"] = json.dumps([turn.to_json() for turn in self.turns])
        row["outcome"] = json.dumps(None if self.outcome is None else self.outcome.to_json())
        row["rewards"] = json.dumps(self.rewards)
        row.update({name: list(getattr(self, name)) for name in TOKEN_FIELDS})
        return row

    @staticmethod
    def from_row(row: dict[str, Any]) -> "Trajectory":
        data = dict(row)
        data["turns"] = [Turn.from_json(t) for t in json.loads(data["turns"])]
        outcome = json.loads(data["outcome"])
        data["outcome"] = None if outcome is None else OUTCOME_KINDS[outcome["kind"]].from_json(outcome)
        data["rewards"] = json.loads(data["rewards"])
        for name in TOKEN_FIELDS:
            data[name] = list(data[name] or [])
        return Trajectory(**data)
