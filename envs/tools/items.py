"""Item text and the per-catalog lookups the tools share, each built once per catalog."""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import TypeVar

from envs.types import Catalog, Item

T = TypeVar("T")


def item_label(item: Item) -> str:
    """``Kolya (1996) [Comedy]``: title, then year and genres when known.

    >>> item_label(Item("242", "Kolya", "1996", ("Comedy",)))
    'Kolya (1996) [Comedy]'
    """
    label = item.title
    if item.year:
        label += f" ({item.year})"
    if item.genres:
        label += f" [{', '.join(item.genres)}]"
    return label


def per_catalog(build: Callable[[Catalog], T]) -> Callable[[Catalog], T]:
    """``build(catalog)`` computed on first use and kept while that catalog object lives.

    Tools are rebuilt for every task, so anything derived from the whole catalog (a search index,
    an interaction index) is cached here instead; a loaded catalog is never mutated.
    """
    cache: dict[int, T] = {}

    @functools.wraps(build)
    def cached(catalog: Catalog) -> T:
        key = id(catalog)
        if key not in cache:
            cache[key] = build(catalog)
            weakref.finalize(catalog, cache.pop, key, None)
        return cache[key]

    return cached


@per_catalog
def first_interaction_times(catalog: Catalog) -> dict[tuple[str, str], float]:
    """When each user first interacted with each item, by ``(user_id, item_id)``."""
    times: dict[tuple[str, str], float] = {}
    for interaction in catalog.interactions:
        pair = (interaction.user_id, interaction.item_id)
        if pair not in times or interaction.timestamp < times[pair]:
            times[pair] = interaction.timestamp
    return times
