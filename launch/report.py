"""``recrl report RUN_DIR``: one static HTML page of a run that opens offline in any browser.

It shows the learning curves (PNGs drawn from ``metrics.jsonl``), the evaluation table against the
baselines with confidence intervals (``eval.json``), ``recrl compare``'s paired intervals
(``compare.json``), the best-of-k curve, sample evaluation episodes (``samples/``, else the
``tables/eval`` rows) and teacher episodes (``teacher/dataset``) drawn as conversations, and the
run's configuration. A run may stop anywhere: each part it lacks is named, with the command that
makes it, and a damaged file spoils only its own section.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from envs.types import Trajectory
from launch import report_html as html
from launch.paths import RunPaths

__all__ = ["Panel", "add_parser", "build_report", "curve_panels", "main"]

REPORT_DIR = "report"
DEFAULT_EPISODES = 3


class Missing(Exception):
    """A part the run does not hold; the message names it and the command that makes it."""


@dataclass(frozen=True)
class Panel:
    """One learning-curve plot: its file name part, title and lines (label to ``(step, value)`` points)."""

    slug: str
    title: str
    lines: dict[str, list[tuple[int, float]]]


PANELS: tuple[tuple[str, str, str, Callable[[str], bool]], ...] = (
    ("sft_loss", "SFT loss", "sft", lambda key: key == "train/loss"),
    ("reward", "GRPO reward", "rl", lambda key: key.startswith("reward/")),
    ("rl_loss", "GRPO loss", "rl", lambda key: key == "train/loss"),
    ("kl", "KL to the reference", "rl", lambda key: key == "train/kl"),
    ("rollouts", "Rollouts", "rl", lambda key: key in ("rollout/format_rate", "rollout/uniform_group_frac")),
)
"""The training plots: slug, title, the stage whose rows they read (``row_stage``) and which keys."""
HEADLINE_METRICS = ("hr_avg", "rmse", "crs/success")
"""The metric of the evaluation curve, the first that ``eval/<method>/<metric>`` rows hold."""


def row_stage(row: dict[str, Any]) -> str:
    """Which stage logged a ``metrics.jsonl`` row: ``eval``, ``rl`` (rollouts and rewards) or ``sft``."""
    if any(key.startswith("eval/") for key in row):
        return "eval"
    return "rl" if any(key.startswith(("reward/", "rollout/")) for key in row) else "sft"


def curve_panels(rows: list[dict[str, Any]]) -> list[Panel]:
    """The learning-curve plots that ``metrics.jsonl`` rows fill, each line sorted by step.

    Each stage has its own steps (GRPO may count from 1 again after SFT); a step logged twice (a
    resumed run) keeps its last value. The evaluation curve needs two evaluations at least.

    >>> rows = [{"step": 1, "train/loss": 0.9}, {"step": 2, "train/loss": 0.5},
    ...         {"step": 1, "reward/total": 0.1, "train/loss": 0.2}, {"step": 1, "reward/total": 0.3}]
    >>> [(panel.slug, panel.lines) for panel in curve_panels(rows)]
    [('sft_loss', {'train/loss': [(1, 0.9), (2, 0.5)]}), ('reward', {'reward/total': [(1, 0.3)]}),
     ('rl_loss', {'train/loss': [(1, 0.2)]})]
    """
    stages: dict[str, dict[str, dict[int, float]]] = {}
    for row in rows:
        series = stages.setdefault(row_stage(row), {})
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(key, {})[int(row["step"])] = float(value)
    panels = []
    for slug, title, stage, wanted in PANELS:
        lines = {key: sorted(points.items()) for key, points in stages.get(stage, {}).items() if wanted(key)}
        if lines:
            panels.append(Panel(slug, title, lines))
    by_metric: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for key, points in stages.get("eval", {}).items():
        parts = key.split("/", 2)  # eval/<method>/<metric>; eval/<metric> repeats the final student's
        if len(parts) == 3:
            by_metric.setdefault(parts[2], {})[parts[1]] = sorted(points.items())
    metric = next((m for m in HEADLINE_METRICS if m in by_metric), None)
    if metric is not None and any(len(points) > 1 for points in by_metric[metric].values()):
        panels.append(Panel("eval", f"Evaluation: {metric}", by_metric[metric]))
    return panels


def plot_panel(panel: Panel, path: Path) -> Path:
    """Draws ``panel`` into the PNG ``path``."""
    from matplotlib.figure import Figure  # lazy: only the report draws

    figure = Figure(figsize=(5, 3.2), dpi=110, layout="constrained")
    axes = figure.subplots()
    for label, points in panel.lines.items():
        steps, values = zip(*points)
        axes.plot(steps, values, label=label, marker="o" if len(points) <= 30 else None, markersize=3,
                  linewidth=2.2 if label.endswith("/total") else 1.4)
    axes.set_xlabel("step")
    axes.set_title(panel.title)
    axes.grid(alpha=0.3)
    if len(panel.lines) > 4:  # an evaluation's many methods: beside the plot, not over it
        figure.set_size_inches(6.4, 3.2)
        figure.legend(loc="outside right upper", fontsize=7)
    elif len(panel.lines) > 1:
        axes.legend(fontsize=8)
    figure.savefig(path, format="png")
    return path


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The rows of ``metrics.jsonl`` that have a step, and how many lines could not be read (a run
    killed while writing leaves half a line)."""
    rows, unreadable = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            row = {}
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
        elif row is not None:
            unreadable += 1
    return rows, unreadable


