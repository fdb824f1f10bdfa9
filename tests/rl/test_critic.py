"""PPO's critic on the tiny model: values line up with the tokens they describe, and fit returns."""

import pytest
import torch

from rl.batch import TokenBatch
from rl.critic import Critic
from rollout.policy import LoraSettings


def critic(model_dir, lora, **kwargs) -> Critic:
    return Critic(model_name=str(model_dir), lora=lora, lr=1e-2, seed=0, bf16=False, **kwargs)


@pytest.mark.parametrize("lora", [LoraSettings(r=8, alpha=16), None], ids=["lora", "full"])
def test_values_describe_the_state_each_policy_token_is_drawn_in_and_fit_returns(tiny_model_dir, lora,
                                                                                 episodes_batch, tmp_path):
    model = critic(tiny_model_dir, lora)
    batch = episodes_batch(model.tokenizer)
    assert torch.equal(model.values(batch), torch.zeros_like(batch.loss_mask))  # the head starts at zero
    mask = batch.policy_mask
    returns = torch.where(mask != 0, torch.linspace(-1.0, 1.0, mask.shape[1]).expand_as(mask), 0.0)
    old = model.values(batch)
    losses = [model.update(batch, old, returns, clip_eps=None)["critic/value_loss"] for _ in range(30)]
    assert losses[-1] < 0.2 * losses[0], losses
    values = model.values(batch)
    assert torch.equal(values[mask == 0], torch.zeros_like(values[mask == 0]))  # only policy tokens have values

    # Position t's value reads tokens before t only: changing token t changes values after t, not at t.
    row = 0
    t = int(mask[row].nonzero()[1])
    changed = batch.input_ids.clone()
    changed[row, t] = (changed[row, t] + 1) % len(model.tokenizer)
    other = TokenBatch(**{**batch.__dict__, "input_ids": changed})
    moved = model.values(other)
    assert torch.allclose(moved[row, : t + 1], values[row, : t + 1], atol=1e-6)
    assert not torch.allclose(moved[row, t + 1 :], values[row, t + 1 :], atol=1e-6)

    # Saved and loaded (head included), it gives the same values and resumes its optimizer.
    model.save(tmp_path / "critic", with_optimizer=True)
    again = critic(tiny_model_dir, lora, adapter_dir=tmp_path / "critic")
    again.load_optimizer(tmp_path / "critic")
    assert torch.equal(again.values(batch), values)
