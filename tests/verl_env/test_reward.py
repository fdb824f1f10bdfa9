"""veRL's reward manager, loaded from the generated config, scores with our compute_score."""


import numpy as np
import torch

from rewards.adapters import compute_score as adapter_score


def scored(manager, tokenizer, response: str, row: dict) -> dict:
    from verl.protocol import DataProto

    prompt = torch.tensor([tokenizer.encode("prompt", add_special_tokens=False)])
    response_ids = torch.tensor([tokenizer.encode(response, add_special_tokens=False)])
    data = DataProto.from_dict(
        tensors={"prompts": prompt, "responses": response_ids,
                 "attention_mask": torch.ones(1, prompt.shape[1] + response_ids.shape[1], dtype=torch.long)},
        non_tensors={key: np.array([value], dtype=object) for key, value in row.items()})
    return manager.loop.run_until_complete(manager.run_single(data))  # the loop it was made on


def test_naive_reward_manager_calls_our_compute_score(verl_config, tokenizer, bundle):
    from verl.experimental.reward_loop.reward_manager import NaiveRewardManager
    from verl.trainer.ppo.reward import load_reward_manager

    manager = load_reward_manager(verl_config, tokenizer)
    assert isinstance(manager, NaiveRewardManager)
    task = next(iter(bundle.split("train").tasks.values()))
    extra_info = {"task_id": task.task_id, "candidate_item_ids": list(task.candidate_item_ids),
                  "reward_weights": dict(bundle.reward_weights)}
    row = {"data_source": "SequentialRec-v0", "extra_info": extra_info,
           "reward_model": {"style": "rule", "ground_truth": task.target_item_id}}
    others = [item for item in task.candidate_item_ids if item != task.target_item_id]
    best = f"<reflection>ok</reflection><recommend>{task.target_item_id}, {others[0]}</recommend>"
    third = f"<recommend>{others[0]}, {others[1]}, {task.target_item_id}</recommend>"
    result = scored(manager, tokenizer, best, row)
    assert result["reward_score"] == 2.0  # format +1, tiered hit 1 at rank 1
    assert result["reward_extra_info"]["reward/tiered_hit"] == 1.0
    result = scored(manager, tokenizer, third, row)
    assert result["reward_score"] == adapter_score("SequentialRec-v0", third, task.target_item_id, extra_info)
    assert abs(result["reward_score"] - (1 + 2 / 3)) < 1e-9
    assert scored(manager, tokenizer, "no answer", row)["reward_score"] == -1.0
