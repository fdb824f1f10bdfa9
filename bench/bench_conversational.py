"""ConversationalRec-v0 on ml-100k: the rule-based conversational policy against random policies.

Every held-out ml-100k user becomes one dialogue (the ranking task's 20 candidates, its target as the
user's hidden wish) with the rule-based user simulator; each policy plays every dialogue through the
episode loop (``rollout.episode.run_episodes``). Reports success with a Wilson 95% interval, mean
turns to acceptance, recall@1/3, and the rule-based minus random success difference (paired
bootstrap, 95%), for each simulated user in ``USERS``.

    python bench/bench_conversational.py
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from envs import make_env
from envs.conversational import dialogue_task, recall_at_k, success_rate, turns_to_acceptance
from envs.data import build_tasks, load_ml100k
from envs.simulators import RuleBasedSimulator
from rollout.episode import EpisodeRequest, run_episodes
from teachers.crs_policies import RandomCRSPolicy, RuleBasedCRSPolicy


USERS = {
    "truthful": {},
    "noise 0.2": {"noise": 0.2},
    "noise 0.4": {"noise": 0.4},
    "genre+decade only, noise 0.2": {"noise": 0.2, "attributes": ("genre", "decade")},
}
"""Simulated users (``RuleBasedSimulator`` arguments beside ``patience``) by label."""


def wilson_interval(successes: int, total: int, *, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion.

    >>> [round(x, 3) for x in wilson_interval(5, 10)]
    [0.237, 0.763]
    """
    if total == 0:
        return 0.0, 1.0
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def paired_difference(a: np.ndarray, b: np.ndarray, *, resamples: int = 10_000,
                      seed: int = 0) -> tuple[float, float, float]:
    """``mean(a - b)`` and its percentile bootstrap 95% interval (the same users resampled for both)."""
    differences = a.astype(float) - b.astype(float)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(len(differences), size=(resamples, len(differences)))].mean(axis=1)
    return float(differences.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def play(policy, catalog, tasks, *, user: dict, patience: int, max_turns: int):
    """One dialogue per task; env ``k`` is seeded with ``k``, so every policy meets the same users."""
    envs = [make_env("ConversationalRec-v0", catalog=catalog, max_turns=max_turns,
                     simulator=RuleBasedSimulator(patience=patience, **user)) for _ in tasks]
    for seed, (env, task) in enumerate(zip(envs, tasks)):
        env.reset(seed=seed, options={"task": task})
    requests = [EpisodeRequest(task, seed=seed) for seed, task in enumerate(tasks)]
    return run_episodes(policy, envs, requests, source=policy.role)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", nargs="+", default=list(USERS), choices=list(USERS), help="simulated users")
    parser.add_argument("--patience", type=int, default=3, help="rejections before the user leaves")
    parser.add_argument("--max-turns", type=int, default=8, help="agent turns per dialogue")
    args = parser.parse_args()

    catalog = load_ml100k()
    tasks = [dialogue_task(task) for task in build_tasks(catalog, num_negatives=19, seed=0)]
    targets = [task.target_item_id for task in tasks]
    print(f"{len(tasks)} dialogues, 20 candidates each, patience {args.patience}, {args.max_turns} turns")
    print("| user | policy | success [95% CI] | turns to accept | recall@1 | recall@3 | valid format | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    policies = {"rule-based": RuleBasedCRSPolicy(catalog), "random (all acts)": RandomCRSPolicy(),
                "random (recommend only)": RandomCRSPolicy(acts=("recommend",))}
    differences = []
    for label in args.users:
        accepted = {}
        for name, policy in policies.items():
            began = time.perf_counter()
            trajectories = play(policy, catalog, tasks, user=USERS[label], patience=args.patience, max_turns=args.max_turns)
            seconds = time.perf_counter() - began
            outcomes = [trajectory.outcome for trajectory in trajectories]
            accepted[name] = np.array([outcome.accepted for outcome in outcomes])
            low, high = wilson_interval(int(accepted[name].sum()), len(outcomes))
            valid = np.mean([trajectory.format_valid for trajectory in trajectories])
            print(f"| {label} | {name} | {success_rate(outcomes):.3f} [{low:.3f}, {high:.3f}] | "
                  f"{turns_to_acceptance(outcomes):.2f} | {recall_at_k(outcomes, targets, 1):.3f} | "
                  f"{recall_at_k(outcomes, targets, 3):.3f} | {valid:.3f} | {seconds:.1f} |")
        for baseline in ("random (all acts)", "random (recommend only)"):
            differences.append((label, baseline, paired_difference(accepted["rule-based"], accepted[baseline])))
    for label, baseline, (mean, low, high) in differences:
        print(f"{label}: rule-based minus {baseline}: success {mean:+.3f} [{low:+.3f}, {high:+.3f}]")


if __name__ == "__main__":
    main()
