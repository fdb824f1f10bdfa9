"""Paired bootstrap comparisons of two methods scored on the same tasks.

``eval.json`` holds each method's target rank per task (``ranks``, aligned with ``task_ids``). Two
methods are compared by resampling tasks with replacement, the same tasks for both (paired), and
reading a percentile interval of the difference of their mean metrics. Tasks differ far more in
difficulty than methods do, so pairing gives much tighter intervals than two separate error bars.
A rating report holds each method's predicted rating per task (``predictions``) and the true
ratings (``targets``) instead; its methods are compared by RMSE and MAE the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from envs.rating_baselines import rating_errors
from rewards.ranking import hit_at_k, mrr, ndcg_at_k

__all__ = [
    "METRICS",
    "PAIR_SEPARATOR",
    "RATING_METRICS",
    "compare_report",
    "format_comparison",
    "markdown_report",
    "paired_bootstrap",
    "parse_pair",
    "per_task_metrics",
    "rating_bootstrap",
]

METRICS = ("hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5", "mrr")
RATING_METRICS = ("rmse", "mae")
PAIR_SEPARATOR = "-"  # "A-B" reads as "A minus B"; method names use underscores, never hyphens
_MAX_CHUNK_ELEMENTS = 2_000_000  # resampled task indices held in memory at once (16 MB of int64)


def per_task_metrics(ranks: Sequence[int | None]) -> dict[str, np.ndarray]:
    """Each task's ranking metrics, from its target rank (``None`` is a miss).

    Args:
        ranks: One 1-based target rank per task, or ``None`` for a miss or an invalid answer.

    Returns:
        One float array per key of ``METRICS``, aligned with ``ranks``; ``hr_avg`` is the mean of
        hit@1, hit@3 and hit@5 of the task.

    Raises:
        ValueError: If a rank is neither ``None`` nor a positive integer.

    >>> metrics = per_task_metrics([1, 4, None])
    >>> metrics["hr@5"].tolist(), metrics["mrr"].tolist()
    ([1.0, 1.0, 0.0], [1.0, 0.25, 0.0])
    >>> metrics["hr_avg"].round(4).tolist()
    [1.0, 0.3333, 0.0]
    """
    for index, rank in enumerate(ranks):
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
            raise ValueError(f"task {index}: rank {rank!r} is not a positive integer or null (a miss).")
    hits = {k: np.array([hit_at_k(r, k) for r in ranks], dtype=float) for k in (1, 3, 5)}
    return {
        "hr@1": hits[1],
        "hr@3": hits[3],
        "hr@5": hits[5],
        "hr_avg": (hits[1] + hits[3] + hits[5]) / 3.0,
        "ndcg@5": np.array([ndcg_at_k(r, 5) for r in ranks], dtype=float),
        "mrr": np.array([mrr(r) for r in ranks], dtype=float),
    }


def paired_bootstrap(
    a_ranks: Sequence[int | None],
    b_ranks: Sequence[int | None],
    *,
    num_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    metrics: Sequence[str] = METRICS,
) -> dict[str, dict[str, float]]:
    """A percentile bootstrap interval of ``mean(a) - mean(b)`` for each metric.

    Every resample draws task indices with replacement and uses the same indices for both
    methods, so the interval reflects how the methods differ on the same tasks.

    Args:
        a_ranks: Method A's target rank per task (``None`` is a miss).
        b_ranks: Method B's target ranks on the same tasks, in the same order.
        num_resamples: Bootstrap resamples of the tasks.
        seed: Seed of the resampling; the same seed gives the same interval.
        confidence: Coverage of the interval, in (0, 1).
        metrics: Which keys of ``METRICS`` to compare.

    Returns:
        Per metric: ``a`` and ``b`` (the means over all tasks), ``diff`` (``a - b``), and ``low``
        and ``high``, the bounds of the interval of ``diff``.

    Raises:
        ValueError: If the rank lists are empty or of different lengths, a metric is unknown,
            ``num_resamples < 1`` or ``confidence`` is outside (0, 1).

    >>> result = paired_bootstrap([1, 1, 2, 1], [2, 3, 2, 6], num_resamples=2000)
    >>> result["hr@1"]["a"], result["hr@1"]["b"], result["hr@1"]["diff"]
    (0.75, 0.0, 0.75)
    >>> result["hr@1"]["low"] > 0  # A wins on every task but one tie: the interval excludes 0
    True
    >>> paired_bootstrap([1, None], [1, None])["mrr"]  # identical methods: a zero-width interval
    {'a': 0.5, 'b': 0.5, 'diff': 0.0, 'low': 0.0, 'high': 0.0}
    """
    _check_pair(a_ranks, b_ranks, "ranks", metrics, METRICS, num_resamples, confidence)
    a_metrics, b_metrics = per_task_metrics(a_ranks), per_task_metrics(b_ranks)
    differences = np.stack([a_metrics[m] - b_metrics[m] for m in metrics], axis=1)  # (tasks, metrics)
    resampled = _bootstrap_means(differences, num_resamples=num_resamples, seed=seed)
    return {metric: _interval(float(a_metrics[metric].mean()), float(b_metrics[metric].mean()),
                              resampled[:, column], confidence)
            for column, metric in enumerate(metrics)}


def rating_bootstrap(
    a_predictions: Sequence[float | None],
    b_predictions: Sequence[float | None],
    targets: Sequence[float],
    *,
    fallback: float,
    num_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    metrics: Sequence[str] = RATING_METRICS,
) -> dict[str, dict[str, float]]:
    """``paired_bootstrap`` for rating predictions: intervals of ``rmse(a) - rmse(b)`` and
    ``mae(a) - mae(b)``, each resample's RMSE taken over its own tasks. An invalid prediction (None)
    is scored as ``fallback``, as ``recrl eval`` scores it (the training mean).

    Raises:
        ValueError: As ``paired_bootstrap``, or ``targets`` is not one rating per task.

    >>> result = rating_bootstrap([4.0, 3.0], [5.0, None], [4.0, 3.0], fallback=5.0, num_resamples=200)
    >>> result["mae"]["a"], result["mae"]["b"], result["rmse"]["diff"]
    (0.0, 1.5, -1.5811388300841898)
    >>> result["mae"]["high"] < 0  # A is never further off: the interval lies below 0
    True
    """
    _check_pair(a_predictions, b_predictions, "predictions", metrics, RATING_METRICS, num_resamples, confidence)
    if len(targets) != len(a_predictions):
        raise ValueError(f"need one target rating per task; got {len(targets)} for {len(a_predictions)} tasks.")
    errors = np.array([rating_errors(predictions, targets, fallback=fallback)
                       for predictions in (a_predictions, b_predictions)], dtype=float).T  # (tasks, 2): a, b
    # Per task, the mean of which over tasks gives each metric after ``finish``: a and b side by side.
    per_task = {"rmse": errors**2, "mae": np.abs(errors)}
    finish = {"rmse": np.sqrt, "mae": np.asarray}
    resampled = _bootstrap_means(np.concatenate([per_task[m] for m in metrics], axis=1),
                                 num_resamples=num_resamples, seed=seed)
    result = {}
    for column, metric in enumerate(metrics):
        a, b = finish[metric](per_task[metric].mean(axis=0))
        scores = finish[metric](resampled[:, 2 * column : 2 * column + 2])  # (resamples, 2): a, b
        result[metric] = _interval(float(a), float(b), scores[:, 0] - scores[:, 1], confidence)
    return result


def _check_pair(a: Sequence, b: Sequence, what: str, metrics: Sequence[str], known: Sequence[str],
                num_resamples: int, confidence: float) -> None:
    """The argument checks of a paired comparison of ``what`` (ranks or predictions) per task."""
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs {what} on the same tasks; got {len(a)} and {len(b)} {what}.")
    if len(a) == 0:
        raise ValueError(f"paired comparison needs at least one task; got empty {what} lists.")
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; available: {list(known)}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be at least 1; got {num_resamples}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95; got {confidence}.")


def _interval(a: float, b: float, resampled_differences: np.ndarray, confidence: float) -> dict[str, float]:
    """Both scores, their difference and the percentile interval of the resampled differences."""
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(resampled_differences, [tail, 1.0 - tail])
    return {"a": a, "b": b, "diff": a - b, "low": float(low), "high": float(high)}


def _bootstrap_means(values: np.ndarray, *, num_resamples: int, seed: int) -> np.ndarray:
    """Column means of ``values`` (tasks x columns) over ``num_resamples`` resamples of the rows.

    Resamples are drawn in chunks so that 10k resamples of thousands of tasks stay within a few
    tens of megabytes.

    >>> _bootstrap_means(np.array([[2.0], [2.0]]), num_resamples=3, seed=0).tolist()
    [[2.0], [2.0], [2.0]]
    """
    rng = np.random.default_rng(seed)
    num_tasks = values.shape[0]
    chunk = max(1, _MAX_CHUNK_ELEMENTS // num_tasks)
    means = []
    for start in range(0, num_resamples, chunk):
        indices = rng.integers(0, num_tasks, size=(min(chunk, num_resamples - start), num_tasks))
        means.append(np.stack([column[indices].mean(axis=1) for column in values.T], axis=1))
    return np.concatenate(means, axis=0)


def parse_pair(text: str) -> tuple[str, str]:
    """Splits ``"A-B"`` (compare A against B) into its two method names.

    Raises:
        ValueError: If ``text`` is not two non-empty, different names joined by one ``-``.

    >>> parse_pair("student_grpo-student_sft")
    ('student_grpo', 'student_sft')
    >>> parse_pair("student_grpo")
    Traceback (most recent call last):
    ...
    ValueError: pair 'student_grpo' must be two method names joined by '-', e.g. student_grpo-student_sft (A minus B).
    """
    parts = text.split(PAIR_SEPARATOR)
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"pair {text!r} must be two method names joined by {PAIR_SEPARATOR!r}, e.g. "
                         f"student_grpo{PAIR_SEPARATOR}student_sft (A minus B).")
    if parts[0] == parts[1]:
        raise ValueError(f"pair {text!r} compares {parts[0]!r} with itself; name two different methods.")
    return parts[0], parts[1]


def compare_report(
    report: dict,
    pairs: Sequence[tuple[str, str]],
    *,
    num_resamples: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    metrics: Sequence[str] | None = None,
) -> dict:
    """Paired bootstrap comparisons of method pairs from an ``eval.json`` report.

    Args:
        report: The parsed ``eval.json``; needs ``task_ids`` and per-method ``ranks`` (a rating
            report: per-method ``predictions``, the ``targets`` and the fallback of an invalid
            answer, ``protocol.invalid_scored_as``).
        pairs: ``(a, b)`` method names; each comparison is of ``a - b``.
        num_resamples: Bootstrap resamples of the tasks.
        seed: Seed of the resampling (each pair uses the same seed, hence the same resamples).
        confidence: Coverage of the intervals, in (0, 1).
        metrics: Which keys of ``METRICS`` (``RATING_METRICS`` for a rating report) to compare;
            None: all.

    Returns:
        ``num_tasks``, ``num_resamples``, ``seed``, ``confidence``, ``metrics`` and
        ``comparisons``: one ``{"a", "b", "metrics", "tasks_ranked_differently"}`` per pair, where
        ``metrics`` is what ``paired_bootstrap`` (``rating_bootstrap``) returns and the last counts
        tasks whose target rank (predicted rating) differs between the two.

    Raises:
        ValueError: If the report has no per-task ranks, a method is not in it, or its ranks do
            not line up with ``task_ids``.

    >>> report = {"task_ids": ["u1", "u2"], "ranks": {"x": [1, 1], "y": [None, 1]}}
    >>> result = compare_report(report, [("x", "y")], num_resamples=100, metrics=["hr@1"])
    >>> result["comparisons"][0]["metrics"]["hr@1"]["diff"]
    0.5
    >>> compare_report(report, [("x", "z")])
    Traceback (most recent call last):
    ...
    ValueError: method 'z' is not in the report; it has per-task ranks of: ['x', 'y']
    """
    what = "predictions" if "predictions" in report else "ranks"
    if what not in report or "task_ids" not in report or (what == "predictions" and "targets" not in report):
        raise ValueError(f"the report has no per-task {what} (it was written by an older recrl); "
                         "re-run `recrl eval` to record them.")
    values, task_ids = report[what], report["task_ids"]
    metrics = list(dict.fromkeys(metrics or (RATING_METRICS if what == "predictions" else METRICS)))
    if not pairs:
        raise ValueError("name at least one pair of methods to compare, e.g. student_grpo-student_sft.")
    for method in dict.fromkeys(name for pair in pairs for name in pair):
        if method not in values:
            raise ValueError(f"method {method!r} is not in the report; it has per-task {what} of: "
                             f"{sorted(values)}")
        if len(values[method]) != len(task_ids):
            raise ValueError(f"method {method!r} has {len(values[method])} {what} but the report has "
                             f"{len(task_ids)} task_ids; re-run `recrl eval`.")

    def pair(a: str, b: str) -> dict[str, dict[str, float]]:
        settings = {"num_resamples": num_resamples, "seed": seed, "confidence": confidence, "metrics": metrics}
        if what == "ranks":
            return paired_bootstrap(values[a], values[b], **settings)
        return rating_bootstrap(values[a], values[b], report["targets"],
                                fallback=report["protocol"]["invalid_scored_as"], **settings)

    # How often the two differ on a task (target rank, or rating): methods can differ at equal means.
    differing = "tasks_ranked_differently" if what == "ranks" else "tasks_rated_differently"
    comparisons = [{"a": a, "b": b, "metrics": pair(a, b), differing: sum(x != y for x, y in zip(values[a], values[b]))}
                   for a, b in pairs]
    return {"num_tasks": len(task_ids), "num_resamples": num_resamples, "seed": seed,
            "confidence": confidence, "metrics": metrics, "comparisons": comparisons}


def format_comparison(result: dict) -> str:
    """A fixed-width table of ``compare_report``'s result, one row per pair and metric.

    A ``*`` marks a difference whose interval excludes 0.

    >>> result = {"num_tasks": 3, "num_resamples": 10, "confidence": 0.95, "comparisons": [
    ...     {"a": "x", "b": "y", "metrics": {"mrr": {"a": 0.5, "b": 0.25, "diff": 0.25,
    ...                                              "low": 0.1, "high": 0.4}}}]}
    >>> print(format_comparison(result))
    pair   metric          a        b     diff            95% CI
    ------------------------------------------------------------
    x - y  mrr         0.500    0.250   +0.250  [+0.100, +0.400] *
    * the 95% interval of the difference excludes 0 (paired bootstrap: 10 resamples of 3 tasks)
    """
    pair_names = [f"{c['a']} - {c['b']}" for c in result["comparisons"]]
    pair_width = max(len("pair"), *map(len, pair_names)) + 2
    level = f"{result['confidence'] * 100:g}%"
    header = f"{'pair':<{pair_width}}{'metric':<8}{'a':>9}{'b':>9}{'diff':>9}{level + ' CI':>18}"
    rows = [header, "-" * len(header)]
    for name, comparison in zip(pair_names, result["comparisons"]):
        for metric, stats in comparison["metrics"].items():
            excludes_zero = stats["low"] > 0 or stats["high"] < 0
            rows.append(f"{name:<{pair_width}}{metric:<8}{stats['a']:>9.3f}{stats['b']:>9.3f}"
                        f"{stats['diff']:>+9.3f}  [{stats['low']:+.3f}, {stats['high']:+.3f}]"
                        + (" *" if excludes_zero else ""))
    for name, comparison in zip(pair_names, result["comparisons"]):
        for key, what in (("tasks_ranked_differently", "the target's rank"), ("tasks_rated_differently", "the rating")):
            if key in comparison:
                rows.append(f"{name}: {what} differs on {comparison[key]} of {result['num_tasks']} tasks")
    rows.append(f"* the {level} interval of the difference excludes 0 (paired bootstrap: "
                f"{result['num_resamples']} resamples of {result['num_tasks']} tasks)")
    return "\n".join(rows)


TABLE_COLUMNS = (("hr@1", "HR@1"), ("hr@3", "HR@3"), ("hr@5", "HR@5"), ("hr_avg", "hr_avg ± 95%"),
                 ("ndcg@5", "NDCG@5"), ("mrr", "MRR"), ("format_rate", "format"))
"""The columns of ``markdown_report``'s method table: eval.json keys and their headings."""
RATING_COLUMNS = (("rmse", "RMSE"), ("mae", "MAE"), ("valid_rate", "valid"), ("format_rate", "format"))
"""The same for a rating report."""
CRS_COLUMNS = (("crs/success", "success"), ("crs/turns_to_accept", "turns to accept"), ("crs/recall@1", "recall@1"),
               ("crs/recall@3", "recall@3"), ("crs/recall@5", "recall@5"), ("format_rate", "format"))
