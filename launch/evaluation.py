"""``recrl eval``: every configured method (baselines, the teacher, the students) scored on the
same held-out tasks, into ``eval.json``."""

from __future__ import annotations

import functools
import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from envs.baselines import BASELINES
from envs.data import tasks_from_file
from envs.data.splits import sample_in_order
from envs.data import training_interactions
from envs.types import DialogueOutcome, DialogueTask, RankingTask, RatingOutcome, RatingTask, Task, Trajectory
from launch.config import RunConfig
from launch.stages import (RunPaths, env_spec, episode_settings, keyed, rollout_workers, stage_data, task_kind,
                           teacher_weights)
from rollout.actors import broadcast, map_actors, map_actors_chunked, release
from rollout.engines.base import SamplingParams, derive_seed
from rollout.episode import EpisodeRequest, run_episodes
from rollout.policy import checkpoint_fingerprint, is_checkpoint, role_checkpoints
from rollout.worker import EnvSpec, RolloutWorker

STUDENTS = {"student_base": None, "student_sft": "sft_adapter", "student_grpo": "final_adapter"}
BASELINE_METHODS = tuple(BASELINES)

LogSamples = Callable[[str, list[dict[str, Any]]], None]
"""Receives a method's name and its first evaluation episodes as ``rl.tables.trajectory_rows``."""


def stage_eval(config: RunConfig, *, tasks_file: str | Path | None = None,
               log_samples: LogSamples | None = None) -> dict:
    """Scores every configured method on the same held-out tasks.

    Writes ``eval.json`` (or ``eval.<tasks file name>.json`` for ``tasks_file``) after every
    method, so an interrupted evaluation keeps what it finished; a rerun on the same tasks reuses a
    student's results while its weights and the evaluation settings are unchanged. ``log_samples``
    gets ``eval.sample_trajectories`` episodes of every method that played (the ranking baselines,
    scored without episodes, and reused results have none); the same episodes are saved in full in
    ``samples/<method>.jsonl`` (``samples.<tasks file name>/`` for ``tasks_file``). The teacher's
    episodes are played by ``teacher.num_workers`` Ray actors and saved shard by shard in
    ``teacher-eval/<key>/shards`` (see ``teacher_eval_folder``), so an interrupted evaluation of a
    slow (LLM) teacher resumes after its last saved shard; a student's, chunk by chunk in
    ``student-eval/<method>-<fingerprint>/``, resumes likewise.
    """
    from rl.evaluate import baseline_metrics, baseline_ranks, trajectory_metrics

    if task_kind(config) == RatingTask.kind:
        return rating_eval(config, tasks_file=tasks_file, log_samples=log_samples)
    if task_kind(config) == DialogueTask.kind:
        return dialogue_eval(config, tasks_file=tasks_file, log_samples=log_samples)
    known = (*BASELINE_METHODS, "teacher", *STUDENTS)
    unknown = [m for m in config.eval.methods if m not in known]
    if unknown:
        raise ValueError(f"unknown eval method(s) {unknown}; available: {list(known)}")
    paths = RunPaths(Path(config.run_dir))
    out_path = paths.eval_json if tasks_file is None else paths.root / f"eval.{Path(tasks_file).stem}.json"
    samples_dir = paths.eval_samples
    if tasks_file is not None:
        samples_dir = samples_dir.with_name(f"{samples_dir.name}.{Path(tasks_file).stem}")
    catalog, train_tasks, eval_tasks = stage_data(config)
    if tasks_file is not None:
        tasks = tasks_from_file(tasks_file, catalog, max_history=config.data.max_history)
    else:
        tasks = held_out_sample(config, eval_tasks)
    spec = env_spec(config, catalog, tasks, train_tasks=train_tasks, evaluating=True)
    methods: dict[str, dict[str, float]] = {}
    ranks: dict[str, list[int | None]] = {}
    skipped: dict[str, str] = {}
    best_of_k: dict[str, dict[int, dict[str, float]]] = {}
    report = {
        "protocol": {
            "dataset": catalog.name, "split": "leave-last-out", "num_tasks": len(tasks),
            "num_candidates": len(tasks[0].candidate_item_ids), "tasks_file": str(tasks_file) if tasks_file else None,
            "seed": config.eval.seed, "decoding": "greedy", "model": config.model.name,
            "env": asdict(config.env), "skipped": skipped,
            "best_of_k": {"ks": sorted(config.eval.best_of_k), "temperature": config.eval.best_of_k_temperature,
                          "num_tasks": min(config.eval.best_of_k_tasks or len(tasks), len(tasks))},
        },
        "methods": methods,
        "task_ids": [task.task_id for task in tasks],
        "ranks": ranks,
        "best_of_k": best_of_k,
        "fingerprints": {},
    }
    previous = json.loads(out_path.read_text()) if out_path.is_file() else {}
    if previous.get("task_ids") != report["task_ids"]:
        previous = {}
    paths.root.mkdir(parents=True, exist_ok=True)
    workers = None
    try:
        for method in config.eval.methods:
            if method in BASELINE_METHODS:
                ranks[method] = baseline_ranks(method, tasks, spec.signals, seed=config.eval.seed)
                methods[method] = baseline_metrics(ranks[method])
            elif method == "teacher":
                trajectories = teacher_episodes(paths, config, spec, tasks, teacher_weights(config, spec, train_tasks))
                log_sample_rows(log_samples, method, trajectories, tasks, config.eval.sample_trajectories,
                                episodes_dir=samples_dir)
                ranks[method] = [t.rank for t in trajectories]
                methods[method] = trajectory_metrics(trajectories)
            elif method in STUDENTS:
                adapter, folders = student_weights(paths, config, method)
                if folders is None:
                    skipped[method] = f"no checkpoint at {adapter}"
                    continue
                fingerprints, saved, loaded = report["fingerprints"], previous.get("fingerprints", {}), False
                weights = weights_digest(folders)
                fingerprints[method] = student_fingerprint(config, weights)
                if saved.get(method) == fingerprints[method]:
                    methods[method], ranks[method] = previous["methods"][method], previous["ranks"][method]
                    print(f"eval {method}: reusing its results in {out_path} (same weights and settings)")
                else:
                    out = paths.student_eval / f"{method}-{fingerprints[method]}"
                    trajectories = saved_student_episodes(tasks, config, out)
                    if trajectories is None:
                        workers, loaded = load_student(workers, config, spec, adapter), True
                        trajectories = play_students(workers, tasks, config, source=method, samples=1,
                                                     temperature=0.0, out=out)
                    log_sample_rows(log_samples, method, trajectories, tasks, config.eval.sample_trajectories,
                                    episodes_dir=samples_dir)
                    ranks[method] = [t.rank for t in trajectories]
                    methods[method] = trajectory_metrics(trajectories)
                if config.eval.best_of_k and method in config.eval.best_of_k_methods:
                    out_path.write_text(json.dumps(report, indent=2))
                    key = f"{method}/best_of_k"
                    fingerprints[key] = student_fingerprint(config, weights, best_of_k=True)
                    if saved.get(key) == fingerprints[key]:
                        best_of_k[method] = {int(k): v for k, v in previous["best_of_k"][method].items()}
                    else:
                        workers = workers if loaded else load_student(workers, config, spec, adapter)
                        best_of_k[method] = student_best_of_k(workers, tasks, config, source=method)
            out_path.write_text(json.dumps(report, indent=2))
    finally:
        release(workers or [])
    if best_of_k:
        from rl.best_of_k import plot_best_of_k

        report["best_of_k_plot"] = str(plot_best_of_k(best_of_k, out_path.with_name("best_of_k.png")))
        out_path.write_text(json.dumps(report, indent=2))
    report["path"] = str(out_path)
    return report


