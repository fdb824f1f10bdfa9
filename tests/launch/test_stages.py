"""Run-folder bookkeeping of the stages: which GRPO checkpoint may be resumed, which stage reused."""

import functools
import hashlib
import json
from dataclasses import asdict

import pytest

from launch import evaluation, stages
from launch.config import load_config
from launch.stages import RunPaths, resume_from
from rl.checkpoints import ResumeError, save_checkpoint
from rollout.policy import checkpoint_fingerprint

STATE = {"sft": "abc", "seed": 0, "tasks_per_step": 2, "group_size": 4, "tasks": "t"}


def write_weights(folder):
    (folder / "adapter_model.safetensors").write_bytes(b"w")


def test_the_latest_grpo_checkpoint_is_resumed_only_with_the_same_sft_and_data_order(tmp_path, capsys):
    paths = RunPaths(tmp_path)
    assert resume_from(paths, STATE) is None  # nothing saved yet
    for step in (1, 2):
        save_checkpoint(paths.grpo_checkpoints, step, write_weights, STATE)
    assert resume_from(paths, STATE) == paths.grpo_checkpoints / "step-000002"
    with pytest.raises(ResumeError, match=r"group_size: 4 -> 8"):
        resume_from(paths, {**STATE, "group_size": 8})
    assert resume_from(paths, {**STATE, "sft": "def"}) is None  # a new SFT adapter starts over
    assert "starting over" in capsys.readouterr().out
    assert not paths.grpo_checkpoints.exists()


