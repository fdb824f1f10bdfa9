"""Teacher trajectories at scale: Ray actors play episodes, keep the ones that hit, write a dataset."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from envs.types import RankingTask, Trajectory
from rollout.actors import map_actors_chunked, spawn
from rollout.episode import EpisodeRequest, run_episodes
from rollout.worker import EnvSpec
from teachers.cf_expert import CFExpertTeacher


@dataclass(frozen=True)
class TeacherConfig:
    """Which teacher plays, and which of its episodes become training data."""

    tools: list[str] = field(default_factory=lambda: ["user_history", "item_cf", "user_cf"])
    """Tools the teacher calls (user_info, user_history, item_cf, user_cf)."""
    num_recommend: int = 5
    """Ids in the teacher's final recommendation."""
    genre_weight: float = 0.0
    """Borda points for genre overlap with the user's recent items."""
    keep_hit_at: int = 1
    """Keep episodes whose target ranks at or above this (MARS keeps hits @1)."""
    num_workers: int = 2
    """Ray actors playing episodes in parallel (0 plays in-process)."""


class TeacherWorker:
    """Plays teacher episodes in one process (a Ray actor in the pipeline)."""

    def __init__(self, env_spec: EnvSpec, tools: Sequence[str], num_recommend: int, genre_weight: float):
        self.env_spec = env_spec
        self.teacher = CFExpertTeacher(env_spec.catalog, tools=tools, num_recommend=num_recommend,
                                       genre_weight=genre_weight)

    def play(self, tasks: Sequence[RankingTask]) -> list[Trajectory]:
        """One teacher episode per task, in order (the episode loop the student uses, too)."""
        envs = [self.env_spec.make() for _ in tasks]
        requests = [EpisodeRequest(task, group_id=task.task_id) for task in tasks]
        return run_episodes(self.teacher, envs, requests, source=f"teacher:{self.teacher.role}")


def play_teacher(env_spec: EnvSpec, tasks: Sequence[RankingTask], config: TeacherConfig) -> list[Trajectory]:
    """All teacher episodes for ``tasks``, in task order, across ``config.num_workers`` actors."""
    args = (env_spec, config.tools, config.num_recommend, config.genre_weight)
    if config.num_workers <= 0:
        return TeacherWorker(*args).play(tasks)
    workers = spawn(TeacherWorker, config.num_workers, *args)
    return map_actors_chunked(workers, TeacherWorker.play, tasks, chunk_size=32 * config.num_workers, desc="teacher episodes")


def keep_hits(trajectories: Sequence[Trajectory], *, keep_hit_at: int) -> list[Trajectory]:
    """Episodes with a valid format whose target ranked within ``keep_hit_at``."""
    return [t for t in trajectories if t.format_valid and t.rank is not None and t.rank <= keep_hit_at]


def write_dataset(trajectories: Sequence[Trajectory], path: str | Path) -> None:
    """Writes trajectories as a HF dataset folder (``datasets.load_from_disk`` reads it back)."""
    import datasets

    datasets.Dataset.from_list([t.to_row() for t in trajectories]).save_to_disk(str(path))


def read_dataset(path: str | Path) -> list[Trajectory]:
    import datasets

    if not Path(path).is_dir():
        raise FileNotFoundError(f"no trajectory dataset at {path}: run `recrl teach` first")
    return [Trajectory.from_row(row) for row in datasets.load_from_disk(str(path))]


def teacher_stats(all_trajectories: Sequence[Trajectory], kept: Sequence[Trajectory]) -> dict[str, float]:
    total = max(len(all_trajectories), 1)
    return {
        "episodes": len(all_trajectories),
        "kept": len(kept),
        "hit@1_rate": sum(t.rank == 1 for t in all_trajectories) / total,
        "format_rate": sum(t.format_valid for t in all_trajectories) / total,
    }

