"""The heuristic CF expert teacher and its Ray-parallel trajectory pipeline."""

import pytest

import ast
from pathlib import Path

from envs.config import EnvConfig
from envs.data import build_tasks, training_interactions
from envs.parsing import parse_action
from envs.tools import InteractionGraph
from rollout.episode import EpisodeRequest, run_episodes
from rollout.worker import EnvSpec
from teachers.cf_expert import CFExpertTeacher
from teachers.pipeline import TeacherConfig, keep_hits, play_teacher, read_dataset, teacher_card, write_dataset


@pytest.fixture
def spec_and_tasks(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=19, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    return EnvSpec(synthetic_catalog, graph, EnvConfig(), tokenizer="tiny-random"), tasks


def test_teacher_plays_every_role_through_real_tool_calls(spec_and_tasks):
    spec, tasks = spec_and_tasks
    teacher = CFExpertTeacher(spec.catalog, tools=["user_info", "user_history", "item_cf", "user_cf"],
                              weights={"item_cf": 0.5})
    [trajectory] = run_episodes(teacher, [spec.make()], [EpisodeRequest(tasks[0])], source="teacher:cf_expert")
    assert trajectory.terminated and trajectory.format_valid
    assert {turn.role for turn in trajectory.turns if turn.is_agent} == {"cf_expert"}
    assert [call.name for a in trajectory.actions for call in a.tool_calls] == \
        ["user_info", "user_history", "item_cf", "user_cf"]
    assert all(a.plan for a in trajectory.actions[:-1]) and trajectory.actions[-1].reflection
    assert len(trajectory.actions[-1].recommend) == 5
    # Tool outputs were real: the responses the env gave are in the transcript, error-free.
    responses = [m["content"] for m in trajectory.messages if m["content"].startswith("<tool_response>")]
    assert responses and not any("error" in r for r in responses)
    # Every serialized turn parses back to what the teacher did.
    assistant = [m["content"] for m in trajectory.messages if m["role"] == "assistant"]
    assert [parse_action(text) for text in assistant] == trajectory.actions


def test_the_teacher_ranks_from_the_values_the_env_returns_not_from_text(spec_and_tasks):
    spec, tasks = spec_and_tasks
    source = (Path(__file__).resolve().parents[2] / "teachers" / "cf_expert.py").read_text()
    tree = ast.parse(source)
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "re" not in imported
    # Its ranking follows the tool's data: the top user_cf candidate leads when user_cf is the only signal.
    teacher = CFExpertTeacher(spec.catalog, tools=["user_cf"], num_recommend=3)
    [trajectory] = run_episodes(teacher, [spec.make()], [EpisodeRequest(tasks[1])], source="teacher")
    top_user_cf = trajectory.turns[3].text.split("user_cf ranking for user")[1].split(": ")[1].split(":")[0]
    assert trajectory.actions[-1].recommend[0] == top_user_cf


def test_teacher_beats_random_on_planted_structure(spec_and_tasks):
    spec, tasks = spec_and_tasks
    trajectories = play_teacher(spec, tasks, TeacherConfig(num_workers=0))
    card = teacher_card(trajectories, keep_hit_at=1)
    assert card["format_valid_rate"] == 1.0
    assert card["success_rate"] > 3 * (1 / 20)
    assert card["kept"] == len(keep_hits(trajectories, keep_hit_at=1)) == round(card["success_rate"] * card["episodes"])


def test_teacher_needs_a_ranking_tool(spec_and_tasks):
    with pytest.raises(ValueError, match="signal tool"):
        CFExpertTeacher(spec_and_tasks[0].catalog, tools=["user_info"])
    with pytest.raises(ValueError, match="every fusion weight"):
        CFExpertTeacher(spec_and_tasks[0].catalog, tools=["item_cf"], weights={"item_cf": 0.0})


@pytest.mark.integration
def test_ray_pipeline_matches_in_process_and_round_trips_as_dataset(spec_and_tasks, tmp_path, ray_local):
    spec, tasks = spec_and_tasks
    tasks = tasks[:24]
    config = TeacherConfig(tools=["item_cf"], num_workers=2)
    parallel = play_teacher(spec, tasks, config)
    serial = play_teacher(spec, tasks, TeacherConfig(tools=["item_cf"], num_workers=0))
    assert [t.task_id for t in parallel] == [t.task_id for t in tasks]
    assert [t.messages for t in parallel] == [t.messages for t in serial]
    kept = keep_hits(parallel, keep_hit_at=1)
    assert kept and all(t.rank == 1 for t in kept)
    write_dataset(kept, tmp_path / "ds")
    assert read_dataset(tmp_path / "ds") == kept
    with pytest.raises(FileNotFoundError, match="recrl teach"):
        read_dataset(tmp_path / "missing")
