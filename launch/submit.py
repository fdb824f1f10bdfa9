"""`recrl submit`: run a command as a Ray job on a cluster, stream its logs, exit with its status.

The job's driver runs on the head node inside the uploaded working directory, with ``RAY_ADDRESS``
set, so ``recrl`` joins that cluster (``rollout.actors.init_ray``). Outputs go where the run's
``run_dir`` points: give an absolute path on storage every node shares.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
UPLOAD_EXCLUDES = [".git", ".venv", ".venv-*", ".cache", "runs", "wandb", "__pycache__", "*.egg-info"]
"""Never uploaded with the working directory: environments, caches and run outputs."""
FORWARDED_PREFIXES = ("WANDB_",)
"""Local environment variables passed on to the job (W&B settings), besides ``--env``."""
EXIT_CODES = {"SUCCEEDED": 0, "FAILED": 1, "STOPPED": 2}
AGENT_WAIT_S = 60.0
"""How long a submission waits for the head's job agent to come up."""

__all__ = ["add_parser", "job_env", "main", "resolve_address", "runtime_env", "run_dir_warning"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``recrl submit`` to the CLI's subcommands."""
    text = "run a command as a Ray job on a cluster (Ray's Job Submission API), streaming its logs"
    parser = subparsers.add_parser(
        "submit", help=text, description=text, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  recrl submit --address http://HEAD:8265 -- recrl train --config configs/star.yaml "
               "run_dir=/shared/runs/star\n"
               "  recrl submit --status raysubmit_XYZ    (also --logs, --stop)")
    parser.add_argument("--address", help=f"the Ray dashboard's address (default: $RAY_API_SERVER_ADDRESS, an http "
                                          f"$RAY_ADDRESS, else {DEFAULT_ADDRESS})")
    parser.add_argument("--working-dir", default=".",
                        help="the folder uploaded as the job's working directory (default: the current one)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="an environment variable of the job; repeat for several (WANDB_* are passed on)")
    parser.add_argument("--job-id", help="the submission id to use (default: one Ray makes up)")
    parser.add_argument("--no-wait", action="store_true", help="print the job id and return without waiting")
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--status", metavar="JOB_ID", help="print a job's status; exit 0 only if it succeeded")
    actions.add_argument("--logs", metavar="JOB_ID", help="print a job's logs so far")
    actions.add_argument("--stop", metavar="JOB_ID", help="stop a running job")
    parser.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- then the command to run on the cluster")
    return parser


def resolve_address(address: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The dashboard address to talk to.

    >>> resolve_address(None, {"RAY_ADDRESS": "10.0.0.1:6379"})
    'http://127.0.0.1:8265'
    >>> resolve_address(None, {"RAY_ADDRESS": "http://head:8265"})
    'http://head:8265'
    """
    if address:
        return address
    if environ.get("RAY_API_SERVER_ADDRESS"):
        return environ["RAY_API_SERVER_ADDRESS"]
    ray_address = environ.get("RAY_ADDRESS", "")
    return ray_address if ray_address.startswith(("http://", "https://")) else DEFAULT_ADDRESS


def job_env(pairs: Sequence[str], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The job's environment variables: local ``WANDB_*`` ones, then ``--env KEY=VALUE`` pairs.

    >>> job_env(["RECRL_CACHE=/shared/cache"], {"WANDB_MODE": "offline", "HOME": "/root"})
    {'WANDB_MODE': 'offline', 'RECRL_CACHE': '/shared/cache'}
    """
    env = {key: value for key, value in environ.items() if key.startswith(FORWARDED_PREFIXES)}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env {pair!r} is not KEY=VALUE")
        env[key] = value
    return env


def runtime_env(working_dir: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Ray's runtime environment of the job: the uploaded folder (without environments, caches and
    runs) and the environment variables."""
    folder = Path(working_dir).resolve()
    if not folder.is_dir():
        raise FileNotFoundError(f"--working-dir {working_dir}: no such folder")
    return {"working_dir": str(folder), "excludes": list(UPLOAD_EXCLUDES), "env_vars": dict(env)}


def run_dir_warning(entrypoint: Sequence[str]) -> str | None:
    """A warning when a ``recrl`` job would write its run folder inside the job's temporary working
    directory (no absolute ``run_dir=`` override), where nobody finds it after the job.

    >>> run_dir_warning(["recrl", "train", "run_dir=/shared/runs/a"]) is None
    True
    >>> "run_dir" in run_dir_warning(["recrl", "train", "--config", "configs/star.yaml"])
    True
    """
    if not entrypoint or Path(entrypoint[0]).name != "recrl":
        return None
    if any(arg.startswith("run_dir=") and os.path.isabs(arg.removeprefix("run_dir=")) for arg in entrypoint):
        return None
    return ("the job writes its run folder under its temporary working directory on the cluster; pass an "
            "absolute run_dir=/path/on/shared/storage to keep it")


def main(args: argparse.Namespace) -> int:
    """Runs ``recrl submit``: one of --status/--logs/--stop, or a job submission."""
    from ray.job_submission import JobSubmissionClient

    address = resolve_address(args.address)
    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, RuntimeError) as error:
        print(f"recrl submit: error: cannot reach the Ray dashboard at {address} ({error}); start a cluster with "
              "`ray start --head` or pass --address http://HEAD:8265", file=sys.stderr)
        return 1
    if args.status:
        status = str(client.get_job_status(args.status))
        info = client.get_job_info(args.status)
        print(f"{args.status}: {status}" + (f" ({info.message})" if info.message else ""))
        return EXIT_CODES.get(status, 1)
    if args.logs:
        print(client.get_job_logs(args.logs), end="")
        return 0
    if args.stop:
        stopped = client.stop_job(args.stop)
        print(f"{args.stop}: " + ("stop requested" if stopped else "not running"))
        return 0
    entrypoint = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    if not entrypoint:
        print("recrl submit: error: no command to run; put it after --, e.g. recrl submit -- recrl train "
              "--config configs/star.yaml", file=sys.stderr)
        return 2
    if warning := run_dir_warning(entrypoint):
        print(f"[submit] warning: {warning}")
    job_id = submit_when_ready(client, entrypoint=shlex.join(entrypoint), submission_id=args.job_id,
                               runtime_env=runtime_env(args.working_dir, job_env(args.env)))
    print(f"[submit] job {job_id} submitted to {address}")
    if args.no_wait:
        return 0
    return follow(client, job_id)


def submit_when_ready(client: Any, *, timeout: float = AGENT_WAIT_S, **job: Any) -> str:
    """``client.submit_job(**job)``, retried while the head's job agent is not up yet (it starts a
    little after the dashboard, so a job submitted right after ``ray start`` may find none)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.submit_job(**job)
        except RuntimeError as error:
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            print("[submit] the cluster's job agent is not up yet; retrying", flush=True)
            time.sleep(3)


def follow(client: Any, job_id: str) -> int:
    """Streams a job's logs until it ends; returns its exit code (``EXIT_CODES``). Interrupting stops
    following, not the job."""

    async def tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        print(f"\n[submit] no longer following; the job goes on (recrl submit --stop {job_id} stops it)")
        return 130
    info = client.get_job_info(job_id)
    status = str(info.status)
    print(f"[submit] job {job_id} {status}" + (f": {info.message}" if info.message else ""))
    return EXIT_CODES.get(status, 1)
