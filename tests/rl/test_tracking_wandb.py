"""An offline wandb run read back from disk: its metrics, a table of sample episodes, a model artifact.

wandb 0.31 writes an offline run's records to ``run-<id>.wandb`` from its Go core and no longer ships
the Python reader (``wandb.sdk.internal.datastore``) that older versions had, so ``read_records``
below reads the format itself: a 7-byte file header (``:W&B``, magic 0xBEE1, version 0), then
LevelDB-log blocks of 32 KiB holding chunks with a 7-byte header (CRC-32, length, chunk type:
1 full, 2 first, 3 middle, 4 last), each record a ``wandb_internal_pb2.Record`` protobuf.
"""

import json
import struct
import time

import pytest

from envs.types import (DialogueOutcome, ParsedAction, RankingOutcome, RankingTask, RatingOutcome, RatingTask,
                        ToolCall, Trajectory, Turn)
from rl.tables import TRAJECTORY_COLUMNS, trajectory_rows
from rl.tracking import Tracker

BLOCK, HEADER = 32 * 1024, 7


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Keep wandb offline and its config, cache and artifact staging out of the home directory."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb_home"))


def read_records(path):
    """Every record of an offline run's ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:HEADER]) == (b":W&B", 0xBEE1, 0)
    records, chunks, offset = [], b"", HEADER
    while offset + HEADER <= len(data):
        if BLOCK - offset % BLOCK < HEADER:  # a block's tail too short for a header is padding
            offset += BLOCK - offset % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[offset : offset + HEADER])
        if kind == 0:  # zero padding up to the end of the file
            break
        chunk = data[offset + HEADER : offset + HEADER + length]
        offset += HEADER + length
        chunks = chunk if kind in (1, 2) else chunks + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
    return records


def written_records(path, *, timeout=60.0):
    """The records of a finished run's ``.wandb`` file once it holds the run's ``exit`` record: wandb's
    core process writes the file in the background, and on a loaded machine it can still be writing
    when ``finish`` has returned."""
    from google.protobuf.message import DecodeError

    deadline = time.monotonic() + timeout
    while True:
        try:
            records = read_records(path)
        except (DecodeError, struct.error):  # a header or a record still being written
            records = []
        if by_type(records, "exit") or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def by_type(records, name):
    return [getattr(record, name) for record in records if record.WhichOneof("record_type") == name]


def history_rows(records):
    """Each history record as ``{metric: value}`` (nested keys such as a table's joined with ``.``)."""
    return [{".".join(item.nested_key) or item.key: json.loads(item.value_json) for item in history.item}
            for history in by_type(records, "history")]


def handmade_trajectories():
    """A ranking episode with a tool call, a ranking episode with no ranking, and a rating episode."""
    ranking = Trajectory(task_id="r1", env_id="SequentialRec-v0", source="student_grpo", reward=1.5, turns=[
        Turn("system", "You rank movies."),
        Turn("user", "Rank 7, 3, 9 for user 5."),
        Turn("policy", "<tool_call>...</tool_call>", reward=0.0, action=ParsedAction(
            tool_calls=[ToolCall("sequential", {"user_id": "5", "k": 3})])),
        Turn("tool", "7 3 9"),
        Turn("policy", "<recommend>3, 7, 9</recommend>", reward=1.5, action=ParsedAction(recommend=["3", "7", "9"])),
    ], outcome=RankingOutcome(ranking=("3", "7", "9"), rank=2))
    unranked = Trajectory(task_id="r2", env_id="SequentialRec-v0", source="student_grpo", reward=-1.0, turns=[
        Turn("user", "Rank 1, 2."), Turn("policy", "no idea", reward=-1.0, action=ParsedAction(errors=["no tag"]))],
        outcome=RankingOutcome())
    rating = Trajectory(task_id="p1", env_id="RatingPrediction-v0", source="teacher", reward=0.8, turns=[
        Turn("user", "Rate item 4."), Turn("policy", "<answer>4</answer>", reward=0.8, action=ParsedAction(answer="4"))],
        outcome=RatingOutcome(prediction=4.0, target=4.5))
    tasks = [RankingTask(task_id="r1", user_id="5", history=("1",), candidate_item_ids=("7", "3", "9"),
                         target_item_id="7"),
             RatingTask(task_id="p1", user_id="5", item_id="4", history=(), history_ratings=(), target_rating=4.5)]
    return [ranking, unranked, rating], tasks


def test_trajectory_rows_show_prompt_calls_rewards_recommendation_target_and_outcome():
    trajectories, tasks = handmade_trajectories()
    rows = trajectory_rows(trajectories, 8, tasks=tasks)
    assert [tuple(row) for row in rows] == [TRAJECTORY_COLUMNS] * 3
    assert rows[0] == {"task_id": "r1", "source": "student_grpo", "prompt": "Rank 7, 3, 9 for user 5.",
                       "tool_calls": 'sequential{"user_id":"5","k":3}', "turn_rewards": [0.0, 1.5],
                       "recommendation": "3, 7, 9", "target": "7", "outcome": "rank 2", "reward": 1.5}
    assert (rows[1]["tool_calls"], rows[1]["recommendation"], rows[1]["target"], rows[1]["outcome"]) == (
        "", "", "", "no usable ranking")  # r2's task was not given: no target
    assert (rows[2]["recommendation"], rows[2]["target"], rows[2]["outcome"]) == ("4", "4.5", "predicted 4")
    assert [row["task_id"] for row in trajectory_rows(trajectories, 2)] == ["r1", "r2"]
    assert trajectory_rows(trajectories, 0) == []


def test_a_dialogue_row_names_the_act_and_how_the_conversation_ended():
    act = ParsedAction(act="recommend", recommend=["12", "40"], utterance="Try these.")
    dialogue = Trajectory(task_id="d1", env_id="Conversational-v0", source="crs_rules", turns=[
        Turn("user", "Something funny?"), Turn("policy", "...", reward=1.0, action=act)],
        outcome=DialogueOutcome(accepted=True, accepted_at=1, turns=1, recommended=("12", "40")))
    (row,) = trajectory_rows([dialogue], 8)
    assert row["recommendation"] == "recommend: 12, 40"
    assert row["outcome"] == "accepted at turn 1; recommended 12, 40"


def test_disabled_tracker_mirrors_tables_locally_and_logs_no_artifact(tmp_path):
    tracker = Tracker(project="recrl-test", run_dir=tmp_path, config={}, enabled=False)
    path = tracker.table("eval/samples_teacher", [{"task_id": "a", "reward": 1.0}, {"task_id": "b"}], step=3)
    tracker.artifact(tmp_path / "missing", name="m", type="model")  # a no-op: nothing is checked or copied
    tracker.finish()
    assert path == tmp_path / "tables" / "eval" / "samples_teacher-3.jsonl"
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"task_id": "a", "reward": 1.0},
                                                                           {"task_id": "b"}]


