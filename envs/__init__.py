"""Recommendation tasks as text environments: data, tools, environments, registry and checker."""

from envs.registry import make_env, register, registered_ids

__all__ = ["make_env", "register", "registered_ids"]
