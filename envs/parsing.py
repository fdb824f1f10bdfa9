"""The one place where agent text is parsed into a ParsedAction.

The agent speaks in tags::

    <plan>...</plan>
    <tool_call>{"name": "item_cf", "arguments": {"user_id": "196"}}</tool_call>
    <reflection>...</reflection>
    <recommend>242, 51, 1043</recommend>

Parsing never raises: whatever cannot be read becomes a message in ``ParsedAction.errors``.
"""

from __future__ import annotations

import json
import re

from envs.types import ParsedAction, ToolCall

TAGS = ("plan", "tool_call", "reflection", "recommend")
_BLOCK = re.compile(r"<(plan|tool_call|reflection|recommend)>(.*?)</\1>", re.DOTALL)
_OPEN = re.compile(r"<(plan|tool_call|reflection|recommend)>")
_ID_SEPARATOR = re.compile(r"[,\s]+")


def parse_action(text: str) -> ParsedAction:
    """Parses one agent turn.

    >>> a = parse_action('<plan>look</plan><recommend>3, 1 ,2</recommend>')
    >>> a.plan, a.recommend, a.errors
    ('look', ['3', '1', '2'], [])
    >>> parse_action('<recommend>3, 1').errors
    ['unclosed <recommend> tag']
    """
    action = ParsedAction()
    closed_spans: list[tuple[int, int]] = []
    for match in _BLOCK.finditer(text):
        tag, body = match.group(1), match.group(2).strip()
        closed_spans.append(match.span())
        if tag == "plan":
            action.plan = body if action.plan is None else f"{action.plan}\n{body}"
        elif tag == "reflection":
            action.reflection = body if action.reflection is None else f"{action.reflection}\n{body}"
        elif tag == "tool_call":
            call, error = _parse_tool_call(body)
            if call is not None:
                action.tool_calls.append(call)
            else:
                action.errors.append(error)
        elif action.recommend is not None:
            action.errors.append("more than one <recommend> block")
        else:
            action.recommend = [i for i in _ID_SEPARATOR.split(body) if i]
    for match in _OPEN.finditer(text):
        if not any(start <= match.start() < end for start, end in closed_spans):
            action.errors.append(f"unclosed <{match.group(1)}> tag")
    if not action.tool_calls and action.recommend is None and not action.errors:
        action.errors.append("no <tool_call> or <recommend> tag found")
    return action


def _parse_tool_call(body: str) -> tuple[ToolCall | None, str]:
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"tool_call is not valid JSON ({exc.msg})"
    if not isinstance(payload, dict):
        return None, "tool_call must be a JSON object with 'name' and 'arguments'"
    name = payload.get("name")
    if not isinstance(name, str) or not name:
        return None, "tool_call lacks a string 'name'"
    arguments = payload.get("arguments", {})
    if not isinstance(arguments, dict):
        return None, "tool_call 'arguments' must be a JSON object"
    return ToolCall(name=name, arguments=arguments), ""


def render_tool_call(call: ToolCall) -> str:
    """Serializes a tool call the way agents must write it.

    >>> render_tool_call(ToolCall("item_cf", {"user_id": "7"}))
    '<tool_call>{"name": "item_cf", "arguments": {"user_id": "7"}}</tool_call>'
    """
    return f"<tool_call>{json.dumps({'name': call.name, 'arguments': call.arguments})}</tool_call>"
