"""Rating-prediction tasks and the rating baselines on ml-100k."""

import pytest

from envs.data import leave_last_out
from envs.data.rating import build_rating_tasks
from envs.rating_baselines import RATING_BASELINES, BiasModel, rating_metrics
from envs.types import Interaction, RatingOutcome, RatingTask, Trajectory
from rewards import score


def test_rating_tasks_hold_out_each_users_last_rating_and_show_only_earlier_ones(ml100k):
    tasks = build_rating_tasks(ml100k, max_history=5)
    assert len(tasks) == len(ml100k.users) == 943
    last = {}
    for interaction in sorted(ml100k.interactions, key=lambda i: i.timestamp):
        last.setdefault(interaction.user_id, []).append(interaction)
    by_pair = {(i.user_id, i.item_id): i for i in ml100k.interactions}
    for task in tasks:
        target = by_pair[(task.user_id, task.item_id)]
        assert task.target_rating == target.rating and len(task.history) == len(task.history_ratings) <= 5
        assert task.item_id not in task.history
        for item_id, rating in zip(task.history, task.history_ratings):
            earlier = by_pair[(task.user_id, item_id)]
            assert earlier.rating == rating and earlier.timestamp <= target.timestamp
    assert build_rating_tasks(ml100k, max_history=0)[0].history == ()


def test_the_bias_baselines_beat_the_global_mean_on_held_out_ratings(ml100k):
    train, _ = leave_last_out(ml100k.interactions)
    tasks = build_rating_tasks(ml100k)
    model = BiasModel.fit(train)
    targets = [task.target_rating for task in tasks]
    rmse = {name: rating_metrics([model.predict(name, t) for t in tasks], targets, fallback=model.mean)["rmse"]
            for name in RATING_BASELINES}
    assert rmse["bias"] < min(rmse["user_bias"], rmse["item_bias"]) < rmse["global_mean"] - 0.05, rmse
    assert 0.8 < rmse["bias"] < 1.1, rmse


def test_unseen_users_and_items_fall_back_to_the_mean_and_bad_input_is_refused():
    model = BiasModel.fit([Interaction("u", "a", 5, 0), Interaction("v", "b", 1, 1)])
    task = RatingTask(task_id="t", user_id="new", item_id="new", history=(), history_ratings=(), target_rating=3)
    assert model.predict("bias", task) == model.mean == 3.0
    with pytest.raises(ValueError, match="unknown rating baseline 'svd'"):
        model.predict("svd", task)
    with pytest.raises(ValueError, match="at least one training rating"):
        BiasModel.fit([])
    with pytest.raises(ValueError, match="one prediction per target"):
        rating_metrics([1.0], [1.0, 2.0], fallback=3.0)


@pytest.fixture(scope="module")
def rating_setup():
    from envs.data import synthetic_catalog
    from envs.tools import InteractionGraph

    catalog = synthetic_catalog()
    train, _ = leave_last_out(catalog.interactions)
    return catalog, InteractionGraph.from_interactions(train), build_rating_tasks(catalog)


def make_rating_env(rating_setup, **kwargs):
    from envs import make_env

    catalog, graph, tasks = rating_setup
    return make_env("RatingPrediction-v0", catalog=catalog, graph=graph, tasks=tasks, **kwargs)


def test_the_rating_env_passes_check_env_and_scores_the_squared_error(rating_setup):
    from envs.checker import check_env

    env = make_rating_env(rating_setup)
    check_env(env)
    task = rating_setup[2][0]
    prompt, _ = env.reset(options={"task": task})
    assert f"Item {task.item_id}" in prompt and str(task.target_rating) not in prompt.split("Item")[1]
    observation, reward, terminated, _, info = env.step(
        f'<plan>look</plan><tool_call>{{"name": "user_history", "arguments": {{"user_id": "{task.user_id}"}}}}'
        "</tool_call>")
    assert "<tool_response>" in observation and reward == 0.0 and not terminated and not info["errors"]
    _, reward, terminated, _, info = env.step("<reflection>ok</reflection><answer>2.5</answer>")
    assert terminated and info["format_valid"] and info["outcome"] == RatingOutcome(2.5, task.target_rating)
    assert reward == pytest.approx(-((2.5 - task.target_rating) ** 2))


@pytest.mark.parametrize("answer, error, prediction", [
    ("<answer>9</answer>", "outside 1-5", None), ("<answer>good</answer>", "not a finite number", None),
    ("<answer>nan</answer>", "not a finite number", None), ("<answer>3</answer><answer>4</answer>", "more than one <answer>", 3.0),
    ("<recommend>3</recommend>", "<recommend> is not used here", "no outcome")])
def test_an_unusable_answer_costs_the_largest_squared_error_and_the_format(rating_setup, answer, error, prediction):
    env = make_rating_env(rating_setup)
    task = rating_setup[2][0]
    env.reset(options={"task": task})
    _, reward, terminated, truncated, info = env.step(answer)
    assert any(error in e for e in info["errors"]), info["errors"]
    assert not info["format_valid"]
    if prediction == "no outcome":  # not an answer: the episode goes on
        assert not terminated and reward == 0.0 and info["outcome"] is None
    else:
        assert terminated and info["outcome"].prediction == prediction
        assert reward == (-16.0 if prediction is None else -((prediction - task.target_rating) ** 2))


def test_recrl_eval_scores_the_rating_baselines_and_a_student_by_rmse_and_mae(tmp_path, capsys):
    import json

    from launch.cli import main

    overrides = [f"run_dir={tmp_path}", "data.dataset=synthetic", "env.env_id=RatingPrediction-v0",
                 "env.tools=[user_info,item_info,user_history]", "model.name=tiny-random", "rollout.num_workers=0",
                 "eval.num_tasks=8", "eval.max_new_tokens=16", "eval.methods=[global_mean,bias,student_base]"]
    assert main(["eval", *overrides]) == 0
    out = capsys.readouterr().out
    assert "rmse" in out and "global_mean" in out
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["protocol"]["task"] == "rating" and len(report["task_ids"]) == 8
    assert set(report["methods"]) == {"global_mean", "bias", "student_base"}
    # A random-init model writes no usable rating: every answer is scored as the training mean.
    base = report["methods"]["student_base"]
    assert base["valid_rate"] == 0.0 and base["rmse"] == report["methods"]["global_mean"]["rmse"]
    assert main(["eval", *overrides[:-1], "eval.methods=[userknn]"]) == 1
    assert "unknown eval method(s) ['userknn'] for RatingPrediction-v0" in capsys.readouterr().err


def test_an_episode_cut_before_its_answer_ends_with_an_unanswered_outcome(rating_setup):
    env = make_rating_env(rating_setup, max_turns=1)
    task = rating_setup[2][0]
    env.reset(options={"task": task})
    _, reward, terminated, truncated, info = env.step("<plan>think</plan>")
    assert truncated and not terminated and info["outcome"] == RatingOutcome(None, task.target_rating)
    trajectory = Trajectory(task_id=task.task_id, env_id="RatingPrediction-v0", source="t", outcome=info["outcome"])
    assert score(trajectory, {"rp_v1": 1.0})[0] == -((0.0 - task.target_rating) ** 2)  # MACRec: no answer rates 0
