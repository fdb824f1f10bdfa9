"""Batched generation with Hugging Face transformers: left padding, KV cache, per-token log-probs.

On CUDA the decode loop uses a static KV cache (compiled, CUDA graphs): plain dynamic-cache
``generate`` is launch-bound on a fast GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one assistant turn."""

    max_new_tokens: int = 96
    temperature: float = 0.0
    top_p: float = 1.0


@dataclass
class Generation:
    """One completion: the new token ids, their log-probs, and whether a stop token ended it."""

    token_ids: list[int]
    logprobs: list[float]
    finished: bool


class HFEngine:
    """Generates for many token-id prompts at once with any HF causal LM (optionally LoRA-wrapped).

    Args:
        model: the causal LM, on its device.
        tokenizer: its tokenizer (for the pad id).
        stop_token_ids: tokens that end a turn (kept in the output).
        max_batch_size: prompts per ``generate`` call; longer lists are split, shortest first.
        static_cache: static KV cache with compiled decoding; default on for CUDA only.
    """

    def __init__(self, model, tokenizer, *, stop_token_ids: list[int], max_batch_size: int = 16,
                 static_cache: bool | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.stop_token_ids = list(stop_token_ids)
        self.pad_id = tokenizer.pad_token_id
        self.max_batch_size = max_batch_size
        self.device = next(model.parameters()).device
        self.static_cache = self.device.type == "cuda" if static_cache is None else static_cache

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params: SamplingParams, *, seed: int | None = None) -> list[Generation]:
        """Completes every prompt; order of the results follows ``prompts``."""
        if seed is not None:
            torch.manual_seed(seed)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            for index, generation in zip(chunk, self._generate_batch([prompts[i] for i in chunk], params)):
                results[index] = generation
        return results

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
            attention_mask[row, width - len(prompt) :] = 1
        sample = params.temperature > 0
        kwargs = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
        out = self.model.generate(
            input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device), **kwargs
        )
        new_tokens = out.sequences[:, width:].cpu()
        # scores are the logits after temperature/top-p: the distribution the tokens were drawn from.
        logprobs = torch.stack(
            [torch.log_softmax(s.float(), dim=-1).gather(1, new_tokens[:, i : i + 1].to(s.device)).squeeze(1).cpu()
             for i, s in enumerate(out.scores)],
            dim=1,
        )
        generations = []
        for row in range(len(prompts)):
            ids = new_tokens[row].tolist()
            stop = next((i for i, t in enumerate(ids) if t in self.stop_token_ids), None)
            end = len(ids) if stop is None else stop + 1
            generations.append(
                Generation(token_ids=ids[:end], logprobs=logprobs[row, :end].tolist(), finished=stop is not None)
            )
        return generations
