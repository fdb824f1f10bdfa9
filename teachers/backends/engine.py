"""The rollout engines (HF transformers, vLLM) as a chat backend: a teacher runs wherever a student does."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rollout.engines.base import SamplingParams
from teachers.backends.base import ChatParams, Completion, Message, check_messages, conversation_seed, cut_at_stop


class EngineBackend:
    """Chat over a ``rollout.engines`` Engine: messages are rendered with the model's chat format,
    completed in one batched ``generate`` call, and decoded.

    Args:
        engine: completes token-id prompts (``rollout.engines.hf.HFEngine`` or ``.vllm.VLLMEngine``).
        chat_format: the model's ``rollout.chat.ChatFormat``.
        model: the name it answers to.
        max_context: prompt plus completion tokens the model takes (None: unchecked).
    """

    def __init__(self, engine: Any, chat_format: Any, *, model: str, max_context: int | None = None):
        self.engine, self.chat_format, self.model, self.max_context = engine, chat_format, model, max_context

    @classmethod
    def open(cls, model_name: str, *, engine: str = "auto", adapter_dir: str | Path | None = None,
             lora: Any = None, device: str = "cpu", max_batch_size: int = 16,
             kv_cache_gib: float = 1.0) -> "EngineBackend":
        """Loads ``model_name`` (a name ``rollout.models.resolve_model`` knows, or a model folder) into
        an engine (``auto``: vLLM where installed, else HF), with a learner checkpoint's weights on
        top when ``adapter_dir`` is given (``lora``: its LoRA shape, a ``rollout.policy.LoraSettings``);
        ``kv_cache_gib``: vLLM's KV cache (too small a one evicts the shared prefixes of long multi-turn
        prompts, which are then computed again)."""
        from rollout.models import resolve_model
        from rollout.policy import load_checkpoint_state
        from rollout.worker import RolloutConfig, build_engine

        rollout = RolloutConfig(engine=engine, max_batch_size=max_batch_size, kv_cache_gib=kv_cache_gib)
        generator, chat = build_engine(model_name, config=rollout, lora=lora, device=device)
        if adapter_dir is not None:
            generator.update_weights(load_checkpoint_state(adapter_dir))
        config = json.loads((resolve_model(model_name) / "config.json").read_text())
        name = Path(model_name).name if adapter_dir is None else f"{Path(model_name).name}+{Path(adapter_dir).name}"
        return cls(generator, chat, model=name, max_context=config.get("max_position_embeddings"))

    def check(self, conversation: Sequence[Message], params: ChatParams) -> list[int]:
        """The prompt token ids of ``conversation``, or a ValueError when its messages are malformed or
        its prompt plus ``params.max_tokens`` exceeds the model's context (a server checks each request
        with it before batching, so one bad request never fails the others)."""
        prompt = self.chat_format.prompt_ids(check_messages(conversation))
        if self.max_context is not None and len(prompt) + params.max_tokens > self.max_context:
            raise ValueError(f"the prompt has {len(prompt)} tokens; with max_tokens {params.max_tokens} that "
                             f"exceeds the model's context of {self.max_context} tokens")
        return prompt

    def chat(self, conversations: Sequence[Sequence[Message]], params: ChatParams, *,
             seeds: Sequence[int | None] | None = None) -> list[Completion]:
        conversations = [check_messages(c) for c in conversations]
        seeds = list(seeds) if seeds is not None else [None] * len(conversations)
        prompts = []
        for index, conversation in enumerate(conversations):
            try:
                prompts.append(self.check(conversation, params))
            except ValueError as error:
                raise ValueError(f"conversation {index}: {error}") from None
        sampling = SamplingParams(max_new_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p)
        generations = self.engine.generate(prompts, sampling, seeds=[
            conversation_seed(c) if s is None else s for c, s in zip(conversations, seeds, strict=True)])
        completions = []
        for prompt, generation in zip(prompts, generations, strict=True):
            text = self.chat_format.tokenizer.decode(generation.token_ids, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, params.stop)
            completions.append(Completion(text, "stop" if stopped else generation.finish_reason,
                                          len(prompt), len(generation.token_ids)))
        return completions