"""The same for a conversational report (its hits at 1 are the accepted conversations)."""


def markdown_report(report: dict, result: dict) -> str:
    """Markdown tables for a README: every method of ``eval.json`` (``hr_avg`` with its normal 95%
    half-width; RMSE, MAE and the valid rate for a rating report; success, turns to accept and
    recall@k for a conversational one) and ``compare_report``'s paired intervals. A metric a method
    lacks, or that is undefined (no conversation accepted: no turns to accept), shows as "–".

    >>> report = {"task_ids": ["u1", "u2"], "methods": {"x": {"hr@1": 1.0, "hr_avg": 1.0, "hr_avg_ci95": 0.0}}}
    >>> result = {"num_tasks": 2, "num_resamples": 10, "confidence": 0.95, "comparisons": [
    ...     {"a": "x", "b": "y", "metrics": {"hr_avg": {"a": 1.0, "b": 0.5, "diff": 0.5, "low": 0.1, "high": 0.9}}}]}
    >>> print(markdown_report(report, result))
    | method (2 tasks) | HR@1 | HR@3 | HR@5 | hr_avg ± 95% | NDCG@5 | MRR | format |
    |---|---|---|---|---|---|---|---|
    | x | 1.000 | – | – | 1.000 ± 0.000 | – | – | – |
    <BLANKLINE>
    | A − B | metric | A | B | A − B | 95% CI (paired bootstrap, 10 resamples) |
    |---|---|---|---|---|---|
    | x − y | hr_avg | 1.000 | 0.500 | +0.500 | [+0.100, +0.900] * |
    <BLANKLINE>
    \\* the interval excludes 0
    """

    def cell(metrics: dict, key: str) -> str:
        if key not in metrics or math.isnan(metrics[key]):
            return "–"
        if key == "hr_avg" and "hr_avg_ci95" in metrics:
            return f"{metrics[key]:.3f} ± {metrics['hr_avg_ci95']:.3f}"
        return f"{metrics[key]:.3f}"

    conversational = any("crs/success" in metrics for metrics in report["methods"].values())
    columns = RATING_COLUMNS if "predictions" in report else CRS_COLUMNS if conversational else TABLE_COLUMNS
    rows = [f"| method ({len(report['task_ids'])} tasks) | " + " | ".join(h for _, h in columns) + " |",
            "|---" * (len(columns) + 1) + "|"]
    rows += [f"| {name} | " + " | ".join(cell(metrics, key) for key, _ in columns) + " |"
             for name, metrics in report["methods"].items()]
    level = f"{result['confidence'] * 100:g}%"
    rows += ["", f"| A − B | metric | A | B | A − B | {level} CI (paired bootstrap, {result['num_resamples']} "
                 "resamples) |", "|---" * 6 + "|"]
    for comparison in result["comparisons"]:
        for metric, stats in comparison["metrics"].items():
            mark = " *" if stats["low"] > 0 or stats["high"] < 0 else ""
            rows.append(f"| {comparison['a']} − {comparison['b']} | {metric} | {stats['a']:.3f} | {stats['b']:.3f} | "
                        f"{stats['diff']:+.3f} | [{stats['low']:+.3f}, {stats['high']:+.3f}]{mark} |")
    rows += ["", "\\* the interval excludes 0"]
    return "\n".join(rows)
