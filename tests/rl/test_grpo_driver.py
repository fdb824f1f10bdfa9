"""The GRPO driver with plain workers (and Ray actors): update, sync, checkpoint, resume, learn."""

import math
import os
import time
import zlib

import pytest
import torch

from envs.config import EnvConfig
from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph
from rewards import REWARD_FUNCTIONS, score_batch
from rl.checkpoints import latest_checkpoint, list_checkpoints, read_trainer_state
from rl.batch import TokenBatch
from rl.critic import Critic
from rl.grpo import (STEP_PHASES, GRPOConfig, critic_root, episode_metrics, informative_groups, token_batch,
                     train_grpo, uniform_group_fraction)
from rl.learner import Learner
from rl.logprobs import batch_logprobs
from rl.reference import ReferenceModel
from rollout.actors import spawn
from rollout.chat import ChatFormat
from rollout.engines.base import SamplingParams
from rollout.episode import EpisodeRequest, run_episodes
from rollout.policy import LoraSettings
from rollout.worker import EnvSpec, RolloutConfig, RolloutWorker

LORA = LoraSettings(r=8, alpha=16)
HF = RolloutConfig(engine="hf")
"""These tests read the workers' weights through the HF engine's model."""
WEIGHTS = {"format": 1.0, "tiered_hit": 1.0}
STATE = {"sft": "abc", "seed": 0}


@pytest.fixture
def spec_and_tasks(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=4, seed=0)
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    return EnvSpec(synthetic_catalog, graph, EnvConfig(max_turns=2), tokenizer="tiny-random"), tasks


def roles(model_dir, spec, lora, *, lr=1e-2, start_dir=None, workers=2):
    learner = Learner(model_name=str(model_dir), lora=lora, lr=lr, adapter_dir=start_dir, seed=0, bf16=False)
    reference = ReferenceModel(model_name=str(model_dir), checkpoint_dir=start_dir, lora=lora, bf16=False)
    rollout = [RolloutWorker(model_name=str(model_dir), env_spec=spec, lora=lora, adapter_dir=start_dir, config=HF)
               for _ in range(workers)]
    return learner, reference, rollout


def same_policy(learner, worker, trajectories):
    batch = TokenBatch.from_sequences([t.token_ids for t in trajectories], [t.loss_mask for t in trajectories],
                                      pad_id=learner.pad_token_id())
    ours = learner.logprobs(batch, temperature=1.0)
    theirs = batch_logprobs(worker.engine.model, batch, temperature=1.0, bf16=False)
    return torch.allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_grpo_driver_updates_syncs_and_checkpoints(tiny_model_dir, spec_and_tasks, tmp_path, lora):
    spec, tasks = spec_and_tasks
    learner, reference, workers = roles(tiny_model_dir, spec, lora)
    logged = []
    config = GRPOConfig(steps=3, tasks_per_step=2, group_size=2, max_new_tokens=6, temperature=1.0, keep_last=2)
    history = train_grpo(learner=learner, reference=reference, workers=workers, tasks=tasks, config=config,
                         reward_weights=WEIGHTS, seed=0, checkpoint_root=tmp_path / "grpo", trainer_state=STATE,
                         log=lambda m, s: logged.append((s, m)))
    assert [s for s, _ in logged] == [1, 2, 3] and len(history) == 3
    for metrics in history:
        for key in ("train/loss", "train/kl", "train/clip_frac", "train/logprob_mismatch", "reward/format",
                    "reward/tiered_hit", "reward/total", "perf/rollout_tokens_per_s", "rollout/uniform_group_frac"):
            assert key in metrics and math.isfinite(metrics[key])
    assert history[0]["train/kl"] == pytest.approx(0.0, abs=1e-7)  # the reference is the starting policy
    # The sampler's log-probs are the learner's before its first update (same weights, fp32).
    assert history[0]["train/logprob_mismatch"] < 1e-3
    probe = workers[0].rollout([EpisodeRequest(tasks[5], "p", seed=1)], SamplingParams(max_new_tokens=6))
    for worker in workers:  # every worker holds the learner's weights
        assert same_policy(learner, worker, probe)
    assert [step for step, _ in list_checkpoints(tmp_path / "grpo")] == [2, 3]  # keep_last=2
    assert read_trainer_state(latest_checkpoint(tmp_path / "grpo")) == {"step": 3, **STATE}
    fresh = RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, lora=lora,
                          adapter_dir=latest_checkpoint(tmp_path / "grpo"), config=HF)
    assert same_policy(learner, fresh, probe)  # the checkpoint restores the same policy


