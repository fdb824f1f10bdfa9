"""Training checkpoints: atomic, step-numbered folders under one root, with the oldest pruned.

Layout of a checkpoint root (e.g. ``runs/x/grpo/``)::

    step-000003/            weights, optimizer... (whatever the writer put there)
        trainer_state.json  {"step": 3, ...}: the step plus what resuming needs and checks
    step-000004/
    .tmp-step-000005-1234/  a checkpoint being written (or left by a killed writer)

A checkpoint is written into a hidden temporary folder and renamed into place only once it is
complete, so a reader never sees a half-written checkpoint and a crash mid-write leaves the
previous one intact. Only folders holding ``trainer_state.json`` count as checkpoints.

This module needs only the standard library (no torch), so importing it stays cheap.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "TRAINER_STATE",
    "ResumeError",
    "check_resume",
    "latest_checkpoint",
    "list_checkpoints",
    "read_trainer_state",
    "remove_stale_temp",
    "save_checkpoint",
    "step_dir",
]

TRAINER_STATE = "trainer_state.json"
"""File name of the JSON trainer state inside every checkpoint folder."""

_STEP_NAME = re.compile(r"step-(\d+)")
# Hidden prefixes, so nothing that lists ``step-*`` ever picks these up.
_TEMP_PREFIX = ".tmp-"  # a checkpoint being written
_ASIDE_PREFIX = ".old-"  # an earlier checkpoint of the same step, moved aside while replacing it


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed with the current settings."""


def step_dir(root: str | Path, step: int) -> Path:
    """The folder of the checkpoint for ``step`` under ``root``.

    >>> step_dir("runs/x/grpo", 3).as_posix()
    'runs/x/grpo/step-000003'
    """
    return Path(root) / f"step-{step:06d}"


def save_checkpoint(
    root: str | Path,
    step: int,
    write: Callable[[Path], None],
    trainer_state: dict[str, Any],
    *,
    keep_last: int = 2,
) -> Path:
    """Write the checkpoint for ``step`` atomically, then prune the oldest ones.

    ``write(folder)`` fills a temporary sibling folder of the final one; then
    ``trainer_state.json`` (``{"step": step, **trainer_state}``) is written and fsynced, and the
    folder is renamed to :func:`step_dir`. A rename is atomic, so a reader sees either the whole
    checkpoint or none of it. If ``write`` raises (or the process dies), the earlier
    checkpoints are untouched; the temporary folder is removed here, or by
    :func:`remove_stale_temp` after a kill. An existing checkpoint of the same step is
    replaced: moved aside, the new one renamed in, then the old one deleted.

    Afterwards only the newest ``keep_last`` checkpoints are kept; the one just written is
    always among them, even if newer steps exist (e.g. left by an earlier run).

    Args:
        root: The checkpoint root; created if missing.
        step: The training step the checkpoint holds.
        write: Saves weights, optimizer state... into the folder it is given.
        trainer_state: JSON-serializable state to resume from and to check on resume
            (see :func:`check_resume`), e.g. the learning rate, the model, the data seed.
        keep_last: How many checkpoints to keep, at least 1.

    Returns:
        The checkpoint folder, ``step_dir(root, step)``.

    Raises:
        ValueError: If ``keep_last`` is below 1, or ``trainer_state`` holds a ``"step"``
            other than ``step``.
        TypeError: If ``trainer_state`` is not JSON-serializable (raised before ``write`` runs).
    """
    if keep_last < 1:
        raise ValueError(
            f"keep_last must be at least 1 (the checkpoint just written), got {keep_last}."
        )
    if trainer_state.get("step", step) != step:
        raise ValueError(
            f"trainer_state holds step {trainer_state['step']!r} but the checkpoint is for "
            f"step {step}; drop 'step' from trainer_state (save_checkpoint adds it)."
        )
    # Serialize first: a non-JSON value should fail before the (slow) weights are written.
    state_text = json.dumps({**trainer_state, "step": step}, indent=2, sort_keys=True)

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    temp = root / f"{_TEMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(temp, ignore_errors=True)  # left by a killed writer that had our pid
    temp.mkdir()
    try:
        write(temp)
        with (temp / TRAINER_STATE).open("w", encoding="utf-8") as file:
            file.write(state_text + "\n")
            file.flush()
            os.fsync(file.fileno())
        _move_into_place(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _fsync_dir(root)

    others = [folder for _, folder in list_checkpoints(root) if folder != final]
    for folder in others[: max(len(others) - (keep_last - 1), 0)]:
        shutil.rmtree(folder)
    return final


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """The complete checkpoints under ``root`` as ``(step, folder)``, oldest step first.

    A folder counts only if it is named ``step-<digits>`` and holds ``trainer_state.json``
    (written last by :func:`save_checkpoint`); temporary folders and anything else are ignored.
    A missing ``root`` has no checkpoints.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        match = _STEP_NAME.fullmatch(folder.name)
        if match and (folder / TRAINER_STATE).is_file():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under ``root``, or None if there is none."""
    checkpoints = list_checkpoints(root)
    return checkpoints[-1][1] if checkpoints else None


def read_trainer_state(folder: str | Path) -> dict[str, Any]:
    """The trainer state saved in a checkpoint folder (``{"step": ..., ...}``).

    Raises:
        FileNotFoundError: If ``folder`` has no ``trainer_state.json``.
        ValueError: If the file is not a JSON object.
    """
    folder = Path(folder)
    path = folder / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a complete checkpoint: it has no {TRAINER_STATE}. "
            "Point at a step-NNNNNN folder written by save_checkpoint (see latest_checkpoint)."
        )
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{path} is corrupt ({error}); delete {folder} to resume from an earlier checkpoint."
        ) from error
    if not isinstance(state, dict):
        raise ValueError(
            f"{path} holds a {type(state).__name__}, not a JSON object; "
            f"delete {folder} to resume from an earlier checkpoint."
        )
    return state


