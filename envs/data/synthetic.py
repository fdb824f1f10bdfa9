"""A tiny catalog with planted cluster structure, for fast tests and easy sanity-check training.

Users and items each belong to one of ``num_clusters`` clusters. About 90% of a user's
interactions are items of the user's own cluster, and within a cluster some items are far more
popular than others (Zipf-like weights), so both collaborative filtering and popularity
have signal to find, while a random ranker has none.
"""

from __future__ import annotations

import numpy as np

from envs.types import Catalog, Interaction, Item, User

SYNTHETIC_NAME = "synthetic"
_OWN_CLUSTER_SHARE = 0.9
_START_TIME = 1_000_000_000.0
# Zipf-like skew within a cluster: strong enough that popularity alone beats random.
_POPULARITY_EXPONENT = 1.5


def _popularity_weights(count: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, count + 1) ** _POPULARITY_EXPONENT
    return weights / weights.sum()


def synthetic_catalog(
    *,
    num_users: int = 60,
    num_items: int = 80,
    num_clusters: int = 4,
    interactions_per_user: int = 12,
    seed: int = 0,
) -> Catalog:
    """Build a seeded catalog with planted clusters.

    Args:
        num_users: Users, ids ``"1"..str(num_users)``, assigned to clusters round-robin.
        num_items: Items, ids ``"1"..str(num_items)``, titled ``"Item <id>"``, genre
            ``"genre<cluster>"``, assigned to clusters round-robin.
        num_clusters: Number of clusters.
        interactions_per_user: Distinct items per user, with increasing timestamps.
        seed: Seed; the same arguments always give the same catalog.

    Returns:
        A Catalog named ``"synthetic"``; each user has attribute ``("cluster", "<c>")``.

    Raises:
        ValueError: The sizes cannot be satisfied (e.g. a cluster has too few items).
    """
    if num_clusters < 2:
        raise ValueError(f"num_clusters must be >= 2, got {num_clusters}")
    own_count = round(_OWN_CLUSTER_SHARE * interactions_per_user)
    other_count = interactions_per_user - own_count
    smallest_cluster = num_items // num_clusters
    if smallest_cluster < own_count or num_items - smallest_cluster - 1 < other_count:
        raise ValueError(
            f"{num_items} items in {num_clusters} clusters are too few for "
            f"{interactions_per_user} interactions per user; raise num_items"
        )
    rng = np.random.default_rng(seed)
    item_ids = [str(i) for i in range(1, num_items + 1)]
    item_cluster = [index % num_clusters for index in range(num_items)]
    items = {
        item_id: Item(item_id=item_id, title=f"Item {item_id}", genres=(f"genre{cluster}",))
        for item_id, cluster in zip(item_ids, item_cluster)
    }
    cluster_members = [
        np.flatnonzero(np.array(item_cluster) == cluster) for cluster in range(num_clusters)
    ]

    users: dict[str, User] = {}
    interactions: list[Interaction] = []
    for user_index in range(num_users):
        user_id = str(user_index + 1)
        cluster = user_index % num_clusters
        users[user_id] = User(user_id=user_id, attributes=(("cluster", str(cluster)),))
        own = cluster_members[cluster]
        others = np.concatenate([m for c, m in enumerate(cluster_members) if c != cluster])
        chosen = np.concatenate(
            [
                rng.choice(own, size=own_count, replace=False, p=_popularity_weights(len(own))),
                rng.choice(
                    others, size=other_count, replace=False, p=_popularity_weights(len(others))
                ),
            ]
        )
        rng.shuffle(chosen)
        ratings = rng.integers(3, 6, size=len(chosen))
        for item_index, rating in zip(chosen, ratings):
            interactions.append(
                Interaction(
                    user_id=user_id,
                    item_id=item_ids[item_index],
                    rating=float(rating),
                    # One global clock: every user's sequence increases.
                    timestamp=_START_TIME + 3600.0 * len(interactions),
                )
            )
    return Catalog(name=SYNTHETIC_NAME, users=users, items=items, interactions=interactions)
