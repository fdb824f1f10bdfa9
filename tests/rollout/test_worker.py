"""One place per default: env budgets come from EnvConfig, counted in the policy's tokens for every agent."""

import inspect

import pytest

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
    assert inspect.signature(RolloutWorker).parameters["config"].default == RolloutConfig()


def test_every_env_of_a_spec_counts_the_policys_tokens(synthetic_catalog, tiny_tokenizer):
    tasks = build_tasks(synthetic_catalog, num_negatives=4, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    config = EnvConfig(max_turns=2, max_episode_tokens=300, tools=["user_cf"])
    env = EnvSpec(synthetic_catalog, graph, config, tokenizer="tiny-random").make()
    assert (env.max_turns, env.max_episode_tokens, [s.name for s in env.tool_specs]) == (2, 300, ["user_cf"])
    text = "<plan>rank 17, 42 for user 3</plan>"
    assert env.count_tokens(text) == ChatFormat(tiny_tokenizer).count_tokens(text) != len(text.split())


@pytest.mark.integration
def test_a_vllm_worker_plays_and_takes_new_weights_as_a_ray_actor(ray_local, synthetic_catalog, tiny_model_dir):
    from rollout.actors import spawn
    from rollout.engines.base import SamplingParams
    from rollout.episode import EpisodeRequest
    from rollout.policy import LoraSettings, trainable_state
    from tests.rollout.test_engine import random_adapter

    tasks = build_tasks(synthetic_catalog, num_negatives=4, seed=0)[:4]
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    spec = EnvSpec(synthetic_catalog, graph, EnvConfig(max_turns=2, tools=["user_cf"]), tokenizer="tiny-random")
    [worker] = spawn(RolloutWorker, 1, num_threads=1, model_name=str(tiny_model_dir), env_spec=spec,
                     lora=LoraSettings(r=4, alpha=8), config=RolloutConfig(engine="vllm"))
    requests = [EpisodeRequest(task, task.task_id, seed=i) for i, task in enumerate(tasks)]
    params = SamplingParams(max_new_tokens=6, temperature=1.0)
    try:
        before = worker.rollout(requests, params)
        assert worker.rollout(requests, params)[0].token_ids == before[0].token_ids  # seeded
        assert worker.update_weights(trainable_state(random_adapter(tiny_model_dir, seed=0))) > 0
        after = worker.rollout(requests, params)
        cached, prompt = worker.prefix_cache_counts()
    finally:
        ray_local.kill(worker.handle)
    assert [t.token_ids for t in after] != [t.token_ids for t in before]
    assert all(t.logprobs != b.logprobs for t, b in zip(after, before))
    assert 0 < cached < prompt


def test_a_worker_of_two_policies_loads_each_ones_checkpoint(synthetic_catalog, tiny_model_dir, tmp_path):
    import torch

    from rl.learner import Learner
    from rollout.policy import role_checkpoints

    tasks = build_tasks(synthetic_catalog, num_negatives=4, seed=0)[:2]
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    spec = EnvSpec(synthetic_catalog, graph, EnvConfig(max_turns=2, tools=["user_cf"]), tokenizer="tiny-random")
    saved = {}
    for seed, role in enumerate(("planner", "caller")):
        learner = Learner(model_name=str(tiny_model_dir), lora=None, lr=1e-3, seed=seed)
        with torch.no_grad():
            for parameter in learner.model.parameters():
                parameter.add_(0.01 * (seed + 1))
        saved[role] = learner.save(tmp_path / "run" / role)
    config = RolloutConfig(engine="hf", policies=["planner", "caller"])

    def weight(worker, role):
        return next(worker.engines[role].model.parameters()).clone()

    mapped = RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, adapter_dir=saved, config=config)
    folder = RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, adapter_dir=tmp_path / "run", config=config)
    for role in ("planner", "caller"):
        assert torch.equal(weight(mapped, role), weight(folder, role))
    assert not torch.equal(weight(mapped, "planner"), weight(mapped, "caller"))
    # One checkpoint for every role (an SFT adapter both start from): its own folder.
    assert role_checkpoints(saved["planner"], ["planner", "caller"]) == dict.fromkeys(["planner", "caller"],
                                                                                      tmp_path / "run" / "planner")
    with pytest.raises(ValueError, match="distinct role names"):
        RolloutConfig(policies=["planner", "planner"])
