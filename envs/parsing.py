"""The one place where agent text is parsed into a ParsedAction.

The agent speaks in tags::

    <plan>...</plan>
    <tool_call>{"name": "item_cf", "arguments": {"user_id": "196"}}</tool_call>
    <reflection>...</reflection>
    <recommend>242, 51, 1043</recommend>
    <answer>4</answer>                       (rating prediction)
    <act>ask_preference</act><say>...</say>  (conversation)

Each env names the tags it takes; any other is an error.

Parsing never raises: whatever cannot be read becomes a message in ``ParsedAction.errors``.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Iterable, Sequence

from envs.types import ParsedAction, ToolCall

TAGS = ("plan", "tool_call", "reflection", "recommend", "answer", "act", "say")
_TAG = re.compile(r"<(/?)(" + "|".join(TAGS) + r")>")
_SINGLE = {"recommend": "recommend", "answer": "answer", "act": "act", "say": "utterance"}
"""Tags an action holds at most once, and the ParsedAction field each fills."""
_SHOWN_ID_CHARS = 40
_ID_SEPARATOR = re.compile(r"[,\s]+")


def tag_blocks(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``<tag>body</tag>`` blocks of ``text`` in order, and the tags opened but never closed.

    A block runs from an opening tag to the first closing tag of the same name (tags in between are
    body); an opening tag inside no block is unclosed. Linear in the text, whatever it holds.

    >>> tag_blocks("<plan>a <recommend>1</recommend></plan> <recommend>2")
    ([('plan', 'a <recommend>1</recommend>')], ['recommend'])
    """
    tokens = [(match.start(), match.end(), bool(match.group(1)), match.group(2)) for match in _TAG.finditer(text)]
    closes: dict[str, list[int]] = {tag: [] for tag in TAGS}
    """Per tag, the indices in ``tokens`` of its closing tags, ascending."""
    for index, (_, _, closing, tag) in enumerate(tokens):
        if closing:
            closes[tag].append(index)
    blocks, unclosed = [], []
    index = 0
    while index < len(tokens):
        start, end, closing, tag = tokens[index]
        if not closing:
            after = bisect.bisect_right(closes[tag], index)
            if after == len(closes[tag]):
                unclosed.append(tag)
            else:
                close = closes[tag][after]
                blocks.append((tag, text[end : tokens[close][0]]))
                index = close
        index += 1
    return blocks, unclosed


RANKING_TAGS = ("plan", "tool_call", "reflection", "recommend")
RATING_TAGS = ("plan", "tool_call", "reflection", "answer")


def parse_rating(answer: str | None) -> float | None:
    """The rating an ``<answer>`` holds, or None if it is not a finite number (the range is the env's).

    >>> parse_rating(" 4 "), parse_rating("3.5"), parse_rating("four"), parse_rating("nan"), parse_rating(None)
    (4.0, 3.5, None, None, None)
    """
    if answer is None:
        return None
    try:
        value = float(answer)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def distinct_ids(item_ids: Sequence[str], allowed: Iterable[str], *,
                 outside: str = "recommended id '{}' is not a candidate",
                 twice: str = "recommended id '{}' is listed twice") -> tuple[list[str], list[str]]:
    """The listed ids that are ``allowed``, each once and in order, and an error for every id
    dropped (``outside`` or ``twice``, formatted with the id cut to 40 characters) or for an empty
    list.

    >>> distinct_ids(["b", "x", "b"], ["a", "b"])
    (['b'], ["recommended id 'x' is not a candidate", "recommended id 'b' is listed twice"])
    """
    allowed_set = set(allowed)
    kept: dict[str, None] = {}
    errors = []
    for item_id in item_ids:
        if item_id not in allowed_set:
            errors.append(outside.format(item_id[:_SHOWN_ID_CHARS]))
        elif item_id in kept:
            errors.append(twice.format(item_id[:_SHOWN_ID_CHARS]))
        else:
            kept[item_id] = None
    if not item_ids:
        errors.append("empty <recommend>")
    return list(kept), errors


def read_ranking(item_ids: Sequence[str], candidates: Sequence[str]) -> tuple[list[str], list[str]]:
    """The full candidate ranking a ``<recommend>`` list gives, and what is wrong with the list:
    listed candidates first (non-candidates and repeats are dropped, each an error), the unlisted
    ones after in the order they were shown, so a partial ranking still ranks; empty when no
    candidate is listed.

    >>> read_ranking(["b", "x", "b"], ["a", "b", "c"])
    (['b', 'a', 'c'], ["recommended id 'x' is not a candidate", "recommended id 'b' is listed twice"])
    """
    listed, errors = distinct_ids(item_ids, candidates)
    chosen = set(listed)
    ranking = [*listed, *(i for i in candidates if i not in chosen)] if listed else []
    return ranking, errors


def parse_action(text: str, *, tags: Sequence[str] = RANKING_TAGS, plan_only: bool = False) -> ParsedAction:
    """Parses one agent turn of an env that takes ``tags``; with ``plan_only``, a turn holding only
    a ``<plan>`` is a planning step, not an error.

    >>> a = parse_action('<plan>look</plan><recommend>3, 1 ,2</recommend>')
    >>> a.plan, a.recommend, a.errors
    ('look', ['3', '1', '2'], [])
    >>> parse_action('<recommend>3, 1').errors
    ['unclosed <recommend> tag']
    """
    action = ParsedAction()
    blocks, unclosed = tag_blocks(text)
    for tag, body in blocks:
        body = body.strip()
        if tag not in tags:
            action.errors.append(f"<{tag}> is not used here; use {', '.join(f'<{t}>' for t in tags)}")
        elif tag == "plan":
            action.plan = body if action.plan is None else f"{action.plan}\n{body}"
        elif tag == "reflection":
            action.reflection = body if action.reflection is None else f"{action.reflection}\n{body}"
        elif tag == "tool_call":
            call, error = _parse_tool_call(body)
            if call is not None:
                action.tool_calls.append(call)
            else:
                action.errors.append(error)
        elif getattr(action, _SINGLE[tag]) is not None:
            action.errors.append(f"more than one <{tag}> block")
        elif tag == "recommend":
            action.recommend = [i for i in _ID_SEPARATOR.split(body) if i]
        else:
            setattr(action, _SINGLE[tag], body)
    action.errors.extend(f"unclosed <{tag}> tag" for tag in unclosed)
    final = (action.recommend, action.answer, action.act)
    planning = plan_only and action.plan is not None
    if not action.tool_calls and all(value is None for value in final) and not action.errors and not planning:
        wanted = [f"<{tag}>" for tag in tags if tag not in ("plan", "reflection", "say")]
        action.errors.append(f"no {' or '.join(wanted)} tag found")
    return action


def _parse_tool_call(body: str) -> tuple[ToolCall | None, str]:
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"tool_call is not valid JSON ({exc.msg})"
    except (RecursionError, ValueError):  # nested too deep, or an integer too long to convert
        return None, "tool_call is not valid JSON (nested too deep or a number too long)"
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
