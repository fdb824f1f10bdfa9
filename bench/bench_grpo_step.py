"""Where a GRPO step's time goes on CPU, and what bf16 autocast buys the learner and the reference.

SmolLM2-135M-Instruct with a LoRA r=16 adapter on ml-100k, everything in this one process and run:

1. the learner's GRPO update and the reference's log-probs on one fixed batch of teacher episodes
   (the CF expert calling user_history, item_cf and user_cf, then answering: 800-900 tokens an
   episode), under bf16 autocast and in fp32, taking turns; and how far the bf16 log-probs are
   from the fp32 ones;
2. a few steps of real GRPO in this process, as ``recrl train`` runs with ``rollout.num_workers=0`` (one
   vLLM rollout worker, the learner and the reference as plain objects, bf16 autocast), with the
   settings the quickstart's SFT adapter was trained for (user_cf, 3 turns, 2 tasks x 4 samples, 64 new
   tokens a turn): each step split into rollout, reference, update, weight sync and checkpoint
   (``rl.grpo.train_grpo``'s ``perf/*``).

First, one bf16 and one fp32 matmul with oneDNN as it is and limited to AVX-512 without the bf16
instructions (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``): why ``bf16_supported`` asks for them.

    python bench/bench_grpo_step.py --adapter runs/quickstart/sft/adapter
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import subprocess
import sys
import tempfile
import time

import torch

from envs.config import EnvConfig
from envs.data import build_tasks, load_ml100k, training_interactions
from envs.tools import InteractionGraph
from rollout.worker import EnvSpec

MODEL = "smollm2-135m-instruct"
TEMPERATURE = 0.7
TEACHER_TOOLS = ("user_history", "item_cf", "user_cf")
"""The tools of the teacher episodes the learner is timed on: three calls, then the answer."""
MATMUL = """
import time, torch
x, w = torch.randn(2048, 576), torch.randn(1536, 576)
def seconds(x, w):
    torch.nn.functional.linear(x, w)
    began = time.perf_counter()
    for _ in range(20):
        torch.nn.functional.linear(x, w)
    return time.perf_counter() - began
