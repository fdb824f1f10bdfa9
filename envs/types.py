"""Types shared by every layer: catalog records, tasks, parsed actions and the one Trajectory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


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


@dataclass(frozen=True)
class RecTask:
    """One ranking task: rank ``candidate_item_ids`` for ``user_id`` given ``history``.

    ``history`` holds the item ids the user interacted with before the target, oldest first;
    it never contains ``target_item_id``.
    """

    task_id: str
    user_id: str
    history: tuple[str, ...]
    candidate_item_ids: tuple[str, ...]
    target_item_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "user_id": self.user_id,
            "history": list(self.history),
            "candidate_item_ids": list(self.candidate_item_ids),
            "target_item_id": self.target_item_id,
        }

    @staticmethod
    def from_json(row: dict[str, Any]) -> "RecTask":
        return RecTask(
            task_id=str(row["task_id"]),
            user_id=str(row["user_id"]),
            history=tuple(str(i) for i in row["history"]),
            candidate_item_ids=tuple(str(i) for i in row["candidate_item_ids"]),
            target_item_id=str(row["target_item_id"]),
        )


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
    errors: list[str] = field(default_factory=list)


@dataclass
class Trajectory:
    """One episode, from the first prompt to the end, as every layer sees it.

    Text fields are always filled; token fields are filled by the rollout (or by tokenizing the
    messages for SFT). ``loss_mask`` is 1 exactly on tokens the policy produced.
    """

    task_id: str
    env_id: str
    source: str
    messages: list[dict[str, str]]
    actions: list[ParsedAction]
    target_item_id: str
    ranking: list[str] = field(default_factory=list)
    rank: int | None = None
    format_valid: bool = False
    num_tool_calls: int = 0
    terminated: bool = False
    truncated: bool = False
    errors: list[str] = field(default_factory=list)
    rewards: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0
    group_index: int = 0
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)

    def to_row(self) -> dict[str, Any]:
        """A flat row for a HF dataset (nested parts as JSON strings)."""
        row = asdict(self)
        row["messages"] = json.dumps(self.messages)
        row["actions"] = json.dumps([asdict(a) for a in self.actions])
        row["rewards"] = json.dumps(self.rewards)
        row["rank"] = -1 if self.rank is None else self.rank
        return row

    @staticmethod
    def from_row(row: dict[str, Any]) -> "Trajectory":
        data = dict(row)
        data["messages"] = json.loads(data["messages"])
        data["actions"] = [
            ParsedAction(
                plan=a["plan"],
                tool_calls=[ToolCall(**c) for c in a["tool_calls"]],
                reflection=a["reflection"],
                recommend=a["recommend"],
                errors=list(a["errors"]),
            )
            for a in json.loads(data["actions"])
        ]
        data["rewards"] = json.loads(data["rewards"])
        data["rank"] = None if data["rank"] < 0 else data["rank"]
        return Trajectory(**data)
