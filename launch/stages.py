"""The stages of a run, each reading and writing files in the run folder so any can be re-run alone.

    data  -> data/train_tasks.jsonl, data/eval_tasks.jsonl
    teach -> teacher/dataset (HF datasets), teacher/stats.json
    sft   -> sft/adapter (LoRA, safetensors)
    train -> grpo/step-NNNNNN (checkpoints: weights, optimizer, trainer_state.json), adapter (the final weights)
    eval  -> eval.json
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from envs.baselines import BASELINES
from envs.data import build_tasks, leave_last_out, load_ml100k, load_tasks, save_tasks, synthetic_catalog
from envs.data import tasks_from_file, training_interactions
from envs.tools import InteractionGraph
from envs.types import Catalog, RankingTask
from launch.config import RunConfig
from rollout.actors import broadcast, map_actors_chunked, spawn
from rollout.engines.base import SamplingParams
from rollout.episode import EpisodeRequest
from rollout.policy import LoraSettings, checkpoint_fingerprint, is_checkpoint, resolve_device
from rollout.worker import EnvSpec, RolloutWorker

CATALOGS: dict[str, Callable[[], Catalog]] = {"ml-100k": load_ml100k, "synthetic": synthetic_catalog}
Log = Callable[[dict, int], None]


@dataclass(frozen=True)
class RunPaths:
    """Where each stage puts its output."""

    root: Path

    @property
    def train_tasks(self) -> Path:
        return self.root / "data" / "train_tasks.jsonl"

    @property
    def eval_tasks(self) -> Path:
        return self.root / "data" / "eval_tasks.jsonl"

    @property
    def teacher_dataset(self) -> Path:
        return self.root / "teacher" / "dataset"

    @property
    def sft_adapter(self) -> Path:
        return self.root / "sft" / "adapter"

    @property
    def grpo_checkpoints(self) -> Path:
        return self.root / "grpo"

    @property
    def final_adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def eval_json(self) -> Path:
        return self.root / "eval.json"


def load_catalog(name: str) -> Catalog:
    if name not in CATALOGS:
        raise ValueError(f"unknown dataset '{name}'; available: {sorted(CATALOGS)}")
    return CATALOGS[name]()


def lora_settings(config: RunConfig) -> LoraSettings | None:
    """The adapter shape, or None for full fine-tuning (``model.lora_r=0``)."""
    if config.model.lora_r <= 0:
        return None
    return LoraSettings(r=config.model.lora_r, alpha=config.model.lora_alpha, dropout=config.model.lora_dropout)


def gpu_share(config: RunConfig) -> float:
    """GPUs per Ray actor: the rollout workers and the learner share what the machine has."""
    import torch

    if resolve_device(config.model.device) == "cpu":
        return 0.0
    return min(1.0, torch.cuda.device_count() / (max(config.rollout.num_workers, 0) + 1))


def env_spec(config: RunConfig, catalog: Catalog, tasks: list[RankingTask]) -> EnvSpec:
    """Environments for ``tasks``: their CF graph never sees a task's target or anything after it.
    Budgets count the student's tokens, for the teacher's episodes too."""
    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, tasks))
    return EnvSpec(catalog, graph, config.env, tokenizer=config.model.name)


# data ------------------------------------------------------------------------------------------

def stage_data(config: RunConfig) -> tuple[Catalog, list[RankingTask], list[RankingTask]]:
    """Builds (or reuses) the training and held-out tasks.

    Held-out tasks hold out each user's last interaction. Training tasks (teacher, SFT, GRPO) hold
    out the one before it, from data that already lacks the last, so no training stage sees a
    held-out target.
    """
    paths = RunPaths(Path(config.run_dir))
    catalog = load_catalog(config.data.dataset)
    data = config.data
    settings_path = paths.train_tasks.parent / "settings.json"
    if paths.train_tasks.is_file() and paths.eval_tasks.is_file():
        saved = json.loads(settings_path.read_text()) if settings_path.is_file() else None
        if saved != asdict(data):
            raise ValueError(f"the tasks in {settings_path.parent} were built with data settings {saved}, "
                             f"not {asdict(data)}: use another run_dir or delete that folder")
        return catalog, load_tasks(paths.train_tasks), load_tasks(paths.eval_tasks)
    eval_tasks = build_tasks(catalog, num_negatives=data.num_negatives, seed=data.seed, max_history=data.max_history)
    train_split, _ = leave_last_out(catalog.interactions)
    train_catalog = Catalog(f"{catalog.name}-train", catalog.users, catalog.items, train_split)
    train_tasks = build_tasks(train_catalog, num_negatives=data.num_negatives, seed=data.seed + 1,
                              max_history=data.max_history, exclude=catalog.interactions)
    save_tasks(train_tasks, paths.train_tasks)
    save_tasks(eval_tasks, paths.eval_tasks)
    settings_path.write_text(json.dumps(asdict(data)))
    return catalog, train_tasks, eval_tasks


# teach -----------------------------------------------------------------------------------------

def stage_teach(config: RunConfig) -> dict[str, float]:
    """Teacher episodes on the training tasks; the hits become the SFT dataset."""
    from teachers.pipeline import keep_hits, play_teacher, teacher_stats, write_dataset

    catalog, train_tasks, _ = stage_data(config)
    spec = env_spec(config, catalog, train_tasks)
    trajectories = play_teacher(spec, train_tasks, config.teacher)
    kept = keep_hits(trajectories, keep_hit_at=config.teacher.keep_hit_at)
    if not kept:
        raise RuntimeError("the teacher hit no task: nothing to learn from; check the teacher tools/config")
    paths = RunPaths(Path(config.run_dir))
    write_dataset(kept, paths.teacher_dataset)
    stats = teacher_stats(trajectories, kept)
    (paths.teacher_dataset.parent / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


# sft -------------------------------------------------------------------------------------------

def stage_sft(config: RunConfig, log: Log | None = None) -> list[float]:
    """LoRA SFT of the student on the teacher dataset; saves ``sft/adapter``."""
    from rl.learner import Learner
    from rl.sft import sft_examples, train_sft
    from rollout.chat import ChatFormat
    from teachers.pipeline import read_dataset

    paths = RunPaths(Path(config.run_dir))
    trajectories = read_dataset(paths.teacher_dataset)
    learner = Learner(model_name=config.model.name, lora=lora_settings(config), lr=config.sft.lr, seed=config.seed,
                      device=resolve_device(config.model.device))
    examples = sft_examples(trajectories, ChatFormat(learner.tokenizer), max_seq_len=config.sft.max_seq_len,
                            max_examples=config.sft.max_examples, seed=config.seed)
    losses = train_sft(learner, examples, config.sft, seed=config.seed, log=log)
    learner.save(paths.sft_adapter)
    return losses


# train (GRPO) ----------------------------------------------------------------------------------

def rollout_workers(config: RunConfig, spec: EnvSpec, *, adapter_dir: Path | None) -> list:
    """Rollout workers as Ray actors (or one in-process worker when ``rollout.num_workers=0``)."""
    kwargs = dict(model_name=config.model.name, env_spec=spec, lora=lora_settings(config), adapter_dir=adapter_dir,
                  device=resolve_device(config.model.device), config=config.rollout)
    if config.rollout.num_workers <= 0:
        return [RolloutWorker(**kwargs)]
    return spawn(RolloutWorker, config.rollout.num_workers, num_threads=1, num_gpus=gpu_share(config), **kwargs)


def grpo_roles(config: RunConfig, *, start_dir: Path, reference_dir: Path):
    """The GRPO learner and the frozen reference policy: Ray actors (or in-process when
    ``rollout.num_workers=0``)."""
    from rl.learner import Learner
    from rl.reference import ReferenceModel

    device = resolve_device(config.model.device)
    learner_kwargs = dict(model_name=config.model.name, lora=lora_settings(config), lr=config.grpo.lr,
                          adapter_dir=start_dir, seed=config.seed, device=device)
    reference_kwargs = dict(model_name=config.model.name, checkpoint_dir=reference_dir, lora=lora_settings(config),
                            device=device)
    if config.rollout.num_workers <= 0:
        return Learner(**learner_kwargs), ReferenceModel(**reference_kwargs)
    # Workers idle while the learner and the reference run, so these may use every core.
    threads = os.cpu_count()
    learner = spawn(Learner, 1, num_cpus=1, num_gpus=gpu_share(config), num_threads=threads, **learner_kwargs)[0]
    reference = spawn(ReferenceModel, 1, num_cpus=1, num_gpus=gpu_share(config), num_threads=threads,
                      **reference_kwargs)[0]
    return learner, reference


def grpo_trainer_state(config: RunConfig, train_tasks: list[RankingTask], sft_fingerprint: str) -> dict:
    """What a GRPO checkpoint records besides the step: the SFT weights it grew from, and the
    settings that decide the data order (``rl.grpo.DATA_ORDER_KEYS``)."""
    tasks_digest = hashlib.sha256("\n".join(t.task_id for t in train_tasks).encode()).hexdigest()
    return {"sft": sft_fingerprint, "seed": config.seed, "tasks_per_step": config.grpo.tasks_per_step,
            "group_size": config.grpo.group_size, "tasks": tasks_digest}


def resume_from(paths: RunPaths, trainer_state: dict) -> Path | None:
    """The latest GRPO checkpoint to resume, or None to start from the SFT adapter.

    Checkpoints grown from another SFT adapter are deleted (a new SFT starts a new GRPO run); a
    checkpoint whose data-order settings changed is refused with ``ResumeError``.
    """
    import shutil

    from rl.checkpoints import check_resume, latest_checkpoint, read_trainer_state, remove_stale_temp
    from rl.grpo import DATA_ORDER_KEYS

    root = paths.grpo_checkpoints
    remove_stale_temp(root)
    latest = latest_checkpoint(root)
    if latest is None:
        return None
    saved = read_trainer_state(latest)
    if saved.get("sft") != trainer_state["sft"]:
        print(f"[train] starting over: the checkpoints in {root} grew from another SFT adapter")
        shutil.rmtree(root)
        return None
    check_resume(saved, trainer_state, keys=DATA_ORDER_KEYS, folder=root)
    return latest


def stage_train(config: RunConfig, log: Log | None = None) -> list[dict[str, float]]:
    """GRPO from the SFT adapter with a learner, a reference and rollout workers; saves the final weights.

    The latest GRPO checkpoint of an interrupted run from the same SFT adapter is resumed.
    """
    import shutil

    from rl.checkpoints import TRAINER_STATE, latest_checkpoint, read_trainer_state
    from rl.grpo import train_grpo
    from rl.learner import Learner

    paths = RunPaths(Path(config.run_dir))
    if not is_checkpoint(paths.sft_adapter):
        raise FileNotFoundError(f"no SFT adapter at {paths.sft_adapter}: run `recrl sft` first")
    catalog, train_tasks, _ = stage_data(config)
    spec = env_spec(config, catalog, train_tasks)
    trainer_state = grpo_trainer_state(config, train_tasks, checkpoint_fingerprint(paths.sft_adapter))
    resume = resume_from(paths, trainer_state)
    start_step = min(read_trainer_state(resume)["step"], config.grpo.steps) if resume else 0
    history = []
    if start_step < config.grpo.steps:
        if start_step:
            print(f"[train] resuming after step {start_step} of {config.grpo.steps} from {resume} "
                  f"(delete {paths.grpo_checkpoints} to start over)")
        start_dir = resume or paths.sft_adapter
        workers = rollout_workers(config, spec, adapter_dir=start_dir)
        learner, reference = grpo_roles(config, start_dir=start_dir, reference_dir=paths.sft_adapter)
        if resume:
            learner.load_optimizer(resume)
        history = train_grpo(learner=learner, reference=reference, workers=workers, tasks=train_tasks,
                             config=config.grpo, reward_weights=config.reward.weights, seed=config.seed,
                             checkpoint_root=paths.grpo_checkpoints, trainer_state=trainer_state, log=log,
                             start_step=start_step)
    shutil.rmtree(paths.final_adapter, ignore_errors=True)
    shutil.copytree(latest_checkpoint(paths.grpo_checkpoints), paths.final_adapter,
                    ignore=shutil.ignore_patterns(Learner.OPTIMIZER_FILE, TRAINER_STATE))
    return history


# eval ------------------------------------------------------------------------------------------

STUDENTS = {"student_base": None, "student_sft": "sft_adapter", "student_grpo": "final_adapter"}
BASELINE_METHODS = tuple(BASELINES)


def stage_eval(config: RunConfig, *, tasks_file: str | Path | None = None) -> dict:
    """Scores every configured method on the same held-out tasks.

    Writes ``eval.json`` (or ``eval.<tasks file name>.json`` for ``tasks_file``) after every
    method, so an interrupted evaluation keeps what it finished.
    """
    from rl.evaluate import baseline_metrics, trajectory_metrics
    from teachers.pipeline import TeacherWorker

    known = (*BASELINE_METHODS, "teacher", *STUDENTS)
    unknown = [m for m in config.eval.methods if m not in known]
    if unknown:
        raise ValueError(f"unknown eval method(s) {unknown}; available: {list(known)}")
    paths = RunPaths(Path(config.run_dir))
    out_path = paths.eval_json if tasks_file is None else paths.root / f"eval.{Path(tasks_file).stem}.json"
    catalog, _, eval_tasks = stage_data(config)
    if tasks_file is not None:
        tasks = tasks_from_file(tasks_file, catalog, max_history=config.data.max_history)
    else:
        tasks = list(eval_tasks)
        if 0 < config.eval.num_tasks < len(tasks):
            tasks = sorted(random.Random(config.eval.seed).sample(tasks, config.eval.num_tasks),
                           key=lambda t: eval_tasks.index(t))
    spec = env_spec(config, catalog, tasks)
    methods: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    report = {
        "protocol": {
            "dataset": catalog.name, "split": "leave-last-out", "num_tasks": len(tasks),
            "num_candidates": len(tasks[0].candidate_item_ids), "tasks_file": str(tasks_file) if tasks_file else None,
            "seed": config.eval.seed, "decoding": "greedy", "model": config.model.name,
            "env": asdict(config.env), "skipped": skipped,
        },
        "methods": methods,
    }
    paths.root.mkdir(parents=True, exist_ok=True)
    workers = None
    for method in config.eval.methods:
        if method in BASELINE_METHODS:
            methods[method] = baseline_metrics(method, tasks, spec.graph, seed=config.eval.seed)
        elif method == "teacher":
            teacher = config.teacher
            worker = TeacherWorker(spec, teacher.tools, teacher.num_recommend, teacher.genre_weight)
            methods[method] = trajectory_metrics(worker.play(tasks))
        elif method in STUDENTS:
            adapter = getattr(paths, STUDENTS[method]) if STUDENTS[method] else None
            if adapter is not None and not is_checkpoint(adapter):
                skipped[method] = f"no checkpoint at {adapter}"
                continue
            workers = workers or rollout_workers(config, spec, adapter_dir=None)
            if adapter is None:
                workers = broadcast(workers, RolloutWorker.update_weights, {})  # the base model
            else:
                workers = broadcast(workers, RolloutWorker.load_checkpoint, adapter)
            params = SamplingParams(max_new_tokens=config.eval.max_new_tokens, temperature=0.0)
            requests = [EpisodeRequest(task, group_id=task.task_id) for task in tasks]
            trajectories = map_actors_chunked(
                workers, RolloutWorker.rollout, requests, chunk_size=len(workers) * config.rollout.max_batch_size,
                desc=f"eval {method}", params=params, source=method)
            methods[method] = trajectory_metrics(trajectories)
        out_path.write_text(json.dumps(report, indent=2))
    report["path"] = str(out_path)
    return report
