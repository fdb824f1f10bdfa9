"""Teacher trajectories at scale: Ray actors play episodes shard by shard, the ones that hit become a
dataset, and a card says what was kept and why the rest failed."""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.data.splits import sample_in_order
from envs.rating_baselines import BiasModel
from envs.signals.signals import SIGNAL_NAMES
from envs.tools import Toolbox
from envs.registry import env_class
from envs.types import DialogueTask, RankingTask, RatingTask, Task, Trajectory
from rollout.actors import release, spawn
from rollout.episode import EpisodeRequest, run_episodes
from rollout.worker import EnvSpec
from teachers.backends import CONNECTION_FIELDS, BackendConfig
from teachers.cf_expert import CFExpertTeacher
from teachers.crs_policies import RuleBasedCRSPolicy
from teachers.rating_teacher import RATING_TEACHER_TOOLS, BiasRater
from teachers.fusion import borda_points, fit_weights, hr_avg, target_ranks
from teachers.shards import TrajectoryShards, play_as_ready
from teachers.systems.roles import prompts_digest


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
    num_tasks: int = 0
    """Training tasks the teacher plays (a seeded sample, in their order; 0 = all): an LLM teacher
    plays about 0.2 episodes/s on a 2-core laptop, so all 943 ml-100k users take over an hour."""
    keep_hit_at: int = 1
    """Keep episodes whose target ranks at or above this (MARS keeps hits @1)."""
    num_workers: int = 2
    """Ray actors playing episodes in parallel (0 plays in-process)."""
    shard_size: int = 64
    """Tasks per shard: each shard's episodes are saved as it finishes, and a killed run replays only
    the shards not saved yet (changing it starts the episodes over)."""
    system: str = "heuristic"
    """heuristic (no LLM: the CF expert ranks, the bias rater rates, the rule-based policy converses),
    or a multi-agent LLM system over ``backend``: mars, macrec, macrs or alpha_umi (teachers.systems)."""
    backend: BackendConfig = field(default_factory=BackendConfig)
    """Where an LLM system's model runs (each worker opens its own; an openai endpoint is shared)."""
    concurrency: int = 8
    """Episodes an LLM system plays at once in each worker (their calls are batched)."""
    reflection_strategy: str = "reflexion"
    """macrec: its reflector between trials (none, last_trial, reflexion, last_trial_and_reflexion)."""

    def __post_init__(self):
        from teachers.systems import SYSTEMS

        if self.system not in ("heuristic", *SYSTEMS):
            raise ValueError(f"unknown teacher.system '{self.system}'; use heuristic or one of {', '.join(SYSTEMS)}")
        if self.num_tasks < 0:
            raise ValueError(f"teacher.num_tasks must be >= 0 (0 plays every training task), got {self.num_tasks}")


def make_teacher(env_spec: EnvSpec, config: TeacherConfig, weights: Mapping[str, float] | None = None):
    """The teacher ``config.system`` names for the env's kind of task. The heuristic teachers: the CF
    expert ranks (MARS's roles by rules, fusing the signals with ``weights``), the rule-based
    conversational policy converses (MACRS's acts), the bias rater rates (after reading the item's
    ratings when ``config.tools`` and the env offer ``item_history``)."""
    if config.system != "heuristic":
        from teachers.backends import make_backend
        from teachers.systems import make_system

        return make_system(config.system, env_spec, make_backend(config.backend), config.backend.params,
                           tools=config.tools, num_recommend=config.num_recommend, concurrency=config.concurrency,
                           reflection_strategy=config.reflection_strategy)
    kind = env_class(env_spec.config.env_id).task_kind
    if kind == DialogueTask.kind:
        return RuleBasedCRSPolicy(env_spec.catalog)
    if kind == RatingTask.kind:
        offered = [t for t in config.tools if t in RATING_TEACHER_TOOLS and t in env_spec.config.tools]
        return BiasRater(BiasModel.fit(env_spec.graph.interactions()), tools=offered)
    if kind != RankingTask.kind:
        raise ValueError(f"no teacher plays {env_spec.config.env_id} yet; teachers play SequentialRec-v0, "
                         "RatingPrediction-v0 and ConversationalRec-v0")
    return CFExpertTeacher(env_spec.catalog, tools=config.tools, num_recommend=config.num_recommend, weights=weights)


class TeacherWorker:
    """Plays teacher episodes in one process (a Ray actor in the pipeline)."""

    def __init__(self, env_spec: EnvSpec, config: TeacherConfig, weights: Mapping[str, float] | None = None):
        self.env_spec = env_spec
        self.teacher = make_teacher(env_spec, config, weights)

    def play(self, tasks: Sequence[Task]) -> list[Trajectory]:
        """One teacher episode per task, in order (the episode loop the student uses, too)."""
        envs = [self.env_spec.make() for _ in tasks]
        requests = [EpisodeRequest(task, group_id=task.task_id) for task in tasks]
        return run_episodes(self.teacher, envs, requests, source=f"teacher:{self.teacher.role}")


