import math

import pytest

from rewards.ranking import (
    format_reward,
    hit_at_k,
    mrr,
    ndcg_at_k,
    rank_of,
    ranking_metrics,
    tiered_hit,
)


def test_rank_of_is_one_based_and_none_when_absent():
    assert rank_of(["a", "b", "c"], "a") == 1
    assert rank_of(["a", "b", "c"], "c") == 3
    assert rank_of(["a", "b", "c"], "z") is None
    assert rank_of([], "a") is None


def test_hit_at_k_boundaries():
    assert hit_at_k(1, 1) == 1.0
    assert hit_at_k(2, 1) == 0.0
    assert hit_at_k(5, 5) == 1.0
    assert hit_at_k(6, 5) == 0.0
    assert hit_at_k(None, 10) == 0.0


def test_ndcg_single_relevant_item():
    assert ndcg_at_k(1, 5) == 1.0
    # 1 / log2(3) = 0.6309...
    assert ndcg_at_k(2, 5) == pytest.approx(0.6309298)
    assert ndcg_at_k(3, 5) == pytest.approx(0.5)
    # 1 / log2(6) = 0.3868...
    assert ndcg_at_k(5, 5) == pytest.approx(0.3868528)
    assert ndcg_at_k(6, 5) == 0.0
    assert ndcg_at_k(None, 5) == 0.0


def test_mrr():
    assert mrr(1) == 1.0
    assert mrr(4) == 0.25
    assert mrr(None) == 0.0


@pytest.mark.parametrize(
    ("rank", "expected"),
    [(1, 1.0), (2, 2 / 3), (3, 2 / 3), (4, 1 / 3), (5, 1 / 3), (6, 0.0), (20, 0.0), (None, 0.0)],
)
def test_tiered_hit(rank, expected):
    assert tiered_hit(rank) == pytest.approx(expected)


def test_format_reward():
    assert format_reward(True) == 1.0
    assert format_reward(False) == -1.0


def test_ranking_metrics_by_hand():
    metrics = ranking_metrics([1, 2, 4, 6, None])
    assert metrics["hr@1"] == pytest.approx(1 / 5)
    assert metrics["hr@3"] == pytest.approx(2 / 5)
    assert metrics["hr@5"] == pytest.approx(3 / 5)
    assert metrics["hr_avg"] == pytest.approx((0.2 + 0.4 + 0.6) / 3)
    # ranks 1, 2, 4 are in the top 5: (1 + 1/log2(3) + 1/log2(5)) / 5 = 2.061606 / 5
    assert metrics["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(5)) / 5)
    assert metrics["ndcg@5"] == pytest.approx(0.4123213)
    # (1 + 1/2 + 1/4 + 1/6 + 0) / 5
    assert metrics["mrr"] == pytest.approx(0.3833333)
    # per-task hr_avg: 1, 2/3, 1/3, 0, 0 (mean 0.4, sample sd 0.4346); 1.96 * sd / sqrt(5)
    assert metrics["hr_avg_ci95"] == pytest.approx(1.96 * 0.4346135 / math.sqrt(5))
    assert set(metrics) == {"hr@1", "hr@3", "hr@5", "hr_avg", "hr_avg_ci95", "ndcg@5", "mrr"}


def test_ranking_metrics_all_misses_are_zero():
    assert all(value == 0.0 for value in ranking_metrics([None, None]).values())


def test_ranking_metrics_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        ranking_metrics([])
