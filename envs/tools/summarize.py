"""MARS's iterative summarizer of a long history: summarize it chunk by chunk, then summarize the
chunk summaries.

Extractive without an LLM (each chunk's most frequent genres, its years and a representative
title; then the genres over all chunks and how the leading genre moved), or abstractive with one:
a ``generate(prompt) -> text`` callable writes each chunk's summary and then the summary of those.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from envs.tools.items import item_label
from envs.types import Item

CHUNK_PROMPT = (
    "Items a user watched, oldest first (part {part} of {parts}):\n{items}\n"
    "In one sentence, what does the user like in this part?"
)
FINAL_PROMPT = (
    "Summaries of consecutive parts of one user's history, oldest first:\n{summaries}\n"
    "In two sentences, summarize the user's interests and how they changed."
)
TOP_GENRES = 3
"""Genres named per chunk and overall."""


def chunked(items: Sequence[Item], size: int) -> list[list[Item]]:
    """Consecutive chunks of ``size`` items (the last may be shorter).

    >>> [len(chunk) for chunk in chunked([Item(str(i), "t") for i in range(5)], 2)]
    [2, 2, 1]
    """
    return [list(items[start:start + size]) for start in range(0, len(items), size)]


@dataclass(frozen=True)
class ChunkSummary:
    """What one chunk of a history shows: genre counts, release years, a representative item."""

    genres: Counter[str]
    years: tuple[int, ...]
    representative: Item

    @staticmethod
    def of(chunk: Sequence[Item]) -> "ChunkSummary":
        """Summarize a non-empty chunk; its representative shares most of its leading genres (the
        latest such item on ties)."""
        genres = Counter(genre for item in chunk for genre in item.genres)
        leading = {genre for genre, _ in genres.most_common(TOP_GENRES)}
        representative = max(reversed(chunk), key=lambda item: len(leading & set(item.genres)))
        years = tuple(int(item.year) for item in chunk if item.year.strip().isdigit())
        return ChunkSummary(genres, years, representative)

    def text(self) -> str:
        """``Drama 4, Comedy 3; 1994-1997; e.g. Fargo``."""
        return "; ".join(part for part in (_genres(self.genres), _span(self.years),
                                           f"e.g. {self.representative.title}") if part)


def _genres(genres: Counter[str]) -> str:
    return ", ".join(f"{genre} {count}" for genre, count in genres.most_common(TOP_GENRES))


def _span(years: Sequence[int]) -> str:
    if not years:
        return ""
    low, high = min(years), max(years)
    return str(low) if low == high else f"{low}-{high}"


def combine(summaries: Sequence[ChunkSummary]) -> str:
    """The extractive summary of chunk summaries: genres and years over all chunks, the leading
    genre of each chunk (oldest first), and the latest chunks' representative titles."""
    genres = sum((summary.genres for summary in summaries), Counter())
    years = [year for summary in summaries for year in summary.years]
    leading = [summary.genres.most_common(1)[0][0] if summary.genres else "?" for summary in summaries]
    parts = [
        _genres(genres),
        _span(years),
        "by part: " + " > ".join(leading) if len(summaries) > 1 else "",
        "e.g. " + ", ".join(summary.representative.title for summary in summaries[-3:]),
    ]
    return "; ".join(part for part in parts if part)


def summarize_history(
    items: Sequence[Item], *, chunk_size: int, generate: Callable[[str], str] | None = None
) -> tuple[str, list[str]]:
    """Summarize a history, oldest first, in chunks of ``chunk_size``.

    Args:
        items: The history's items, oldest first.
        chunk_size: Items per chunk.
        generate: An LLM (``prompt -> text``); None summarizes extractively. It gets one
            ``CHUNK_PROMPT`` per chunk, then one ``FINAL_PROMPT`` over their answers when there
            was more than one chunk.

    Returns:
        The summary and the chunk summaries (empty for an empty history).
    """
    chunks = chunked(items, chunk_size)
    if not chunks:
        return "", []
    if generate is None:
        summaries = [ChunkSummary.of(chunk) for chunk in chunks]
        return combine(summaries), [summary.text() for summary in summaries]
    texts = []
    for part, chunk in enumerate(chunks, start=1):
        listed = "\n".join(f"- {item_label(item)}" for item in chunk)
        texts.append(generate(CHUNK_PROMPT.format(part=part, parts=len(chunks), items=listed)).strip())
    if len(texts) == 1:
        return texts[0], texts
    listed = "\n".join(f"{part}. {text}" for part, text in enumerate(texts, start=1))
    return generate(FINAL_PROMPT.format(summaries=listed)).strip(), texts
