"""GLPFT through the SFT stage: a global pass on alpha-UMi's whole episodes, then one local adapter
per policy trained on its own turns, where each policy then starts GRPO."""

import json

from envs.config import EnvConfig
from envs.data import build_tasks, training_interactions
from envs.tools import InteractionGraph
from launch import stages
from launch.config import load_config
from rollout.episode import EpisodeRequest, run_episodes
from rollout.policy import load_checkpoint_state, role_checkpoints
from rollout.worker import EnvSpec
from teachers.backends.base import ChatParams
from teachers.backends.scripted import ScriptedBackend
from teachers.pipeline import write_dataset
from teachers.systems.alpha_umi import ROLES, AlphaUMiTeacher

TOOLS = ["user_info", "user_history", "item_cf", "user_cf"]


def alpha_umi_episodes(catalog, count):
    tasks = build_tasks(catalog, num_negatives=9, seed=0)[:count]
    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, tasks))
    spec = EnvSpec(catalog, graph, EnvConfig(tools=TOOLS, max_turns=6, plan_turns=True), tokenizer="tiny-random")
    episodes = []
    for task in tasks:
        replies = ["Ask the signals. Next: caller",
                   json.dumps({"name": "user_cf", "arguments": {"user_id": task.user_id}}),
                   "Enough. Next: summarizer", f"<recommend>{', '.join(task.candidate_item_ids[:3])}</recommend>"]
        teacher = AlphaUMiTeacher(catalog, ScriptedBackend(replies), ChatParams(max_tokens=32), tools=TOOLS, max_turns=6)
        episodes += run_episodes(teacher, [spec.make()], [EpisodeRequest(task)], source="teacher:alpha_umi")
    return episodes


def test_each_policy_gets_its_own_local_adapter_from_the_global_one(synthetic_catalog, tmp_path):
    episodes = alpha_umi_episodes(synthetic_catalog, 4)
    assert all(t.format_valid and [turn.role for turn in t.turns if turn.is_agent] ==
               ["planner", "caller", "planner", "summarizer"] for t in episodes)
    config = load_config(None, [f"run_dir={tmp_path}", "data.dataset=synthetic", "model.name=tiny-random",
                                "rollout.policies=[planner,caller,summarizer]", "rollout.router=alpha_umi",
                                "rollout.engine=hf", "env.plan_turns=true", "sft.local_epochs=1", "sft.lr=0.01",
                                "sft.max_examples=4", "sft.batch_size=2"])
    paths = stages.RunPaths(tmp_path)
    write_dataset(episodes, paths.teacher_dataset)
    losses = stages.stage_sft(config)
    assert len(losses) == 2  # the global pass: 4 episodes in batches of 2
    own = role_checkpoints(paths.sft_adapter, list(ROLES))
    assert own == {role: paths.sft_adapter / role for role in ROLES}
    weights = {name: load_checkpoint_state(folder) for name, folder in [("global", paths.sft_adapter), *own.items()]}
    for role in ROLES:  # each local pass moved its copy of the global adapter, each differently
        assert any(not weights[role][key].equal(weights["global"][key]) for key in weights["global"])
    assert any(not weights["planner"][key].equal(weights["caller"][key]) for key in weights["global"])
