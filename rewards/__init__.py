"""Rewards: plain functions of a rank (``rewards.ranking``) composed by name and weight."""

from rewards.compose import REWARD_FUNCTIONS, check_weights, register_reward, score
from rewards.ranking import (
    format_reward,
    hit_at_k,
    mrr,
    ndcg_at_k,
    rank_of,
    ranking_metrics,
    tiered_hit,
)

__all__ = [
    "REWARD_FUNCTIONS",
    "check_weights",
    "format_reward",
    "hit_at_k",
    "mrr",
    "ndcg_at_k",
    "rank_of",
    "ranking_metrics",
    "register_reward",
    "score",
    "tiered_hit",
]
