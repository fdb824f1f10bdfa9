"""Any OpenAI-compatible chat endpoint as a backend: a hosted API, vLLM's server, or ``recrl serve``.

Plain HTTP (httpx), one request per conversation, several in flight at once; transient failures
(no connection, a timeout, 429, 5xx) are retried with exponential backoff, a refused request (any
other 4xx) fails at once with the server's reason.
"""

from __future__ import annotations

import email.utils
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import httpx

from teachers.backends.base import (BackendError, ChatParams, Completion, Message, check_messages, conversation_seed,
                                    cut_at_stop)

if TYPE_CHECKING:
    from teachers.backends import BackendConfig

MAX_STOP_STRINGS = 4
"""Stop strings OpenAI's API takes; any further ones are cut here, after the reply comes."""
RETRIED_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
"""Transport failures worth another try (a wrong scheme or URL is not)."""
MAX_RETRY_AFTER_S = 60.0
"""The longest ``Retry-After`` honoured (as OpenAI's own client does)."""


class OpenAIBackend:
    """Completes conversations at an OpenAI-compatible ``/chat/completions`` endpoint (a ChatBackend).

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the model name the endpoint knows.
        api_key: sent as ``Authorization: Bearer ...`` (None: no header).
        timeout_s: seconds to connect, and seconds to wait for the reply.
        max_retries: further tries of a request that failed to connect, timed out, or got a 429 or 5xx.
        concurrency: requests in flight at once, over every thread calling ``chat``.
        backoff_s: the wait before the first retry; it doubles each retry (with jitter, between half
            and all of it), unless the server's ``Retry-After`` says how long (up to a minute).
        max_backoff_s: the longest wait between tries that the backoff computes.
        transport: an httpx transport (default: httpx's HTTP transport; ``httpx.MockTransport`` in tests).
    """

    def __init__(self, *, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0,
                 max_retries: int = 4, concurrency: int = 8, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"the OpenAI base URL must start with http:// or https://, got '{base_url}'")
        if max_retries < 0 or concurrency < 1 or timeout_s <= 0:
            raise ValueError(f"need max_retries >= 0, concurrency >= 1 and timeout_s > 0, got {max_retries}, "
                             f"{concurrency}, {timeout_s}")
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout_s, transport=transport,
                                    limits=httpx.Limits(max_connections=concurrency))
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-backend")
        self._random = random.Random()  # jitter never draws from (or reseeds) the global RNG
        self._random_lock = threading.Lock()

    @classmethod
    def from_config(cls, config: "BackendConfig", *, transport: httpx.BaseTransport | None = None) -> "OpenAIBackend":
        """The backend of a teacher's ``backend`` config: ``OPENAI_BASE_URL`` in the environment wins
        over ``config.base_url``; the key is read from the variable ``config.api_key_env`` names."""
        api_key = os.environ.get(config.api_key_env) if config.api_key_env else None
        return cls(base_url=os.environ.get("OPENAI_BASE_URL") or config.base_url, model=config.model,
                   api_key=api_key or None, timeout_s=config.timeout_s, max_retries=config.max_retries,
                   concurrency=config.concurrency, transport=transport)

    def chat(self, conversations: Sequence[Sequence[Message]], params: ChatParams, *,
             seeds: Sequence[int | None] | None = None) -> list[Completion]:
        conversations = [check_messages(c) for c in conversations]
        seeds = list(seeds) if seeds is not None else [None] * len(conversations)
        if len(seeds) != len(conversations):
            raise ValueError(f"got {len(seeds)} seeds for {len(conversations)} conversations; pass one per conversation")
        futures = [self._pool.submit(self._complete, c, params, conversation_seed(c) if s is None else s)
                   for c, s in zip(conversations, seeds)]
        return [future.result() for future in futures]

    def close(self) -> None:
        """Waits for requests in flight, then closes the connections."""
        self._pool.shutdown()
        self._client.close()

    def _complete(self, messages: list[Message], params: ChatParams, seed: int) -> Completion:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": params.max_tokens,
                                "temperature": params.temperature, "top_p": params.top_p, "seed": seed}
        if params.stop:
            body["stop"] = list(params.stop[:MAX_STOP_STRINGS])
        reply = self._post(body)
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") or ""
            finish_reason = choice.get("finish_reason")
            counts = reply.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"{self.url} answered without a chat completion: {str(reply)[:500]}") from None
        text, stopped = cut_at_stop(text, params.stop)
        return Completion(text, "length" if finish_reason == "length" and not stopped else "stop",
                          int(counts.get("prompt_tokens") or 0), int(counts.get("completion_tokens") or 0))

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """The JSON reply to ``body``, after up to ``max_retries`` retries of transient failures."""
        last_error, retry_after = "", None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._backoff(attempt - 1, retry_after))
            retry_after = None
            try:
                response = self._client.post(self.url, json=body)
            except RETRIED_ERRORS as error:
                last_error = f"{type(error).__name__}: {error}".rstrip(": ")
                continue
            except httpx.HTTPError as error:
                raise BackendError(f"cannot request {self.url}: {type(error).__name__}: {error}") from None
            if response.is_success:
                try:
                    return response.json()
                except ValueError:
                    raise BackendError(f"{self.url} answered {response.status_code} with something other than "
                                       f"JSON: {response.text[:500]!r}") from None
            if response.status_code != 429 and response.status_code < 500:
                raise BackendError(f"{self.url} refused the request ({response.status_code}): "
                                   f"{error_message(response)}")
            last_error = f"{response.status_code}: {error_message(response)}"
            retry_after = retry_after_s(response)
        raise BackendError(f"{self.url} failed {self.max_retries + 1} times; the last error: {last_error}")

    def _backoff(self, retry: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        with self._random_lock:
            jitter = self._random.uniform(0.5, 1.0)
        return min(self.max_backoff_s, self.backoff_s * 2 ** retry) * jitter


def error_message(response: httpx.Response) -> str:
    """The reason an endpoint gave for refusing a request: OpenAI's ``error.message``, FastAPI's
    ``detail``, or the start of the body."""
    try:
        reply = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    error = reply.get("error") if isinstance(reply, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    if isinstance(reply, dict) and "detail" in reply:
        return str(reply["detail"])
    return response.text[:500]


def retry_after_s(response: httpx.Response) -> float | None:
    """The wait a 429 or 503 asks for (``retry-after-ms``, or ``Retry-After`` in seconds or as a date), if any."""
    if (milliseconds := response.headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
