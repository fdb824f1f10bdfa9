"""Routing the turns of an episode among several policies."""

import pytest

from envs.types import ParsedAction, Trajectory, Turn
from rollout.agents import RoutedAgent
from rollout.episode import Episode, EpisodeRequest
from rollout.routing import alpha_umi, router, turn_order
from rollout.worker import RolloutConfig


class Named:
    def __init__(self, role):
        self.role = role


def episode(*turns):
    trajectory = Trajectory(task_id="t", env_id="SequentialRec-v0", source="s",
                            turns=[Turn("system", "s"), Turn("user", "u"), *turns])
    return Episode(EpisodeRequest(task=None), trajectory, [])


def plan(role, text):
    return Turn(role, text, action=ParsedAction(plan=text))


def test_turn_order_plays_the_policies_in_order_and_the_last_keeps_the_rest():
    roles = ["planner", "caller"]
    assert [turn_order(episode(*[Turn(r, "") for r in played]).trajectory.turns, roles)
            for played in ([], ["planner"], ["planner", "caller"])] == ["planner", "caller", "caller"]


def test_alpha_umi_follows_the_planners_handover():
    assert alpha_umi(episode().trajectory.turns) == "planner"
    assert alpha_umi(episode(plan("planner", "Next: caller")).trajectory.turns) == "caller"
    assert alpha_umi(episode(plan("planner", "go on. NEXT: Summarizer!")).trajectory.turns) == "summarizer"
    assert alpha_umi(episode(plan("planner", "unsure")).trajectory.turns) == "planner"
    assert alpha_umi(episode(plan("planner", "Next: caller"), Turn("tool", "r"), Turn("caller", "c")).trajectory.turns) == "planner"


def test_a_routed_agent_asks_its_route_who_plays():
    agents = [Named("planner"), Named("caller"), Named("summarizer")]
    routed = RoutedAgent(agents, route=alpha_umi)
    assert routed.player(episode(plan("planner", "Next: summarizer"))).role == "summarizer"
    assert RoutedAgent(agents).player(episode(Turn("planner", ""))).role == "caller"  # turn order by default


def test_routers_are_checked_in_config():
    with pytest.raises(ValueError, match="unknown rollout.router 'random'"):
        RolloutConfig(router="random")
    with pytest.raises(ValueError, match="needs rollout.policies \\[planner, caller, summarizer\\]"):
        RolloutConfig(policies=["planner", "caller"], router="alpha_umi")
    assert router("alpha_umi", ["planner", "caller", "summarizer"]) is alpha_umi