def test_a_runs_saved_config_is_found_by_the_commands_that_ran(tmp_path):
    paths = RunPaths(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no config.quickstart.yaml or config.curate.yaml: run `recrl quickstart`"):
        paths.saved_config("quickstart", "curate")
    paths.config("curate").write_text("seed: 1\n")
    assert paths.saved_config("quickstart", "curate") == tmp_path / "config.curate.yaml"
    paths.config("quickstart").write_text("seed: 2\n")
    assert paths.saved_config("quickstart", "curate") == tmp_path / "config.quickstart.yaml"


def test_fingerprints_hash_the_weights(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    assert checkpoint_fingerprint(tmp_path) == hashlib.sha256(b"weights").hexdigest()
    with pytest.raises(FileNotFoundError, match="no checkpoint weights"):
        checkpoint_fingerprint(tmp_path / "empty")


def test_finished_stages_are_reused_only_with_the_same_settings(tmp_path):
    config = load_config(None, [f"run_dir={tmp_path}"])
    for stage in ("teach", "sft", "curate"):
        assert not stages.is_done(config, stage)
        stages.done_marker(config, stage).parent.mkdir(parents=True, exist_ok=True)
        stages.mark_done(config, stage)
        assert stages.is_done(config, stage)
    # A setting invalidates its stage and every stage after it, never the ones before.
    changed = load_config(None, [f"run_dir={tmp_path}", "sft.lr=0.001"])
    assert [stages.is_done(changed, s) for s in ("teach", "sft", "curate")] == [True, False, False]
    changed = load_config(None, [f"run_dir={tmp_path}", "env.max_turns=2"])
    assert [stages.is_done(changed, s) for s in ("teach", "sft", "curate")] == [False, False, False]
    changed = load_config(None, [f"run_dir={tmp_path}", "curriculum.samples=4", "grpo.steps=9"])
    assert [stages.is_done(changed, s) for s in ("teach", "sft", "curate")] == [True, True, False]
    changed = load_config(None, [f"run_dir={tmp_path}", "data.min_rating=4"])
    assert [stages.is_done(changed, s) for s in ("teach", "sft", "curate")] == [False, False, False]
    # How the teacher runs (workers, episodes in flight) is not what it makes.
    resumed = load_config(None, [f"run_dir={tmp_path}", "teacher.num_workers=0", "teacher.concurrency=3"])
    assert [stages.is_done(resumed, s) for s in ("teach", "sft", "curate")] == [True, True, True]


def test_an_llm_teachers_role_prompts_decide_its_stage_and_every_one_after(tmp_path, monkeypatch):
    import shutil

    from teachers.systems import roles

    prompts = tmp_path / "prompts"
    shutil.copytree(roles.PROMPTS_DIR, prompts)
    monkeypatch.setattr(roles, "PROMPTS_DIR", prompts)
    config = load_config(None, [f"run_dir={tmp_path}", "teacher.system=macrec"])
    for stage in ("teach", "sft"):
        stages.done_marker(config, stage).parent.mkdir(parents=True, exist_ok=True)
        stages.mark_done(config, stage)
    assert stages.is_done(config, "teach") and stages.is_done(config, "sft")
    (prompts / "macrec" / "analyst.md").write_text((prompts / "macrec" / "analyst.md").read_text() + "\nBe brief.\n")
    assert not stages.is_done(config, "teach") and not stages.is_done(config, "sft")
    stages.mark_done(config, "teach")
    (prompts / "mars" / "planner.md").write_text("another planner")  # another system's prompts change nothing here
    assert stages.is_done(config, "teach")
    # The same model and sampling at another address, with other limits, answers the same; another sampling does not.
    moved = load_config(None, [f"run_dir={tmp_path}", "teacher.system=macrec", "teacher.backend.kind=openai",
                               "teacher.backend.base_url=http://10.0.0.7:9000/v1", "teacher.backend.concurrency=64",
                               "teacher.backend.timeout_s=600", "teacher.backend.max_retries=9"])
    assert stages.stage_key(moved, "teach") != stages.stage_key(config, "teach")  # another kind of backend
    assert stages.stage_key(moved, "teach") == stages.stage_key(load_config(None, [
        f"run_dir={tmp_path}", "teacher.system=macrec", "teacher.backend.kind=openai"]), "teach")
    hotter = load_config(None, [f"run_dir={tmp_path}", "teacher.system=macrec", "teacher.backend.temperature=0.7"])
    assert stages.stage_key(hotter, "teach") != stages.stage_key(config, "teach")


def test_a_run_folder_from_before_a_new_data_setting_still_resumes(tmp_path):
    """Its saved settings and stage digests lack ``data.min_rating`` and ``data.path``: at their
    defaults they change nothing, so it resumes; set, they are new settings."""
    import hashlib
    import json
    from dataclasses import asdict

    overrides = [f"run_dir={tmp_path}", "data.dataset=synthetic", "data.num_negatives=4"]
    config = load_config(None, overrides)
    stages.stage_data(config)
    settings = tmp_path / "data" / "settings.json"
    older = {k: v for k, v in json.loads(settings.read_text()).items() if k not in ("min_rating", "path")}
    settings.write_text(json.dumps(older))
    assert len(stages.stage_data(config)[2]) > 0
    with pytest.raises(ValueError, match="were built with data settings"):
        stages.stage_data(load_config(None, [*overrides, "data.min_rating=4"]))
    # Older folders' digests lack every setting added since, at the value where it changes nothing.
    sections = {name: asdict(config)[name] for name in stages.STAGE_SETTINGS["teach"]}
    for name, added in stages.NEUTRAL_SETTINGS.items():
        if name in sections:
            sections[name] = {k: v for k, v in sections[name].items() if k not in added}
    assert sections["data"] == older and "plan_turns" not in sections["env"] and "system" not in sections["teacher"]
    assert stages.stage_key(config, "teach") == hashlib.sha256(json.dumps([sections], sort_keys=True).encode()).hexdigest()


def test_an_evaluation_rerun_reuses_a_student_only_with_the_same_weights_and_settings(tmp_path, monkeypatch):
    overrides = [f"run_dir={tmp_path}", "data.dataset=synthetic", "data.num_negatives=4", "model.name=tiny-random",
                 "model.lora_r=0", "rollout.num_workers=0", "env.tools=[popularity]", "eval.methods=[pop,student_base]",
                 "eval.num_tasks=3", "eval.max_new_tokens=16", "eval.best_of_k=[1,2]",
                 "eval.best_of_k_methods=[student_base]"]
    first = evaluation.stage_eval(load_config(None, overrides))
    assert len(first["ranks"]["student_base"]) == 3 and set(first["best_of_k"]["student_base"]) == {1, 2}

    def must_not_play(*args, **kwargs):
        raise AssertionError("the student was played again")

    monkeypatch.setattr(evaluation, "play_students", must_not_play)
    again = evaluation.stage_eval(load_config(None, overrides))
    assert again["methods"]["student_base"] == first["methods"]["student_base"]
    assert again["best_of_k"]["student_base"] == first["best_of_k"]["student_base"]
    assert again["fingerprints"] == first["fingerprints"]
    for changed in ("eval.max_new_tokens=17", "eval.best_of_k_temperature=0.9"):
        with pytest.raises(AssertionError, match="played again"):
            evaluation.stage_eval(load_config(None, [*overrides, changed]))


def test_curation_resumes_after_the_last_chunk_and_samples_only_new_candidates(tmp_path, monkeypatch):
    from rl.learner import Learner

    overrides = [f"run_dir={tmp_path}", "data.dataset=synthetic", "data.num_negatives=4", "model.name=tiny-random",
                 "model.lora_r=0", "rollout.num_workers=0", "rollout.max_batch_size=2", "env.tools=[popularity]",
                 "curriculum.enabled=true", "curriculum.samples=2", "curriculum.max_new_tokens=8"]
    config = load_config(None, [*overrides, "curriculum.candidate_tasks=4"])
    Learner(model_name="tiny-random", lora=None, lr=1e-3).save(RunPaths(tmp_path).sft_adapter)
    played = []
    real_map = stages.map_actors

    def recording_map(workers, method, requests, **kwargs):
        if len(played) == 2 and fail[0]:
            fail[0] = False
            raise RuntimeError("killed mid-curation")
        played.append(sorted({r.task.task_id for r in requests}))
        return real_map(workers, method, requests, **kwargs)

    fail = [True]
    monkeypatch.setattr(stages, "map_actors", recording_map)
    with pytest.raises(RuntimeError, match="killed"):
        stages.stage_curate(config)
    assert len(played) == 2  # one task a chunk (2 samples, batches of 2): two chunks were noted
    counts = stages.stage_curate(config)
    assert len(played) == 4 and counts["candidates"] == 4  # the rerun played the other two tasks only
    first_four = {task for chunk in played for task in chunk}
    stages.stage_curate(load_config(None, [*overrides, "curriculum.candidate_tasks=8"]))
    new = {task for chunk in played[4:] for task in chunk}
    assert len(played) == 8 and not new & first_four  # more candidates: only the new ones are sampled
    stages.stage_curate(load_config(None, [*overrides, "curriculum.candidate_tasks=8", "curriculum.success_at=3"]))
    assert len(played) == 8  # success counted at another rank: the same samples
    stages.stage_curate(load_config(None, [*overrides, "curriculum.candidate_tasks=8", "curriculum.temperature=1.0"]))
    assert len(played) == 16  # other sampling settings: every candidate again


def test_a_turn_budget_shorter_than_the_teachers_turns_is_warned_about(tmp_path):
    import datasets

    from envs.types import Trajectory, Turn

    config = load_config(None, [f"run_dir={tmp_path}", "model.name=tiny-random", "grpo.max_new_tokens=8",
                                "curriculum.max_new_tokens=16", "eval.max_new_tokens=400"])
    assert stages.turn_budget_warnings(config) == []  # no teacher data yet
    long_turn = "<plan>" + "look " * 30 + "</plan><recommend>1</recommend>"
    trajectory = Trajectory(task_id="t", env_id="SequentialRec-v0", source="teacher",
                            turns=[Turn("system", "rules " * 50), Turn("cf_expert", long_turn)])
    datasets.Dataset.from_list([trajectory.to_row()]).save_to_disk(str(RunPaths(tmp_path).teacher_dataset))
    warnings = stages.turn_budget_warnings(config)
    assert len(warnings) == 2 and "curriculum.max_new_tokens=16" in warnings[0] and "grpo.max_new_tokens=8" in warnings[1]
    assert "up to 44 tokens" in warnings[0]
    assert stages.turn_budget_warnings(config, "eval") == []  # eval's own budget is long enough
    assert [w.split(":")[0] for w in stages.turn_budget_warnings(config, "train")] == [warnings[1].split(":")[0]]


def test_a_teacher_evaluation_resumes_after_its_last_saved_shard(tmp_path, monkeypatch):
    from teachers.pipeline import TeacherWorker

    overrides = [f"run_dir={tmp_path}", "data.dataset=synthetic", "data.num_negatives=4", "env.tools=[popularity]",
                 "teacher.tools=[popularity,genre_year]", "teacher.num_workers=0", "teacher.shard_size=2",
                 "eval.methods=[teacher]", "eval.num_tasks=5"]
    first = evaluation.stage_eval(load_config(None, overrides))
    [folder] = RunPaths(tmp_path).teacher_eval.iterdir()
    shards = sorted((folder / "shards").glob("shard-*.jsonl"))
    assert len(shards) == 3 and len(first["ranks"]["teacher"]) == 5
    shards[1].unlink()  # as if killed while playing the second shard
    played, play = [], TeacherWorker.play

    @functools.wraps(play)
    def counting_play(self, tasks):
        played.append(len(tasks))
        return play(self, tasks)

    monkeypatch.setattr(TeacherWorker, "play", counting_play)
    again = evaluation.stage_eval(load_config(None, overrides))
    assert played == [2]  # only the missing shard
    assert again["methods"]["teacher"] == first["methods"]["teacher"] and again["ranks"] == first["ranks"]
    evaluation.stage_eval(load_config(None, [*overrides, "teacher.tools=[popularity]"]))  # other episodes: own folder
    assert played == [2, 2, 2, 1] and len(list(RunPaths(tmp_path).teacher_eval.iterdir())) == 2


@pytest.mark.parametrize("recipe", [None, "configs/rating.yaml", "configs/crs_grpo.yaml"],
                         ids=["ranking", "rating", "dialogue"])
def test_a_student_evaluation_resumes_after_its_last_saved_chunk(recipe, tmp_path, monkeypatch):
    from rollout.worker import RolloutWorker

    overrides = [f"run_dir={tmp_path}", "data.dataset=synthetic", "model.name=tiny-random", "model.lora_r=0",
                 "rollout.num_workers=0", "rollout.max_batch_size=2", "eval.methods=[student_base]",
                 "eval.num_tasks=5", "eval.max_new_tokens=16"]
    if recipe is None:
        overrides += ["data.num_negatives=4", "env.tools=[popularity]"]
    per_task = "predictions" if recipe == "configs/rating.yaml" else "ranks"  # one value per task
    first = evaluation.stage_eval(load_config(recipe, overrides))
    [student] = RunPaths(tmp_path).student_eval.iterdir()
    if recipe is None:
        assert student.name == f"student_base-{first['fingerprints']['student_base']}"
    [folder] = student.iterdir()
    chunks = sorted(folder.glob("shard-*.jsonl"))
    assert len(chunks) == 3 and len(first[per_task]["student_base"]) == 5  # 2 tasks a chunk
    chunks[1].unlink()  # as if killed while playing the second chunk
    RunPaths(tmp_path).eval_json.unlink()  # and before eval.json had the student's results
    played, rollout = [], RolloutWorker.rollout

    @functools.wraps(rollout)
    def counting_rollout(self, requests, **kwargs):
        played.append([request.task.task_id for request in requests])
        return rollout(self, requests, **kwargs)

    monkeypatch.setattr(RolloutWorker, "rollout", counting_rollout)
    again = evaluation.stage_eval(load_config(recipe, overrides))
    assert played == [first["task_ids"][2:4]]  # only the missing chunk
    same = json.dumps  # NaN (turns to acceptance when none accepted) equals itself only as text
    assert same(again["methods"]["student_base"]) == same(first["methods"]["student_base"])
    assert again[per_task] == first[per_task]

    def must_not_start(*args, **kwargs):
        raise AssertionError("rollout workers were started")

    RunPaths(tmp_path).eval_json.unlink()  # every chunk saved: nothing to play, no worker to start
    monkeypatch.setattr(evaluation, "load_student", must_not_start)
    assert evaluation.stage_eval(load_config(recipe, overrides))[per_task] == first[per_task]


def test_the_teacher_plays_a_seeded_sample_of_the_training_tasks(tmp_path):
    from envs.data.splits import sample_in_order
    from teachers.pipeline import TeacherConfig
    from teachers.shards import MANIFEST, tasks_digest

    overrides = [f"run_dir={tmp_path}", "data.dataset=synthetic", "data.num_negatives=4", "env.tools=[popularity]",
                 "teacher.tools=[popularity]", "teacher.num_workers=0", "teacher.keep_hit_at=5"]
    sampled = load_config(None, [*overrides, "teacher.num_tasks=5"])
    card = stages.stage_teach(sampled)
    _, train_tasks, _ = stages.stage_data(sampled)
    assert card["episodes"] == 5 < len(train_tasks)
    manifest = json.loads((tmp_path / "teacher" / "shards" / MANIFEST).read_text())
    assert manifest["tasks_digest"] == tasks_digest(sample_in_order(train_tasks, 5, seed=sampled.seed))
    # The sample decides the episodes; all tasks (0) is the setting older run folders were keyed without.
    assert stages.is_done(sampled, "teach") and not stages.is_done(load_config(None, overrides), "teach")
    assert stages.keyed("teacher", asdict(load_config(None, overrides).teacher)).get("num_tasks") is None
    with pytest.raises(ValueError, match="teacher.num_tasks must be >= 0"):
        TeacherConfig(num_tasks=-1)
