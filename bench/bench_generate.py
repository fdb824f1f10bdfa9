"""Decode throughput of the HF engine: static KV cache + compiled decoding vs plain dynamic cache.

Random-init SmolLM2-135M architecture (speed does not depend on weight values), bf16 on CUDA,
fp32 on CPU; prompt and new-token lengths as in DESIGN.md section 6. Prints a markdown table.

    python bench/bench_generate.py --batch-sizes 8 64 --prompt-len 256 --new-tokens 256
"""

from __future__ import annotations

import argparse
import time

import torch


def smollm2_architecture():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                         rope_theta=100000.0, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def tokens_per_second(engine, batch_size: int, prompt_len: int, new_tokens: int, repeats: int) -> float:
    from rollout.engines.base import SamplingParams

    prompts = [list(torch.randint(10, 49000, (prompt_len,)).tolist()) for _ in range(batch_size)]
    params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0)
    engine.generate(prompts, params, seeds=range(batch_size))  # warm-up: compilation, CUDA graphs, allocator
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    produced = 0
    for repeat in range(repeats):
        seeds = range(repeat * batch_size, (repeat + 1) * batch_size)
        produced += sum(len(g.token_ids) for g in engine.generate(prompts, params, seeds=seeds))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return produced / (time.perf_counter() - started)


def main() -> None:
    from rollout.engines.hf import HFEngine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = smollm2_architecture().to(device=device, dtype=dtype)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print("| device | batch | dynamic tok/s | static tok/s | static / dynamic |\n|---|---|---|---|---|")
    for batch_size in args.batch_sizes:
        rates = {}
        for static in (False, True):
            # stop ids outside the sampled range: every sequence runs the full length
            engine = HFEngine(model, pad_token_id=0, stop_token_ids=[49151], max_batch_size=batch_size,
                              static_cache=static)
            rates[static] = tokens_per_second(engine, batch_size, args.prompt_len, args.new_tokens, args.repeats)
        print(f"| {name} | {batch_size} | {rates[False]:,.0f} | {rates[True]:,.0f} | {rates[True] / rates[False]:.2f}x |")


if __name__ == "__main__":
    main()
