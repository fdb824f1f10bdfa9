"""veRL's custom reward function (``reward.custom_reward_function.path`` = this file, ``name: compute_score``).

veRL's reward managers call it for every response an agent loop did not score itself: single-turn
completions (``single_turn_agent``). The exported ``recrl_episode`` loop scores its own episodes with
the same rewards and weights (``launch.verl_export.agent_loop``). Scoring is
``rewards.adapters.completion_scores``: the completion is a one-turn episode of the row's env
(``data_source``), its outcome built against ``ground_truth``, its rewards composed with the row's
``reward_weights``.
The return value is veRL's dict form: ``score`` (what it trains on) and each reward's value as
``reward/<name>`` (what it logs).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewards.adapters import completion_scores, completion_task

SCORED_EXTRA_INFO = ("candidate_item_ids", "task_id")
"""The ``extra_info`` fields an outcome reads (veRL adds its own, such as ``num_turns``, beside ours)."""


def row_weights(extra_info: Mapping[str, Any], default: Mapping[str, float]) -> dict[str, float]:
    """The row's ``reward_weights``, or ``default``. Parquet stores a dict as a struct over every key
    any row used, so a key this row left out reads as None: such keys are dropped.

    >>> row_weights({"reward_weights": {"format": 1.0, "mrr": None}}, {"format": 2.0})
    {'format': 1.0}
    >>> row_weights({}, {"format": 2.0})
    {'format': 2.0}
    """
    weights = extra_info.get("reward_weights") or default
    return {name: float(weight) for name, weight in weights.items() if weight is not None}


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, float]:
    """The weighted reward of ``solution_str`` as a one-turn episode of the env ``data_source``.

    Args:
        data_source: The env id (a key of ``rewards.adapters.COMPLETION_TASKS``).
        solution_str: The decoded response.
        ground_truth: The target item id or rating (the parquet's ``reward_model.ground_truth``).
        extra_info: The row's ``extra_info``: ``candidate_item_ids``, ``reward_weights``.
        **kwargs: What else a reward manager passes (a reward model's address); unused.

    Raises:
        ValueError: For an env without completion scoring, or invalid weights.

    >>> result = compute_score("SequentialRec-v0", "<recommend>4, 9</recommend>", "4",
    ...                        {"candidate_item_ids": ["4", "9", "5"], "reward_weights": {"format": 1.0, "mrr": 1.0}})
    >>> result["score"], result["reward/mrr"]
    (2.0, 1.0)
    """
    extra = dict(extra_info or {})
    row = {name: extra[name] for name in SCORED_EXTRA_INFO if extra.get(name) is not None}
    row["reward_weights"] = row_weights(extra, completion_task(data_source).default_weights)
    total, values = completion_scores(data_source, solution_str, ground_truth, row)
    return {"score": total, **{f"reward/{name}": value for name, value in values.items()}}
