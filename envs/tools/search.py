"""BM25 search over item text (title, year, genres) with the ``bm25s`` library."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np

from envs.tools.items import per_catalog
from envs.types import Catalog, Item


def item_text(item: Item) -> str:
    """What search matches an item on: its title, year and genres.

    >>> item_text(Item("1", "Toy Story", "1995", ("Animation", "Comedy")))
    'Toy Story 1995 Animation Comedy'
    """
    return " ".join([item.title, item.year, *item.genres]).strip()


def import_bm25s():
    """``bm25s`` on its numpy backend, imported without numba (here, not at ``import envs``, which stays
    fast). bm25s imports numba whenever it is installed (vLLM installs it), and numba's llvmlite
    objects, once in ``sys.modules``, break the kernel scan vLLM runs when an engine starts in the
    same process (``AttributeError: '_lib_fn_wrapper' object has no attribute 'get'``)."""
    if "bm25s" in sys.modules or "numba" in sys.modules:
        import bm25s

        return bm25s
    sys.modules["numba"] = None  # bm25s then takes numba as missing
    try:
        import bm25s
    finally:
        del sys.modules["numba"]
    return bm25s


class ItemSearch:
    """A BM25 index of a catalog's items (English stopwords removed, no stemming).

    Build it once per catalog with ``item_search(catalog)``; a query then costs one tokenization and
    one sparse lookup.
    """

    def __init__(self, catalog: Catalog):
        bm25s = import_bm25s()
        self.item_ids = list(catalog.items)
        self._row = {item_id: row for row, item_id in enumerate(self.item_ids)}
        self._tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        corpus = self._tokenizer.tokenize(
            [item_text(catalog.items[i]) for i in self.item_ids], show_progress=False, return_as="tuple"
        )
        self._retriever = bm25s.BM25()
        self._retriever.index(corpus, show_progress=False)
        # Out-of-vocabulary query words map to the empty token; they must match nothing.
        self._empty_token = self._tokenizer.get_vocab_dict().get("")

    def search(
        self, query: str, k: int, *, within: Sequence[str] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` best-matching items as ``(item_id, BM25 score)``, best first, positive scores only.

        Args:
            query: Free text; words unknown to the catalog are ignored.
            k: How many items at most.
            within: Search only these item ids (unknown ones are ignored); None searches all.
        """
        [tokens] = self._tokenizer.tokenize(
            [query], update_vocab=False, show_progress=False, return_as="ids"
        )
        tokens = [token for token in tokens if token != self._empty_token]
        if not tokens or k <= 0:
            return []
        mask = None
        if within is not None:
            mask = np.zeros(len(self.item_ids), dtype=np.float32)
            mask[[self._row[i] for i in within if i in self._row]] = 1.0
        rows, scores = self._retriever.retrieve(
            [tokens], k=min(k, len(self.item_ids)), show_progress=False, n_threads=0, weight_mask=mask
        )
        return [(self.item_ids[row], float(score)) for row, score in zip(rows[0], scores[0]) if score > 0]


item_search = per_catalog(ItemSearch)
"""The catalog's search index, built on first use and then shared by every toolbox."""
