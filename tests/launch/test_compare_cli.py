"""`recrl compare`: paired bootstrap comparisons read from eval.json, without a config."""

import json

import pytest

from launch.cli import main

# 60 tasks. good: rank 1 on 54 of them, a miss on 6; bad: rank 4 on 20, a miss on 40; twin = good.
GOOD = [1] * 54 + [None] * 6
BAD = [4] * 20 + [None] * 40


def write_report(folder, name="eval.json", **extra):
    report = {"protocol": {"num_tasks": 60}, "methods": {}, "task_ids": [f"u{i}" for i in range(60)],
              "ranks": {"good": GOOD, "bad": BAD, "twin": list(GOOD)}, **extra}
    path = folder / name
    path.write_text(json.dumps(report))
    return path


def test_compare_prints_the_table_and_writes_compare_json(tmp_path, capsys):
    write_report(tmp_path)
    code = main(["compare", str(tmp_path), "good-bad", "good-twin", "--resamples", "2000", "--seed", "1",
                 "--metric", "hr@1", "--metric", "mrr"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["pair", "metric", "a", "b", "diff", "95%", "CI"]
    good_bad_hr1, good_bad_mrr, twin_hr1, twin_mrr = lines[2:6]
    assert good_bad_hr1.split()[:7] == ["good", "-", "bad", "hr@1", "0.900", "0.000", "+0.900"]
    assert good_bad_hr1.endswith("*") and good_bad_mrr.endswith("*")  # clearly better: excludes 0
    assert good_bad_mrr.split()[4:7] == ["0.900", "0.083", "+0.817"]  # bad: 20 x 1/4 over 60 tasks
    assert twin_hr1.split()[:7] == ["good", "-", "twin", "hr@1", "0.900", "0.900", "+0.000"]
    assert twin_hr1.endswith("[+0.000, +0.000]") and twin_mrr.endswith("[+0.000, +0.000]")  # no marker
    # good and bad rank the target differently where bad misses it; the twin never does.
    assert lines[6:8] == ["good - bad: the target's rank differs on 54 of 60 tasks",
                          "good - twin: the target's rank differs on 0 of 60 tasks"]
    assert "2000 resamples of 60 tasks" in lines[8]
    assert lines[9] == f"[compare] wrote {tmp_path / 'compare.json'}"

    saved = json.loads((tmp_path / "compare.json").read_text())
    assert (saved["num_tasks"], saved["num_resamples"], saved["seed"], saved["confidence"]) == (60, 2000, 1, 0.95)
    assert saved["eval_json"] == str(tmp_path / "eval.json") and saved["metrics"] == ["hr@1", "mrr"]
    good_bad, good_twin = saved["comparisons"]
    assert (good_bad["a"], good_bad["b"]) == ("good", "bad") and list(good_bad["metrics"]) == ["hr@1", "mrr"]
    hr1 = good_bad["metrics"]["hr@1"]
    assert (hr1["a"], hr1["b"]) == (0.9, 0.0) and hr1["diff"] == pytest.approx(0.9)
    # Differences are 1 on 54 tasks, 0 on 6: a normal interval is 0.9 +- 1.96 * sqrt(0.9 * 0.1 / 60).
    assert hr1["low"] == pytest.approx(0.9 - 0.076, abs=0.025) and hr1["high"] == pytest.approx(0.976, abs=0.025)
    assert hr1["low"] > 0
    assert good_twin["metrics"]["hr@1"] == {"a": 0.9, "b": 0.9, "diff": 0.0, "low": 0.0, "high": 0.0}
    assert (good_bad["tasks_ranked_differently"], good_twin["tasks_ranked_differently"]) == (54, 0)


def test_compare_takes_an_eval_json_file_and_all_metrics_by_default(tmp_path, capsys):
    path = write_report(tmp_path, name="eval.cold_start.json")
    assert main(["compare", str(path), "bad-good", "--resamples", "500"]) == 0
    out = capsys.readouterr().out
    assert "[-" in out and f"wrote {tmp_path / 'compare.cold_start.json'}" in out
    saved = json.loads((tmp_path / "compare.cold_start.json").read_text())
    assert list(saved["comparisons"][0]["metrics"]) == ["hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5", "mrr"]
    assert all(m["high"] < 0 for m in saved["comparisons"][0]["metrics"].values())  # bad is worse everywhere


@pytest.mark.parametrize("arguments, message", [
    (["good-nope"], "method 'nope' is not in the report; it has per-task ranks of: ['bad', 'good', 'twin']"),
    (["good_bad"], "pair 'good_bad' must be two method names joined by '-'"),
    (["good-bad", "--metric", "recall"], "unknown metric(s) ['recall']; available:"),
    (["good-bad", "--resamples", "0"], "num_resamples must be at least 1"),
])
def test_compare_errors_exit_1_with_a_message(tmp_path, capsys, arguments, message):
    write_report(tmp_path)
    assert main(["compare", str(tmp_path), *arguments]) == 1
    err = capsys.readouterr().err
    assert err.startswith("recrl compare: error: ") and message in err
    assert not (tmp_path / "compare.json").exists()


def test_compare_needs_a_report_with_per_task_ranks(tmp_path, capsys):
    assert main(["compare", str(tmp_path), "good-bad"]) == 1
    assert f"no evaluation report at {tmp_path / 'eval.json'}; run `recrl eval` first" in capsys.readouterr().err
    (tmp_path / "eval.json").write_text(json.dumps({"protocol": {}, "methods": {"good": {"hr@1": 0.9}}}))
    assert main(["compare", str(tmp_path), "good-bad"]) == 1
    assert "re-run `recrl eval`" in capsys.readouterr().err
    (tmp_path / "eval.json").write_text("{not json")
    assert main(["compare", str(tmp_path), "good-bad"]) == 1
    assert "is not valid JSON" in capsys.readouterr().err


def test_markdown_writes_the_method_table_and_the_pairs(tmp_path, capsys):
    methods = {"good": {"hr@1": 0.9, "hr@3": 0.9, "hr@5": 0.9, "hr_avg": 0.9, "hr_avg_ci95": 0.076, "ndcg@5": 0.9,
                        "mrr": 0.9, "format_rate": 1.0}, "bad": {"hr@1": 0.0, "hr_avg": 0.222}}
    write_report(tmp_path, methods=methods)
    assert main(["compare", str(tmp_path), "good-bad", "--resamples", "500", "--metric", "hr_avg", "--markdown"]) == 0
    assert f"[compare] wrote {tmp_path / 'compare.md'}" in capsys.readouterr().out
    lines = (tmp_path / "compare.md").read_text().splitlines()
    assert lines[0].startswith("| method (60 tasks) | HR@1 |")
    assert lines[2] == "| good | 0.900 | 0.900 | 0.900 | 0.900 ± 0.076 | 0.900 | 0.900 | 1.000 |"
    assert lines[3] == "| bad | 0.000 | – | – | 0.222 | – | – | – |"  # what it lacks shows as a dash
    pair = next(line for line in lines if line.startswith("| good − bad |"))
    assert pair.split(" | ")[1:5] == ["hr_avg", "0.900", "0.111", "+0.789"]  # from the ranks and pair.endswith("* |")
