"""Merges chat requests from many threads into batched backend calls.

An engine completes a batch of prompts in about the time of one on a GPU (and far faster than one
after another on a CPU); requests arriving together (an HTTP server's clients, a teacher system's
episodes played in threads) wait a few milliseconds and go in together.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from teachers.backends.base import ChatBackend, ChatParams, Completion, Message


@dataclass
class _Request:
    messages: Sequence[Message]
    params: ChatParams
    seed: int | None
    future: Future


class BatchingBackend:
    """A ChatBackend that forwards calls from any thread to ``backend`` in batches.

    Args:
        backend: does the work, one batch at a time (from one thread: it need not be thread-safe).
        max_batch: conversations in one call at most.
        wait_s: how long the first request of a batch waits for others.
    """

    def __init__(self, backend: ChatBackend, *, max_batch: int = 16, wait_s: float = 0.01):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.backend = backend
        self.model = backend.model
        self.max_batch = max_batch
        self.wait_s = wait_s
        self.batch_sizes: list[int] = []
        """Conversations in each call made to ``backend``."""
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="batching-backend", daemon=True)
        self._thread.start()

    def submit(self, messages: Sequence[Message], params: ChatParams, *, seed: int | None = None) -> Future:
        """Queues one conversation; the future gives its Completion (or the backend's exception)."""
        future: Future = Future()
        self._queue.put(_Request(messages, params, seed, future))
        return future

    def chat(self, conversations: Sequence[Sequence[Message]], params: ChatParams, *,
             seeds: Sequence[int | None] | None = None) -> list[Completion]:
        seeds = list(seeds) if seeds is not None else [None] * len(conversations)
        futures = [self.submit(c, params, seed=s) for c, s in zip(conversations, seeds, strict=True)]
        return [f.result() for f in futures]

    def _serve(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(self._queue.get(timeout=left))
                except queue.Empty:
                    break
            by_params: dict[ChatParams, list[_Request]] = {}
            for request in batch:
                by_params.setdefault(request.params, []).append(request)
            for params, requests in by_params.items():
                self._run(params, requests)

    def _run(self, params: ChatParams, requests: list[_Request]) -> None:
        self.batch_sizes.append(len(requests))
        try:
            completions = self.backend.chat([r.messages for r in requests], params, seeds=[r.seed for r in requests])
        except Exception as error:  # handed to every caller of the batch; the serving thread lives on
            for request in requests:
                request.future.set_exception(error)
            return
        for request, completion in zip(requests, completions, strict=True):
            request.future.set_result(completion)
