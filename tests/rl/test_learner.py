"""Learner SFT and GRPO steps on the tiny model, and the GRPO driver with plain workers."""

import pytest
import torch

from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph
from rl.grpo import GRPOConfig, episode_metrics, train_grpo
from rl.learner import Learner, pad_batch
from rollout.chat import ChatFormat
from rollout.engines.hf import SamplingParams
from rollout.policy import LoraSettings, adapter_state
from rollout.worker import EnvSpec, RolloutWorker

LORA = LoraSettings(r=8, alpha=16)


def test_pad_batch_right_pads():
    ids, attention, mask = pad_batch([[5, 6, 7], [8]], [[0, 1, 1], [1]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attention.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert mask.tolist() == [[0, 1, 1], [1, 0, 0]]


def test_sft_steps_lower_the_loss_on_a_fixed_batch(tiny_model_dir):
    learner = Learner(model_name=str(tiny_model_dir), lora=LORA, lr=5e-3, seed=0)
    chat = ChatFormat(learner.tokenizer)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": "<recommend>7, 8</recommend>"}]
    ids, mask = chat.conversation(messages)
    losses = [learner.sft_step([ids, ids], [mask, mask])["train/loss"] for _ in range(15)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.5 * losses[0]


@pytest.fixture
def spec_and_tasks(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=4, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    return EnvSpec("SequentialRec-v0", synthetic_catalog, graph, {"max_turns": 2}), tasks


def test_grpo_driver_updates_and_syncs_plain_workers(tiny_model_dir, spec_and_tasks, tmp_path):
    spec, tasks = spec_and_tasks
    learner = Learner(model_name=str(tiny_model_dir), lora=LORA, lr=1e-2, seed=0)
    workers = [RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, lora=LORA) for _ in range(2)]
    before = learner.adapter_state()
    logged = []
    config = GRPOConfig(steps=2, tasks_per_step=2, group_size=2, max_new_tokens=6, temperature=1.0)
    history = train_grpo(learner=learner, workers=workers, tasks=tasks, config=config, seed=0,
                         checkpoint_dir=tmp_path / "ckpt", log=lambda m, s: logged.append((s, m)))
    assert [s for s, _ in logged] == [1, 2] and len(history) == 2
    for metrics in history:
        for key in ("train/loss", "train/kl", "reward/format", "reward/tiered_hit", "reward/total",
                    "perf/rollout_tokens_per_s"):
            assert key in metrics and torch.isfinite(torch.tensor(metrics[key]))
    after = learner.adapter_state()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the policy moved
    for worker in workers:  # and every worker holds the learner's weights
        synced = adapter_state(worker.model)
        assert synced.keys() == after.keys() and all(torch.equal(after[k], synced[k]) for k in after)
    assert (tmp_path / "ckpt" / "adapter_model.safetensors").is_file()


def test_grpo_step_rejects_a_batch_without_policy_tokens(tiny_model_dir, spec_and_tasks):
    spec, tasks = spec_and_tasks
    learner = Learner(model_name=str(tiny_model_dir), lora=LORA, lr=1e-3)
    worker = RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, lora=LORA)
    [trajectory] = worker.rollout(tasks[:1], SamplingParams(max_new_tokens=3))
    trajectory.loss_mask = [0] * len(trajectory.loss_mask)
    with pytest.raises(ValueError, match="no policy tokens"):
        learner.grpo_step([trajectory], [1.0], clip_eps=0.2, kl_coef=0.0, temperature=1.0)
    assert episode_metrics([trajectory])["rollout/format_rate"] == 0.0
