"""Can a fusion of the signals beat the best single one (SASRec) on held-out users?

Scores every candidate of every training task (validation: each user's second-to-last item) and
every held-out task (each user's last item, all 943 users) with each signal, built as a run builds
them (``launch.stages.env_spec``; SASRec cached in the run folder). Then, for per-task score
normalisations (z-score, min-max, full-list Borda), it grid-searches fusion weights (SASRec 1, each
other signal in {0, .1, .25, .5, 1}) and reports: each signal alone, the weights best on validation
with their held-out score, and the best held-out score any weights reach (an oracle, fitted on the
held-out targets themselves: the ceiling of linear fusion). Held-out scores carry a 95% bootstrap
interval over users.

    python bench/bench_fusion.py --run-dir runs/quickstart
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from launch import stages
from launch.config import load_config
from teachers.fusion import hr_avg

SIGNALS = ("sequential", "recent_cf", "item_cf", "user_cf", "popularity", "genre_year")
GRID = (0.0, 0.1, 0.25, 0.5, 1.0)


def score_matrix(spec, tasks) -> tuple[np.ndarray, np.ndarray]:
    """``[tasks, signals, candidates]`` scores and each task's target index."""
    scores = np.zeros((len(tasks), len(SIGNALS), len(tasks[0].candidate_item_ids)))
    for t, task in enumerate(tasks):
        for s, name in enumerate(SIGNALS):
            by_item = spec.signals[name].scores(task.user_id, task.history, task.candidate_item_ids)
            scores[t, s] = [by_item.get(item, 0.0) for item in task.candidate_item_ids]
    # SASRec scores items it never saw -inf: just below the task's lowest finite score instead.
    finite = np.where(np.isfinite(scores), scores, np.inf).min(axis=-1, keepdims=True)
    scores = np.where(np.isfinite(scores), scores, np.where(np.isfinite(finite), finite, 0.0) - 1.0)
    return scores, np.array([task.candidate_item_ids.index(task.target_item_id) for task in tasks])


def target_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target; ties go to the candidate shown first."""
    target = scores[np.arange(len(scores)), targets][:, None]
    columns = np.arange(scores.shape[1])[None]
    return 1 + ((scores > target) | ((scores == target) & (columns < targets[:, None]))).sum(axis=1)


def normalise(scores: np.ndarray, how: str) -> np.ndarray:
    if how == "z":
        return (scores - scores.mean(-1, keepdims=True)) / (scores.std(-1, keepdims=True) + 1e-9)
    if how == "min-max":
        low, high = scores.min(-1, keepdims=True), scores.max(-1, keepdims=True)
        return (scores - low) / (high - low + 1e-9)
    order = np.argsort(-scores, axis=-1, kind="stable")  # Borda: points by full-list position
    points = np.empty_like(scores)
    np.put_along_axis(points, order, np.broadcast_to(np.arange(scores.shape[-1], 0, -1, dtype=float),
                                                     scores.shape).copy(), axis=-1)
    return points


def interval(ranks: np.ndarray, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    draws = [hr_avg(ranks[rng.integers(len(ranks), size=len(ranks))]) for _ in range(resamples)]
    return float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/quickstart", help="run folder whose tasks and SASRec to use")
    args = parser.parse_args()
    config = load_config(None, [f"run_dir={args.run_dir}", f"env.tools=[{','.join(SIGNALS)}]"])
    catalog, train_tasks, eval_tasks = stages.stage_data(config)
    validation = score_matrix(stages.env_spec(config, catalog, train_tasks, train_tasks=train_tasks), train_tasks)
    held_out = score_matrix(stages.env_spec(config, catalog, eval_tasks, train_tasks=train_tasks, evaluating=True),
                            eval_tasks)
    print(f"{len(train_tasks)} validation tasks, {len(eval_tasks)} held-out tasks; hr_avg:")
    for s, name in enumerate(SIGNALS):
        ranks = target_ranks(held_out[0][:, s], held_out[1])
        low, high = interval(ranks)
        print(f"  {name:12s} validation {hr_avg(target_ranks(validation[0][:, s], validation[1])):.3f}   "
              f"held-out {hr_avg(ranks):.3f} [{low:.3f}, {high:.3f}]")
    for how in ("z", "min-max", "borda"):
        fused = [normalise(validation[0], how), normalise(held_out[0], how)]
        results = []
        for others in itertools.product(GRID, repeat=len(SIGNALS) - 1):
            weights = np.array([1.0, *others])
            val, test = (hr_avg(target_ranks(np.einsum("tsc,s->tc", scores, weights), targets))
                         for scores, (_, targets) in zip(fused, (validation, held_out)))
            results.append((val, test, others))
        on_validation, oracle = max(results, key=lambda r: r[0]), max(results, key=lambda r: r[1])
        print(f"  fusion ({how}): weights best on validation {dict(zip(SIGNALS[1:], on_validation[2]))} "
              f"validation {on_validation[0]:.3f} held-out {on_validation[1]:.3f}; "
              f"best held-out any weights reach {oracle[1]:.3f} ({dict(zip(SIGNALS[1:], oracle[2]))})")


if __name__ == "__main__":
    main()
