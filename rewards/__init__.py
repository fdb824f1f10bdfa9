"""Rewards: plain functions of a rank (``rewards.ranking``), of MACRec's answers before and after a
reflection (``rewards.macrec``) and of a dialogue (``rewards.conversational``), composed by name and
weight (``score_batch``), and adapted to TRL's and veRL's reward-function shapes (``rewards.adapters``)."""

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
from rewards.macrec import delta_reward, parse_verdict, reflection_reward, rp_v1, rp_v2, sr_v1
from rewards.conversational import is_justified_recommendation, justified_format, success, turn_penalty
from rewards.adapters import COMPLETION_TASKS, CompletionTask, completion_trajectory, compute_score, trl_reward_func

__all__ = [
    "COMPLETION_TASKS",
    "CompletionTask",
    "REWARD_FUNCTIONS",
    "RewardConfig",
    "check_weights",
    "completion_trajectory",
    "compute_score",
    "delta_reward",
    "format_reward",
    "hit_at_k",
    "is_justified_recommendation",
    "justified_format",
    "mrr",
    "ndcg_at_k",
    "parse_verdict",
    "rank_of",
    "ranking_metrics",
    "reflection_reward",
    "register_reward",
    "rp_v1",
    "rp_v2",
    "score",
    "score_batch",
    "sr_v1",
    "success",
    "tiered_hit",
    "trl_reward_func",
    "turn_penalty",
]
