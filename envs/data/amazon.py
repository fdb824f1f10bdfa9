"""Amazon reviews (the 2014, 2018 and 2023 releases) as a Catalog, filtered to its k-core.

The rules, in the order they apply:

* **Reviews**, one JSON object a line, plain or ``.gz``. Each row is read by the fields it has:
  2014/2018 rows by ``reviewerID``, ``asin``, ``overall``, ``unixReviewTime`` (seconds); 2023 rows
  by ``user_id``, ``parent_asin`` (``asin`` where it is absent), ``rating``, ``timestamp``
  (milliseconds, divided by 1000 so that every catalog's timestamps are in seconds).
* **Metadata**, one row per item, keyed by ``asin`` (2014/2018) or ``parent_asin`` (2023). The title
  is HTML-unescaped and stripped; the genres are ``categories`` (2014: lists of category paths,
  flattened; 2023: a list) or ``category`` (2018: a list), repeats dropped, order kept. The first row
  of an item wins. 2014 metadata lines written as Python literals (single quotes) are accepted.
* Reviews of items without a metadata row, or whose row has no title, are dropped: an agent
  recommends by title.
* A user's repeated reviews of one item keep the earliest (on equal times, the first in the file).
* The k-core filter (``envs.data.kcore.k_core``, k=5 by default) keeps users and items with at least
  k reviews, repeated until stable.

Ranking tasks then come from ``envs.data.build_tasks``, as for ml-100k.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from envs.data.jsonl import DataFormatError, read_json_lines, require
from envs.data.kcore import k_core
from envs.data.movielens import DataNotFoundError
from envs.types import Catalog, Interaction, Item, User

AMAZON_NAME = "amazon"
JSON_LINES_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
_REVIEW_FIELDS_2014 = ("reviewerID", "asin", "overall", "unixReviewTime")
_LAYOUT_HINT = ("point data.path at a folder holding one reviews file and one meta_<category> file "
                "(.json, .jsonl, optionally .gz), or at a reviews file with its meta_ file beside it")


def _is_json_lines(path: Path) -> bool:
    return path.is_file() and path.name.endswith(JSON_LINES_SUFFIXES)


def find_amazon_files(path: str | Path) -> tuple[Path, Path]:
    """The reviews file and the metadata file that ``path`` names.

    Args:
        path: A folder with exactly one ``meta_*`` JSON-lines file and one other (the reviews), or a
            reviews file, whose metadata is the sibling ``meta_<category>`` file: for
            ``reviews_Books_5.json.gz``, ``Books_5.json.gz`` or ``Books.jsonl`` that is
            ``meta_Books`` with the same suffix.

    Raises:
        DataNotFoundError: Nothing is at ``path``, or the files cannot be told apart; the message
            lists what it found.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if _is_json_lines(p))
        metas = [p for p in files if p.name.startswith("meta_")]
        reviews = [p for p in files if not p.name.startswith("meta_")]
        if len(metas) != 1 or len(reviews) != 1:
            raise DataNotFoundError(f"{path} holds reviews files {[p.name for p in reviews]} and metadata files "
                                    f"{[p.name for p in metas]}, not one of each; {_LAYOUT_HINT}")
        return reviews[0], metas[0]
    if not path.is_file():
        raise DataNotFoundError(f"Amazon reviews not found: {path}; {_LAYOUT_HINT}")
    suffix = next((s for s in sorted(JSON_LINES_SUFFIXES, key=len, reverse=True) if path.name.endswith(s)), "")
    category = path.name[: len(path.name) - len(suffix)].removeprefix("reviews_")
    tried = [path.with_name(f"meta_{name}{suffix}") for name in dict.fromkeys((category, category.removesuffix("_5")))]
    for meta in tried:
        if meta.is_file():
            return path, meta
    raise DataNotFoundError(f"no metadata beside {path}: tried {[p.name for p in tried]}; {_LAYOUT_HINT}")


def _as_text(value: Any, where: str, name: str) -> str:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise DataFormatError(f"{where}: {name} must be a string, got {value!r}")