def teacher_settings(config: TeacherConfig, weights: Mapping[str, float] | None) -> dict[str, Any]:
    """What decides a teacher's episodes besides its tasks and env (not how many workers play them):
    for an LLM system, its model, sampling and role prompts too."""
    settings = {"tools": list(config.tools), "num_recommend": config.num_recommend,
                "weights": None if weights is None else dict(weights), "system": config.system,
                "backend": None if config.system == "heuristic" else answer_settings(config.backend),
                "reflection_strategy": config.reflection_strategy if config.system == "macrec" else None}
    if config.system != "heuristic":
        settings["prompts"] = prompts_digest(config.system)
    return settings


def answer_settings(backend: BackendConfig) -> dict[str, Any]:
    """What decides a backend's answers: its model and sampling, not the endpoint's address or how
    many requests are in flight (a run resumed on another port or concurrency keeps its shards)."""
    return {name: value for name, value in asdict(backend).items() if name not in CONNECTION_FIELDS}


def play_teacher(env_spec: EnvSpec, tasks: Sequence[Task], config: TeacherConfig,
                 weights: Mapping[str, float] | None = None, *, out: str | Path | None = None,
                 settings: Mapping[str, Any] | None = None) -> list[Trajectory]:
    """All teacher episodes for ``tasks``, in task order, played shard by shard (``config.shard_size``
    tasks each) by ``config.num_workers`` Ray actors, each given the next shard when it is free (0:
    in this process).

    Each shard's episodes are saved in ``out/shards`` as soon as it finishes, so a run killed midway
    and started again plays only the shards not saved yet. Without ``out`` they go to a temporary
    folder (nothing to resume).

    Args:
        settings: what decides the episodes besides the tasks and the teacher (whose tools,
            ``num_recommend`` and ``weights`` count already), e.g. the env and data settings, as
            JSON-serializable values; a resumed run must pass the same.

    Raises:
        ValueError: ``out/shards`` holds episodes of other tasks or settings.
    """
    if out is None:
        with tempfile.TemporaryDirectory(prefix="teacher-") as folder:
            return play_teacher(env_spec, tasks, config, weights, out=folder, settings=settings)
    shards = TrajectoryShards.open(Path(out) / "shards", tasks, shard_size=config.shard_size,
                                   settings={**(settings or {}), "teacher": teacher_settings(config, weights)})
    missing = {index: shards.shards[index] for index in shards.missing()}
    if not missing:
        return shards.read_all()
    from tqdm import tqdm

    args = (env_spec, config, weights)
    workers = (spawn(TeacherWorker, min(config.num_workers, len(missing)), *args) if config.num_workers > 0
               else [TeacherWorker(*args)])
    played = len(tasks) - sum(len(part) for part in missing.values())
    try:
        with tqdm(total=len(tasks), initial=played, desc="teacher episodes", unit="episode") as bar:
            for index, trajectories in play_as_ready(workers, TeacherWorker.play, missing):
                shards.write(index, trajectories)
                bar.update(len(trajectories))
    finally:
        release(workers)
    return shards.read_all()


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
    return [t for t in trajectories if is_kept(t, keep_hit_at)]


def is_kept(trajectory: Trajectory, keep_hit_at: int) -> bool:
    """The outcome filter of ``keep_hits`` for one episode."""
    return trajectory.format_valid and succeeded(trajectory, keep_hit_at)


def succeeded(trajectory: Trajectory, rank_at: int) -> bool:
    """A ranking that put the target within ``rank_at``, a conversation the user accepted, or a
    rating that hit (``Trajectory.success_rank``)."""
    return trajectory.success_rank is not None and trajectory.success_rank <= rank_at


def write_dataset(trajectories: Sequence[Trajectory], path: str | Path) -> None:
    """Writes trajectories as a HF dataset folder (``datasets.load_from_disk`` reads it back)."""
    import datasets

    datasets.Dataset.from_list([t.to_row() for t in trajectories]).save_to_disk(str(path))


def read_dataset(path: str | Path) -> list[Trajectory]:
    """The trajectories ``write_dataset`` saved in ``path``."""
    import datasets

    if not Path(path).is_dir():
        raise FileNotFoundError(f"no trajectory dataset at {path}: run `recrl teach` first")
    return [Trajectory.from_row(row) for row in datasets.load_from_disk(str(path))]


# the dataset card ------------------------------------------------------------------------------

RANK_BINS = (("rank 1", 1, 1), ("rank 2-3", 2, 3), ("rank 4-5", 4, 5), ("rank 6+", 6, float("inf")))
"""Bins of a ranking episode's target rank: name, lowest and highest rank."""
NO_RANKING = "no valid ranking"
OUTCOME_BINS = ("hit", "miss", "invalid")
"""Bins of other episodes: a success, a well-formed miss, or a broken format."""


