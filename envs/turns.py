"""What every text env does with an agent's turn: read it within bounds, parse it, answer its tool
calls, and report at most a few errors. Whatever a sampled policy writes is answered in milliseconds."""

from __future__ import annotations

import string
from collections.abc import Collection, Sequence
from typing import Any

from gymnasium import spaces

from envs.parsing import parse_action
from envs.tools import Toolbox, ToolResult
from envs.types import Catalog, ParsedAction, Task

MAX_TEXT = 16_384
"""Characters of an action that are read (the rest is dropped, with an error)."""
MAX_TOOL_CALLS = 8
"""Tool calls answered in one turn (the rest are dropped, with an error)."""
MAX_ERRORS = 16
"""Error messages reported for one turn (the rest are counted)."""


def text_spaces(catalog: Catalog) -> tuple[spaces.Text, spaces.Text]:
    """An env's observation and action spaces: text of up to ``MAX_TEXT`` characters from the
    printable ones and those of the catalog's titles and genres."""
    charset = set(string.printable) | {c for item in catalog.items.values() for c in item.title}
    charset |= {c for item in catalog.items.values() for genre in item.genres for c in genre}
    observation = spaces.Text(max_length=MAX_TEXT, min_length=0, charset="".join(sorted(charset)))
    return observation, spaces.Text(max_length=MAX_TEXT, min_length=0, charset=observation.character_set)


def chosen_tools(specs: Sequence[Any], names: Sequence[str] | None, *, env_id: str) -> list[Any]:
    """The tool specs ``names`` choose (None: all of them), in the toolbox's order.

    Raises:
        ValueError: a name is not one of ``specs``.
    """
    known = [spec.name for spec in specs]
    chosen = list(names) if names is not None else known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ValueError(f"unknown tool name(s) {unknown} for {env_id}; available: {known}")
    return [spec for spec in specs if spec.name in chosen]


def episode_task(env: Any, options: dict | None, kind: type[Task]) -> Task:
    """The task ``reset(options=)`` asks for: ``options["task"]``, or the env's own tasks'
    ``options["task_index"]`` (a seeded draw by default).

    Raises:
        ValueError: no task given to an env built without tasks, or a task of another kind.
    """
    options = options or {}
    if "task" in options:
        task = options["task"]
    elif env.tasks:
        task = env.tasks[options.get("task_index", int(env.np_random.integers(len(env.tasks))))]
    else:
        raise ValueError(f"reset needs options={{'task': {kind.__name__}}} when the env was built without tasks")
    if not isinstance(task, kind):
        raise ValueError(f"{env.env_id} plays {kind.kind} tasks, not {type(task).__name__}")
    return task


def whitespace_tokens(text: str) -> int:
    """A tokenizer-free token count, used when the caller gives none."""
    return len(text.split())


def read_action(action: object, *, tags: Sequence[str], plan_only: bool = False) -> tuple[str, ParsedAction, list[str]]:
    """The text read of ``action`` (at most ``MAX_TEXT`` characters), its parse with the env's
    ``tags`` (at most ``MAX_TOOL_CALLS`` tool calls kept; ``plan_only``: see ``parse_action``), and
    the turn's errors so far.

    >>> text, parsed, errors = read_action("<recommend>1</recommend>" + " " * MAX_TEXT, tags=("recommend",))
    >>> parsed.recommend, errors
    (['1'], ['action of 16408 characters: only the first 16384 were read'])
    """
    errors = []
    if not isinstance(action, str):
        errors.append(f"an action is text, not {type(action).__name__}")
        action = ""
    if len(action) > MAX_TEXT:
        errors.append(f"action of {len(action)} characters: only the first {MAX_TEXT} were read")
        action = action[:MAX_TEXT]
    parsed = parse_action(action, tags=tags, plan_only=plan_only)
    errors.extend(parsed.errors)
    if len(parsed.tool_calls) > MAX_TOOL_CALLS:
        errors.append(f"{len(parsed.tool_calls)} tool calls in one turn: only the first {MAX_TOOL_CALLS} were answered")
        parsed.tool_calls = parsed.tool_calls[:MAX_TOOL_CALLS]
    return action, parsed, errors


def answer_tool_calls(toolbox: Toolbox, allowed: Collection[str], parsed: ParsedAction, *,
                      finish_hint: str) -> tuple[str, list[ToolResult], list[str]]:
    """The ``<tool_response>`` observation for a turn's tool calls (only ``allowed`` tools run), each
    call's result, and an error per failed call. A turn without calls gets an error observation
    that repeats the parse errors and says how to go on (``finish_hint``: how this env's episodes end)."""
    results = []
    for call in parsed.tool_calls:
        if call.name not in allowed:
            error = f"unknown tool '{call.name}'; available: {', '.join(sorted(allowed))}"
            results.append(ToolResult(name=call.name, text=f"error: {error}", ok=False, error=error))
        else:
            results.append(toolbox.call(call.name, call.arguments))
    responses = [f"<tool_response>{result.text}</tool_response>" for result in results]
    if not parsed.tool_calls:
        detail = "; ".join(capped(parsed.errors)) or "no action"
        responses.append(f"<tool_response>error: {detail}. Call a tool with <tool_call> or {finish_hint}."
                         "</tool_response>")
    errors = [f"tool call failed: {result.error}" for result in results if not result.ok]
    return "\n".join(responses), results, errors


def capped(errors: list[str]) -> list[str]:
    """At most ``MAX_ERRORS`` messages, the rest counted in a last one.

    >>> capped(["bad id"] * 20)[-1]
    '... and 5 more errors'
    """
    if len(errors) <= MAX_ERRORS:
        return errors
    return errors[: MAX_ERRORS - 1] + [f"... and {len(errors) - MAX_ERRORS + 1} more errors"]


def budget_spent(turns: int, max_turns: int, tokens: int, max_tokens: int) -> str | None:
    """Why an episode without a final answer ends now (its turn budget, then its token budget is
    spent), or None while both last.

    >>> budget_spent(3, 3, 10, 100), budget_spent(1, 3, 100, 100), budget_spent(1, 3, 10, 100)
    ('turn budget exhausted', 'token budget exhausted', None)
    """
    if turns >= max_turns:
        return "turn budget exhausted"
    return "token budget exhausted" if tokens >= max_tokens else None
