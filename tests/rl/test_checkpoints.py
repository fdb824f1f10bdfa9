import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rl.checkpoints import (
    TRAINER_STATE,
    ResumeError,
    check_resume,
    latest_checkpoint,
    list_checkpoints,
    read_trainer_state,
    remove_stale_temp,
    save_checkpoint,
    step_dir,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_weights(text):
    """A writer callback that saves one small 'weights' file."""

    def write(folder):
        (folder / "weights.bin").write_text(text)

    return write


def test_saves_steps_and_keeps_only_the_last_two(tmp_path):
    root = tmp_path / "grpo"
    for step in range(1, 5):
        state = {"lr": 1e-5, "seed": 7}
        returned = save_checkpoint(root, step, write_weights(f"w{step}"), state, keep_last=2)
        assert returned == step_dir(root, step)

    assert sorted(path.name for path in root.iterdir()) == ["step-000003", "step-000004"]
    assert list_checkpoints(root) == [(3, root / "step-000003"), (4, root / "step-000004")]
    latest = latest_checkpoint(root)
    assert latest == root / "step-000004"
    assert (latest / "weights.bin").read_text() == "w4"
    assert read_trainer_state(latest) == {"step": 4, "lr": 1e-5, "seed": 7}


def test_keep_last_one_keeps_only_the_newest(tmp_path):
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, write_weights("w"), {}, keep_last=1)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [3]


def test_failing_writer_leaves_no_temp_and_previous_checkpoint_intact(tmp_path):
    save_checkpoint(tmp_path, 1, write_weights("good"), {"lr": 1.0})

    def crash(folder):
        (folder / "weights.bin").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(tmp_path, 2, crash, {"lr": 1.0})

    assert [path.name for path in tmp_path.iterdir()] == ["step-000001"]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000001"
    assert (tmp_path / "step-000001" / "weights.bin").read_text() == "good"


def test_failing_rewrite_of_the_same_step_keeps_the_old_one(tmp_path):
    save_checkpoint(tmp_path, 1, write_weights("good"), {})

    def crash(folder):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(tmp_path, 1, crash, {})
    assert (tmp_path / "step-000001" / "weights.bin").read_text() == "good"
    assert [path.name for path in tmp_path.iterdir()] == ["step-000001"]


