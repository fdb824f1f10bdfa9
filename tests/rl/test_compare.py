"""Paired bootstrap comparisons, checked against values computed by hand."""

import math
import time

import numpy as np
import pytest

from rl.compare import (METRICS, compare_report, format_comparison, markdown_report, paired_bootstrap, parse_pair,
                        per_task_metrics)


def test_per_task_metrics_by_hand():
    metrics = per_task_metrics([1, 2, 4, None, 6])
    assert set(metrics) == set(METRICS)
    assert metrics["hr@1"].tolist() == [1, 0, 0, 0, 0]
    assert metrics["hr@3"].tolist() == [1, 1, 0, 0, 0]
    assert metrics["hr@5"].tolist() == [1, 1, 1, 0, 0]
    assert metrics["hr_avg"] == pytest.approx([1, 2 / 3, 1 / 3, 0, 0])
    assert metrics["ndcg@5"] == pytest.approx([1, 1 / math.log2(3), 1 / math.log2(5), 0, 0])
    assert metrics["mrr"] == pytest.approx([1, 1 / 2, 1 / 4, 0, 1 / 6])


@pytest.mark.parametrize("rank", [0, -1, 2.5, "3", True])
def test_per_task_metrics_rejects_ranks_that_are_not_positive_integers(rank):
    with pytest.raises(ValueError, match=r"task 1: rank .* is not a positive integer or null"):
        per_task_metrics([1, rank])


def test_two_tasks_give_the_hand_computed_percentile_interval():
    # Per-task hr@1 differences are (1, 0): a resample's mean is 0, 0.5 or 1 with odds 1:2:1, so
    # the 2.5% and 97.5% percentiles of 10k resamples are 0 and 1.
    result = paired_bootstrap([1, None], [None, None], metrics=["hr@1"])
    assert result == {"hr@1": {"a": 0.5, "b": 0.0, "diff": 0.5, "low": 0.0, "high": 1.0}}
    narrow = paired_bootstrap([1, None], [None, None], metrics=["hr@1"], confidence=0.4)
    assert narrow["hr@1"]["low"] == narrow["hr@1"]["high"] == 0.5  # the middle 40% is all 0.5


def test_a_clearly_better_method_excludes_zero_with_the_normal_width():
    a_ranks = [1] * 50
    b_ranks = [1] * 10 + [None] * 40
    result = paired_bootstrap(a_ranks, b_ranks, num_resamples=10_000, seed=3)["hr@1"]
    assert (result["a"], result["b"], result["diff"]) == (1.0, 0.2, 0.8)
    standard_error = math.sqrt(0.8 * 0.2 / 50)  # differences are 1 on 40 tasks, 0 on 10
    assert result["low"] == pytest.approx(0.8 - 1.96 * standard_error, abs=0.02)
    assert result["high"] == pytest.approx(0.8 + 1.96 * standard_error, abs=0.02)
    assert result["low"] > 0


def test_identical_methods_give_a_zero_width_interval_because_resamples_are_paired():
    rng = np.random.default_rng(0)
    ranks = [None if r > 10 else int(r) for r in rng.integers(1, 15, size=200)]
    result = paired_bootstrap(ranks, list(ranks), num_resamples=500)
    for metric in METRICS:
        assert result[metric]["diff"] == result[metric]["low"] == result[metric]["high"] == 0.0
        assert result[metric]["a"] == result[metric]["b"] > 0


def test_the_seed_fixes_the_interval_and_confidence_widens_it():
    rng = np.random.default_rng(1)
    a_ranks = [int(r) for r in rng.integers(1, 8, size=100)]
    b_ranks = [int(r) for r in rng.integers(1, 8, size=100)]
    first = paired_bootstrap(a_ranks, b_ranks, num_resamples=2000, seed=7)
    assert first == paired_bootstrap(a_ranks, b_ranks, num_resamples=2000, seed=7)
    assert first != paired_bootstrap(a_ranks, b_ranks, num_resamples=2000, seed=8)
    wide = paired_bootstrap(a_ranks, b_ranks, num_resamples=2000, seed=7, confidence=0.99)
    for metric in METRICS:
        assert wide[metric]["low"] <= first[metric]["low"] <= first[metric]["diff"]
        assert first[metric]["diff"] <= first[metric]["high"] <= wide[metric]["high"]


