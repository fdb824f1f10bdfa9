"""The tools an LLM agent calls with ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``.

Outputs are short plain text because a small model reads every token. ``Toolbox.call`` never
raises on bad input: each mistake becomes ``ToolResult(ok=False)`` with a one-line error the
agent can learn from. Argument checks come from each tool's JSON schema (plus id lookups keyed
by parameter name), so a new tool gets validation by declaring its schema.

The tools follow MACRec's (UserInfo, ItemInfo, UserHistory, ItemHistory, Search, Lookup,
Summarize, Finish) and add one ranking tool per recommendation signal (MARS's verbalized CF).
Nothing a task-bound tool says comes from the task's target or later: the graph holds training
interactions only, and the task's own user is answered from ``task.history``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from envs.signals.signals import Signal, graph_signals, short_scores
from envs.tools.graph import InteractionGraph, Rating
from envs.tools.items import first_interaction_times, item_label
from envs.tools.search import item_search
from envs.tools.summarize import summarize_history
from envs.types import Catalog, Item, RankingTask, Task

SUMMARIZED_ITEMS = 100
"""Most recent history items ``summarize`` reads (a task's history is at most 50)."""


@dataclass(frozen=True)
class ToolSpec:
    """What the agent is told about one tool."""

    name: str
    description: str
    parameters: dict[str, Any]

    def openai_schema(self) -> dict[str, Any]:
        """The tool in OpenAI function-calling format (as chat templates expect)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True)
class ToolResult:
    """A tool's reply: ``text`` goes back to the agent; ``data`` holds the same answer as values
    (a ranked id list, a history id list, a dict, an Item) for agents that read structure, not text;
    ``error`` is set when ``ok`` is False."""

    name: str
    text: str
    ok: bool
    error: str | None = None
    data: Any = None


class ToolInputError(ValueError):
    """Bad tool arguments; ``Toolbox.call`` turns it into a failed ToolResult."""


def rank_candidates(scores: dict[str, float], candidate_item_ids: Sequence[str]) -> list[str]:
    """Candidates by descending score; ties (and missing scores, taken as 0) keep input order.

    >>> rank_candidates({"a": 1.0, "b": 2.0}, ["a", "b", "c"])
    ['b', 'a', 'c']
    """
    candidates = list(dict.fromkeys(candidate_item_ids))
    return sorted(candidates, key=lambda item_id: -scores.get(item_id, 0.0))


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda value: isinstance(value, str),
    # bool is an int subclass in Python, but `true` is not a count.
    "integer": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "number": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    "boolean": lambda value: isinstance(value, bool),
    "array": lambda value: isinstance(value, list),
    "object": lambda value: isinstance(value, dict),
}


def _brief(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut short: error texts go back into a small model's context."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_arguments(parameters: dict[str, Any], arguments: object) -> dict[str, Any]:
    """Check arguments against a JSON schema subset and fill defaults.

    Supports ``required``, ``properties`` with ``type``, ``minimum``, ``maximum``, ``enum``,
    ``maxLength``, array ``items`` with a ``type``, and ``default``; unknown arguments are rejected.

    Raises:
        ToolInputError: The arguments do not fit the schema.
    """
    if not isinstance(arguments, dict):
        raise ToolInputError(f"arguments must be a JSON object, got {type(arguments).__name__}")
    properties: dict[str, dict[str, Any]] = parameters.get("properties", {})
    unexpected = [name for name in arguments if name not in properties]
    if unexpected:
        raise ToolInputError(
            f"unexpected argument '{unexpected[0]}'; allowed: {', '.join(properties)}"
        )
    missing = [name for name in parameters.get("required", []) if name not in arguments]
    if missing:
        raise ToolInputError(f"missing required argument '{missing[0]}'")
    checked = {}
    for name, schema in properties.items():
        if name not in arguments:
            if "default" in schema:
                checked[name] = schema["default"]
            continue
        value = arguments[name]
        expected = schema.get("type")
        if expected in _JSON_TYPES and not _JSON_TYPES[expected](value):
            raise ToolInputError(f"argument '{name}' must be a JSON {expected}, got {_brief(value)}")
        if _JSON_TYPES["number"](value):
            low, high = schema.get("minimum"), schema.get("maximum")
            if low is not None and value < low:
                raise ToolInputError(f"argument '{name}' must be >= {low}, got {_brief(value)}")
            if high is not None and value > high:
                raise ToolInputError(f"argument '{name}' must be <= {high}, got {_brief(value)}")
        if "enum" in schema and value not in schema["enum"]:
            raise ToolInputError(f"argument '{name}' must be one of {', '.join(map(str, schema['enum']))}, "
                                 f"got {_brief(value)}")
        if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
            raise ToolInputError(f"argument '{name}' is longer than {schema['maxLength']} characters")
        item_type = schema.get("items", {}).get("type")
        if isinstance(value, list) and item_type in _JSON_TYPES:
            wrong = [entry for entry in value if not _JSON_TYPES[item_type](entry)]
            if wrong:
                raise ToolInputError(f"argument '{name}' must hold JSON {item_type}s, got {_brief(wrong[0])}")
        checked[name] = value
    return checked


def _tool_spec(name: str, description: str, properties: dict[str, Any]) -> ToolSpec:
    """A spec whose parameters are required unless they declare a default."""
    required = [key for key, schema in properties.items() if "default" not in schema]
    parameters = {"type": "object", "properties": properties, "required": required}
    return ToolSpec(name=name, description=description, parameters=parameters)


def _target_item_id(task: Task) -> str | None:
    """The item whose interaction the task holds out (a ranking or dialogue task's target, a rating
    task's item)."""
    return getattr(task, "target_item_id", None)


LOOKUP_FIELDS: dict[str, Callable[[Item], Any]] = {
    "title": lambda item: item.title,
    "year": lambda item: item.year,
    "genres": lambda item: list(item.genres),
}
"""The item fields ``lookup`` reads (besides ``users``, which comes from the graph)."""


class Toolbox:
    """The agent's tools over one catalog and its (training) interaction graph.

    When ``task`` is bound, the task user's history is ``task.history``, ranking tools rank
    ``task.candidate_item_ids``, ``item_history`` shows no rating from the task's target time on
    (and the task's user only for items in its history), and ``search`` searches the candidates
    unless asked for the whole catalog (the candidates are what the agent must rank; item text
    reveals nothing about the target either way). So the target can never leak through a tool.

    Args:
        catalog: Users and items the ids refer to.
        graph: Interaction graph built from training interactions only.
        task: The task being solved, if any (a ranking task; a rating task's item counts as its
            target).
        signals: One ranking tool per signal (default: ``envs.signals.graph_signals``).
        max_k: Largest ``k`` a tool accepts.
        generate: An LLM (``prompt -> text``) that makes ``summarize`` abstractive; without one
            it is extractive.
    """

    def __init__(
        self,
        catalog: Catalog,
        graph: InteractionGraph,
        *,
        task: RankingTask | None = None,
        signals: Mapping[str, Signal] | None = None,
        max_k: int = 20,
        generate: Callable[[str], str] | None = None,
    ):
        self.catalog = catalog
        self.graph = graph
        self.task = task
        self.generate = generate
        self.signals = graph_signals(catalog, graph) if signals is None else dict(signals)
        self.max_k = max_k
        user_id = {"type": "string", "description": 'user id, e.g. "196"'}
        item_id = {"type": "string", "description": 'item id, e.g. "242"'}
        k_max = {"type": "integer", "minimum": 1, "maximum": max_k}
        tools = [
            (
                _tool_spec("user_info", "A user's demographics and number of items.",
                           {"user_id": user_id}),
                self._user_info,
            ),
            (
                _tool_spec("item_info", "An item's title, year, genres and number of users.",
                           {"item_id": item_id}),
                self._item_info,
            ),
            (
                _tool_spec("user_history", "A user's last k items, oldest first.",
                           {"user_id": user_id, "k": {**k_max, "default": min(5, max_k)}}),
                self._user_history,
            ),
            (
                _tool_spec("item_history", "An item's last k ratings, most recent first, as user:rating.",
                           {"item_id": item_id, "k": {**k_max, "default": min(5, max_k)}}),
                self._item_history,
            ),
            (
                _tool_spec("search", "Top k items whose title, year or genres match the query (BM25); "
                           "only the task's candidates unless candidates_only is false.",
                           {"query": {"type": "string", "maxLength": 200, "description": 'e.g. "star wars"'},
                            "k": {**k_max, "default": min(5, max_k)},
                            "candidates_only": {"type": "boolean", "default": True}}),
                self._search,
            ),
            (
                _tool_spec("lookup", "One field of an item: title, year, genres or users (how many).",
                           {"item_id": item_id, "field": {"type": "string", "enum": [*LOOKUP_FIELDS, "users"]}}),
                self._lookup,
            ),
            (
                _tool_spec("summarize", "A summary of a user's history, made chunk by chunk, oldest first.",
                           {"user_id": user_id,
                            "chunk_size": {"type": "integer", "minimum": 2, "maximum": 50, "default": 10}}),
                self._summarize,
            ),
        ]
        for signal in self.signals.values():
            spec = _tool_spec(signal.name, signal.description,
                              {"user_id": user_id, "k": {**k_max, "default": min(10, max_k)}})
            tools.append((spec, functools.partial(self._signal_ranking, signal)))
        tools.append((
            _tool_spec("finish", "Finish with candidate ids, best first (the same as <recommend>).",
                       {"item_ids": {"type": "array", "items": {"type": "string"}}}),
            self._finish,
        ))
        self._tools = {spec.name: (spec, handler) for spec, handler in tools}
        # Id checks keyed by parameter name, so any tool taking a user_id or item_id gets them.
        self._id_checks: dict[str, Callable[[str], None]] = {
            "user_id": self._check_user,
            "item_id": self._check_item,
        }

    @property
    def specs(self) -> list[ToolSpec]:
        """Every tool's spec, in a fixed order."""
        return [spec for spec, _ in self._tools.values()]

    @property
    def names(self) -> list[str]:
        """Every tool's name."""
        return list(self._tools)

    def openai_schemas(self) -> list[dict[str, Any]]:
        """Every tool in OpenAI function-calling format."""
        return [spec.openai_schema() for spec in self.specs]

    def call(self, name: str, arguments: object) -> ToolResult:
        """Run one tool; never raises for bad input.

        Args:
            name: Tool name.
            arguments: Parsed JSON arguments (should be an object).

        Returns:
            The tool's text, or ``ok=False`` with ``text = "error: <reason>"``.
        """
        try:
            if not isinstance(name, str) or name not in self._tools:
                raise ToolInputError(
                    f"unknown tool {_brief(name)}; available: {', '.join(self._tools)}"
                )
            spec, handler = self._tools[name]
            checked = validate_arguments(spec.parameters, arguments)
            for parameter, value in checked.items():
                if parameter in self._id_checks:
                    self._id_checks[parameter](value)
            text, data = handler(**checked)
            return ToolResult(name=name, text=text, ok=True, data=data)
        except ToolInputError as error:
            return ToolResult(name=str(name), text=f"error: {error}", ok=False, error=str(error))

    def _check_user(self, user_id: str) -> None:
        known = user_id in self.catalog.users or self.graph.has_user(user_id)
        if not known and not (self.task and user_id == self.task.user_id):
            raise ToolInputError(f"unknown user id {_brief(user_id)}")

    def _check_item(self, item_id: str) -> None:
        if item_id not in self.catalog.items:
            raise ToolInputError(f"unknown item id {_brief(item_id)}")

    def _history(self, user_id: str) -> list[str]:
        if self.task is not None and user_id == self.task.user_id:
            return list(self.task.history)
        return self.graph.user_items(user_id)

    def _user_info(self, user_id: str) -> tuple[str, dict[str, Any]]:
        user = self.catalog.users.get(user_id)
        attributes = dict(user.attributes) if user else {}
        listed = ", ".join(f"{key} {value}" for key, value in attributes.items())
        prefix = f"user {user_id}: " + (f"{listed}; " if listed else "")
        count = len(self._history(user_id))
        return f"{prefix}{count} items", {**attributes, "num_items": count}

    def _item_info(self, item_id: str) -> tuple[str, Item]:
        item = self.catalog.items[item_id]
        return f"item {item_id}: {item_label(item)}; {self.graph.popularity(item_id)} users", item

    def _user_history(self, user_id: str, k: int) -> tuple[str, list[str]]:
        recent = self._history(user_id)[-k:]
        if not recent:
            return f"user {user_id} has no history", []
        entries = "; ".join(
            f"{i} {item_label(self.catalog.items[i])}" if i in self.catalog.items else i
            for i in recent
        )
        return f"user {user_id} last {len(recent)}: {entries}", recent

    def _item_ratings(self, item_id: str) -> list[Rating]:
        """The item's ratings, most recent first, as a task may see them: none from the task's target
        time on (when the catalog records it), and the task's user only for items in its history."""
        ratings = self.graph.item_raters(item_id)
        if self.task is None:
            return ratings
        own_user, own_item = self.task.user_id, item_id in self.task.history
        cutoff = first_interaction_times(self.catalog).get((own_user, _target_item_id(self.task)))
        return [rating for rating in ratings
                if (own_item or rating.user_id != own_user) and (cutoff is None or rating.timestamp < cutoff)]

    def _item_history(self, item_id: str, k: int) -> tuple[str, list[dict[str, Any]]]:
        ratings = self._item_ratings(item_id)
        if not ratings:
            return f"item {item_id} has no ratings", []
        recent = ratings[:k]
        listed = ", ".join(f"{rating.user_id}:{rating.rating:g}" for rating in recent)
        data = [{"user_id": rating.user_id, "rating": rating.rating} for rating in recent]
        return f"item {item_id} last {len(recent)} of {len(ratings)} ratings: {listed}", data

    def _search(self, query: str, k: int, candidates_only: bool) -> tuple[str, list[dict[str, Any]]]:
        within = getattr(self.task, "candidate_item_ids", None) if candidates_only else None
        found = item_search(self.catalog).search(query, k, within=within)
        if not found:
            return f"search {_brief(query)} found no items", []
        listed = "; ".join(f"{item_id} {item_label(self.catalog.items[item_id])} {score:.1f}"
                           for item_id, score in found)
        data = [{"item_id": item_id, "title": self.catalog.items[item_id].title, "score": round(score, 2)}
                for item_id, score in found]
        return f"search {_brief(query)}: {listed}", data

    def _lookup(self, item_id: str, field: str) -> tuple[str, Any]:
        if field == "users":
            value = self.graph.popularity(item_id)
        else:
            value = LOOKUP_FIELDS[field](self.catalog.items[item_id])
        shown = ", ".join(value) if isinstance(value, list) else str(value)
        return f"item {item_id} {field}: {shown or 'unknown'}", value

    def _summarize(self, user_id: str, chunk_size: int) -> tuple[str, dict[str, Any]]:
        history = [self.catalog.items[i] for i in self._history(user_id)[-SUMMARIZED_ITEMS:]
                   if i in self.catalog.items]
        if not history:
            return f"user {user_id} has no history", {"summary": "", "chunks": []}
        summary, chunks = summarize_history(history, chunk_size=chunk_size, generate=self.generate)
        text = f"user {user_id}, {len(history)} items in {len(chunks)} parts: {summary}"
        return text, {"summary": summary, "chunks": chunks}

    def _finish(self, item_ids: list[str]) -> tuple[str, list[str]]:
        """MACRec's Finish: the env ends the episode with this ranking, exactly as for ``<recommend>``."""
        return f"finish with {len(item_ids)} item ids", list(item_ids)

    def _pool(self, user_id: str) -> list[str]:
        """Items to rank: the task's candidates, or every graph item the user has not seen."""
        if self.task is not None:
            return list(self.task.candidate_item_ids)
        seen = set(self._history(user_id))
        return [item_id for item_id in self.graph.item_ids if item_id not in seen]

    def _signal_ranking(self, signal: Signal, user_id: str, k: int) -> tuple[str, list[str]]:
        """The top ``k`` of the pool by ``signal``, as ``id:score`` with scores scaled to 0-100."""
        pool = self._pool(user_id)
        scores = signal.scores(user_id, self._history(user_id), pool)
        if self.task is None and signal.sparse:
            # Without candidates, zero scores carry no information: list only real matches.
            pool = [item_id for item_id in pool if scores.get(item_id, 0.0) > 0]
        top = rank_candidates(scores, pool)[:k]
        if not top:
            return f"{signal.name} found no items for user {user_id}", []
        listed = ", ".join(f"{item_id}:{score}" for item_id, score in zip(top, short_scores(scores, top)))
        return f"{signal.name} ranking for user {user_id}: {listed}", top
