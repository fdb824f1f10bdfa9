"""Learner SFT and GRPO steps on the tiny model, and the GRPO driver with plain workers."""

import math

import pytest
import torch

from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph
from rl.grpo import GRPOConfig, episode_metrics, read_trainer_state, train_grpo
from rl.learner import Learner, pad_batch
from rollout.actors import spawn
from rollout.chat import ChatFormat
from rollout.engines.hf import SamplingParams
from rollout.policy import LoraSettings, trainable_state
from rollout.worker import EnvSpec, RolloutWorker

LORA = LoraSettings(r=8, alpha=16)


def test_pad_batch_right_pads():
    ids, attention, mask = pad_batch([[5, 6, 7], [8]], [[0, 1, 1], [1]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attention.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert mask.tolist() == [[0, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_sft_steps_lower_the_loss_on_a_fixed_batch(tiny_model_dir, lora):
    learner = Learner(model_name=str(tiny_model_dir), lora=lora, lr=5e-3, seed=0)
    chat = ChatFormat(learner.tokenizer)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": "<recommend>7, 8</recommend>"}]
    ids, mask = chat.conversation(messages)
    losses = [learner.sft_step([ids, ids], [mask, mask])["train/loss"] for _ in range(15)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5


@pytest.fixture
def spec_and_tasks(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=4, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    return EnvSpec("SequentialRec-v0", synthetic_catalog, graph, {"max_turns": 2}), tasks


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_grpo_driver_updates_syncs_and_checkpoints(tiny_model_dir, spec_and_tasks, tmp_path, lora):
    spec, tasks = spec_and_tasks
    learner = Learner(model_name=str(tiny_model_dir), lora=lora, lr=1e-2, seed=0)
    workers = [RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, lora=lora) for _ in range(2)]
    logged = []
    config = GRPOConfig(steps=2, tasks_per_step=2, group_size=2, max_new_tokens=6, temperature=1.0)
    history = train_grpo(learner=learner, workers=workers, tasks=tasks, config=config, seed=0,
                         checkpoint_dir=tmp_path / "ckpt", log=lambda m, s: logged.append((s, m)))
    assert [s for s, _ in logged] == [1, 2] and len(history) == 2
    for metrics in history:
        for key in ("train/loss", "train/kl", "reward/format", "reward/tiered_hit", "reward/total",
                    "perf/rollout_tokens_per_s", "rollout/uniform_group_frac"):
            assert key in metrics and torch.isfinite(torch.tensor(metrics[key]))
    learned = learner.trainable_state()
    for worker in workers:  # every worker holds the learner's weights
        synced = trainable_state(worker.model)
        assert synced.keys() == learned.keys() and all(torch.equal(learned[k], synced[k]) for k in learned)
    fresh = RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, lora=lora)
    fresh.load_checkpoint(tmp_path / "ckpt")  # the checkpoint restores the same policy
    assert all(torch.equal(learned[k], trainable_state(fresh.model)[k]) for k in learned)


@pytest.mark.integration
def test_grpo_goes_on_when_a_rollout_worker_dies(tiny_model_dir, spec_and_tasks, tmp_path, ray_local):
    import ray

    spec, tasks = spec_and_tasks
    learner = Learner(model_name=str(tiny_model_dir), lora=LORA, lr=1e-3, seed=0)
    workers = spawn(RolloutWorker, 2, model_name=str(tiny_model_dir), env_spec=spec, lora=LORA)
    ray.kill(workers[1])
    config = GRPOConfig(steps=2, tasks_per_step=2, group_size=2, max_new_tokens=4, temperature=1.0)
    history = train_grpo(learner=learner, workers=workers, tasks=tasks, config=config, seed=0,
                         checkpoint_dir=tmp_path / "ckpt")
    assert len(history) == 2 and all(m["rollout/tokens"] > 0 for m in history)
    assert read_trainer_state(tmp_path / "ckpt") == {"step": 2}


class RecordingWorker(RolloutWorker):
    """A real worker that also notes which tasks it was asked to play."""

    def __init__(self, drawn, **kwargs):
        super().__init__(**kwargs)
        self.drawn = drawn

    def rollout(self, tasks, *args, **kwargs):
        self.drawn.append(sorted({t.task_id for t in tasks}))
        return super().rollout(tasks, *args, **kwargs)


def test_grpo_resumes_where_its_checkpoint_stopped(tiny_model_dir, spec_and_tasks, tmp_path):
    spec, tasks = spec_and_tasks

    def run(steps, *, start_step=0, start_dir=None, checkpoint_dir):
        drawn = []
        learner = Learner(model_name=str(tiny_model_dir), lora=LORA, lr=1e-2, adapter_dir=start_dir, seed=0)
        if start_step:
            learner.load_optimizer(start_dir)
        worker = RecordingWorker(drawn, model_name=str(tiny_model_dir), env_spec=spec, lora=LORA, adapter_dir=start_dir)
        config = GRPOConfig(steps=steps, tasks_per_step=2, group_size=2, max_new_tokens=4, temperature=1.0)
        history = train_grpo(learner=learner, workers=[worker], tasks=tasks, config=config, seed=0,
                             checkpoint_dir=checkpoint_dir, start_step=start_step, checkpoint_info={"sft": "abc"})
        return drawn, history, learner

    uninterrupted, _, _ = run(3, checkpoint_dir=tmp_path / "full")
    first, _, stopped = run(2, checkpoint_dir=tmp_path / "ckpt")
    assert read_trainer_state(tmp_path / "ckpt") == {"step": 2, "sft": "abc"}
    assert first == uninterrupted[:2]

    resumed_learner = Learner(model_name=str(tiny_model_dir), lora=LORA, lr=1e-2, adapter_dir=tmp_path / "ckpt")
    resumed_learner.load_optimizer(tmp_path / "ckpt")
    saved, loaded = stopped.optimizer.state_dict()["state"], resumed_learner.optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys() and all(
        torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"]) for k in saved)

    rest, history, _ = run(3, start_step=2, start_dir=tmp_path / "ckpt", checkpoint_dir=tmp_path / "ckpt")
    assert rest == uninterrupted[2:] and len(history) == 1
    assert read_trainer_state(tmp_path / "ckpt") == {"step": 3, "sft": "abc"}
    with pytest.raises(FileNotFoundError, match="optimizer.pt missing"):
        resumed_learner.load_optimizer(tmp_path / "full" / "nowhere")


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_grpo_step_moves_the_policy_toward_positive_advantages(tiny_model_dir, spec_and_tasks, lora):
    spec, tasks = spec_and_tasks
    learner = Learner(model_name=str(tiny_model_dir), lora=lora, lr=1e-2, seed=0)
    worker = RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, lora=lora)
    good, bad = worker.rollout(tasks[:1], SamplingParams(max_new_tokens=8, temperature=1.0), samples_per_task=2,
                               seed=0)

    def logp(trajectory):
        batch = pad_batch([trajectory.token_ids], [trajectory.loss_mask], learner.pad_id)
        with torch.no_grad():
            return float(learner._masked_logprobs(*batch).sum())

    before = logp(good), logp(bad)
    metrics = learner.grpo_step([good, bad], [1.0, -1.0], clip_eps=0.2, kl_coef=0.001, temperature=1.0)
    assert metrics["train/kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference before the step
    # Shared tokens move together; what the advantages decide is the margin between the two.
    assert logp(good) > before[0]
    assert logp(good) - logp(bad) > before[0] - before[1] + 1.0


def test_grpo_step_rejects_a_batch_without_policy_tokens(tiny_model_dir, spec_and_tasks):
    spec, tasks = spec_and_tasks
    learner = Learner(model_name=str(tiny_model_dir), lora=LORA, lr=1e-3)
    worker = RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, lora=LORA)
    [trajectory] = worker.rollout(tasks[:1], SamplingParams(max_new_tokens=3))
    trajectory.loss_mask = [0] * len(trajectory.loss_mask)
    with pytest.raises(ValueError, match="no policy tokens"):
        learner.grpo_step([trajectory], [1.0], clip_eps=0.2, kl_coef=0.0, temperature=1.0)
    assert episode_metrics([trajectory])["rollout/format_rate"] == 0.0


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="needs a CUDA GPU")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_grpo_raises_the_reward_on_an_easy_task(tiny_model_dir, spec_and_tasks, tmp_path, device):
    """The whole loop (rollout, score, advantages, update, sync) on one task: after a short SFT on
    both orders of two candidates the policy is noisy (it repeats ids, swaps them, breaks tags);
    GRPO must raise the reward of what it samples."""
    spec, tasks = spec_and_tasks
    spec = EnvSpec(spec.env_id, spec.catalog, spec.graph, {"max_turns": 1})
    task = tasks[0]
    other = next(i for i in task.candidate_item_ids if i != task.target_item_id)
    sft = Learner(model_name=str(tiny_model_dir), lora=None, lr=3e-3, seed=0, device=device)
    chat = ChatFormat(sft.tokenizer)
    arms = []
    for first, second in ((task.target_item_id, other), (other, task.target_item_id)):
        env = spec.make()
        env.reset(options={"task": task})
        env.step(f"<recommend>{first}, {second}</recommend>")
        arms.append(chat.conversation(env.trajectory(source="sft").messages))
    for _ in range(60):
        sft.sft_step([ids for ids, _ in arms], [mask for _, mask in arms])
    sft.save(tmp_path / "sft")

    learner = Learner(model_name=str(tiny_model_dir), lora=None, lr=3e-4, adapter_dir=tmp_path / "sft", seed=0,
                      device=device)
    workers = [RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, adapter_dir=tmp_path / "sft",
                             device=device) for _ in range(2)]
    params = SamplingParams(max_new_tokens=16, temperature=1.0)

    def sampled_reward():
        trajectories = workers[0].rollout([task], params, samples_per_task=64, seed=7)
        return sum(t.reward for t in trajectories) / len(trajectories)

    before = sampled_reward()
    config = GRPOConfig(steps=6, tasks_per_step=1, group_size=16, max_new_tokens=16, temperature=1.0)
    history = train_grpo(learner=learner, workers=workers, tasks=[task], config=config, seed=0,
                         checkpoint_dir=tmp_path / "grpo")
    after = sampled_reward()
    assert len(history) == 6 and all(math.isfinite(m["train/loss"]) for m in history)
    assert after > before + 0.25, (before, after, [m["reward/total"] for m in history])
