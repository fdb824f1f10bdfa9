"""MovieLens-100K, read from the atomic files that ship inside the recbole wheel.

recbole itself is never imported (it pulls in torch and friends); we only ask Python where the
package lives and read its bundled ``dataset_example/ml-100k`` folder.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from envs.types import Catalog, Interaction, Item, User

ML100K_NAME = "ml-100k"
_INSTALL_HINT = "pip install --no-deps recbole==1.2.1"
_USER_ATTRIBUTES = ("age", "gender", "occupation")


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not where recrl looks for them."""


def find_ml100k_dir() -> Path:
    """Locate the ml-100k atomic files bundled with the recbole wheel, without importing it.

    Returns:
        The folder holding ``ml-100k.user``, ``ml-100k.item`` and ``ml-100k.inter``.

    Raises:
        DataNotFoundError: recbole is not installed or its copy lacks the files; the message
            names the install command.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            "ml-100k is read from the recbole wheel, but recbole is not installed. "
            f"Fix: {_INSTALL_HINT}"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / ML100K_NAME
    missing = [
        suffix
        for suffix in ("user", "item", "inter")
        if not (folder / f"{ML100K_NAME}.{suffix}").is_file()
    ]
    if missing:
        raise DataNotFoundError(
            f"ml-100k files {missing} are missing from {folder}. "
            f"Fix: reinstall with {_INSTALL_HINT}"
        )
    return folder


def read_atomic_file(path: Path) -> tuple[list[str], list[list[str]]]:
    """Read one RecBole atomic file (tab-separated, typed header such as ``user_id:token``).

    Args:
        path: The file to read.

    Returns:
        The column names without their types, and the rows as lists of strings.

    Raises:
        DataNotFoundError: The file does not exist.
    """
    if not path.is_file():
        raise DataNotFoundError(f"atomic file not found: {path}")
    with path.open(encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n").split("\t")
        columns = [field.split(":", 1)[0] for field in header]
        rows = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    return columns, rows


def _column(columns: list[str], name: str, path: Path) -> int:
    """Index of ``name`` in a header, with an error that names the file."""
    try:
        return columns.index(name)
    except ValueError:
        raise ValueError(f"{path} has no column {name!r}; its columns are {columns}") from None


def _read_users(path: Path) -> dict[str, User]:
    columns, rows = read_atomic_file(path)
    user_col = _column(columns, "user_id", path)
    attribute_cols = [(name, _column(columns, name, path)) for name in _USER_ATTRIBUTES]
    return {
        row[user_col]: User(
            user_id=row[user_col],
            attributes=tuple((name, row[col]) for name, col in attribute_cols),
        )
        for row in rows
    }


def _read_items(path: Path) -> dict[str, Item]:
    columns, rows = read_atomic_file(path)
    item_col = _column(columns, "item_id", path)
    title_col = _column(columns, "movie_title", path)
    year_col = _column(columns, "release_year", path)
    genre_col = _column(columns, "class", path)
    return {
        row[item_col]: Item(
            item_id=row[item_col],
            title=row[title_col],
            year=row[year_col],
            # token_seq fields are space-separated; ml-100k genres contain no spaces.
            genres=tuple(row[genre_col].split()),
        )
        for row in rows
    }


def _read_interactions(path: Path) -> list[Interaction]:
    columns, rows = read_atomic_file(path)
    user_col = _column(columns, "user_id", path)
    item_col = _column(columns, "item_id", path)
    rating_col = _column(columns, "rating", path)
    time_col = _column(columns, "timestamp", path)
    return [
        Interaction(
            user_id=row[user_col],
            item_id=row[item_col],
            rating=float(row[rating_col]),
            timestamp=float(row[time_col]),
        )
        for row in rows
    ]


def load_ml100k(path: Path | None = None) -> Catalog:
    """Load MovieLens-100K as a Catalog named ``"ml-100k"``.

    Args:
        path: Folder with the ``ml-100k.*`` atomic files; defaults to the recbole wheel's copy.

    Returns:
        943 users (age, gender, occupation), 1682 items and 100000 interactions.

    Raises:
        DataNotFoundError: The files cannot be found.
    """
    folder = Path(path) if path is not None else find_ml100k_dir()
    return Catalog(
        name=ML100K_NAME,
        users=_read_users(folder / f"{ML100K_NAME}.user"),
        items=_read_items(folder / f"{ML100K_NAME}.item"),
        interactions=_read_interactions(folder / f"{ML100K_NAME}.inter"),
    )
