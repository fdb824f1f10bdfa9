"""GRPO with per-turn rewards on ConversationalRec-v0: the whole loop (episodes with a simulated
user, per-turn env rewards, turn credit, update, sync) raises the tiny model's success rate."""

import math

import pytest

from envs.config import EnvConfig
from envs.conversational import dialogue_task
from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph
from rewards import score_batch
from rl.grpo import GRPOConfig, train_grpo
from rl.learner import Learner
from rl.reference import ReferenceModel
from rollout.chat import ChatFormat
from rollout.engines.base import SamplingParams
from rollout.episode import AgentTurn, EpisodeRequest, run_episodes
from rollout.worker import EnvSpec, RolloutConfig, RolloutWorker

WEIGHTS = {"env": 1.0, "success": 1.0}
"""The env's per-turn rewards (a turn's cost, acceptance) and the episode's success."""


class Says:
    """Plays fixed turns, one per agent turn (SFT data through the real env and episode loop)."""

    role = "teacher"

    def __init__(self, *turns):
        self.turns = turns
        self.played = 0

    def encode_prompt(self, messages):
        return []

    def encode_observation(self, text):
        return []

    def act(self, episodes):
        turn = self.turns[min(self.played, len(self.turns) - 1)]
        self.played += 1
        return [AgentTurn(turn) for _ in episodes]


@pytest.mark.slow
def test_grpo_with_turn_credit_raises_the_success_rate_of_a_conversation(tiny_model_dir, synthetic_catalog, tmp_path):
    ranking = build_tasks(synthetic_catalog, num_negatives=2, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, ranking))
    spec = EnvSpec(synthetic_catalog, graph, EnvConfig(env_id="ConversationalRec-v0", max_turns=2, tools=[]),
                   tokenizer="tiny-random")
    task = dialogue_task(ranking[0])
    other = next(i for i in task.candidate_item_ids if i != task.target_item_id)
    # A short SFT on two openings: recommend the wish (accepted), or another item twice (rejected, then
    # an item no longer offered): a noisy policy that succeeds about half the time.
    sft = Learner(model_name=str(tiny_model_dir), lora=None, lr=3e-3, seed=0)
    chat = ChatFormat(sft.tokenizer)
    arms = []
    for item in (task.target_item_id, other):
        says = Says(*[f"<act>recommend</act><say>Try this.</say><recommend>{item}</recommend>"] * 2)
        [trajectory] = run_episodes(says, [spec.make()], [EpisodeRequest(task)], source="sft")
        assert trajectory.outcome.accepted == (item == task.target_item_id)
        arms.append(chat.conversation(trajectory.messages))
    for _ in range(60):
        sft.sft_step([ids for ids, _ in arms], [mask for _, mask in arms])
    sft.save(tmp_path / "sft")

    learner = Learner(model_name=str(tiny_model_dir), lora=None, lr=3e-4, adapter_dir=tmp_path / "sft", seed=0)
    reference = ReferenceModel(model_name=str(tiny_model_dir), checkpoint_dir=tmp_path / "sft", lora=None)
    workers = [RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, adapter_dir=tmp_path / "sft",
                             config=RolloutConfig(engine="hf")) for _ in range(2)]
    params = SamplingParams(max_new_tokens=40, temperature=1.0)

    def success_rate():
        trajectories = workers[0].rollout([EpisodeRequest(task, "probe", seed=7 + i) for i in range(64)], params)
        score_batch(trajectories, WEIGHTS)
        return sum(t.outcome is not None and t.outcome.accepted for t in trajectories) / len(trajectories)

    before = success_rate()
    config = GRPOConfig(steps=6, tasks_per_step=1, group_size=16, max_new_tokens=40, temperature=1.0, credit="turn")
    history = train_grpo(learner=learner, reference=reference, workers=workers, tasks=[task], config=config,
                         reward_weights=WEIGHTS, seed=0, checkpoint_root=tmp_path / "grpo",
                         trainer_state={"sft": "x", "seed": 0})
    after = success_rate()
    assert len(history) == 6 and all(math.isfinite(m["train/loss"]) for m in history)
    assert "reward/success" in history[0] and "reward/env" in history[0]
    assert after > before + 0.2, (before, after, [m["reward/success"] for m in history])