@pytest.mark.parametrize("off_policy", [False, True], ids=["on-policy", "one-step-off-policy"])
def test_grpo_logs_where_each_step_went(tiny_model_dir, spec_and_tasks, tmp_path, off_policy):
    spec, tasks = spec_and_tasks
    learner, reference, workers = roles(tiny_model_dir, spec, LORA, workers=1)
    config = GRPOConfig(steps=2, tasks_per_step=2, group_size=2, max_new_tokens=4, temperature=1.0,
                        one_step_off_policy=off_policy)
    history = train_grpo(learner=learner, reference=reference, workers=workers, tasks=tasks, config=config,
                         reward_weights=WEIGHTS, seed=0, checkpoint_root=tmp_path / "grpo", trainer_state=STATE)
    assert set(STEP_PHASES) >= {"perf/rollout_seconds", "perf/reference_seconds", "perf/update_seconds",
                                "perf/weight_sync_seconds"}
    for metrics in history:
        split = [metrics[key] for key in STEP_PHASES]
        assert all(seconds >= 0 for seconds in split), dict(zip(STEP_PHASES, split))
        assert metrics["perf/reference_seconds"] > 0 and metrics["perf/update_seconds"] > 0
        # The phases are parts of the step, measured one after another in the driver, and most of it.
        assert 0.5 * metrics["perf/step_seconds"] < sum(split) <= metrics["perf/step_seconds"] + 1e-3
    assert history[0]["perf/rollout_seconds"] > 0  # round 1 always rolls out in the step itself


class DyingWorker(RolloutWorker):
    """A real worker; the first of its kind to roll out after a weight update dies mid-step (an OOM
    kill, a lost node), once per ``marker`` file."""

    def __init__(self, marker, **kwargs):
        super().__init__(**kwargs)
        self.marker, self.updated = marker, False

    def update_weights(self, state):
        self.updated = True
        return super().update_weights(state)

    def rollout(self, requests, *args, **kwargs):
        if self.updated:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
                os._exit(1)
            except FileExistsError:
                pass
        return super().rollout(requests, *args, **kwargs)


@pytest.mark.integration
def test_a_rollout_worker_killed_mid_step_is_restarted_with_the_current_weights(tiny_model_dir, spec_and_tasks,
                                                                                 tmp_path, ray_local, monkeypatch):
    monkeypatch.setitem(REWARD_FUNCTIONS, "first_token_parity", first_token_parity)
    spec, tasks = spec_and_tasks
    learner, reference, _ = roles(tiny_model_dir, spec, LORA, lr=1e-2, workers=0)
    workers = spawn(DyingWorker, 2, str(tmp_path / "died"), model_name=str(tiny_model_dir), env_spec=spec, lora=LORA,
                    config=HF)
    config = GRPOConfig(steps=3, tasks_per_step=2, group_size=4, max_new_tokens=4, temperature=1.0)
    history = train_grpo(learner=learner, reference=reference, workers=workers, tasks=tasks, config=config,
                         reward_weights={"first_token_parity": 1.0}, seed=0, checkpoint_root=tmp_path / "grpo",
                         trainer_state=STATE)
    assert (tmp_path / "died").exists()  # one worker died in step 2, after the first update
    assert [m["rollout/worker_restarts"] for m in history] == [0.0, 1.0, 1.0]
    assert all(m["rollout/groups_sampled"] == 2 and m["rollout/tokens"] > 0 for m in history)  # nothing lost
    # The restarted worker rolled out with the weights the learner had, not the ones it started with.
    assert history[0]["train/kl"] == 0 and history[1]["train/kl"] > 0
    assert all(m["train/logprob_mismatch"] < 1e-4 for m in history), [m["train/logprob_mismatch"] for m in history]
    assert read_trainer_state(latest_checkpoint(tmp_path / "grpo"))["step"] == 3


