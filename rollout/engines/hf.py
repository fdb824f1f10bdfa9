"""The Hugging Face transformers engine: left-padded batches, KV cache, per-token log-probs, and
weight updates that never drift.

On CUDA the decode loop uses a static KV cache (compiled, CUDA graphs): plain dynamic-cache
``generate`` is launch-bound on a fast GPU. Weight updates copy into the existing parameter tensors,
so compiled graphs stay valid.

LoRA adapters are merged into the plain model from a pristine copy of each adapted weight
(``rollout.engines.lora``).
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from rollout.engines.base import Generation, SamplingParams, derive_seed
from rollout.engines.lora import is_lora_state, lora_factors, merged_weight
from rollout.policy import LoraSettings, is_lora, load_full_state


@functools.cache
def cuda_graph_thread() -> ThreadPoolExecutor:
    """The one thread of this process that runs compiled CUDA decoding.

    torch keeps its CUDA graph trees in the thread-local state of the first thread that uses them and
    asserts in any other (pytorch/pytorch#123177, fixed after torch 2.11), so engines called from
    several threads (a server's batching thread, a teacher's, the main one) all decode here.
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="recrl-cuda-graphs")


class HFEngine:
    """Generates for many token-id prompts at once with a plain HF causal LM (an ``Engine``).

    Args:
        model: the causal LM on its device; a plain transformers model, never a peft model.
        pad_token_id: fills the left of shorter prompts in a batch.
        stop_token_ids: tokens that end a turn (kept in the output).
        max_batch_size: prompts per ``generate`` call; longer lists are split, shortest first.
        static_cache: static KV cache with compiled decoding; default on for CUDA only.
        lora: the adapter shape when weight updates are LoRA adapters (scale ``alpha / r``).
    """

    def __init__(self, model, *, pad_token_id: int, stop_token_ids: Sequence[int], max_batch_size: int = 16,
                 static_cache: bool | None = None, lora: LoraSettings | None = None):
        if is_lora(model):
            raise TypeError("HFEngine takes the plain model, not a peft model: build it with lora=LoraSettings(...) "
                            "and hand it the adapter weights through update_weights")
        self.model = model.eval()
        self.pad_token_id = pad_token_id
        self.stop_token_ids = list(stop_token_ids)
        self.max_batch_size = max_batch_size
        self.lora = lora
        self.device = next(model.parameters()).device
        self.static_cache = self.device.type == "cuda" if static_cache is None else static_cache
        self._base_weights: dict[str, torch.Tensor] = {}
        """The pristine weight of every module a LoRA update has touched, by module name."""
        self._base_replaced = False
        """A full update has overwritten the base model: no LoRA adapter applies to it any more."""

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
                 seeds: Sequence[int] | None = None) -> list[Generation]:
        """Completes every prompt, results in prompt order.

        Args:
            prompts: token ids of each prompt.
            params: how to sample.
            seeds: one per prompt. HF samples a whole batch from one RNG, so each sub-batch is
                seeded with ``derive_seed`` of its prompts' seeds; torch's global RNG is left as it was.
                Without seeds, sampling draws from torch's global RNG.
        """
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; pass one seed per prompt")
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Generation | None] = [None] * len(prompts)
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            seed = None if seeds is None else derive_seed(*(seeds[i] for i in chunk))
            batch = [prompts[i] for i in chunk]
            if self.static_cache and self.device.type == "cuda":
                generations = cuda_graph_thread().submit(self._generate_batch, batch, params, seed).result()
            else:
                generations = self._generate_batch(batch, params, seed)
            for index, generation in zip(chunk, generations):
                results[index] = generation
        return results

    def _generate_batch(self, prompts: list[Sequence[int]], params: SamplingParams,
                        seed: int | None) -> list[Generation]:
        rows = [torch.tensor(prompt, dtype=torch.long) for prompt in prompts]
        input_ids = pad_sequence(rows, batch_first=True, padding_value=self.pad_token_id, padding_side="left")
        attention_mask = pad_sequence([torch.ones_like(row) for row in rows], batch_first=True, padding_side="left")
        sample = params.temperature > 0
        kwargs = dict(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            eos_token_id=self.stop_token_ids,
            pad_token_id=self.pad_token_id,
            return_dict_in_generate=True,
            output_scores=True,
        )
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.static_cache:
            kwargs["cache_implementation"] = "static"
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(input_ids=input_ids.to(self.device),
                                      attention_mask=attention_mask.to(self.device), **kwargs)
        new_tokens = out.sequences[:, input_ids.shape[1] :]
        # scores are the logits after temperature/top-p: the distribution the tokens were drawn from.
        logprobs = torch.stack(
            [-F.cross_entropy(scores.float(), new_tokens[:, step], reduction="none")
             for step, scores in enumerate(out.scores)],
            dim=1,
        )
        stops = set(self.stop_token_ids)
        generations = []
        for ids, row_logprobs in zip(new_tokens.tolist(), logprobs.tolist()):
            stop = next((i for i, token in enumerate(ids) if token in stops), None)
            end = len(ids) if stop is None else stop + 1
            generations.append(Generation(ids[:end], row_logprobs[:end], "length" if stop is None else "stop"))
        return generations

    @torch.no_grad()
    def update_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Takes new policy weights, as a learner hands them out.

        A LoRA adapter's state (peft keys, ``...q_proj.lora_A.weight``) sets every adapted weight to
        ``W0 + (alpha / r) * B @ A`` (computed in fp32) from a pristine copy ``W0``; modules adapted
        before but absent from ``state`` go back to ``W0``, so ``{}`` restores the base model exactly.
        A state without LoRA keys holds every weight of the model and replaces it.

        Raises:
            ValueError: ``state`` does not fit the model (a key naming no weight, a wrong shape, a
                missing weight), the weights are left as they were; or a LoRA state or ``{}`` comes
                after a full update, which left no base model to apply it to.
        """
        if is_lora_state(state):
            self._set_lora(state)
        else:
            self._set_full(state)

    def _set_lora(self, state: dict[str, torch.Tensor]) -> None:
        if self._base_replaced:
            raise ValueError("a full weight update replaced the base model, so neither LoRA weights nor {} "
                             "(the base model) apply to it any more; build a fresh engine on the base model")
        linear_shapes = {name: module.weight.shape for name, module in self.model.named_modules()
                         if isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.ndim == 2}
        factors = lora_factors(state, linear_shapes, self.lora)
        for name, base in self._base_weights.items():
            if name not in factors:
                self.model.get_submodule(name).weight.copy_(base)
        for name, (lora_a, lora_b) in factors.items():
            weight = self.model.get_submodule(name).weight
            base = self._base_weights.setdefault(name, weight.detach().clone())
            weight.copy_(merged_weight(base, lora_a, lora_b, self.lora))  # copy_ casts to the weight's dtype

    def _set_full(self, state: dict[str, torch.Tensor]) -> None:
        load_full_state(self.model, state)
        self._base_weights.clear()
        self._base_replaced = True

    def release_memory(self) -> None:
        """Drops the static KV cache transformers keeps on the model between ``generate`` calls and
        hands freed memory back to the device; compiled graphs and pristine weights stay."""
        if hasattr(self.model, "_cache"):
            del self.model._cache
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
