"""The research's multi-agent teacher systems over an LLM backend, by name.

Each is a ``rollout.episode.TextAgent`` composing role prompts (``teachers/prompts/<system>/``) over
one ``teachers.backends.ChatBackend``; the heuristic teachers (no LLM) are chosen in
``teachers.pipeline.make_teacher``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from envs.registry import env_class
from envs.types import DialogueTask, RankingTask, RatingTask
from teachers.backends.base import ChatBackend, ChatParams
from teachers.systems.settings import SystemSettings

SYSTEMS = {
    "mars": ("teachers.systems.mars", "MARSTeacher", (RankingTask.kind,)),
    "macrec": ("teachers.systems.macrec", "MACRecTeacher", (RankingTask.kind, RatingTask.kind, DialogueTask.kind)),
    "macrs": ("teachers.systems.macrs", "MACRSTeacher", (DialogueTask.kind,)),
    "alpha_umi": ("teachers.systems.alpha_umi", "AlphaUMiTeacher", (RankingTask.kind,)),
}
"""name -> (module, class, the task kinds it plays)."""


def make_system(name: str, env_spec: Any, backend: ChatBackend, params: ChatParams, *, tools: Sequence[str],
                num_recommend: int, concurrency: int, reflection_strategy: str = "reflexion") -> Any:
    """The LLM teacher ``name`` for the env ``env_spec`` builds (a ``rollout.worker.EnvSpec``).

    Args:
        tools: the tools it may call (those the env offers).
        num_recommend: ids in a ranking's final ``<recommend>``.
        concurrency: episodes whose turns it plays at once.
        reflection_strategy: MACRec's reflector between trials (none, last_trial, reflexion,
            last_trial_and_reflexion).
    """
    import importlib

    if name not in SYSTEMS:
        raise ValueError(f"unknown teacher.system '{name}'; use heuristic or one of {', '.join(SYSTEMS)}")
    module, class_name, kinds = SYSTEMS[name]
    env = env_spec.config
    kind = env_class(env.env_id).task_kind
    if kind not in kinds:
        raise ValueError(f"teacher.system {name} plays {' or '.join(kinds)} tasks, not {env.env_id}'s {kind} tasks")
    system = getattr(importlib.import_module(module), class_name)
    settings = SystemSettings(tools=tuple(tool for tool in tools if tool in env.tools), num_recommend=num_recommend,
                              max_turns=env.max_turns, plan_turns=env.plan_turns, concurrency=concurrency,
                              reflection_strategy=reflection_strategy)
    return system.from_settings(env_spec.catalog, backend, params, settings)
