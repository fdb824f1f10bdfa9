"""The environment's settings: the one place their defaults are defined (run configs embed it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EnvConfig:
    """Which environment the agent plays, and its budgets."""

    env_id: str = "SequentialRec-v0"
    """Registered environment id."""
    max_turns: int = 4
    """Agent turns before the episode is cut."""
    max_episode_tokens: int = 1024
    """Prompt, actions and observations together, in the policy's tokens; the episode is cut there."""
    history_in_prompt: int = 3
    """Recent history items shown in the first prompt."""
    tools: list[str] = field(default_factory=lambda: ["user_info", "user_history", "item_cf", "user_cf"])
    """Tools offered to the agent."""
    plan_turns: bool = False
    """SequentialRec-v0: a turn holding only a ``<plan>`` is a planning step (alpha-UMi's planner
    hands over to its caller or summarizer), answered with an empty tool reply, not an error."""


DEFAULTS = EnvConfig()
