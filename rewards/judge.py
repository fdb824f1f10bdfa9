"""Scores for the critic's records: an LLM judge's (ECR-MA's LLM-as-judge) over any generation
backend, or an episode's own outcome."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from envs.types import Trajectory

JUDGE_SYSTEM = ("You judge a recommender's side of a conversation. Rate how well it understands the user, "
                "how informative and persuasive its recommendations are, and how kindly it speaks, on a scale "
                "of 1 to 10. Reply with one line: Score: <number>.")
_SCORE = re.compile(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)

Generate = Callable[[Sequence[Sequence[dict[str, str]]]], list[str]]
"""A generation backend: chat conversations (lists of role/content messages) to replies."""


def dialogue_text(trajectory: Trajectory) -> str:
    """An episode as the critic reads it: one ``role: text`` line per turn after the system prompt."""
    return "\n".join(f"{turn.role}: {turn.text}" for turn in trajectory.turns if turn.role != "system")


def parse_judge_score(reply: str, *, low: float = 1.0, high: float = 10.0) -> float | None:
    """The judge's score, clipped to the scale; None when the reply holds none.

    >>> parse_judge_score("Score: 7"), parse_judge_score("score=12"), parse_judge_score("great!")
    (7.0, 10.0, None)
    """
    match = _SCORE.search(reply)
    return None if match is None else min(high, max(low, float(match.group(1))))


def judge_records(texts: Sequence[str], generate: Generate, *, batch_size: int = 16) -> tuple[list[dict], int]:
    """``{"text", "score"}`` records of the texts the judge scored, and how many replies held no score."""
    records, unscored = [], 0
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        replies = generate([[{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": text}]
                            for text in batch])
        for text, reply in zip(batch, replies, strict=True):
            score = parse_judge_score(reply)
            if score is None:
                unscored += 1
            else:
                records.append({"text": text, "score": score})
    return records, unscored


def outcome_records(trajectories: Sequence[Trajectory], *, reward: str = "") -> list[dict]:
    """``{"text", "score"}`` records scored by each episode's outcome: its total reward, or the
    component named ``reward`` (e.g. ``tiered_hit``, ``success``)."""
    records = []
    for trajectory in trajectories:
        if reward and reward not in trajectory.rewards:
            raise ValueError(f"trajectory {trajectory.task_id} has no '{reward}' reward; it has "
                             f"{sorted(trajectory.rewards)}")
        score = trajectory.rewards[reward] if reward else trajectory.reward
        records.append({"text": dialogue_text(trajectory), "score": score})
    return records
