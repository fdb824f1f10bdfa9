"""The environment bundle: what veRL's workers need to play our environments and serve our tools.

An export writes the catalog, each split's tasks (and, when the ``sequential`` tool is offered, the
SASRec fit that split's env reads) and the env settings into one folder; ``load_bundle`` rebuilds
the same environments there as ``launch.stages.env_spec`` builds here: each split's interaction
graph holds the interactions before every one of that split's targets, never a target itself.
Both sides import this module: it needs only ``envs`` (and torch for a SASRec fit).
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from envs.config import EnvConfig
from envs.data import load_tasks, save_tasks, training_interactions
from envs.registry import make_env
from envs.signals.signals import Signal, build_signals
from envs.tools import InteractionGraph, Toolbox
from envs.types import Catalog, Interaction, Item, Task, User

CATALOG_FILE = "catalog.json.gz"
SETTINGS_FILE = "env.json"
TASKS_FILE = "tasks.jsonl"
SASREC_FOLDER = "sasrec"


def write_bundle(folder: Path, *, catalog: Catalog, splits: Mapping[str, Sequence[Task]], env: EnvConfig,
                 reward_weights: Mapping[str, float], max_new_tokens: int,
                 sequential: Mapping[str, Any] | None = None) -> Path:
    """Writes the bundle ``load_bundle`` reads.

    Args:
        folder: Where to write (created).
        catalog: Users, items and every interaction (each split's graph is cut from them on load).
        splits: Tasks by split name (``train``, ``val``).
        env: The environment and its budgets.
        reward_weights: The episode reward's weights by reward name.
        max_new_tokens: Tokens the policy may write per turn.
        sequential: Each split's fitted ``SequentialScorer``, when the ``sequential`` tool is offered.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows = {
        "name": catalog.name,
        "users": [[user.user_id, [list(pair) for pair in user.attributes]] for user in catalog.users.values()],
        "items": [[item.item_id, item.title, item.year, list(item.genres)] for item in catalog.items.values()],
        "interactions": [[i.user_id, i.item_id, i.rating, i.timestamp] for i in catalog.interactions],
    }
    with gzip.open(folder / CATALOG_FILE, "wt", encoding="utf-8") as handle:
        json.dump(rows, handle)
    settings = {"env": asdict(env), "reward_weights": dict(reward_weights), "max_new_tokens": max_new_tokens,
                "splits": sorted(splits)}
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    for name, tasks in splits.items():
        save_tasks(tasks, folder / name / TASKS_FILE)
        if sequential and name in sequential:
            sequential[name].save(folder / name / SASREC_FOLDER)
    return folder


def read_catalog(path: Path) -> Catalog:
    """The catalog ``write_bundle`` wrote."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = json.load(handle)
    users = {user_id: User(user_id, tuple(tuple(pair) for pair in attributes)) for user_id, attributes in rows["users"]}
    items = {item_id: Item(item_id, title, year, tuple(genres)) for item_id, title, year, genres in rows["items"]}
    interactions = [Interaction(user_id, item_id, float(rating), float(timestamp))
                    for user_id, item_id, rating, timestamp in rows["interactions"]]
    return Catalog(rows["name"], users, items, interactions)


@dataclass
class Split:
    """One split's tasks and the graph and signals its environments and tools read."""

    name: str
    tasks: dict[str, Task]
    graph: InteractionGraph
    signals: dict[str, Signal]

    def task(self, task_id: str) -> Task:
        """The task ``task_id``.

        Raises:
            KeyError: If the split has no such task (the parquet row and the bundle disagree).
        """
        if task_id not in self.tasks:
            raise KeyError(f"task {task_id!r} is not in the bundle's {self.name} split; the dataset row and the "
                           f"bundle come from different exports: export again (`recrl export verl`).")
        return self.tasks[task_id]


@dataclass
class EnvBundle:
    """A loaded bundle: builds our environments and toolboxes over the exported data."""

    folder: Path
    catalog: Catalog
    env: EnvConfig
    reward_weights: dict[str, float]
    max_new_tokens: int
    split_names: list[str]
    _splits: dict[str, Split] = field(default_factory=dict)

    def split(self, name: str) -> Split:
        """The split ``name``, built on first use (its graph, and its SASRec fit when exported)."""
        if name not in self._splits:
            if name not in self.split_names:
                raise KeyError(f"the bundle in {self.folder} has splits {self.split_names}, not {name!r}")
            tasks = load_tasks(self.folder / name / TASKS_FILE)
            graph = InteractionGraph.from_interactions(training_interactions(self.catalog.interactions, tasks))
            scorer = None
            if (self.folder / name / SASREC_FOLDER).is_dir():
                from envs.signals.sasrec import SequentialScorer

                scorer = SequentialScorer.load(self.folder / name / SASREC_FOLDER)
            signals = build_signals(self.catalog, graph, sequential_scorer=scorer)
            self._splits[name] = Split(name, {task.task_id: task for task in tasks}, graph, signals)
        return self._splits[name]

    def make_env(self, split: str, *, count_tokens: Callable[[str], int]):
        """A fresh environment over ``split`` (as ``rollout.worker.EnvSpec.make`` builds one), its token
        budget counted by ``count_tokens`` (the policy's tokenizer)."""
        part, env = self.split(split), self.env
        return make_env(env.env_id, catalog=self.catalog, graph=part.graph, signals=part.signals,
                        tool_names=list(env.tools), max_turns=env.max_turns,
                        max_episode_tokens=env.max_episode_tokens, history_in_prompt=env.history_in_prompt,
                        count_tokens=count_tokens, **({"plan_turns": True} if env.plan_turns else {}))

    def toolbox(self, split: str, task_id: str | None) -> Toolbox:
        """The tools bound to one task of ``split`` (or to none, without ``task_id``)."""
        part = self.split(split)
        task = part.task(task_id) if task_id else None
        return Toolbox(self.catalog, part.graph, task=task, signals=part.signals)


@functools.lru_cache(maxsize=4)
def load_bundle(folder: str | Path) -> EnvBundle:
    """The bundle in ``folder``, loaded once per process.

    Raises:
        FileNotFoundError: If ``folder`` holds no bundle.
    """
    folder = Path(folder)
    if not (folder / SETTINGS_FILE).is_file() or not (folder / CATALOG_FILE).is_file():
        raise FileNotFoundError(f"no recrl environment bundle in {folder} ({SETTINGS_FILE} and {CATALOG_FILE} "
                                "expected): write one with `recrl export verl --out DIR` and point the veRL "
                                "tool and agent loop configs at DIR/env.")
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    return EnvBundle(folder=folder, catalog=read_catalog(folder / CATALOG_FILE), env=EnvConfig(**settings["env"]),
                     reward_weights=dict(settings["reward_weights"]), max_new_tokens=int(settings["max_new_tokens"]),
                     split_names=list(settings["splits"]))
