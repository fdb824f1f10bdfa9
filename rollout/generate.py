"""Plain chat generation with a model from the registry, for what is not a policy (an LLM judge,
an LLM user simulator): conversations in, reply texts out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rollout.chat import ChatFormat
from rollout.engines.base import SamplingParams, derive_seed
from rollout.engines.hf import HFEngine
from rollout.policy import load_policy


def chat_generator(model_name: str, *, device: str = "cpu", max_new_tokens: int = 64, temperature: float = 0.0,
                   seed: int = 0) -> Callable[[Sequence[Sequence[dict[str, str]]]], list[str]]:
    """A function from chat conversations (role/content messages) to the model's replies, on the
    HF engine; the ``i``-th conversation of the ``n``-th call samples from its own seed."""
    model, tokenizer = load_policy(model_name, lora=None, device=device)
    chat = ChatFormat(tokenizer)
    engine = HFEngine(model, pad_token_id=tokenizer.pad_token_id, stop_token_ids=[chat.end_of_turn_id])
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)
    calls = 0

    def generate(conversations: Sequence[Sequence[dict[str, str]]]) -> list[str]:
        nonlocal calls
        calls += 1
        prompts = [chat.prompt_ids(messages) for messages in conversations]
        seeds = [derive_seed(seed, "chat", calls, index) for index in range(len(prompts))]
        return [tokenizer.decode(g.token_ids, skip_special_tokens=True).strip()
                for g in engine.generate(prompts, params, seeds=seeds)]

    return generate
