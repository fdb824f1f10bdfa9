"""Datasets and the tasks built from them."""

from envs.data.amazon import find_amazon_files, load_amazon
from envs.data.jsonl import DataFormatError
from envs.data.kcore import k_core
from envs.data.movielens import DataNotFoundError, find_ml100k_dir, load_ml100k, read_atomic_file
from envs.data.redial import dialogue_tasks, load_redial, read_conversations, redial_catalog
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
    "DataFormatError",
    "DataNotFoundError",
    "build_tasks",
    "dialogue_tasks",
    "find_amazon_files",
    "find_ml100k_dir",
    "id_sort_key",
    "interaction_sort_key",
    "k_core",
    "leave_last_out",
    "load_amazon",
    "load_ml100k",
    "load_redial",
    "load_tasks",
    "read_atomic_file",
    "read_conversations",
    "redial_catalog",
    "save_tasks",
    "synthetic_catalog",
    "tasks_from_file",
    "training_interactions",
]