def read_episodes(path: Path, limit: int) -> list[Trajectory]:
    """The first ``limit`` episodes of a ``samples/<method>.jsonl`` file."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [Trajectory.from_row(json.loads(line)) for line in lines[:limit]]


@dataclass
class Run:
    """What the sections read: the run folder, where the page goes, and what they share."""

    root: Path
    out: Path
    episodes: int
    palette: html.Palette = field(default_factory=html.Palette)
    _eval: dict | None = None

    def eval_report(self) -> dict:
        """The parsed ``eval.json``; ``Missing`` without one."""
        if self._eval is None:
            path = RunPaths(self.root).eval_json
            if not path.is_file():
                raise Missing(f"no eval.json: `recrl eval` scores the baselines, teacher and students ({path})")
            self._eval = json.loads(path.read_text(encoding="utf-8"))
        return self._eval

    def conversations(self, trajectories: list[Trajectory]) -> str:
        """A legend of the speakers, then each episode (the first one unfolded)."""
        body = "".join(html.conversation(t, self.palette, open_=i == 0) for i, t in enumerate(trajectories))
        roles = dict.fromkeys(turn.role for t in trajectories for turn in t.turns if turn.is_agent)
        tools = dict.fromkeys(call.name for t in trajectories for action in t.actions for call in action.tool_calls)
        return self.palette.legend(roles, tools) + body


def curves_section(run: Run) -> str:
    path = run.root / "metrics.jsonl"
    if not path.is_file():
        raise Missing("no metrics.jsonl: `recrl sft` and `recrl train` log the learning curves there")
    rows, unreadable = read_metrics(path)
    panels = curve_panels(rows)
    if not panels:
        raise Missing("metrics.jsonl holds no training rows (loss, reward, KL): `recrl sft` and `recrl train` log them")
    images = [(plot_panel(panel, run.out / f"curve_{panel.slug}.png").name, "") for panel in panels]  # titled PNGs
    note = f'<p class="sub">{unreadable} unreadable line(s) of metrics.jsonl skipped</p>' if unreadable else ""
    return html.figures(images) + note


def evaluation_section(run: Run) -> str:
    report = run.eval_report()
    methods = report.get("methods") or {}
    if not methods:
        raise Missing("eval.json lists no method yet: `recrl eval` adds each one as it finishes")
    protocol = report.get("protocol") or {}
    facts = [f"{key} {protocol[key]}" for key in ("dataset", "task", "split", "num_tasks", "num_candidates",
                                                   "decoding", "model", "seed") if protocol.get(key) not in (None, "")]
    skipped = "".join(f"<li>{html.esc(m)}: {html.esc(why)}</li>" for m, why in (protocol.get("skipped") or {}).items())
    return (f'<p class="sub">{html.esc(", ".join(facts))}</p>'
            + html.eval_table(methods, protocol.get("num_tasks", len(report.get("task_ids", [])) or "?"))
            + '<p class="sub">± the half-width of a normal 95% interval over tasks; the bar draws the value '
              "and that interval on [0, 1]. Paired intervals between methods are below.</p>"
            + (f"<p>Not evaluated:</p><ul>{skipped}</ul>" if skipped else ""))


def comparisons_section(run: Run) -> str:
    path = run.root / "compare.json"
    if not path.is_file():
        raise Missing(f"no compare.json: `recrl compare {run.root} student_grpo-student_sft` writes paired "
                      "bootstrap intervals of the differences")
    result = json.loads(path.read_text(encoding="utf-8"))
    if not result.get("comparisons"):
        raise Missing("compare.json holds no comparison")
    differ = "".join(f"<li>{html.esc(c['a'])} − {html.esc(c['b'])}: the target's rank differs on "
                     f"{html.esc(c['tasks_ranked_differently'])} of {html.esc(result.get('num_tasks', '?'))} tasks</li>"
                     for c in result["comparisons"] if "tasks_ranked_differently" in c)
    return html.compare_table(result) + (f"<ul>{differ}</ul>" if differ else "")


def best_of_k_section(run: Run) -> str:
    try:
        curves = run.eval_report().get("best_of_k") or {}
    except Missing:
        curves = {}
    if curves:
        from rl.best_of_k import plot_best_of_k

        plot_best_of_k(curves, run.out / "best_of_k.png")
        rows = [{"method": method, "k": int(k), **metrics} for method, curve in curves.items()
                for k, metrics in sorted(curve.items(), key=lambda item: int(item[0]))]
        return html.figures([("best_of_k.png", "")]) + html.grid_table("best-of-k-table", rows)
    if (run.root / "best_of_k.png").is_file():
        shutil.copyfile(run.root / "best_of_k.png", run.out / "best_of_k.png")
        return html.figures([("best_of_k.png", "Best of k (the run's best_of_k.png)")])
    raise Missing("no best-of-k curve: `recrl eval` with `eval.best_of_k=[1,2,4,8] "
                  "eval.best_of_k_methods=[student_grpo]` samples a student k times per task and draws it")


def eval_episodes_section(run: Run) -> str:
    try:
        order = list(run.eval_report().get("methods") or {})
    except (Missing, ValueError):
        order = []
    folder = RunPaths(run.root).eval_samples
    files = {path.stem: path for path in sorted(folder.glob("*.jsonl"))} if folder.is_dir() else {}
    tables: dict[str, tuple[int, Path]] = {}  # tables/eval/samples_<method>-<step>.jsonl: the latest step
    for path in sorted((run.root / "tables" / "eval").glob("samples_*-*.jsonl")):
        method, _, step = path.stem.removeprefix("samples_").rpartition("-")
        if step.isdigit() and int(step) >= tables.get(method, (-1, path))[0]:
            tables[method] = (int(step), path)
    blocks = []
    for method in dict.fromkeys([*order, *sorted(files), *sorted(tables)]):
        try:
            if method in files:
                body = run.conversations(read_episodes(files[method], run.episodes))
            elif method in tables:
                lines = tables[method][1].read_text(encoding="utf-8").splitlines()[:run.episodes]
                rows = [json.loads(line) for line in lines]
                body = ('<p class="sub">table rows only (no full episodes in samples/)</p>'
                        + html.grid_table(f"samples-{method}", rows))
            else:
                continue
        except (OSError, ValueError, KeyError, TypeError) as error:
            body = html.missing(f"could not read the episodes of {method} ({type(error).__name__}: {error})")
        blocks.append(f"<h3>{html.esc(method)}</h3>{body}")
    if not blocks:
        raise Missing(f"no sample episodes: `recrl eval` saves eval.sample_trajectories episodes of each method that "
                      f"plays in {RunPaths(run.root).eval_samples.name}/ (the ranking baselines score without episodes)")
    return "".join(blocks)


def teacher_episodes_section(run: Run) -> str:
    path = RunPaths(run.root).teacher_dataset
    if not path.is_dir():
        raise Missing("no teacher/dataset: `recrl teach` writes the teacher's episodes there")
    import datasets  # lazy and direct (not teachers.pipeline.read_dataset): decode only the rows shown

    rows = datasets.load_from_disk(str(path))
    shown = [Trajectory.from_row(row) for row in rows.select(range(min(run.episodes, len(rows))))]
    if not shown:
        raise Missing("teacher/dataset holds no episode")
    return f'<p class="sub">the first {len(shown)} of {len(rows)} episodes</p>' + run.conversations(shown)


def config_section(run: Run) -> str:
    files = sorted(run.root.glob("config.*.yaml"))
    if not files:
        raise Missing("no config.<command>.yaml: each recrl command saves the configuration it ran with")
    return "".join(f'<details class="file"><summary>{html.esc(path.name)}</summary>'
                   f"<pre>{html.esc(path.read_text(encoding='utf-8', errors='replace'))}</pre></details>"
                   for path in files)


SECTIONS: tuple[tuple[str, str, Callable[[Run], str]], ...] = (
    ("curves", "Learning curves", curves_section),
    ("evaluation", "Evaluation against the baselines", evaluation_section),
    ("comparisons", "Paired comparisons", comparisons_section),
    ("best-of-k", "Best of k", best_of_k_section),
    ("eval-episodes", "Evaluation episodes", eval_episodes_section),
    ("teacher-episodes", "Teacher episodes", teacher_episodes_section),
    ("config", "Configuration", config_section),
)
"""The page's sections, in order: anchor, title, and what builds the body (raising ``Missing``)."""


