"""The sharded teacher pipeline: Ray workers, resuming a killed run, the manifest, and the dataset card."""

import functools
import json
import os
import shutil
import time

import pytest

from envs.config import EnvConfig
from envs.data import build_tasks, synthetic_catalog, training_interactions
from envs.tools import InteractionGraph
from envs.types import ParsedAction, RankingOutcome, RatingOutcome, Trajectory, Turn
from rollout.actors import release, spawn
from rollout.worker import EnvSpec
from teachers.backends import BackendConfig
from teachers.pipeline import (TeacherConfig, TeacherWorker, card_markdown, play_teacher, teacher_card, teacher_settings,
                               write_card)
from teachers.shards import TEMP_SUFFIX, play_as_ready, shard_name
from teachers.systems import roles

CONFIG = TeacherConfig(tools=["item_cf"], num_workers=0, shard_size=3)
SETTINGS = {"env": "synthetic"}
PLAY = TeacherWorker.play


@pytest.fixture(scope="module")
def spec_and_tasks():
    catalog = synthetic_catalog()
    tasks = build_tasks(catalog, num_negatives=19, seed=0)[:11]  # three full shards and a short one
    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, tasks))
    return EnvSpec(catalog, graph, EnvConfig(), tokenizer="tiny-random"), tasks


@pytest.fixture(scope="module")
def uninterrupted(spec_and_tasks, tmp_path_factory):
    """The folder and records of a run played in one go, in this process."""
    spec, tasks = spec_and_tasks
    folder = tmp_path_factory.mktemp("uninterrupted")
    return folder, play_teacher(spec, tasks, CONFIG, out=folder, settings=SETTINGS)


def rows(trajectories):
    return sorted(json.dumps(t.to_row(), sort_keys=True) for t in trajectories)


class Killed(Exception):
    """Stands for the run being killed."""


def record_plays(monkeypatch, *, fail_after: int | None = None) -> list[list[str]]:
    """The task ids of each shard ``TeacherWorker.play`` plays from now on; with ``fail_after``, the
    run dies (like a kill) when it starts the shard after that many."""
    played = []

    @functools.wraps(PLAY)
    def recorded(worker, tasks):
        if fail_after is not None and len(played) == fail_after:
            raise Killed
        played.append([task.task_id for task in tasks])
        return PLAY(worker, tasks)

    monkeypatch.setattr(TeacherWorker, "play", recorded)
    return played


def test_the_uninterrupted_run_saves_every_episode_in_task_order(spec_and_tasks, uninterrupted):
    _, tasks = spec_and_tasks
    folder, trajectories = uninterrupted
    assert [t.task_id for t in trajectories] == [t.task_id for t in tasks]
    assert sorted(p.name for p in (folder / "shards").iterdir()) == ["manifest.json", *map(shard_name, range(4))]
    lines = (folder / "shards" / shard_name(3)).read_text().splitlines()
    assert [Trajectory.from_row(json.loads(line)) for line in lines] == trajectories[9:]  # kept or not


@pytest.mark.integration
def test_two_ray_workers_play_the_same_records_as_one_process(spec_and_tasks, uninterrupted, tmp_path, ray_local):
    spec, tasks = spec_and_tasks
    parallel = play_teacher(spec, tasks, TeacherConfig(tools=["item_cf"], num_workers=2, shard_size=3),
                            out=tmp_path, settings=SETTINGS)
    assert [t.task_id for t in parallel] == [t.task_id for t in tasks]
    assert rows(parallel) == rows(uninterrupted[1])


def test_a_killed_run_resumes_playing_only_the_missing_shards(spec_and_tasks, uninterrupted, tmp_path, monkeypatch):
    spec, tasks = spec_and_tasks
    record_plays(monkeypatch, fail_after=2)
    with pytest.raises(Killed):
        play_teacher(spec, tasks, CONFIG, out=tmp_path, settings=SETTINGS)
    assert sorted(p.name for p in (tmp_path / "shards").glob("shard-*")) == [shard_name(0), shard_name(1)]

    played = record_plays(monkeypatch)
    resumed = play_teacher(spec, tasks, CONFIG, out=tmp_path, settings=SETTINGS)
    assert played == [[t.task_id for t in tasks[6:9]], [t.task_id for t in tasks[9:]]]
    assert rows(resumed) == rows(uninterrupted[1]) and len(resumed) == len(tasks)
    played.clear()
    assert play_teacher(spec, tasks, CONFIG, out=tmp_path, settings=SETTINGS) == resumed and played == []