@pytest.mark.parametrize("credit", ["episode", "turn"])
def test_two_policies_train_in_one_run_each_on_the_turns_it_played(tiny_model_dir, spec_and_tasks, tmp_path,
                                                                     monkeypatch, credit):
    """A planner plays each episode's first turn and a caller the rest (alpha-UMi style): each has its
    own learner, optimizer, reference and engine in every worker, and both change (with one advantage
    an episode, or one a turn)."""
    monkeypatch.setitem(REWARD_FUNCTIONS, "first_token_parity", first_token_parity)
    spec, tasks = spec_and_tasks
    names = ("planner", "caller")
    learners = {name: Learner(model_name=str(tiny_model_dir), lora=LORA, lr=1e-2, seed=0, bf16=False)
                for name in names}
    references = {name: ReferenceModel(model_name=str(tiny_model_dir), lora=LORA, bf16=False) for name in names}
    config = RolloutConfig(engine="hf", policies=list(names))
    workers = [RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, lora=LORA, config=config)
               for _ in range(2)]
    before = {name: learner.trainable_state() for name, learner in learners.items()}
    config = GRPOConfig(steps=2, tasks_per_step=2, group_size=4, max_new_tokens=8, temperature=1.0, credit=credit)
    history = train_grpo(learner=learners, reference=references, workers=workers, tasks=tasks, config=config,
                         reward_weights={"first_token_parity": 1.0}, seed=0, checkpoint_root=tmp_path / "grpo",
                         trainer_state=STATE)
    assert all(history[-1][f"{name}/train/grad_norm"] > 0 for name in names), history[-1]
    for name, learner in learners.items():
        after = learner.trainable_state()
        assert any(not torch.equal(after[key], before[name][key]) for key in after), f"{name} did not change"
        assert read_trainer_state(latest_checkpoint(tmp_path / "grpo" / name))["step"] == 2
    planner, caller = (learners[name].trainable_state() for name in names)
    assert any(not torch.equal(planner[key], caller[key]) for key in planner)  # two policies, not one
    # Turns are routed: the planner plays first, the caller after; each engine holds its own policy's weights.
    trajectories = workers[0].rollout([EpisodeRequest(task, "probe", seed=3) for task in tasks[:4]],
                                      SamplingParams(max_new_tokens=8, temperature=1.0))
    played = [[turn.role for turn in t.turns if turn.is_agent] for t in trajectories]
    assert all(roles[0] == "planner" and set(roles[1:]) <= {"caller"} for roles in played)
    assert any("caller" in roles for roles in played), played
    for name in names:
        batch = token_batch(trajectories, torch.zeros(len(trajectories)), pad_id=learners[name].pad_token_id(),
                            role=name)
        ours = learners[name].logprobs(batch, temperature=1.0)
        theirs = batch_logprobs(workers[0].engines[name].model, batch, temperature=1.0, bf16=False)
        assert batch.num_tokens > 0 and torch.allclose(ours, theirs, atol=1e-4), name


class RecordingWorker(RolloutWorker):
    """A real worker that also notes the tasks and seeds it was asked to play."""

    def __init__(self, drawn, **kwargs):
        super().__init__(**kwargs)
        self.drawn = drawn

    def rollout(self, requests, *args, **kwargs):
        self.drawn.append(sorted((r.task.task_id, r.seed) for r in requests))
        return super().rollout(requests, *args, **kwargs)


