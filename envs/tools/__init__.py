"""The interaction graph and the tools an agent calls."""

from envs.tools.graph import InteractionGraph
from envs.tools.toolbox import (
    ToolInputError,
    ToolResult,
    Toolbox,
    ToolSpec,
    rank_candidates,
    validate_arguments,
)

__all__ = [
    "InteractionGraph",
    "ToolInputError",
    "ToolResult",
    "ToolSpec",
    "Toolbox",
    "rank_candidates",
    "validate_arguments",
]
