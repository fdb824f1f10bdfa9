"""Turn a catalog into ranking tasks: leave-last-out splits, task files and training data.

Every function here orders a user's interactions the same way: by timestamp, ties broken by
item id (digit ids compared as numbers), so splits are reproducible whatever the input order.
"""

from __future__ import annotations

import json
import random
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

import numpy as np

from envs.types import Catalog, Interaction, RankingTask, Task, task_from_json

T = TypeVar("T")


def id_sort_key(identifier: str) -> tuple[int, int, str]:
    """Sort key for ids: digit ids numerically ("9" < "10"), then other ids as text.

    >>> sorted(["10", "b", "9", "a"], key=id_sort_key)
    ['9', '10', 'a', 'b']
    """
    if identifier.isascii() and identifier.isdigit():
        return (0, int(identifier), identifier)
    return (1, 0, identifier)


def interaction_sort_key(interaction: Interaction) -> tuple[float, tuple[int, int, str]]:
    """Sort key of an interaction within its user's sequence: (timestamp, item id)."""
    return (interaction.timestamp, id_sort_key(interaction.item_id))


def _indices_by_user(interactions: Sequence[Interaction]) -> dict[str, list[int]]:
    """Positions of each user's interactions, ordered by ``interaction_sort_key``."""
    by_user: dict[str, list[int]] = defaultdict(list)
    for index, interaction in enumerate(interactions):
        by_user[interaction.user_id].append(index)
    for indices in by_user.values():
        indices.sort(key=lambda index: interaction_sort_key(interactions[index]))
    return by_user


def _target_position(sequence: Sequence[Interaction], min_rating: float | None) -> int | None:
    """Position of the held-out target in a user's ordered sequence: the last interaction (rated at
    least ``min_rating``, when given) with at least one interaction before it; None if there is none."""
    for position in range(len(sequence) - 1, 0, -1):
        if min_rating is None or sequence[position].rating >= min_rating:
            return position
    return None


def leave_last_out(
    interactions: Sequence[Interaction], *, min_rating: float | None = None
) -> tuple[list[Interaction], dict[str, Interaction]]:
    """Hold out each user's last interaction (the last one rated at least ``min_rating``).

    Args:
        interactions: All interactions, in any order.
        min_rating: None holds out the last interaction whatever its rating. Otherwise the target
            is the last interaction rated at least this; the user's interactions after it (rated
            lower) leave the train split with it, so train holds only what came before the target.

    Returns:
        The train interactions (input order kept) and the held-out interaction by user id.
        Users without a target (fewer than two interactions, or no interaction rated at least
        ``min_rating`` after their first) keep everything in train.
    """
    held_out: dict[str, Interaction] = {}
    dropped: set[int] = set()
    for user_id, indices in _indices_by_user(interactions).items():
        position = _target_position([interactions[index] for index in indices], min_rating)
        if position is not None:
            held_out[user_id] = interactions[indices[position]]
            dropped.update(indices[position:])
    train = [it for index, it in enumerate(interactions) if index not in dropped]
    return train, held_out


def _last(history: Sequence[str], max_history: int) -> tuple[str, ...]:
    if max_history < 0:
        raise ValueError(f"max_history must be >= 0, got {max_history}")
    return tuple(history[-max_history:]) if max_history else ()


