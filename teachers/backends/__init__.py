"""LLM backends of the teacher systems, behind one interface (``base.ChatBackend``)."""

from __future__ import annotations

from dataclasses import dataclass

from teachers.backends.base import BackendError, ChatBackend, ChatParams, Completion, Message, complete

BACKENDS = ("hf", "vllm", "openai", "scripted")
CONNECTION_FIELDS = ("base_url", "api_key_env", "timeout_s", "max_retries", "concurrency")
"""BackendConfig fields that say how a model is reached, not what it answers."""

__all__ = ["BACKENDS", "BackendConfig", "BackendError", "ChatBackend", "ChatParams", "Completion", "Message",
           "complete", "make_backend"]


@dataclass(frozen=True)
class BackendConfig:
    """Where a teacher's LLM runs."""

    kind: str = "hf"
    """hf or vllm (our engines, in this process), openai (any OpenAI-compatible endpoint, such as
    ``recrl serve``), or scripted (fixed replies, for tests)."""
    model: str = "smollm2-135m-instruct"
    """hf/vllm: a name ``rollout.models.resolve_model`` knows, or a model folder; openai: the
    endpoint's model name."""
    base_url: str = "http://127.0.0.1:8000/v1"
    """openai: the endpoint (``OPENAI_BASE_URL`` in the environment wins when set)."""
    api_key_env: str = "OPENAI_API_KEY"
    """openai: the environment variable holding the key (unset: no key is sent)."""
    timeout_s: float = 120.0
    """openai: seconds one request may take."""
    max_retries: int = 4
    """openai: retries of a request that failed to connect, timed out, or got a 429 or 5xx."""
    concurrency: int = 8
    """openai: requests in flight at once; hf/vllm: conversations per generate call."""
    replies_file: str = ""
    """scripted: a JSON list of replies."""
    temperature: float = 0.0
    """Sampling temperature of the teacher's roles (0: greedy)."""
    max_tokens: int = 256
    """New tokens per role reply at most."""
    device: str = "auto"
    """hf: where the model runs (auto: cuda when a GPU is visible, else cpu)."""

    def __post_init__(self):
        if self.kind not in BACKENDS:
            raise ValueError(f"unknown backend kind '{self.kind}'; use one of {', '.join(BACKENDS)}")
        from rollout.policy import check_device

        check_device(self.device)

    @property
    def params(self) -> ChatParams:
        return ChatParams(max_tokens=self.max_tokens, temperature=self.temperature)


def make_backend(config: BackendConfig) -> ChatBackend:
    """The backend ``config`` describes (heavy imports happen here, for the kind asked)."""
    if config.kind == "scripted":
        from teachers.backends.scripted import ScriptedBackend

        return ScriptedBackend.from_file(config.replies_file)
    if config.kind == "openai":
        from teachers.backends.openai import OpenAIBackend

        return OpenAIBackend.from_config(config)
    from rollout.policy import resolve_device
    from teachers.backends.batching import BatchingBackend
    from teachers.backends.engine import EngineBackend

    engine = EngineBackend.open(config.model, engine=config.kind, device=resolve_device(config.device),
                                max_batch_size=config.concurrency)
    return BatchingBackend(engine, max_batch=config.concurrency)
