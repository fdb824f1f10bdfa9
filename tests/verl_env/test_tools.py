"""veRL's tool loader instantiates our tools, and its create/execute/release calls run them."""

import asyncio


def test_tool_loader_builds_and_calls_every_tool(verl_config, bundle):
    from verl.tools.base_tool import BaseTool
    from verl.tools.tool_registry import initialize_tools_from_config

    tools = {tool.name: tool for tool in initialize_tools_from_config(verl_config.actor_rollout_ref.rollout
                                                                       .multi_turn.tool_config_path)}
    env_tools = [spec.name for spec in bundle.make_env("train", count_tokens=len).tool_specs]
    assert list(tools) == env_tools and all(isinstance(tool, BaseTool) for tool in tools.values())
    task = next(iter(bundle.split("val").tasks.values()))
    reference = bundle.toolbox("val", task.task_id)

    async def call(name, arguments):
        tool = tools[name]
        instance_id, _ = await tool.create(create_kwargs={"task_id": task.task_id, "split": "val"})
        response, reward, metrics = await tool.execute(instance_id, arguments)
        await tool.release(instance_id)
        assert instance_id not in tool._toolboxes
        return response.text, reward, metrics

    for name in env_tools:
        text, reward, metrics = asyncio.run(call(name, {"user_id": task.user_id}))
        assert text == reference.call(name, {"user_id": task.user_id}).text and metrics == {"ok": 1.0}
        assert reward == 0.0 and task.user_id in text
    # the ranking tools rank the task's candidates (never anything outside them)
    ranked = reference.call("user_cf", {"user_id": task.user_id, "k": 20}).data
    assert set(ranked) <= set(task.candidate_item_ids)
    text, _, metrics = asyncio.run(call("user_cf", {"user_id": task.user_id, "k": "many"}))
    assert text.startswith("error: argument 'k' must be a JSON integer") and metrics == {"ok": 0.0}
