"""Rollout engines, one run, same machine, same prompts and lengths: vLLM vs HF transformers.

SmolLM2-135M-Instruct (optionally with an SFT adapter, so that episodes call tools and run several
turns) plays real ml-100k episodes through ``RolloutWorker`` Ray actors; every configuration starts
fresh actors, and the cores are split evenly between a configuration's workers.

1. single-turn batches (``env.max_turns=1``: one generate call per batch);
2. whole multi-turn episodes: HF; vLLM with prefix caching; vLLM without;
3. 1 vs 2 rollout workers;
4. weight sync: the adapter's LoRA state, then every weight.

    python bench/bench_engines.py --tasks 16 --new-tokens 48 --adapter runs/quickstart/sft/adapter
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from envs.config import EnvConfig
from launch.config import RunConfig
from launch.stages import env_spec, load_catalog
from rollout.actors import map_actors, spawn
from rollout.engines.base import SamplingParams
from rollout.episode import EpisodeRequest
from rollout.policy import LoraSettings, load_checkpoint_state, load_policy
from rollout.worker import RolloutConfig, RolloutWorker


def measure(spec, tasks, warm_tasks, *, engine: str, workers: int, prefix_caching: bool, adapter, params,
            lora) -> dict:
    """Plays one episode per task on fresh workers (after a warm-up episode each); returns rates."""
    threads = max((os.cpu_count() or 2) // workers, 1)
    config = RolloutConfig(engine=engine, prefix_caching=prefix_caching)
    actors = spawn(RolloutWorker, workers, num_threads=threads, model_name="smollm2-135m-instruct", env_spec=spec,
                   lora=lora, adapter_dir=adapter, config=config)
    warm = [EpisodeRequest(task, "warm", seed=1000 + i) for i, task in enumerate(warm_tasks[:workers])]
    map_actors(actors, RolloutWorker.rollout, warm, params=params)
    counts_before = [actor.prefix_cache_counts() for actor in actors]
    requests = [EpisodeRequest(task, task.task_id, seed=i) for i, task in enumerate(tasks)]
    started = time.perf_counter()
    trajectories = map_actors(actors, RolloutWorker.rollout, requests, params=params)
    seconds = time.perf_counter() - started
    counts = [actor.prefix_cache_counts() for actor in actors]
    cached = sum(after[0] - before[0] for before, after in zip(counts_before, counts))
    prompt = sum(after[1] - before[1] for before, after in zip(counts_before, counts))
    result = {"seconds": seconds, "policy_tokens": sum(sum(t.loss_mask) for t in trajectories),
              "turns": sum(len(t.actions) for t in trajectories) / len(trajectories),
              "cache_hit": cached / prompt if prompt else 0.0, "actors": actors}
    result["tokens_per_s"] = result["policy_tokens"] / seconds
    return result


def sync_seconds(actor, adapter, repeats: int = 3) -> tuple[float, float]:
    """Median seconds of a LoRA update and of a full-weights update on one worker."""
    lora_state = load_checkpoint_state(adapter) if adapter else {}
    full_state = load_policy("smollm2-135m-instruct", lora=None)[0].state_dict()
    lora_times = sorted(actor.update_weights(lora_state) for _ in range(repeats))
    full_times = sorted(actor.update_weights(full_state) for _ in range(repeats))
    return lora_times[repeats // 2], full_times[repeats // 2]


def main() -> None:
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--adapter", default=None, help="an SFT LoRA adapter folder (r=16, alpha=32)")
    args = parser.parse_args()
    catalog = load_catalog("ml-100k")
    from envs.data import build_tasks

    tasks = build_tasks(catalog, num_negatives=19, seed=0)[: args.tasks + 2]
    tasks, spare = tasks[: args.tasks], tasks[args.tasks :]
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0.7)
    lora = LoraSettings() if args.adapter else None

    def spec(max_turns):
        config = RunConfig(env=EnvConfig(max_turns=max_turns, tools=["user_cf"]))
        return env_spec(config, catalog, tasks + spare, train_tasks=[])

    rows = []

    def run_one(label, engine, *, max_turns, workers=1, prefix_caching=True):
        result = measure(spec(max_turns), tasks, spare, engine=engine, workers=workers,
                         prefix_caching=prefix_caching, adapter=args.adapter, params=params, lora=lora)
        rows.append((label, engine, workers, prefix_caching, result))
        print(f"{label}: {engine} x{workers} prefix={prefix_caching}: {result['tokens_per_s']:.1f} tok/s "
              f"({result['policy_tokens']} tokens, {result['seconds']:.1f} s, {result['turns']:.2f} turns, "
              f"cache hit {result['cache_hit']:.0%})", flush=True)
        return result

    for engine in ("hf", "vllm"):
        run_one("single-turn", engine, max_turns=1)
    for engine, prefix in (("hf", True), ("vllm", True), ("vllm", False)):
        result = run_one("episodes", engine, max_turns=args.max_turns, prefix_caching=prefix)
        if engine == "vllm" and prefix:
            lora_s, full_s = sync_seconds(result["actors"][0], args.adapter)
            print(f"sync vllm: lora {lora_s:.2f} s, full {full_s:.2f} s", flush=True)
            rows.append(("sync", "vllm", lora_s, full_s, None))
        if engine == "hf":
            lora_s, full_s = sync_seconds(result["actors"][0], args.adapter)
            print(f"sync hf: lora {lora_s:.2f} s, full {full_s:.2f} s", flush=True)
            rows.append(("sync", "hf", lora_s, full_s, None))
        for actor in result["actors"]:
            ray.kill(actor.handle)
    for engine in ("vllm", "hf"):
        for workers in (1, 2):
            result = run_one("workers", engine, max_turns=args.max_turns, workers=workers)
            for actor in result["actors"]:
                ray.kill(actor.handle)

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.tasks} episodes, "
          f"{args.new_tokens} new tokens a turn, temperature 0.7, adapter {args.adapter}\n")
    print("| what | engine | workers | prefix cache | policy tok/s | seconds | turns/episode | prefix hit |")
    print("|---|---|---|---|---|---|---|---|")
    for label, engine, workers, prefix, result in rows:
        if label == "sync":
            continue
        print(f"| {label} | {engine} | {workers} | {'on' if prefix and engine == 'vllm' else 'off'} | "
              f"{result['tokens_per_s']:.1f} | {result['seconds']:.1f} | {result['turns']:.2f} | "
              f"{result['cache_hit']:.0%} |")
    print("\n| weight sync | LoRA state (s) | every weight (s) |\n|---|---|---|")
    for label, engine, lora_s, full_s, _ in rows:
        if label == "sync":
            print(f"| {engine} | {lora_s:.2f} | {full_s:.2f} |")


if __name__ == "__main__":
    main()
