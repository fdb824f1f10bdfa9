"""The Engine interface every generation backend implements (vLLM, HF transformers).

Token ids in, token ids out: the episode loop never hands an engine text, and never
re-tokenizes what an engine produced.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one agent turn."""

    max_new_tokens: int
    temperature: float = 0.0
    """0 decodes greedily."""
    top_p: float = 1.0


@dataclass
class Generation:
    """One completion: the new token ids, the log-prob of each under the sampling distribution, and
    why it ended (``stop``: a stop token, kept in ``token_ids``; ``length``: ``max_new_tokens``)."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason


class Engine(Protocol):
    """A policy that completes token-id prompts."""

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, *,
                 seeds: Sequence[int] | None = None) -> list[Generation]:
        """Completes every prompt, results in prompt order. ``seeds`` holds one seed per prompt;
        an engine that cannot seed each request samples the batch from one seed derived from all."""
        ...

    def update_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Takes new policy weights: a LoRA adapter's state or every weight, as a learner hands them out."""
        ...

    def release_memory(self) -> None:
        """Frees what generation holds between calls (KV caches, compiled graphs)."""
        ...


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from any parts; different parts give independent seeds.

    >>> derive_seed(0, "step", 1) == derive_seed(0, "step", 1) != derive_seed(0, "step", 2)
    True
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
