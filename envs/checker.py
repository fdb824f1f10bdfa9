"""``check_env``: what every recrl environment must satisfy, checked on a real episode."""

from __future__ import annotations

import gymnasium as gym
from gymnasium.utils.env_checker import check_env as gymnasium_check_env

MALFORMED_ACTIONS = ("", "<recommend>", "<tool_call>{not json}</tool_call>", "<plan>only a plan</plan>",
                     "<tool_call>" + "[" * 5000 + "]" * 5000 + "</tool_call>", "<plan>" * 200_000)
"""Each must be answered with an observation and an error (the last two: deep JSON, and a megabyte
of unclosed tags that a backtracking parser takes minutes over)."""


def check_env(env: gym.Env, *, task_options: dict | None = None) -> None:
    """Raises AssertionError naming the first broken contract.

    Runs Gymnasium's own checker, then ours: text spaces, deterministic reset, malformed actions
    answered with observations (never exceptions), and a closed episode refusing further steps.
    """
    assert isinstance(env.observation_space, gym.spaces.Text), "observation space must be Text"
    assert isinstance(env.action_space, gym.spaces.Text), "action space must be Text"
    gymnasium_check_env(env, skip_render_check=True)
    first, first_info = env.reset(seed=0, options=task_options)
    again, _ = env.reset(seed=0, options=task_options)
    assert first == again, "reset(seed=0) must be deterministic"
    assert env.observation_space.contains(first), "reset observation outside observation_space"
    assert isinstance(first_info, dict), "reset must return an info dict"
    for action in MALFORMED_ACTIONS:
        env.reset(seed=0, options=task_options)
        observation, reward, terminated, truncated, info = env.step(action)
        assert isinstance(observation, str) and isinstance(info, dict)
        assert isinstance(reward, float), "reward must be a float"
        assert info["errors"], f"malformed action {action!r} must be reported in info['errors']"
        assert not terminated or info["format_valid"] is False
    env.reset(seed=0, options=task_options)
    done = False
    steps = 0
    while not done:
        steps += 1
        _, _, terminated, truncated, _ = env.step("<plan>stall</plan>")
        done = terminated or truncated
        assert steps <= 1000, "episode never ends: a turn or token budget is missing"
    try:
        env.step("<recommend>x</recommend>")
    except RuntimeError:
        pass
    else:
        raise AssertionError("step() after the episode ended must raise RuntimeError")
