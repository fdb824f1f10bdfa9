"""Non-LLM rankers over a RankingTask: the bars an agent has to clear.

Each returns a full ranking of ``task.candidate_item_ids``, best first. ``BASELINES`` gives them
one call signature, ``fn(task, graph, seed)``, so evaluation code can loop over them by name.
"""

from __future__ import annotations

from typing import Callable

from envs.data.splits import user_rng
from envs.tools.graph import InteractionGraph
from envs.tools.toolbox import rank_candidates
from envs.types import RankingTask

Ranker = Callable[[RankingTask, InteractionGraph, int], list[str]]


def rank_random(task: RankingTask, *, seed: int) -> list[str]:
    """A random permutation that depends only on ``seed`` and ``task.task_id``."""
    candidates = list(task.candidate_item_ids)
    user_rng(seed, task.task_id).shuffle(candidates)
    return candidates


def rank_pop(task: RankingTask, graph: InteractionGraph) -> list[str]:
    """Most popular candidates first (number of users in the graph)."""
    scores = {item_id: float(graph.popularity(item_id)) for item_id in task.candidate_item_ids}
    return rank_candidates(scores, task.candidate_item_ids)


def rank_itemknn(task: RankingTask, graph: InteractionGraph) -> list[str]:
    """Candidates by ItemCF score against ``task.history``."""
    scores = graph.item_cf_scores(task.history, task.candidate_item_ids)
    return rank_candidates(scores, task.candidate_item_ids)


RECENT_ITEMS = 5
"""Most recent history items ``itemknn_recent`` scores against."""


def rank_itemknn_recent(task: RankingTask, graph: InteractionGraph, *, k: int = RECENT_ITEMS) -> list[str]:
    """Candidates by ItemCF score against the ``k`` most recent items of ``task.history``: the next
    item follows recent interest more than the whole history."""
    scores = graph.item_cf_scores(task.history[-k:], task.candidate_item_ids)
    return rank_candidates(scores, task.candidate_item_ids)


def rank_userknn(task: RankingTask, graph: InteractionGraph) -> list[str]:
    """Candidates by UserCF score, the user's vector taken from ``task.history``."""
    scores = graph.user_cf_scores(task.user_id, task.candidate_item_ids, history=task.history)
    return rank_candidates(scores, task.candidate_item_ids)


BASELINES: dict[str, Ranker] = {
    "random": lambda task, graph, seed: rank_random(task, seed=seed),
    "pop": lambda task, graph, seed: rank_pop(task, graph),
    "itemknn": lambda task, graph, seed: rank_itemknn(task, graph),
    "itemknn_recent": lambda task, graph, seed: rank_itemknn_recent(task, graph),
    "userknn": lambda task, graph, seed: rank_userknn(task, graph),
}
