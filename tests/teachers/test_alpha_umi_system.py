"""alpha-UMi over LLM backends: who plays each turn, the GLPFT split, malformed output and failures,
and the real path on the tiny model."""

import json

import pytest

from envs.config import EnvConfig
from envs.data import build_tasks, training_interactions
from envs.parsing import parse_action
from envs.tools import InteractionGraph
from envs.types import Trajectory, Turn
from rollout.episode import EpisodeRequest, run_episodes
from rollout.worker import EnvSpec
from teachers.backends.base import ChatParams
from teachers.backends.scripted import ScriptedBackend
from rollout.routing import alpha_umi as next_role
from teachers.systems.alpha_umi import ROLES, AlphaUMiTeacher, glpft_sets

TOOLS = ["user_info", "user_history", "item_cf", "user_cf"]


@pytest.fixture
def world(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=19, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    return synthetic_catalog, graph, tasks


def spec(world, max_turns):
    catalog, graph, _ = world
    return EnvSpec(catalog, graph, EnvConfig(tools=TOOLS, max_turns=max_turns, plan_turns=True), tokenizer="tiny-random")


def play(world, task, replies, *, env_turns=6, told_turns=6):
    backend = ScriptedBackend(replies)
    teacher = AlphaUMiTeacher(world[0], backend, ChatParams(max_tokens=32), tools=TOOLS, max_turns=told_turns)
    [trajectory] = run_episodes(teacher, [spec(world, env_turns).make()], [EpisodeRequest(task)],
                                source="teacher:alpha_umi")
    return trajectory, backend


def call(name, **arguments):
    return f"<tool_call>{json.dumps({'name': name, 'arguments': arguments})}</tool_call>"


def agent_roles(trajectory):
    return [turn.role for turn in trajectory.turns if turn.is_agent]


def test_the_planner_hands_over_to_the_caller_then_the_summarizer_and_each_turn_names_its_role(world):
    task = world[2][0]
    user, top, other = task.user_id, task.candidate_item_ids[3], task.candidate_item_ids[0]
    trajectory, backend = play(world, task, [
        "Look at what similar users liked. Next: caller",                       # planner
        f"{call('user_cf', user_id=user)} {call('item_cf', user_id=user)} "
        f"{call('user_info', user_id='999')} {call('user_cf', user_id=user)}",  # caller: a stranger, a repeat
        "The signals agree. next: Summarizer.",                                 # planner
        f"Ranked: <recommend>{top}, 999, {other}</recommend>",                  # summarizer: an invented id
    ])
    asked = [c[0]["content"].split(" of ")[0] for c in backend.calls]
    assert asked == ["You are the Planner", "You are the Caller", "You are the Planner", "You are the Summarizer"]
    assert agent_roles(trajectory) == ["planner", "caller", "planner", "summarizer"]
    first_plan, calls, second_plan, final = trajectory.actions
    assert first_plan.plan == "Look at what similar users liked. Next: caller" and not first_plan.tool_calls
    # The stranger's call and the repeat are dropped; the env answered the rest.
    assert [(c.name, c.arguments) for c in calls.tool_calls] == [("user_cf", {"user_id": user}),
                                                                 ("item_cf", {"user_id": user})]
    assert second_plan.plan == "The signals agree. Next: summarizer"
    assert final.recommend == [top, other] and trajectory.terminated and trajectory.rank is not None
    # What each role read: the Caller the rationale and the env's tool lines, the second Planner the
    # calls' results, the Summarizer the last rationale and the results.
    planner_first, caller, planner_second, summarizer = (c[1]["content"] for c in backend.calls)
    assert "So far: nothing yet" in planner_first and f"User {user}." in planner_first
    assert "Planner: Look at what similar users liked." in caller and "- user_cf(user_id, k):" in caller
    assert f"user_cf: user_cf ranking for user {user}" in planner_second
    assert "Planner: The signals agree." in summarizer and f"item_cf ranking for user {user}" in summarizer
    # The env takes the plan-only turns as planning steps (env.plan_turns): a clean, valid episode,
    # except for the dropped invented id.
    errors = {turn.role: turn.errors for turn in trajectory.turns if turn.is_agent}
    assert errors == {"planner": [], "caller": [], "summarizer": []} and trajectory.format_valid
    # The turns parse back, and routing by the turns so far gives every recorded role.
    assert [parse_action(m["content"], plan_only=True)
            for m in trajectory.messages if m["role"] == "assistant"] == trajectory.actions
    for index, turn in enumerate(trajectory.turns):
        if turn.is_agent:
            assert next_role(trajectory.turns[:index]) == turn.role


def test_the_planner_hands_over_to_the_summarizer_while_the_turns_left_allow_a_ranking(world):
    task = world[2][1]
    user = task.user_id
    trajectory, backend = play(world, task, [
        "Read the history. Next: caller",
        json.dumps({"name": "user_history", "arguments": {"user_id": user, "k": 5}}),  # a call without its tags
        "Call item_cf too. Next: caller",                 # two turns left: only the ranking fits
        f"<recommend>{task.candidate_item_ids[1]}</recommend>",
    ], env_turns=4, told_turns=4)
    assert agent_roles(trajectory) == ["planner", "caller", "planner", "summarizer"]
    assert trajectory.actions[1].tool_calls[0].name == "user_history"
    assert trajectory.actions[2].plan == "Call item_cf too. Next: summarizer"
    assert "Only the final ranking fits" in backend.calls[2][1]["content"]
    assert "Only the final ranking fits" not in backend.calls[0][1]["content"]
    assert trajectory.terminated and trajectory.actions[-1].recommend == [task.candidate_item_ids[1]]


def test_malformed_output_and_a_failing_backend_end_the_episode_cleanly(world):
    task = world[2][0]
    # A Caller with no valid call: another user's id, a tool not offered, unreadable JSON.
    trajectory, _ = play(world, task, ["Next: caller", f"{call('item_cf', user_id='999')} {call('search', query='x')} "
                                                       "<tool_call>{oops</tool_call>"])
    assert agent_roles(trajectory) == ["planner", "caller"] and trajectory.terminated and not trajectory.format_valid
    assert trajectory.actions[-1].reflection.startswith("Stopped: the caller wrote no valid tool call")
    # A Summarizer naming invented ids only.
    trajectory, _ = play(world, task, ["Next: summarizer", "<recommend>999, 1000</recommend>"])
    assert agent_roles(trajectory) == ["planner", "summarizer"] and trajectory.terminated
    assert trajectory.actions[-1].reflection.startswith("Stopped: the summarizer named no candidate id")
    # A Planner that never hands over (and is not told the budget): the env's turn budget ends it.
    trajectory, backend = play(world, task, ["Thinking."] * 4, env_turns=4, told_turns=None)
    assert agent_roles(trajectory) == ["planner"] * 4 and trajectory.truncated and not trajectory.terminated
    assert "turn budget exhausted" in trajectory.errors and len(backend.calls) == 4
    # The backend fails (the script runs out) at the Caller: its turn ends the episode with the reason.
    trajectory, _ = play(world, task, ["Next: caller"])
    assert agent_roles(trajectory) == ["planner", "caller"] and trajectory.terminated and not trajectory.format_valid
    assert trajectory.actions[-1].reflection.startswith("Stopped: caller: the script holds 1 replies")


def handmade(task_id, roles):
    turns = [Turn("system", "s"), Turn("user", "u")]
    for role in roles:
        turns += [Turn(role, f"{role} text"), Turn("tool", "reply")]
    return Trajectory(task_id=task_id, env_id="SequentialRec-v0", source="teacher:alpha_umi", turns=turns[:-1])


def test_glpft_splits_episodes_into_a_global_set_and_one_local_set_per_role():
    episodes = [handmade("a", ["planner", "caller", "planner", "summarizer"]),
                handmade("b", ["planner", "summarizer"]),
                handmade("c", ["planner", "planner", "caller", "planner", "caller", "planner", "summarizer"])]
    sets = glpft_sets(episodes)
    by_id = {episode.task_id: episode for episode in episodes}
    assert list(sets) == ["global", *ROLES]
    counts = {name: ([t.task_id for t in s.trajectories], s.num_targets) for name, s in sets.items()}
    assert counts == {"global": (["a", "b", "c"], 4 + 2 + 7), "planner": (["a", "b", "c"], 2 + 1 + 4),
                      "caller": (["a", "c"], 1 + 2), "summarizer": (["a", "b", "c"], 1 + 1 + 1)}
    for role in ROLES:
        local = sets[role]
        for trajectory in local.trajectories:
            assert {turn.role for turn in local.targets(trajectory)} == {role}
            assert trajectory.turns == by_id[trajectory.task_id].turns  # the other roles' turns stay, as context
    assert sum(sets[role].num_targets for role in ROLES) == sets["global"].num_targets
    with pytest.raises(ValueError, match=r"turns of \['mars'\].*AlphaUMiTeacher"):
        glpft_sets([*episodes, handmade("d", ["mars"])])


def test_alpha_umi_runs_for_real_on_the_tiny_model_with_batched_episodes(world):
    from teachers.backends.batching import BatchingBackend
    from teachers.backends.engine import EngineBackend

    backend = BatchingBackend(EngineBackend.open("tiny-random", engine="hf"))
    teacher = AlphaUMiTeacher(world[0], backend, ChatParams(max_tokens=12), tools=TOOLS, max_turns=4, concurrency=4)
    tasks = world[2][:4]
    trajectories = run_episodes(teacher, [spec(world, 4).make() for _ in tasks], [EpisodeRequest(t) for t in tasks],
                                source="teacher:alpha_umi")
    # Random weights never hand over: the Planner plays twice, is then made to hand over to the
    # Summarizer, whose text names no candidate; every episode ends cleanly on its turn.
    assert max(backend.batch_sizes) > 1
    for trajectory in trajectories:
        assert agent_roles(trajectory) == ["planner", "planner", "summarizer"] and trajectory.terminated
        assert trajectory.actions[-1].reflection.startswith("Stopped:")