def user_rng(seed: int, key: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and ``key`` (a user or task id)."""
    return np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])


def sample_in_order(items: Sequence[T], size: int, *, seed: int) -> list[T]:
    """A seeded sample of ``size`` of ``items`` in their order; all of them for ``size`` <= 0 or >= len.

    >>> sample_in_order(["a", "b", "c"], 0, seed=0)
    ['a', 'b', 'c']
    >>> len(sample_in_order(range(10), 3, seed=0))
    3
    """
    if size <= 0 or size >= len(items):
        return list(items)
    chosen = set(random.Random(seed).sample(range(len(items)), size))
    return [item for i, item in enumerate(items) if i in chosen]


def build_tasks(
    catalog: Catalog,
    *,
    num_negatives: int = 19,
    seed: int = 0,
    max_history: int = 50,
    exclude: Sequence[Interaction] = (),
    min_rating: float | None = None,
) -> list[RankingTask]:
    """One leave-last-out ranking task per user who has a held-out item.

    Args:
        catalog: The dataset.
        num_negatives: Negatives per task, sampled uniformly without replacement from the
            catalog items the user never interacted with.
        seed: Base seed; each user's sampling depends only on (seed, user id).
        max_history: Keep at most this many of the most recent train items as history.
        exclude: More interactions whose items are never sampled as that user's negatives
            (e.g. the full data, when ``catalog`` holds only a training split).
        min_rating: None (the default) holds out each user's last interaction. Otherwise the
            target is the user's last interaction rated at least this (MACRec's protocol: 4),
            the history is what came before it, and a user with no such interaction after their
            first gets no task; see ``leave_last_out``.

    Returns:
        Tasks sorted by user id, with ``num_negatives + 1`` shuffled candidates each.

    Raises:
        ValueError: A user has fewer unseen items than ``num_negatives``.
    """
    train, held_out = leave_last_out(catalog.interactions, min_rating=min_rating)
    item_ids = sorted(catalog.items, key=id_sort_key)
    item_index = {item_id: index for index, item_id in enumerate(item_ids)}
    seen_by_user: dict[str, set[str]] = defaultdict(set)
    for interaction in (*catalog.interactions, *exclude):
        seen_by_user[interaction.user_id].add(interaction.item_id)
    train_indices = _indices_by_user(train)

    tasks = []
    for user_id in sorted(held_out, key=id_sort_key):
        target = held_out[user_id].item_id
        history = [
            train[index].item_id
            for index in train_indices[user_id]
            if train[index].item_id != target
        ]
        unseen = np.ones(len(item_ids), dtype=bool)
        unseen[[item_index[i] for i in seen_by_user[user_id] if i in item_index]] = False
        pool = np.flatnonzero(unseen)
        if len(pool) < num_negatives:
            raise ValueError(
                f"user {user_id!r} has only {len(pool)} unseen items in {catalog.name!r}, "
                f"fewer than num_negatives={num_negatives}; lower num_negatives"
            )
        rng = user_rng(seed, user_id)
        negatives = [item_ids[i] for i in rng.choice(pool, size=num_negatives, replace=False)]
        candidates = [target, *negatives]
        rng.shuffle(candidates)
        tasks.append(
            RankingTask(
                task_id=f"{catalog.name}:{user_id}",
                user_id=user_id,
                history=_last(history, max_history),
                candidate_item_ids=tuple(candidates),
                target_item_id=target,
            )
        )
    return tasks


def save_tasks(tasks: Iterable[RankingTask], path: str | Path) -> None:
    """Write tasks as JSON lines (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps(task.to_json()) + "\n")


