"""The user-item interaction graph behind the CF tools and the kNN baselines.

A binary user x item matrix. Item-item cosine similarities are computed once per graph, on the
first query that needs them, so a CF tool call is a lookup and a sum; user-user similarities
depend on the history a query brings, so they are one gather over the matrix per call. Matrices
stay dense while they are small (MovieLens scale) and sparse beyond ``DENSE_LIMIT`` entries.
Users and items are indexed in ``id_sort_key`` order and every top-k uses a stable sort, so ties
always break by id. ``from_interactions`` also keeps who rated each item, when and how, for
``item_raters``.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cached_property
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp

from envs.data.splits import id_sort_key, interaction_sort_key
from envs.types import Interaction


DENSE_LIMIT = 16_000_000
"""Largest matrix (rows x columns) kept dense: 128 MB of float64; ml-100k's item-item is 2.8M."""


class Rating(NamedTuple):
    """One user's (first) interaction with an item."""

    user_id: str
    rating: float
    timestamp: float


def _compact(matrix: sp.spmatrix) -> np.ndarray | sp.spmatrix:
    """``matrix`` as a dense array when it has at most ``DENSE_LIMIT`` entries (fast gathers)."""
    rows, columns = matrix.shape
    return matrix.toarray() if rows * columns <= DENSE_LIMIT else matrix


def _block(matrix: np.ndarray | sp.spmatrix, rows: Sequence[int], columns: Sequence[int]) -> np.ndarray:
    """``matrix[rows][:, columns]`` as a dense array, for dense and sparse matrices alike."""
    rows, columns = np.asarray(rows, dtype=np.intp), np.asarray(columns, dtype=np.intp)
    if sp.issparse(matrix):
        return matrix[rows][:, columns].toarray()
    return matrix[np.ix_(rows, columns)]


