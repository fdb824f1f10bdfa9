"""The user-item interaction graph behind the CF tools and the kNN baselines.

A binary user x item sparse matrix. Similarities are cosine, computed on the fly for just the
rows and columns a query touches, which is cheap at MovieLens scale. Users and items are indexed
in ``id_sort_key`` order and every top-k uses a stable sort, so ties always break by id.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from envs.data.splits import id_sort_key, interaction_sort_key
from envs.types import Interaction


def _top(ids: Sequence[str], scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    """The k highest positive scores as (id, score); ties keep the order of ``ids``."""
    order = np.argsort(-scores, kind="stable")
    return [(ids[i], float(scores[i])) for i in order[:k] if scores[i] > 0]


class InteractionGraph:
    """Binary user x item interactions with cosine item-item and user-user similarity.

    Build it from training interactions only, so that held-out targets never leak into scores.
    """

    def __init__(self, user_sequences: dict[str, list[str]]):
        """Use ``from_interactions``; this takes each user's distinct items, oldest first."""
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
        self._by_user = matrix
        self._by_item = matrix.tocsc()
        self._item_popularity = np.asarray(matrix.sum(axis=0)).ravel()
        self._user_norms = np.sqrt(np.asarray(matrix.sum(axis=1)).ravel())

    @classmethod
    def from_interactions(cls, interactions: Iterable[Interaction]) -> "InteractionGraph":
        """Build the graph; repeated user-item pairs count once."""
        ordered = sorted(interactions, key=interaction_sort_key)
        sequences: dict[str, list[str]] = defaultdict(list)
        seen: set[tuple[str, str]] = set()
        for interaction in ordered:
            pair = (interaction.user_id, interaction.item_id)
            if pair not in seen:
                seen.add(pair)
                sequences[interaction.user_id].append(interaction.item_id)
        return cls(dict(sequences))

    def has_user(self, user_id: str) -> bool:
        """Whether the user has at least one interaction in the graph."""
        return user_id in self._user_index

    def has_item(self, item_id: str) -> bool:
        """Whether the item has at least one interaction in the graph."""
        return item_id in self._item_index

    def user_items(self, user_id: str) -> list[str]:
        """The user's distinct items, oldest first; empty for an unknown user."""
        return list(self._sequences.get(user_id, []))

    def popularity(self, item_id: str) -> int:
        """Number of users who interacted with the item (0 if unknown)."""
        index = self._item_index.get(item_id)
        return 0 if index is None else int(self._item_popularity[index])

    def _item_columns(self, item_ids: Iterable[str]) -> list[int]:
        return [self._item_index[i] for i in dict.fromkeys(item_ids) if i in self._item_index]

    def _item_similarities(self, item_ids: Sequence[str], reference: list[int]) -> np.ndarray:
        """Cosine similarity of each of ``item_ids`` (rows; unknown -> 0) with each reference."""
        result = np.zeros((len(item_ids), len(reference)))
        known = [(row, self._item_index[i]) for row, i in enumerate(item_ids) if self.has_item(i)]
        if not known or not reference:
            return result
        rows, columns = zip(*known)
        co_counts = (self._by_item[:, list(columns)].T @ self._by_item[:, reference]).toarray()
        popularity = self._item_popularity
        norms = np.sqrt(np.outer(popularity[list(columns)], popularity[reference]))
        result[list(rows)] = co_counts / norms
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

    def _user_similarities(self, vector: np.ndarray) -> np.ndarray:
        """Cosine similarity of every graph user with a binary item vector."""
        vector_norm = np.sqrt(vector.sum())
        if vector_norm == 0:
            return np.zeros(len(self.user_ids))
        dots = self._by_user @ vector
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(dots / (self._user_norms * vector_norm))

    def _user_vector(self, user_id: str, history: Sequence[str] | None) -> np.ndarray:
        vector = np.zeros(len(self.item_ids))
        items = self.user_items(user_id) if history is None else history
        vector[self._item_columns(items)] = 1.0
        return vector

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
        similarities = self._user_similarities(self._user_vector(user_id, history))
        own_index = self._user_index.get(user_id)
        if own_index is not None:
            similarities[own_index] = 0.0
        order = np.argsort(-similarities, kind="stable")[:num_neighbours]
        neighbours = order[similarities[order] > 0]
        scores = dict.fromkeys(candidates, 0.0)
        known = [c for c in candidates if self.has_item(c)]
        if len(neighbours) and known:
            columns = [self._item_index[c] for c in known]
            votes = self._by_user[neighbours][:, columns].T @ similarities[neighbours]
            scores.update(zip(known, np.asarray(votes).ravel().tolist()))
        return scores

    def item_neighbours(self, item_id: str, k: int) -> list[tuple[str, float]]:
        """The k items most cosine-similar to ``item_id`` (positive scores only; [] if unknown)."""
        if not self.has_item(item_id):
            return []
        similarities = self._item_similarities(self.item_ids, [self._item_index[item_id]])[:, 0]
        similarities[self._item_index[item_id]] = 0.0
        return _top(self.item_ids, similarities, k)

    def user_neighbours(self, user_id: str, k: int) -> list[tuple[str, float]]:
        """The k users most cosine-similar to ``user_id`` (positive scores only; [] if unknown)."""
        if not self.has_user(user_id):
            return []
        similarities = self._user_similarities(self._user_vector(user_id, None))
        similarities[self._user_index[user_id]] = 0.0
        return _top(self.user_ids, similarities, k)
