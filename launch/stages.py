"""The stages of a run, each reading and writing files in the run folder so any can be re-run alone.

    data  -> data/train_tasks.jsonl, data/eval_tasks.jsonl
    teach -> teacher/fusion.json (signal weights), teacher/shards (every episode, resumable), teacher/dataset
             (HF datasets: the kept ones), teacher/card.json and card.md (counts, rates, why episodes failed)
    sft   -> sft/adapter (LoRA, safetensors)
    curate -> curriculum/dataset, curriculum/counts.json (STAR's RL data; when curriculum.enabled)
    train -> grpo/step-NNNNNN (checkpoints: weights, optimizer, trainer_state.json), adapter (the final weights)
    eval  -> eval.json (per-method metrics and per-task ranks), best_of_k.png
Signals fitted on training interactions (the sequential model) are cached in signals/.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from envs.data import (build_tasks, leave_last_out, load_amazon, load_ml100k, load_redial, load_tasks, save_tasks,
                       synthetic_catalog, training_interactions)
from envs.data.splits import sample_in_order
from envs.signals.signals import build_signals
from envs.tools import InteractionGraph
from envs.data.rating import build_rating_tasks
from envs.registry import env_class
from envs.conversational import dialogue_task
from envs.types import Catalog, DialogueTask, RankingTask, RatingTask, Task
from launch.config import DataConfig, RunConfig
from launch.paths import RunPaths
from launch.placement import Placement, PlacementConfig
from rollout.actors import init_ray, map_actors, release, spawn
from rollout.agents import POLICY
from rollout.engines.base import SamplingParams, derive_seed
from rollout.episode import EpisodeRequest
from rollout.models import load_tokenizer, resolve_model
from rollout.policy import (LoraSettings, bf16_supported, checkpoint_fingerprint, is_checkpoint, resolve_device,
                            role_checkpoints)
from rollout.worker import EnvSpec, RolloutWorker, resolve_engine
from teachers.backends import CONNECTION_FIELDS, BackendConfig
from teachers.pipeline import TeacherConfig
from teachers.systems.roles import prompts_digest

CATALOGS: dict[str, Callable[[], Catalog]] = {"ml-100k": load_ml100k, "synthetic": synthetic_catalog}
FILE_CATALOGS: dict[str, Callable[[str], Catalog]] = {"amazon": load_amazon, "redial": load_redial}
"""Datasets read from ``data.path``."""
Log = Callable[[dict, int], None]


def load_catalog(name: str, path: str = "") -> Catalog:
    """The dataset ``name``; those in ``FILE_CATALOGS`` read ``path`` (``data.path``), the others take none."""
    if name in FILE_CATALOGS:
        if not path:
            raise ValueError(f"data.dataset={name} reads its data from data.path, which is empty: "
                             f"set data.path=... to the {name} file or folder")
        return FILE_CATALOGS[name](path)
    if name not in CATALOGS:
        raise ValueError(f"unknown dataset '{name}'; available: {sorted([*CATALOGS, *FILE_CATALOGS])}")
    if path:
        raise ValueError(f"data.dataset={name} reads no files, but data.path={path!r} is set; "
                         f"clear it, or use one of {sorted(FILE_CATALOGS)}")
    return CATALOGS[name]()


def lora_settings(config: RunConfig) -> LoraSettings | None:
    """The adapter shape, or None for full fine-tuning (``model.lora_r=0``)."""
    if config.model.lora_r <= 0:
        return None
    return LoraSettings(r=config.model.lora_r, alpha=config.model.lora_alpha, dropout=config.model.lora_dropout)


def learner_bf16(config: RunConfig) -> bool:
    """bf16 autocast for the learner and the reference: asked for, and native on their device."""
    return config.model.bf16 and bf16_supported(resolve_device(config.model.device))


def cluster_gpus(config: RunConfig) -> float:
    """The GPUs the roles' actors share: the Ray cluster's (one node's, locally); 0 on CPU."""
    import ray

    if resolve_device(config.model.device) == "cpu":
        return 0.0
    init_ray()
    return ray.cluster_resources().get("GPU", 0)


def run_placement(config: RunConfig, *, training: bool) -> Placement:
    """Where the stage's Ray actors go (``placement.*``): its rollout workers and, ``training``, the
    learners (of every policy), the reference and PPO's critic; none when they run in this process."""
    if config.rollout.num_workers <= 0:
        return Placement({})
    counts = {"rollout": config.rollout.num_workers}
    if training:
        counts.update(learner=config.learner.num_learners * len(config.rollout.policies), reference=1,
                      critic=int(config.grpo.advantage_estimator == "gae"))
    return Placement.create(config.placement if training else PlacementConfig(), counts, gpus=cluster_gpus(config))


def needs_sequential(config: RunConfig, *, evaluating: bool) -> bool:
    """Whether a tool, the teacher or (``evaluating``) a baseline reads the sequential model, which
    must then be fitted."""
    return ("sequential" in config.env.tools or "sequential" in config.teacher.tools
            or (evaluating and "sasrec" in config.eval.methods))


def sequential_scorer(config: RunConfig, catalog: Catalog, tasks: list[RankingTask]):
    """The SASRec model fitted on the interactions before every one of ``tasks``' targets (cached in
    ``signals/``: one fit per run, as the training and held-out tasks share it)."""
    from envs.signals.sasrec import load_or_fit_sasrec

    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, tasks))
    sequences = {user_id: graph.user_items(user_id) for user_id in graph.user_ids}
    return load_or_fit_sasrec(RunPaths(Path(config.run_dir)).signals / "sasrec", sequences, config.sequential)


