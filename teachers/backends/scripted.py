"""Replays fixed replies in order: for control-flow tests of teacher systems, never for data."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

from teachers.backends.base import BackendError, ChatParams, Completion, Message, check_messages, cut_at_stop


class ScriptedBackend:
    """Answers the k-th conversation it is asked with the k-th reply, and records every conversation.

    Args:
        replies: the replies, in the order they are asked for. Asking for more raises BackendError.
    """

    model = "scripted"

    def __init__(self, replies: Sequence[str]):
        self.replies = list(replies)
        self.calls: list[list[Message]] = []
        """Every conversation asked, in order."""
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | Path) -> "ScriptedBackend":
        """Replies from a JSON list of strings."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no scripted replies at {path}: write a JSON list of strings there")
        replies = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
            raise ValueError(f"{path} must hold a JSON list of strings")
        return cls(replies)

    def chat(self, conversations: Sequence[Sequence[Message]], params: ChatParams, *,
             seeds: Sequence[int | None] | None = None) -> list[Completion]:
        checked = [check_messages(c) for c in conversations]
        with self._lock:
            start = len(self.calls)
            if start + len(checked) > len(self.replies):
                raise BackendError(f"the script holds {len(self.replies)} replies; reply {start + len(checked)} "
                                   f"was asked for (last message: {checked[-1][-1]['content'][:200]!r})")
            self.calls += checked
            replies = self.replies[start: start + len(checked)]
        return [Completion(cut_at_stop(reply, params.stop)[0]) for reply in replies]
