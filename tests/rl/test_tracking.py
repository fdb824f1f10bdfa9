import json

import pytest
import torch

from rl.tracking import Tracker


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Keep wandb offline and its config/cache out of the home directory."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb_home"))


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_offline_run_writes_wandb_folder_and_metrics_jsonl(tmp_path, wandb_env):
    run_dir = tmp_path / "run"
    with Tracker(project="recrl-test", run_dir=run_dir, config={"lr": 1e-5}, name="t") as tracker:
        assert tracker.enabled
        tracker.log({"train/loss": 0.75, "reward/format": torch.tensor(1.0)}, step=1)
        tracker.log({"train/loss": 0.5, "eval/hr_avg": 0.25}, step=2)
        tracker.summary({"eval/hr_avg": 0.25})

    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    expected = [
        {"step": 1, "train/loss": 0.75, "reward/format": 1.0},
        {"step": 2, "train/loss": 0.5, "eval/hr_avg": 0.25},
    ]
    assert read_jsonl(run_dir / "metrics.jsonl") == expected
    assert tracker.history == expected
    assert tracker.summary_metrics == {"eval/hr_avg": 0.25}
    tracker.finish()  # a second finish is a no-op


def test_disabled_tracker_records_history_without_wandb(tmp_path):
    run_dir = tmp_path / "run"
    tracker = Tracker(project="recrl-test", run_dir=run_dir, config={}, enabled=False)
    assert not tracker.enabled
    tracker.log({"perf/tokens_per_s": 1200}, step=0)
    tracker.finish()
    assert tracker.history == [{"step": 0, "perf/tokens_per_s": 1200.0}]
    assert read_jsonl(run_dir / "metrics.jsonl") == tracker.history
    assert not (run_dir / "wandb").exists()


def test_non_finite_and_non_number_values_are_skipped_with_a_warning(tmp_path):
    tracker = Tracker(project="recrl-test", run_dir=tmp_path, config={}, enabled=False)
    with pytest.warns(UserWarning, match="train/loss"):
        tracker.log({"train/loss": float("nan"), "train/lr": 1e-5}, step=3)
    with pytest.warns(UserWarning) as record:
        tracker.log({"note": "hello", "train/grad_norm": float("inf")}, step=4)
    assert ["'note'" in str(w.message) for w in record] == [True, False]
    assert "'train/grad_norm'" in str(record[1].message)
    assert tracker.history == [{"step": 3, "train/lr": 1e-5}]
    assert read_jsonl(tmp_path / "metrics.jsonl") == tracker.history


def test_mode_defaults_to_wandb_mode_env(tmp_path, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with Tracker(project="recrl-test", run_dir=tmp_path, config={}) as tracker:
        tracker.log({"train/loss": 1.0}, step=0)
    assert not list(tmp_path.glob("wandb/offline-run-*"))
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 0, "train/loss": 1.0}]
