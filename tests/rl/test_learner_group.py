"""A group of learners (DDP, DeepSpeed ZeRO-2 and ZeRO-3 over gloo) steps as one learner would."""

import pytest
import torch

from rl.learner import Learner
from rl.learner_group import LearnerGroup, pad_rows
from rl.strategy import LearnerConfig
from tests.rl.test_learner import LORA, assert_same_adam_steps, conversation_batch

UPDATE = dict(clip_eps=0.2, kl_coef=0.0, temperature=1.0)
ATOL = 1e-5
"""Losses and gradient norms of the group and of one learner agree to this (fp32; only summation order
differs); weights as ``assert_same_adam_steps`` says."""


def test_padding_rows_carry_no_policy_tokens(tiny_tokenizer):
    batch = conversation_batch(tiny_tokenizer, advantages=(1.0, -1.0, 0.5))
    padded = pad_rows(batch, 2)
    assert len(padded) == 4 and padded.num_tokens == batch.num_tokens
    assert torch.equal(padded.input_ids[3], batch.input_ids[0]) and not padded.loss_mask[3].any()
    assert pad_rows(batch, 3) is batch


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "stage"), [("deepspeed", 2), ("deepspeed", 3), ("ddp", 0)],
                         ids=["zero2", "zero3", "ddp"])
def test_two_learners_step_like_one_with_twice_the_accumulation(tiny_model_dir, tiny_tokenizer, ray_local,
                                                                strategy, stage):
    batch = conversation_batch(tiny_tokenizer)  # 4 rows with different answers and token counts
    kwargs = dict(model_name=str(tiny_model_dir), lora=LORA, lr=1e-2, seed=0, bf16=False)
    # One learner: the whole batch in two micro-batches of 2 rows, one optimizer step.
    single = Learner(**kwargs)
    initial = single.trainable_state()
    expected = [single.update(batch, micro_batch_size=2, **UPDATE) for _ in range(2)]
    # Two learners: 2 rows each, one micro-batch each; their gradients are averaged.
    group = LearnerGroup.spawn(LearnerConfig(strategy=strategy, zero_stage=stage, num_learners=2), num_threads=1,
                               **kwargs)
    got = [group.update(batch, micro_batch_size=2, **UPDATE) for _ in range(2)]
    for step_expected, step_got in zip(expected, got):
        for key in ("train/loss", "train/policy_loss", "train/grad_norm", "train/clip_frac"):
            assert step_got[key] == pytest.approx(step_expected[key], abs=ATOL), key
    assert got[1]["train/ratio_mean"] == pytest.approx(expected[1]["train/ratio_mean"], abs=ATOL)
    state, reference = group.trainable_state(), single.trainable_state()
    assert_same_adam_steps(state, reference, lr=1e-2, steps=2)
    # Two steps at lr 1e-2 moved the adapter: the weights compared are not the untouched ones.
    assert max(float((reference[name] - initial[name]).abs().max()) for name in reference) > 1e-3


@pytest.mark.integration
@pytest.mark.slow
def test_learners_whose_token_budgets_split_their_rows_differently_still_pass_together(tiny_model_dir, tiny_tokenizer,
                                                                                      ray_local):
    batch = conversation_batch(tiny_tokenizer)
    first, second = batch.rows(slice(0, 2)), batch.rows(slice(2, 4))
    budget = 2 * int(first.attention_mask.sum(dim=1).max())
    # alone, the first learner's rows fit one pass and the second's need two: under ZeRO-3, which
    # gathers the weights in every forward pass, the first must run two as well
    assert len(first.micro_batches(2, budget)) == 1 and len(second.micro_batches(2, budget)) == 2
    kwargs = dict(model_name=str(tiny_model_dir), lora=LORA, lr=1e-2, seed=0, bf16=False)
    expected = Learner(**kwargs).update(batch, micro_batch_size=2, **UPDATE)
    group = LearnerGroup.spawn(LearnerConfig(strategy="deepspeed", zero_stage=3, num_learners=2), num_threads=1,
                               **kwargs)
    got = group.update(batch, micro_batch_size=2, micro_batch_tokens=budget, **UPDATE)
    for key in ("train/loss", "train/policy_loss", "train/grad_norm"):
        assert got[key] == pytest.approx(expected[key], abs=ATOL), key


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3], ids=["zero2", "zero3"])
def test_a_group_checkpoint_resumes_to_the_same_next_step(tiny_model_dir, tiny_tokenizer, ray_local, tmp_path,
                                                          stage):
    batch = conversation_batch(tiny_tokenizer)
    config = LearnerConfig(strategy="deepspeed", zero_stage=stage, num_learners=2, lr_schedule="linear")
    kwargs = dict(model_name=str(tiny_model_dir), lora=LORA, lr=1e-2, seed=0, bf16=False, total_steps=4,
                  num_threads=1)
    group = LearnerGroup.spawn(config, **kwargs)
    group.update(batch, micro_batch_size=2, **UPDATE)
    folder = group.save_checkpoint(tmp_path / "grpo", 1, {"seed": 0}, keep_last=2)
    saved = {path.name for path in (tmp_path / "grpo" / "step-000001").iterdir()}
    assert {"adapter_model.safetensors", "optimizer.pt", "optimizer-rank1.pt", "trainer_state.json"} <= saved
    expected = group.update(batch, micro_batch_size=2, **UPDATE)
    expected_state = group.trainable_state()
    group.close()

    resumed = LearnerGroup.spawn(config, adapter_dir=folder, **kwargs)
    resumed.load_optimizer(folder)
    got = resumed.update(batch, micro_batch_size=2, **UPDATE)
    assert got["train/lr"] == expected["train/lr"] < 1e-2  # the schedule went on from step 1
    for key in ("train/loss", "train/grad_norm", "train/ratio_mean"):
        assert got[key] == pytest.approx(expected[key], abs=ATOL), key
    assert_same_adam_steps(resumed.trainable_state(), expected_state, lr=1e-2, steps=1)
    resumed.close()


def test_learner_settings_are_checked():
    with pytest.raises(ValueError, match="learner.strategy"):
        LearnerConfig(strategy="fsdp")
    with pytest.raises(ValueError, match="several learners need"):
        LearnerConfig(num_learners=2)
    with pytest.raises(ValueError, match="offload needs"):
        LearnerConfig(strategy="deepspeed", offload=True)
    with pytest.raises(ValueError, match="zero_stage"):
        LearnerConfig(strategy="deepspeed", zero_stage=4)
