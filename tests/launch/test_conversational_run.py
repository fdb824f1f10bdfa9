"""The conversational recipe end to end through the CLI, on a synthetic catalog with the tiny model:
the rule-based policy teaches, SFT, curation by accepted conversations, GRPO with turn credit on
per-turn rewards, evaluation."""

import json

import pytest

from launch.cli import main

TINY = ["data.dataset=synthetic", "data.num_negatives=4", "model.name=tiny-random", "model.lora_r=0",
        "rollout.num_workers=0", "teacher.num_workers=0", "env.max_turns=4", "sft.epochs=3", "sft.lr=0.003",
        "sft.max_examples=24", "sft.batch_size=4", "grpo.steps=2", "grpo.tasks_per_step=2", "grpo.group_size=2",
        "grpo.max_new_tokens=40", "eval.num_tasks=8", "eval.max_new_tokens=40", "curriculum.candidate_tasks=6",
        "curriculum.samples=2", "curriculum.max_new_tokens=40"]


@pytest.mark.slow
@pytest.mark.integration
def test_the_conversational_recipe_teaches_trains_and_evaluates(tmp_path, capsys):
    run_dir = tmp_path / "crs"
    assert main(["quickstart", "--config", "configs/crs_grpo.yaml", f"run_dir={run_dir}", *TINY]) == 0
    out = capsys.readouterr().out
    assert "crs/success" in out and "[eval] wrote" in out
    card = json.loads((run_dir / "teacher" / "card.json").read_text())
    assert card["kept"] > 0 and card["success_rate"] > 0.3  # the rule-based policy converses well
    counts = json.loads((run_dir / "curriculum" / "counts.json").read_text())
    assert counts["candidates"] == 6 and sum(counts["successes"].values()) == 6
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    grpo = [r for r in rows if "reward/total" in r]
    assert len(grpo) == 2 and all("reward/success" in r and "reward/env" in r for r in grpo)
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["protocol"]["task"] == "dialogue"
    assert set(report["methods"]) == {"crs_rules", "crs_random", "student_sft", "student_grpo"}
    rules, random = report["methods"]["crs_rules"], report["methods"]["crs_random"]
    assert rules["crs/success"] > random["crs/success"]
    assert main(["compare", str(run_dir), "crs_rules-crs_random", "--metric", "hr@1"]) == 0
