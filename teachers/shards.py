"""Teacher episodes on disk in fixed shards, so a killed run resumes without replaying finished ones.

The tasks are cut into shards of ``shard_size``; each shard's trajectories (every episode, kept or
not) are one JSON-lines file, ``shard-NNNNN.jsonl``, written to a temporary file in the same folder
and renamed into place: a shard file that exists is complete. ``manifest.json`` ties the files to
the tasks, the shard size and the settings that decide the episodes; a run with other ones is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envs.types import Task, Trajectory
from rollout.actors import Remote

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TEMP_SUFFIX = ".tmp"
"""Ends the name of a shard being written (a kill may leave one; it is ignored and removed)."""


def shard_name(index: int) -> str:
    """The file of shard ``index``.

    >>> shard_name(3)
    'shard-00003.jsonl'
    """
    return f"shard-{index:05d}.jsonl"


def tasks_digest(tasks: Sequence[Task]) -> str:
    """A digest of the tasks, in order, with everything they hold (not only their ids)."""
    text = json.dumps([task.to_json() for task in tasks], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def write_atomically(path: Path, text: str) -> None:
    """Writes ``text`` to a temporary file beside ``path``, syncs it and renames it to ``path``, so
    ``path`` either does not exist or holds all of ``text``."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class TrajectoryShards:
    """The shard files of one task list in ``folder``: which exist, writing one, reading them back."""

    folder: Path
    """Where the shard files and the manifest are."""
    shards: tuple[tuple[Task, ...], ...]
    """The tasks of each shard, in order."""

    @staticmethod
    def open(folder: str | Path, tasks: Sequence[Task], *, shard_size: int,
             settings: Mapping[str, Any]) -> "TrajectoryShards":
        """The shards of ``tasks`` in ``folder``: a new folder gets a manifest; an existing one is
        resumed only if its manifest has the same tasks, shard size and ``settings`` (what decides
        the episodes besides the tasks; JSON-serializable).

        Raises:
            ValueError: ``shard_size`` is not positive, or ``folder`` holds shards of other tasks or
                settings (it names the folder and what differs).
        """
        if shard_size < 1:
            raise ValueError(f"teacher.shard_size={shard_size}: a shard holds at least one task")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        manifest = {"num_tasks": len(tasks), "tasks_digest": tasks_digest(tasks), "shard_size": shard_size,
                    "settings": json.loads(json.dumps(settings, sort_keys=True))}
        manifest["fingerprint"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
        path = folder / MANIFEST
        if path.is_file():
            check_manifest(json.loads(path.read_text()), manifest, folder=folder)
        elif any(folder.glob("shard-*.jsonl")):
            raise ValueError(f"{folder} holds teacher shards but no {MANIFEST}, so they cannot be tied to these "
                             "tasks: delete that folder to start over")
        else:
            write_atomically(path, json.dumps(manifest, indent=2))
        for temp in folder.glob(f".*{TEMP_SUFFIX}"):  # what a killed writer left
            temp.unlink()
        shards = tuple(tuple(tasks[start : start + shard_size]) for start in range(0, len(tasks), shard_size))
        return TrajectoryShards(folder, shards)

    def path(self, index: int) -> Path:
        return self.folder / shard_name(index)

    def missing(self) -> list[int]:
        """Shards without a file yet, in order."""
        return [index for index in range(len(self.shards)) if not self.path(index).is_file()]

    def write(self, index: int, trajectories: Sequence[Trajectory]) -> None:
        """Saves shard ``index``'s trajectories (one per task, in task order) atomically."""
        if [t.task_id for t in trajectories] != [task.task_id for task in self.shards[index]]:
            raise ValueError(f"shard {index} got trajectories of other tasks than its own")
        write_atomically(self.path(index), "".join(json.dumps(t.to_row()) + "\n" for t in trajectories))

    def read(self, index: int) -> list[Trajectory]:
        """Shard ``index``'s trajectories, as written."""
        path = self.path(index)
        trajectories = [Trajectory.from_row(json.loads(line)) for line in path.read_text().splitlines() if line]
        if [t.task_id for t in trajectories] != [task.task_id for task in self.shards[index]]:
            raise ValueError(f"{path} holds episodes of other tasks than shard {index}'s: "
                             f"delete {self.folder} to start over")
        return trajectories

    def read_all(self) -> list[Trajectory]:
        """Every shard's trajectories, in task order (all shards must be written)."""
        return [trajectory for index in range(len(self.shards)) for trajectory in self.read(index)]


def check_manifest(saved: Mapping[str, Any], wanted: Mapping[str, Any], *, folder: Path) -> None:
    """Refuses to resume shards written for other tasks or settings.

    Raises:
        ValueError: naming ``folder``, what differs, and the fix.
    """
    if saved.get("fingerprint") == wanted["fingerprint"]:
        return
    differ = [key for key in ("tasks_digest", "shard_size") if saved.get(key) != wanted[key]]
    saved_settings = saved.get("settings", {})
    differ += [f"settings.{key}" for key in sorted({*saved_settings, *wanted["settings"]})
               if saved_settings.get(key) != wanted["settings"].get(key)]
    differ = [name.replace("tasks_digest", "tasks") for name in differ]
    raise ValueError(f"the teacher shards in {folder} were played with other {', '.join(differ) or 'settings'} "
                     f"than this run's: pass the same tasks and settings to resume them, or delete {folder} "
                     "to start over")


def play_as_ready(workers: Sequence[Any], method: Callable[..., list], parts: Mapping[int, Sequence[Any]]
                  ) -> Iterator[tuple[int, list]]:
    """Yields ``(key, worker.method(part))`` for every part as it finishes.

    Ray actors (``Remote``) each get the next part as soon as they are free, so a slow part holds up
    one worker, not all; plain objects (one is enough) play the parts in order in this process. A
    part whose actor died goes to another; when none is left, a RuntimeError says so.
    """
    pending = deque(parts)
    if not any(isinstance(worker, Remote) for worker in workers):
        for key in pending:
            yield key, getattr(workers[0], method.__name__)(parts[key])
        return
    import ray
    from ray.exceptions import RayActorError

    running: dict[Any, tuple[Remote, int]] = {}
    idle = deque(workers)

    def feed() -> None:
        while pending and idle:
            worker, key = idle.popleft(), pending.popleft()
            running[worker.submit(method, parts[key])] = (worker, key)

    feed()
    while running:
        [ref], _ = ray.wait(list(running), num_returns=1)
        worker, key = running.pop(ref)
        try:
            result = ray.get(ref)
        except RayActorError as error:
            log.warning("a %s worker died (%s); its part goes to another", method.__name__, error)
            pending.appendleft(key)
            feed()
            if not running:
                raise RuntimeError(f"every {method.__name__} worker died; last error: {error}") from error
            continue
        idle.append(worker)
        feed()
        yield key, result