def log_sample_rows(log_samples: LogSamples | None, method: str, trajectories: Sequence[Trajectory],
                    tasks: Sequence, limit: int, *, episodes_dir: Path) -> None:
    """Hands the first ``limit`` of a method's episodes, as table rows, to ``log_samples`` (if any), and
    writes them in full to ``episodes_dir/<method>.jsonl`` (``Trajectory.from_row`` reads a line back)."""
    if limit <= 0:
        return
    episodes_dir.mkdir(parents=True, exist_ok=True)
    (episodes_dir / f"{method}.jsonl").write_text(
        "".join(json.dumps(t.to_row()) + "\n" for t in trajectories[:limit]), encoding="utf-8")
    if log_samples is not None:
        from rl.tables import trajectory_rows

        log_samples(method, trajectory_rows(trajectories, limit, tasks=tasks))


def teacher_episodes(paths: RunPaths, config: RunConfig, spec: EnvSpec, tasks: Sequence[Task],
                     weights: Mapping[str, float] | None = None) -> list[Trajectory]:
    """The teacher's episodes on ``tasks``, played by ``teacher.num_workers`` Ray actors and saved
    shard by shard in its ``teacher_eval_folder`` (a rerun plays only the shards not saved yet)."""
    from teachers.pipeline import play_teacher

    return play_teacher(spec, tasks, config.teacher, weights, out=teacher_eval_folder(paths, tasks, config, weights),
                        settings=episode_settings(config))