def outcome_bin(trajectory: Trajectory) -> str:
    """Where an episode's outcome falls: its target's rank bin (``RANK_BINS``, or ``NO_RANKING``) for
    a ranking task; else a hit (``Trajectory.success_rank``), a miss, or an invalid format."""
    if env_class(trajectory.env_id).task_kind == RankingTask.kind:
        rank = trajectory.rank
        return NO_RANKING if rank is None else next(name for name, low, high in RANK_BINS if low <= rank <= high)
    if trajectory.success_rank is not None:
        return "hit"
    return "miss" if trajectory.format_valid else "invalid"


def error_kind(error: str) -> str:
    """An error message with its quoted values and numbers blanked, so the same mistake counts once.

    >>> error_kind("item '42' is not a candidate; 3 ids recommended")
    "item '…' is not a candidate; N ids recommended"
    """
    return re.sub(r"\d+", "N", re.sub(r"'[^']*'", "'…'", error))


def failure_reasons(trajectory: Trajectory, *, keep_hit_at: int) -> list[str]:
    """Why an episode was not kept: the kinds of errors on its turns, whether it was cut short, and
    whether it missed (no success within ``keep_hit_at``)."""
    reasons = sorted({error_kind(error) for error in trajectory.errors})
    reasons += ["truncated (turn or token budget spent)"] * trajectory.truncated
    reasons += [f"no hit@{keep_hit_at}"] * (not succeeded(trajectory, keep_hit_at))
    return reasons or ["format invalid"]


def teacher_card(trajectories: Sequence[Trajectory], *, keep_hit_at: int) -> dict[str, Any]:
    """What the teacher dataset holds and what the outcome filter (``keep_hits``) dropped.

    Returns:
        ``episodes`` and ``kept``; the filter's ``keep_hit_at`` and ``keep_rate``; the episodes it
        ``dropped`` for a broken format or for no hit; ``format_valid_rate`` and ``success_rate``
        (hit@1: ``succeeded(t, 1)``); episodes per ``outcomes`` bin (``outcome_bin``); and, over
        the dropped episodes, how many failed for each of their ``failure_reasons`` (an episode may
        count under several).
    """
    dropped = [t for t in trajectories if not is_kept(t, keep_hit_at)]
    total = max(len(trajectories), 1)
    ranking = any(env_class(t.env_id).task_kind == RankingTask.kind for t in trajectories)
    others = any(env_class(t.env_id).task_kind != RankingTask.kind for t in trajectories)
    bins = ([name for name, _, _ in RANK_BINS] + [NO_RANKING]) * ranking + list(OUTCOME_BINS) * others
    outcomes = Counter(dict.fromkeys(bins, 0))
    outcomes.update(outcome_bin(t) for t in trajectories)
    reasons = Counter(reason for t in dropped for reason in failure_reasons(t, keep_hit_at=keep_hit_at))
    return {
        "episodes": len(trajectories),
        "kept": len(trajectories) - len(dropped),
        "keep_hit_at": keep_hit_at,
        "keep_rate": (len(trajectories) - len(dropped)) / total,
        "dropped": {"format_invalid": sum(not t.format_valid for t in dropped),
                    "no_hit": sum(t.format_valid for t in dropped)},
        "format_valid_rate": sum(t.format_valid for t in trajectories) / total,
        "success_rate": sum(succeeded(t, 1) for t in trajectories) / total,
        "outcomes": dict(outcomes),
        "failure_reasons": dict(reasons.most_common()),
        "sources": sorted({t.source for t in trajectories}),
    }


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card as a short Markdown page."""
    episodes = max(card["episodes"], 1)
    lines = ["# Teacher dataset card", "",
             f"- sources: {', '.join(card['sources']) or 'none'}",
             f"- episodes: {card['episodes']}; kept: {card['kept']} ({card['keep_rate']:.1%}), the format-valid "
             f"ones with a hit@{card['keep_hit_at']}",
             f"- dropped: {card['dropped']['format_invalid']} for a broken format, {card['dropped']['no_hit']} "
             f"well-formed without a hit@{card['keep_hit_at']}",
             f"- format-valid rate: {card['format_valid_rate']:.1%}; success rate (hit@1): {card['success_rate']:.1%}"]
    if "validation_hr_avg_fused" in card:
        lines.append(f"- fused signals on the validation split: hr_avg {card['validation_hr_avg_fused']:.3f}, against "
                     f"{card['validation_hr_avg_best_signal']:.3f} for the best single signal")
    lines += ["", "## Outcomes", "", "| outcome | episodes | share |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {count} | {count / episodes:.1%} |" for name, count in card["outcomes"].items()]
    lines += ["", "## Why dropped episodes failed", "", "| reason | episodes |", "| --- | ---: |"]
    lines += [f"| {reason} | {count} |" for reason, count in card["failure_reasons"].items()]
    return "\n".join(lines) + "\n"


def write_card(card: Mapping[str, Any], folder: str | Path) -> None:
    """Saves the card as ``card.json`` and ``card.md`` in ``folder``."""
    folder = Path(folder)
    (folder / "card.json").write_text(json.dumps(card, indent=2))
    (folder / "card.md").write_text(card_markdown(card))
