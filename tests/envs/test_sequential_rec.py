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


def test_every_registered_env_has_a_test_factory(env_factories):
    missing = sorted(set(registered_ids()) - set(env_factories))
    assert not missing, f"add a factory for {missing} to ENV_FACTORIES in tests/envs/conftest.py"


@pytest.mark.parametrize("env_id", registered_ids())
def test_every_registered_env_passes_check_env(env_id, make_env_case):
    check_env(make_env_case(env_id).env)


def test_registered_with_gymnasium_too(setup):
    catalog, graph, tasks = setup
    env = gym.make("SequentialRec-v0", catalog=catalog, graph=graph, tasks=tasks)
    observation, info = env.reset(seed=1)
    assert observation.startswith("User ") and "Candidates:" in observation
    assert info["task"].candidate_item_ids and info["system_prompt"].startswith("You rank")


def test_tool_then_recommend_reports_the_outcome_and_the_reciprocal_rank(setup):
    env = make(setup)
    task = setup[2][0]
    observation, info = env.reset(options={"task": task})
    assert info["task"] == task
    call = f'<plan>p</plan><tool_call>{{"name": "item_cf", "arguments": {{"user_id": "{task.user_id}"}}}}</tool_call>'
    observation, reward, terminated, truncated, info = env.step(call)
    assert observation.startswith("<tool_response>item_cf ranking for user ")
    assert (reward, terminated, truncated, info["errors"], info["outcome"]) == (0.0, False, False, [], None)
    [result] = info["tool_results"]  # the same answer as values, for agents that read structure
    assert result.name == "item_cf" and result.ok and observation == f"<tool_response>{result.text}</tool_response>"
    assert set(result.data) <= set(task.candidate_item_ids)
    assert info["action"].tool_calls[0].name == "item_cf" and info["observation_role"] == "tool"
    others = [i for i in task.candidate_item_ids if i != task.target_item_id]
    ranking = [others[0], task.target_item_id, others[1]]
    _, reward, terminated, truncated, info = env.step(f"<reflection>r</reflection><recommend>{', '.join(ranking)}</recommend>")
    assert terminated and not truncated and info["format_valid"]
    outcome = info["outcome"]
    assert outcome.rank == 2 and reward == pytest.approx(1 / 2)  # the env's rule-based reward: 1 / rank
    assert list(outcome.ranking[:3]) == ranking and sorted(outcome.ranking) == sorted(task.candidate_item_ids)


@pytest.mark.parametrize(
    ("recommend", "error"),
    [
        ("99999", "recommended id '99999' is not a candidate"),
        ("{a}, {a}", "recommended id '{a}' is listed twice"),
        ("", "empty <recommend>"),
    ],
)
def test_bad_recommendations_are_reported(setup, recommend, error):
    env = make(setup)
    task = setup[2][0]
    env.reset(options={"task": task})
    text = recommend.format(a=task.target_item_id)
    _, reward, terminated, _, info = env.step(f"<recommend>{text}</recommend>")
    assert terminated and not info["format_valid"]
    assert error.format(a=task.target_item_id) in info["errors"]


def test_a_partly_invalid_ranking_still_ranks_the_valid_ids(setup):
    env = make(setup)
    task = setup[2][0]
    env.reset(options={"task": task})
    _, reward, _, _, info = env.step(f"<recommend>nope, {task.target_item_id}</recommend>")
    assert info["outcome"].rank == 1 and not info["format_valid"] and reward == 1.0


def test_malformed_turn_gets_an_error_observation_and_taints_format(setup):
    env = make(setup)
    task = setup[2][0]
    env.reset(options={"task": task})
    observation, reward, terminated, truncated, info = env.step("<tool_call>{not json</tool_call>")
    assert "error" in observation and not terminated and not truncated and info["errors"]
    _, _, terminated, _, info = env.step(f"<recommend>{task.target_item_id}</recommend>")
    assert terminated and info["outcome"].rank == 1 and not info["format_valid"]


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
    assert reward == 0.0 and info["outcome"] is None
    with pytest.raises(RuntimeError):
        env.step("<recommend>1</recommend>")
    env = make(setup, max_episode_tokens=60)
    env.reset(options={"task": setup[2][0]})
    _, _, _, truncated, info = env.step("<plan>" + "word " * 80 + "</plan>")
    assert truncated and "token budget exhausted" in info["errors"]


def test_envs_and_rewards_import_only_shared_types():
    """shared/DESIGN.md's dependency direction: envs and rewards never reach into the layers above."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    # The one parser of agent text counts as shared: rewards read answers as the envs do.
    for package, allowed in (("envs", {"envs"}), ("rewards", {"rewards", "envs.types", "envs.parsing"})):
        for path in (root / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
            names |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
            ours = {n for n in names if n.split(".")[0] in {"envs", "rewards", "rollout", "rl", "teachers", "launch"}}
            bad = {n for n in ours if not any(n == a or n.startswith(a + ".") for a in allowed)}
            assert not bad, f"{path.relative_to(root)} imports {sorted(bad)}"


def test_plan_turns_take_a_plan_alone_as_a_planning_step(setup):
    for plan_turns, errors in ((False, ["no <tool_call> or <recommend> tag found"]), (True, [])):
        env = make(setup, plan_turns=plan_turns)
        _, reset_info = env.reset(seed=0)
        observation, reward, terminated, truncated, info = env.step("<plan>Ask the caller.</plan>")
        assert info["errors"] == errors and not terminated and not truncated
        assert (observation == "") == plan_turns  # nothing to answer; else the env's hint
        *_, info = env.step(f"<recommend>{reset_info['task'].candidate_item_ids[0]}</recommend>")
        assert info["format_valid"] == plan_turns
    # A plan with an unclosed tag is still an error, planning step or not.
    env = make(setup, plan_turns=True)
    env.reset(seed=0)
    assert env.step("<plan>x</plan><recommend>1")[4]["errors"] == ["unclosed <recommend> tag"]
