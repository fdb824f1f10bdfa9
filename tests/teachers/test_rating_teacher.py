"""The rating teacher and the rating baselines played as agents through RatingPrediction-v0."""

import pytest

from envs import make_env
from envs.data import leave_last_out, synthetic_catalog
from envs.data.rating import build_rating_tasks
from envs.rating_baselines import RATING_BASELINES, BiasModel
from envs.tools import InteractionGraph
from rollout.episode import EpisodeRequest, run_episodes
from teachers.rating_teacher import BiasRater


@pytest.fixture(scope="module")
def world():
    catalog = synthetic_catalog()
    train, _ = leave_last_out(catalog.interactions)
    graph = InteractionGraph.from_interactions(train)
    return catalog, graph, build_rating_tasks(catalog)[:20]


def play(agent, world, tools=("user_info", "item_info", "user_history", "item_history")):
    catalog, graph, tasks = world
    envs = [make_env("RatingPrediction-v0", catalog=catalog, graph=graph, tool_names=list(tools)) for _ in tasks]
    return run_episodes(agent, envs, [EpisodeRequest(task) for task in tasks], source=agent.role)


def test_the_graph_gives_back_the_ratings_it_was_built_from(world):
    catalog, graph, _ = world
    train, _ = leave_last_out(catalog.interactions)
    as_pairs = lambda interactions: sorted((i.user_id, i.item_id, i.rating, i.timestamp) for i in interactions)
    assert as_pairs(graph.interactions()) == as_pairs(train)


def test_the_teacher_reads_the_items_ratings_then_answers_the_bias_prediction(world):
    _, graph, tasks = world
    model = BiasModel.fit(graph.interactions())
    trajectories = play(BiasRater(model, tools=["item_history"]), world)
    for task, trajectory in zip(tasks, trajectories):
        agent_turns = [turn for turn in trajectory.turns if turn.is_agent]
        assert len(agent_turns) == 2 and trajectory.format_valid and trajectory.terminated
        assert '"name": "item_history"' in agent_turns[0].text and f'"item_id": "{task.item_id}"' in agent_turns[0].text
        assert "averages" in agent_turns[1].text
        assert trajectory.outcome.prediction == pytest.approx(round(model.predict("bias", task), 1))
    # The item's average it reflects on is the one the tool's reply shows.
    checked = 0
    for trajectory in trajectories:
        reply = next(turn.text for turn in trajectory.turns if turn.role == "tool")
        if "ratings: " not in reply:
            continue
        shown = [float(pair.split(":")[1]) for pair in reply.split("ratings: ")[1].split("<")[0].split(", ")]
        answer = [turn for turn in trajectory.turns if turn.is_agent][1].text
        assert f"averages {sum(shown) / len(shown):.1f} over {len(shown)}" in answer, (reply, answer)
        checked += 1
    assert checked > 10


@pytest.mark.parametrize("method", RATING_BASELINES)
def test_each_baseline_as_an_agent_answers_its_exact_prediction_at_once(world, method):
    _, graph, tasks = world
    model = BiasModel.fit(graph.interactions())
    for task, trajectory in zip(tasks, play(BiasRater(model, method=method, decimals=None), world)):
        assert sum(turn.is_agent for turn in trajectory.turns) == 1 and trajectory.format_valid
        assert trajectory.outcome.prediction == model.predict(method, task)


def test_a_hit_is_a_rating_within_half_a_point():
    from envs.types import RatingOutcome, Trajectory

    def rank(prediction):
        return Trajectory(task_id="t", env_id="e", source="s", outcome=RatingOutcome(prediction, 4.0)).success_rank

    assert (rank(4.5), rank(3.5), rank(4.6), rank(None)) == (1, 1, None, None)


def test_bad_settings_and_tasks_are_refused(world):
    model = BiasModel.fit(world[1].interactions())
    with pytest.raises(ValueError, match="unknown rating baseline 'svd'"):
        BiasRater(model, method="svd")
    with pytest.raises(ValueError, match="cannot call \\['user_cf'\\]"):
        BiasRater(model, tools=["user_cf"])
    from envs.types import RankingTask, Trajectory
    from rollout.episode import Episode

    ranking = RankingTask(task_id="r", user_id="1", history=("2",), candidate_item_ids=("3", "4"), target_item_id="3")
    episode = Episode(EpisodeRequest(ranking), Trajectory(task_id="r", env_id="SequentialRec-v0", source="t"), [{}])
    with pytest.raises(ValueError, match="plays rating tasks, not RankingTask"):
        BiasRater(model).turn(episode)
