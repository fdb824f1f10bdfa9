"""The episode loop: token-in/token-out trajectories with exact loss masks."""

import pytest

from envs import make_env
from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph
from rollout.chat import ChatFormat
from rollout.engines.hf import Generation, HFEngine, SamplingParams
from rollout.episode import run_episodes
from rollout.policy import load_policy


@pytest.fixture
def world(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=9, seed=0)[:3]
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    return synthetic_catalog, graph, tasks


class ScriptedEngine:
    """Answers each prompt with the next scripted turn for its episode (a unit-test stand-in)."""

    def __init__(self, chat, scripts):
        self.chat, self.scripts, self.calls = chat, scripts, 0

    def generate(self, prompts, params, *, seed=None):
        turn = self.calls
        self.calls += 1
        out = []
        for index in range(len(prompts)):
            ids = self.chat.encode(self.scripts[turn]) + [self.chat.end_of_turn_id]
            out.append(Generation(ids, [-0.5] * len(ids), finished=True))
        return out


def test_scripted_episode_masks_policy_tokens_only(world, tiny_tokenizer):
    catalog, graph, tasks = world
    chat = ChatFormat(tiny_tokenizer)
    task = tasks[0]
    scripts = [
        f'<plan>p</plan><tool_call>{{"name": "user_cf", "arguments": {{"user_id": "{task.user_id}"}}}}</tool_call>',
        f"<reflection>r</reflection><recommend>{task.target_item_id}</recommend>",
    ]
    env = make_env("SequentialRec-v0", catalog=catalog, graph=graph, count_tokens=chat.count_tokens)
    [trajectory] = run_episodes(ScriptedEngine(chat, scripts), chat, [env], [task], SamplingParams())
    assert trajectory.rank == 1 and trajectory.format_valid and trajectory.num_tool_calls == 1
    assert len(trajectory.token_ids) == len(trajectory.loss_mask) == len(trajectory.logprobs)
    policy_text = tiny_tokenizer.decode([t for t, m in zip(trajectory.token_ids, trajectory.loss_mask) if m])
    assert policy_text == "<|im_end|>".join(scripts) + "<|im_end|>"
    assert all(lp == -0.5 for lp, m in zip(trajectory.logprobs, trajectory.loss_mask) if m)
    # Re-tokenizing the recorded messages gives the same tokens: SFT and RL see one format.
    assert chat.conversation(trajectory.messages) == (trajectory.token_ids, trajectory.loss_mask)


def test_tiny_model_episodes_end_within_budgets(world, tiny_model_dir):
    catalog, graph, tasks = world
    model, tokenizer = load_policy(str(tiny_model_dir), lora=None)
    chat = ChatFormat(tokenizer)
    engine = HFEngine(model, tokenizer, stop_token_ids=[chat.end_of_turn_id])
    envs = [make_env("SequentialRec-v0", catalog=catalog, graph=graph, max_turns=2, count_tokens=chat.count_tokens)
            for _ in tasks]
    trajectories = run_episodes(engine, chat, envs, tasks, SamplingParams(max_new_tokens=8, temperature=1.0),
                                group_indices=[0, 1, 2], seed=0)
    assert [t.group_index for t in trajectories] == [0, 1, 2]
    for trajectory, task in zip(trajectories, tasks):
        assert trajectory.task_id == task.task_id
        assert trajectory.truncated or trajectory.terminated
        assert len(trajectory.token_ids) == len(trajectory.loss_mask) == len(trajectory.logprobs)
        assert 1 <= len(trajectory.actions) <= 2
        assert sum(trajectory.loss_mask) <= 2 * 8
        assert not trajectory.format_valid  # a random model does not speak the protocol


def test_context_limit_ends_the_episode(world, tiny_tokenizer):
    catalog, graph, tasks = world
    chat = ChatFormat(tiny_tokenizer)
    scripts = ['<tool_call>{"name": "user_cf", "arguments": {"user_id": "1"}}</tool_call>'] * 4
    env = make_env("SequentialRec-v0", catalog=catalog, graph=graph, count_tokens=chat.count_tokens)
    [trajectory] = run_episodes(ScriptedEngine(chat, scripts), chat, [env], tasks[:1], SamplingParams(),
                                max_context_tokens=250)
    assert trajectory.truncated and "context limit reached" in trajectory.errors
