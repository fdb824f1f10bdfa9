"""SASRec as a ranking signal on ml-100k: fit time and ranking metrics on every user's eval task.

Fits on the eval tasks' training interactions (everything before each user's target), then ranks
each task's 20 candidates by the model's score after the task's history. ``--compare-bf16`` also
times the same fit with the other ``--bf16`` setting. On a machine whose cores other processes
also use, ``--threads 1`` fits several times faster than two contended threads.

    python bench/bench_sasrec.py --threads 1 --compare-bf16
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from envs.data import build_tasks, load_ml100k, training_interactions
from envs.signals.sasrec import SASRecConfig, fit_sasrec
from envs.tools import InteractionGraph, rank_candidates
from rewards.ranking import rank_of, ranking_metrics


def evaluate(scorer, tasks) -> tuple[dict[str, float], float]:
    """Ranking metrics over ``tasks`` and the seconds ``scores_batch`` took for all of them."""
    started = time.perf_counter()
    scores = scorer.scores_batch([task.history for task in tasks], [task.candidate_item_ids for task in tasks])
    seconds = time.perf_counter() - started
    ranks = [
        rank_of(rank_candidates(task_scores, task.candidate_item_ids), task.target_item_id)
        for task_scores, task in zip(scores, tasks)
    ]
    return ranking_metrics(ranks), seconds


def fit_and_evaluate(sequences, tasks, config: SASRecConfig, label: str) -> None:
    started = time.perf_counter()
    scorer = fit_sasrec(sequences, config)
    fit_seconds = time.perf_counter() - started
    metrics, score_seconds = evaluate(scorer, tasks)
    shown = " ".join(f"{name}={value:.4f}" for name, value in metrics.items())
    print(f"[{label}] fit {fit_seconds:.1f}s ({config.epochs} epochs), "
          f"scoring {len(tasks)} tasks {score_seconds:.3f}s")
    print(f"[{label}] {shown}")


def main() -> None:
    defaults = SASRecConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for field in dataclasses.fields(SASRecConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            parser.add_argument(flag, type=type(getattr(defaults, field.name)), default=field.default)
    parser.add_argument("--compare-bf16", action="store_true", help="also fit with the other bf16 setting")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = SASRecConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(SASRecConfig)})

    catalog = load_ml100k()
    tasks = build_tasks(catalog, num_negatives=19, seed=0, max_history=50)
    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, tasks))
    sequences = {user_id: graph.user_items(user_id) for user_id in graph.user_ids}
    print(f"{len(sequences)} users, {len(graph.item_ids)} items, torch threads {torch.get_num_threads()}")
    print(config)
    fit_and_evaluate(sequences, tasks, config, "bf16" if config.bf16 else "fp32")
    if args.compare_bf16:
        other = dataclasses.replace(config, bf16=not config.bf16)
        fit_and_evaluate(sequences, tasks, other, "bf16" if other.bf16 else "fp32")


if __name__ == "__main__":
    main()
