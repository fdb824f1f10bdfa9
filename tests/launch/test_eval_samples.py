"""`recrl eval` logs a table of sample episodes of each method it played (W&B and ``tables/``)."""

import json

import pytest

from launch.cli import main
from rl.tables import TRAJECTORY_COLUMNS


@pytest.mark.integration
def test_eval_logs_sample_episodes_of_each_method_it_played(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb_home"))
    run_dir = tmp_path / "run"
    assert main(["eval", "--config", "configs/rating.yaml", f"run_dir={run_dir}", "data.dataset=synthetic",
                 "eval.methods=[bias]", "eval.num_tasks=3", "eval.sample_trajectories=2",
                 "logging.mode=offline"]) == 0

    rows = [json.loads(line) for line in (run_dir / "tables/eval/samples_bias-1.jsonl").read_text().splitlines()]
    report = json.loads((run_dir / "eval.json").read_text())
    assert [row["task_id"] for row in rows] == report["task_ids"][:2]
    assert all(tuple(row) == TRAJECTORY_COLUMNS and row["source"] == "bias" for row in rows)
    assert [float(row["recommendation"]) for row in rows] == report["predictions"]["bias"][:2]
    assert all(row["target"] and row["prompt"] for row in rows)
    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    assert len(list(offline_run.glob("files/media/table/eval/samples_bias_*.table.json"))) == 1
