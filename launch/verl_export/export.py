"""``export_verl``: a run config's tasks, tools, episode loop, rewards and trainer settings in veRL's forms.

    DIR/data/train.parquet, data/val.parquet  veRL's RL dataset schema, one row per task
    DIR/env/                                  the environment bundle (catalog, tasks per split, settings)
    DIR/tool_config.yaml                      our tools as veRL native tools
    DIR/agent_loop.yaml                       our episode loop as the ``recrl_episode`` agent loop
    DIR/verl_config.yaml, DIR/train.sh        veRL's trainer settings, and its launch with them

Rows of ``train.parquet`` are GRPO's tasks (the curated ones when ``curriculum.enabled``), those of
``val.parquet`` the held-out tasks our evaluation scores (``eval.num_tasks`` of them). Each row:
``data_source`` (the env id), ``prompt`` (the env's opening messages), ``ability``,
``reward_model`` (``style: rule``, ``ground_truth``: the target), ``agent_name``
(``recrl_episode``) and ``extra_info`` (``split``, ``index``, ``task_id``, ``candidate_item_ids``,
``reward_weights``, ``tools_kwargs``: each tool's ``create_kwargs``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from launch.config import RunConfig
from launch.verl_export import AGENT_NAME
from launch.verl_export.bundle import EnvBundle, load_bundle, write_bundle
from launch.verl_export.config import unsupported_settings, verl_settings, write_settings
from launch.verl_export.launch import SETTINGS_FILE, write_script

TOOL_CLASS = "launch.verl_export.tools.RecTool"
AGENT_LOOP_CLASS = "launch.verl_export.agent_loop.RecEpisodeAgentLoop"
REWARD_FILE = Path(__file__).resolve().with_name("reward.py")
"""veRL's ``custom_reward_function.path``."""


@dataclass(frozen=True)
class VerlExport:
    """Where an export put each piece, and how many rows each split holds."""

    folder: Path
    train_rows: int
    val_rows: int

    @property
    def bundle(self) -> Path:
        return self.folder / "env"

    @property
    def train_file(self) -> Path:
        return self.folder / "data" / "train.parquet"

    @property
    def val_file(self) -> Path:
        return self.folder / "data" / "val.parquet"

    @property
    def tool_config(self) -> Path:
        return self.folder / "tool_config.yaml"

    @property
    def agent_loop_config(self) -> Path:
        return self.folder / "agent_loop.yaml"

    @property
    def settings(self) -> Path:
        return self.folder / SETTINGS_FILE