def remove_stale_temp(root: str | Path) -> None:
    """Clean up what a writer killed mid-save left under ``root``.

    Deletes temporary folders of unfinished checkpoints. A checkpoint that was moved aside to
    be replaced is put back if its replacement never arrived, and deleted otherwise. Call it
    before training starts; only one process may write checkpoints to a root at a time.
    """
    root = Path(root)
    if not root.is_dir():
        return
    for path in root.iterdir():
        if path.name.startswith(_TEMP_PREFIX):
            shutil.rmtree(path, ignore_errors=True)
    for path in root.iterdir():
        if not path.name.startswith(_ASIDE_PREFIX):
            continue
        # ".old-step-000003-1234" -> "step-000003"
        original = root / path.name[len(_ASIDE_PREFIX) :].rsplit("-", 1)[0]
        if _STEP_NAME.fullmatch(original.name) and not original.exists():
            path.rename(original)
        else:
            shutil.rmtree(path, ignore_errors=True)


def check_resume(
    saved: dict[str, Any], current: dict[str, Any], *, keys: Sequence[str], folder: Path
) -> None:
    """Refuse to resume a checkpoint whose settings differ from the current run's.

    Resuming with, say, another model or learning rate would silently mix two experiments.
    Values are compared as JSON stores them (a tuple equals the list it was saved as). A key
    missing from ``saved`` (a checkpoint from older code) counts as changed.

    Args:
        saved: The checkpoint's trainer state (:func:`read_trainer_state`).
        current: The trainer state this run would save.
        keys: The settings that must match.
        folder: The checkpoint, named in the message as the thing to delete to start over.

    Raises:
        ResumeError: Naming every changed key with its old and new value, the folder and the fix.
    """
    missing = object()
    changes = []
    for key in keys:
        old = saved.get(key, missing)
        new = current.get(key, missing)
        if new is not missing:
            new = _as_stored(new)
        if old is missing or new is missing or old != new:
            changes.append(f"  {key}: {_show(old, missing)} -> {_show(new, missing)}")
    if changes:
        raise ResumeError(
            f"Cannot resume from checkpoint {folder}: its settings differ from the current ones:\n"
            + "\n".join(changes)
            + f"\nUse the original settings, or delete {folder} to start over."
        )


def _move_into_place(temp: Path, final: Path) -> None:
    """Rename ``temp`` to ``final``, replacing an existing ``final`` folder."""
    if not final.exists():
        os.replace(temp, final)
        return
    # A folder cannot be renamed onto a non-empty one: move the old one aside first.
    aside = final.parent / f"{_ASIDE_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    try:
        os.replace(temp, final)
    except BaseException:
        os.replace(aside, final)
        raise
    shutil.rmtree(aside)


def _fsync_dir(folder: Path) -> None:
    """Make renames inside ``folder`` durable (POSIX only; Windows cannot open folders)."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _as_stored(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists); unchanged if not JSON."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return value


def _show(value: Any, missing: object) -> str:
    return "(missing)" if value is missing else repr(value)
