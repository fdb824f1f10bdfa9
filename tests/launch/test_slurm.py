"""`recrl slurm`: the batch script's shape for 3 nodes x 8 GPUs, its control flow over 3 nodes with
stand-ins for SLURM's commands, and a real one-node SLURM (munge, slurmctld, slurmd) running a
quickstart slice in a Ray cluster the job starts."""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from launch import slurm
from launch.slurm import SlurmJob, render_sbatch

REPO = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = REPO / "launch" / "slurm" / "local_cluster.sh"
CONFIG = str(REPO / "configs" / "quickstart.yaml")
# The smallest real quickstart: synthetic catalog, the tiny model, one GRPO step, four held-out tasks.
TINY = [
    "data.dataset=synthetic", "data.num_negatives=4", "env.tools=[sequential]", "env.max_turns=3",
    "teacher.tools=[sequential]", "teacher.num_recommend=2", "sequential.epochs=5", "sequential.hidden=16",
    "curriculum.enabled=false", "model.name=tiny-random", "model.lora_r=0",
    "sft.lr=0.005", "sft.epochs=2", "sft.max_examples=8", "sft.batch_size=4",
    "grpo.steps=1", "grpo.tasks_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=32",
    "eval.num_tasks=4", "eval.max_new_tokens=32", "eval.methods=[pop,student_sft,student_grpo]",
]


def parse(argv: list[str]) -> argparse.Namespace:
    """``recrl slurm ARGV`` parsed as the CLI does."""
    parser = argparse.ArgumentParser(prog="recrl")
    slurm.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["slurm", *argv])


def test_three_nodes_of_eight_gpus():
    script = render_sbatch(SlurmJob(nodes=3, gpus_per_node=8, partition="gpu", config=CONFIG, stage="train",
                                    overrides=("run_dir=/shared/runs/star", "grpo.steps=5"), time_limit="1-00:00:00",
                                    sbatch_args=("--account=rec",), ray_args=("--object-store-memory=2000000000",)))
    lines = script.splitlines()
    assert {"#SBATCH --nodes=3", "#SBATCH --ntasks-per-node=1", "#SBATCH --gres=gpu:8", "#SBATCH --exclusive",
            "#SBATCH --partition=gpu", "#SBATCH --time=1-00:00:00", "#SBATCH --account=rec"} <= set(lines)
    # Every #SBATCH line comes before the first command, or sbatch ignores it.
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert max(i for i, line in enumerate(lines) if line.startswith("#SBATCH")) < first_command
    assert "--num-gpus=8" in script and script.count("--gres=gpu:8") == 2  # the job's and each Ray step's
    assert 'for node in "${nodes[@]:1}"; do' in script  # a worker on every node but the first
    assert 'ray start --address="$RAY_ADDRESS"' in script and "ray start --head" in script
    assert "trap stop_everything EXIT" in script and "trap 'exit 143' TERM" in script
    assert "ray stop" not in script.replace("`ray stop`", "")  # it would stop every Ray on the node
    assert f"command=(recrl train --config {CONFIG} run_dir=/shared/runs/star grpo.steps=5)" in script
    assert "--object-store-memory=2000000000" in script and "{{" not in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)

    cpu_only = render_sbatch(SlurmJob(nodes=1, partition="cpu", config=CONFIG, cpus_per_node=4, ray_cpus=16))
    assert "--gres" not in cpu_only and "--exclusive" not in cpu_only and "--num-gpus=0" in cpu_only
    assert "#SBATCH --cpus-per-task=4" in cpu_only and "--num-cpus=16" in cpu_only


