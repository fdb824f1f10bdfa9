"""The one episode loop: token-in/token-out trajectories with exact turn spans, masks and seeds."""

import ast
from pathlib import Path

import pytest

from envs import make_env
from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph
from rollout.agents import PolicyAgent
from rollout.chat import ChatFormat
from rollout.engines.base import Generation, SamplingParams
from rollout.engines.hf import HFEngine
from rollout.episode import AgentTurn, EpisodeRequest, TextAgent, run_episodes
from rollout.policy import load_policy

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def world(synthetic_catalog):
    tasks = build_tasks(synthetic_catalog, num_negatives=9, seed=0)[:3]
    graph = InteractionGraph.from_interactions(training_interactions(synthetic_catalog.interactions, tasks))
    return synthetic_catalog, graph, tasks


class ScriptedEngine:
    """An Engine answering every prompt with the next scripted turn (a unit-test stand-in)."""

    def __init__(self, chat, scripts, *, finish_reason="stop"):
        self.chat, self.scripts, self.finish_reason = chat, scripts, finish_reason
        self.seeds: list[list[int]] = []

    def generate(self, prompts, params, *, seeds=None):
        turn = len(self.seeds)
        self.seeds.append(list(seeds))
        ids = self.chat.encode(self.scripts[turn])
        if self.finish_reason == "stop":
            ids = ids + [self.chat.end_of_turn_id]
        return [Generation(list(ids), [-0.5] * len(ids), self.finish_reason) for _ in prompts]

    def update_weights(self, state):
        pass

    def release_memory(self):
        pass


def make_envs(world, chat, count, **kwargs):
    catalog, graph, _ = world
    return [make_env("SequentialRec-v0", catalog=catalog, graph=graph, count_tokens=chat.count_tokens, **kwargs)
            for _ in range(count)]


def test_scripted_episode_records_turns_spans_and_policy_tokens(world, tiny_tokenizer):
    chat = ChatFormat(tiny_tokenizer)
    task = world[2][0]
    scripts = [
        f'<plan>p</plan><tool_call>{{"name": "user_cf", "arguments": {{"user_id": "{task.user_id}"}}}}</tool_call>',
        f"<reflection>r</reflection><recommend>{task.target_item_id}</recommend>",
    ]
    agent = PolicyAgent(ScriptedEngine(chat, scripts), chat, SamplingParams(max_new_tokens=64))
    [trajectory] = run_episodes(agent, make_envs(world, chat, 1), [EpisodeRequest(task, "g0", seed=7)],
                                source="student")
    assert trajectory.rank == 1 and trajectory.format_valid and trajectory.num_tool_calls == 1
    assert trajectory.group_id == "g0" and trajectory.terminated and not trajectory.truncated
    assert [turn.role for turn in trajectory.turns] == ["system", "user", "policy", "tool", "policy"]
    assert [turn.reward for turn in trajectory.turns if turn.is_agent] == [0.0, 1.0]  # the env's 1/rank
    assert len(trajectory.token_ids) == len(trajectory.loss_mask) == len(trajectory.logprobs)
    # Turn spans tile the tokens, and each agent turn's span is exactly its generated tokens.
    assert trajectory.turns[-1].end == len(trajectory.token_ids)
    for before, after in zip(trajectory.turns, trajectory.turns[1:]):
        assert before.end == after.start
    for turn, script in zip([t for t in trajectory.turns if t.is_agent], scripts):
        span = trajectory.token_ids[turn.start : turn.end]
        assert tiny_tokenizer.decode(span) == script + "<|im_end|>"
        assert all(trajectory.loss_mask[turn.start : turn.end])
        assert turn.text == script and turn.action is not None
    assert sum(trajectory.loss_mask) == sum(t.end - t.start for t in trajectory.turns if t.is_agent)
    assert all(lp == -0.5 for lp, m in zip(trajectory.logprobs, trajectory.loss_mask) if m)
    # Re-tokenizing the recorded messages gives the same tokens: SFT and RL see one format.
    assert chat.conversation(trajectory.messages) == (trajectory.token_ids, trajectory.loss_mask)


def test_a_turn_cut_by_the_token_limit_is_closed_but_not_trained_on(world, tiny_tokenizer):
    chat = ChatFormat(tiny_tokenizer)
    engine = ScriptedEngine(chat, ["<plan>thinking"] * 2, finish_reason="length")
    agent = PolicyAgent(engine, chat, SamplingParams(max_new_tokens=4))
    [trajectory] = run_episodes(agent, make_envs(world, chat, 1, max_turns=2), [EpisodeRequest(world[2][0])],
                                source="student")
    assert trajectory.truncated and "turn budget exhausted" in trajectory.errors
    first = next(t for t in trajectory.turns if t.is_agent)
    assert trajectory.token_ids[first.end - 1] == chat.end_of_turn_id and trajectory.loss_mask[first.end - 1] == 0