def test_ten_thousand_resamples_of_a_full_evaluation_are_fast():
    rng = np.random.default_rng(2)
    a_ranks = [int(r) for r in rng.integers(1, 21, size=943)]
    b_ranks = [None if r > 20 else int(r) for r in rng.integers(1, 25, size=943)]
    started = time.perf_counter()
    result = paired_bootstrap(a_ranks, b_ranks, num_resamples=10_000)
    assert time.perf_counter() - started < 5.0
    for stats in result.values():
        assert stats["low"] < stats["diff"] < stats["high"]


@pytest.mark.parametrize("kwargs, message", [
    ({"a_ranks": [1, 2], "b_ranks": [1]}, "same tasks; got 2 and 1 ranks"),
    ({"a_ranks": [], "b_ranks": []}, "at least one task"),
    ({"metrics": ["hr@10"]}, r"unknown metric\(s\) \['hr@10'\]"),
    ({"num_resamples": 0}, "num_resamples must be at least 1"),
    ({"confidence": 95}, r"confidence must lie in \(0, 1\)"),
])
def test_paired_bootstrap_errors_name_the_problem(kwargs, message):
    arguments = {"a_ranks": [1, 2], "b_ranks": [2, 1], **kwargs}
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(**arguments)


def test_parse_pair():
    assert parse_pair("student_grpo-teacher") == ("student_grpo", "teacher")
    for text in ("student_grpo", "a-b-c", "-b", "a-", "student_sft:teacher"):
        with pytest.raises(ValueError, match="two method names joined by '-'"):
            parse_pair(text)
    with pytest.raises(ValueError, match="with itself"):
        parse_pair("pop-pop")


REPORT = {"task_ids": ["u1", "u2", "u3", "u4"],
          "ranks": {"pop": [2, None, 5, 1], "teacher": [1, 1, 3, 1], "student_sft": [1, 3, 5, 2]}}


def test_compare_report_compares_each_pair_on_the_same_tasks():
    result = compare_report(REPORT, [("teacher", "pop"), ("student_sft", "pop")], num_resamples=200,
                            seed=4, metrics=["hr@1", "mrr"])
    assert {k: result[k] for k in ("num_tasks", "num_resamples", "seed", "confidence", "metrics")} == {
        "num_tasks": 4, "num_resamples": 200, "seed": 4, "confidence": 0.95, "metrics": ["hr@1", "mrr"]}
    teacher, student = result["comparisons"]
    assert (teacher["a"], teacher["b"], student["a"]) == ("teacher", "pop", "student_sft")
    assert list(teacher["metrics"]) == ["hr@1", "mrr"]
    assert teacher["metrics"]["hr@1"]["diff"] == pytest.approx(3 / 4 - 1 / 4)
    assert student["metrics"]["mrr"]["a"] == pytest.approx((1 + 1 / 3 + 1 / 5 + 1 / 2) / 4)
    assert student["metrics"]["mrr"]["b"] == pytest.approx((1 / 2 + 0 + 1 / 5 + 1) / 4)


def test_compare_report_errors_say_what_to_do():
    with pytest.raises(ValueError, match=r"no per-task ranks .* re-run `recrl eval`"):
        compare_report({"methods": {"pop": {"hr@1": 0.1}}}, [("pop", "teacher")])
    with pytest.raises(ValueError, match=r"method 'student_grpo' is not in the report; it has per-task "
                                         r"ranks of: \['pop', 'student_sft', 'teacher'\]"):
        compare_report(REPORT, [("student_grpo", "pop")])
    with pytest.raises(ValueError, match=r"'pop' has 3 ranks but the report has 4 task_ids"):
        compare_report({**REPORT, "ranks": {**REPORT["ranks"], "pop": [1, 2, 3]}}, [("teacher", "pop")])
    with pytest.raises(ValueError, match="at least one pair"):
        compare_report(REPORT, [])


RATINGS = {"task_ids": ["u1", "u2", "u3", "u4"], "targets": [5.0, 3.0, 4.0, 1.0],
           "protocol": {"task": "rating", "invalid_scored_as": 3.0},
           "predictions": {"bias": [4.0, 3.5, 4.0, 2.0], "student": [5.0, None, 2.0, 1.0]}}


