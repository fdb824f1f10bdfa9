"""ConversationalRec-v0 on ml-100k: the rule-based conversational policy against random policies.

Every held-out ml-100k user becomes one dialogue (the ranking task's 20 candidates, its target as the
user's hidden wish) with the rule-based user simulator; each policy plays every dialogue through the
episode loop (``rollout.episode.run_episodes``). Reports success with a Wilson 95% interval, mean
turns to acceptance, recall@1/3, and the rule-based minus random success difference (paired
bootstrap, 95%), for each simulated user in ``USERS``. With ``--llm-user MODEL`` the user's words
come from that model instead (``LLMSimulator``: the verdicts stay the rules'), on a seeded sample of
``--dialogues`` users; it also reports how often a reply named the target and was refused.

    python bench/bench_conversational.py
    python bench/bench_conversational.py --llm-user smollm2-135m-instruct --dialogues 40
"""

from __future__ import annotations

import argparse
import functools
import math
import time

import numpy as np

from envs import make_env
from envs.conversational import dialogue_task, recall_at_k, success_rate, turns_to_acceptance
from envs.data import build_tasks, load_ml100k
from envs.data.splits import sample_in_order
from envs.simulators import LLMSimulator, RuleBasedSimulator
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
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(a: np.ndarray, b: np.ndarray, *, resamples: int = 10_000,
                      seed: int = 0) -> tuple[float, float, float]:
    """``mean(a - b)`` and its percentile bootstrap 95% interval (the same users resampled for both)."""
    differences = a.astype(float) - b.astype(float)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(len(differences), size=(resamples, len(differences)))].mean(axis=1)
    return float(differences.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def play(policy, catalog, tasks, *, simulator, max_turns: int):
    """One dialogue per task, each with a fresh ``simulator()``; env ``k`` is seeded with ``k``, so
    every policy meets the same users."""
    envs = [make_env("ConversationalRec-v0", catalog=catalog, max_turns=max_turns, simulator=simulator())
            for _ in tasks]
    for seed, (env, task) in enumerate(zip(envs, tasks)):
        env.reset(seed=seed, options={"task": task})
    requests = [EpisodeRequest(task, seed=seed) for seed, task in enumerate(tasks)]
    return run_episodes(policy, envs, requests, source=policy.role)


def llm_users(model: str, patience: int):
    """A factory of LLM-played users sharing one model (sampled at temperature 0.7, seeded), and
    the simulators it made."""
    from rollout.generate import chat_generator

    generate = chat_generator(model, max_new_tokens=48, temperature=0.7)
    made: list[LLMSimulator] = []

    def make() -> LLMSimulator:
        made.append(LLMSimulator(lambda messages: generate([messages])[0], patience=patience))
        return made[-1]

    return make, made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", nargs="+", default=list(USERS), choices=list(USERS), help="simulated users")
    parser.add_argument("--patience", type=int, default=3, help="rejections before the user leaves")
    parser.add_argument("--max-turns", type=int, default=8, help="agent turns per dialogue")
    parser.add_argument("--llm-user", metavar="MODEL", help="the user's words from this model (e.g. smollm2-135m-instruct)")
    parser.add_argument("--dialogues", type=int, default=0, help="a seeded sample of this many users (0: all)")
    args = parser.parse_args()

    catalog = load_ml100k()
    tasks = [dialogue_task(task) for task in build_tasks(catalog, num_negatives=19, seed=0)]
    tasks = sample_in_order(tasks, args.dialogues, seed=0)
    if args.llm_user:
        make, made = llm_users(args.llm_user, args.patience)
        users = {f"LLM user ({args.llm_user})": make}
    else:
        users = {label: functools.partial(RuleBasedSimulator, patience=args.patience, **USERS[label])
                 for label in args.users}
    targets = [task.target_item_id for task in tasks]
    print(f"{len(tasks)} dialogues, 20 candidates each, patience {args.patience}, {args.max_turns} turns")
    print("| user | policy | success [95% CI] | turns to accept | recall@1 | recall@3 | valid format | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    policies = {"rule-based": RuleBasedCRSPolicy(catalog), "random (all acts)": RandomCRSPolicy(),
                "random (recommend only)": RandomCRSPolicy(acts=("recommend",))}
    differences = []
    if args.llm_user:  # the LLM is the slow part: one random policy
        del policies["random (all acts)"]
    for label, simulator in users.items():
        accepted = {}
        for name, policy in policies.items():
            began = time.perf_counter()
            trajectories = play(policy, catalog, tasks, simulator=simulator, max_turns=args.max_turns)
            seconds = time.perf_counter() - began
            outcomes = [trajectory.outcome for trajectory in trajectories]
            accepted[name] = np.array([outcome.accepted for outcome in outcomes])
            low, high = wilson_interval(int(accepted[name].sum()), len(outcomes))
            valid = np.mean([trajectory.format_valid for trajectory in trajectories])
            print(f"| {label} | {name} | {success_rate(outcomes):.3f} [{low:.3f}, {high:.3f}] | "
                  f"{turns_to_acceptance(outcomes):.2f} | {recall_at_k(outcomes, targets, 1):.3f} | "
                  f"{recall_at_k(outcomes, targets, 3):.3f} | {valid:.3f} | {seconds:.1f} |")
        for baseline in [name for name in policies if name.startswith("random")]:
            differences.append((label, baseline, paired_difference(accepted["rule-based"], accepted[baseline])))
    for label, baseline, (mean, low, high) in differences:
        print(f"{label}: rule-based minus {baseline}: success {mean:+.3f} [{low:+.3f}, {high:+.3f}]")
    if args.llm_user:
        generations, leaks = sum(s.generations for s in made), sum(s.leaks for s in made)
        print(f"LLM user: {generations} replies generated, {leaks} refused for naming the target or empty "
              f"({leaks / max(generations, 1):.1%}); {sum(s.safe_replies for s in made)} turns fell back to the safe reply")


if __name__ == "__main__":
    main()