@pytest.mark.parametrize("fields, message", [
    ({"nodes": 0}, "--nodes must be at least 1"),
    ({"gpus_per_node": -1}, "--gpus-per-node must be 0"),
    ({"config": "missing.yaml"}, "missing.yaml not found"),
    ({"stage": "deploy"}, "unknown stage 'deploy'"),
    ({"port": 8265}, "--port and --dashboard-port must differ"),
    ({"partition": "my gpus"}, "partition 'my gpus' must be non-empty and hold no spaces"),
    ({"overrides": ("grpo.steps",)}, "must look like key=value"),
    ({"python_env": "/nonexistent"}, "pass --python-env"),
])
def test_settings_that_cannot_run_are_named(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        render_sbatch(SlurmJob(**{"nodes": 2, "partition": "gpu", "config": CONFIG, **fields}))


STAND_INS = {
    # The job's nodes, as `scontrol show hostnames n[1-3]` prints them.
    "scontrol": 'printf "n1\\nn2\\nn3\\n"',
    # A step: logs its command, then "runs" until SIGTERM (what `scancel --signal=TERM` sends it).
    "srun": 'echo "srun $*" >> "$LOG"; echo $$ >> "$LOG.steps"; exec sleep 20',
    "scancel": 'echo "scancel $*" >> "$LOG"; xargs kill -TERM < "$LOG.steps"',
    "python": 'if [[ "$1" == -c ]]; then echo 10.0.0.1; else cat > /dev/null; echo "waited for $3 nodes" >> "$LOG"; fi',
    "recrl": 'echo "recrl $*" >> "$LOG"',
    "ray": "exit 1",
}


def test_the_script_starts_ray_on_every_node_runs_the_command_and_stops_ray(tmp_path):
    """The rendered script run by bash, with stand-ins for SLURM's commands and Ray: the fan-out over
    three nodes and the teardown, which a one-node SLURM cannot show."""
    env_dir = tmp_path / "env"
    (env_dir / "bin").mkdir(parents=True)
    for name, body in STAND_INS.items():
        path = env_dir / "bin" / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(render_sbatch(SlurmJob(nodes=3, gpus_per_node=8, partition="gpu", config=CONFIG,
                                             python_env=str(env_dir), overrides=("grpo.steps=5",))))
    log = tmp_path / "log"
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "LOG": str(log), "SLURM_JOB_ID": "42",
           "SLURM_JOB_NODELIST": "n[1-3]", "SLURM_CPUS_ON_NODE": "96", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = log.read_text().splitlines()
    head, *workers = [call for call in calls if call.startswith("srun")]
    assert "--cpus-per-task=96 --gres=gpu:8 -w n1 ray start --head --node-ip-address=10.0.0.1 --port=6379" in head
    assert {re.search(r"-w (\S+)", step).group(1) for step in workers} == {"n2", "n3"}
    assert all("ray start --address=10.0.0.1:6379 --block" in step for step in workers)
    assert all("--temp-dir=/tmp/ray-42" in step and "--num-gpus=8" in step for step in [head, *workers])
    # The workers start once the head is up; the command once all three nodes are.
    assert calls.index("waited for 1 nodes") < min(calls.index(step) for step in workers)
    assert [call for call in calls if not call.startswith("srun")] == [
        "waited for 1 nodes", "waited for 3 nodes", f"recrl train --config {CONFIG} grpo.steps=5",
        "scancel --signal=TERM 42"]
    assert "Ray stopped on 3 node(s); exit status 0" in done.stdout

    # A failing command: Ray is stopped all the same, and the job fails with the command's status.
    (env_dir / "bin" / "recrl").write_text('#!/bin/bash\necho "recrl $*" >> "$LOG"; exit 3\n')
    log.unlink()
    Path(f"{log}.steps").unlink()
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "scancel --signal=TERM 42" in log.read_text().splitlines()


def test_a_signal_stops_the_command_then_ray(tmp_path):
    """SIGTERM to the batch script (scancel, or SLURM ahead of the time limit): the running command
    gets it, then Ray's steps do, and the job ends with 143."""
    env_dir = tmp_path / "env"
    (env_dir / "bin").mkdir(parents=True)
    stand_ins = {**STAND_INS, "recrl": 'echo "recrl $*" >> "$LOG"; sleep 20 & '
                                       'trap \'echo "recrl got TERM" >> "$LOG"; kill $!; exit 143\' TERM; wait'}
    for name, body in stand_ins.items():
        path = env_dir / "bin" / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(render_sbatch(SlurmJob(nodes=3, partition="cpu", config=CONFIG, python_env=str(env_dir))))
    log = tmp_path / "log"
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "LOG": str(log), "SLURM_JOB_ID": "7",
           "SLURM_JOB_NODELIST": "n[1-3]", "SLURM_CPUS_ON_NODE": "4", "RAY_AUTH_MODE": "disabled"}
    job = subprocess.Popen(["bash", str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not (log.is_file() and "recrl train" in log.read_text()):
        assert time.monotonic() < deadline and job.poll() is None, "the command never started"
        time.sleep(0.1)
    job.terminate()
    output, _ = job.communicate(timeout=30)
    calls = [call for call in log.read_text().splitlines() if not call.startswith("srun")]
    assert job.returncode == 143, output
    assert calls[-2:] == ["recrl got TERM", "scancel --signal=TERM 7"]
    assert "Ray stopped on 3 node(s); exit status 143" in output


def test_submit_without_sbatch_says_where_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm.main(parse(["--nodes", "1", "--partition", "local", "--config", CONFIG, "--submit",
                             f"run_dir={tmp_path / 'run'}"])) == 1
    assert "sbatch not found" in capsys.readouterr().err
    assert (tmp_path / "run" / "recrl-train.sbatch").is_file()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


@pytest.fixture
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM on this machine (launch/slurm/local_cluster.sh), stopped afterwards; yields
    its slurm.conf. Fails in CI (`make setup` installs SLURM), else skips, without SLURM or root."""
    missing = [name for name in ("sbatch", "slurmctld", "slurmd", "munged") if shutil.which(name) is None]
    reason = (f"{', '.join(missing)} not found: install them with `bash {LOCAL_CLUSTER.relative_to(REPO)} install`"
              if missing else "a one-node SLURM needs root" if os.geteuid() != 0 else "")
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    folder = Path(tmp_path_factory.mktemp("slurm"))
    env = {**os.environ, "RECRL_SLURM_DIR": str(folder), "RECRL_SLURMCTLD_PORT": str(free_port()),
           "RECRL_SLURMD_PORT": str(free_port())}
    started = subprocess.run(["bash", str(LOCAL_CLUSTER), "start"], env=env, capture_output=True, text=True)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield folder / "slurm.conf"
    finally:
        subprocess.run(["bash", str(LOCAL_CLUSTER), "stop"], env=env, check=True)


def job_state(job_id: str) -> dict[str, str]:
    """``scontrol show job``'s fields (JobState, ExitCode, ...)."""
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", shown))


@pytest.mark.integration
@pytest.mark.slow
def test_a_slurm_job_runs_a_quickstart_in_its_own_ray_cluster(slurm_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster))
    run_dir = tmp_path / "run"
    # Ports of this job's own: other Ray clusters may run on this machine. The one node has 2 CPUs;
    # each rollout worker, learner and the reference reserves a logical one, so Ray offers 16.
    ports = ["--port", str(free_port()), "--dashboard-port", str(free_port()),
             f"--ray-arg=--dashboard-agent-listen-port={free_port()}",
             f"--ray-arg=--ray-client-server-port={free_port()}"]
    assert slurm.main(parse(["--nodes", "1", "--partition", "local", "--config", CONFIG, "--stage", "quickstart",
                             "--ray-cpus", "16", "--join-timeout", "180", *ports, "--submit",
                             f"run_dir={run_dir}", *TINY])) == 0
    job_id = re.search(r"submitted job (\d+)", capsys.readouterr().out).group(1)
    deadline = time.monotonic() + 1200
    while (state := job_state(job_id))["JobState"] in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"job {job_id} still {state['JobState']} after 20 minutes"
        time.sleep(5)
    log = (run_dir / f"slurm-{job_id}.out").read_text()
    assert state["JobState"] == "COMPLETED" and state["ExitCode"] == "0:0", log[-5000:]

    # recrl joined the job's Ray cluster (RAY_ADDRESS), and the job stopped it.
    assert "recrl: 1 Ray node(s) up at" in log and "Ray stopped on 1 node(s); exit status 0" in log
    ray_dir = Path(f"/tmp/ray-{job_id}")
    assert list((ray_dir / "session_latest" / "logs").glob("worker-*")), "no Ray worker ran in the job's cluster"
    import psutil

    left = [p.pid for p in psutil.process_iter(["cmdline"]) if str(ray_dir) in " ".join(p.info["cmdline"] or [])]
    assert not left, f"Ray processes of job {job_id} still running: {left}"
    shutil.rmtree(ray_dir, ignore_errors=True)

    # The run's outputs: SFT and the GRPO step logged, the GRPO checkpoint, the evaluation.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in row for row in rows) and sum("reward/total" in row for row in rows) == 1
    assert list((run_dir / "adapter").glob("*.safetensors"))
    methods = json.loads((run_dir / "eval.json").read_text())["methods"]
    assert set(methods) == {"pop", "student_sft", "student_grpo"}