def test_grpo_resumes_where_its_checkpoint_stopped_with_distinct_seeds(tiny_model_dir, spec_and_tasks, tmp_path):
    spec, tasks = spec_and_tasks

    def run(steps, *, start_step=0, start_dir=None, root):
        drawn = []
        learner, reference, _ = roles(tiny_model_dir, spec, LORA, start_dir=start_dir, workers=0)
        if start_step:
            learner.load_optimizer(start_dir)
        workers = [RecordingWorker(drawn, model_name=str(tiny_model_dir), env_spec=spec, lora=LORA,
                                   adapter_dir=start_dir, config=HF) for _ in range(2)]
        config = GRPOConfig(steps=steps, tasks_per_step=2, group_size=2, max_new_tokens=4, temperature=1.0)
        history = train_grpo(learner=learner, reference=reference, workers=workers, tasks=tasks, config=config,
                             reward_weights=WEIGHTS, seed=0, checkpoint_root=root, trainer_state=STATE,
                             start_step=start_step)
        return drawn, history, learner

    uninterrupted, _, _ = run(3, root=tmp_path / "full")
    seeds = [seed for shard in uninterrupted for _, seed in shard]
    assert len(seeds) == 3 * 2 * 2 and len(set(seeds)) == len(seeds)  # no two (step, worker, sample) share one
    first, _, stopped = run(2, root=tmp_path / "grpo")
    assert first == uninterrupted[:4]  # 2 workers a step
    checkpoint = latest_checkpoint(tmp_path / "grpo")
    resumed = Learner(model_name=str(tiny_model_dir), lora=LORA, lr=1e-2, adapter_dir=checkpoint)
    resumed.load_optimizer(checkpoint)
    saved, loaded = stopped.strategy.optimizer.state_dict()["state"], resumed.strategy.optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"]) for k in saved)
    rest, history, _ = run(3, start_step=2, start_dir=checkpoint, root=tmp_path / "grpo")
    assert rest == uninterrupted[4:] and len(history) == 1
    assert read_trainer_state(latest_checkpoint(tmp_path / "grpo"))["step"] == 3


class VersionedWorker(RolloutWorker):
    """A real worker that notes, for each rollout, how many weight updates it had taken and when it ran."""

    def __init__(self, log, **kwargs):
        super().__init__(**kwargs)
        self.log, self.updates = log, 0

    def update_weights(self, state):
        self.updates += 1
        return super().update_weights(state)

    def rollout(self, requests, *args, **kwargs):
        started = time.perf_counter()
        trajectories = super().rollout(requests, *args, **kwargs)
        self.log.append((self.updates, started, sorted((r.task.task_id, r.seed) for r in requests)))
        return trajectories


class TimedLearner(Learner):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.updates = []

    def update(self, *args, **kwargs):
        started = time.perf_counter()
        metrics = super().update(*args, **kwargs)
        self.updates.append((started, time.perf_counter(), kwargs["behaviour_logprobs"]))
        return metrics


def first_token_parity(trajectory) -> float:
    """Differs between samples of a random model, so its groups have advantages and the policy moves."""
    return float(trajectory.token_ids[trajectory.loss_mask.index(1)] % 2)


def test_one_step_off_policy_overlaps_rollout_and_update_at_most_one_step_behind(tiny_model_dir, spec_and_tasks,
                                                                                 tmp_path, monkeypatch):
    spec, tasks = spec_and_tasks
    monkeypatch.setitem(REWARD_FUNCTIONS, "first_token_parity", first_token_parity)

    def run(off_policy):
        log = []
        learner = TimedLearner(model_name=str(tiny_model_dir), lora=LORA, lr=1e-2, seed=0, bf16=False)
        reference = ReferenceModel(model_name=str(tiny_model_dir), lora=LORA, bf16=False)
        workers = [VersionedWorker(log, model_name=str(tiny_model_dir), env_spec=spec, lora=LORA, config=HF)]
        config = GRPOConfig(steps=4, tasks_per_step=2, group_size=2, max_new_tokens=6, temperature=1.0,
                            one_step_off_policy=off_policy)
        history = train_grpo(learner=learner, reference=reference, workers=workers, tasks=tasks, config=config,
                             reward_weights={"first_token_parity": 1.0}, seed=0,
                             checkpoint_root=tmp_path / str(off_policy),
                             trainer_state=STATE)
        return log, history, learner.updates

    on_log, on_history, _ = run(False)
    off_log, off_history, updates = run(True)
    assert [drawn for _, _, drawn in off_log] == [drawn for _, _, drawn in on_log]  # the same tasks and seeds
    assert [version for version, _, _ in on_log] == [0, 1, 2, 3]
    assert [version for version, _, _ in off_log] == [0, 0, 1, 2]  # each batch at most one update behind
    assert [m["rollout/policy_lag"] for m in on_history] == [0, 0, 0, 0]
    assert [m["rollout/policy_lag"] for m in off_history] == [0, 1, 1, 1]
    assert all(behaviour for _, _, behaviour in updates)  # the ratio's denominator: the engine's log-probs
    for step in range(3):  # round step+2 rolled out while the learner updated on round step+1
        update_start, update_end, _ = updates[step]
        assert off_log[step + 1][1] < update_end
    # Stale weights show: the learner's log-probs moved away from the ones that sampled the batch.
    assert off_history[0]["train/logprob_mismatch"] < 1e-3 < min(m["train/logprob_mismatch"] for m in off_history[1:])


