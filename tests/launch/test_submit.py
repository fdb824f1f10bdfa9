"""`recrl submit` against a real Ray head started here (`ray start --head` on loopback)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from launch.cli import main
from launch.submit import job_env, resolve_address, runtime_env

REPO = Path(__file__).resolve().parents[2]
TINY_RUN = [
    "data.dataset=synthetic", "data.num_negatives=4", "env.tools=[sequential]", "env.max_turns=2",
    "teacher.tools=[sequential]", "teacher.num_recommend=2", "teacher.validation_tasks=30",
    "sequential.epochs=2", "sequential.hidden=16", "curriculum.enabled=false",
    "model.name=tiny-random", "model.lora_r=0", "sft.epochs=1", "sft.max_examples=8", "sft.batch_size=4",
    "grpo.steps=1", "grpo.tasks_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=48",
    "eval.num_tasks=4", "eval.max_new_tokens=48", "eval.methods=[random,student_grpo]", "eval.best_of_k=[1]",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """A one-node Ray cluster with its dashboard (the job server) on loopback; its own temp folder, so
    no other ``ray.init()`` on this machine finds it. Yields the dashboard's address."""
    ray_bin = Path(sys.executable).with_name("ray")
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths live under it
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{ray_bin.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    dashboard = f"http://127.0.0.1:{free_port()}"
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={free_port()}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard.rsplit(':', 1)[1]}", "--num-cpus=16", "--include-dashboard=true",
         # not the default agent port (52365), which another Ray on this machine (the ray_local
         # fixture's) may hold: the head's job agent would then never come up
         f"--dashboard-agent-listen-port={free_port()}",
         f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{dashboard}/api/version", timeout=2)
                break
            except OSError:
                if head.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Ray head did not come up (exit {head.poll()}); see {temp_dir}")
                time.sleep(1)
        yield dashboard
    finally:
        head.terminate()  # `ray start --block` drains and stops the processes it started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, 9)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_the_address_comes_from_the_flag_then_the_environment():
    assert resolve_address("http://a:1", {"RAY_API_SERVER_ADDRESS": "http://b:2"}) == "http://a:1"
    assert resolve_address(None, {"RAY_API_SERVER_ADDRESS": "http://b:2"}) == "http://b:2"
    assert resolve_address(None, {}) == "http://127.0.0.1:8265"


def test_job_env_passes_wandb_settings_and_rejects_malformed_pairs():
    env = job_env(["A=1=2"], {"WANDB_PROJECT": "p", "WANDB_API_KEY": "k", "PATH": "/bin"})
    assert env == {"WANDB_PROJECT": "p", "WANDB_API_KEY": "k", "A": "1=2"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        job_env(["NOVALUE"], {})


def test_the_upload_leaves_out_environments_caches_and_runs(tmp_path):
    spec = runtime_env(str(tmp_path), {"X": "1"})
    assert spec["working_dir"] == str(tmp_path) and spec["env_vars"] == {"X": "1"}
    assert {".venv", ".cache", "runs", "wandb"} <= set(spec["excludes"])
    with pytest.raises(FileNotFoundError, match="no such folder"):
        runtime_env(str(tmp_path / "missing"), {})


def test_no_command_and_no_server_are_clear_errors(capsys):
    assert main(["submit", "--address", f"http://127.0.0.1:{free_port()}", "--status", "x"]) == 1
    assert "cannot reach the Ray dashboard" in capsys.readouterr().err
    assert main(["submit", "--address", "http://127.0.0.1:1", "--"]) in (1, 2)


@pytest.mark.integration
@pytest.mark.slow
def test_a_training_job_succeeds_on_the_cluster_and_writes_its_run(ray_head, tmp_path, capsys):
    run_dir = tmp_path / "run"
    command = ["submit", "--address", ray_head, "--working-dir", str(REPO), "--env", "WANDB_MODE=offline",
               "--job-id", "recrl-tiny", "--", "recrl", "quickstart", f"run_dir={run_dir}", *TINY_RUN]
    assert main(command) == 0
    out = capsys.readouterr().out
    assert "[submit] job recrl-tiny SUCCEEDED" in out
    assert "[eval] wrote" in out  # the job's own log, streamed
    report = json.loads((run_dir / "eval.json").read_text())
    assert set(report["methods"]) == {"random", "student_grpo"} and report["protocol"]["num_tasks"] == 4
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("reward/total" in row for row in rows)
    assert (run_dir / "adapter").is_dir()
    # The job's status and logs stay readable afterwards.
    assert main(["submit", "--address", ray_head, "--status", "recrl-tiny"]) == 0
    assert main(["submit", "--address", ray_head, "--logs", "recrl-tiny"]) == 0
    assert "[quickstart] done" in capsys.readouterr().out


@pytest.mark.integration
def test_a_failing_job_shows_its_error_and_exits_non_zero(ray_head, tmp_path, capsys):
    missing = tmp_path / "missing.yaml"
    command = ["submit", "--address", ray_head, "--working-dir", str(tmp_path), "--job-id", "recrl-broken",
               "--", "recrl", "train", "--config", str(missing), f"run_dir={tmp_path / 'run'}"]
    assert main(command) == 1
    out = capsys.readouterr().out
    assert "recrl-broken FAILED" in out and str(missing) in out
    assert main(["submit", "--address", ray_head, "--status", "recrl-broken"]) == 1


def test_a_submission_waits_for_the_job_agent_then_gives_up_on_other_errors(monkeypatch):
    from launch import submit

    monkeypatch.setattr(submit.time, "sleep", lambda seconds: None)

    class Client:  # the head answers "no agent" twice, then takes the job
        def __init__(self, errors):
            self.errors = list(errors)

        def submit_job(self, **job):
            if self.errors:
                raise RuntimeError(self.errors.pop(0))
            return job["submission_id"]

    no_agent = "Request failed with status code 500: No available agent to submit job, please try again later."
    assert submit.submit_when_ready(Client([no_agent, no_agent]), submission_id="a") == "a"
    with pytest.raises(RuntimeError, match="bad entrypoint"):
        submit.submit_when_ready(Client(["bad entrypoint"]), submission_id="b")
    with pytest.raises(RuntimeError, match="No available agent"):
        submit.submit_when_ready(Client([no_agent] * 3), timeout=-1, submission_id="c")