def teacher_eval_folder(paths: RunPaths, tasks: Sequence[Task], config: RunConfig,
                        weights: Mapping[str, float] | None) -> Path:
    """Where the teacher's evaluation episodes on ``tasks`` are saved: one folder per task list and
    everything that decides the episodes, so a rerun with the same ones resumes there and one with
    others starts its own."""
    from teachers.pipeline import teacher_settings
    from teachers.shards import tasks_digest

    key = {"tasks": tasks_digest(tasks), "settings": episode_settings(config), "shard_size": config.teacher.shard_size,
           "teacher": teacher_settings(config.teacher, weights)}
    return paths.teacher_eval / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def held_out_sample(config: RunConfig, eval_tasks: list) -> list:
    """The held-out tasks evaluated: all of them, or a seeded sample of ``eval.num_tasks`` in their order."""
    if 0 < config.eval.num_tasks < len(eval_tasks):
        chosen = set(random.Random(config.eval.seed).sample(range(len(eval_tasks)), config.eval.num_tasks))
        return [task for index, task in enumerate(eval_tasks) if index in chosen]
    return list(eval_tasks)


def student_weights(paths: RunPaths, config: RunConfig, method: str) -> tuple[Path | None, dict[str, Path] | None]:
    """A student's adapter folder (None: the base model) and its checkpoint per policy role; None
    for those when the student has not been trained."""
    adapter = getattr(paths, STUDENTS[method]) if STUDENTS[method] else None
    folders = role_checkpoints(adapter, config.rollout.policies) if adapter is not None else {}
    return adapter, folders if all(is_checkpoint(folder) for folder in folders.values()) else None


def eval_setup(config: RunConfig, tasks_file: str | Path | None, known: Sequence[str]) -> tuple:
    """What a rating or conversational evaluation starts from: the run's paths, catalog, held-out
    tasks (all, or ``eval.num_tasks`` of them) and their env spec; checks the methods are ``known``."""
    if tasks_file is not None:
        raise ValueError(f"eval --tasks reads ranking tasks; {config.env.env_id} tasks come from the run's data")
    unknown = [m for m in config.eval.methods if m not in known]
    if unknown:
        raise ValueError(f"unknown eval method(s) {unknown} for {config.env.env_id}; available: {list(known)}")
    paths = RunPaths(Path(config.run_dir))
    catalog, train_tasks, eval_tasks = stage_data(config)
    tasks = held_out_sample(config, eval_tasks)
    paths.root.mkdir(parents=True, exist_ok=True)
    return paths, catalog, tasks, env_spec(config, catalog, tasks, train_tasks=train_tasks, evaluating=True)


def student_episodes(workers: list | None, paths: RunPaths, config: RunConfig, spec: EnvSpec, tasks: list,
                     method: str, skipped: dict[str, str]) -> tuple[list | None, list | None]:
    """The workers (started on first use) and a student's greedy episodes on ``tasks``, saved chunk
    by chunk in ``student-eval/`` (a rerun plays only the chunks not saved yet); no episodes, and
    the reason in ``skipped``, when it has no checkpoint."""
    adapter, folders = student_weights(paths, config, method)
    if folders is None:
        skipped[method] = f"no checkpoint at {adapter}"
        return workers, None
    out = paths.student_eval / f"{method}-{student_fingerprint(config, weights_digest(folders))}"
    saved = saved_student_episodes(tasks, config, out)
    if saved is not None:
        return workers, saved
    workers = load_student(workers, config, spec, adapter)
    return workers, play_students(workers, tasks, config, source=method, samples=1, temperature=0.0, out=out)


def rating_eval(config: RunConfig, *, tasks_file: str | Path | None = None,
                log_samples: LogSamples | None = None) -> dict:
    """RMSE, MAE and the valid-answer rate of the rating baselines, the teacher and the students on
    the same held-out rating tasks (an invalid answer scored as the training mean), into ``eval.json``."""
    from envs.rating_baselines import RATING_BASELINES, BiasModel, rating_metrics
    from teachers.rating_teacher import BiasRater

    paths, catalog, tasks, spec = eval_setup(config, tasks_file, (*RATING_BASELINES, "teacher", *STUDENTS))
    model = BiasModel.fit(training_interactions(catalog.interactions, tasks))
    targets = [task.target_rating for task in tasks]

    def score(trajectories: list[Trajectory]) -> tuple[dict[str, float], list[float | None]]:
        predictions = [t.outcome.prediction if isinstance(t.outcome, RatingOutcome) else None for t in trajectories]
        return rating_metrics(predictions, targets, fallback=model.mean), predictions

    agents = {name: functools.partial(BiasRater, model, method=name, decimals=None) for name in RATING_BASELINES}
    return agents_eval(config, paths, tasks, spec, agents, score, per_task="predictions",
                       protocol={"dataset": catalog.name, "task": "rating", "invalid_scored_as": model.mean},
                       log_samples=log_samples, fields={"targets": targets})


