"""`recrl serve`: an OpenAI-compatible chat endpoint over our engines.

Any OpenAI client (the official ``openai`` package, our ``teachers.backends.openai.OpenAIBackend``, an
evaluation harness) can talk to a model we trained or to the teacher's model, on a CPU laptop or a
GPU box, so every LLM path runs for real without a hosted API. Concurrent requests are merged into
batched generate calls (``teachers.backends.batching``).

Endpoints: ``GET /v1/models``, ``GET /v1/models/{model}`` and ``POST /v1/chat/completions``. Errors
come in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, with status 400 (a bad
request), 404 (an unknown model or path) or 500 (the backend failed); the server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from teachers.backends.base import ChatBackend, ChatParams, Completion, Message, check_messages
from teachers.backends.batching import BatchingBackend

DEFAULT_MAX_TOKENS = ChatParams().max_tokens
"""New tokens of a completion when a request names no ``max_tokens``."""


class ChatRequest(BaseModel):
    """The fields of an OpenAI chat completion request that we honour; other fields (tools, logprobs,
    penalties, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    """OpenAI's newer name for ``max_tokens``; wins when both are given."""
    temperature: float | None = Field(None, ge=0, le=2)
    """None: 1, as in OpenAI's API."""
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    """None: a seed derived from the conversation (``teachers.backends.base.conversation_seed``)."""
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    """``{"include_usage": true}`` adds a last chunk with the token counts."""

    def params(self) -> ChatParams:
        max_tokens = self.max_completion_tokens or self.max_tokens or DEFAULT_MAX_TOKENS
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return ChatParams(max_tokens=max_tokens, temperature=1.0 if self.temperature is None else self.temperature,
                          top_p=1.0 if self.top_p is None else self.top_p, stop=stop)


class APIError(Exception):
    """A request we refuse, answered in OpenAI's error shape."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None) -> JSONResponse:
    """OpenAI's error body: ``invalid_request_error`` for 4xx, ``server_error`` for 5xx."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def make_app(backend: ChatBackend, *, max_batch: int = 16, wait_s: float = 0.01) -> FastAPI:
    """The OpenAI-compatible app over ``backend``.

    Requests are checked first (messages, and the prompt length where the backend has a ``check``
    method, as ``EngineBackend`` does), then queued into a ``BatchingBackend`` (``app.state.batching``),
    so one bad request never fails a batch of good ones and the event loop never waits on the model.

    With ``stream: true`` the reply comes as Server-Sent Events of ``chat.completion.chunk`` objects
    ending in ``data: [DONE]``; the completion is generated whole first, then sent in word-sized chunks
    (clients stream unchanged; the first token comes no sooner).

    Args:
        backend: completes the conversations; called from one thread, in batches.
        max_batch: conversations in one backend call at most.
        wait_s: how long the first request of a batch waits for others.
    """
    batching = BatchingBackend(backend, max_batch=max_batch, wait_s=wait_s)
    check = getattr(backend, "check", None)
    created = int(time.time())
    app = FastAPI(title="recrl", description=__doc__, version="1")
    app.state.batching = batching

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return error_response(error.status, error.message, param=error.param, code=error.code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        message, param = describe_validation_error(error.errors())
        return error_response(400, message, param=param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        messages = {404: f"no such endpoint: {request.url.path}",
                    405: f"{request.url.path} does not take {request.method} requests"}
        return error_response(error.status_code, messages.get(error.status_code, str(error.detail)))

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:  # a bug of ours; uvicorn logs it
        return error_response(500, f"internal server error: {type(error).__name__}: {error}")

    def model_card() -> dict[str, Any]:
        return {"id": backend.model, "object": "model", "created": created, "owned_by": "recrl"}

    def check_model(name: str) -> None:
        if name != backend.model:
            raise APIError(404, f"the model '{name}' does not exist here; this server serves '{backend.model}'",
                           param="model", code="model_not_found")

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> dict[str, Any]:
        check_model(name)
        return model_card()

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        check_model(body.model)
        if body.n != 1:
            raise APIError(400, f"n={body.n} asks for several choices; this server returns one (n=1)", param="n")
        try:
            params = body.params()
            messages = check_messages([text_message(m) for m in body.messages])
            if check is not None:
                check(messages, params)
        except ValueError as error:
            raise APIError(400, str(error), param="messages") from None
        try:
            completion = await asyncio.wrap_future(batching.submit(messages, params, seed=body.seed))
        except Exception as error:  # the backend failed: this request's answer, not the server's end
            raise APIError(500, f"the backend failed: {type(error).__name__}: {error}") from None
        reply_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(stream_events(completion, reply_id, backend.model, include_usage=include_usage),
                                     media_type="text/event-stream")
        return {"id": reply_id, "object": "chat.completion", "created": int(time.time()), "model": backend.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": completion.text},
                             "finish_reason": completion.finish_reason, "logprobs": None}],
                "usage": usage(completion)}

    return app


def text_message(message: dict[str, Any]) -> Message:
    """``message`` with OpenAI's list of text parts (``[{"type": "text", "text": ...}]``) joined into one string."""
    content = message.get("content")
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return {**message, "content": "".join(str(part.get("text", "")) for part in content)}
    return message


def describe_validation_error(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """A readable message for pydantic's errors of a request body, and the field it names."""
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", "")
        return f"the request body is not valid JSON ({reason})", None
    location = [str(part) for part in first.get("loc", ())[1:]]  # drop "body"
    param = ".".join(location) or None
    where = f"'{param}'" if param else "the request body"
    return f"invalid request: {where}: {first.get('msg', 'invalid')}", param


def usage(completion: Completion) -> dict[str, int]:
    return {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens}


def stream_events(completion: Completion, reply_id: str, model: str, *, include_usage: bool) -> Iterator[str]:
    """A finished completion as Server-Sent Events of ``chat.completion.chunk`` objects: the role, one
    chunk per word (with the whitespace before it), the finish reason, the usage if asked, ``[DONE]``."""
    created = int(time.time())

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        chunk = {"id": reply_id, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": choices, **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    def delta(content: dict[str, str], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": content, "finish_reason": finish_reason, "logprobs": None}]

    yield event(delta({"role": "assistant", "content": ""}))
    for piece in re.findall(r"\s*\S+|\s+", completion.text):
        yield event(delta({"content": piece}))
    yield event(delta({}, completion.finish_reason))
    if include_usage:
        yield event([], usage=usage(completion))
    yield "data: [DONE]\n\n"


@contextlib.contextmanager
def serving(app: FastAPI, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serves ``app`` with uvicorn from a background thread while the block runs (a notebook, a bench
    or a test next to the server in one process); yields its base URL, ``http://HOST:PORT/v1``.

    Args:
        app: the app (``make_app``).
        host: the address to listen on.
        port: the port (0: a free one).
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    sock = config.bind_socket()  # bound here, so port 0 has its number before the server starts
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="recrl-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise RuntimeError(f"the server on {host}:{port} did not start; its log above says why")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def serve(model: str, *, engine: str = "auto", host: str = "127.0.0.1", port: int = 8000, max_batch: int = 16,
          kv_cache_gib: float = 4.0) -> None:
    """Loads ``model`` into an engine (on the GPU when there is one) and serves it until interrupted.

    Args:
        model: a name ``rollout.models.resolve_model`` knows, or a model folder; clients ask for it by
            its last path component.
        engine: vllm, hf, or auto (vLLM where installed, else HF).
        host: the address to listen on (0.0.0.0: every interface).
        port: the port to listen on.
        max_batch: conversations in one generate call at most.
        kv_cache_gib: vLLM's KV cache: it keeps the prefixes the conversations in flight share with
            their next requests (a teacher's 64 episodes of 1-2k tokens outgrow 1 GiB).
    """
    import uvicorn

    from rollout.policy import resolve_device
    from teachers.backends.engine import EngineBackend

    backend = EngineBackend.open(model, engine=engine, device=resolve_device("auto"), max_batch_size=max_batch,
                                 kv_cache_gib=kv_cache_gib)
    print(f"[serve] '{backend.model}' at http://{host}:{port}/v1 (OpenAI-compatible; Ctrl-C stops it)")
    uvicorn.run(make_app(backend, max_batch=max_batch), host=host, port=port, log_level="info")
