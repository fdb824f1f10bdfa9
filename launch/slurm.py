"""`recrl slurm`: a SLURM batch script that runs a recrl command on a Ray cluster of the job's nodes.

The script (``launch/slurm/recrl.sbatch``, rendered here) starts the Ray head on the job's first
node and a worker on every other one with ``srun``, waits until all of them have joined, runs
``recrl STAGE --config FILE OVERRIDES`` on the head with ``RAY_ADDRESS`` set (so recrl joins the
cluster, ``rollout.actors.init_ray``), and stops Ray when the command ends or the job is signalled.
``--submit`` hands it to ``sbatch``.
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parent / "slurm" / "recrl.sbatch"
LOCAL_CLUSTER = "bash launch/slurm/local_cluster.sh start"

__all__ = ["SlurmJob", "add_parser", "main", "render_sbatch", "submit"]


@dataclass(frozen=True)
class SlurmJob:
    """One SLURM job: its allocation, the Ray cluster on it, and the recrl command it runs."""

    nodes: int
    """Nodes in the job; Ray's head runs on the first, a Ray worker on each other one."""
    partition: str
    """The SLURM partition to queue in."""
    config: str
    """The run's YAML config, an absolute path or one relative to ``workdir``."""
    gpus_per_node: int = 0
    """GPUs on each node (``--gres=gpu:G`` and Ray's ``--num-gpus``); 0 on CPU nodes."""
    stage: str = "train"
    """The recrl command to run: a stage, or ``quickstart`` for all of them."""
    overrides: tuple[str, ...] = ()
    """``key=value`` config overrides passed on to the command."""
    cpus_per_node: int | None = None
    """CPUs to ask for on each node; None: the whole node (``--exclusive``)."""
    ray_cpus: int | None = None
    """Logical CPUs each node's Ray offers (each recrl actor reserves one); None: Ray counts the node's."""
    time_limit: str | None = None
    """SLURM's ``--time`` (e.g. ``2-00:00:00``); None: the partition's default."""
    python_env: str = sys.prefix
    """The Python environment (venv or conda prefix) with recrl and Ray, the same path on every node."""
    workdir: str = field(default_factory=lambda: str(Path.cwd()))
    """The folder the job runs in (relative paths in the config are relative to it)."""
    output: str = "slurm-%x-%j.out"
    """The job's log file (SLURM's ``--output``; ``%j`` is the job id), relative to ``workdir``."""
    port: int = 6379
    """The Ray head's GCS port."""
    dashboard_port: int = 8265
    """The Ray dashboard's port on the head (``recrl submit`` and ``ray job`` talk to it)."""
    join_timeout: int = 300
    """Seconds to wait for every node's Ray to join before the job fails."""
    job_name: str = ""
    """SLURM's job name; empty: ``recrl-<stage>``."""
    sbatch_args: tuple[str, ...] = ()
    """More ``#SBATCH`` options, as written on sbatch's command line (e.g. ``--account=proj``)."""
    ray_args: tuple[str, ...] = ()
    """More ``ray start`` options for every node (e.g. ``--object-store-memory=2000000000``)."""

    @property
    def name(self) -> str:
        """The job's name in SLURM."""
        return self.job_name or f"recrl-{self.stage}"


