"""Environments by versioned id, so configs and CLIs name them, never import them."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import gymnasium as gym

_ENTRY_POINTS: dict[str, str] = {}


def register(env_id: str, entry_point: str) -> None:
    """Registers ``module:Class`` under ``env_id`` here and in Gymnasium's registry."""
    _ENTRY_POINTS[env_id] = entry_point
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry_point, disable_env_checker=True)


def registered_ids() -> list[str]:
    return sorted(_ENTRY_POINTS)


def env_class(env_id: str) -> Callable[..., gym.Env]:
    if env_id not in _ENTRY_POINTS:
        raise ValueError(f"unknown environment '{env_id}'; registered: {registered_ids()}")
    module_name, class_name = _ENTRY_POINTS[env_id].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """Builds a registered environment, e.g. ``make_env("SequentialRec-v0", catalog=..., graph=...)``."""
    return env_class(env_id)(env_id=env_id, **kwargs)


register("SequentialRec-v0", "envs.sequential_rec:SequentialRecEnv")
register("ConversationalRec-v0", "envs.conversational:ConversationalRecEnv")
register("RatingPrediction-v0", "envs.rating_prediction:RatingPredictionEnv")
