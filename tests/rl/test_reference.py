"""ReferenceModel: the frozen starting policy (merged LoRA adapter, full checkpoint, or the base)."""

import dataclasses

import pytest
import torch

from rl.learner import Learner
from rl.reference import ReferenceModel
from rollout.policy import LoraSettings, is_lora

LORA = LoraSettings(r=8, alpha=16)


@pytest.fixture(scope="module", params=[LORA, None], ids=["lora", "full"])
def trained(request, tiny_model_dir, tmp_path_factory):
    """``(lora, folder, learner)``: a saved policy away from the base model, and the learner that saved it."""
    lora = request.param
    learner = Learner(model_name=str(tiny_model_dir), lora=lora, lr=1e-3, bf16=False)
    with torch.no_grad():
        for name, parameter in learner.model.named_parameters():
            if parameter.requires_grad and (lora is None or "lora_B" in name):
                parameter.add_(0.05 * torch.randn_like(parameter))
    return lora, learner.save(tmp_path_factory.mktemp("policy")), learner


def test_reference_scores_like_the_policy_it_was_saved_from(tiny_model_dir, trained, episodes_batch):
    lora, folder, learner = trained
    reference = ReferenceModel(model_name=str(tiny_model_dir), checkpoint_dir=folder, lora=lora, bf16=False)
    assert not is_lora(reference.model)  # a LoRA adapter is merged into a plain model
    assert not any(parameter.requires_grad for parameter in reference.model.parameters())
    batch = episodes_batch(learner.tokenizer)
    scored = reference.logprobs(batch, temperature=0.7, micro_batch_size=2)
    assert scored.shape == batch.input_ids.shape and not scored.requires_grad
    torch.testing.assert_close(scored, learner.logprobs(batch, temperature=0.7), rtol=1e-5, atol=1e-5)


def test_reference_without_a_checkpoint_is_the_base_model(tiny_model_dir, trained, episodes_batch):
    lora, _, learner = trained
    base = Learner(model_name=str(tiny_model_dir), lora=lora, lr=1e-3, bf16=False)  # a fresh adapter is a no-op
    reference = ReferenceModel(model_name=str(tiny_model_dir), lora=lora, bf16=False)
    batch = episodes_batch(learner.tokenizer)
    scored = reference.logprobs(batch, temperature=1.0)
    torch.testing.assert_close(scored, base.logprobs(batch), rtol=1e-5, atol=1e-5)
    assert (scored - learner.logprobs(batch)).abs().max() > 1e-2


def test_scored_batch_carries_reference_logprobs(tiny_model_dir, trained, episodes_batch):
    lora, folder, learner = trained
    reference = ReferenceModel(model_name=str(tiny_model_dir), checkpoint_dir=folder, lora=lora, bf16=False)
    batch = episodes_batch(learner.tokenizer)
    scored = dataclasses.replace(batch, ref_logprobs=reference.logprobs(batch, temperature=1.0))
    assert torch.all(scored.ref_logprobs[batch.policy_mask == 0] == 0)
    assert torch.all(scored.ref_logprobs[batch.policy_mask == 1] < 0)