def parity_on_odd_tasks(trajectory) -> float:
    """Uniform (always 0) on half the tasks, random on the others: dynamic sampling has groups to drop."""
    if zlib.crc32(trajectory.task_id.encode()) % 2 == 0:
        return 0.0
    return first_token_parity(trajectory)


class BatchRecordingLearner(Learner):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.batches = []

    def update(self, batch, **kwargs):
        self.batches.append(batch)
        return super().update(batch, **kwargs)


def test_dynamic_sampling_trains_only_on_groups_with_different_rewards(tiny_model_dir, spec_and_tasks, tmp_path,
                                                                       monkeypatch):
    spec, tasks = spec_and_tasks
    monkeypatch.setitem(REWARD_FUNCTIONS, "parity_on_odd_tasks", parity_on_odd_tasks)
    learner = BatchRecordingLearner(model_name=str(tiny_model_dir), lora=LORA, lr=1e-3, seed=0, bf16=False)
    reference = ReferenceModel(model_name=str(tiny_model_dir), lora=LORA, bf16=False)
    workers = [RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, lora=LORA, config=HF)]
    config = GRPOConfig(steps=3, tasks_per_step=2, group_size=4, max_new_tokens=4, temperature=1.0,
                        dynamic_sampling_rounds=3)
    history = train_grpo(learner=learner, reference=reference, workers=workers, tasks=tasks, config=config,
                         reward_weights={"parity_on_odd_tasks": 1.0}, seed=0, checkpoint_root=tmp_path / "grpo",
                         trainer_state=STATE)
    assert sum(m["rollout/groups_sampled"] for m in history) > 3 * 2  # uniform groups were replaced
    for metrics, batch in zip(history, learner.batches):
        assert len(batch) == 4 * metrics["rollout/groups_trained"]
        assert (batch.advantages.abs().amax(dim=1) > 0).all()  # every episode trained on has an advantage


def test_episode_and_group_metrics(spec_and_tasks, tiny_tokenizer):
    from envs.types import RankingOutcome, Trajectory

    def episode(group, rank):
        return Trajectory(task_id=group, env_id="e", source="s", group_id=group, outcome=RankingOutcome(rank=rank),
                          format_valid=rank is not None)

    batch = [episode("a", 1), episode("b", 2), episode("a", 1), episode("b", None)]
    score_batch(batch, WEIGHTS)
    assert uniform_group_fraction(batch) == 0.5  # group a is uniform, interleaved with group b
    assert informative_groups(batch) == [batch[1], batch[3]]
    metrics = episode_metrics(batch)
    assert metrics["rollout/format_rate"] == 0.75 and metrics["reward/format"] == 0.5


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="needs a CUDA GPU")])


@pytest.mark.parametrize("estimator,credit", [("grpo", "episode"), ("reinforce_pp", "episode"), ("gae", "episode"),
                                              ("grpo", "rank")], ids=["grpo", "reinforce_pp", "ppo", "rank_grpo"])
