"""The one interface of the teachers' LLM backends: chat messages in, completions out.

Every backend (``hf`` and ``vllm`` engines in this process, any OpenAI-compatible endpoint, scripted
replies for control-flow tests) takes a batch of conversations and returns one completion each, so a
teacher system runs unchanged wherever a student runs, or against a hosted model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Message = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": ...}``."""

ROLES = ("system", "user", "assistant")


class BackendError(RuntimeError):
    """A backend could not complete a request (after its retries): the message says why."""


@dataclass(frozen=True)
class ChatParams:
    """How to sample one completion."""

    max_tokens: int = 256
    """New tokens at most."""
    temperature: float = 0.0
    """0 decodes greedily."""
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    """Strings that end the completion where they first appear (not included in it)."""

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}")


@dataclass(frozen=True)
class Completion:
    """One completion: its text, why it ended (``stop``: the model's end of turn or a stop string;
    ``length``: ``max_tokens``), and token counts where the backend knows them (else 0)."""

    text: str
    finish_reason: Literal["stop", "length"] = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ChatBackend(Protocol):
    """Completes conversations."""

    model: str
    """The model's name, as an OpenAI-compatible endpoint reports it."""

    def chat(self, conversations: Sequence[Sequence[Message]], params: ChatParams, *,
             seeds: Sequence[int | None] | None = None) -> list[Completion]:
        """One completion per conversation, in order. ``seeds`` makes sampling reproducible per
        conversation (None: a seed derived from the conversation, ``conversation_seed``)."""
        ...


def check_messages(messages: Sequence[Message]) -> list[Message]:
    """The messages as plain dicts, or a ValueError naming what is wrong with them."""
    if not messages:
        raise ValueError("a conversation needs at least one message")
    checked = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"message {index} has role {role!r}; use one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ValueError(f"message {index} has no text content")
        checked.append({"role": role, "content": content})
    return checked


def conversation_seed(messages: Sequence[Message]) -> int:
    """A 63-bit seed from a conversation's text: the same conversation samples the same reply.

    >>> conversation_seed([{"role": "user", "content": "hi"}]) == conversation_seed([{"role": "user", "content": "hi"}])
    True
    """
    digest = hashlib.blake2b(repr([(m["role"], m["content"]) for m in messages]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found.

    >>> cut_at_stop("a<end>b", ["<end>"])
    ('a', True)
    """
    cuts = [index for index in (text.find(s) for s in stop if s) if index >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def complete(backend: ChatBackend, messages: Sequence[Message], params: ChatParams, *, seed: int | None = None) -> str:
    """The text of one completion of one conversation."""
    [completion] = backend.chat([messages], params, seeds=[seed])
    return completion.text
