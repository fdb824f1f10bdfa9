"""Who plays an episode's next turn when several policies share it (``rollout.agents.RoutedAgent``).

A router is a pure function of the turns so far that names the role to play next. ``turn_order``
plays the policies in the order listed (the last one keeps the rest); ``alpha_umi`` follows the
Planner's hand-over, as alpha-UMi's teacher does (``teachers.systems.alpha_umi``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from envs.types import Turn

PLANNER, CALLER, SUMMARIZER = "planner", "caller", "summarizer"
HANDOVER = re.compile(r"\bnext:\s*(caller|summarizer)\b[.!]?", re.IGNORECASE)

Router = Callable[[Sequence[Turn], Sequence[str]], str]
"""(turns so far, the roles playing) -> the role of the next turn."""


def handover(text: str) -> str | None:
    """The role a Planner's text hands the next turn to: its last ``Next: caller`` or ``Next: summarizer``.

    >>> handover("Read the signals first. Next: Caller."), handover("Not sure yet.")
    ('caller', None)
    """
    found = HANDOVER.findall(text)
    return found[-1].lower() if found else None


def turn_order(turns: Sequence[Turn], roles: Sequence[str]) -> str:
    """Agent turn k is played by ``roles[min(k, len(roles) - 1)]``.

    >>> turn_order([Turn("user", "task"), Turn("planner", "")], ["planner", "caller"])
    'caller'
    """
    played = sum(turn.is_agent for turn in turns)
    return roles[min(played, len(roles) - 1)]


def alpha_umi(turns: Sequence[Turn], roles: Sequence[str] = (PLANNER, CALLER, SUMMARIZER)) -> str:
    """The Planner first and after any other role; after the Planner, the role its ``<plan>`` hands
    over to (the Planner again if none).

    >>> from envs.types import ParsedAction
    >>> alpha_umi([Turn("user", "task"), Turn(PLANNER, "", action=ParsedAction(plan="Next: caller"))])
    'caller'
    """
    last = next((turn for turn in reversed(turns) if turn.is_agent), None)
    if last is None or last.role != PLANNER or last.action is None:
        return PLANNER
    return handover(last.action.plan or "") or PLANNER


ROUTERS: dict[str, Router] = {"turn_order": turn_order, "alpha_umi": alpha_umi}


def router(name: str, roles: Sequence[str]) -> Router:
    """The router ``name``, checked against the roles it must route to."""
    if name not in ROUTERS:
        raise ValueError(f"unknown rollout.router '{name}'; use one of {', '.join(ROUTERS)}")
    if name == "alpha_umi" and set(roles) != {PLANNER, CALLER, SUMMARIZER}:
        raise ValueError(f"rollout.router alpha_umi needs rollout.policies [planner, caller, summarizer], got {list(roles)}")
    return ROUTERS[name]
