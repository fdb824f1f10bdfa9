"""Tool calls and scripted episodes of every env per second on one core, on ml-100k.

Each tool is called with realistic arguments on random leave-last-out tasks (the task's user, one of
its candidates or history items, a search for a candidate's title words), one toolbox per task as
the env builds it. The scripted episodes: SequentialRec-v0 calls one CF tool and recommends its
ranking; RatingPrediction-v0 reads the user's history and answers the item's mean rating;
ConversationalRec-v0 runs the rule-based policy against the simulated user to the end. Rates are
per CPU second of this process (``time.process_time``), so other jobs on the machine lower the wall
rate but not the figure; both are printed. One-time costs (graph, precomputed CF, search index) are
printed first and are not in the rates.

    python bench/bench_tools.py --seconds 2
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

import torch

from envs import make_env
from envs.conversational import dialogue_task
from envs.data import build_tasks, leave_last_out, load_ml100k, training_interactions
from envs.data.rating import build_rating_tasks
from envs.rating_baselines import BiasModel
from envs.tools import InteractionGraph, Toolbox
from envs.tools.items import first_interaction_times
from envs.tools.search import item_search
from envs.types import RankingTask
from rollout.episode import EpisodeRequest, run_episodes
from teachers.crs_policies import RuleBasedCRSPolicy


def timed(run: Callable[[int], None], seconds: float) -> tuple[int, float, float]:
    """Calls ``run(i)`` for i = 0, 1, ... for ``seconds`` of CPU time: (calls, CPU s, wall s)."""
    calls, cpu_start, wall_start = 0, time.process_time(), time.perf_counter()
    while time.process_time() - cpu_start < seconds:
        for _ in range(20):
            run(calls)
            calls += 1
    return calls, time.process_time() - cpu_start, time.perf_counter() - wall_start


def tool_arguments(name: str, task: RankingTask, catalog, rng: random.Random) -> dict:
    """What an agent would pass to ``name`` while solving ``task``."""
    item_id = rng.choice(task.candidate_item_ids + task.history[-5:])
    if name in ("item_info", "item_history"):
        return {"item_id": item_id}
    if name == "lookup":
        return {"item_id": item_id, "field": rng.choice(["title", "year", "genres", "users"])}
    if name == "search":
        words = catalog.items[rng.choice(task.candidate_item_ids)].title.split()[:2]
        return {"query": " ".join(words)}
    if name == "finish":
        return {"item_ids": rng.sample(task.candidate_item_ids, len(task.candidate_item_ids))}
    return {"user_id": task.user_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per row")
    parser.add_argument("--tasks", type=int, default=200, help="random tasks the calls are spread over")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = random.Random(args.seed)

    catalog = load_ml100k()
    all_tasks = build_tasks(catalog)
    started = time.process_time()
    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, all_tasks))
    print(f"graph from training interactions: {time.process_time() - started:.2f} CPU s")
    started = time.process_time()
    graph.item_cf_scores(["1"], ["2"])
    graph.user_cf_scores("1", ["2"])
    print(f"precomputed CF matrices (once per graph): {time.process_time() - started:.2f} CPU s")
    started = time.process_time()
    item_search(catalog)
    first_interaction_times(catalog)
    print(f"search index and interaction times (once per catalog): {time.process_time() - started:.2f} CPU s")

    tasks = rng.sample(all_tasks, args.tasks)
    toolboxes = [Toolbox(catalog, graph, task=task) for task in tasks]
    rows = []
    for name in toolboxes[0].names:
        calls = [(toolbox, tool_arguments(name, toolbox.task, catalog, rng)) for toolbox in toolboxes]

        def run(i: int, name: str = name, calls=calls) -> None:
            toolbox, arguments = calls[i % len(calls)]
            assert toolbox.call(name, arguments).ok

        rows.append((f"tool `{name}`", *timed(run, args.seconds)))
    rows.append(("new `Toolbox` per task", *timed(lambda i: Toolbox(catalog, graph, task=tasks[i % len(tasks)]),
                                                  args.seconds)))

    for tool in ("item_cf", "user_cf"):
        env = make_env("SequentialRec-v0", catalog=catalog, graph=graph, tasks=tasks, tool_names=[tool])

        def episode(i: int, env=env, tool: str = tool) -> None:
            _, info = env.reset(options={"task": tasks[i % len(tasks)]})
            user_id = info["task"].user_id
            *_, info = env.step(f'<tool_call>{{"name": "{tool}", "arguments": {{"user_id": "{user_id}"}}}}</tool_call>')
            ranking = info["tool_results"][0].data
            *_, terminated, _, info = env.step(f"<recommend>{', '.join(ranking)}</recommend>")
            assert terminated and info["format_valid"]

        rows.append((f"SequentialRec-v0 episode ({tool}, then recommend)", *timed(episode, args.seconds)))

    # RatingPrediction-v0: read the user's history, then answer the item's mean training rating.
    rating_tasks = rng.sample(build_rating_tasks(catalog), args.tasks)
    train, _ = leave_last_out(catalog.interactions)
    rating_graph = InteractionGraph.from_interactions(train)
    rating_env = make_env("RatingPrediction-v0", catalog=catalog, graph=rating_graph, tasks=rating_tasks)
    item_mean = BiasModel.fit(train, item_reg=0.0, user_reg=0.0)

    def rating_episode(i: int) -> None:
        task = rating_tasks[i % len(rating_tasks)]
        rating_env.reset(options={"task": task})
        rating_env.step(f'<tool_call>{{"name": "user_history", "arguments": {{"user_id": "{task.user_id}"}}}}</tool_call>')
        *_, terminated, _, info = rating_env.step(f"<answer>{item_mean.predict('item_bias', task):.1f}</answer>")
        assert terminated and info["format_valid"]

    rows.append(("RatingPrediction-v0 episode (user_history, then answer)", *timed(rating_episode, args.seconds)))
    # ConversationalRec-v0: the rule-based policy against the rule-based simulated user, to the end.
    dialogues = [dialogue_task(task) for task in tasks]
    crs_env = make_env("ConversationalRec-v0", catalog=catalog, graph=graph, tasks=dialogues)
    policy = RuleBasedCRSPolicy(catalog)

    def dialogue(i: int) -> None:
        run_episodes(policy, [crs_env], [EpisodeRequest(dialogues[i % len(dialogues)], seed=i)], source="bench")

    rows.append(("ConversationalRec-v0 episode (rule-based policy, to the end)", *timed(dialogue, args.seconds)))

    print("\n| what | calls | CPU s | per CPU second | per wall second |")
    print("|---|---|---|---|---|")
    for what, calls, cpu, wall in rows:
        print(f"| {what} | {calls:,} | {cpu:.2f} | {calls / cpu:,.0f} | {calls / wall:,.0f} |")


if __name__ == "__main__":
    main()
