"""A sampled policy may write anything: thousands of random and adversarial actions (megabyte
strings, nested or unclosed tags, unicode oddities, deep JSON, ids that are not candidates, text that
imitates a tool response) never raise out of ``step``, never stall it, and cost the episode its
format reward."""

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from envs import registered_ids
from envs.data import build_tasks, synthetic_catalog
from rewards import format_reward

TASK = build_tasks(synthetic_catalog(), num_negatives=9, seed=0)[0]  # the task every env case plays (conftest.py)
TOOLS = ["user_info", "user_history", "item_cf", "user_cf", "popularity", "no_such_tool"]

FRAGMENTS = ["<plan>", "</plan>", "<tool_call>", "</tool_call>", "<recommend>", "</recommend>", "<reflection>",
             "</reflection>", "<tool_response>", "</tool_response>", "<", ">", "/", "{", "}", "[", "]", '"name"',
             '"arguments"', ":", ",", '"', "\\", "null", "NaN", "1e999", "9" * 5000, "\u202e", "\x00", "\ud800",
             "\U0001f600", "\u0301", "\ufeff", " ", "\n", *TASK.candidate_item_ids[:3], "no-such-item", TASK.user_id]
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=8), children, max_size=4), max_leaves=20)
MALFORMED = st.one_of(
    st.text(max_size=300),  # random text
    st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join),  # tag and JSON soup
    st.tuples(st.integers(1, 20_000), st.sampled_from("[{")).map(  # JSON nested beyond any parser
        lambda nest: "<tool_call>" + nest[1] * nest[0] + "</tool_call>"),
    st.tuples(st.sampled_from(["a", "<plan>", "<tool_call>{", "<recommend>1,", "</plan>", "\ud800"]),
              st.integers(10_000, 300_000)).map(lambda unit: unit[0] * unit[1]),  # up to megabytes
    st.lists(st.sampled_from(["no-such-item", "-1", "0", "", TASK.user_id]), min_size=1, max_size=40).map(
        lambda ids: f"<recommend>{', '.join(ids)}</recommend>"),  # ids that are not candidates
    st.text(max_size=100).map(lambda text: f"<tool_response>{text}</tool_response>"),  # imitates the env
)
TOOL_CALLS = st.tuples(st.sampled_from(TOOLS), json_values).map(
    lambda call: f"<tool_call>{json.dumps({'name': call[0], 'arguments': call[1]})}</tool_call>")
FUZZ = settings(max_examples=1500, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def finish(case, action):
    """Steps ``action`` (timed), then the env's well-formed final action while the episode goes on;
    returns the first step's info, its seconds and whether the whole episode was well-formed."""
    env = case.env
    env.reset(seed=0, options={"task": case.task})
    began = time.perf_counter()
    observation, reward, terminated, truncated, info = env.step(action)
    seconds = time.perf_counter() - began
    assert isinstance(observation, str) and isinstance(reward, float) and isinstance(info["errors"], list)
    assert len(info["errors"]) <= 16
    final = info
    while not (terminated or truncated):
        _, _, terminated, truncated, final = env.step(case.final_action)
    return info, seconds, bool(final["format_valid"])


@pytest.mark.parametrize("env_id", registered_ids())
@FUZZ
@given(action=MALFORMED)
def test_malformed_actions_are_answered_quickly_and_cost_the_format_reward(env_id, make_env_case, action):
    info, seconds, valid = finish(make_env_case(env_id), action)
    assert info["errors"], f"{action[:200]!r} was taken as well-formed"
    assert format_reward(valid) < 0
    assert seconds < 2.0, f"{seconds:.2f}s for {action[:200]!r}"  # a backtracking parser takes minutes


@pytest.mark.parametrize("env_id", registered_ids())
@FUZZ
@given(action=TOOL_CALLS)
def test_tool_calls_with_any_arguments_never_raise_and_a_failed_call_is_a_format_error(env_id, make_env_case, action):
    info, seconds, valid = finish(make_env_case(env_id), action)
    failed = [result for result in info.get("tool_results", []) if not result.ok]  # envs without tools have none
    assert bool(failed) == any(error.startswith("tool call failed") for error in info["errors"])
    if failed:
        assert format_reward(valid) < 0
    assert seconds < 2.0