def test_wandb_mode_disabled_copies_no_artifact(tmp_path, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with Tracker(project="recrl-test", run_dir=tmp_path, config={}) as tracker:
        tracker.artifact(tmp_path / "missing", name="m", type="model")
        tracker.table("eval/samples_pop", [{"task_id": "a"}], step=0)
    assert not (tmp_path / "wandb_home").exists() and not list(tmp_path.glob("wandb/offline-run-*"))
    assert (tmp_path / "tables" / "eval" / "samples_pop-0.jsonl").read_text() == '{"task_id": "a"}\n'


def test_an_offline_run_holds_the_metrics_the_table_and_the_model_artifact(tmp_path, wandb_env):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    trajectories, tasks = handmade_trajectories()
    rows = trajectory_rows(trajectories, 8, tasks=tasks)
    run_dir = tmp_path / "run"
    with Tracker(project="recrl-test", run_dir=run_dir, config={"grpo": {"lr": 1e-5}}, name="t") as tracker:
        tracker.log({"train/loss": 0.5, "reward/format": 1.0}, step=1)
        with pytest.raises(FileNotFoundError, match="missing"):
            tracker.artifact(tmp_path / "missing", name="m", type="model")
        tracker.artifact(adapter, name="quick start/grpo-adapter", type="model", aliases=["final"],
                         metadata={"step": 1})
        tracker.table("eval/samples_student_grpo", rows, step=2)
        tracker.log({"eval/hr@1": 0.25}, step=2)

    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    (records_file,) = offline_run.glob("run-*.wandb")
    records = written_records(records_file)
    (run,) = by_type(records, "run")
    assert {item.key: json.loads(item.value_json) for item in run.config.update}["grpo"] == {"lr": 1e-5}

    history = history_rows(records)
    assert {"_step": 1, "train/loss": 0.5, "reward/format": 1.0}.items() <= history[0].items()
    step_2 = history[1]
    assert step_2["_step"] == 2 and step_2["eval/hr@1"] == 0.25
    assert step_2["eval/samples_student_grpo._type"] == "table-file"
    table = json.loads((offline_run / "files" / step_2["eval/samples_student_grpo.path"]).read_text())
    assert table["columns"] == list(TRAJECTORY_COLUMNS)
    assert table["data"][0][table["columns"].index("tool_calls")] == 'sequential{"user_id":"5","k":3}'
    assert [row[-1] for row in table["data"]] == [1.5, -1.0, 0.8]

    (model,) = [artifact for artifact in by_type(records, "artifact") if artifact.type == "model"]
    assert model.name == "quick-start-grpo-adapter"  # the space and the slash wandb refuses became dashes
    assert set(model.aliases) == {"final", "latest"} and json.loads(model.metadata) == {"step": 1}
    (entry,) = model.manifest.contents
    assert entry.path == "adapter_config.json" and entry.size == len('{"r": 8}')
    with open(entry.local_path) as staged:  # copied into wandb's staging folder, to upload at `wandb sync`
        assert staged.read() == '{"r": 8}'

    local = run_dir / "tables" / "eval" / "samples_student_grpo-2.jsonl"
    assert [json.loads(line) for line in local.read_text().splitlines()] == rows
