"""Token-in/token-out through whole multi-turn episodes, for every engine: what the learner trains on
is exactly what the engine was fed and produced, turn by turn (no re-tokenization drift)."""

import pytest
import torch

from envs.config import EnvConfig
from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph
from rl.grpo import token_batch
from rollout.agents import POLICY
from rollout.engines.base import SamplingParams
from rollout.episode import EpisodeRequest
from rollout.policy import LoraSettings
from rollout.worker import EnvSpec, RolloutConfig, RolloutWorker


class RecordingEngine:
    """Passes every call to a real engine and keeps each prompt it was fed with what came back."""

    def __init__(self, engine):
        self.engine = engine
        self.calls = []

    def generate(self, prompts, params, *, seeds=None):
        generations = self.engine.generate(prompts, params, seeds=seeds)
        self.calls += [(list(prompt), generation) for prompt, generation in zip(prompts, generations)]
        return generations

    def update_weights(self, state):
        self.engine.update_weights(state)

    def release_memory(self):
        self.engine.release_memory()


@pytest.mark.integration
@pytest.mark.parametrize("engine", ["hf", "vllm"])
def test_the_learner_trains_on_exactly_the_ids_the_engine_was_fed_and_produced(synthetic_catalog, tiny_model_dir,
                                                                               engine):
    tasks = build_tasks(synthetic_catalog, num_negatives=4, seed=0)[:6]
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    spec = EnvSpec(synthetic_catalog, graph, EnvConfig(max_turns=3, tools=["user_cf"]), tokenizer="tiny-random")
    worker = RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, lora=LoraSettings(r=4, alpha=8),
                           config=RolloutConfig(engine=engine))
    try:
        worker.engines[POLICY] = recording = RecordingEngine(worker.engine)
        requests = [EpisodeRequest(task, task.task_id, seed=i) for i, task in enumerate(tasks)]
        trajectories = worker.rollout(requests, SamplingParams(max_new_tokens=12, temperature=1.0))
    finally:
        if engine == "vllm":
            recording.engine.close()
    batch = token_batch(trajectories, torch.zeros(len(trajectories)), pad_id=0)
    turns = 0
    for row, trajectory in enumerate(trajectories):
        agent_turns = [turn for turn in trajectory.turns if turn.is_agent]
        turns += len(agent_turns)
        for turn in agent_turns:
            fed = [(prompt, g) for prompt, g in recording.calls if prompt == trajectory.token_ids[: turn.start]]
            assert len(fed) == 1, "each turn's prompt is the episode's tokens so far, exactly"
            generation = fed[0][1]
            span = slice(turn.start, turn.start + len(generation.token_ids))
            assert trajectory.token_ids[span] == generation.token_ids
            assert batch.input_ids[row, span].tolist() == generation.token_ids
            assert batch.loss_mask[row, span].bool().all()
            assert batch.rollout_logprobs[row, span].tolist() == pytest.approx(generation.logprobs, abs=1e-6)
        # Nothing else is trained on: the policy tokens are the engine's tokens and nothing more.
        sampled = sum(len(g.token_ids) for p, g in recording.calls if p == trajectory.token_ids[: len(p)])
        assert int(batch.loss_mask[row].sum()) == sampled
    assert turns == len(recording.calls)
    assert max(len(t.actions) for t in trajectories) >= 2  # multi-turn: later prompts hold earlier turns
