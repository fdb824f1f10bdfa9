"""`recrl train` killed with SIGKILL mid-step resumes to the batch, loss and weights of an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.cli import main
from rl.checkpoints import list_checkpoints, step_dir
from rollout.policy import load_checkpoint_state

ROOT = Path(__file__).resolve().parents[2]
RUN = [
    "data.dataset=synthetic", "data.num_negatives=4", "env.tools=[sequential]", "env.max_turns=2",
    "teacher.tools=[sequential]", "teacher.num_recommend=2", "teacher.validation_tasks=30", "sequential.epochs=3",
    "sequential.hidden=16", "curriculum.enabled=false", "model.name=tiny-random", "model.lora_r=8",
    "sft.lr=0.005", "sft.epochs=2", "sft.max_examples=8", "sft.batch_size=4", "rollout.num_workers=0",
    "grpo.steps=3", "grpo.tasks_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=48", "grpo.lr=0.001",
]
TRAINING_KEYS = ("reward/total", "train/loss", "train/policy_loss", "train/kl", "train/grad_norm", "rollout/tokens")


def grpo_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{key: row[key] for key in TRAINING_KEYS} for row in rows if "reward/total" in row]


@pytest.mark.integration
@pytest.mark.slow
def test_train_killed_mid_step_resumes_bit_identically(tmp_path):
    prepared = tmp_path / "prepared"
    for stage in ("data", "teach", "sft"):
        assert main([stage, f"run_dir={prepared}", *RUN]) == 0
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    shutil.copytree(prepared, straight)
    shutil.copytree(prepared, killed)
    assert main(["train", f"run_dir={straight}", *RUN]) == 0

    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    command = [sys.executable, "-c", "import sys; from launch.cli import main; sys.exit(main())", "train",
               f"run_dir={killed}", *RUN]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = step_dir(killed / "grpo", 1)
    deadline = time.monotonic() + 600
    while not (first / "trainer_state.json").is_file():
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "step 1 never finished"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # mid step 2: its rollouts have just begun
    process.wait()
    assert [step for step, _ in list_checkpoints(killed / "grpo")] == [1]

    assert main(["train", f"run_dir={killed}", *RUN]) == 0
    assert grpo_rows(killed)[-2:] == grpo_rows(straight)[-2:]  # steps 2 and 3: same batches, same losses
    ours, theirs = (load_checkpoint_state(step_dir(run / "grpo", 3)) for run in (killed, straight))
    assert ours.keys() == theirs.keys() and all(ours[key].equal(theirs[key]) for key in ours)
