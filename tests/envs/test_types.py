"""The shared types: tasks by kind, and a Trajectory of turns that survives a dataset round trip."""

import json

import datasets
import pytest

from envs.types import (DialogueOutcome, DialogueTask, ParsedAction, RankingOutcome, RankingTask, RatingOutcome,
                        RatingTask, ToolCall, Trajectory, Turn, task_from_json)


def full_trajectory() -> Trajectory:
    action = ParsedAction(plan="p", tool_calls=[ToolCall("user_cf", {"user_id": "7", "k": 3})])
    final = ParsedAction(reflection="r", recommend=["3", "1"], errors=["recommended id '9' is not a candidate"])
    turns = [Turn("system", "sys"), Turn("user", "User 7.", 0, 5),
             Turn("policy", "<plan>p</plan>...", 5, 9, 0.0, action),
             Turn("tool", "<tool_response>user_cf ...</tool_response>", 9, 12),
             Turn("policy", "<recommend>3, 1, 9</recommend>", 12, 15, 0.5, final, list(final.errors))]
    return Trajectory(task_id="ml:7", env_id="SequentialRec-v0", source="student", group_id="3:ml:7", turns=turns,
                      outcome=RankingOutcome(ranking=("3", "1", "2"), rank=2), format_valid=False, terminated=True,
                      rewards={"format": -1.0, "tiered_hit": 2 / 3}, reward=-1 / 3,
                      token_ids=list(range(15)), loss_mask=[0] * 5 + [1] * 4 + [0] * 3 + [1] * 3,
                      logprobs=[0.0] * 5 + [-0.25] * 4 + [0.0] * 3 + [-1.5] * 3,
                      ref_logprobs=[0.0] * 15, values=[0.1] * 15, advantages=[0.0] * 5 + [0.7] * 10)


def test_a_trajectory_round_trips_through_a_dataset_losslessly(tmp_path):
    trajectories = [full_trajectory(), Trajectory(task_id="t", env_id="e", source="teacher")]
    datasets.Dataset.from_list([t.to_row() for t in trajectories]).save_to_disk(str(tmp_path))
    back = [Trajectory.from_row(row) for row in datasets.load_from_disk(str(tmp_path))]
    assert back == trajectories


def test_derived_views_of_the_turns():
    trajectory = full_trajectory()
    assert [m["role"] for m in trajectory.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert len(trajectory.actions) == 2 and trajectory.num_tool_calls == 1
    assert trajectory.errors == ["recommended id '9' is not a candidate"]
    assert trajectory.rank == 2 and Trajectory(task_id="t", env_id="e", source="s").rank is None


def test_tasks_serialize_with_their_kind():
    task = RankingTask(task_id="t", user_id="u", history=("a",), candidate_item_ids=("b", "c"), target_item_id="b")
    row = task.to_json()
    assert row["kind"] == "ranking" and row["history"] == ["a"]
    assert task_from_json(row) == task
    assert task_from_json({k: v for k, v in row.items() if k != "kind"}) == task  # files from before kinds
    with pytest.raises(ValueError, match="unknown task kind 'survey'"):
        task_from_json({**row, "kind": "survey"})
    rating = RatingTask(task_id="r", user_id="u", item_id="i", history=("a", "b"), history_ratings=(4.0, 2.0),
                        target_rating=5.0)
    dialogue = DialogueTask(task_id="d", user_id="u", history=("a",), candidate_item_ids=("b", "c"),
                            target_item_id="c", opening="something funny?")
    for other in (rating, dialogue):
        assert task_from_json(json.loads(json.dumps(other.to_json()))) == other


def test_every_outcome_round_trips_through_a_dataset_row():
    for outcome in (RankingOutcome(ranking=("b", "a"), rank=2), RatingOutcome(prediction=3.5, target=4.0),
                    DialogueOutcome(accepted=True, accepted_at=3, turns=3, recommended=("x", "c"))):
        trajectory = Trajectory(task_id="t", env_id="e", source="s", outcome=outcome)
        assert Trajectory.from_row(trajectory.to_row()).outcome == outcome