print(seconds(x.bfloat16(), w.bfloat16()) / seconds(x, w))
"""
"""Prints the time of a bf16 linear layer (SmolLM2's MLP shape, 2048 tokens) over an fp32 one."""


def ml100k_spec(tasks, env: EnvConfig) -> EnvSpec:
    """Environments for ``tasks`` on ml-100k whose CF graph holds no target (the graph's own signals)."""
    catalog = load_ml100k()
    graph = InteractionGraph.from_interactions(training_interactions(catalog.interactions, tasks))
    return EnvSpec(catalog, graph, env, tokenizer=MODEL)


def teacher_batch(episodes: int, tokenizer):
    """``episodes`` teacher episodes on ml-100k tasks as a token batch, advantages +1 and -1 in turn."""
    from rl.batch import TokenBatch
    from rollout.chat import ChatFormat
    from teachers.pipeline import TeacherConfig, play_teacher

    tasks = build_tasks(load_ml100k(), num_negatives=19, seed=0)[:episodes]
    teacher = TeacherConfig(tools=list(TEACHER_TOOLS), num_workers=0)
    spec = ml100k_spec(tasks, EnvConfig(max_turns=len(TEACHER_TOOLS) + 1, tools=list(TEACHER_TOOLS)))
    chat = ChatFormat(tokenizer)
    pairs = [chat.conversation(t.messages) for t in play_teacher(spec, tasks, teacher)]
    return TokenBatch.from_sequences([ids for ids, _ in pairs], [mask for _, mask in pairs],
                                     pad_id=tokenizer.pad_token_id,
                                     advantages=[1.0 if i % 2 == 0 else -1.0 for i in range(len(pairs))])


def mean_abs_difference(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Mean and largest |a - b| over the masked tokens."""
    difference = (a - b).abs()[mask.bool()]
    return difference.mean().item(), difference.max().item()


def precision_ratios(args) -> dict:
    """Times the learner's update and the reference's log-probs under bf16 and fp32 on one batch."""
    from rl.learner import Learner
    from rl.reference import ReferenceModel
    from rollout.policy import LoraSettings

    lora = LoraSettings(r=16, alpha=32)
    learners = {bf16: Learner(model_name=MODEL, lora=lora, lr=1e-5, adapter_dir=args.adapter, seed=0, bf16=bf16)
                for bf16 in (True, False)}
    references = {bf16: ReferenceModel(model_name=MODEL, checkpoint_dir=args.adapter, lora=lora, bf16=bf16)
                  for bf16 in (True, False)}
    batch = teacher_batch(args.episodes, learners[True].tokenizer)
    lengths = batch.attention_mask.sum(dim=1).tolist()
    micro = args.micro_batch_size
    # Before any update the learners hold the same weights (LoRA unmerged) as the references (merged):
    # only the precision differs. These passes also warm the forward kernels up.
    first = batch.rows(slice(0, micro))
    policy = {bf16: learner.logprobs(first, temperature=TEMPERATURE, micro_batch_size=micro)
              for bf16, learner in learners.items()}
    batch = dataclasses.replace(batch, ref_logprobs=references[False].logprobs(
        batch, temperature=TEMPERATURE, micro_batch_size=micro))

    def update(bf16: bool, rows=slice(None)) -> float:
        began = time.perf_counter()
        learners[bf16].update(batch.rows(rows), clip_eps=0.2, kl_coef=0.001, temperature=TEMPERATURE,
                              micro_batch_size=micro)
        return time.perf_counter() - began

    def score(bf16: bool) -> tuple[float, torch.Tensor]:
        began = time.perf_counter()
        logprobs = references[bf16].logprobs(batch, temperature=TEMPERATURE, micro_batch_size=micro)
        return time.perf_counter() - began, logprobs

    for bf16 in (True, False):  # the backward kernels' first calls
        update(bf16, slice(0, 1))
    times = {(what, bf16): [] for what in ("update", "reference") for bf16 in (True, False)}
    reference = {}
    for repeat in range(args.repeats):
        order = (True, False) if repeat % 2 == 0 else (False, True)  # load drifting on a shared machine hits both
        for bf16 in order:
            seconds, reference[bf16] = score(bf16)
            times["reference", bf16].append(seconds)
            times["update", bf16].append(update(bf16))
            print(f"repeat {repeat + 1} {'bf16' if bf16 else 'fp32'}: reference {seconds:.1f} s, "
                  f"update {times['update', bf16][-1]:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    return {"times": {key: min(value) for key, value in times.items()}, "lengths": lengths,
            "policy_tokens": int(batch.policy_mask.sum()), "tokens": int(batch.attention_mask.sum()),
            "deltas": {f"learner (LoRA unmerged), {len(first)} episodes":
                       mean_abs_difference(policy[True], policy[False], first.policy_mask),
                       f"reference (merged), {len(batch)} episodes":
                       mean_abs_difference(reference[True], reference[False], batch.policy_mask)}}


def grpo_split(args) -> list[dict[str, float]]:
    """Runs ``args.steps`` GRPO steps in this process, as ``recrl train`` does with ``rollout.num_workers=0``,
    with the settings the quickstart's SFT adapter was trained for; returns their metrics."""
    from rl.grpo import GRPOConfig, train_grpo
    from rl.learner import Learner
    from rl.reference import ReferenceModel
    from rollout.policy import LoraSettings
    from rollout.worker import RolloutConfig, RolloutWorker

    config = GRPOConfig(steps=args.steps, tasks_per_step=2, group_size=4, max_new_tokens=64)
    tasks = build_tasks(load_ml100k(), num_negatives=19, seed=1)[:64]
    spec = ml100k_spec(tasks, EnvConfig(max_turns=3, tools=["user_cf"]))
    lora = LoraSettings(r=16, alpha=32)
    worker = RolloutWorker(model_name=MODEL, env_spec=spec, lora=lora, adapter_dir=args.adapter,
                           config=RolloutConfig(num_workers=0, engine="vllm"))
    learner = Learner(model_name=MODEL, lora=lora, lr=config.lr, adapter_dir=args.adapter, seed=0)
    reference = ReferenceModel(model_name=MODEL, checkpoint_dir=args.adapter, lora=lora)
    with tempfile.TemporaryDirectory() as root:
        return train_grpo(learner=learner, reference=reference, workers=[worker], tasks=tasks, config=config,
                          reward_weights={"format": 1.0, "tiered_hit": 1.0}, seed=0, checkpoint_root=root,
                          trainer_state={})


def emulated_matmul_ratios() -> dict[str, float]:
    """bf16/fp32 time of one linear layer with oneDNN's full ISA and with AVX-512 lacking bf16 instructions."""
    ratios = {}
    for label, isa in (("native", None), ("AVX512_CORE", "AVX512_CORE")):
        env = dict(os.environ) if isa is None else {**os.environ, "ONEDNN_MAX_CPU_ISA": isa}
        output = subprocess.run([sys.executable, "-c", MATMUL], env=env, capture_output=True, text=True, check=True)
        ratios[label] = float(output.stdout.split()[-1])
    return ratios


PHASES = (("rollout", "perf/rollout_seconds"), ("reference", "perf/reference_seconds"),
          ("update", "perf/update_seconds"), ("sync", "perf/weight_sync_seconds"),
          ("checkpoint", "perf/checkpoint_seconds"))


def print_split(history: list[dict[str, float]]) -> None:
    """Each step's seconds by phase, then each phase's share of the steps after the first."""
    print("\n| step | " + " | ".join(f"{name} (s)" for name, _ in PHASES) + " | other (s) | step (s) | policy tok/s "
          "| learner tok/s | tokens/episode |")
    print("|---" * (len(PHASES) + 6) + "|")
    for step, metrics in enumerate(history, start=1):
        parts = [metrics[key] for _, key in PHASES]
        print(f"| {step} | " + " | ".join(f"{p:.1f}" for p in parts)
              + f" | {metrics['perf/step_seconds'] - sum(parts):.1f} | {metrics['perf/step_seconds']:.1f} | "
              f"{metrics['perf/rollout_tokens_per_s']:.0f} | {metrics['perf/learner_tokens_per_s']:.0f} | "
              f"{metrics['rollout/tokens']:.0f} |")
    later = history[1:] or history
    total = sum(m["perf/step_seconds"] for m in later)
    shares = [sum(m[key] for m in later) / total for _, key in PHASES]
    print(f"| share, steps {2 if len(history) > 1 else 1}-{len(history)} | "
          + " | ".join(f"{s:.0%}" for s in shares) + f" | {1 - sum(shares):.0%} | 100% | | | |")


def print_precision(result: dict, args) -> None:
    """The bf16 and fp32 times of the update and the reference pass, and the log-probs' differences."""
    times, lengths = result["times"], result["lengths"]
    print(f"\n{len(lengths)} teacher episodes of {min(lengths)}-{max(lengths)} tokens ({result['tokens']} in all, "
          f"{result['policy_tokens']} the policy's), micro batch {args.micro_batch_size}, fastest of {args.repeats}\n")
    print("| pass | bf16 (s) | fp32 (s) | bf16 / fp32 | bf16 tok/s | fp32 tok/s |\n|---|---|---|---|---|---|")
    for what in ("update", "reference"):
        bf16, fp32 = times[what, True], times[what, False]
        print(f"| {what} | {bf16:.1f} | {fp32:.1f} | {bf16 / fp32:.2f} | {result['tokens'] / bf16:.0f} | "
              f"{result['tokens'] / fp32:.0f} |")
    print("\n| log-probs, bf16 vs fp32 | mean abs diff | max abs diff |\n|---|---|---|")
    for what, (mean, largest) in result["deltas"].items():
        print(f"| {what} | {mean:.4f} | {largest:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", default=None, help="the SFT LoRA adapter GRPO starts from (r=16, alpha=32); "
                        "none: a fresh adapter on the base model")
    parser.add_argument("--episodes", type=int, default=8, help="teacher episodes in the fixed batch")
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed updates and reference passes per precision, the fastest counts (0: skip)")
    parser.add_argument("--steps", type=int, default=3, help="GRPO steps for the split (0: skip)")
    args = parser.parse_args()
    from rollout.policy import bf16_supported

    threads = torch.get_num_threads()
    print(f"{platform.machine()}, {os.cpu_count()} cores, {threads} torch threads, "
          f"bf16_supported(cpu)={bf16_supported('cpu')}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    began = time.perf_counter()
    print("\n| oneDNN ISA | bf16 / fp32 time, 2048x576 @ 576x1536 |\n|---|---|")
    for label, ratio in emulated_matmul_ratios().items():
        print(f"| {label} | {ratio:.2f} |", flush=True)
    if args.repeats:
        print_precision(precision_ratios(args), args)
        print(f"\n[{time.perf_counter() - began:.0f} s so far]", flush=True)
    if args.steps:
        print_split(grpo_split(args))
    print(f"\n[{time.perf_counter() - began:.0f} s in all; load average {os.getloadavg()[0]:.1f}]")


if __name__ == "__main__":
    main()
