"""The veRL backend: ``recrl export verl`` writes our tasks, tools, episode loop, rewards and trainer
settings in veRL's forms, and (``--launch``, or ``backend=verl``) starts veRL's trainer on them.

    export.py      export_verl: parquet datasets, environment bundle, tool and agent loop configs
    config.py      veRL's trainer settings generated from a run config
    launch.py      python -m verl.trainer.main_ppo in veRL's environment (.venv-verl)
    bundle.py      the environments and tools rebuilt from an export (both environments)
    tools.py       our tools as veRL BaseTools             (imported in veRL's environment only)
    agent_loop.py  our episode loop as veRL's recrl_episode agent loop  (likewise)
    reward.py      veRL's compute_score                    (likewise; needs no veRL)

This module stays light: ``recrl --help`` and veRL's workers both import it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launch.config import RunConfig
    from launch.verl_export.export import VerlExport

AGENT_NAME = "recrl_episode"
"""The agent loop the exported rows name (``agent_loop.RecEpisodeAgentLoop``'s name in veRL's registry)."""

HELP = "write the run's tasks, tools, episode loop, rewards and trainer config for veRL (and start it)"


def export_verl(config: "RunConfig", out_dir: str | Path) -> "VerlExport":
    """Writes ``config``'s veRL export into ``out_dir`` (see ``launch.verl_export.export``)."""
    from launch.verl_export.export import export_verl as export

    return export(config, out_dir)


def default_out_dir(config: "RunConfig") -> Path:
    """Where an export goes unless told: ``<run_dir>/verl``."""
    return Path(config.run_dir) / "verl"


def train_with_verl(config: "RunConfig", *, out_dir: str | Path | None = None, extra: list[str] | tuple = ()) -> int:
    """``backend=verl``'s training stage: export, then veRL's trainer; its exit code."""
    from launch.verl_export.launch import launch

    exported = export_verl(config, out_dir or default_out_dir(config))
    print(f"[export] wrote {exported.folder} ({exported.train_rows} training and {exported.val_rows} held-out tasks)")
    return launch(exported.folder, extra=list(extra), wandb_mode=config.logging.mode)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Adds ``recrl export verl [--config X] [--out DIR] [--launch] [--verl KEY=VALUE] [overrides]``."""
    export = subparsers.add_parser("export", help="write a run for another trainer (veRL)",
                                   description="write a run for another trainer")
    targets = export.add_subparsers(dest="target", required=True, metavar="target")
    verl = targets.add_parser(
        "verl", help=HELP, description=HELP,
        epilog="example: recrl export verl --config configs/quickstart.yaml --out runs/verl --launch "
               "--verl trainer.n_gpus_per_node=8")
    verl.add_argument("--config", help="YAML file overriding the defaults")
    verl.add_argument("--out", help="the folder to write (default: <run_dir>/verl)")
    verl.add_argument("--launch", action="store_true",
                      help="then start veRL's trainer on it (in .venv-verl; needs GPUs and vLLM)")
    verl.add_argument("--verl", action="append", default=[], metavar="KEY=VALUE",
                      help="a veRL config override for --launch, e.g. trainer.n_gpus_per_node=8; repeatable")
    verl.add_argument("overrides", nargs="*", help="key=value overrides of the run config, e.g. grpo.steps=5")
    return export


def main(args: argparse.Namespace) -> int:
    """Runs ``recrl export verl``: 0 on success, 1 on an error it explains, 2 on a config error."""
    from launch.config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as error:
        print(f"recrl: config error: {error}", file=sys.stderr)
        return 2
    try:
        exported = export_verl(config, args.out or default_out_dir(config))
        print(f"[export] wrote {exported.folder}: {exported.train_rows} training and {exported.val_rows} held-out "
              f"tasks; start veRL with {exported.folder / 'train.sh'} (in an environment with veRL)")
        if not args.launch:
            return 0
        from launch.verl_export.launch import launch

        return launch(exported.folder, extra=args.verl, wandb_mode=config.logging.mode)
    except (FileNotFoundError, ValueError) as error:
        print(f"recrl export {args.target}: error: {error}", file=sys.stderr)
        return 1