def export_verl(config: RunConfig, out_dir: str | Path) -> VerlExport:
    """Writes everything veRL's trainer needs to train ``config``'s policy on ``config``'s tasks.

    Builds the run's tasks first if ``recrl data`` has not (and fits the sequential model when the
    ``sequential`` tool is offered); starts from the run's SFT adapter when there is one.

    Raises:
        ValueError: If the config has settings veRL cannot reproduce.
        FileNotFoundError: If ``curriculum.enabled`` and ``recrl curate`` has not run.
    """
    from launch import stages
    from launch.evaluation import held_out_sample
    from rollout.chat import ChatFormat
    from rollout.models import load_tokenizer, resolve_model

    problems = unsupported_settings(config)
    if problems:
        raise ValueError("veRL cannot train this config: " + "; ".join(problems))
    folder = Path(out_dir).resolve()
    catalog, train_tasks, eval_tasks = stages.stage_data(config)
    splits = {"train": train_tasks, "val": held_out_sample(config, eval_tasks)}
    sequential = None
    if "sequential" in config.env.tools:  # fitted as stage_train and evaluation fit it
        sequential = {"train": stages.sequential_scorer(config, catalog, train_tasks),
                      "val": stages.sequential_scorer(config, catalog, [*train_tasks, *splits["val"]])}
    shutil.rmtree(folder / "env", ignore_errors=True)
    write_bundle(folder / "env", catalog=catalog, splits=splits, env=config.env,
                 reward_weights=config.reward.weights, max_new_tokens=config.grpo.max_new_tokens,
                 sequential=sequential)
    bundle = load_bundle.__wrapped__(folder / "env")  # not a cached bundle of an earlier export
    model_dir = resolve_model(config.model.name)
    chat = ChatFormat(load_tokenizer(model_dir))
    rows = {"train": task_rows(bundle, "train", stages.curriculum_tasks(config, train_tasks), chat),
            "val": task_rows(bundle, "val", splits["val"], chat)}
    (folder / "data").mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        write_parquet(split_rows, folder / "data" / f"{split}.parquet")
    tool_specs = bundle.make_env("train", count_tokens=chat.count_tokens).tool_specs
    write_yaml({"tools": [{"class_name": TOOL_CLASS, "config": {"type": "native", "bundle": str(bundle.folder)},
                           "tool_schema": spec.openai_schema()} for spec in tool_specs]},
               folder / "tool_config.yaml")
    write_yaml([{"name": AGENT_NAME, "_target_": AGENT_LOOP_CLASS, "bundle": str(bundle.folder),
                 "max_new_tokens": config.grpo.max_new_tokens}], folder / "agent_loop.yaml")
    model_dir, adapter_dir = start_weights(config, model_dir)
    longest = max(len(chat.prompt_ids(row["prompt"])) for split_rows in rows.values() for row in split_rows)
    settings = verl_settings(config, export_dir=folder, model_dir=model_dir, adapter_dir=adapter_dir,
                             max_prompt_length=-(-longest // 64) * 64, reward_file=REWARD_FILE)
    write_settings(settings, folder / SETTINGS_FILE)
    write_script(folder)
    return VerlExport(folder, train_rows=len(rows["train"]), val_rows=len(rows["val"]))


def task_rows(bundle: EnvBundle, split: str, tasks: list, chat) -> list[dict[str, Any]]:
    """veRL dataset rows: each task's opening messages as its env writes them, and its target."""
    from rewards.adapters import COMPLETION_TASKS

    env = bundle.make_env(split, count_tokens=chat.count_tokens)
    env_id = bundle.env.env_id
    truth_column = COMPLETION_TASKS[env_id].truth_column if env_id in COMPLETION_TASKS else "target_item_id"
    tool_names = [spec.name for spec in env.tool_specs]
    rows = []
    for index, task in enumerate(tasks):
        prompt, info = env.reset(options={"task": task})
        extra_info = {"split": split, "index": index, "task_id": task.task_id,
                      "reward_weights": dict(bundle.reward_weights),
                      "tools_kwargs": {name: {"create_kwargs": {"task_id": task.task_id, "split": split}}
                                       for name in tool_names}}
        if hasattr(task, "candidate_item_ids"):
            extra_info["candidate_item_ids"] = list(task.candidate_item_ids)
        rows.append({
            "data_source": env_id,
            "prompt": [{"role": "system", "content": info["system_prompt"]}, {"role": "user", "content": prompt}],
            "ability": "recommendation",
            "reward_model": {"style": "rule", "ground_truth": getattr(task, truth_column)},
            "agent_name": AGENT_NAME,
            "extra_info": extra_info,
        })
    return rows


def start_weights(config: RunConfig, model_dir: Path) -> tuple[Path, Path | None]:
    """The model veRL starts from and the LoRA adapter on it: the run's SFT weights where they exist
    (as our GRPO starts from them), else the base model with a fresh adapter."""
    from launch.stages import RunPaths

    sft = RunPaths(Path(config.run_dir)).sft_adapter.resolve()
    if (sft / "adapter_config.json").is_file() and config.model.lora_r > 0:
        return model_dir, sft
    if (sft / "config.json").is_file():
        return sft, None
    print(f"[export] no SFT weights at {sft}: veRL starts from the base model {model_dir}")
    return model_dir, None


def write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not rows:
        raise ValueError(f"no tasks for {path.name}: check data.* and curriculum.* (the split came out empty)")
    pq.write_table(pa.Table.from_pylist(rows), path)


def write_yaml(value: Any, path: Path) -> None:
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(value)))