CRS_POLICIES = ("crs_rules", "crs_random")
"""Conversational policies that need no model: the rule-based one (the teacher) and random acts."""


def dialogue_eval(config: RunConfig, *, tasks_file: str | Path | None = None,
                  log_samples: LogSamples | None = None) -> dict:
    """Success rate, turns to acceptance and recall@k of the conversational policies, the teacher
    (``teacher.system``: the rule-based policy, or MACRS or MACRec over an LLM) and the students
    on the same held-out conversations with the simulated user, into ``eval.json``; ``ranks`` holds
    1 for an accepted conversation (None otherwise), so ``recrl compare`` pairs success rates as hr@1."""
    from envs.conversational import dialogue_metrics
    from teachers.crs_policies import RandomCRSPolicy, RuleBasedCRSPolicy

    paths, catalog, tasks, spec = eval_setup(config, tasks_file, (*CRS_POLICIES, "teacher", *STUDENTS))
    targets = [task.target_item_id for task in tasks]

    def score(trajectories: list[Trajectory]) -> tuple[dict[str, float], list[int | None]]:
        outcomes = [t.outcome if isinstance(t.outcome, DialogueOutcome) else DialogueOutcome() for t in trajectories]
        return dialogue_metrics(outcomes, targets), [t.success_rank for t in trajectories]

    agents = {"crs_rules": lambda: RuleBasedCRSPolicy(catalog), "crs_random": RandomCRSPolicy}
    return agents_eval(config, paths, tasks, spec, agents, score, per_task="ranks",
                       protocol={"dataset": catalog.name, "task": "dialogue"}, log_samples=log_samples)


def agents_eval(config: RunConfig, paths: RunPaths, tasks: list, spec: EnvSpec, agents: Mapping[str, Callable],
                score: Callable[[list[Trajectory]], tuple[dict, list]], *, per_task: str, protocol: dict,
                log_samples: LogSamples | None = None, fields: Mapping[str, Any] | None = None) -> dict:
    """Plays every configured method on ``tasks`` (``agents`` builds the model-free ones; the
    teacher plays as ``teacher_episodes`` does, resuming its saved shards; the students play
    greedily on rollout workers), scores each method's episodes with ``score`` (its
    metrics, and one value per task kept under ``per_task``) and its format rate, and writes
    ``eval.json`` (with ``fields`` besides) after every method; ``log_samples`` gets some of each
    method's episodes."""
    methods: dict[str, dict[str, float]] = {}
    values: dict[str, list] = {}
    skipped: dict[str, str] = {}
    report = {"protocol": {**protocol, "split": "leave-last-out", "num_tasks": len(tasks), "seed": config.eval.seed,
                           "decoding": "greedy", "model": config.model.name, "env": asdict(config.env),
                           "skipped": skipped},
              "methods": methods, "task_ids": [task.task_id for task in tasks], per_task: values, **(fields or {})}
    workers = None
    try:
        for method in config.eval.methods:
            if method == "teacher":
                trajectories = teacher_episodes(paths, config, spec, tasks)
            elif method in agents:
                requests = [EpisodeRequest(task, group_id=task.task_id, seed=derive_seed(config.eval.seed, "eval", i))
                            for i, task in enumerate(tasks)]
                trajectories = run_episodes(agents[method](), [spec.make() for _ in tasks], requests, source=method)
            else:
                workers, trajectories = student_episodes(workers, paths, config, spec, tasks, method, skipped)
                if trajectories is None:
                    continue
            log_sample_rows(log_samples, method, trajectories, tasks, config.eval.sample_trajectories,
                            episodes_dir=paths.eval_samples)
            metrics, values[method] = score(trajectories)
            methods[method] = {**metrics, "format_rate": sum(t.format_valid for t in trajectories) / len(trajectories)}
            paths.eval_json.write_text(json.dumps(report, indent=2))
    finally:
        release(workers or [])
    paths.eval_json.write_text(json.dumps(report, indent=2))
    report["path"] = str(paths.eval_json)
    return report