def _top(ids: Sequence[str], scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The k highest positive scores as (id, score); ties keep the order of ``ids``."""
    order = np.argsort(-scores, kind="stable")
    return [(ids[i], float(scores[i])) for i in order[:k] if scores[i] > 0]


class InteractionGraph:
    """Binary user x item interactions with cosine item-item and user-user similarity.

    Build it from training interactions only, so that held-out targets never leak into scores.
    """

    def __init__(
        self,
        user_sequences: dict[str, list[str]],
        *,
        item_ratings: dict[str, list[Rating]] | None = None,
    ):
        """Use ``from_interactions``; this takes each user's distinct items, oldest first, and
        optionally each item's ratings, most recent first."""
        self.user_ids = sorted(user_sequences, key=id_sort_key)
        self.item_ids = sorted(
            {item for items in user_sequences.values() for item in items}, key=id_sort_key
        )
        self._user_index = {user_id: i for i, user_id in enumerate(self.user_ids)}
        self._item_index = {item_id: i for i, item_id in enumerate(self.item_ids)}
        self._sequences = user_sequences
        rows = [self._user_index[u] for u, items in user_sequences.items() for _ in items]
        cols = [self._item_index[i] for items in user_sequences.values() for i in items]
        matrix = sp.csr_matrix(
            (np.ones(len(rows)), (rows, cols)), shape=(len(self.user_ids), len(self.item_ids))
        )
        self._by_item = matrix.tocsc()
        self._item_popularity = np.asarray(matrix.sum(axis=0)).ravel()
        self._user_norms = np.sqrt(np.asarray(matrix.sum(axis=1)).ravel())
        self._item_ratings = item_ratings or {}

    @classmethod
    def from_interactions(cls, interactions: Iterable[Interaction]) -> "InteractionGraph":
        """Build the graph; repeated user-item pairs count once."""
        ordered = sorted(interactions, key=interaction_sort_key)
        sequences: dict[str, list[str]] = defaultdict(list)
        ratings: dict[str, list[Rating]] = defaultdict(list)
        seen: set[tuple[str, str]] = set()
        for interaction in ordered:
            pair = (interaction.user_id, interaction.item_id)
            if pair not in seen:
                seen.add(pair)
                sequences[interaction.user_id].append(interaction.item_id)
                ratings[interaction.item_id].append(
                    Rating(interaction.user_id, interaction.rating, interaction.timestamp)
                )
        # Most recent first; equal times by user id, so the order never depends on input order.
        for item_ratings in ratings.values():
            item_ratings.sort(key=lambda rating: id_sort_key(rating.user_id))
            item_ratings.sort(key=lambda rating: rating.timestamp, reverse=True)
        return cls(dict(sequences), item_ratings=dict(ratings))

    def has_user(self, user_id: str) -> bool:
        """Whether the user has at least one interaction in the graph."""
        return user_id in self._user_index

    def has_item(self, item_id: str) -> bool:
        """Whether the item has at least one interaction in the graph."""
        return item_id in self._item_index

    def user_items(self, user_id: str) -> list[str]:
        """The user's distinct items, oldest first; empty for an unknown user."""
        return list(self._sequences.get(user_id, []))

    def item_raters(self, item_id: str) -> list[Rating]:
        """Who rated the item, how and when, most recent first (empty when the graph was built
        without ratings, or for an unknown item)."""
        return list(self._item_ratings.get(item_id, []))

    def interactions(self) -> list[Interaction]:
        """The ratings the graph holds, as interactions, item by item (empty when it was built without ratings)."""
        return [Interaction(rating.user_id, item_id, rating.rating, rating.timestamp)
                for item_id, ratings in self._item_ratings.items() for rating in ratings]

    def popularity(self, item_id: str) -> int:
        """Number of users who interacted with the item (0 if unknown)."""
        index = self._item_index.get(item_id)
        return 0 if index is None else int(self._item_popularity[index])

    def _item_columns(self, item_ids: Iterable[str]) -> list[int]:
        return [self._item_index[i] for i in dict.fromkeys(item_ids) if i in self._item_index]

    @cached_property
    def _item_cosine(self) -> np.ndarray | sp.spmatrix:
        """Item x item cosine similarity, computed once (on first use) for every later query."""
        co_counts = (self._by_item.T @ self._by_item).tocoo()
        popularity = self._item_popularity
        values = co_counts.data / np.sqrt(popularity[co_counts.row] * popularity[co_counts.col])
        return _compact(sp.csr_matrix((values, (co_counts.row, co_counts.col)), shape=co_counts.shape))

    @cached_property
    def _item_user(self) -> np.ndarray | sp.spmatrix:
        """The binary item x user matrix: UserCF gathers an item's users as one row."""
        return _compact(self._by_item.T.tocsr())

    def _item_similarities(self, item_ids: Sequence[str], reference: list[int]) -> np.ndarray:
        """Cosine similarity of each of ``item_ids`` (rows; unknown -> 0) with each reference."""
        result = np.zeros((len(item_ids), len(reference)))
        known = [(row, self._item_index[i]) for row, i in enumerate(item_ids) if self.has_item(i)]
        if not known or not reference:
            return result
        rows, columns = zip(*known)
        result[list(rows)] = _block(self._item_cosine, columns, reference)
        return result

    def item_cf_scores(
        self, history: Sequence[str], candidate_item_ids: Sequence[str]
    ) -> dict[str, float]:
        """ItemCF: each candidate's summed cosine similarity to the history items.

        Args:
            history: Item ids the user interacted with; unknown or repeated ones are skipped.
            candidate_item_ids: Items to score; unknown ones score 0.

        Returns:
            Score by candidate id.
        """
        candidates = list(dict.fromkeys(candidate_item_ids))
        similarities = self._item_similarities(candidates, self._item_columns(history))
        return dict(zip(candidates, similarities.sum(axis=1).tolist()))

    def _user_similarities(self, columns: list[int]) -> np.ndarray:
        """Cosine similarity of every graph user with the binary vector of the item ``columns``."""
        if not columns:
            return np.zeros(len(self.user_ids))
        dots = np.asarray(self._item_user[columns].sum(axis=0)).ravel()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(dots / (self._user_norms * np.sqrt(len(columns))))

    def _user_columns(self, user_id: str, history: Sequence[str] | None) -> list[int]:
        return self._item_columns(self.user_items(user_id) if history is None else history)

    def user_cf_scores(
        self,
        user_id: str,
        candidate_item_ids: Sequence[str],
        *,
        num_neighbours: int = 50,
        history: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """UserCF: per candidate, the summed similarity of the nearest users who chose it.

        Args:
            user_id: The user; excluded from its own neighbours.
            candidate_item_ids: Items to score; unknown ones score 0.
            num_neighbours: How many most cosine-similar users vote.
            history: Items that define the user's vector instead of the graph's row (use it
                for a task's history, or for a user the graph does not know).

        Returns:
            Score by candidate id.
        """
        candidates = list(dict.fromkeys(candidate_item_ids))
        similarities = self._user_similarities(self._user_columns(user_id, history))
        own_index = self._user_index.get(user_id)
        if own_index is not None:
            similarities[own_index] = 0.0
        order = np.argsort(-similarities, kind="stable")[:num_neighbours]
        neighbours = order[similarities[order] > 0]
        scores = dict.fromkeys(candidates, 0.0)
        known = [c for c in candidates if self.has_item(c)]
        if len(neighbours) and known:
            columns = [self._item_index[c] for c in known]
            votes = _block(self._item_user, columns, neighbours) @ similarities[neighbours]
            scores.update(zip(known, votes.tolist()))
        return scores

    def item_neighbours(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """The k items most cosine-similar to ``item_id`` (positive scores only; [] if unknown)."""
        if not self.has_item(item_id):
            return []
        index = self._item_index[item_id]
        similarities = _block(self._item_cosine, [index], range(len(self.item_ids)))[0]
        similarities[index] = 0.0
        return _top(self.item_ids, similarities, k)

    def user_neighbours(self, user_id: str, k: int) -> list[tuple[str, float]]:
        """The k users most cosine-similar to ``user_id`` (positive scores only; [] if unknown)."""
        if not self.has_user(user_id):
            return []
        similarities = self._user_similarities(self._user_columns(user_id, None))
        similarities[self._user_index[user_id]] = 0.0
        return _top(self.user_ids, similarities, k)
