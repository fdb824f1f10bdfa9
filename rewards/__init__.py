"""Rewards: plain functions of a rank (``rewards.ranking``) composed by name and weight (``score_batch``)."""

from rewards.compose import REWARD_FUNCTIONS, RewardConfig, check_weights, register_reward, score, score_batch
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
    "RewardConfig",
    "check_weights",
    "format_reward",
    "hit_at_k",
    "mrr",
    "ndcg_at_k",
    "rank_of",
    "ranking_metrics",
    "register_reward",
    "score",
    "score_batch",
    "tiered_hit",
]
