"""Run-folder bookkeeping of the stages: which GRPO checkpoint may be resumed."""

import hashlib
import json

import pytest

from launch.stages import RunPaths, resume_step
from rollout.policy import checkpoint_fingerprint


def test_a_grpo_checkpoint_is_resumed_only_from_the_same_sft_adapter(tmp_path, capsys):
    paths = RunPaths(tmp_path)
    assert resume_step(paths, "abc") == 0  # nothing saved yet
    paths.grpo_adapter.mkdir(parents=True)
    (paths.grpo_adapter / "trainer_state.json").write_text(json.dumps({"step": 2, "sft": "abc"}))
    assert resume_step(paths, "abc") == 0  # a state without weights is no checkpoint
    (paths.grpo_adapter / "adapter_config.json").write_text("{}")
    assert resume_step(paths, "abc") == 2
    assert resume_step(paths, "def") == 0
    assert "starting over" in capsys.readouterr().out


def test_fingerprints_hash_the_weights(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"weights")
    assert checkpoint_fingerprint(tmp_path) == hashlib.sha256(b"weights").hexdigest()
    with pytest.raises(FileNotFoundError, match="no checkpoint weights"):
        checkpoint_fingerprint(tmp_path / "empty")
