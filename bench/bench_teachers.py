"""LLM teacher systems on ml-100k: throughput with 1 and 2 Ray workers, and the latency of one teacher
episode against one student episode on the same engine.

One engine serves every request: ``recrl serve``'s app over SmolLM2 (vLLM where installed), in this
process. The teachers reach it over HTTP (the ``openai`` backend), as they would a hosted model; the
student plays through the same engine directly (``rollout.agents.PolicyAgent``: one turn a call,
tokens in and out). Tasks are the first ``--tasks`` ml-100k training tasks (the speed needs no
more; quality is measured on every held-out user by ``recrl eval`` with ``teacher.system`` set).

    python bench/bench_teachers.py --systems mars macrec alpha_umi --tasks 16
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace

from launch import stages
from launch.config import load_config
from launch.serve import make_app, serving
from rollout.agents import PolicyAgent
from rollout.engines.base import SamplingParams
from rollout.episode import EpisodeRequest, run_episodes
from teachers.backends import BackendConfig
from teachers.backends.engine import EngineBackend
from teachers.pipeline import play_teacher


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--engine", default="auto", help="auto (vllm where installed), vllm or hf")
    parser.add_argument("--systems", nargs="+", default=["mars", "macrec", "alpha_umi"])
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--latency-episodes", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96, help="new tokens per role reply at most")
    args = parser.parse_args()

    config = load_config("configs/mars_llm.yaml", [f"model.name={args.model}", "run_dir=runs/bench_teachers"])
    catalog, train_tasks, _ = stages.stage_data(config)
    tasks = train_tasks[: args.tasks]
    engine_backend = EngineBackend.open(args.model, engine=args.engine)
    print(f"engine: {type(engine_backend.engine).__name__}, model {engine_backend.model}")
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
            student = PolicyAgent(engine_backend.engine, engine_backend.chat_format,
                                  SamplingParams(max_new_tokens=config.eval.max_new_tokens))
            student_s = []
            for task in tasks[: args.latency_episodes]:
                started = time.perf_counter()
                run_episodes(student, [spec.make()], [EpisodeRequest(task)], source="student")
                student_s.append(time.perf_counter() - started)
            teacher_mean, student_mean = statistics.mean(teacher_s), statistics.mean(student_s)
            print(f"{system}: episodes/s 1 worker {rates[1]:.3f}, 2 workers {rates[2]:.3f} ({rates[2] / rates[1]:.2f}x); "
                  f"one episode: teacher {teacher_mean:.1f} s, student {student_mean:.1f} s "
                  f"({teacher_mean / student_mean:.1f}x)")


if __name__ == "__main__":
    main()
