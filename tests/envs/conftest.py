"""One factory per registered env id, so the shared env tests (check_env, hostile actions) cover
every env. Adding an env: write a factory returning an ``EnvCase`` and add it to ``ENV_FACTORIES``."""

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import pytest

from envs import make_env
from envs.conversational import dialogue_task
from envs.data import build_tasks, leave_last_out, synthetic_catalog, training_interactions
from envs.data.rating import build_rating_tasks
from envs.tools import InteractionGraph
from envs.types import Task

CATALOG = synthetic_catalog()
RANKING_TASKS = build_tasks(CATALOG, num_negatives=9, seed=0)
GRAPH = InteractionGraph.from_interactions(training_interactions(CATALOG.interactions, RANKING_TASKS))


@dataclass
class EnvCase:
    """A fresh env built with tasks, one of its tasks, and a well-formed action that ends an episode
    of that task from its first turn on."""

    env: gym.Env
    task: Task
    final_action: str


def sequential_rec() -> EnvCase:
    env = make_env("SequentialRec-v0", catalog=CATALOG, graph=GRAPH, tasks=RANKING_TASKS)
    task = RANKING_TASKS[0]
    return EnvCase(env, task, f"<recommend>{task.target_item_id}</recommend>")


def conversational_rec() -> EnvCase:
    tasks = [dialogue_task(task) for task in RANKING_TASKS]
    env = make_env("ConversationalRec-v0", catalog=CATALOG, graph=GRAPH, tasks=tasks)
    task = tasks[0]
    return EnvCase(env, task, f"<act>recommend</act><say>This one.</say><recommend>{task.target_item_id}</recommend>")


def rating_prediction() -> EnvCase:
    tasks = build_rating_tasks(CATALOG)
    train, _ = leave_last_out(CATALOG.interactions)
    env = make_env("RatingPrediction-v0", catalog=CATALOG, graph=InteractionGraph.from_interactions(train), tasks=tasks)
    return EnvCase(env, tasks[0], "<answer>4</answer>")


ENV_FACTORIES: dict[str, Callable[[], EnvCase]] = {
    "SequentialRec-v0": sequential_rec,
    "ConversationalRec-v0": conversational_rec,
    "RatingPrediction-v0": rating_prediction,
}
"""Registered env id -> a factory of test cases for it."""


@pytest.fixture(scope="session")
def env_factories() -> dict[str, Callable[[], EnvCase]]:
    return ENV_FACTORIES


@pytest.fixture(scope="session")
def make_env_case() -> Callable[[str], EnvCase]:
    """Builds the test case of a registered env id, failing with the fix when it has no factory."""

    def make(env_id: str) -> EnvCase:
        if env_id not in ENV_FACTORIES:
            pytest.fail(f"{env_id} has no test factory: add one to ENV_FACTORIES in tests/envs/conftest.py")
        return ENV_FACTORIES[env_id]()

    return make
