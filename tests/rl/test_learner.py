"""Learner on the tiny model: SFT steps and the GRPO update (old log-probs, clipping, KL, TIS)."""

import dataclasses
import functools
import math
import platform
from pathlib import Path

import pytest
import torch

from rl.batch import TokenBatch
from rl.learner import Learner
from rl.reference import ReferenceModel
from rollout.chat import ChatFormat
from rollout.policy import LoraSettings, bf16_supported

LORA = LoraSettings(r=8, alpha=16)
ANSWERS = ("<recommend>7, 8</recommend>", "<recommend>8</recommend>", "no idea", "<recommend>8, 7, 1</recommend>")


def conversation_batch(tokenizer, advantages=(1.0, -1.0, 0.5, -0.5)) -> TokenBatch:
    """One short episode per advantage, each with a different assistant answer."""
    chat = ChatFormat(tokenizer)
    episodes = [chat.conversation([{"role": "system", "content": "s"}, {"role": "user", "content": "rank 7 and 8"},
                                   {"role": "assistant", "content": answer}])
                for answer in ANSWERS[: len(advantages)]]
    return TokenBatch.from_sequences([ids for ids, _ in episodes], [mask for _, mask in episodes],
                                     pad_id=tokenizer.pad_token_id, advantages=list(advantages))


def learner(model_dir, *, lora=LORA, lr=1e-3, **kwargs) -> Learner:
    return Learner(model_name=str(model_dir), lora=lora, lr=lr, seed=0, bf16=False, **kwargs)


