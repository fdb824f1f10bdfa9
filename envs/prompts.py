"""Compact prompts: on CPU every prompt token costs, so ids and short titles only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envs.types import Catalog, RankingTask

INSTRUCTIONS = (
    "You rank candidate items for a user. Each turn write <plan>...</plan> and then either call "
    'tools with <tool_call>{"name": ..., "arguments": {...}}</tool_call>, or finish with '
    "<reflection>...</reflection><recommend>id, id, ...</recommend> listing candidate ids, best first."
)


def system_prompt(tool_specs: Sequence[Any], *, instructions: str = INSTRUCTIONS) -> str:
    """The system message: the protocol and one line per tool.

    Args:
        tool_specs: objects with ``name``, ``description`` and a JSON-schema ``parameters``.
        instructions: the env's protocol (default: ranking's).
    """
    lines = [instructions, "Tools:"]
    for spec in tool_specs:
        args = ", ".join(spec.parameters.get("properties", {}))
        lines.append(f"- {spec.name}({args}): {spec.description}")
    return "\n".join(lines)


def task_prompt(task: RankingTask, catalog: Catalog, *, history_in_prompt: int) -> str:
    """The first user message: who, what they watched last, and the candidate ids."""
    recent = task.history[-history_in_prompt:] if history_in_prompt > 0 else ()
    recent_text = "; ".join(f"{i} {_short_title(catalog, i)}" for i in recent) or "none"
    return (
        f"User {task.user_id}. Recent: {recent_text}.\n"
        f"Candidates: {', '.join(task.candidate_item_ids)}"
    )


def _short_title(catalog: Catalog, item_id: str) -> str:
    item = catalog.items.get(item_id)
    return item.title[:40] if item else "?"
