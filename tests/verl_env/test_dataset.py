"""veRL's RL dataset class loads the exported parquet."""

import pyarrow.parquet as pq
from omegaconf import OmegaConf

from launch.verl_export import AGENT_NAME
from rollout.chat import ChatFormat


def test_rlhf_dataset_reads_every_row_with_our_columns(verl_config, tokenizer, export_dir, bundle):
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    for split, files in (("train", verl_config.data.train_files), ("val", verl_config.data.val_files)):
        dataset = RLHFDataset(data_files=files, tokenizer=tokenizer, config=verl_config.data)
        assert len(dataset) == pq.read_metadata(files).num_rows > 0
        row = dataset[len(dataset) - 1]
        task = bundle.split(split).task(row["extra_info"]["task_id"])
        assert row["agent_name"] == AGENT_NAME and row["data_source"] == "SequentialRec-v0"
        assert row["reward_model"]["ground_truth"] == task.target_item_id
        assert list(row["extra_info"]["candidate_item_ids"]) == list(task.candidate_item_ids)
        assert set(row["tools_kwargs"]) == set(bundle.env.tools)
        assert row["tools_kwargs"]["user_cf"]["create_kwargs"] == {"task_id": task.task_id, "split": split}
        assert [m["role"] for m in row["raw_prompt"]] == ["system", "user"]
        assert f"User {task.user_id}." in row["raw_prompt"][1]["content"]
        batch = collate_fn([dataset[0], dataset[1]])
        assert list(batch["agent_name"]) == [AGENT_NAME, AGENT_NAME]


def test_our_prompt_tokens_are_the_chat_template_and_fit_prompt_length(verl_config, tokenizer):
    """Our episode loop tokenizes the opening messages itself (ChatFormat); veRL's single-turn path uses
    the model's chat template: both give the same ids, within ``max_prompt_length`` (nothing filtered)."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.merge(verl_config.data, {"filter_overlong_prompts": True, "tool_config_path": None,
                                                "filter_overlong_prompts_workers": 1})
    dataset = RLHFDataset(data_files=verl_config.data.train_files, tokenizer=tokenizer, config=config)
    assert len(dataset) == pq.read_metadata(verl_config.data.train_files).num_rows
    chat = ChatFormat(tokenizer)
    for index in (0, len(dataset) - 1):
        messages = dataset[index]["raw_prompt"]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        assert chat.prompt_ids(messages) == list(ids)