def load_tasks(path: str | Path) -> list[Task]:
    """Read tasks written by ``save_tasks``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A line is not a valid task (the message names file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"task file not found: {path}; write one with save_tasks(build_tasks(catalog), path)"
        )
    tasks = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                tasks.append(task_from_json(json.loads(line)))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}:{line_no}: not a valid task ({error!r})") from None
    return tasks


def _as_id(value: Any, where: str, field: str) -> str:
    # bool is an int subclass, but `true` is never meant as an id.
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise ValueError(f"{where}: {field} must be a string or integer id, got {value!r}")


def _parse_task_line(
    line: str, where: str, catalog: Catalog
) -> tuple[str, list[str], str]:
    """Validate one line of a user task file; returns (user id, candidates, target)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: malformed JSON ({error.msg}): {line.strip()[:80]!r}") from None
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {row!r}")
    missing = [k for k in ("user_id", "candidate_item_ids", "target_item_id") if k not in row]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    user_id = _as_id(row["user_id"], where, "user_id")
    if user_id not in catalog.users:
        raise ValueError(f"{where}: unknown user id {user_id!r} in {catalog.name!r}")
    raw_candidates = row["candidate_item_ids"]
    if not isinstance(raw_candidates, list):
        raise ValueError(f"{where}: candidate_item_ids must be a list, got {raw_candidates!r}")
    candidates = [_as_id(value, where, "candidate_item_ids") for value in raw_candidates]
    target = _as_id(row["target_item_id"], where, "target_item_id")
    for item_id in [*candidates, target]:
        if item_id not in catalog.items:
            raise ValueError(f"{where}: unknown item id {item_id!r} in {catalog.name!r}")
    if len(candidates) < 2:
        raise ValueError(f"{where}: need at least 2 candidates, got {candidates}")
    duplicates = sorted({c for c in candidates if candidates.count(c) > 1}, key=id_sort_key)
    if duplicates:
        raise ValueError(f"{where}: duplicate candidate item id(s) {duplicates}")
    if target not in candidates:
        raise ValueError(f"{where}: target item id {target!r} is not among the candidates")
    return user_id, candidates, target


def _cutoff(user_sequence: list[Interaction], target_item_id: str) -> int:
    """Position of the user's first interaction with the target, or the sequence length.

    The first interaction counts so that the target never appears in the history or, through
    ``training_interactions``, in the data a model learns from.
    """
    for position, interaction in enumerate(user_sequence):
        if interaction.item_id == target_item_id:
            return position
    return len(user_sequence)


def tasks_from_file(
    path: str | Path, catalog: Catalog, *, max_history: int = 50
) -> list[RankingTask]:
    """Read user-supplied tasks, one JSON object per line.

    Each line looks like ``{"user_id": "196", "candidate_item_ids": [...],
    "target_item_id": "242"}``; ids may be strings or integers. The history is every item the
    user interacted with strictly before the target (all of them if the user never did).

    Args:
        path: The JSON-lines file.
        catalog: The dataset the ids refer to.
        max_history: Keep at most this many of the most recent history items.

    Returns:
        Tasks in file order, with ``task_id = f"{catalog.name}:{user_id}:{line_no}"``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: A line is invalid; the message names the file, line and offending value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    sequences = {
        user_id: [catalog.interactions[index] for index in indices]
        for user_id, indices in _indices_by_user(catalog.interactions).items()
    }
    tasks = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            user_id, candidates, target = _parse_task_line(line, f"{path}:{line_no}", catalog)
            sequence = sequences.get(user_id, [])
            history = [it.item_id for it in sequence[: _cutoff(sequence, target)]]
            tasks.append(
                RankingTask(
                    task_id=f"{catalog.name}:{user_id}:{line_no}",
                    user_id=user_id,
                    history=_last(history, max_history),
                    candidate_item_ids=tuple(candidates),
                    target_item_id=target,
                )
            )
    return tasks


def training_interactions(
    interactions: Sequence[Interaction], tasks: Iterable[RankingTask]
) -> list[Interaction]:
    """The interactions a model may learn from when it is scored on ``tasks``.

    For each task's user, the target interaction and everything after it are dropped (with
    several tasks for one user, the earliest target counts). For tasks from ``build_tasks`` on
    data without repeated user-item pairs this equals ``leave_last_out``'s train split.

    Args:
        interactions: All interactions, in any order.
        tasks: The evaluation tasks.

    Returns:
        The remaining interactions, input order kept.
    """
    targets_by_user: dict[str, set[str]] = defaultdict(set)
    for task in tasks:
        targets_by_user[task.user_id].add(task.target_item_id)
    dropped: set[int] = set()
    for user_id, indices in _indices_by_user(interactions).items():
        targets = targets_by_user.get(user_id)
        if not targets:
            continue
        for position, index in enumerate(indices):
            if interactions[index].item_id in targets:
                dropped.update(indices[position:])
                break
    return [it for index, it in enumerate(interactions) if index not in dropped]