def render_sbatch(job: SlurmJob) -> str:
    """The batch script of ``job``, from ``launch/slurm/recrl.sbatch``.

    Raises:
        ValueError: a setting SLURM or Ray would reject, named with the fix.
    """
    _check(job)
    workdir = Path(job.workdir).resolve()
    config = (workdir / job.config).resolve()
    if not config.is_file():
        raise ValueError(f"config file {config} not found; pass --config with a YAML file (e.g. configs/star.yaml)")
    python_bin = Path(job.python_env).resolve() / "bin"
    if not (python_bin / "ray").is_file() or not (python_bin / "recrl").is_file():
        raise ValueError(f"{python_bin} holds no `ray` and `recrl`; pass --python-env with the environment "
                         f"recrl is installed in")
    gres = f"--gres=gpu:{job.gpus_per_node}" if job.gpus_per_node > 0 else ""
    resources = [f"#SBATCH {gres}"] if gres else []
    resources.append(f"#SBATCH --cpus-per-task={job.cpus_per_node}" if job.cpus_per_node else "#SBATCH --exclusive")
    if job.time_limit:
        resources.append(f"#SBATCH --time={job.time_limit}")
    command = ["recrl", job.stage, "--config", str(config), *job.overrides]
    values = {
        "job_name": job.name,
        "partition": job.partition,
        "nodes": str(job.nodes),
        "resource_lines": "\n".join(resources),
        "workdir": str(workdir),
        "output": job.output,
        "extra_lines": "\n".join(f"#SBATCH {arg}" for arg in job.sbatch_args),
        "python_bin": shlex.quote(str(python_bin)),
        "port": str(job.port),
        "dashboard_port": str(job.dashboard_port),
        "gpus_per_node": str(job.gpus_per_node),
        "ray_options": " ".join(shlex.quote(arg) for arg in
                                ([f"--num-cpus={job.ray_cpus}"] if job.ray_cpus else []) + list(job.ray_args)),
        "step_gres": gres,
        "join_timeout": str(job.join_timeout),
        "command": " ".join(shlex.quote(word) for word in command),
    }
    for name in ("job_name", "partition", "workdir", "output"):
        if not values[name] or re.search(r"\s", values[name]):
            raise ValueError(f"the job's {name.replace('_', ' ')} {values[name]!r} must be non-empty and hold no "
                             f"spaces (SLURM reads it from an #SBATCH line)")
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match.group(1)], TEMPLATE.read_text())


def _check(job: SlurmJob) -> None:
    """Raises ValueError on a job SLURM or Ray cannot run."""
    if job.nodes < 1:
        raise ValueError(f"--nodes must be at least 1 (got {job.nodes})")
    if job.gpus_per_node < 0:
        raise ValueError(f"--gpus-per-node must be 0 (CPU nodes) or more (got {job.gpus_per_node})")
    for name in ("cpus_per_node", "ray_cpus"):
        value = getattr(job, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1 (got {value}); "
                             f"leave it out for the default")
    from launch.cli import STAGES

    if job.stage not in STAGES:
        raise ValueError(f"unknown stage {job.stage!r}; choose one of {', '.join(STAGES)}")
    for name in ("port", "dashboard_port"):
        if not 1024 <= getattr(job, name) <= 65535:
            raise ValueError(f"--{name.replace('_', '-')} must be between 1024 and 65535 (got {getattr(job, name)})")
    if job.port == job.dashboard_port:
        raise ValueError(f"--port and --dashboard-port must differ (both {job.port})")
    if job.join_timeout < 1:
        raise ValueError(f"--join-timeout must be at least 1 second (got {job.join_timeout})")
    for arg in job.sbatch_args:
        if not arg.startswith("-") or "\n" in arg:
            raise ValueError(f"--sbatch-arg {arg!r} must be one sbatch option, e.g. --account=myproject")
    for arg in job.ray_args:
        if not arg.startswith("-"):
            raise ValueError(f"--ray-arg {arg!r} must be one `ray start` option, e.g. --object-store-memory=2000000000")
    for item in job.overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. grpo.steps=5)")


