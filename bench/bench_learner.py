"""The learner's GRPO step against TRL's GRPOTrainer, DeepSpeed against plain torch, and FLOP/s against a matmul peak.

SmolLM2-135M-Instruct with a LoRA r=16 adapter on all 7 projections, bf16 autocast, one fixed batch of
ml-100k teacher episodes (the CF expert calls user_history, item_cf and user_cf, then answers: 800-900
tokens an episode, a third of them the policy's), advantages +1 and -1 in turn, KL 0.001 to reference
log-probs, micro batch 4, one optimizer step on the whole batch. Every arm runs in its own process
(one after another, in this one run), so its peak memory is its own:

* ``ours``: ``rl.learner.Learner.update`` with the ``torch`` strategy;
* ``ours-deepspeed``: the same learner under DeepSpeed ZeRO-2 (one learner, gloo);
* ``ours-checkpointing``: ``ours`` with ``learner.gradient_checkpointing`` (activations recomputed in
  the backward pass);
* ``trl``: TRL's ``GRPOTrainer`` loss (``loss_type="bnpo"``, the token mean ours takes) on the same
  tokens, laid out as TRL lays out a multi-turn tool episode (the prompt left-padded, the rest a
  completion whose ``tool_mask`` hides the tool outputs), backward through its accelerator, one AdamW
  step. Generation is not timed in any arm.

Each arm reports the median of ``--steps`` timed steps after one warm-up step, and its peak resident
memory (``ru_maxrss``, model loading included). FLOP/s counts what a step needs (forward and the
activation backward of every layer, attention included, with frozen base weights; the vocabulary
projection at the policy's tokens) over the step time, against the best of a few large bf16 and fp32
matmuls in one process with the same threads.

    python bench/bench_learner.py            # all arms
    python bench/bench_learner.py --arms ours trl --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_grpo_step import MODEL, TEMPERATURE, teacher_batch  # noqa: E402

ARMS = ("ours", "ours-deepspeed", "ours-checkpointing", "trl")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
KL = 0.001


def step_flops(model, batch) -> float:
    """FLOPs a LoRA GRPO step needs on ``batch``: per layer, forward ``2 * params * tokens`` plus causal
    attention ``2 * T^2 * hidden`` per sequence, the backward through activations as much again (frozen
    base weights take no weight gradient; the adapters' share is under 1%), and the vocabulary
    projection, forward and backward, at the policy's tokens only."""
    config = model.config
    layer_params = sum(p.numel() for name, p in model.named_parameters() if ".layers." in name and "lora" not in name)
    lengths = batch.attention_mask.sum(dim=1).tolist()
    forward = sum(2 * layer_params * t + 2 * config.num_hidden_layers * t * t * config.hidden_size for t in lengths)
    head = 2 * config.vocab_size * config.hidden_size * int(batch.policy_mask.sum())
    return 2 * forward + 2 * head


def matmul_peak() -> dict[str, float]:
    """The best GFLOP/s of a 2048x2048 @ 2048x2048 matmul in bf16 and in fp32 (a few tries each)."""
    peaks = {}
    for dtype in (torch.bfloat16, torch.float32):
        a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(5):
            began = time.perf_counter()
            for _ in range(4):
                a @ b
            best = min(best, (time.perf_counter() - began) / 4)
        peaks[str(dtype).removeprefix("torch.")] = 2 * 2048**3 / best / 1e9
    return peaks


def run_ours(args, strategy: str, *, checkpointing: bool = False) -> dict:
    """Times ``Learner.update`` on the batch (``torch`` or DeepSpeed ZeRO-2, with or without gradient checkpointing)."""
    import dataclasses

    from rl.learner import Learner
    from rl.strategy import LearnerConfig
    from rollout.policy import LoraSettings

    config = LearnerConfig(strategy=strategy, zero_stage=2 if strategy == "deepspeed" else 0,
                           gradient_checkpointing=checkpointing)
    learner = Learner(model_name=MODEL, lora=LoraSettings(r=16, alpha=32), lr=1e-5, seed=0, bf16=True, config=config)
    batch = teacher_batch(args.episodes, learner.tokenizer)
    batch = dataclasses.replace(batch, ref_logprobs=torch.zeros_like(batch.rollout_logprobs))

    def step() -> None:
        learner.update(batch, clip_eps=0.2, kl_coef=KL, temperature=TEMPERATURE, micro_batch_size=args.micro_batch_size)

    return timed(step, args.steps, batch, learner.model)


def trl_inputs(batch, micro_batch_size: int, pad_id: int) -> list[dict]:
    """The batch's micro-batches as TRL's GRPO loss takes them: up to the first policy token a
    left-padded prompt, the rest a right-padded completion, ``tool_mask`` 0 on what the policy did
    not write."""
    from torch.nn.utils.rnn import pad_sequence

    parts = []
    for part in batch.split(micro_batch_size):
        prompts, completions, masks, tool_masks = [], [], [], []
        for row in range(len(part)):
            length = int(part.attention_mask[row].sum())
            ids, loss = part.input_ids[row, :length], part.loss_mask[row, :length]
            first = int(loss.nonzero()[0])
            prompts.append(ids[:first].flip(0))
            completions.append(ids[first:])
            masks.append(torch.ones(length - first, dtype=torch.long))
            tool_masks.append(loss[first:].long())

        def pad(rows, value=0):
            return pad_sequence(rows, batch_first=True, padding_value=value)

        completion_ids = pad(completions, pad_id)
        parts.append({
            "prompt_ids": pad(prompts, pad_id).flip(1), "prompt_mask": pad([torch.ones_like(p) for p in prompts]).flip(1),
            "completion_ids": completion_ids, "completion_mask": pad(masks), "tool_mask": pad(tool_masks),
            "advantages": part.advantages.amax(dim=1) + part.advantages.amin(dim=1),
            "ref_per_token_logps": torch.zeros(completion_ids.shape), "old_per_token_logps": None,
        })
    return parts


def run_trl(args) -> dict:
    """Times TRL's GRPOTrainer loss, backward and optimizer step on the same tokens."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from rollout.models import load_tokenizer, resolve_model

    model_dir = resolve_model(MODEL)
    tokenizer = load_tokenizer(model_dir)
    batch = teacher_batch(args.episodes, tokenizer)
    accumulation = -(-len(batch) // args.micro_batch_size)
    with tempfile.TemporaryDirectory() as output:
        config = GRPOConfig(output_dir=output, per_device_train_batch_size=args.micro_batch_size,
                            gradient_accumulation_steps=accumulation, num_generations=2, beta=KL, loss_type="bnpo",
                            learning_rate=1e-5, bf16=True, use_cpu=True, report_to=[], temperature=TEMPERATURE,
                            max_completion_length=int(batch.attention_mask.sum(dim=1).max()), logging_steps=1)
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                              reward_funcs=lambda completions, **kwargs: [0.0] * len(completions), args=config,
                              train_dataset=Dataset.from_list([{"prompt": "hi"}] * 8), processing_class=tokenizer,
                              peft_config=LoraConfig(r=16, lora_alpha=32, target_modules=list(LORA_TARGETS),
                                                     task_type="CAUSAL_LM"))
        model = trainer.model
        model.train()
        optimizer = trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = accumulation
        inputs = trl_inputs(batch, args.micro_batch_size, tokenizer.pad_token_id)

        def step() -> None:
            for part in inputs:
                with trainer.compute_loss_context_manager():
                    loss = trainer.compute_loss(model, part)
                trainer.accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()

        return timed(step, args.steps, batch, model)


def timed(step, steps: int, batch, model) -> dict:
    """One warm-up step, then the median of ``steps`` timed ones, with the process's peak memory."""
    step()
    seconds = []
    for _ in range(steps):
        began = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - began)
    return {"step_seconds": statistics.median(seconds), "all_seconds": seconds,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "tokens": int(batch.attention_mask.sum()), "policy_tokens": int(batch.policy_mask.sum()),
            "episodes": len(batch), "flops": step_flops(model, batch)}