def env_spec(config: RunConfig, catalog: Catalog, tasks: list[RankingTask], *,
             train_tasks: list[RankingTask], evaluating: bool = False) -> EnvSpec:
    """Environments for ``tasks``: their CF graph never sees a task's target or anything after it,
    and the sequential model never sees a training or a held-out target. Budgets count the student's
    tokens, for the teacher's episodes too."""
    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, tasks))
    needed = needs_sequential(config, evaluating=evaluating)
    scorer = sequential_scorer(config, catalog, [*train_tasks, *tasks]) if needed else None
    signals = build_signals(catalog, graph, sequential_scorer=scorer)
    return EnvSpec(catalog, graph, config.env, tokenizer=config.model.name, signals=signals)


# reuse -----------------------------------------------------------------------------------------

STAGE_SETTINGS = {"teach": ("seed", "data", "env", "sequential", "teacher", "model"), "sft": ("sft",),
                  "curate": ("curriculum",)}
"""Config sections each stage's output depends on (a stage also depends on the ones before it)."""


NEUTRAL_SETTINGS = {
    "data": {"min_rating": None, "path": ""},
    "env": {"plan_turns": False},
    "grpo": {"micro_batch_tokens": 0},
    "sft": {"local_epochs": 0},
    "teacher": {"shard_size": TeacherConfig.shard_size, "system": "heuristic", "backend": asdict(BackendConfig()),
                "concurrency": TeacherConfig.concurrency, "reflection_strategy": TeacherConfig.reflection_strategy,
                "num_tasks": 0},
}
"""Settings added after run folders were first keyed, and the values at which they change nothing:
there they are left out of digests and saved settings, so older run folders still resume."""


RUNTIME_SETTINGS = {
    "teacher": {"num_workers": TeacherConfig.num_workers, "concurrency": TeacherConfig.concurrency,
                "backend": {name: getattr(BackendConfig, name) for name in CONNECTION_FIELDS}},
}
"""Settings that say how a stage runs, not what it makes (workers, episodes in flight, the endpoint's
address and limits): digests hold them at their defaults, so a run resumed with others reuses its stages."""


def keyed(section: str, settings: Any) -> Any:
    """A config section's settings as digests and saved settings hold them (``RUNTIME_SETTINGS`` at their
    defaults, ``NEUTRAL_SETTINGS`` out)."""
    neutral = NEUTRAL_SETTINGS.get(section, {})
    if not isinstance(settings, dict):
        return settings
    settings = at_defaults(settings, RUNTIME_SETTINGS.get(section, {}))
    return {key: value for key, value in settings.items() if key not in neutral or value != neutral[key]}


