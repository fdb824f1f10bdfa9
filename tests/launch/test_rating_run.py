"""The rating recipe end to end through the CLI, on a synthetic catalog with the tiny model: the bias
rater teaches, SFT, curation by ratings within half a star, GRPO on RP v2, evaluation by RMSE."""

import json

import pytest

from launch.cli import main

TINY = ["data.dataset=synthetic", "model.name=tiny-random", "model.lora_r=0", "rollout.num_workers=0",
        "teacher.num_workers=0", "sft.epochs=2", "sft.lr=0.003", "sft.max_examples=24", "sft.batch_size=4",
        "grpo.steps=2", "grpo.tasks_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=40", "eval.num_tasks=8",
        "eval.max_new_tokens=40", "curriculum.candidate_tasks=6", "curriculum.samples=2",
        "curriculum.max_new_tokens=40"]


@pytest.mark.slow
@pytest.mark.integration
def test_the_rating_recipe_teaches_trains_and_evaluates(tmp_path, capsys):
    run_dir = tmp_path / "rating"
    assert main(["quickstart", "--config", "configs/rating.yaml", f"run_dir={run_dir}", *TINY]) == 0
    out = capsys.readouterr().out
    assert "[eval] wrote" in out
    card = json.loads((run_dir / "teacher" / "card.json").read_text())
    assert card["format_valid_rate"] == 1.0 and 0 < card["kept"] < card["episodes"]
    assert card["kept"] == round(card["success_rate"] * card["episodes"])  # kept: answers within half a star
    counts = json.loads((run_dir / "curriculum" / "counts.json").read_text())
    assert counts["candidates"] == 6 and sum(counts["successes"].values()) == 6
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    grpo = [r for r in rows if "reward/total" in r]
    assert len(grpo) == 2 and all("reward/rp_v2" in r and "reward/format" in r for r in grpo)
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["protocol"]["task"] == "rating"
    assert set(report["methods"]) == {"global_mean", "user_bias", "item_bias", "bias", "teacher",
                                      "student_sft", "student_grpo"}
    teacher, bias = report["methods"]["teacher"], report["methods"]["bias"]
    assert teacher["valid_rate"] == 1.0 and abs(teacher["rmse"] - bias["rmse"]) < 0.05  # the same predictor, to 0.1
    assert report["predictions"]["teacher"] == [round(p, 1) for p in report["predictions"]["bias"]]
    assert main(["compare", str(run_dir), "student_sft-bias", "--markdown"]) == 0
    compared = json.loads((run_dir / "compare.json").read_text())["comparisons"][0]["metrics"]
    assert compared["rmse"]["a"] == pytest.approx(report["methods"]["student_sft"]["rmse"], abs=1e-4)
    assert compared["mae"]["b"] == pytest.approx(report["methods"]["bias"]["mae"], abs=1e-4)
    assert "| bias |" in (run_dir / "compare.md").read_text()