def load_student(workers: list | None, config: RunConfig, spec: EnvSpec, adapter: Path | None) -> list:
    """Rollout workers (started on first use) holding a student's weights: ``adapter``, or the base model."""
    workers = workers or rollout_workers(config, spec, adapter_dir=None)
    if adapter is None:
        return broadcast(workers, RolloutWorker.update_weights, {})
    return broadcast(workers, RolloutWorker.load_checkpoint, adapter)


def weights_digest(folders: Mapping[str, Path]) -> str:
    """The digest of a student's checkpoints, one per policy role ("" for the base model)."""
    return "+".join(dict.fromkeys(checkpoint_fingerprint(folder) for folder in folders.values()))


def student_fingerprint(config: RunConfig, weights: str, *, best_of_k: bool = False) -> str:
    """Digest of what a student's evaluation depends on: the model, its weights' digest (empty for
    the base model), the environment, and the decoding and best-of-k settings."""
    digest = hashlib.sha256(config.model.name.encode() + weights.encode())
    evaluation = asdict(config.eval)
    settings = {"env": keyed("env", asdict(config.env)), "max_new_tokens": evaluation["max_new_tokens"], "seed": evaluation["seed"],
                "best_of_k": {k: v for k, v in evaluation.items() if k.startswith("best_of_k")} if best_of_k else None}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def play_students(workers: list, tasks: list[Task], config: RunConfig, *, source: str, samples: int,
                  temperature: float, out: Path | None = None) -> list:
    """``samples`` episodes per task (task by task, samples together) on the workers' current weights.

    With ``out`` (one sample per task), each chunk of episodes is saved there as it finishes, so an
    interrupted evaluation started again plays only the chunks not saved yet (``out`` must be
    named after the weights and settings: ``student_fingerprint``).
    """
    params = SamplingParams(max_new_tokens=config.eval.max_new_tokens, temperature=temperature)
    requests = [EpisodeRequest(task, group_id=task.task_id, seed=derive_seed(config.eval.seed, "eval", index, sample))
                for index, task in enumerate(tasks) for sample in range(samples)]
    chunk_size = len(workers) * config.rollout.max_batch_size
    desc = f"eval {source}" + (f" x{samples}" if samples > 1 else "")
    if out is None or samples != 1:
        return map_actors_chunked(workers, RolloutWorker.rollout, requests, chunk_size=chunk_size, desc=desc,
                                  params=params, source=source)
    from tqdm import tqdm

    shards = student_shards(tasks, config, out)
    missing = shards.missing()
    for index in tqdm(missing, desc=desc, unit="chunk", initial=len(shards.shards) - len(missing),
                      total=len(shards.shards)):
        start = sum(len(shard) for shard in shards.shards[:index])
        part = requests[start : start + len(shards.shards[index])]
        shards.write(index, map_actors(workers, RolloutWorker.rollout, part, params=params, source=source))
    return shards.read_all()


def student_shards(tasks: list[Task], config: RunConfig, out: Path):
    """The chunks of a student's greedy evaluation on ``tasks`` saved in ``out``: one folder per task
    list and chunk size (a chunk is a generate call of every rollout worker), so another evaluation
    never meets them."""
    from teachers.shards import TrajectoryShards, tasks_digest

    chunk_size = max(1, config.rollout.num_workers) * config.rollout.max_batch_size
    return TrajectoryShards.open(out / f"{tasks_digest(tasks)[:16]}-{chunk_size}", tasks, shard_size=chunk_size,
                                 settings={"student": out.name})


def saved_student_episodes(tasks: list[Task], config: RunConfig, out: Path) -> list[Trajectory] | None:
    """A student's greedy episodes on ``tasks`` when every chunk of them is saved in ``out`` (so no
    rollout worker need start), else None."""
    shards = student_shards(tasks, config, out)
    return None if shards.missing() else shards.read_all()


def student_best_of_k(workers: list, tasks: list[RankingTask], config: RunConfig, *, source: str
                      ) -> dict[int, dict[str, float]]:
    """Best-of-k metrics of a student sampled ``max(eval.best_of_k)`` times per task (on a seeded
    sample of ``eval.best_of_k_tasks`` of them when set)."""
    from rl.best_of_k import best_of_k_metrics

    tasks = sample_in_order(tasks, config.eval.best_of_k_tasks, seed=config.eval.seed)
    ks = sorted(config.eval.best_of_k)
    trajectories = play_students(workers, tasks, config, source=source, samples=ks[-1],
                                 temperature=config.eval.best_of_k_temperature)
    samples = [[t.rank for t in trajectories[i : i + ks[-1]]] for i in range(0, len(trajectories), ks[-1])]
    return best_of_k_metrics(samples, ks=ks)