@pytest.mark.parametrize("device", ["cpu", CUDA])
def test_grpo_raises_the_reward_on_an_easy_task(tiny_model_dir, spec_and_tasks, tmp_path, device, estimator, credit):
    """The whole loop (rollout, score, advantages, update, sync) on one task: after a short SFT on
    both orders of two candidates the policy is noisy (it repeats ids, swaps them, breaks tags);
    GRPO, REINFORCE++, PPO (with its critic) and Rank-GRPO must raise the reward of what it samples."""
    spec, tasks = spec_and_tasks
    tools = ["user_info", "item_info", "user_history", "item_cf", "user_cf"]
    spec = EnvSpec(spec.catalog, spec.graph, EnvConfig(max_turns=1, tools=tools), tokenizer="tiny-random")
    task = tasks[0]
    other = next(i for i in task.candidate_item_ids if i != task.target_item_id)
    sft = Learner(model_name=str(tiny_model_dir), lora=None, lr=3e-3, seed=0, device=device)
    chat = ChatFormat(sft.tokenizer)
    arms = []
    for first, second in ((task.target_item_id, other), (other, task.target_item_id)):
        script = ScriptedAgent(f"<recommend>{first}, {second}</recommend>")
        [trajectory] = run_episodes(script, [spec.make()], [EpisodeRequest(task)], source="sft")
        arms.append(chat.conversation(trajectory.messages))
    for _ in range(60):
        sft.sft_step([ids for ids, _ in arms], [mask for _, mask in arms])
    sft.save(tmp_path / "sft")

    learner = Learner(model_name=str(tiny_model_dir), lora=None, lr=3e-4, adapter_dir=tmp_path / "sft", seed=0,
                      device=device)
    reference = ReferenceModel(model_name=str(tiny_model_dir), checkpoint_dir=tmp_path / "sft", lora=None,
                               device=device)
    workers = [RolloutWorker(model_name=str(tiny_model_dir), env_spec=spec, adapter_dir=tmp_path / "sft",
                             device=device, config=HF) for _ in range(2)]
    params = SamplingParams(max_new_tokens=16, temperature=1.0)

    def sampled_reward():
        trajectories = workers[0].rollout([EpisodeRequest(task, "probe", seed=7 + i) for i in range(64)], params)
        score_batch(trajectories, WEIGHTS)
        return sum(t.reward for t in trajectories) / len(trajectories)

    before = sampled_reward()
    config = GRPOConfig(steps=6, tasks_per_step=1, group_size=16, max_new_tokens=16, temperature=1.0,
                        advantage_estimator=estimator, credit=credit)
    critic = None
    if estimator == "gae":
        critic = Critic(model_name=str(tiny_model_dir), lora=None, lr=1e-3, adapter_dir=tmp_path / "sft", seed=0,
                        device=device)
    history = train_grpo(learner=learner, reference=reference, workers=workers, tasks=[task], config=config,
                         reward_weights=WEIGHTS, seed=0, checkpoint_root=tmp_path / "grpo", trainer_state=STATE,
                         critic=critic, tokenizer=sft.tokenizer)
    after = sampled_reward()
    assert len(history) == 6 and all(math.isfinite(m["train/loss"]) for m in history)
    if critic is not None:  # the critic learns the returns, and its checkpoints resume it
        assert history[-1]["critic/value_loss"] < history[0]["critic/value_loss"], history
        [(step, saved)] = list_checkpoints(critic_root(tmp_path / "grpo"))[-1:]
        assert step == 6 and (saved / Critic.HEAD_FILE).is_file()
        again = Critic(model_name=str(tiny_model_dir), lora=None, lr=1e-3, adapter_dir=saved, device=device)
        probe = token_batch(workers[0].rollout([EpisodeRequest(task, "probe", seed=1)], params), torch.zeros(1),
                            pad_id=learner.pad_token_id())
        assert torch.equal(again.values(probe), critic.values(probe))
        assert probe.policy_mask.sum() and again.values(probe).abs().sum() > 0
    assert after > before + 0.25, (before, after, [m["reward/total"] for m in history])


class ScriptedAgent:
    """Says one fixed turn (builds SFT data through the real env and episode loop)."""

    role = "teacher"

    def __init__(self, text):
        self.text = text

    def encode_prompt(self, messages):
        return []

    def encode_observation(self, text):
        return []

    def act(self, episodes):
        from rollout.episode import AgentTurn

        return [AgentTurn(self.text) for _ in episodes]


def test_grpo_settings_are_checked():
    with pytest.raises(ValueError, match="advantage_estimator"):
        GRPOConfig(advantage_estimator="ppo2")
    with pytest.raises(ValueError, match="loss_agg"):
        GRPOConfig(loss_agg="sum")
    with pytest.raises(ValueError, match="kl_estimator"):
        GRPOConfig(kl_estimator="k4")
    with pytest.raises(ValueError, match="needs a critic"):
        train_grpo(learner=None, reference=None, workers=[], tasks=[], config=GRPOConfig(advantage_estimator="gae"),
                   reward_weights=WEIGHTS, seed=0, checkpoint_root="unused", trainer_state=STATE)
