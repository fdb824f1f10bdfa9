"""Our rewards in the shapes other trainers call: TRL's reward functions and veRL's ``compute_score``.

Both score a single completion as a one-turn episode of an environment: the text is parsed with the
env's tags (:func:`envs.parsing.parse_action`), its outcome is built against the ground truth, and
the one-turn :class:`~envs.types.Trajectory` is scored by :func:`rewards.compose.score` with reward
weights by name. Environments are looked up by id in :data:`COMPLETION_TASKS`:

* ``SequentialRec-v0``: ground truth ``target_item_id``; optional ``candidate_item_ids`` (without
  them, the ranking is the ``<recommend>`` list as written);
* ``RatingPrediction-v0``: ground truth ``target_rating``; the answer is ``<answer>4</answer>``.

TRL (``GRPOTrainer(reward_funcs=[trl_reward_func({"format": 1.0, "tiered_hit": 1.0})], ...)``): the
dataset's columns reach the function as keyword lists, one value per completion. veRL
(``custom_reward_function.path`` pointing at this file, ``name: compute_score``): ``data_source`` is
the env id, ``ground_truth`` the target, and ``extra_info`` may hold ``candidate_item_ids`` and
``reward_weights``. Neither library is imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envs.parsing import RANKING_TAGS, RATING_TAGS, parse_action, parse_rating, read_ranking
from envs.types import Outcome, ParsedAction, RankingOutcome, RatingOutcome, Trajectory, Turn
from rewards.compose import RewardConfig, check_weights, score
from rewards.macrec import LOWER, UPPER
from rewards.ranking import rank_of

__all__ = [
    "COMPLETION_TASKS",
    "CompletionTask",
    "completion_scores",
    "completion_trajectory",
    "compute_score",
    "ranking_outcome",
    "rating_outcome",
    "trl_reward_func",
]



def ranking_outcome(action: ParsedAction, row: Mapping[str, Any]) -> tuple[RankingOutcome, bool]:
    """The ranking a ``<recommend>`` gives, scored against ``row["target_item_id"]``, and whether it
    is well-formed.

    With ``row["candidate_item_ids"]`` the ranking is built as ``SequentialRec-v0`` builds it:
    listed candidates first, the unlisted ones after in the order given; a non-candidate or repeated
    id makes it ill-formed. Without candidates it is the list as written, repeats dropped.

    >>> action = parse_action("<recommend>b, x</recommend>")
    >>> ranking_outcome(action, {"target_item_id": "c", "candidate_item_ids": ["a", "b", "c"]})
    (RankingOutcome(ranking=('b', 'a', 'c'), rank=3), False)
    >>> ranking_outcome(action, {"target_item_id": "x"})
    (RankingOutcome(ranking=('b', 'x'), rank=2), True)
    """
    target = str(row["target_item_id"])
    written = action.recommend or []
    candidates = row.get("candidate_item_ids")
    if candidates is None:
        ranking = list(dict.fromkeys(written))
        well_formed = bool(ranking)
    else:
        ranking, wrong = read_ranking(written, [str(item_id) for item_id in candidates])
        well_formed = bool(ranking) and not wrong
    outcome = RankingOutcome(ranking=tuple(ranking), rank=rank_of(ranking, target))
    return outcome, well_formed and not action.errors


def rating_outcome(action: ParsedAction, row: Mapping[str, Any]) -> tuple[RatingOutcome, bool]:
    """The rating an ``<answer>`` predicts against ``row["target_rating"]``, and whether it is a
    well-formed rating in ``[1, 5]``.

    >>> rating_outcome(parse_action("<answer>4</answer>", tags=RATING_TAGS), {"target_rating": "5"})
    (RatingOutcome(prediction=4.0, target=5.0), True)
    """
    prediction = parse_rating(action.answer)
    in_range = prediction is not None and LOWER <= prediction <= UPPER
    return RatingOutcome(prediction=prediction, target=float(row["target_rating"])), in_range and not action.errors


@dataclass(frozen=True)
class CompletionTask:
    """How a one-turn completion of one environment is scored."""

    tags: tuple[str, ...]
    """The tags the env's parser takes."""
    truth_column: str
    """The dataset column (veRL: ``ground_truth``) holding the target."""
    outcome: Callable[[ParsedAction, Mapping[str, Any]], tuple[Outcome, bool]]
    """The outcome and format validity of a parsed completion, given its row."""
    default_weights: Mapping[str, float] = field(default_factory=lambda: dict(RewardConfig().weights))
    """Reward weights when the caller gives none."""


COMPLETION_TASKS: dict[str, CompletionTask] = {
    "SequentialRec-v0": CompletionTask(tags=RANKING_TAGS, truth_column="target_item_id", outcome=ranking_outcome),
    "RatingPrediction-v0": CompletionTask(tags=RATING_TAGS, truth_column="target_rating", outcome=rating_outcome,
                                          default_weights={"format": 1.0, "rp_v1": 1.0}),
}
"""Completion scoring by env id (veRL's ``data_source``)."""


def completion_task(env_id: str) -> CompletionTask:
    """The scoring of ``env_id``'s completions.

    Raises:
        ValueError: If ``env_id`` has none, naming those that do.
    """
    if env_id not in COMPLETION_TASKS:
        raise ValueError(f"no completion scoring for environment {env_id!r}; "
                         f"known: {', '.join(sorted(COMPLETION_TASKS))} "
                         "(add one to rewards.adapters.COMPLETION_TASKS).")
    return COMPLETION_TASKS[env_id]