def submit(script: Path) -> str:
    """Queues ``script`` with ``sbatch`` and returns the job id.

    Raises:
        RuntimeError: no ``sbatch`` here, or it refused the script.
    """
    if shutil.which("sbatch") is None:
        raise RuntimeError(f"sbatch not found: submit from a SLURM login node, or try a one-node SLURM here "
                           f"(`{LOCAL_CLUSTER}`, then the `export SLURM_CONF=...` it prints)")
    done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"sbatch refused {script}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().split(";")[0]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``recrl slurm`` to the CLI's subcommands."""
    from launch.cli import STAGES

    text = "write (and --submit) a SLURM batch script: a Ray cluster over N nodes, then a recrl command on it"
    parser = subparsers.add_parser(
        "slurm", help=text, description=text, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  recrl slurm --nodes 2 --gpus-per-node 8 --partition gpu --config configs/cluster/"
               "star_2x8.yaml --time 2-00:00:00 --submit run_dir=/shared/runs/star")
    parser.add_argument("--nodes", type=int, required=True, help="nodes in the job (the Ray head runs on the first)")
    parser.add_argument("--gpus-per-node", type=int, default=0, help="GPUs on each node (default 0: CPU nodes)")
    parser.add_argument("--partition", required=True, help="the SLURM partition")
    parser.add_argument("--config", required=True, help="the run's YAML config")
    parser.add_argument("--stage", default="train", choices=STAGES, help="the recrl command to run (default train)")
    parser.add_argument("--cpus-per-node", type=int, help="CPUs to ask for on each node (default: whole nodes)")
    parser.add_argument("--ray-cpus", type=int,
                        help="logical CPUs each node's Ray offers; each rollout worker, learner and the reference "
                             "reserves one, so small nodes may need more than they have (default: the node's)")
    parser.add_argument("--time", dest="time_limit", help="the job's time limit, e.g. 2-00:00:00")
    parser.add_argument("--python-env", default=sys.prefix,
                        help=f"the environment with recrl, the same path on every node (default {sys.prefix})")
    parser.add_argument("--port", type=int, default=6379, help="the Ray head's port (default 6379)")
    parser.add_argument("--dashboard-port", type=int, default=8265, help="the Ray dashboard's port (default 8265)")
    parser.add_argument("--join-timeout", type=int, default=300,
                        help="seconds to wait for all nodes' Ray to join (default 300)")
    parser.add_argument("--job-name", default="", help="the SLURM job name (default recrl-STAGE)")
    parser.add_argument("--sbatch-arg", action="append", default=[], dest="sbatch_args", metavar="OPTION",
                        help="another #SBATCH option, e.g. --sbatch-arg=--account=proj; repeat for several")
    parser.add_argument("--ray-arg", action="append", default=[], dest="ray_args", metavar="OPTION",
                        help="another `ray start` option for every node, "
                             "e.g. --ray-arg=--object-store-memory=2000000000")
    parser.add_argument("--out", help="where to write the script; - prints it (default RUN_DIR/JOB_NAME.sbatch)")
    parser.add_argument("--submit", action="store_true", help="queue the script with sbatch")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides, e.g. grpo.steps=5")
    return parser


def main(args: argparse.Namespace) -> int:
    """``recrl slurm``: writes the batch script into the run folder (or ``--out``), and submits it."""
    from launch.config import ConfigError, load_config

    workdir = Path.cwd()
    try:
        run_dir = workdir / load_config(workdir / args.config, args.overrides).run_dir
    except ConfigError as error:
        print(f"recrl slurm: config error: {error}", file=sys.stderr)
        return 2
    job = SlurmJob(nodes=args.nodes, partition=args.partition, config=args.config, gpus_per_node=args.gpus_per_node,
                   stage=args.stage, overrides=tuple(args.overrides), cpus_per_node=args.cpus_per_node,
                   ray_cpus=args.ray_cpus, time_limit=args.time_limit, python_env=args.python_env,
                   workdir=str(workdir), output=str(run_dir / "slurm-%j.out"), port=args.port,
                   dashboard_port=args.dashboard_port, join_timeout=args.join_timeout, job_name=args.job_name,
                   sbatch_args=tuple(args.sbatch_args), ray_args=tuple(args.ray_args))
    try:
        script_text = render_sbatch(job)
    except ValueError as error:
        print(f"recrl slurm: error: {error}", file=sys.stderr)
        return 1
    run_dir.mkdir(parents=True, exist_ok=True)  # SLURM writes the job's log there
    if args.out == "-" and not args.submit:
        print(script_text, end="")
        return 0
    script = Path(args.out) if args.out and args.out != "-" else run_dir / f"{job.name}.sbatch"
    script.write_text(script_text)
    print(f"[slurm] wrote {script}; the job's log goes to {job.output}")
    if args.nodes > 1:
        print(f"[slurm] note: every node writes to {run_dir}: it must be on storage all nodes share")
    if not args.submit:
        print(f"[slurm] submit it with: sbatch {script}")
        return 0
    try:
        job_id = submit(script)
    except RuntimeError as error:
        print(f"recrl slurm: error: {error}", file=sys.stderr)
        return 1
    print(f"[slurm] submitted job {job_id}; follow it with: squeue -j {job_id}; tail -f "
          f"{job.output.replace('%j', job_id)}")
    return 0
