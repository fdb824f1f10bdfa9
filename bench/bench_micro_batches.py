"""A GRPO update on a batch of mixed lengths: micro-batches of 4 rows, of 1 row, and bounded by tokens.

A batch where a few episodes run long (a student looping until its token budget) and most are short:
``--long`` episodes of ``--long-tokens`` tokens among ``--short`` episodes of ``--short-tokens``,
random token ids, the last third of each the policy's, advantages +1 and -1 in turn. One
``rl.learner.Learner.update`` (LoRA r=16 on every projection, bf16 autocast, KL off) per step with

* ``rows-4``: ``grpo.micro_batch_size=4``, the default: a pass may hold 4 long episodes;
* ``rows-1``: ``micro_batch_size=1``, what a config sets to stay in memory: every episode alone;
* ``tokens``: ``micro_batch_size=8`` and ``grpo.micro_batch_tokens`` = one long episode: the long
  ones alone, the short ones together (``TokenBatch.micro_batches``).

Each arm runs in its own process and reports the median of ``--steps`` timed steps after a warm-up,
and its peak memory: on CUDA the most the caching allocator held (``max_memory_allocated``), on CPU
the peak resident set (``ru_maxrss``, model loading included).

    python bench/bench_micro_batches.py                          # SmolLM2-135M-Instruct on the CPU
    python bench/bench_micro_batches.py --device cuda --random-init --long-tokens 4096
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = {"rows-4": (4, False), "rows-1": (1, False), "tokens": (8, True)}
"""Each arm's ``micro_batch_size``, and whether ``micro_batch_tokens`` is one long episode."""
SMOLLM2_135M = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "head_dim": 64, "tie_word_embeddings": True, "max_position_embeddings": 8192}
"""SmolLM2-135M's architecture, for ``--random-init`` (the tokenizer is the tiny model's: SmolLM2's)."""


def random_model(folder: Path) -> Path:
    """SmolLM2-135M's architecture with random weights, saved in ``folder``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from rollout.models import resolve_model

    tiny = resolve_model("tiny-random")
    config = AutoConfig.from_pretrained(tiny)
    for key, value in SMOLLM2_135M.items():
        setattr(config, key, value)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny / name).is_file():
            shutil.copy(tiny / name, folder / name)
    return folder


def mixed_batch(args, vocab_size: int):
    from rl.batch import TokenBatch

    generator = torch.Generator().manual_seed(0)
    count = args.long + args.short
    every = max(count // max(args.long, 1), 1)  # the long episodes spread through the batch
    lengths = [args.long_tokens if i % every == 0 and i // every < args.long else args.short_tokens
               for i in range(count)]
    ids = [torch.randint(3, vocab_size, (n,), generator=generator).tolist() for n in lengths]
    masks = [[0] * (n - n // 3) + [1] * (n // 3) for n in lengths]
    return TokenBatch.from_sequences(ids, masks, pad_id=0, advantages=[(-1.0) ** i for i in range(count)])


def run_arm(args) -> dict:
    from rl.learner import Learner
    from rollout.policy import LoraSettings

    device = args.device
    with tempfile.TemporaryDirectory() as folder:
        model = str(random_model(Path(folder))) if args.random_init else args.model
        learner = Learner(model_name=model, lora=LoraSettings(),
                          lr=1e-6, seed=0, bf16=True, device=device)
    batch = mixed_batch(args, learner.model.config.vocab_size)
    rows, by_tokens = ARMS[args.child]
    tokens = args.long_tokens if by_tokens else 0

    def step() -> None:
        learner.update(batch, clip_eps=0.2, kl_coef=0.0, temperature=1.0, micro_batch_size=rows,
                       micro_batch_tokens=tokens)
        if device == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(args.steps):
        began = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - began)
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"step_seconds": statistics.median(seconds), "all_seconds": seconds, "peak_gib": peak,
            "passes": len(batch.micro_batches(rows, tokens)), "tokens": int(batch.attention_mask.sum())}


def child_command(arm: str, args) -> list[str]:
    command = [sys.executable, __file__, "--child", arm, "--device", args.device, "--model", args.model,
               "--steps", str(args.steps), "--long", str(args.long), "--short", str(args.short),
               "--long-tokens", str(args.long_tokens), "--short-tokens", str(args.short_tokens)]
    return command + (["--random-init"] if args.random_init else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--random-init", action="store_true", help="SmolLM2-135M's architecture, random weights")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm (after one warm-up)")
    parser.add_argument("--long", type=int, default=2, help="long episodes in the batch")
    parser.add_argument("--short", type=int, default=6, help="short episodes in the batch")
    parser.add_argument("--long-tokens", type=int, default=2048)
    parser.add_argument("--short-tokens", type=int, default=256)
    parser.add_argument("--child", choices=list(ARMS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_arm(args)))
        return
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} cores"
    print(f"{platform.machine()}, {where}, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}; "
          f"{args.long} episodes of {args.long_tokens} tokens among {args.short} of {args.short_tokens}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    results = {}
    for arm in args.arms:
        output = subprocess.run(child_command(arm, args), env=env, capture_output=True, text=True, cwd=ROOT)
        if output.returncode != 0:
            raise SystemExit(f"arm {arm} failed:\n{output.stderr[-4000:]}")
        results[arm] = json.loads(output.stdout.strip().splitlines()[-1])
        print(f"{arm}: {json.dumps(results[arm])}", flush=True)
    base = results.get("rows-4")
    print("\n| arm | passes | step s | peak GiB | step vs rows-4 | peak vs rows-4 |\n|---|---|---|---|---|---|")
    for arm, result in results.items():
        ratios = (f"{result['step_seconds'] / base['step_seconds']:.2f}x | {result['peak_gib'] / base['peak_gib']:.2f}x"
                  if base else "- | -")
        print(f"| {arm} | {result['passes']} | {result['step_seconds']:.2f} | {result['peak_gib']:.2f} | {ratios} |")


if __name__ == "__main__":
    main()