def run_arm(arm: str, args) -> dict:
    """Runs one arm in a fresh process and returns what it measured."""
    command = [sys.executable, __file__, "--child", arm, "--episodes", str(args.episodes), "--steps", str(args.steps),
               "--micro-batch-size", str(args.micro_batch_size)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    output = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if output.returncode != 0:
        raise RuntimeError(f"arm {arm} failed:\n{output.stderr[-4000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--episodes", type=int, default=8, help="teacher episodes in the batch")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm (after one warm-up)")
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = run_trl(args) if args.child == "trl" else run_ours(
            args, "deepspeed" if "deepspeed" in args.child else "torch", checkpointing="checkpointing" in args.child)
        print(json.dumps(result))
        return
    print(f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch "
          f"{torch.__version__}, load average {os.getloadavg()[0]:.1f}", flush=True)
    began = time.perf_counter()
    peaks = matmul_peak()
    results = {}
    for arm in args.arms:
        results[arm] = run_arm(arm, args)
        print(f"{arm}: {results[arm]}", flush=True)
    first = next(iter(results.values()))
    print(f"\n{first['episodes']} episodes, {first['tokens']} tokens ({first['policy_tokens']} the policy's), "
          f"median of {args.steps} steps; matmul peak bf16 {peaks['bfloat16']:.0f} GFLOP/s, "
          f"fp32 {peaks['float32']:.0f} GFLOP/s\n")
    print("| arm | step (s) | vs ours | peak RSS (GiB) | vs ours | GFLOP/s | of bf16 peak |\n|---|---|---|---|---|---|---|")
    ours = results.get("ours", first)
    for arm, result in results.items():
        rate = result["flops"] / result["step_seconds"] / 1e9
        print(f"| {arm} | {result['step_seconds']:.1f} | {result['step_seconds'] / ours['step_seconds']:.2f} | "
              f"{result['peak_rss_gib']:.2f} | {result['peak_rss_gib'] / ours['peak_rss_gib']:.2f} | {rate:.0f} | "
              f"{rate / peaks['bfloat16']:.0%} |")
    print(f"\n[{time.perf_counter() - began:.0f} s in all; load average {os.getloadavg()[0]:.1f}]")


if __name__ == "__main__":
    main()