@pytest.fixture(scope="module", params=[LORA, None], ids=["lora", "full"])
def start_checkpoint(request, tiny_model_dir, tmp_path_factory):
    """``(lora, folder)``: a saved policy away from the base model, as an SFT run leaves it."""
    lora = request.param
    sft = learner(tiny_model_dir, lora=lora)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in sft.model.named_parameters():
            if parameter.requires_grad and (lora is None or "lora_B" in name):
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return lora, sft.save(tmp_path_factory.mktemp("sft"))


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_sft_steps_lower_the_loss_on_a_fixed_batch(tiny_model_dir, lora):
    sft = Learner(model_name=str(tiny_model_dir), lora=lora, lr=5e-3, seed=0)
    chat = ChatFormat(sft.tokenizer)
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": "<recommend>7, 8</recommend>"}]
    ids, mask = chat.conversation(messages)
    losses = [sft.sft_step([ids, ids], [mask, mask])["train/loss"] for _ in range(15)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.5


def kl_at_step_zero(model_dir, lora, policy_dir, reference_dir, *, bf16=False) -> float:
    policy = Learner(model_name=str(model_dir), lora=lora, lr=1e-3, adapter_dir=policy_dir, bf16=bf16)
    reference = ReferenceModel(model_name=str(model_dir), checkpoint_dir=reference_dir, lora=lora, bf16=bf16)
    batch = conversation_batch(policy.tokenizer)
    batch = dataclasses.replace(batch, ref_logprobs=reference.logprobs(batch, temperature=0.7, micro_batch_size=3))
    return policy.update(batch, clip_eps=0.2, kl_coef=0.1, temperature=0.7)["train/kl"]


def test_kl_to_the_starting_checkpoint_is_zero_at_step_zero(tiny_model_dir, start_checkpoint):
    lora, folder = start_checkpoint
    assert kl_at_step_zero(tiny_model_dir, lora, folder, folder) < 1e-6
    # The base model is not the policy GRPO starts from: it is measurably far from it.
    assert kl_at_step_zero(tiny_model_dir, lora, folder, None) > 1e-3


def test_kl_at_step_zero_under_bf16_is_rounding_noise(tiny_model_dir, start_checkpoint):
    lora, folder = start_checkpoint
    # A merged adapter rounds to bf16 differently from an unmerged one: ~1e-6, not exactly 0.
    assert kl_at_step_zero(tiny_model_dir, lora, folder, folder, bf16=True) < 1e-4


def test_one_optimizer_step_has_ratio_one_and_later_steps_clip(tiny_model_dir):
    policy = learner(tiny_model_dir, lr=5e-2)
    batch = conversation_batch(policy.tokenizer)
    single = policy.update(batch, clip_eps=0.2, kl_coef=0.0, temperature=1.0)
    assert single["train/optimizer_steps"] == 1
    assert single["train/ratio_mean"] == 1.0 and single["train/clip_frac"] == 0.0
    # Later steps compare the moved policy with the old log-probs taken before the first step.
    several = policy.update(batch, clip_eps=0.05, kl_coef=0.0, temperature=1.0, mini_batches=2, epochs=2,
                            micro_batch_size=1)
    assert several["train/optimizer_steps"] == 4
    assert abs(several["train/ratio_mean"] - 1.0) > 1e-3
    assert several["train/clip_frac"] > 0.0


def test_a_separate_old_logprob_pass_matches_the_single_step_shortcut(tiny_model_dir):
    # lr 0 keeps the policy where it is, so every step of the two-epoch update is its first step.
    batch = conversation_batch(learner(tiny_model_dir).tokenizer)
    shortcut = learner(tiny_model_dir, lr=0.0).update(batch, clip_eps=0.2, kl_coef=0.0, temperature=0.7,
                                                      micro_batch_size=3)
    separate = learner(tiny_model_dir, lr=0.0).update(batch, clip_eps=0.2, kl_coef=0.0, temperature=0.7,
                                                      micro_batch_size=3, epochs=2)
    assert separate["train/optimizer_steps"] == 2
    for key in ("train/loss", "train/policy_loss", "train/ratio_mean", "train/logprob_mismatch"):
        assert separate[key] == pytest.approx(shortcut[key], rel=1e-6, abs=1e-7), key


def test_micro_batches_accumulate_the_same_gradient(tiny_model_dir):
    batch = conversation_batch(learner(tiny_model_dir).tokenizer)
    longest = int(batch.attention_mask.sum(dim=1).max())
    assert len(batch.micro_batches(4, tokens=2 * longest)) in (2, 3)  # a token budget packs rows unevenly
    gradients = []
    for rows, tokens in ((1, 0), (4, 0), (4, 2 * longest)):
        policy = learner(tiny_model_dir, lr=0.0)
        policy.update(batch, clip_eps=0.2, kl_coef=0.0, temperature=1.0, micro_batch_size=rows,
                      micro_batch_tokens=tokens)
        gradients.append([parameter.grad for parameter in policy.parameters])
    for one_row, four_rows, by_tokens in zip(*gradients):
        torch.testing.assert_close(one_row, four_rows, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(by_tokens, four_rows, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_gradient_checkpointing_gives_the_same_update(tiny_model_dir, lora):
    from rl.strategy import LearnerConfig

    batch = conversation_batch(learner(tiny_model_dir).tokenizer)
    runs = []
    for checkpointing in (False, True):
        policy = learner(tiny_model_dir, lora=lora, config=LearnerConfig(gradient_checkpointing=checkpointing))
        assert policy.model.is_gradient_checkpointing == checkpointing
        metrics = policy.update(batch, clip_eps=0.2, kl_coef=0.0, temperature=1.0, micro_batch_size=2)
        runs.append((metrics["train/loss"], [parameter.detach().clone() for parameter in policy.parameters]))
    (loss, weights), (checkpointed_loss, checkpointed_weights) = runs
    assert checkpointed_loss == pytest.approx(loss, rel=1e-5)
    for plain, checkpointed in zip(weights, checkpointed_weights):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-5, atol=1e-7)


def test_logprob_mismatch_and_truncated_importance_weights(tiny_model_dir):
    policy = learner(tiny_model_dir, lr=0.0)
    batch = conversation_batch(policy.tokenizer)
    own = policy.logprobs(batch, temperature=0.7)
    update = lambda rollout_logprobs: policy.update(  # noqa: E731
        dataclasses.replace(batch, rollout_logprobs=rollout_logprobs), clip_eps=0.2, kl_coef=0.0,
        temperature=0.7, micro_batch_size=3, tis_cap=2.0)
    on_policy = update(own)
    assert on_policy["train/logprob_mismatch"] < 1e-6
    assert on_policy["train/tis_weight_mean"] == pytest.approx(1.0)
    # A sampler that gave every token one nat less: weight e ~ 2.72, capped at 2.
    off_policy = update(own - batch.policy_mask)
    assert off_policy["train/logprob_mismatch"] == pytest.approx(1.0)
    assert off_policy["train/tis_weight_mean"] == pytest.approx(2.0)
    assert off_policy["train/policy_loss"] == pytest.approx(2 * on_policy["train/policy_loss"])


@pytest.mark.parametrize("epochs", [1, 2])
def test_behaviour_logprobs_are_the_ratios_denominator(tiny_model_dir, epochs):
    """One-step off-policy: the batch came from a policy one nat less likely on each token, so the
    first step's ratio is e (clipped at 1 + eps for positive advantages), whatever the learner says."""
    policy = learner(tiny_model_dir, lr=0.0)
    batch = conversation_batch(policy.tokenizer)
    own = policy.logprobs(batch, temperature=0.7)
    stale = dataclasses.replace(batch, rollout_logprobs=own - batch.policy_mask)
    update = functools.partial(policy.update, stale, clip_eps=0.2, kl_coef=0.0, temperature=0.7, micro_batch_size=3,
                               epochs=epochs)
    behaviour = update(behaviour_logprobs=True)
    assert behaviour["train/ratio_mean"] == pytest.approx(math.e, rel=1e-4)
    assert behaviour["train/logprob_mismatch"] == pytest.approx(1.0, rel=1e-4)
    recomputed = update()
    assert recomputed["train/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert recomputed["train/logprob_mismatch"] == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("lora", [LORA, None], ids=["lora", "full"])
def test_update_moves_the_policy_toward_positive_advantages(tiny_model_dir, lora):
    policy = learner(tiny_model_dir, lora=lora, lr=1e-2)
    batch = conversation_batch(policy.tokenizer, advantages=(1.0, -1.0))
    before = policy.logprobs(batch).sum(dim=1)
    policy.update(batch, clip_eps=0.2, kl_coef=0.0, temperature=1.0)
    after = policy.logprobs(batch).sum(dim=1)
    # Shared tokens move together; what the advantages decide is the margin between the two.
    assert after[0] > before[0]
    assert after[0] - after[1] > before[0] - before[1] + 1.0


def test_update_rejects_batches_it_cannot_train_on(tiny_model_dir):
    policy = learner(tiny_model_dir)
    batch = conversation_batch(policy.tokenizer)
    empty = dataclasses.replace(batch, loss_mask=torch.zeros_like(batch.loss_mask))
    with pytest.raises(ValueError, match="no policy tokens"):
        policy.update(empty, clip_eps=0.2, kl_coef=0.0, temperature=1.0)
    with pytest.raises(ValueError, match="no ref_logprobs"):
        policy.update(batch, clip_eps=0.2, kl_coef=0.1, temperature=1.0)
    with pytest.raises(ValueError, match="mini_batches"):
        policy.update(batch, clip_eps=0.2, kl_coef=0.0, temperature=1.0, mini_batches=5)


def test_save_restores_the_optimizer(tiny_model_dir, tmp_path):
    policy = learner(tiny_model_dir)
    policy.update(conversation_batch(policy.tokenizer), clip_eps=0.2, kl_coef=0.0, temperature=1.0)
    folder = policy.save(tmp_path / "ckpt", with_optimizer=True)
    resumed = learner(tiny_model_dir, adapter_dir=folder)
    resumed.load_optimizer(folder)
    saved, loaded = policy.strategy.optimizer.state_dict()["state"], resumed.strategy.optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k]["exp_avg"], loaded[k]["exp_avg"]) for k in saved)
    # The schedule resumes where it was: one step taken.
    assert resumed.strategy.steps == 1 and resumed.strategy.scheduler.last_epoch == policy.strategy.scheduler.last_epoch
    with pytest.raises(FileNotFoundError, match="optimizer.pt missing"):
        resumed.load_optimizer(tmp_path / "nowhere")


