"""LLM teacher systems on ml-100k: throughput with 1 and 2 Ray workers, and the latency of one teacher
episode against one student episode on the same engine.

One engine serves every request: ``recrl serve``'s app over SmolLM2 (vLLM where installed), in this
process. The teachers reach it over HTTP (the ``openai`` backend), as they would a hosted model; the
student plays through the same engine directly (``rollout.agents.PolicyAgent``: one turn a call,
tokens in and out). Tasks are the first ``--tasks`` ml-100k training tasks (the speed needs no
more; quality is measured on every held-out user by ``recrl eval`` with ``teacher.system`` set).

    python bench/bench_teachers.py --systems mars macrec alpha_umi --tasks 16
    python bench/bench_teachers.py --systems mars --student-run runs/quickstart   # the SFT student's latency
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from launch import stages
from launch.config import load_config
from launch.paths import RunPaths
from launch.serve import make_app, serving
from rollout.agents import PolicyAgent
from rollout.engines.base import SamplingParams
from rollout.episode import EpisodeRequest, run_episodes
from rollout.policy import load_checkpoint_state
from teachers.backends import BackendConfig
from teachers.backends.engine import EngineBackend
from teachers.pipeline import play_teacher


def student_latency(engine_backend: EngineBackend, spec, tasks, max_new_tokens: int) -> float:
    """Mean seconds of one student episode (greedy, one episode at a time) on the served engine."""
    student = PolicyAgent(engine_backend.engine, engine_backend.chat_format, SamplingParams(max_new_tokens=max_new_tokens))
    seconds = []
    for task in tasks:
        started = time.perf_counter()
        run_episodes(student, [spec.make()], [EpisodeRequest(task)], source="student")
        seconds.append(time.perf_counter() - started)
    return statistics.mean(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--engine", default="auto", help="auto (vllm where installed), vllm or hf")
    parser.add_argument("--systems", nargs="+", default=["mars", "macrec", "alpha_umi"])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--latency-episodes", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96, help="new tokens per role reply at most")
    parser.add_argument("--student-run", help="a run folder whose SFT student plays the latency episodes, in that "
                                              "run's env and with its adapter loaded into the same engine after the "
                                              "teachers (default: the base model, in each teacher's env)")
    args = parser.parse_args()

    config = load_config("configs/mars_llm.yaml", [f"model.name={args.model}", "run_dir=runs/bench_teachers"])
    catalog, train_tasks, _ = stages.stage_data(config)
    tasks = train_tasks[: args.tasks]
    trained = None
    if args.student_run:
        paths = RunPaths(Path(args.student_run))
        trained = load_config(paths.saved_config("quickstart", "sft"), [f"run_dir={paths.root}"])
        if trained.model.name != args.model:
            raise SystemExit(f"{args.student_run}'s student is {trained.model.name}, not {args.model}")
    engine_backend = EngineBackend.open(args.model, engine=args.engine,
                                        lora=stages.lora_settings(trained) if trained else None)
    print(f"engine: {type(engine_backend.engine).__name__}, model {engine_backend.model}")
    measured = {}
    with serving(make_app(engine_backend)) as url:
        backend = BackendConfig(kind="openai", base_url=url, model=engine_backend.model, max_tokens=args.max_tokens)
        for system in args.systems:
            env = replace(config.env, plan_turns=system == "alpha_umi", max_turns=6 if system != "mars" else 4)
            spec = stages.env_spec(replace(config, env=env), catalog, tasks, train_tasks=train_tasks)
            rates = {}
            for workers in (1, 2):
                teacher = replace(config.teacher, system=system, backend=backend, num_workers=workers)
                with tempfile.TemporaryDirectory() as out:
                    started = time.perf_counter()
                    trajectories = play_teacher(spec, tasks, teacher, out=out)
                    rates[workers] = len(trajectories) / (time.perf_counter() - started)
            one = replace(config.teacher, system=system, backend=backend, num_workers=0, concurrency=1)
            teacher_s = []
            for task in tasks[: args.latency_episodes]:
                with tempfile.TemporaryDirectory() as out:
                    started = time.perf_counter()
                    play_teacher(spec, [task], one, out=out)
                    teacher_s.append(time.perf_counter() - started)
            student_s = None if trained else student_latency(engine_backend, spec, tasks[: args.latency_episodes],
                                                             config.eval.max_new_tokens)
            measured[system] = (rates, statistics.mean(teacher_s), student_s)
    if trained:
        engine_backend.engine.update_weights(load_checkpoint_state(RunPaths(Path(args.student_run)).sft_adapter))
        spec = stages.env_spec(trained, catalog, tasks, train_tasks=train_tasks)
        shared = student_latency(engine_backend, spec, tasks[: args.latency_episodes], trained.eval.max_new_tokens)
        print(f"student: {args.student_run}'s SFT adapter in its own env ({', '.join(trained.env.tools)}), "
              f"{trained.eval.max_new_tokens} new tokens a turn at most")
        measured = {system: (rates, teacher_s, shared) for system, (rates, teacher_s, _) in measured.items()}
    for system, (rates, teacher_s, student_s) in measured.items():
        print(f"{system}: episodes/s 1 worker {rates[1]:.3f}, 2 workers {rates[2]:.3f} ({rates[2] / rates[1]:.2f}x); "
              f"one episode: teacher {teacher_s:.1f} s, student {student_s:.1f} s ({teacher_s / student_s:.1f}x)")


if __name__ == "__main__":
    main()