def completion_trajectory(env_id: str, completion: str, row: Mapping[str, Any], *, source: str) -> Trajectory:
    """A one-turn episode of ``env_id`` in which the policy wrote ``completion``.

    Args:
        env_id: The environment whose tags and outcome apply.
        completion: The policy's text.
        row: The task's columns: the env's truth column, and what else its outcome reads.
        source: Who produced the completion (``trl``, ``verl``), recorded on the trajectory.

    Raises:
        ValueError: If ``env_id`` is unknown or ``row`` lacks its truth column.
    """
    task = completion_task(env_id)
    if row.get(task.truth_column) is None:
        raise ValueError(f"{env_id} completions are scored against a {task.truth_column!r} column; "
                         f"the row has {sorted(row)}.")
    action = parse_action(completion, tags=task.tags)
    outcome, format_valid = task.outcome(action, row)
    turn = Turn(role="policy", text=completion, action=action, errors=list(action.errors))
    return Trajectory(task_id=str(row.get("task_id", "")), env_id=env_id, source=source, turns=[turn],
                      outcome=outcome, format_valid=format_valid, terminated=True)


def _completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """A TRL completion's text: the string itself, or a conversational completion's last assistant message."""
    if isinstance(completion, str):
        return completion
    replies = [message.get("content") or "" for message in completion if message.get("role") == "assistant"]
    return replies[-1] if replies else ""


def trl_reward_func(weights: Mapping[str, float] | None = None, *,
                    env_id: str = "SequentialRec-v0") -> Callable[..., list[float]]:
    """A TRL reward function (``reward_func(prompts, completions, **columns) -> list[float]``) scoring
    each completion as a one-turn episode of ``env_id`` with ``weights``.

    The dataset must carry the env's truth column (``target_item_id``, ``target_rating``) and may carry
    ``candidate_item_ids``. Where TRL passes ``log_metric``, each reward's batch mean is logged as
    ``reward/<name>``.

    Args:
        weights: Reward name to weight (``REWARD_FUNCTIONS``); the env's defaults when None.
        env_id: A key of :data:`COMPLETION_TASKS`.

    Raises:
        ValueError: For an unknown ``env_id`` or invalid weights, here rather than mid-training.

    >>> reward_func = trl_reward_func({"format": 1.0, "tiered_hit": 1.0})
    >>> reward_func(["p", "p"], ["<recommend>7, 3</recommend>", "no tags"], target_item_id=["3", "3"])
    [1.6666666666666665, -1.0]
    """
    task = completion_task(env_id)
    weights = dict(task.default_weights if weights is None else weights)
    check_weights(weights)

    def reward_func(prompts: list, completions: list, **kwargs: Any) -> list[float]:
        columns = [name for name, values in kwargs.items()
                   if isinstance(values, list) and len(values) == len(completions)]
        totals, by_name = [], {name: [] for name in weights}
        for index, completion in enumerate(completions):
            row = {name: kwargs[name][index] for name in columns}
            trajectory = completion_trajectory(env_id, _completion_text(completion), row, source="trl")
            total, values = score(trajectory, weights)
            totals.append(total)
            for name, value in values.items():
                by_name[name].append(value)
        log_metric = kwargs.get("log_metric")
        if log_metric is not None and completions:
            for name, values in by_name.items():
                log_metric(f"reward/{name}", sum(values) / len(values))
        return totals

    reward_func.__name__ = "recrl"
    return reward_func


def compute_score(data_source: str, solution_str: str, ground_truth: Any,
                  extra_info: Mapping[str, Any] | None = None) -> float:
    """veRL's custom reward function: the weighted reward of ``solution_str`` as a one-turn episode.

    Args:
        data_source: The env id (a key of :data:`COMPLETION_TASKS`).
        solution_str: The decoded response.
        ground_truth: The target item id or rating.
        extra_info: Optional ``candidate_item_ids`` and ``reward_weights`` (else the env's defaults).

    Raises:
        ValueError: For an unknown ``data_source`` or invalid weights.

    >>> compute_score("SequentialRec-v0", "<recommend>9, 4</recommend>", "4",
    ...               {"candidate_item_ids": ["4", "9", "5"], "reward_weights": {"mrr": 1.0}})
    0.5
    >>> compute_score("RatingPrediction-v0", "<answer>3</answer>", 4.0)  # format 1 + rp_v1 -1
    0.0
    """
    total, _ = completion_scores(data_source, solution_str, ground_truth, extra_info)
    return total


def completion_scores(data_source: str, solution_str: str, ground_truth: Any,
                      extra_info: Mapping[str, Any] | None = None) -> tuple[float, dict[str, float]]:
    """``compute_score``'s weighted total of ``solution_str``, and each reward's value by name.

    >>> completion_scores("SequentialRec-v0", "<recommend>9, 4</recommend>", "4",
    ...                   {"candidate_item_ids": ["4", "9", "5"], "reward_weights": {"mrr": 1.0}})
    (0.5, {'mrr': 0.5})
    """
    task = completion_task(data_source)
    extra = dict(extra_info or {})
    weights = extra.pop("reward_weights", None) or task.default_weights
    row = {**extra, task.truth_column: ground_truth}
    return score(completion_trajectory(data_source, solution_str, row, source="verl"), weights)
