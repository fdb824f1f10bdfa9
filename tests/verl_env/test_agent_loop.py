"""veRL's agent-loop worker runs our episode loop (``recrl_episode``) on rows of the exported dataset.

veRL generates only through vLLM or SGLang servers, which do not run on CPU; the worker's LLM client
is replaced by a server with the same ``generate`` call: one that replays scripted turns (so the
expected reward is known) and one that samples from a real (tiny, random) model.
"""

import asyncio

import pytest
import torch

from launch.verl_export import AGENT_NAME
from rollout.chat import ChatFormat


class ScriptedServer:
    """Answers an episode's k-th request with ``replies(prompt)[k]`` and <|im_end|>; records each
    request as (request id, prompt ids, sampling params, reply ids)."""

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.requests = tokenizer, replies, []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        turn = sum(1 for seen, *_ in self.requests if seen == request_id)
        text = self.replies(self.tokenizer.decode(prompt_ids))[turn]
        end_of_turn = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [end_of_turn]
        self.requests.append((request_id, list(prompt_ids), dict(sampling_params), ids))
        return TokenOutput(token_ids=ids, log_probs=[-0.25] * len(ids))


class ModelServer:
    """Samples each turn from a real causal LM (HF generate) with the request's max_tokens and stops."""

    def __init__(self, model_dir):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.sampled = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        torch.manual_seed(len(self.sampled))
        with torch.no_grad():
            out = self.model.generate(torch.tensor([prompt_ids]), max_new_tokens=sampling_params["max_tokens"],
                                      do_sample=True, temperature=1.0, eos_token_id=sampling_params["stop_token_ids"],
                                      pad_token_id=0)
        ids = out[0, len(prompt_ids):].tolist()
        self.sampled.append(len(ids))
        return TokenOutput(token_ids=ids, log_probs=None)


def batch_of(verl_config, tokenizer, count):
    from verl.protocol import DataProto
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    dataset = RLHFDataset(data_files=verl_config.data.train_files, tokenizer=tokenizer, config=verl_config.data)
    rows = [dataset[index] for index in range(count)]
    return rows, DataProto.from_single_dict(collate_fn(rows))


def test_worker_plays_scripted_episodes_and_scores_them_with_our_rewards(verl_config, tokenizer, bundle):
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    rows, batch = batch_of(verl_config, tokenizer, 2)
    tasks = {row["extra_info"]["task_id"]: bundle.split("train").task(row["extra_info"]["task_id"]) for row in rows}

    def replies(prompt):  # a tool call, then the target first (row 0) or third (row 1)
        task = next(task for task in tasks.values() if f"User {task.user_id}." in prompt)
        others = [item for item in task.candidate_item_ids if item != task.target_item_id]
        ranking = [task.target_item_id, *others] if task.task_id == rows[0]["extra_info"]["task_id"] \
            else [*others[:2], task.target_item_id, *others[2:]]
        call = '{"name": "user_cf", "arguments": {"user_id": "%s"}}' % task.user_id
        return [f"<plan>ask</plan><tool_call>{call}</tool_call>",
                f"<plan>rank</plan><reflection>ok</reflection><recommend>{', '.join(ranking)}</recommend>"]

    server = ScriptedServer(tokenizer, replies)
    worker = AgentLoopWorker(verl_config, llm_client=server)
    output = asyncio.run(worker.generate_sequences(batch))

    assert list(output.non_tensor_batch["agent_name"]) == [AGENT_NAME, AGENT_NAME]
    scores = output.batch["rm_scores"].sum(-1).tolist()
    assert scores == pytest.approx([2.0, 1 + 2 / 3])  # format + tiered hit at rank 1 and 3
    assert list(output.non_tensor_batch["reward/tiered_hit"]) == pytest.approx([1.0, 2 / 3])
    assert len(server.requests) == 4
    request = server.requests[0][2]
    assert request["max_tokens"] == bundle.max_new_tokens and request["stop_token_ids"] == [2]
    assert request["temperature"] == verl_config.actor_rollout_ref.rollout.temperature
    chat = ChatFormat(tokenizer)
    for index, row in enumerate(rows):
        prompt = chat.prompt_ids(row["raw_prompt"])
        valid = output.batch["attention_mask"][index, : output.batch["prompts"].shape[1]].bool()
        assert output.batch["prompts"][index][valid].tolist() == prompt
        sampled = [reply for _, ids, _, reply in server.requests if ids[: len(prompt)] == prompt]
        mask = output.batch["response_mask"][index]
        valid = output.batch["attention_mask"][index, -mask.shape[0]:].bool()
        responses = output.batch["responses"][index][valid]
        # mask 1 on the two sampled turns (their <|im_end|> included), 0 on the tool reply between them
        assert len(sampled) == 2 and int(mask.sum()) == sum(len(reply) for reply in sampled) < len(responses)
        assert responses[mask[valid] == 1].tolist() == [token for reply in sampled for token in reply]
        assert "<tool_response>" in tokenizer.decode(responses[mask[valid] == 0])
    assert torch.all(output.batch["rollout_log_probs"][output.batch["response_mask"] == 1] == -0.25)


@pytest.mark.slow
def test_worker_plays_episodes_sampled_from_a_real_model(verl_config, tokenizer, bundle):
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    _, batch = batch_of(verl_config, tokenizer, 2)
    server = ModelServer(verl_config.actor_rollout_ref.model.path)
    worker = AgentLoopWorker(verl_config, llm_client=server)
    output = asyncio.run(worker.generate_sequences(batch))
    response_length = verl_config.actor_rollout_ref.rollout.response_length
    assert output.batch["responses"].shape == (2, response_length)
    assert output.batch["response_mask"].sum() <= sum(server.sampled) and server.sampled
    scores = output.batch["rm_scores"].sum(-1).tolist()
    # each episode's reward is our weighted sum of its rewards, whatever the model wrote
    for index, score in enumerate(scores):
        values = {name: output.non_tensor_batch[f"reward/{name}"][index] for name in bundle.reward_weights}
        assert values["format"] in (-1.0, 1.0)
        assert score == pytest.approx(sum(bundle.reward_weights[name] * value for name, value in values.items()))
    assert "rollout_log_probs" not in output.batch.keys()
