"""Rating predictors that need no LLM (the bars a rating agent has to clear) and the rating metrics.

``global_mean`` predicts the training mean; ``user_bias``, ``item_bias`` and ``bias`` add a user's,
an item's or both offsets from it (Koren's baseline predictor: regularised means of the residuals,
items first), clipped to the rating scale.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from envs.types import Interaction, RatingTask

RATING_BASELINES = ("global_mean", "user_bias", "item_bias", "bias")


@dataclass(frozen=True)
class BiasModel:
    """``mean + user_offset[u] + item_offset[i]``, fitted on training ratings."""

    mean: float
    user_offset: dict[str, float]
    item_offset: dict[str, float]
    low: float
    high: float

    @staticmethod
    def fit(train: Sequence[Interaction], *, item_reg: float = 25.0, user_reg: float = 10.0) -> BiasModel:
        """Item offsets are the residual means shrunk by ``item_reg`` pseudo-ratings, then user
        offsets the means of what the item offsets leave, shrunk by ``user_reg``.

        >>> train = [Interaction("u", "a", 5, 0), Interaction("u", "b", 3, 1), Interaction("v", "a", 4, 2)]
        >>> model = BiasModel.fit(train, item_reg=0.0, user_reg=0.0)
        >>> model.mean, model.item_offset, model.user_offset
        (4.0, {'a': 0.5, 'b': -1.0}, {'u': 0.25, 'v': -0.5})
        """
        if not train:
            raise ValueError("fitting rating baselines needs at least one training rating")
        mean = sum(i.rating for i in train) / len(train)
        item_sums, item_counts = defaultdict(float), defaultdict(int)
        for interaction in train:
            item_sums[interaction.item_id] += interaction.rating - mean
            item_counts[interaction.item_id] += 1
        item_offset = {item: item_sums[item] / (item_reg + item_counts[item]) for item in item_sums}
        user_sums, user_counts = defaultdict(float), defaultdict(int)
        for interaction in train:
            user_sums[interaction.user_id] += interaction.rating - mean - item_offset[interaction.item_id]
            user_counts[interaction.user_id] += 1
        user_offset = {user: user_sums[user] / (user_reg + user_counts[user]) for user in user_sums}
        ratings = [i.rating for i in train]
        return BiasModel(mean, user_offset, item_offset, float(min(ratings)), float(max(ratings)))

    def predict(self, name: str, task: RatingTask) -> float:
        """Baseline ``name``'s prediction (one of ``RATING_BASELINES``); unseen users or items add 0."""
        if name not in RATING_BASELINES:
            raise ValueError(f"unknown rating baseline '{name}'; available: {list(RATING_BASELINES)}")
        user = self.user_offset.get(task.user_id, 0.0) if name in ("user_bias", "bias") else 0.0
        item = self.item_offset.get(task.item_id, 0.0) if name in ("item_bias", "bias") else 0.0
        return min(self.high, max(self.low, self.mean + user + item))


def rating_errors(predictions: Sequence[float | None], targets: Sequence[float], *, fallback: float) -> list[float]:
    """Each prediction minus its target, an invalid prediction (None) counted as ``fallback``.

    >>> rating_errors([4.0, None], [5.0, 3.0], fallback=3.5)
    [-1.0, 0.5]
    """
    return [(fallback if p is None else p) - t for p, t in zip(predictions, targets)]


def rating_metrics(predictions: Sequence[float | None], targets: Sequence[float], *, fallback: float) -> dict[str, float]:
    """RMSE and MAE over every task, an invalid prediction (None) scored as ``fallback`` (the
    training mean), and the rate of valid ones.

    >>> rating_metrics([4.0, None], [5.0, 3.0], fallback=3.5)
    {'rmse': 0.7906, 'mae': 0.75, 'valid_rate': 0.5}
    """
    if len(predictions) != len(targets) or not targets:
        raise ValueError(f"need one prediction per target, got {len(predictions)} for {len(targets)}")
    errors = rating_errors(predictions, targets, fallback=fallback)
    return {"rmse": round(math.sqrt(sum(e * e for e in errors) / len(errors)), 4),
            "mae": round(sum(abs(e) for e in errors) / len(errors), 4),
            "valid_rate": round(sum(p is not None for p in predictions) / len(predictions), 4)}
