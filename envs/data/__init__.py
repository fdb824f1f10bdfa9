"""Datasets and the tasks built from them."""

from envs.data.movielens import DataNotFoundError, find_ml100k_dir, load_ml100k, read_atomic_file
from envs.data.splits import (
    build_tasks,
    id_sort_key,
    interaction_sort_key,
    leave_last_out,
    load_tasks,
    save_tasks,
    tasks_from_file,
    training_interactions,
)
from envs.data.synthetic import synthetic_catalog

__all__ = [
    "DataNotFoundError",
    "build_tasks",
    "find_ml100k_dir",
    "id_sort_key",
    "interaction_sort_key",
    "leave_last_out",
    "load_ml100k",
    "load_tasks",
    "read_atomic_file",
    "save_tasks",
    "synthetic_catalog",
    "tasks_from_file",
    "training_interactions",
]
