"""User simulators for conversational recommendation: a rule-based one and an LLM one."""

from envs.simulators.base import DIALOGUE_ACTS, AgentMove, Dialogue, SimulatorReply, UserSimulator, Verdict, judge
from envs.simulators.llm import LLMSimulator, leak
from envs.simulators.rules import RuleBasedSimulator

__all__ = ["DIALOGUE_ACTS", "AgentMove", "Dialogue", "LLMSimulator", "RuleBasedSimulator", "SimulatorReply",
           "UserSimulator", "Verdict", "judge", "leak"]