def test_every_turn_of_every_episode_samples_with_its_own_seed(world, tiny_tokenizer):
    chat = ChatFormat(tiny_tokenizer)
    scripts = ['<tool_call>{"name": "user_cf", "arguments": {"user_id": "1"}}</tool_call>'] * 3
    engine = ScriptedEngine(chat, scripts)
    requests = [EpisodeRequest(task, task.task_id, seed=s) for s, task in enumerate(world[2])]
    run_episodes(PolicyAgent(engine, chat, SamplingParams(max_new_tokens=64)), make_envs(world, chat, 3, max_turns=3),
                 requests, source="student")
    seeds = [seed for turn in engine.seeds for seed in turn]
    assert len(seeds) == 9 and len(set(seeds)) == 9


def test_the_token_budget_counts_the_policy_tokens_and_ends_the_episode(world, tiny_tokenizer):
    chat = ChatFormat(tiny_tokenizer)
    scripts = ['<tool_call>{"name": "user_cf", "arguments": {"user_id": "1"}}</tool_call>'] * 4
    agent = PolicyAgent(ScriptedEngine(chat, scripts), chat, SamplingParams(max_new_tokens=64))
    [trajectory] = run_episodes(agent, make_envs(world, chat, 1, max_episode_tokens=250),
                                [EpisodeRequest(world[2][0])], source="student")
    assert trajectory.truncated and "token budget exhausted" in trajectory.errors
    assert len(trajectory.actions) < 4


class TwoRoleAgent(TextAgent):
    """Calls a tool as its ``caller``, then recommends as itself (a plain text turn)."""

    role = "text"

    def __init__(self, concurrency):
        self.concurrency = concurrency

    def turn(self, episode):
        task = episode.task
        if not any(turn.is_agent for turn in episode.trajectory.turns):
            call = f'<tool_call>{{"name": "user_cf", "arguments": {{"user_id": "{task.user_id}"}}}}</tool_call>'
            return AgentTurn(call, role="caller")
        return f"<recommend>{task.target_item_id}</recommend>"


@pytest.mark.parametrize("concurrency", [1, 2])
def test_a_text_agent_may_name_the_role_of_each_turn(world, concurrency):
    catalog, graph, tasks = world
    envs = [make_env("SequentialRec-v0", catalog=catalog, graph=graph) for _ in tasks[:2]]
    trajectories = run_episodes(TwoRoleAgent(concurrency), envs, [EpisodeRequest(t) for t in tasks[:2]],
                                source="teacher")
    for trajectory in trajectories:
        assert [turn.role for turn in trajectory.turns] == ["system", "user", "caller", "tool", "text"]
        assert trajectory.format_valid and trajectory.rank == 1


def test_tiny_model_episodes_end_within_budgets(world, tiny_model_dir):
    model, tokenizer = load_policy(str(tiny_model_dir), lora=None)
    chat = ChatFormat(tokenizer)
    engine = HFEngine(model, pad_token_id=tokenizer.pad_token_id, stop_token_ids=[chat.end_of_turn_id])
    agent = PolicyAgent(engine, chat, SamplingParams(max_new_tokens=8, temperature=1.0))
    tasks = world[2]
    requests = [EpisodeRequest(task, f"g{i}", seed=i) for i, task in enumerate(tasks)]
    trajectories = run_episodes(agent, make_envs(world, chat, 3, max_turns=2), requests, source="student")
    assert [t.group_id for t in trajectories] == ["g0", "g1", "g2"]
    for trajectory, task in zip(trajectories, tasks):
        assert trajectory.task_id == task.task_id and trajectory.source == "student"
        assert trajectory.truncated or trajectory.terminated
        assert len(trajectory.token_ids) == len(trajectory.loss_mask) == len(trajectory.logprobs)
        assert 1 <= len(trajectory.actions) <= 2
        assert sum(trajectory.loss_mask) <= 2 * 8
        assert not trajectory.format_valid  # a random model does not speak the protocol


@pytest.mark.parametrize("module", ["rollout/episode.py", "rollout/agents.py"])
def test_the_episode_loop_knows_engines_only_by_their_interface(module):
    tree = ast.parse((ROOT / module).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    engines = {name for name in imported if name and name.startswith("rollout.engines")}
    assert engines <= {"rollout.engines.base"}, engines
