"""The recommendation signals an agent reads through tools, and that baselines and the teacher rank with.

A signal scores candidate items for a user from the user's history (oldest first). Every signal is
built from training interactions only (the graph, or a model fitted on them): a task's target never
enters a score, and a task-bound tool passes ``task.history``, never the user's full record.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from envs.types import Catalog, Item

if TYPE_CHECKING:  # envs.tools imports this module for its ranking tools
    from envs.tools.graph import InteractionGraph

SIGNAL_NAMES = ("item_cf", "user_cf", "recent_cf", "popularity", "genre_year", "sequential")
"""Every signal's name (its tool's name); ``sequential`` needs a fitted model."""

RECENT_ITEMS = 5
"""History items ``recent_cf`` scores against: the next item follows recent interest."""


class Signal(Protocol):
    """Scores candidate items for a user."""

    name: str
    description: str
    sparse: bool
    """True when a 0 score means "no evidence" (CF counts), so a list without candidates skips them."""

    def scores(self, user_id: str, history: Sequence[str], candidate_item_ids: Sequence[str]) -> dict[str, float]:
        """A score per candidate (higher is better) given the user's history, oldest first."""
        ...


@dataclass(frozen=True)
class ItemCFSignal:
    """ItemCF: summed cosine similarity of each candidate to the history items (the last ``recent``
    of them when set)."""

    graph: InteractionGraph
    name: str = "item_cf"
    recent: int | None = None
    sparse: bool = True

    @property
    def description(self) -> str:
        if self.recent:
            return f"Top k items by similarity to the user's {self.recent} most recent items (ItemCF)."
        return "Top k items by similarity to the user's history (ItemCF)."

    def scores(self, user_id: str, history: Sequence[str], candidate_item_ids: Sequence[str]) -> dict[str, float]:
        items = history[-self.recent:] if self.recent else history
        return self.graph.item_cf_scores(items, candidate_item_ids)


@dataclass(frozen=True)
class UserCFSignal:
    """UserCF: votes of the users most similar to this history."""

    graph: InteractionGraph
    name: str = "user_cf"
    description: str = "Top k items chosen by the most similar users (UserCF)."
    sparse: bool = True

    def scores(self, user_id: str, history: Sequence[str], candidate_item_ids: Sequence[str]) -> dict[str, float]:
        return self.graph.user_cf_scores(user_id, candidate_item_ids, history=history)


@dataclass(frozen=True)
class PopularitySignal:
    """How many training users chose each item."""

    graph: InteractionGraph
    name: str = "popularity"
    description: str = "Top k items by number of users."
    sparse: bool = True

    def scores(self, user_id: str, history: Sequence[str], candidate_item_ids: Sequence[str]) -> dict[str, float]:
        return {item_id: float(self.graph.popularity(item_id)) for item_id in candidate_item_ids}


@dataclass(frozen=True)
class GenreYearSignal:
    """Affinity to the genres and release years of the user's recent items.

    The profile weighs the last ``window`` items by recency (``decay`` per step back). A candidate
    scores the profile's share of its genres (averaged over them) plus ``year_weight`` times
    ``exp(-|year - profile year| / year_scale)``.
    """

    catalog: Catalog
    name: str = "genre_year"
    description: str = "Top k items by affinity to the genres and years of the user's recent items."
    sparse: bool = False
    window: int = 10
    decay: float = 0.8
    year_weight: float = 1.0
    year_scale: float = 10.0

    def scores(self, user_id: str, history: Sequence[str], candidate_item_ids: Sequence[str]) -> dict[str, float]:
        genre_weights: Counter[str] = Counter()
        year_total = year_weight_sum = 0.0
        recent = [self.catalog.items[i] for i in history[-self.window:] if i in self.catalog.items]
        for age, item in enumerate(reversed(recent)):
            weight = self.decay ** age
            for genre in item.genres:
                genre_weights[genre] += weight / len(item.genres)
            if _year(item) is not None:
                year_total += weight * _year(item)
                year_weight_sum += weight
        genre_total = sum(genre_weights.values()) or 1.0
        profile_year = year_total / year_weight_sum if year_weight_sum else None
        scores = {}
        for item_id in candidate_item_ids:
            item = self.catalog.items.get(item_id)
            if item is None:
                scores[item_id] = 0.0
                continue
            genre = sum(genre_weights[g] for g in item.genres) / (genre_total * max(len(item.genres), 1))
            year = 0.0
            if profile_year is not None and _year(item) is not None:
                year = math.exp(-abs(_year(item) - profile_year) / self.year_scale)
            scores[item_id] = genre + self.year_weight * year
        return scores


def _year(item: Item) -> int | None:
    """The release year as a number (catalogs keep it as text; "" when unknown)."""
    year = item.year.strip()
    return int(year) if year.isdigit() else None


@dataclass(frozen=True)
class SequentialSignal:
    """A self-attentive sequential model's scores for the next item (``envs.signals.sasrec``)."""

    scorer: object
    name: str = "sequential"
    description: str = "Top k items a sequential model (SASRec) predicts next."
    sparse: bool = False

    def scores(self, user_id: str, history: Sequence[str], candidate_item_ids: Sequence[str]) -> dict[str, float]:
        return self.scorer.scores(history, candidate_item_ids)


def graph_signals(catalog: Catalog, graph: InteractionGraph) -> dict[str, Signal]:
    """The signals that need no fitting: ItemCF (whole and recent history), UserCF, popularity,
    genre/year affinity."""
    signals: list[Signal] = [
        ItemCFSignal(graph),
        UserCFSignal(graph),
        ItemCFSignal(graph, name="recent_cf", recent=RECENT_ITEMS),
        PopularitySignal(graph),
        GenreYearSignal(catalog),
    ]
    return {signal.name: signal for signal in signals}


def build_signals(catalog: Catalog, graph: InteractionGraph, *, sequential_scorer: object | None = None
                  ) -> dict[str, Signal]:
    """Every signal: the graph's, plus ``sequential`` when a fitted scorer is given."""
    signals = graph_signals(catalog, graph)
    if sequential_scorer is not None:
        signals["sequential"] = SequentialSignal(sequential_scorer)
    return signals


def short_scores(scores: Mapping[str, float], item_ids: Sequence[str]) -> list[int]:
    """Scores of ``item_ids`` scaled to 0-100 over all of ``scores`` (a short number a small model reads).

    >>> short_scores({"a": 2.0, "b": 1.0, "c": 0.0}, ["a", "b"])
    [100, 50]
    """
    finite = [s for s in scores.values() if math.isfinite(s)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    span = high - low
    return [round(100 * (scores[i] - low) / span) if span > 0 and math.isfinite(scores[i]) else 0
            for i in item_ids]
