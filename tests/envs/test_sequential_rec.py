"""Tests for SequentialRec-v0: the protocol, scoring, budgets and the shared env checker."""

import gymnasium as gym
import pytest

from envs import make_env, registered_ids
from envs.checker import check_env
from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph


@pytest.fixture
def setup(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=9, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    return synthetic_catalog, graph, tasks


def make(setup, **kwargs):
    catalog, graph, tasks = setup
    return make_env("SequentialRec-v0", catalog=catalog, graph=graph, tasks=tasks, **kwargs)


@pytest.mark.parametrize("env_id", registered_ids())
def test_every_registered_env_passes_check_env(env_id, setup):
    catalog, graph, tasks = setup
    check_env(make_env(env_id, catalog=catalog, graph=graph, tasks=tasks))


def test_registered_with_gymnasium_too(setup):
    catalog, graph, tasks = setup
    env = gym.make("SequentialRec-v0", catalog=catalog, graph=graph, tasks=tasks)
    observation, info = env.reset(seed=1)
    assert observation.startswith("User ") and "Candidates:" in observation
    assert info["candidate_item_ids"]


def test_tool_then_recommend_scores_the_ranking(setup):
    env = make(setup)
    task = setup[2][0]
    observation, info = env.reset(options={"task": task})
    assert info["task_id"] == task.task_id
    call = f'<plan>p</plan><tool_call>{{"name": "item_cf", "arguments": {{"user_id": "{task.user_id}"}}}}</tool_call>'
    observation, reward, terminated, truncated, info = env.step(call)
    assert observation.startswith("<tool_response>item_cf ranking for user ")
    assert (reward, terminated, truncated, info["errors"], info["num_tool_calls"]) == (0.0, False, False, [], 1)
    others = [i for i in task.candidate_item_ids if i != task.target_item_id]
    ranking = [others[0], task.target_item_id, others[1]]
    _, reward, terminated, truncated, info = env.step(f"<reflection>r</reflection><recommend>{', '.join(ranking)}</recommend>")
    assert terminated and not truncated
    assert info["rank"] == 2 and info["format_valid"]
    assert reward == pytest.approx(1.0 + 2 / 3)
    trajectory = env.trajectory(source="test")
    assert trajectory.ranking[:3] == ranking and sorted(trajectory.ranking) == sorted(task.candidate_item_ids)
    assert [m["role"] for m in trajectory.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert trajectory.rewards == pytest.approx({"format": 1.0, "tiered_hit": 2 / 3})


@pytest.mark.parametrize(
    ("recommend", "error"),
    [
        ("99999", "recommended id '99999' is not a candidate"),
        ("{a}, {a}", "recommended id '{a}' is listed twice"),
        ("", "empty <recommend>"),
    ],
)
def test_bad_recommendations_are_reported_and_penalised(setup, recommend, error):
    env = make(setup)
    task = setup[2][0]
    env.reset(options={"task": task})
    text = recommend.format(a=task.target_item_id)
    _, reward, terminated, _, info = env.step(f"<recommend>{text}</recommend>")
    assert terminated and not info["format_valid"]
    assert error.format(a=task.target_item_id) in info["errors"]
    assert info["rewards"]["format"] == -1.0


def test_a_partly_invalid_ranking_still_ranks_the_valid_ids(setup):
    env = make(setup)
    task = setup[2][0]
    env.reset(options={"task": task})
    _, reward, _, _, info = env.step(f"<recommend>nope, {task.target_item_id}</recommend>")
    assert info["rank"] == 1 and not info["format_valid"]
    assert reward == pytest.approx(-1.0 + 1.0)


def test_malformed_turn_gets_an_error_observation_and_taints_format(setup):
    env = make(setup)
    task = setup[2][0]
    env.reset(options={"task": task})
    observation, reward, terminated, truncated, info = env.step("<tool_call>{not json</tool_call>")
    assert "error" in observation and not terminated and not truncated and info["errors"]
    _, _, terminated, _, info = env.step(f"<recommend>{task.target_item_id}</recommend>")
    assert terminated and info["rank"] == 1 and not info["format_valid"]


def test_unknown_ids_and_offered_tools(setup):
    env = make(setup, tool_names=["user_cf"])
    task = setup[2][0]
    env.reset(options={"task": task})
    observation, *_ = env.step('<tool_call>{"name": "item_cf", "arguments": {"user_id": "1"}}</tool_call>'
                               '<tool_call>{"name": "user_cf", "arguments": {"user_id": "no-such-user"}}</tool_call>')
    assert "unknown tool 'item_cf'" in observation and "unknown user id" in observation
    with pytest.raises(ValueError, match="unknown tool name"):
        make(setup, tool_names=["telepathy"])


def test_turn_and_token_budgets_truncate(setup):
    env = make(setup, max_turns=2)
    env.reset(options={"task": setup[2][0]})
    assert env.step("<plan>a</plan>")[3] is False
    _, reward, terminated, truncated, info = env.step("<plan>b</plan>")
    assert truncated and not terminated and "turn budget exhausted" in info["errors"]
    assert reward == pytest.approx(-1.0)
    with pytest.raises(RuntimeError):
        env.step("<recommend>1</recommend>")
    env = make(setup, max_episode_tokens=60)
    env.reset(options={"task": setup[2][0]})
    _, _, _, truncated, info = env.step("<plan>" + "word " * 80 + "</plan>")
    assert truncated and "token budget exhausted" in info["errors"]


def test_end_episode_truncates_from_outside(setup):
    env = make(setup)
    env.reset(options={"task": setup[2][0]})
    env.end_episode("context limit reached")
    trajectory = env.trajectory(source="t")
    assert trajectory.truncated and "context limit reached" in trajectory.errors and trajectory.rank is None


def test_reward_weights_are_validated(setup):
    with pytest.raises(ValueError, match="Unknown reward .charisma."):
        make(setup, reward_weights={"charisma": 1.0})
