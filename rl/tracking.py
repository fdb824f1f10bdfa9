"""Metric tracking: Weights & Biases (offline unless told otherwise) plus a local metrics.jsonl.

Every logged row goes to three places: ``Tracker.history`` in memory, one JSON line in
``<run_dir>/metrics.jsonl``, and the wandb run (unless ``enabled=False``). Tables go to the run
and to ``<run_dir>/tables/``; folders (checkpoints) to the run as artifacts. An offline run lands
in ``<run_dir>/wandb/offline-run-*/``; upload it later with ``wandb sync``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["Tracker"]


class Tracker:
    """Logs namespaced scalar metrics (``train/loss``, ``reward/format``, ``eval/hr_avg``...).

    Usable as a context manager, which calls :meth:`finish` on exit (marking the wandb run
    failed if an exception escaped).

    Attributes:
        run_dir: Folder holding ``metrics.jsonl`` and, when enabled, wandb's ``wandb/`` folder.
        history: Every logged row, each ``{"step": step, **metrics}``, in logging order.
        summary_metrics: Everything passed to :meth:`summary`, merged.
    """

    def __init__(
        self,
        *,
        project: str,
        run_dir: str | Path,
        config: dict[str, Any],
        name: str | None = None,
        mode: str | None = None,
        enabled: bool = True,
    ) -> None:
        """Start a run.

        Args:
            project: wandb project name.
            run_dir: Folder for this run's local files; created if missing.
            config: Run configuration, stored with the wandb run.
            name: wandb run name; wandb picks one if None.
            mode: wandb mode (``"offline"``, ``"online"``, ``"disabled"``); defaults to the
                ``WANDB_MODE`` environment variable, else ``"offline"``, so no account or
                network is ever needed unless asked for.
            enabled: If False, skip wandb entirely (it is not even imported) and only keep
                ``history`` and ``metrics.jsonl``. If True, ``WANDB_SILENT`` defaults to
                ``"true"`` and wandb's console capture is off, to keep the output clean.

        Raises:
            ImportError: If ``enabled`` is True and wandb is not installed.
        """
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.history: list[dict[str, float | int]] = []
        self.summary_metrics: dict[str, float] = {}
        self._run: Any = None
        self._finished = False
        if not enabled:
            return

        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            import wandb
        except ImportError as error:
            raise ImportError(
                "Tracking needs wandb: install it with `pip install wandb`, "
                "or pass enabled=False to log only to metrics.jsonl."
            ) from error
        self._run = wandb.init(
            project=project,
            name=name,
            dir=str(self.run_dir),
            config=config,
            mode=mode or os.environ.get("WANDB_MODE") or "offline",
            # A Tracker is an object, not a global: never hand back an earlier, still-open run.
            reinit="create_new",
            # console="off": our own logging already goes to stdout; don't mirror it into wandb.
            settings=wandb.Settings(console="off", silent=True),
        )

    @property
    def enabled(self) -> bool:
        """Whether a wandb run backs this tracker."""
        return self._run is not None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        """Log one row of scalar metrics at ``step``.

        Values that are not finite real numbers (NaN, inf, strings, lists...) are dropped with
        a warning; 0-d tensors and numpy scalars are converted to floats. wandb ignores rows
        whose step is lower than one already logged, so log steps in increasing order.

        Args:
            metrics: Namespaced metric name to value, e.g. ``{"train/loss": 0.7}``.
            step: The global training step.
        """
        clean = _finite_scalars(metrics)
        if not clean:
            return
        row: dict[str, float | int] = {"step": step, **clean}
        self.history.append(row)
        with self.metrics_path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(row) + "\n")
        if self._run is not None:
            self._run.log(clean, step=step)

    def table(self, name: str, rows: Sequence[Mapping[str, Any]], step: int) -> Path:
        """Log ``rows`` as the table ``name`` (e.g. ``eval/samples_teacher``) at ``step``.

        The rows are also written, one JSON object a line, to ``<run_dir>/tables/<name>-<step>.jsonl``
        (also when wandb is off), so they can be read without wandb.

        Args:
            name: Namespaced table name; a ``/`` in it makes a subfolder of ``tables/``.
            rows: One dict per row, each value JSON-serializable; the columns are their keys, in order
                of first appearance (a row without a key leaves its cell empty).
            step: The global step, as in :meth:`log`.

        Returns:
            The local ``.jsonl`` file.
        """
        path = self.run_dir / "tables" / f"{name}-{step}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(dict(row)) + "\n" for row in rows), encoding="utf-8")
        if self._run is not None and rows:
            import wandb

            columns = list(dict.fromkeys(key for row in rows for key in row))
            data = [[row.get(column) for column in columns] for row in rows]
            self._run.log({name: wandb.Table(columns=columns, data=data, allow_mixed_types=True)}, step=step)
        return path

    def artifact(self, path: str | Path, *, name: str, type: str, aliases: Sequence[str] = (),
                 metadata: Mapping[str, Any] | None = None) -> None:
        """Log the folder (or file) ``path`` as a wandb artifact, e.g. a checkpoint as type ``model``.

        Its files are copied into wandb's staging folder at once, so ``path`` may change afterwards.
        Nothing happens when wandb is off (``enabled=False`` or mode ``disabled``).

        Args:
            path: The folder or file to store.
            name: Artifact name; characters wandb does not allow (anything but letters, digits,
                ``-``, ``_`` and ``.``) become ``-``. Logging the same name again adds a version.
            type: Artifact type (``model``, ``dataset``...).
            aliases: Extra aliases of this version (wandb adds ``latest``).
            metadata: JSON-serializable facts stored with it (e.g. the step).

        Raises:
            FileNotFoundError: If ``path`` does not exist.
        """
        if self._run is None or self._run.disabled:
            return
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"cannot log {path} as artifact {name!r}: it does not exist")
        import wandb

        artifact = wandb.Artifact(re.sub(r"[^A-Za-z0-9_.-]", "-", name), type=type, metadata=dict(metadata or {}))
        if path.is_dir():
            artifact.add_dir(str(path))
        else:
            artifact.add_file(str(path))
        self._run.log_artifact(artifact, aliases=list(aliases))

    def summary(self, metrics: dict[str, Any]) -> None:
        """Record final or best values (e.g. ``eval/hr_avg``) in the run summary.

        Non-finite or non-number values are dropped with a warning, as in :meth:`log`.

        Args:
            metrics: Namespaced metric name to value.
        """
        clean = _finite_scalars(metrics)
        self.summary_metrics.update(clean)
        if self._run is not None:
            self._run.summary.update(clean)

    def finish(self, *, exit_code: int = 0) -> None:
        """Close the wandb run (safe to call more than once)."""
        if self._run is not None and not self._finished:
            self._run.finish(exit_code=exit_code)
        self._finished = True

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)


def _finite_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite real-number entries of ``metrics`` as floats; warns about the others."""
    clean: dict[str, float] = {}
    for key, value in metrics.items():
        number = _as_float(value)
        if number is None or not math.isfinite(number):
            warnings.warn(
                f"Not logging metric {key!r}: {value!r} is not a finite number.", stacklevel=3
            )
            continue
        clean[key] = number
    return clean


def _as_float(value: Any) -> float | None:
    if isinstance(value, numbers.Real):
        return float(value)
    # A 0-d tensor or array, e.g. a loss passed without .item().
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        item = value.item()
        if isinstance(item, numbers.Real):
            return float(item)
    return None
