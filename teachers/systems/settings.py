"""What a run decides for any teacher system; each system's ``from_settings`` takes the part it uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SystemSettings:
    """The run's choices that a teacher system may read."""

    tools: tuple[str, ...]
    """The tools it may call (those the env offers)."""
    num_recommend: int
    """Ids in a ranking's final ``<recommend>``."""
    max_turns: int
    """The env's turn budget."""
    plan_turns: bool
    """The env's ``plan_turns``: a turn may hold a plan alone."""
    concurrency: int
    """Episodes whose turns the system plays at once."""
    reflection_strategy: str = "reflexion"
    """MACRec's reflector between trials (none, last_trial, reflexion, last_trial_and_reflexion)."""
