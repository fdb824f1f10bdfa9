"""Every LLM teacher system end to end on the tiny model through our own HTTP server (`recrl serve`'s
app, the `openai` backend): the real path a hosted model takes, played by the teacher pipeline."""

import json

import pytest

from envs.config import EnvConfig
from envs.conversational import dialogue_task
from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph
from launch.cli import main
from launch.serve import make_app, serving
from rollout.worker import EnvSpec
from teachers.backends import BackendConfig
from teachers.backends.engine import EngineBackend
from teachers.pipeline import TeacherConfig, play_teacher, teacher_card
from teachers.systems import SYSTEMS

RANKING_TOOLS = ["user_info", "user_history", "item_cf", "user_cf"]


@pytest.fixture(scope="module")
def server():
    app = make_app(EngineBackend.open("tiny-random", engine="hf"))
    with serving(app) as url:
        yield url, app.state.batching


def world(catalog, system):
    tasks = build_tasks(catalog, num_negatives=9, seed=0)[:3]
    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, tasks))
    if system == "macrs":
        config = EnvConfig(env_id="ConversationalRec-v0", max_turns=2, tools=[])
        tasks = [dialogue_task(task) for task in tasks]
    else:
        config = EnvConfig(tools=RANKING_TOOLS, plan_turns=system == "alpha_umi", max_episode_tokens=4096)
    return EnvSpec(catalog, graph, config, tokenizer="tiny-random"), tasks


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_each_system_plays_whole_episodes_through_the_server(system, server, synthetic_catalog, tmp_path):
    url, batching = server
    spec, tasks = world(synthetic_catalog, system)
    asked = len(batching.batch_sizes)
    backend = BackendConfig(kind="openai", base_url=url, model="tiny-random", max_tokens=12, max_retries=0)
    config = TeacherConfig(system=system, backend=backend, tools=RANKING_TOOLS, num_workers=0, concurrency=3)
    trajectories = play_teacher(spec, tasks, config, out=tmp_path)
    assert [t.task_id for t in trajectories] == [t.task_id for t in tasks]
    assert all(t.terminated or t.truncated for t in trajectories)
    assert {t.source for t in trajectories} == {f"teacher:{system}"}
    assert len(batching.batch_sizes) > asked  # the server answered its roles
    card = teacher_card(trajectories, keep_hit_at=1)
    assert card["episodes"] == 3
    # Saved as it went: a second run reads the shards back and asks the server nothing.
    asked = len(batching.batch_sizes)
    assert [t.to_row() for t in play_teacher(spec, tasks, config, out=tmp_path)] == [t.to_row() for t in trajectories]
    assert len(batching.batch_sizes) == asked


def test_recrl_teach_runs_mars_against_the_server(server, tmp_path, capsys):
    url, _ = server
    run_dir = tmp_path / "mars"
    code = main(["teach", "data.dataset=synthetic", "model.name=tiny-random", f"run_dir={run_dir}", "teacher.num_workers=0",
                 "teacher.system=mars", "teacher.backend.kind=openai", f"teacher.backend.base_url={url}",
                 "teacher.backend.model=tiny-random", "teacher.backend.max_tokens=8", "teacher.backend.max_retries=0",
                 "teacher.shard_size=32", "env.max_episode_tokens=4096"])
    # Random weights name no candidate: every episode ends cleanly, the card says why, and the stage
    # stops with a clear message instead of writing an empty dataset.
    card = json.loads((run_dir / "teacher" / "card.json").read_text())
    assert card["episodes"] == 60 and card["kept"] == 0
    assert code != 0 and "hit no task" in capsys.readouterr().err


def test_recrl_eval_plays_macrs_against_the_server_and_resumes(server, tmp_path):
    url, batching = server
    run_dir = tmp_path / "macrs"
    args = ["eval", "--config", "configs/crs_grpo.yaml", "data.dataset=synthetic", "data.num_negatives=4",
            "model.name=tiny-random", f"run_dir={run_dir}", "env.max_turns=2", "eval.num_tasks=5",
            "eval.methods=[crs_random,teacher]", "teacher.num_workers=0", "teacher.shard_size=2",
            "teacher.system=macrs", "teacher.backend.kind=openai", f"teacher.backend.base_url={url}",
            "teacher.backend.model=tiny-random", "teacher.backend.max_tokens=8", "teacher.backend.max_retries=0"]
    asked = len(batching.batch_sizes)
    assert main(args) == 0
    assert len(batching.batch_sizes) > asked  # MACRS's roles were answered by the server
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["protocol"]["task"] == "dialogue" and set(report["methods"]) == {"crs_random", "teacher"}
    assert {"crs/success", "crs/recall@1", "format_rate"} <= set(report["methods"]["teacher"])
    assert len(report["ranks"]["teacher"]) == 5
    [folder] = (run_dir / "teacher-eval").iterdir()
    assert len(list((folder / "shards").glob("*.jsonl"))) == 3  # 5 conversations in shards of 2
    # A second evaluation reads the teacher's conversations back and asks the server nothing.
    asked = len(batching.batch_sizes)
    assert main(args) == 0
    assert len(batching.batch_sizes) == asked
    assert json.loads((run_dir / "eval.json").read_text())["ranks"] == report["ranks"]
