"""Tests for envs.parsing: every malformed turn becomes errors, never an exception."""

import pytest

from envs.parsing import parse_action, render_tool_call
from envs.types import ToolCall


def test_full_turn_is_parsed():
    action = parse_action(
        '<plan>check cf</plan>\n<tool_call>{"name": "item_cf", "arguments": {"user_id": "7"}}</tool_call>'
        '<tool_call>{"name": "user_info", "arguments": {"user_id": "7"}}</tool_call>'
    )
    assert action.plan == "check cf"
    assert action.tool_calls == [ToolCall("item_cf", {"user_id": "7"}), ToolCall("user_info", {"user_id": "7"})]
    assert action.recommend is None and action.errors == []


def test_recommend_ids_split_on_commas_and_spaces():
    action = parse_action("<reflection>ok</reflection><recommend> 5,3  9 ,</recommend>")
    assert action.reflection == "ok"
    assert action.recommend == ["5", "3", "9"]
    assert action.errors == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no <tool_call> or <recommend> tag found"),
        ("just words", "no <tool_call> or <recommend> tag found"),
        ("<plan>thinking</plan>", "no <tool_call> or <recommend> tag found"),
        ("<recommend>1, 2", "unclosed <recommend> tag"),
        ("<tool_call>{oops}</tool_call>", "tool_call is not valid JSON"),
        ('<tool_call>["item_cf"]</tool_call>', "tool_call must be a JSON object"),
        ('<tool_call>{"arguments": {}}</tool_call>', "tool_call lacks a string 'name'"),
        ('<tool_call>{"name": "x", "arguments": [1]}</tool_call>', "tool_call 'arguments' must be a JSON object"),
        ("<recommend>1</recommend><recommend>2</recommend>", "more than one <recommend> block"),
    ],
)
def test_malformed_turns_are_reported(text, error):
    action = parse_action(text)
    assert any(e.startswith(error) for e in action.errors), action.errors


def test_arguments_default_to_empty_and_render_round_trips():
    assert parse_action('<tool_call>{"name": "user_info"}</tool_call>').tool_calls == [ToolCall("user_info", {})]
    call = ToolCall("user_cf", {"user_id": "12", "k": 3})
    assert parse_action(render_tool_call(call)).tool_calls == [call]