def test_killed_writer_leftovers_are_ignored_then_removed(tmp_path):
    save_checkpoint(tmp_path, 1, write_weights("good"), {})
    # A writer killed at step 2, after its trainer_state.json but before the rename.
    leftover = tmp_path / ".tmp-step-000002-99999"
    leftover.mkdir()
    (leftover / "weights.bin").write_text("half")
    (leftover / TRAINER_STATE).write_text(json.dumps({"step": 2}))

    assert latest_checkpoint(tmp_path) == tmp_path / "step-000001"
    remove_stale_temp(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["step-000001"]


def test_killed_process_leaves_previous_checkpoint_readable(tmp_path):
    """A real kill mid-write (not an exception): no cleanup runs, the last checkpoint survives."""
    save_checkpoint(tmp_path, 1, write_weights("good"), {})
    script = (
        "import os, signal, sys\n"
        "from rl.checkpoints import save_checkpoint\n"
        "def die(folder):\n"
        "    (folder / 'weights.bin').write_text('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "save_checkpoint(sys.argv[1], 2, die, {})\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO_ROOT, check=False)

    assert any(path.name.startswith(".tmp-step-000002-") for path in tmp_path.iterdir())
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000001"
    remove_stale_temp(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["step-000001"]


def test_checkpoint_moved_aside_is_restored_if_its_replacement_never_arrived(tmp_path):
    save_checkpoint(tmp_path, 1, write_weights("good"), {})
    # Killed while replacing step 1: the old folder moved aside, the new one not yet renamed in.
    (tmp_path / "step-000001").rename(tmp_path / ".old-step-000001-99999")
    assert latest_checkpoint(tmp_path) is None

    remove_stale_temp(tmp_path)
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000001"
    assert (tmp_path / "step-000001" / "weights.bin").read_text() == "good"


def test_resaving_a_step_replaces_it(tmp_path):
    save_checkpoint(tmp_path, 3, write_weights("old"), {"note": "first"})
    (tmp_path / "step-000003" / "stale.bin").write_text("x")
    save_checkpoint(tmp_path, 3, write_weights("new"), {"note": "second"})

    folder = tmp_path / "step-000003"
    assert sorted(path.name for path in folder.iterdir()) == [TRAINER_STATE, "weights.bin"]
    assert (folder / "weights.bin").read_text() == "new"
    assert read_trainer_state(folder) == {"step": 3, "note": "second"}
    assert [path.name for path in tmp_path.iterdir()] == ["step-000003"]


def test_just_saved_checkpoint_is_never_pruned(tmp_path):
    for step in (5, 6):
        save_checkpoint(tmp_path, step, write_weights("w"), {})
    save_checkpoint(tmp_path, 2, write_weights("w"), {}, keep_last=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 6]


def test_list_checkpoints_ignores_junk_and_incomplete_folders(tmp_path):
    assert list_checkpoints(tmp_path / "missing") == []
    assert latest_checkpoint(tmp_path / "missing") is None
    save_checkpoint(tmp_path, 2, write_weights("w"), {})
    (tmp_path / "step-000009").mkdir()  # no trainer_state.json: incomplete
    (tmp_path / "step-abc").mkdir()
    (tmp_path / "step-000010").write_text("a file, not a folder")
    (tmp_path / "notes.txt").write_text("hello")

    assert list_checkpoints(tmp_path) == [(2, tmp_path / "step-000002")]
    save_checkpoint(tmp_path, 3, write_weights("w"), {}, keep_last=1)
    # Pruning touches complete checkpoints only.
    assert {path.name for path in tmp_path.iterdir()} == {
        "step-000003", "step-000009", "step-abc", "step-000010", "notes.txt"
    }


def test_keep_last_below_one_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="keep_last"):
        save_checkpoint(tmp_path, 1, write_weights("w"), {}, keep_last=0)
    assert list(tmp_path.iterdir()) == []


def test_bad_trainer_state_fails_before_writing(tmp_path):
    calls = []
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path, 1, calls.append, {"model": object()})
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path, 1, calls.append, {"step": 2})
    assert calls == []
    assert list_checkpoints(tmp_path) == []


def test_check_resume_accepts_equal_settings(tmp_path):
    saved = {"step": 4, "lr": 1e-5, "model": "tiny", "stop": [1, 2]}
    current = {"lr": 1e-5, "model": "tiny", "stop": (1, 2)}  # a tuple equals the saved list
    check_resume(saved, current, keys=["lr", "model", "stop"], folder=tmp_path)


def test_check_resume_names_changed_key_values_and_folder(tmp_path):
    folder = tmp_path / "step-000004"
    saved = {"step": 4, "lr": 1e-5, "model": "tiny"}
    with pytest.raises(ResumeError) as raised:
        check_resume(saved, {"lr": 2e-5, "model": "tiny"}, keys=["lr", "model"], folder=folder)
    message = str(raised.value)
    assert "lr: 1e-05 -> 2e-05" in message
    assert "model" not in message
    assert str(folder) in message
    assert "use the original settings" in message.lower()
    assert isinstance(raised.value, ValueError)


def test_check_resume_counts_a_missing_saved_key_as_changed(tmp_path):
    with pytest.raises(ResumeError) as raised:
        check_resume(
            {"step": 1, "lr": 1.0},
            {"lr": 1.0, "group_size": 8},
            keys=["lr", "group_size"],
            folder=tmp_path,
        )
    message = str(raised.value)
    assert "group_size: (missing) -> 8" in message
    assert "lr:" not in message


def test_read_trainer_state_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(TRAINER_STATE)) as raised:
        read_trainer_state(tmp_path)
    assert str(tmp_path) in str(raised.value)


@pytest.mark.parametrize("content", ['{"step": 3,', "[1, 2]"])
def test_read_trainer_state_corrupt_file(tmp_path, content):
    (tmp_path / TRAINER_STATE).write_text(content)
    with pytest.raises(ValueError, match=re.escape(f"delete {tmp_path}")):
        read_trainer_state(tmp_path)


def test_import_stays_light():
    script = "import sys, rl.checkpoints; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True)