def at_defaults(settings: dict[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with the (nested) keys of ``defaults`` set to their values there."""
    return {key: at_defaults(value, defaults[key]) if isinstance(defaults.get(key), Mapping) else defaults.get(key, value)
            for key, value in settings.items()}


def stage_key(config: RunConfig, stage: str) -> str:
    """A digest of every setting that decides ``stage``'s output (its own and its inputs')."""
    settings = asdict(config)
    order = list(STAGE_SETTINGS)
    chain = [{name: keyed(name, settings[name]) for name in STAGE_SETTINGS[s]} for s in order[: order.index(stage) + 1]]
    if config.teacher.system != "heuristic":  # an LLM system's role prompts decide its episodes, so what follows
        chain.append({"teacher_prompts": prompts_digest(config.teacher.system)})
    return hashlib.sha256(json.dumps(chain, sort_keys=True).encode()).hexdigest()


def done_marker(config: RunConfig, stage: str) -> Path:
    paths = RunPaths(Path(config.run_dir))
    folder = {"teach": paths.teacher_dataset.parent, "sft": paths.sft_adapter.parent, "curate": paths.curriculum}[stage]
    return folder / "done.json"


def is_done(config: RunConfig, stage: str) -> bool:
    """Whether ``stage`` already finished in this run folder with the same settings (``recrl
    quickstart`` then reuses its output, so a long recipe continues where it stopped)."""
    marker = done_marker(config, stage)
    return marker.is_file() and json.loads(marker.read_text()).get("key") == stage_key(config, stage)


def mark_done(config: RunConfig, stage: str) -> None:
    done_marker(config, stage).write_text(json.dumps({"key": stage_key(config, stage)}))


# data ------------------------------------------------------------------------------------------

def task_kind(config: RunConfig) -> str:
    """The kind of task the configured env plays (``ranking``, ``rating``...)."""
    return env_class(config.env.env_id).task_kind


def task_files(paths: RunPaths, kind: str) -> tuple[Path, Path]:
    """Where a run keeps its training and held-out tasks of ``kind``."""
    if kind == RankingTask.kind:
        return paths.train_tasks, paths.eval_tasks
    return (paths.train_tasks.with_name(f"{kind}_{paths.train_tasks.name}"),
            paths.eval_tasks.with_name(f"{kind}_{paths.eval_tasks.name}"))


TASK_BUILDERS: dict[str, Callable[..., list[Task]]] = {
    RankingTask.kind: lambda catalog, data, seed, exclude: build_tasks(
        catalog, num_negatives=data.num_negatives, seed=seed, max_history=data.max_history, exclude=exclude,
        min_rating=data.min_rating),
    RatingTask.kind: lambda catalog, data, seed, exclude: build_rating_tasks(catalog, max_history=data.max_history),
    # a conversation over each ranking task's candidates, its target the simulated user's wish
    DialogueTask.kind: lambda catalog, data, seed, exclude: [dialogue_task(task) for task in TASK_BUILDERS[
        RankingTask.kind](catalog, data, seed, exclude)],
}
"""Leave-last-out tasks of each kind from a catalog: ``(catalog, data settings, seed, exclude) -> tasks``."""


def build_split(kind: str, catalog: Catalog, data: DataConfig, *, seed: int, exclude: Sequence = ()) -> list[Task]:
    """Leave-last-out tasks of ``kind`` from ``catalog``."""
    if kind not in TASK_BUILDERS:
        raise ValueError(f"{kind} tasks are not built from a catalog; kinds that are: {sorted(TASK_BUILDERS)}")
    return TASK_BUILDERS[kind](catalog, data, seed, exclude)


def stage_data(config: RunConfig) -> tuple[Catalog, list[Task], list[Task]]:
    """Builds (or reuses) the training and held-out tasks of the configured env's kind.

    Held-out tasks hold out each user's last interaction. Training tasks (teacher, SFT, GRPO) hold
    out the one before it, from data that already lacks the last, so no training stage sees a
    held-out target.
    """
    paths = RunPaths(Path(config.run_dir))
    catalog = load_catalog(config.data.dataset, config.data.path)
    data = config.data
    kind = task_kind(config)
    train_path, eval_path = task_files(paths, kind)
    settings_path = paths.train_tasks.parent / "settings.json"
    if train_path.is_file() and eval_path.is_file():
        saved = json.loads(settings_path.read_text()) if settings_path.is_file() else None
        if saved is None or keyed("data", saved) != keyed("data", asdict(data)):
            raise ValueError(f"the tasks in {settings_path.parent} were built with data settings {saved}, "
                             f"not {asdict(data)}: use another run_dir or delete that folder")
        return catalog, load_tasks(train_path), load_tasks(eval_path)
    eval_tasks = build_split(kind, catalog, data, seed=data.seed)
    train_split, _ = leave_last_out(catalog.interactions, min_rating=data.min_rating)
    train_catalog = Catalog(f"{catalog.name}-train", catalog.users, catalog.items, train_split)
    train_tasks = build_split(kind, train_catalog, data, seed=data.seed + 1, exclude=catalog.interactions)
    save_tasks(train_tasks, train_path)
    save_tasks(eval_tasks, eval_path)
    settings_path.write_text(json.dumps(asdict(data)))
    return catalog, train_tasks, eval_tasks


# teach -----------------------------------------------------------------------------------------

def teacher_weights(config: RunConfig, spec: EnvSpec, train_tasks: list[RankingTask]) -> dict[str, float] | None:
    """The teacher's fusion weights: fitted on a validation split of the training tasks and saved
    in ``teacher/fusion.json`` (reused while the teacher's tools are the same); None for plain Borda
    and for the LLM systems."""
    from teachers.pipeline import fit_fusion, validation_split

    teacher = config.teacher
    if not teacher.fit_weights or teacher.system != "heuristic":  # LLM systems rank by themselves
        return None
    path = RunPaths(Path(config.run_dir)).teacher_fusion
    if path.is_file():
        saved = json.loads(path.read_text())
        if (saved.get("tools") == list(teacher.tools) and saved.get("validation_tasks_requested") == teacher.validation_tasks
                and saved.get("margin") == teacher.fusion_margin):
            return saved["weights"]
    validation = validation_split(train_tasks, teacher.validation_tasks, seed=config.seed)
    fusion = fit_fusion(spec, validation, teacher.tools, margin=teacher.fusion_margin)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tools": list(teacher.tools), "validation_tasks_requested": teacher.validation_tasks,
                                "margin": teacher.fusion_margin, "validation_task_ids": [t.task_id for t in validation],
                                **fusion}, indent=2))
    return fusion["weights"]


def episode_settings(config: RunConfig) -> dict[str, Any]:
    """What decides the teacher's episodes besides its tasks, tools and weights: the data, env and
    sequential-model settings, the seed, and the tokenizer that counts the budgets (a resumed
    ``recrl teach`` must have the same)."""
    settings = asdict(config)
    return {**{name: keyed(name, settings[name]) for name in ("seed", "data", "env", "sequential")},
            "tokenizer": config.model.name}


def stage_teach(config: RunConfig) -> dict[str, Any]:
    """Teacher episodes on the training tasks (a sample of ``teacher.num_tasks``, or all), saved shard by
    shard in ``teacher/shards`` (a killed run resumes there); the hits become the SFT dataset, described
    by ``teacher/card.json``."""
    from teachers.pipeline import keep_hits, play_teacher, teacher_card, write_card, write_dataset

    catalog, train_tasks, _ = stage_data(config)
    spec = env_spec(config, catalog, train_tasks, train_tasks=train_tasks)
    weights = teacher_weights(config, spec, train_tasks) if task_kind(config) == RankingTask.kind else None
    paths = RunPaths(Path(config.run_dir))
    played = sample_in_order(train_tasks, config.teacher.num_tasks, seed=config.seed)
    trajectories = play_teacher(spec, played, config.teacher, weights, out=paths.teacher_dataset.parent,
                                settings=episode_settings(config))
    kept = keep_hits(trajectories, keep_hit_at=config.teacher.keep_hit_at)
    card = teacher_card(trajectories, keep_hit_at=config.teacher.keep_hit_at)
    if paths.teacher_fusion.is_file():
        validation = json.loads(paths.teacher_fusion.read_text())["validation_hr_avg"]
        card["validation_hr_avg_fused"] = validation["fused"]
        card["validation_hr_avg_best_signal"] = max(v for k, v in validation.items() if k != "fused")
    write_card(card, paths.teacher_dataset.parent)
    if not kept:
        raise RuntimeError("the teacher hit no task: nothing to learn from; check the teacher tools/config "
                           f"({paths.teacher_dataset.parent / 'card.md'} says why its episodes failed)")
    write_dataset(kept, paths.teacher_dataset)
    mark_done(config, "teach")
    return card


# sft -------------------------------------------------------------------------------------------

def stage_sft(config: RunConfig, log: Log | None = None) -> list[float]:
    """LoRA SFT of the student on the teacher dataset; saves ``sft/adapter``. With several
    ``rollout.policies`` and ``sft.local_epochs`` (GLPFT), then one copy per policy fine-tuned on its
    own turns, saved in ``sft/adapter/<role>``. Returns the global pass's losses."""
    from rl.sft import sft_examples, train_sft
    from rollout.chat import ChatFormat
    from teachers.pipeline import read_dataset

    paths = RunPaths(Path(config.run_dir))
    trajectories = read_dataset(paths.teacher_dataset)
    chat = ChatFormat(load_tokenizer(resolve_model(config.model.name)))
    roles = list(config.rollout.policies) if config.sft.local_epochs > 0 and len(config.rollout.policies) > 1 else []
    passes = [(None, config.sft, None, paths.sft_adapter)]
    passes += [(role, dataclasses.replace(config.sft, epochs=config.sft.local_epochs), paths.sft_adapter,
                paths.sft_adapter / role) for role in roles]
    losses = []
    for role, settings, start, out in passes:
        examples = sft_examples(trajectories, chat, max_seq_len=settings.max_seq_len,
                                max_examples=settings.max_examples, seed=config.seed, role=role)
        steps = settings.epochs * -(-len(examples) // settings.batch_size)
        learner = make_learner(config, lr=settings.lr, total_steps=steps, adapter_dir=start,
                               in_process=config.learner.num_learners == 1)
        try:
            if role is not None:
                print(f"[sft] GLPFT local pass of {role}: {len(examples)} episodes with its turns")
            pass_losses = train_sft(learner, examples, settings, seed=config.seed, log=log if role is None else None)
            learner.save(out)
        finally:
            release([learner])
        if role is None:
            losses = pass_losses
    mark_done(config, "sft")
    return losses


TURN_BUDGETS = {"curate": ("curriculum",), "train": ("grpo",), "eval": ("eval",),
                "quickstart": ("curriculum", "grpo", "eval")}
"""The sections whose ``max_new_tokens`` a command's student generates with."""


def turn_budget_warnings(config: RunConfig, command: str = "quickstart") -> list[str]:
    """Where a turn budget ``command`` uses (``TURN_BUDGETS``) is shorter than the teacher's longest
    turn the student learned from: its turns are cut there (an unclosed tag, a tool call lost, the
    format reward gone). Empty before ``recrl teach``."""
    from teachers.pipeline import read_dataset

    paths = RunPaths(Path(config.run_dir))
    if not paths.teacher_dataset.is_dir():
        return []
    tokenizer = load_tokenizer(resolve_model(config.model.name))
    longest = max((len(tokenizer.encode(turn.text)) for trajectory in read_dataset(paths.teacher_dataset)
                   for turn in trajectory.turns if turn.is_agent), default=0)
    budgets = {f"{section}.max_new_tokens": getattr(config, section).max_new_tokens
               for section in TURN_BUDGETS.get(command, ())}
    return [f"the teacher's turns run up to {longest} tokens, but {name}={budget}: the student's turns are cut "
            f"there (raise it to at least {longest})" for name, budget in budgets.items() if budget < longest]


# curate (STAR's RL data) --------------------------------------------------------------------------

def stage_curate(config: RunConfig) -> dict:
    """The SFT student samples each candidate training task ``curriculum.samples`` times; the tasks
    it solves sometimes, binned and mixed (``rl.curriculum``), become GRPO's tasks.

    Writes ``curriculum/dataset`` (one row per kept task: its id, user, successes and bin) and
    ``curriculum/counts.json``; returns the counts. Each chunk of tasks sampled is noted in
    ``curriculum-samples.jsonl`` as it finishes (the target's rank in every sample): an interrupted
    curation goes on from there, and one over more candidates, or counting success at another rank
    (``curriculum.success_at``), samples only what it has not (with the same student and sampling settings).
    """
    import datasets

    from rl.curriculum import curate

    paths = RunPaths(Path(config.run_dir))
    if not is_checkpoint(paths.sft_adapter):
        raise FileNotFoundError(f"no SFT adapter at {paths.sft_adapter}: run `recrl sft` first")
    settings = config.curriculum
    catalog, train_tasks, _ = stage_data(config)
    spec = env_spec(config, catalog, train_tasks, train_tasks=train_tasks)
    candidates = sample_in_order(train_tasks, settings.candidate_tasks, seed=config.seed)
    # What decides the samples (not which candidates, how success is counted, or the mix).
    sampling = dataclasses.replace(config, curriculum=dataclasses.replace(settings, candidate_tasks=0, mix=[1.0] * 3,
                                                                          success_at=1))
    key = hashlib.sha256((stage_key(sampling, "curate") + checkpoint_fingerprint(paths.sft_adapter)).encode()).hexdigest()
    ranks = sampled_ranks(paths.curriculum_samples, key)
    todo = [task for task in candidates if task.task_id not in ranks]
    if todo:
        workers = rollout_workers(config, spec, adapter_dir=paths.sft_adapter)
        params = SamplingParams(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature)
        per_chunk = max(1, len(workers) * config.rollout.max_batch_size // settings.samples)
        try:
            with tqdm(total=len(candidates), initial=len(candidates) - len(todo), desc="curriculum tasks",
                      unit="task") as progress:
                for start in range(0, len(todo), per_chunk):
                    part = todo[start : start + per_chunk]
                    requests = [EpisodeRequest(task, group_id=task.task_id,
                                               seed=derive_seed(config.seed, "curriculum", task.task_id, sample))
                                for task in part for sample in range(settings.samples)]
                    played = map_actors(workers, RolloutWorker.rollout, requests, params=params, source="student_sft")
                    new = {task.task_id: [] for task in part}
                    for trajectory in played:
                        new[trajectory.task_id].append(trajectory.success_rank)
                    with paths.curriculum_samples.open("a") as handle:  # a rerun starts after the last chunk
                        handle.writelines(json.dumps({"key": key, "task_id": task_id, "ranks": task_ranks}) + "\n"
                                          for task_id, task_ranks in new.items())
                    ranks.update(new)
                    progress.update(len(part))
        finally:
            release(workers)
    successes = {task.task_id: sum(rank is not None and rank <= settings.success_at for rank in ranks[task.task_id])
                 for task in candidates}
    kept, counts = curate(successes, samples=settings.samples, mix=settings.mix, seed=config.seed)
    if not kept:
        # Nothing in between: GRPO's groups would all be uniform on these tasks; keep going on all of them.
        print(f"[curate] warning: no candidate task was solved by some but not all of {settings.samples} "
              f"samples (successes: {counts['successes']}); GRPO trains on every candidate. Sample more tasks "
              "(curriculum.candidate_tasks), or a student that ranks better (more SFT).")
        kept = {task_id: "unbinned" for task_id in successes}
        counts["kept"] = len(kept)
    by_id = {task.task_id: task for task in candidates}
    rows = [{"task_id": task_id, "user_id": by_id[task_id].user_id, "successes": successes[task_id],
             "difficulty": name} for task_id, name in kept.items()]
    shutil.rmtree(paths.curriculum, ignore_errors=True)
    datasets.Dataset.from_list(rows).save_to_disk(str(paths.curriculum / "dataset"))
    (paths.curriculum / "counts.json").write_text(json.dumps(counts, indent=2))
    mark_done(config, "curate")
    return counts


def sampled_ranks(path: Path, key: str) -> dict[str, list[int | None]]:
    """The target's rank in each sample of the tasks already sampled into ``path`` with the sampling
    settings ``key`` (student, temperature, samples...); lines written otherwise are dropped from the file."""
    if not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [row for row in rows if row.get("key") == key and "ranks" in row]
    if len(kept) < len(rows):
        path.write_text("".join(json.dumps(row) + "\n" for row in kept))
    return {row["task_id"]: row["ranks"] for row in kept}


def curriculum_tasks(config: RunConfig, train_tasks: list[RankingTask]) -> list[RankingTask]:
    """GRPO's tasks: the curated ones when ``curriculum.enabled``, else every training task."""
    import datasets

    if not config.curriculum.enabled:
        return train_tasks
    folder = RunPaths(Path(config.run_dir)).curriculum / "dataset"
    if not folder.is_dir():
        raise FileNotFoundError(f"no curated RL data at {folder}: run `recrl curate` first "
                                "(or set curriculum.enabled=false to train on every training task)")
    kept = set(datasets.load_from_disk(str(folder))["task_id"])
    return [task for task in train_tasks if task.task_id in kept]


# train (GRPO) ----------------------------------------------------------------------------------

def rollout_workers(config: RunConfig, spec: EnvSpec, *, adapter_dir: Path | Mapping[str, Path] | None,
                    placement: Placement | None = None) -> list:
    """Rollout workers as Ray actors (or one in-process worker when ``rollout.num_workers=0``), starting
    from ``adapter_dir`` (or from one checkpoint a policy role), in ``placement``'s rollout slots (by
    default, an equal share of the GPUs each)."""
    if len(config.rollout.policies) > 1 and resolve_engine(config.rollout.engine) == "vllm":
        raise ValueError(f"rollout.policies={list(config.rollout.policies)} needs rollout.engine=hf: a worker holds "
                         "one engine per policy, and vLLM runs one engine per process")
    kwargs = dict(model_name=config.model.name, env_spec=spec, lora=lora_settings(config), adapter_dir=adapter_dir,
                  device=resolve_device(config.model.device), config=config.rollout)
    if config.rollout.num_workers <= 0:
        return [RolloutWorker(**kwargs)]
    placement = placement or run_placement(config, training=False)
    return [spawn(RolloutWorker, 1, num_threads=1, **placement.take("rollout"), **kwargs)[0]
            for _ in range(config.rollout.num_workers)]


def make_learner(config: RunConfig, *, lr: float, total_steps: int, adapter_dir: Path | None, in_process: bool,
                 placement: Placement | None = None):
    """The policy learner: in this process, one Ray actor, or a group of ``learner.num_learners``
    actors (DDP or DeepSpeed) used like one, in ``placement``'s learner slots (by default, the
    learners share the GPUs)."""
    from rl.learner import Learner
    from rl.learner_group import LearnerGroup

    kwargs = dict(model_name=config.model.name, lora=lora_settings(config), lr=lr, adapter_dir=adapter_dir,
                  seed=config.seed, device=resolve_device(config.model.device), bf16=learner_bf16(config),
                  total_steps=total_steps)
    if in_process and config.learner.num_learners == 1:
        return Learner(config=config.learner, **kwargs)
    placement = placement or Placement.create(PlacementConfig(), {"learner": config.learner.num_learners},
                                              gpus=cluster_gpus(config))
    slots = [placement.take("learner") for _ in range(config.learner.num_learners)]
    if config.learner.num_learners > 1:
        # Workers idle while learners run; the learners share the cores.
        threads = max(1, (os.cpu_count() or 1) // config.learner.num_learners)
        colocated = slots[0]["placement"] is not None
        return LearnerGroup.spawn(config.learner, num_gpus=slots[0]["num_gpus"], slots=slots if colocated else None,
                                  num_threads=threads, **kwargs)
    # Workers idle while the learner and the reference run, so these may use every core.
    return spawn(Learner, 1, num_cpus=1, num_threads=os.cpu_count(), **slots[0], config=config.learner, **kwargs)[0]


def grpo_optimizer_steps(config: RunConfig) -> int:
    """Optimizer steps a GRPO run takes (what its learning-rate schedules span)."""
    return config.grpo.steps * config.grpo.mini_batches * config.grpo.epochs


def grpo_roles(config: RunConfig, *, start_dir: Path, reference_dir: Path, critic_dir: Path | None,
               placement: Placement):
    """The GRPO learner (one, or a group), the frozen reference policy and, for PPO, the critic
    (from ``critic_dir``, else from ``start_dir``): Ray actors (or in-process when
    ``rollout.num_workers=0``), in ``placement``'s slots."""
    from rl.critic import Critic
    from rl.reference import ReferenceModel

    in_process = config.rollout.num_workers <= 0
    if in_process and config.learner.num_learners > 1:
        raise ValueError(f"learner.num_learners={config.learner.num_learners} runs learners as Ray actors: "
                         "set rollout.num_workers >= 1")
    grpo = config.grpo
    learner = make_learner(config, lr=grpo.lr, total_steps=grpo_optimizer_steps(config),
                           adapter_dir=start_dir, in_process=in_process, placement=placement)
    reference_kwargs = dict(model_name=config.model.name, checkpoint_dir=reference_dir, lora=lora_settings(config),
                            device=resolve_device(config.model.device), bf16=learner_bf16(config))
    critic_kwargs = dict(model_name=config.model.name, lora=lora_settings(config), lr=grpo.critic_lr,
                         adapter_dir=critic_dir or start_dir, seed=config.seed, device=resolve_device(config.model.device),
                         bf16=learner_bf16(config), config=dataclasses.replace(config.learner, num_learners=1),
                         total_steps=grpo_optimizer_steps(config))
    roles = [(ReferenceModel, reference_kwargs)] + [(Critic, critic_kwargs)] * (grpo.advantage_estimator == "gae")
    if in_process:
        made = [cls(**kwargs) for cls, kwargs in roles]
    else:  # workers idle while these run, so each may use every core
        made = [spawn(cls, 1, num_cpus=1, num_threads=os.cpu_count(), **placement.take(role), **kwargs)[0]
                for role, (cls, kwargs) in zip(("reference", "critic"), roles)]
    return learner, made[0], (made[1:] or [None])[0]


def model_rewards(config: RunConfig) -> tuple[dict[str, Callable], list]:
    """The run's model-based rewards (``rewards.compose.MODEL_REWARDS``) as batch scorers, and the
    Ray actors serving them (to release with the other roles): the learned critic, from
    ``reward.critic_dir``, served by a ``CriticServer`` actor (in this process without Ray workers)."""
    if "critic" not in config.reward.weights:
        return {}, []
    from rewards.critic_reward import CriticReward, CriticServer
    from rewards.judge import dialogue_text

    if not config.reward.critic_dir:
        raise ValueError("reward.weights names 'critic': set reward.critic_dir to a trained critic "
                         "(`recrl critic train`)")
    if config.rollout.num_workers <= 0:
        critic = CriticReward(config.reward.critic_dir)
        return {"critic": lambda trajectories: critic.score([dialogue_text(t) for t in trajectories])}, []
    server = spawn(CriticServer, 1, config.reward.critic_dir, num_cpus=0)[0]
    return {"critic": lambda trajectories: server.score([dialogue_text(t) for t in trajectories])}, [server]


def grpo_trainer_state(config: RunConfig, train_tasks: list[RankingTask], sft_fingerprint: str) -> dict:
    """What a GRPO checkpoint records besides the step: the SFT weights it grew from, and the
    settings that decide the data order (``rl.grpo.DATA_ORDER_KEYS``)."""
    tasks_digest = hashlib.sha256("\n".join(t.task_id for t in train_tasks).encode()).hexdigest()
    return {"sft": sft_fingerprint, "seed": config.seed, "tasks_per_step": config.grpo.tasks_per_step,
            "group_size": config.grpo.group_size, "tasks": tasks_digest}


def resume_from(paths: RunPaths, trainer_state: dict, *, roles: Sequence[str] = (POLICY,)) -> Path | None:
    """The latest GRPO checkpoint to resume (of the first policy, when ``roles`` names several),
    or None to start from the SFT adapter.

    Checkpoints grown from another SFT adapter are deleted (a new SFT starts a new GRPO run); a
    checkpoint whose data-order settings changed is refused with ``ResumeError``.
    """

    from rl.checkpoints import check_resume, latest_checkpoint, read_trainer_state, remove_stale_temp
    from rl.grpo import DATA_ORDER_KEYS, policy_root

    for role in roles:  # what a writer killed mid-save left
        remove_stale_temp(policy_root(paths.grpo_checkpoints, role, len(roles)))
    root = policy_root(paths.grpo_checkpoints, roles[0], len(roles))
    latest = latest_checkpoint(root)
    if latest is None:
        return None
    saved = read_trainer_state(latest)
    if saved.get("sft") != trainer_state["sft"]:
        print(f"[train] starting over: the checkpoints in {paths.grpo_checkpoints} grew from another SFT adapter")
        shutil.rmtree(paths.grpo_checkpoints)
        return None
    check_resume(saved, trainer_state, keys=DATA_ORDER_KEYS, folder=root)
    return latest


def stage_train(config: RunConfig, log: Log | None = None) -> list[dict[str, float]]:
    """GRPO from the SFT adapter with a learner, a reference and rollout workers; saves the final weights.

    The latest GRPO checkpoint of an interrupted run from the same SFT adapter is resumed.
    """

    from rl.checkpoints import TRAINER_STATE, latest_checkpoint, read_trainer_state, step_dir
    from rl.grpo import critic_root, policy_root, train_grpo
    from rl.learner import Learner

    paths = RunPaths(Path(config.run_dir))
    if not is_checkpoint(paths.sft_adapter):
        raise FileNotFoundError(f"no SFT adapter at {paths.sft_adapter}: run `recrl sft` first")
    catalog, train_tasks, _ = stage_data(config)
    spec = env_spec(config, catalog, train_tasks, train_tasks=train_tasks)
    train_tasks = curriculum_tasks(config, train_tasks)
    trainer_state = grpo_trainer_state(config, train_tasks, checkpoint_fingerprint(paths.sft_adapter))
    roles = list(config.rollout.policies)
    if len(roles) > 1 and config.grpo.advantage_estimator == "gae":
        raise ValueError(f"PPO's critic serves one policy; rollout.policies={roles} trains with grpo or reinforce_pp")
    roots = {role: policy_root(paths.grpo_checkpoints, role, len(roles)) for role in roles}
    resume = resume_from(paths, trainer_state, roles=roles)
    start_step = min(read_trainer_state(resume)["step"], config.grpo.steps) if resume else 0
    history = []
    if start_step < config.grpo.steps:
        if start_step:
            print(f"[train] resuming after step {start_step} of {config.grpo.steps} from {resume} "
                  f"(delete {paths.grpo_checkpoints} to start over)")
        sft = role_checkpoints(paths.sft_adapter, roles)  # each policy's GLPFT local adapter, where made
        starts = {role: step_dir(root, start_step) if resume else sft[role] for role, root in roots.items()}
        critic_dir = step_dir(critic_root(paths.grpo_checkpoints), start_step) if resume else None
        needed = [*starts.values(), *([critic_dir] if resume and config.grpo.advantage_estimator == "gae" else [])]
        missing = [str(folder) for folder in needed if not folder.is_dir()]
        if missing:
            raise FileNotFoundError(f"resuming after step {start_step} needs {missing}, which are missing; delete "
                                    f"{paths.grpo_checkpoints} to start over")
        placement = run_placement(config, training=True)
        workers = rollout_workers(config, spec, adapter_dir=starts if len(roles) > 1 else starts[roles[0]],
                                  placement=placement)
        learner, reference, critic = grpo_roles(config, start_dir=starts[roles[0]], reference_dir=paths.sft_adapter,
                                                critic_dir=critic_dir, placement=placement)
        batch_rewards, reward_servers = model_rewards(config)
        learners = {roles[0]: learner}
        for role in roles[1:]:  # each further policy: its own learner (or group) and optimizer
            learners[role] = make_learner(config, lr=config.grpo.lr, total_steps=grpo_optimizer_steps(config),
                                          adapter_dir=starts[role], in_process=config.rollout.num_workers <= 0,
                                          placement=placement)
        try:
            if resume:
                for role, policy in learners.items():
                    policy.load_optimizer(starts[role])
                if critic is not None:
                    critic.load_optimizer(critic_dir)
            several = len(roles) > 1
            history = train_grpo(learner=learners if several else learner,
                                 reference=dict.fromkeys(roles, reference) if several else reference,
                                 workers=workers, tasks=train_tasks, config=config.grpo,
                                 reward_weights=config.reward.weights, seed=config.seed,
                                 checkpoint_root=paths.grpo_checkpoints, trainer_state=trainer_state, log=log,
                                 start_step=start_step, critic=critic,
                                 tokenizer=load_tokenizer(resolve_model(config.model.name)), batch_rewards=batch_rewards)
        finally:
            release([role for role in (*workers, *learners.values(), reference, critic, *reward_servers)
                     if role is not None])
            placement.close()
    shutil.rmtree(paths.final_adapter, ignore_errors=True)
    for role, root in roots.items():  # several policies: one folder each
        shutil.copytree(latest_checkpoint(root), paths.final_adapter if len(roles) == 1 else paths.final_adapter / role,
                        ignore=shutil.ignore_patterns(Learner.OPTIMIZER_FILE, TRAINER_STATE))
    return history