def test_a_partial_shard_left_by_a_kill_is_ignored_and_replayed(spec_and_tasks, uninterrupted, tmp_path, monkeypatch):
    spec, tasks = spec_and_tasks
    record_plays(monkeypatch, fail_after=1)
    with pytest.raises(Killed):
        play_teacher(spec, tasks, CONFIG, out=tmp_path, settings=SETTINGS)
    whole = (uninterrupted[0] / "shards" / shard_name(1)).read_text()
    partial = tmp_path / "shards" / f".{shard_name(1)}.x1y2{TEMP_SUFFIX}"  # as the writer names it
    partial.write_text(whole[: len(whole) // 2])

    played = record_plays(monkeypatch)
    resumed = play_teacher(spec, tasks, CONFIG, out=tmp_path, settings=SETTINGS)
    assert [ids[0] for ids in played] == [tasks[3].task_id, tasks[6].task_id, tasks[9].task_id]
    assert not partial.exists()
    assert rows(resumed) == rows(uninterrupted[1])


def test_shards_of_other_tasks_or_settings_are_refused(spec_and_tasks, uninterrupted):
    spec, tasks = spec_and_tasks
    folder, _ = uninterrupted
    before = sorted((folder / "shards").iterdir())
    changes = [
        ("tasks", dict(tasks=tasks[1:])),
        ("shard_size", dict(config=TeacherConfig(tools=["item_cf"], num_workers=0, shard_size=4))),
        ("settings.env", dict(settings={"env": "another"})),
        ("settings.teacher", dict(config=TeacherConfig(tools=["item_cf", "user_cf"], num_workers=0, shard_size=3))),
    ]
    for named, change in changes:
        arguments = {"tasks": tasks, "config": CONFIG, "settings": SETTINGS, **change}
        with pytest.raises(ValueError, match=f"{named}.*delete {folder / 'shards'} to start over"):
            play_teacher(spec, arguments["tasks"], arguments["config"], out=folder, settings=arguments["settings"])
    assert sorted((folder / "shards").iterdir()) == before
    # Who keeps what, and how many workers play, are no part of the episodes.
    same = TeacherConfig(tools=["item_cf"], num_workers=0, shard_size=3, keep_hit_at=3)
    assert play_teacher(spec, tasks, same, out=folder, settings=SETTINGS) == uninterrupted[1]


def make_player_class():
    """Defined in a function so Ray ships the class by value (test modules are not importable there)."""

    class Player:
        def __init__(self, *, seconds_per_part: float = 0.0, dies: bool = False):
            self.seconds, self.dies = seconds_per_part, dies

        def play(self, part):
            if self.dies:
                os._exit(1)  # a worker lost mid-shard
            time.sleep(self.seconds)
            return [(os.getpid(), item) for item in part]

        def pid(self):
            return os.getpid()

    return Player


@pytest.mark.integration
def test_a_free_worker_takes_the_next_shard_and_a_dead_ones_shard_is_replayed(ray_local):
    player = make_player_class()
    slow, fast = spawn(player, 1, seconds_per_part=1.5)[0], spawn(player, 1)[0]
    fast_pid, _ = fast.pid(), slow.pid()  # both started
    parts = {index: [index] for index in range(6)}
    done = dict(play_as_ready([slow, fast], player.play, parts))
    assert sorted(done) == list(range(6)) and all(done[i][0][1] == i for i in done)
    assert sum(done[i][0][0] == fast_pid for i in done) >= 4  # not three each, as fixed chunks would be
    doomed = spawn(player, 1, dies=True)[0]
    assert sorted(dict(play_as_ready([doomed, fast], player.play, parts))) == list(range(6))
    with pytest.raises(RuntimeError, match="every play worker died"):
        list(play_as_ready(spawn(player, 1, dies=True), player.play, parts))
    release([slow, fast, doomed])


def ranking(rank, *, valid=True, errors=(), truncated=False):
    outcome = None if truncated else RankingOutcome(rank=rank)
    turn = Turn(role="cf_expert", text="...", action=ParsedAction(), errors=list(errors))
    return Trajectory(task_id="t", env_id="SequentialRec-v0", source="teacher:cf_expert", turns=[turn],
                      outcome=outcome, format_valid=valid, truncated=truncated)


def test_the_card_counts_outcomes_filter_and_failure_reasons(tmp_path):
    trajectories = [
        ranking(1),
        ranking(2),
        ranking(5, errors=["item '7' is not a candidate"]),
        ranking(None, valid=False, truncated=True, errors=["turn budget exhausted"]),
        ranking(7, valid=False, errors=["item 'x1' recommended twice", "item 'x2' recommended twice"]),
        ranking(1, valid=False, errors=["unclosed <plan> tag"]),
    ]
    card = teacher_card(trajectories, keep_hit_at=1)
    assert card == {
        "episodes": 6, "kept": 1, "keep_hit_at": 1, "keep_rate": 1 / 6,
        "dropped": {"format_invalid": 3, "no_hit": 2},
        "format_valid_rate": 3 / 6, "success_rate": 2 / 6,
        "outcomes": {"rank 1": 2, "rank 2-3": 1, "rank 4-5": 1, "rank 6+": 1, "no valid ranking": 1},
        "failure_reasons": {"no hit@1": 4, "item '…' is not a candidate": 1, "turn budget exhausted": 1,
                            "truncated (turn or token budget spent)": 1, "item '…' recommended twice": 1,
                            "unclosed <plan> tag": 1},
        "sources": ["teacher:cf_expert"],
    }
    looser = teacher_card(trajectories, keep_hit_at=3)
    assert (looser["kept"], looser["dropped"], looser["failure_reasons"]["no hit@3"]) == \
        (2, {"format_invalid": 3, "no_hit": 1}, 3)
    write_card(card, tmp_path)
    assert json.loads((tmp_path / "card.json").read_text()) == card
    page = (tmp_path / "card.md").read_text()
    assert page == card_markdown(card) and "kept: 1 (16.7%)" in page and "| rank 2-3 | 1 | 16.7% |" in page
    assert "validation split" not in page
    fused = card_markdown({**card, "validation_hr_avg_fused": 0.7371, "validation_hr_avg_best_signal": 0.7362})
    assert "- fused signals on the validation split: hr_avg 0.737, against 0.736 for the best single signal" in fused


def test_the_card_bins_other_tasks_by_hit_miss_and_invalid():
    def rating(prediction, *, valid):
        return Trajectory(task_id="t", env_id="RatingPrediction-v0", source="teacher:bias_rater",
                          outcome=RatingOutcome(prediction=prediction, target=4.0), format_valid=valid)

    card = teacher_card([rating(4.4, valid=True), rating(2.0, valid=True), rating(None, valid=False)], keep_hit_at=1)
    assert card["outcomes"] == {"hit": 1, "miss": 1, "invalid": 1}
    assert (card["kept"], card["dropped"], card["failure_reasons"]) == \
        (1, {"format_invalid": 1, "no_hit": 1}, {"no hit@1": 2})


def test_the_endpoint_and_requests_in_flight_are_no_part_of_an_llm_teachers_episodes():
    def settings(**backend):
        return teacher_settings(TeacherConfig(system="mars", backend=BackendConfig(kind="openai", **backend)), None)

    served_here = settings(base_url="http://127.0.0.1:8000/v1", concurrency=8)
    assert settings(base_url="http://10.0.0.2:9000/v1", concurrency=32, timeout_s=5, max_retries=0,
                    api_key_env="KEY") == served_here  # the same run resumed through another server
    assert settings(max_tokens=64) != served_here
    assert settings(model="another") != served_here
    assert settings(temperature=0.7) != served_here


@pytest.fixture
def prompts(tmp_path, monkeypatch):
    """A copy of the role prompt files, read in place of the project's."""
    folder = tmp_path / "prompts"
    shutil.copytree(roles.PROMPTS_DIR, folder)
    monkeypatch.setattr(roles, "PROMPTS_DIR", folder)
    return folder


def test_an_llm_teachers_episodes_played_with_other_role_prompts_are_not_resumed(spec_and_tasks, prompts, tmp_path,
                                                                              monkeypatch):
    spec, tasks = spec_and_tasks
    script = tmp_path / "replies.json"
    script.write_text("[]")  # every role call fails: each episode ends cleanly with that reason
    config = TeacherConfig(system="mars", tools=["item_cf"], num_workers=0, shard_size=3,
                           backend=BackendConfig(kind="scripted", replies_file=str(script)))
    out, tasks = tmp_path / "run", tasks[:3]
    played = play_teacher(spec, tasks, config, out=out, settings=SETTINGS)
    assert [t.task_id for t in played] == [t.task_id for t in tasks]
    plays = record_plays(monkeypatch)
    assert rows(play_teacher(spec, tasks, config, out=out, settings=SETTINGS)) == rows(played) and plays == []
    before = teacher_settings(config, None)
    planner = prompts / "mars" / "planner.md"
    planner.write_text(planner.read_text(encoding="utf-8") + "\nThink step by step.\n", encoding="utf-8")
    assert teacher_settings(config, None) != before
    with pytest.raises(ValueError, match=r"played with other settings\.teacher than this run's"):
        play_teacher(spec, tasks, config, out=out, settings=SETTINGS)
    shutil.rmtree(prompts / "mars")
    with pytest.raises(FileNotFoundError, match="no role prompts for mars"):
        teacher_settings(config, None)
