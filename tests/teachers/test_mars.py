"""MARS over LLM backends: control flow with scripted replies, the real path on the tiny model."""

import pytest

from envs.config import EnvConfig
from envs.data import build_tasks, training_interactions
from envs.parsing import parse_action
from envs.tools import InteractionGraph
from rollout.episode import EpisodeRequest, run_episodes
from rollout.worker import EnvSpec
from teachers.backends.base import ChatParams
from teachers.backends.scripted import ScriptedBackend
from teachers.systems.mars import MARSTeacher

TOOLS = ["user_info", "user_history", "item_cf", "user_cf"]


@pytest.fixture
def spec_and_tasks(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=19, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    return EnvSpec(synthetic_catalog, graph, EnvConfig(tools=TOOLS), tokenizer="tiny-random"), tasks


def play(spec, task, replies, **kwargs):
    backend = ScriptedBackend(replies)
    teacher = MARSTeacher(spec.catalog, backend, ChatParams(max_tokens=32), tools=TOOLS, **kwargs)
    [trajectory] = run_episodes(teacher, [spec.make()], [EpisodeRequest(task)], source="teacher:mars")
    return trajectory, backend


def test_every_role_speaks_and_the_episode_serializes_into_the_student_format(spec_and_tasks):
    spec, tasks = spec_and_tasks
    task = tasks[0]
    top = task.candidate_item_ids[3]
    trajectory, backend = play(spec, task, [
        "Consult the profile and recent analysts.",                # planner
        "A young user.",                                            # profile
        "Wants <recommend>999</recommend> sci-fi now.",             # recent (tag-breaking text)
        f"Ranked: <recommend>{top}, 999, {task.candidate_item_ids[0]}</recommend>",  # ranker
        "OK: the signals agree.",                                   # reflector
    ])
    asked = [call[0]["content"].split(".")[0] for call in backend.calls]
    assert [a.split(" of ")[0] for a in asked] == ["You are the Planner", "You are the User Profile analyst",
                                                   "You are the Recent Interest analyst", "You are the Ranker",
                                                   "You are the Reflector"]
    assert trajectory.terminated and trajectory.format_valid
    first, second, last = trajectory.actions
    assert [c.name for c in first.tool_calls] == ["user_info", "user_history"]
    assert [c.name for c in second.tool_calls] == ["item_cf", "user_cf"]
    assert "Profile: A young user." in second.plan and "Recent: Wants recommend999/recommend sci-fi now." in second.plan
    # The hallucinated id is dropped; the reflector's verdict is the reflection.
    assert last.recommend == [top, task.candidate_item_ids[0]] and last.reflection == "OK: the signals agree."
    # The ranker read the analysts' notes and the real signal outputs.
    ranker_prompt = backend.calls[3][1]["content"]
    assert "Profile: A young user." in ranker_prompt and f"item_cf ranking for user {task.user_id}" in ranker_prompt
    assert [parse_action(m["content"]) for m in trajectory.messages if m["role"] == "assistant"] == trajectory.actions


def test_the_reflector_sends_a_ranking_back_once(spec_and_tasks):
    spec, tasks = spec_and_tasks
    task = tasks[1]
    first_pick, second_pick = task.candidate_item_ids[:2]
    trajectory, backend = play(spec, task, [
        "Consult divergence.",              # planner: divergence brings historical and recent
        "Likes old films.", "Wants new films.", "They differ.",
        f"<recommend>{first_pick}</recommend>", "REVISE: the signals prefer another.",
        f"<recommend>{second_pick}</recommend>", "OK: better.",
    ])
    assert trajectory.actions[0].plan.endswith("Consult historical, recent, divergence.")
    assert "The reflector asked for a revision: REVISE: the signals prefer another." in backend.calls[6][1]["content"]
    assert trajectory.actions[-1].recommend == [second_pick]
    assert "Divergence: They differ." in trajectory.actions[1].plan


def test_malformed_output_and_a_failing_backend_end_the_episode_cleanly(spec_and_tasks):
    spec, tasks = spec_and_tasks
    # The ranker names no candidate twice: the episode ends, invalid, with the reason.
    trajectory, _ = play(spec, tasks[0], ["no plan", "p", "h", "r", "d", "no ids here", "still none"])
    assert trajectory.terminated and not trajectory.format_valid
    assert "ranker named no candidate id in 2 tries" in trajectory.actions[-1].reflection
    # The script runs out (a backend failure) at the analysts: the episode still ends, never raises.
    trajectory, _ = play(spec, tasks[0], ["Consult profile."])
    assert trajectory.terminated and not trajectory.format_valid
    assert trajectory.actions[-1].reflection.startswith("Stopped: profile: the script holds 1 replies")


def test_mars_runs_for_real_on_the_tiny_model_with_batched_episodes(spec_and_tasks):
    from teachers.backends.batching import BatchingBackend
    from teachers.backends.engine import EngineBackend

    spec, tasks = spec_and_tasks
    backend = BatchingBackend(EngineBackend.open("tiny-random", engine="hf"))
    teacher = MARSTeacher(spec.catalog, backend, ChatParams(max_tokens=12), tools=TOOLS, concurrency=4)
    trajectories = run_episodes(teacher, [spec.make() for _ in range(4)], [EpisodeRequest(t) for t in tasks[:4]],
                                source="teacher:mars")
    # Random weights write no usable ranking: every episode ends cleanly after the ranker's two tries.
    assert all(t.terminated for t in trajectories)
    assert max(backend.batch_sizes) > 1
    assert all(len(t.actions) == 3 for t in trajectories)
