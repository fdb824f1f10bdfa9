"""Teacher trajectories at scale: Ray actors play episodes, keep the ones that hit, write a dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.data.splits import sample_in_order
from envs.rating_baselines import BiasModel
from envs.signals.signals import SIGNAL_NAMES
from envs.tools import Toolbox
from envs.registry import env_class
from envs.types import DialogueTask, RankingTask, RatingTask, Task, Trajectory
from rollout.actors import map_actors_chunked, spawn
from rollout.episode import EpisodeRequest, run_episodes
from rollout.worker import EnvSpec
from teachers.cf_expert import CFExpertTeacher
from teachers.crs_policies import RuleBasedCRSPolicy
from teachers.rating_teacher import RATING_TEACHER_TOOLS, BiasRater
from teachers.fusion import borda_points, fit_weights, hr_avg, target_ranks


@dataclass(frozen=True)
class TeacherConfig:
    """Which teacher plays, and which of its episodes become training data."""

    tools: list[str] = field(default_factory=lambda: ["user_history", "item_cf", "user_cf"])
    """Tools the teacher calls: user_info, user_history and signal tools (envs.signals.SIGNAL_NAMES)."""
    num_recommend: int = 5
    """Ids in the teacher's final recommendation."""
    fit_weights: bool = True
    """Fit the signals' fusion weights on a validation split of the training tasks (False: plain Borda)."""
    validation_tasks: int = 0
    """Training tasks in that validation split (a seeded sample; 0 = all); held-out tasks never are."""
    fusion_margin: float = 0.0
    """Validation ``hr_avg`` by which the fusion must beat the best single signal, else that signal
    alone ranks (and the student, copying one list, has nothing left for RL to improve: on ml-100k
    every curriculum task then succeeds 0 or 8 times in 8)."""
    keep_hit_at: int = 1
    """Keep episodes whose target ranks at or above this (MARS keeps hits @1)."""
    num_workers: int = 2
    """Ray actors playing episodes in parallel (0 plays in-process)."""


def make_teacher(env_spec: EnvSpec, tools: Sequence[str], num_recommend: int,
                 weights: Mapping[str, float] | None = None):
    """The heuristic teacher of the env's kind of task: the CF expert ranks (MARS), the rule-based
    conversational policy converses (MACRS's acts), the bias rater rates (after reading the item's
    ratings when ``tools`` and the env offer ``item_history``); ``num_recommend`` and the fusion
    ``weights`` are the CF expert's."""
    kind = env_class(env_spec.config.env_id).task_kind
    if kind == DialogueTask.kind:
        return RuleBasedCRSPolicy(env_spec.catalog)
    if kind == RatingTask.kind:
        offered = [t for t in tools if t in RATING_TEACHER_TOOLS and t in env_spec.config.tools]
        return BiasRater(BiasModel.fit(env_spec.graph.interactions()), tools=offered)
    if kind != RankingTask.kind:
        raise ValueError(f"no teacher plays {env_spec.config.env_id} yet; teachers play SequentialRec-v0, "
                         "RatingPrediction-v0 and ConversationalRec-v0")
    return CFExpertTeacher(env_spec.catalog, tools=tools, num_recommend=num_recommend, weights=weights)


class TeacherWorker:
    """Plays teacher episodes in one process (a Ray actor in the pipeline)."""

    def __init__(self, env_spec: EnvSpec, tools: Sequence[str], num_recommend: int,
                 weights: Mapping[str, float] | None = None):
        self.env_spec = env_spec
        self.teacher = make_teacher(env_spec, tools, num_recommend, weights)

    def play(self, tasks: Sequence[Task]) -> list[Trajectory]:
        """One teacher episode per task, in order (the episode loop the student uses, too)."""
        envs = [self.env_spec.make() for _ in tasks]
        requests = [EpisodeRequest(task, group_id=task.task_id) for task in tasks]
        return run_episodes(self.teacher, envs, requests, source=f"teacher:{self.teacher.role}")


def play_teacher(env_spec: EnvSpec, tasks: Sequence[RankingTask], config: TeacherConfig,
                 weights: Mapping[str, float] | None = None) -> list[Trajectory]:
    """All teacher episodes for ``tasks``, in task order, across ``config.num_workers`` actors."""
    args = (env_spec, config.tools, config.num_recommend, weights)
    if config.num_workers <= 0:
        return TeacherWorker(*args).play(tasks)
    workers = spawn(TeacherWorker, config.num_workers, *args)
    return map_actors_chunked(workers, TeacherWorker.play, tasks, chunk_size=32 * config.num_workers, desc="teacher episodes")


def validation_split(train_tasks: Sequence[RankingTask], size: int, *, seed: int) -> list[RankingTask]:
    """A seeded sample of ``size`` training tasks (all for 0), in their order: where fusion weights
    are fitted. Training tasks hold out an interaction before each user's held-out one, so no
    held-out target is ever in it."""
    return sample_in_order(train_tasks, size, seed=seed)


def fit_fusion(env_spec: EnvSpec, tasks: Sequence[RankingTask], tools: Sequence[str], *,
               margin: float = 0.0) -> dict:
    """Fusion weights of the teacher's signal tools, fitted on ``tasks`` from what the tools return.

    Returns:
        ``weights`` by tool, and the validation ``hr_avg`` of the fusion and of each signal alone.
    """
    signal_tools = [t for t in tools if t in SIGNAL_NAMES]
    points, targets = [], []
    for task in tasks:
        toolbox = Toolbox(env_spec.catalog, env_spec.graph, task=task, signals=env_spec.signals)
        rankings = {name: toolbox.call(name, {"user_id": task.user_id}).data or [] for name in signal_tools}
        points.append(borda_points(rankings, signal_tools, task.candidate_item_ids))
        targets.append(task.candidate_item_ids.index(task.target_item_id))
    points_array, target_index = np.stack(points), np.array(targets)
    weights, fused = fit_weights(points_array, target_index, margin=margin)
    single = {name: hr_avg(target_ranks(points_array, target_index, np.eye(len(signal_tools))[i]))
              for i, name in enumerate(signal_tools)}
    return {"weights": dict(zip(signal_tools, weights.tolist())), "validation_tasks": len(tasks),
            "validation_hr_avg": {"fused": fused, **single}}


def keep_hits(trajectories: Sequence[Trajectory], *, keep_hit_at: int) -> list[Trajectory]:
    """Episodes with a valid format whose target ranked within ``keep_hit_at`` (a conversation: that
    the user accepted)."""
    return [t for t in trajectories if t.format_valid and succeeded(t, keep_hit_at)]


def succeeded(trajectory: Trajectory, rank_at: int) -> bool:
    """A ranking that put the target within ``rank_at``, a conversation the user accepted, or a
    rating that hit (``Trajectory.success_rank``)."""
    return trajectory.success_rank is not None and trajectory.success_rank <= rank_at


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
        "success_rate": sum(succeeded(t, 1) for t in all_trajectories) / total,
        "format_rate": sum(t.format_valid for t in all_trajectories) / total,
    }

