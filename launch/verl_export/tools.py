"""Our tools as veRL native tools (``BaseTool``), for veRL's own ``tool_agent`` loop.

The exported ``tool_config.yaml`` declares one entry per tool the env offers, each with
``class_name: launch.verl_export.tools.RecTool``, the tool's OpenAI schema, and ``config.bundle``,
the exported environment bundle. veRL's ``initialize_tools_from_config`` builds them; for each
call it ``create``s an instance with the row's ``tools_kwargs[<tool>].create_kwargs`` (the task id
and split), ``execute``s it and ``release``s it. Each instance is our ``Toolbox`` bound to that task
(so no tool reveals the task's target), and a bad call is answered with the same one-line error an
agent of ours reads, never an exception.

Imported only where veRL is installed (``.venv-verl``): it subclasses veRL's ``BaseTool``.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from envs.tools import Toolbox
from launch.verl_export.bundle import load_bundle


class RecTool(BaseTool):
    """One tool of ``envs.tools.Toolbox``, named by its schema, over the bundle in ``config["bundle"]``.

    Args:
        config: veRL's tool ``config``: ``type: native`` and ``bundle``, the bundle folder.
        tool_schema: The tool's OpenAI function schema (its name picks the tool).
    """

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema):
        super().__init__(config, tool_schema)
        if not config.get("bundle"):
            raise ValueError(f"tool {self.name!r} has no config.bundle: use the tool_config.yaml that "
                             "`recrl export verl` writes (it points at the exported env bundle).")
        self.bundle = load_bundle(config["bundle"])
        self._toolboxes: dict[str, Toolbox] = {}

    async def create(self, instance_id: str | None = None, create_kwargs: dict[str, Any] | None = None,
                     **kwargs: Any) -> tuple[str, ToolResponse]:
        """Binds a toolbox to the task in ``create_kwargs`` (``task_id``, ``split``; the train split
        when only a task id is given, no task when neither is)."""
        arguments = {**kwargs, **(create_kwargs or {})}
        instance_id = instance_id or uuid4().hex
        self._toolboxes[instance_id] = self.bundle.toolbox(arguments.get("split") or "train", arguments.get("task_id"))
        return instance_id, ToolResponse()

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
                      ) -> tuple[ToolResponse, float, dict]:
        """Runs the tool: its text, no step reward (ours are outcome rewards), and whether the call
        was valid as a metric."""
        if instance_id not in self._toolboxes:
            return ToolResponse(text=f"error: tool {self.name} was not created for this episode"), 0.0, {"ok": 0.0}
        result = self._toolboxes[instance_id].call(self.name, parameters)
        return ToolResponse(text=result.text), 0.0, {"ok": float(result.ok)}

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._toolboxes.pop(instance_id, None)
