"""One place per default: env budgets come from EnvConfig, counted in the policy's tokens for every agent."""

import inspect

from envs.config import DEFAULTS, EnvConfig
from envs.data import build_tasks, training_interactions
from envs.sequential_rec import SequentialRecEnv
from envs.tools import InteractionGraph
from rollout.chat import ChatFormat
from rollout.worker import EnvSpec, RolloutConfig, RolloutWorker


def test_env_defaults_are_the_config_defaults():
    parameters = inspect.signature(SequentialRecEnv).parameters
    for name in ("max_turns", "max_episode_tokens", "history_in_prompt"):
        assert parameters[name].default == getattr(DEFAULTS, name) == getattr(EnvConfig(), name)
    assert inspect.signature(RolloutWorker).parameters["max_batch_size"].default == RolloutConfig().max_batch_size


def test_every_env_of_a_spec_counts_the_policys_tokens(synthetic_catalog, tiny_tokenizer):
    tasks = build_tasks(synthetic_catalog, num_negatives=4, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    config = EnvConfig(max_turns=2, max_episode_tokens=300, tools=["user_cf"])
    env = EnvSpec(synthetic_catalog, graph, config, tokenizer="tiny-random").make()
    assert (env.max_turns, env.max_episode_tokens, [s.name for s in env.tool_specs]) == (2, 300, ["user_cf"])
    text = "<plan>rank 17, 42 for user 3</plan>"
    assert env.count_tokens(text) == ChatFormat(tiny_tokenizer).count_tokens(text) != len(text.split())