def test_rating_reports_are_compared_by_rmse_and_mae_with_invalid_answers_scored_as_the_fallback():
    result = compare_report(RATINGS, [("student", "bias")], num_resamples=500)
    assert result["metrics"] == ["rmse", "mae"] and result["comparisons"][0]["tasks_rated_differently"] == 4
    rmse, mae = result["comparisons"][0]["metrics"]["rmse"], result["comparisons"][0]["metrics"]["mae"]
    # errors: student 0, 0 (None -> 3.0), -2, 0; bias -1, 0.5, 0, 1
    assert rmse["a"] == pytest.approx((4 / 4) ** 0.5) and rmse["b"] == pytest.approx((2.25 / 4) ** 0.5)
    assert mae["a"] == pytest.approx(0.5) and mae["b"] == pytest.approx(0.625) and mae["diff"] == pytest.approx(-0.125)
    assert rmse["low"] < rmse["diff"] < rmse["high"] and mae["low"] < 0 < mae["high"]
    same = compare_report({**RATINGS, "predictions": {"x": [1.0] * 4, "y": [1.0] * 4}}, [("x", "y")])
    rmse = (29 / 4) ** 0.5  # errors -4, -2, -3, 0
    assert same["comparisons"][0]["metrics"]["rmse"] == pytest.approx({"a": rmse, "b": rmse, "diff": 0, "low": 0, "high": 0})
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['hr@1'\]; available: \['rmse', 'mae'\]"):
        compare_report(RATINGS, [("student", "bias")], metrics=["hr@1"])
    with pytest.raises(ValueError, match=r"no per-task predictions .* re-run `recrl eval`"):
        compare_report({k: v for k, v in RATINGS.items() if k != "targets"}, [("student", "bias")])
    assert "| student | 1.000 | 0.500 | – | – |" in markdown_report({**RATINGS, "methods": {
        "student": {"rmse": 1.0, "mae": 0.5}}}, result)


def test_conversational_reports_show_success_turns_to_accept_and_recall_with_undefined_cells_as_dashes():
    report = {"task_ids": ["u1", "u2"], "ranks": {"teacher": [None, None], "crs_random": [1, None]}, "methods": {
        "teacher": {"crs/success": 0.0, "crs/turns_to_accept": float("nan"), "crs/recall@1": 0.0, "format_rate": 1.0},
        "crs_random": {"crs/success": 0.5, "crs/turns_to_accept": 3.0, "crs/recall@1": 0.5, "format_rate": 1.0}}}
    table = markdown_report(report, compare_report(report, [("teacher", "crs_random")], metrics=["hr@1"],
                                                   num_resamples=100)).splitlines()
    assert table[0] == "| method (2 tasks) | success | turns to accept | recall@1 | recall@3 | recall@5 | format |"
    assert table[2] == "| teacher | 0.000 | – | 0.000 | – | – | 1.000 |"
    assert table[3] == "| crs_random | 0.500 | 3.000 | 0.500 | – | – | 1.000 |"
    assert table[7].startswith("| teacher − crs_random | hr@1 | 0.000 | 0.500 | -0.500 |")


def test_format_comparison_marks_intervals_that_exclude_zero():
    stats = {"a": 0.6, "b": 0.4, "diff": 0.2}
    result = {"num_tasks": 943, "num_resamples": 10_000, "confidence": 0.9, "comparisons": [
        {"a": "student_grpo", "b": "student_sft", "metrics": {
            "hr@1": {**stats, "low": 0.05, "high": 0.35},
            "mrr": {**stats, "low": -0.01, "high": 0.41}}},
        {"a": "pop", "b": "teacher", "metrics": {"hr@1": {**stats, "diff": -0.2, "low": -0.3, "high": -0.1}}}]}
    lines = format_comparison(result).splitlines()
    assert lines[0].split() == ["pair", "metric", "a", "b", "diff", "90%", "CI"]
    assert lines[2].split() == ["student_grpo", "-", "student_sft", "hr@1", "0.600", "0.400", "+0.200",
                                "[+0.050,", "+0.350]", "*"]
    assert lines[3].endswith("[-0.010, +0.410]")  # includes 0: no marker
    assert lines[4].split()[:4] == ["pop", "-", "teacher", "hr@1"] and lines[4].endswith("[-0.300, -0.100] *")
    assert len(lines[0]) == len(lines[1]) == len(lines[3])  # fixed-width columns
    assert "10000 resamples of 943 tasks" in lines[-1]
