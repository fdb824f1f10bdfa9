"""The shared log-prob function against a plain full-vocabulary log_softmax on the tiny model."""

import pytest
import torch

from rl.batch import TokenBatch
from rl.logprobs import batch_logprobs, masked_token_logprobs
from rollout.policy import LoraSettings, load_policy


def full_logits_logprobs(model, batch: TokenBatch, temperature: float) -> torch.Tensor:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1] / temperature
    chosen = torch.log_softmax(logits.float(), dim=-1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return torch.nn.functional.pad(chosen, (1, 0)) * batch.policy_mask


@pytest.mark.parametrize("lora", [None, LoraSettings(r=4, alpha=8)], ids=["plain", "peft"])
def test_masked_token_logprobs_equal_a_full_log_softmax(tiny_model_dir, lora, episodes_batch):
    model, tokenizer = load_policy(str(tiny_model_dir), lora=lora)
    if lora is not None:  # a non-zero adapter, so that the peft path matters
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0.0, 0.05)
    batch = episodes_batch(tokenizer)
    with torch.no_grad():
        expected = full_logits_logprobs(model, batch, temperature=0.7)
        scored = masked_token_logprobs(model, batch.input_ids, batch.attention_mask, batch.policy_mask,
                                       temperature=0.7, bf16=False)
    assert scored.shape == batch.input_ids.shape
    torch.testing.assert_close(scored, expected, rtol=1e-5, atol=1e-5)
    assert torch.all(scored[batch.policy_mask == 0] == 0) and torch.all(scored[batch.policy_mask == 1] < 0)
    # micro-batches of one row (with less trailing padding) score the same
    torch.testing.assert_close(batch_logprobs(model, batch, temperature=0.7, micro_batches=batch.micro_batches(1),
                                              bf16=False),
                               expected, rtol=1e-5, atol=1e-5)


def test_masked_token_logprobs_are_differentiable(tiny_model_dir, episodes_batch):
    model, tokenizer = load_policy(str(tiny_model_dir), lora=None, trainable=True)
    batch = episodes_batch(tokenizer)
    scored = masked_token_logprobs(model, batch.input_ids, batch.attention_mask, batch.policy_mask, bf16=False)
    scored.sum().backward()
    assert model.get_output_embeddings().weight.grad.abs().sum() > 0
