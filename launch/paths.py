"""Where each stage of a run puts its output (no heavy imports: ``recrl report`` reads runs with it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
    def teacher_fusion(self) -> Path:
        return self.root / "teacher" / "fusion.json"

    @property
    def signals(self) -> Path:
        return self.root / "signals"

    @property
    def curriculum_samples(self) -> Path:
        return self.root / "curriculum-samples.jsonl"

    @property
    def curriculum(self) -> Path:
        return self.root / "curriculum"

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

    @property
    def eval_samples(self) -> Path:
        """Sample evaluation episodes in full: ``<method>.jsonl``, a ``Trajectory.to_row`` a line."""
        return self.root / "samples"

    @property
    def teacher_eval(self) -> Path:
        """The teacher's evaluation episodes, one folder of shards per task list and settings."""
        return self.root / "teacher-eval"

    @property
    def student_eval(self) -> Path:
        """A student's greedy evaluation episodes, one folder of shards per student, weights, task
        list and settings."""
        return self.root / "student-eval"

    def config(self, command: str) -> Path:
        """The configuration ``recrl <command>`` ran with (each command saves its own)."""
        return self.root / f"config.{command}.yaml"

    def saved_config(self, *commands: str) -> Path:
        """The configuration the first of ``commands`` that ran here saved, or a FileNotFoundError."""
        for command in commands:
            if self.config(command).is_file():
                return self.config(command)
        raise FileNotFoundError(f"{self.root} holds no {' or '.join(self.config(c).name for c in commands)}: "
                                f"run `recrl {commands[0]}` there first")
