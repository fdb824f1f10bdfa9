"""Best-of-k curves against hand-computed values and brute-force enumeration, and their plot."""

import json
import math
import struct
from itertools import combinations

import numpy as np
import pytest

from rewards.ranking import hit_at_k, mrr, ndcg_at_k
from rl.best_of_k import best_of_k_metrics, expected_best_of_k, plot_best_of_k
from rl.compare import METRICS


def test_one_hit_in_two_samples():
    curve = best_of_k_metrics([[1, None]], ks=(1, 2))
    assert curve[1] == {"hr@1": 0.5, "hr@3": 0.5, "hr@5": 0.5, "hr_avg": 0.5, "ndcg@5": 0.5, "mrr": 0.5}
    assert curve[2] == {"hr@1": 1.0, "hr@3": 1.0, "hr@5": 1.0, "hr_avg": 1.0, "ndcg@5": 1.0, "mrr": 1.0}


def test_four_samples_by_hand():
    curve = best_of_k_metrics([[1, 4, None, 2]], ks=(1, 2, 4))
    # hit@j: 1 - C(n - c, k) / C(n, k) with n = 4 and c = 1, 2, 3 samples in the top 1, 3, 5.
    assert curve[1]["hr@1"] == pytest.approx(1 / 4)
    assert curve[2]["hr@1"] == pytest.approx(1 - 3 / 6)
    assert curve[1]["hr@3"] == pytest.approx(2 / 4)
    assert curve[2]["hr@3"] == pytest.approx(1 - 1 / 6)
    assert curve[1]["hr@5"] == pytest.approx(3 / 4)
    assert curve[2]["hr@5"] == pytest.approx(1.0)
    assert curve[2]["hr_avg"] == pytest.approx((1 / 2 + 5 / 6 + 1) / 3)
    # The best-first values (1, 1/2, 1/4, 0) are the best of 2 with odds 3, 2, 1, 0 out of C(4, 2) = 6.
    assert curve[1]["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 4) / 4)
    assert curve[2]["mrr"] == pytest.approx((3 * 1 + 2 * 1 / 2 + 1 * 1 / 4) / 6)
    assert curve[2]["ndcg@5"] == pytest.approx((3 + 2 / math.log2(3) + 1 / math.log2(5)) / 6)
    assert all(curve[4][metric] == pytest.approx(1.0) for metric in METRICS)  # all four: rank 1 is in


def test_tasks_are_averaged_and_may_have_different_sample_counts():
    curve = best_of_k_metrics([[None, None, 1], [2, 2]], ks=(1, 2))
    assert curve[1]["hr@1"] == pytest.approx((1 / 3 + 0) / 2)
    assert curve[2]["hr@1"] == pytest.approx((2 / 3 + 0) / 2)
    assert curve[2]["mrr"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def brute_force(task_ranks, k, metric):
    """The mean over every k-subset of the samples of the metric of its best rank."""
    score = {"hr@1": lambda r: hit_at_k(r, 1), "hr@3": lambda r: hit_at_k(r, 3), "hr@5": lambda r: hit_at_k(r, 5),
             "hr_avg": lambda r: (hit_at_k(r, 1) + hit_at_k(r, 3) + hit_at_k(r, 5)) / 3,
             "ndcg@5": lambda r: ndcg_at_k(r, 5), "mrr": mrr}[metric]
    best = [min(subset, key=lambda r: math.inf if r is None else r) for subset in combinations(task_ranks, k)]
    return sum(score(r) for r in best) / len(best)


def test_matches_brute_force_over_every_subset():
    rng = np.random.default_rng(0)
    samples = [[None if r > 9 else int(r) for r in rng.integers(1, 13, size=8)] for _ in range(5)]
    curve = best_of_k_metrics(samples)
    for k in (1, 2, 4, 8):
        for metric in METRICS:
            expected = np.mean([brute_force(task, k, metric) for task in samples])
            assert curve[k][metric] == pytest.approx(expected), (k, metric)
    for metric in METRICS:  # more draws never hurt
        assert curve[1][metric] <= curve[2][metric] <= curve[4][metric] <= curve[8][metric]


def test_expected_best_of_k_is_pass_at_k_on_binary_values():
    values = [1.0] * 3 + [0.0] * 7
    for k in (1, 2, 5, 8):
        assert expected_best_of_k(values, k) == pytest.approx(1 - math.comb(7, k) / math.comb(10, k))


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="task 1 has 2 sampled episodes but best-of-4 needs at least 4"):
        best_of_k_metrics([[1, 2, 3, 4], [1, 2]], ks=(1, 4))
    with pytest.raises(ValueError, match="at least one task"):
        best_of_k_metrics([])
    with pytest.raises(ValueError, match="ks must be positive"):
        best_of_k_metrics([[1]], ks=(0, 1))
    with pytest.raises(ValueError, match="best-of-3 needs at least 3 samples per task; got 2"):
        expected_best_of_k([1.0, 0.0], 3)


def png_size(path):
    """Width and height from a PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_png_with_one_line_per_method(tmp_path):
    curves = {
        "student_sft": best_of_k_metrics([[1, None, 3, 6, None, 2, None, 9]] * 3),
        "student_grpo": best_of_k_metrics([[1, 1, 2, None, 1, 4, 1, 2]] * 3),
    }
    as_read_from_json = {"teacher": json.loads(json.dumps(curves["student_sft"]))}  # "1", "2", ... keys
    path = plot_best_of_k({**curves, **as_read_from_json}, tmp_path / "plots" / "best_of_k.png", metric="hr@1")
    assert path == tmp_path / "plots" / "best_of_k.png"
    assert png_size(path) == (720, 480)  # 6 x 4 inches at 120 dpi
    assert path.stat().st_size > 10_000  # axes, three lines and a legend, not a blank canvas


def test_plot_errors(tmp_path):
    with pytest.raises(ValueError, match="no best-of-k curves"):
        plot_best_of_k({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"curve of 'pop' has no 'recall' at k=1; available metrics: \['hr@1'\]"):
        plot_best_of_k({"pop": {1: {"hr@1": 0.1}}}, tmp_path / "x.png", metric="recall")
    assert not (tmp_path / "x.png").exists()
