"""Tests that run inside veRL's environment (``.venv-verl``, built by ``make setup``): each piece of a
``recrl export verl`` is loaded and run by veRL's own code.

The main suite runs them there (``tests/launch/test_verl_export.py``); where veRL is not installed
they are not collected. Run them directly with
``.venv-verl/bin/python -m pytest tests/verl_env``: the export they check is ``RECRL_VERL_EXPORT``,
or one made for them with the main environment (``.venv``).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("verl") is None:
    collect_ignore_glob = ["test_*.py"]

REPO = Path(__file__).resolve().parents[2]
EXPORT_OVERRIDES = ("data.dataset=synthetic", "model.name=tiny-random", "eval.num_tasks=8", "grpo.steps=1",
                    "logging.mode=disabled")
"""The run config of the export checked here (and by tests/launch/test_verl_export.py)."""


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    """A ``recrl export verl`` folder: ``RECRL_VERL_EXPORT``, or one written by the main environment."""
    given = os.environ.get("RECRL_VERL_EXPORT")
    if given:
        return Path(given)
    root = tmp_path_factory.mktemp("verl_export")
    main_python = REPO / ".venv" / "bin" / "python"
    python = str(main_python) if main_python.is_file() else sys.executable
    command = [python, "-m", "launch.verl_export", "--out", str(root / "verl"), f"run_dir={root / 'run'}",
               *EXPORT_OVERRIDES]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
    return root / "verl"


@pytest.fixture(scope="session")
def verl_config(export_dir):
    """veRL's ``ppo_trainer`` config composed by Hydra with the export's overrides, as main_ppo does."""
    from hydra import compose, initialize_config_dir

    import verl
    from launch.verl_export.launch import trainer_command

    config_dir = Path(verl.__file__).parent / "trainer" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        return compose(config_name="ppo_trainer", overrides=trainer_command(export_dir)[3:])


@pytest.fixture(scope="session")
def tokenizer(verl_config):
    """The policy's tokenizer as veRL loads it (``HFModelConfig``)."""
    from verl.utils.config import omega_conf_to_dataclass

    return omega_conf_to_dataclass(verl_config.actor_rollout_ref.model).tokenizer


@pytest.fixture(scope="session")
def bundle(export_dir):
    from launch.verl_export.bundle import load_bundle

    return load_bundle(export_dir / "env")