def _as_number(value: Any, where: str, name: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise DataFormatError(f"{where}: {name} must be a number, got {value!r}")


def _review(row: dict[str, Any], where: str) -> Interaction:
    """One review row of either release as an Interaction (timestamps in seconds)."""
    if "reviewerID" in row:
        require(row, _REVIEW_FIELDS_2014, where, "2014/2018 review")
        return Interaction(user_id=_as_text(row["reviewerID"], where, "reviewerID"),
                           item_id=_as_text(row["asin"], where, "asin"),
                           rating=_as_number(row["overall"], where, "overall"),
                           timestamp=_as_number(row["unixReviewTime"], where, "unixReviewTime"))
    if "user_id" in row:
        item_field = "parent_asin" if row.get("parent_asin") is not None else "asin"
        require(row, ("user_id", item_field, "rating", "timestamp"), where, "2023 review")
        return Interaction(user_id=_as_text(row["user_id"], where, "user_id"),
                           item_id=_as_text(row[item_field], where, item_field),
                           rating=_as_number(row["rating"], where, "rating"),
                           timestamp=_as_number(row["timestamp"], where, "timestamp") / 1000.0)
    raise DataFormatError(f"{where}: neither a 2014/2018 review (needs {list(_REVIEW_FIELDS_2014)}) nor a 2023 "
                          f"review (needs ['user_id', 'parent_asin' or 'asin', 'rating', 'timestamp'])")


def _genres(row: dict[str, Any]) -> tuple[str, ...]:
    raw = row.get("categories") or row.get("category") or []
    names: list[str] = []
    for entry in raw if isinstance(raw, list) else []:
        names.extend(entry if isinstance(entry, list) else [entry])
    return tuple(dict.fromkeys(html.unescape(n).strip() for n in names if isinstance(n, str) and n.strip()))


def read_amazon_meta(path: str | Path) -> dict[str, Item]:
    """Items with a title from a metadata file (either release); rows without a title are skipped.

    Raises:
        DataNotFoundError: The file does not exist.
        DataFormatError: A line is not JSON (nor a Python literal) or has no ``asin``/``parent_asin``.
    """
    items: dict[str, Item] = {}
    for line_no, row in read_json_lines(path, python_literals=True):
        where = f"{path}:{line_no}"
        key = "parent_asin" if row.get("parent_asin") is not None else "asin"
        require(row, (key,), where, "metadata (2014/2018: asin; 2023: parent_asin)")
        item_id = _as_text(row[key], where, key)
        title = html.unescape(str(row.get("title") or "")).strip()
        if title and item_id not in items:
            items[item_id] = Item(item_id=item_id, title=title, genres=_genres(row))
    return items


def read_amazon_reviews(path: str | Path) -> list[Interaction]:
    """Every review row of a reviews file (either release), in file order, unfiltered.

    Raises:
        DataNotFoundError: The file does not exist.
        DataFormatError: A line is not JSON or lacks a field (the message names file, line and field).
    """
    return [_review(row, f"{path}:{line_no}") for line_no, row in read_json_lines(path)]


def _earliest_per_pair(interactions: list[Interaction]) -> list[Interaction]:
    first: dict[tuple[str, str], int] = {}
    for index, it in enumerate(interactions):
        key = (it.user_id, it.item_id)
        if key not in first or it.timestamp < interactions[first[key]].timestamp:
            first[key] = index
    keep = set(first.values())
    return [it for index, it in enumerate(interactions) if index in keep]


def load_amazon(path: str | Path, meta_path: str | Path | None = None, *, k: int = 5,
                name: str = AMAZON_NAME) -> Catalog:
    """Load Amazon reviews and their metadata as a Catalog (the rules are in the module docstring).

    Args:
        path: The reviews file, or a folder (see ``find_amazon_files``).
        meta_path: The metadata file; by default found from ``path``.
        k: The k-core's minimum reviews per user and per item.
        name: The catalog's name (task ids start with it).

    Returns:
        Users (no attributes), items (title, genres) and interactions (rating 1-5, time in seconds)
        of the k-core.

    Raises:
        DataNotFoundError: A file is missing.
        DataFormatError: A line is not JSON or lacks a field; the message names file and line.
        ValueError: Nothing is left after the filters.
    """
    if meta_path is None:
        path, meta_path = find_amazon_files(path)
    items = read_amazon_meta(meta_path)
    reviews = read_amazon_reviews(path)
    titled = [it for it in reviews if it.item_id in items]
    interactions = k_core(_earliest_per_pair(titled), k)
    if not interactions:
        raise ValueError(f"no reviews of {path} are left: {len(reviews)} read, {len(titled)} of them of items with "
                         f"a title in {meta_path}, none in the {k}-core; lower k or check that the files match")
    kept_items = {it.item_id for it in interactions}
    return Catalog(name=name,
                   users={user_id: User(user_id) for user_id in dict.fromkeys(it.user_id for it in interactions)},
                   items={item_id: item for item_id, item in items.items() if item_id in kept_items},
                   interactions=interactions)