def build_report(run_dir: str | Path, out_dir: str | Path | None = None, *, episodes: int = DEFAULT_EPISODES) -> Path:
    """Writes the report of the run in ``run_dir``: ``index.html`` and its PNGs in ``out_dir``.

    Args:
        run_dir: A run folder (the ``run_dir`` of ``recrl quickstart``, ``train``, ``eval``...).
        out_dir: Where the page and its images go (created); default ``run_dir/report``.
        episodes: Episodes shown per evaluated method, and of the teacher.

    Returns:
        The path of ``index.html``.

    Raises:
        FileNotFoundError: If ``run_dir`` is not a folder. Missing or damaged parts of the run never
            raise: the page names them.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no run folder at {root}: pass the run_dir of a recrl run, e.g. "
                                "`recrl report runs/quickstart`")
    out = Path(out_dir) if out_dir is not None else root / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    run = Run(root, out, max(episodes, 0))
    parts, bodies = [], []
    for anchor, title, build in SECTIONS:
        try:
            body, why = build(run), None
        except Missing as gap:
            why = str(gap)
            body = html.missing(why)
        except Exception as error:  # noqa: BLE001 - a damaged file spoils its own section, not the report
            why = f"could not be read ({type(error).__name__}: {error})"
            body = html.missing(why)
        parts.append((anchor, title, why))
        bodies.append(html.section(anchor, title, body))
    written = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = html.page(f"recrl report: {root.resolve().name}", f"{root} · written {written}",
                     html.section("contents", "What this run holds", html.parts_list(parts)), bodies)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``recrl report`` to the CLI's subcommands."""
    text = "a static HTML report of a run: learning curves, evaluation with intervals, best-of-k, episodes"
    parser = subparsers.add_parser("report", help=text, description=text + " -> RUN_DIR/report/index.html",
                                   epilog="example: recrl report runs/quickstart")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (the run_dir of recrl quickstart, eval...)")
    parser.add_argument("--out", metavar="DIR",
                        help="where to write index.html and its images (default RUN_DIR/report)")
    parser.add_argument("--episodes", type=int, default=DEFAULT_EPISODES,
                        help=f"episodes shown per method and of the teacher (default {DEFAULT_EPISODES})")
    return parser


def main(args: argparse.Namespace) -> int:
    """Runs ``recrl report``: writes the page and prints where it is."""
    try:
        index = build_report(args.run_dir, args.out, episodes=args.episodes)
    except FileNotFoundError as error:
        print(f"recrl report: error: {error}", file=sys.stderr)
        return 1
    print(f"[report] wrote {index} (open it in a browser; it needs no network)")
    return 0