def cpu_flags() -> set[str]:
    """The CPU's feature flags, as Linux reports them."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"),
                    reason="reads x86 CPU flags from /proc/cpuinfo")
def test_bf16_is_supported_on_cpus_with_bf16_dot_products():
    flags = cpu_flags()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert bf16_supported("cpu") is (native and torch.backends.mkldnn.is_available())


def test_bf16_support_is_a_bool_for_every_device():
    for device in ("cpu", "cuda", "cuda:0", "meta"):
        assert isinstance(bf16_supported(device), bool), device
    assert bf16_supported("meta") is False
    if not torch.cuda.is_available():
        assert bf16_supported("cuda") is False


@pytest.mark.parametrize("loss_agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_micro_batches_weigh_parts_as_the_loss_averages(tiny_model_dir, loss_agg):
    """One pass over 4 rows, or four passes of one row each, give the same step under each aggregation."""
    updates = []
    for micro_batch_size in (4, 1):
        policy = learner(tiny_model_dir, lr=1e-2)
        metrics = policy.update(conversation_batch(policy.tokenizer), clip_eps=0.2, kl_coef=0.0, temperature=1.0,
                                micro_batch_size=micro_batch_size, loss_agg=loss_agg)
        updates.append((metrics, policy.trainable_state()))
    (whole, whole_state), (parts, parts_state) = updates
    assert parts["train/loss"] == pytest.approx(whole["train/loss"], abs=1e-6)
    assert parts["train/grad_norm"] == pytest.approx(whole["train/grad_norm"], rel=1e-5)
    assert_same_adam_steps(parts_state, whole_state, lr=1e-2, steps=1)


def assert_same_adam_steps(state, expected, *, lr: float, steps: int, atol: float = 1e-5,
                           outlier_fraction: float = 0.005) -> None:
    """Weights after ``steps`` AdamW steps taken on the same gradients up to summation order.

    Adam divides each gradient by its running RMS, so where a gradient is near 0 (near Adam's eps)
    a difference in its last bits moves that weight anywhere within the step size ``lr``: all but a
    ``outlier_fraction`` of the weights must agree to ``atol``, and none by more than the steps taken.
    """
    assert state.keys() == expected.keys()
    differences = torch.cat([(state[name] - weight).abs().flatten() for name, weight in expected.items()])
    assert float(differences.max()) <= 2 * lr * steps
    assert float((differences > atol).float().mean()) <= outlier_fraction, float(differences.max())
