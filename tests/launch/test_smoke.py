"""End to end through the CLI: data, teach, sft, train, eval on a synthetic catalog with the tiny model."""

import json
import math
import shutil

import pytest

from launch.cli import main
from rl.checkpoints import latest_checkpoint, read_trainer_state, step_dir

SMOKE = [
    "data.dataset=synthetic", "data.num_negatives=4",
    "env.tools=[sequential]", "env.max_turns=3", "teacher.tools=[sequential]",
    "teacher.num_recommend=2", "teacher.validation_tasks=30", "sequential.epochs=5", "sequential.hidden=16",
    "curriculum.enabled=true", "curriculum.samples=4", "curriculum.success_at=3", "curriculum.max_new_tokens=96",
    "model.name=tiny-random", "model.lora_r=0",
    "sft.lr=0.005", "sft.epochs=20", "sft.max_examples=24", "sft.batch_size=4",
    "grpo.steps=2", "grpo.tasks_per_step=2", "grpo.group_size=2", "grpo.max_new_tokens=96", "grpo.lr=0.0001",
    "eval.num_tasks=12", "eval.max_new_tokens=96", "eval.best_of_k=[1,2]", "eval.best_of_k_methods=[student_sft]",
]


@pytest.mark.integration
@pytest.mark.slow
def test_quickstart_slice_learns_the_format(tmp_path, ray_local, capsys):
    run_dir = tmp_path / "run"
    assert main(["quickstart", f"run_dir={run_dir}", *SMOKE]) == 0
    out = capsys.readouterr().out
    assert "student_grpo" in out and "[eval] wrote" in out

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sft_losses = [r["train/loss"] for r in rows if "train/loss" in r and "train/epoch" in r]
    steps_per_epoch = len(sft_losses) // 20  # 20 epochs over at most 24 teacher hits, 4 a step
    assert len(sft_losses) == 20 * steps_per_epoch and 2 <= steps_per_epoch <= 6
    first, last = sft_losses[:steps_per_epoch], sft_losses[-steps_per_epoch:]
    assert sum(last) / len(last) < 0.25 * sum(first) / len(first), sft_losses
    grpo_rows = [r for r in rows if "reward/total" in r]
    assert len(grpo_rows) == 2 and all("reward/format" in r and "reward/tiered_hit" in r for r in grpo_rows)
    assert grpo_rows[0]["train/kl"] < 1e-6  # the reference is the policy GRPO starts from
    assert any("eval/hr_avg" in r for r in rows)

    report = json.loads((run_dir / "eval.json").read_text())
    methods = report["methods"]
    assert set(methods) == {"random", "pop", "itemknn", "itemknn_recent", "userknn", "genre_year", "sasrec",
                            "teacher", "student_base", "student_sft", "student_grpo"}
    assert list(report["ranks"]) == list(methods) and all(len(r) == 12 for r in report["ranks"].values())
    assert (run_dir / "teacher" / "fusion.json").is_file() and list((run_dir / "signals" / "sasrec").iterdir())
    # STAR's RL data (a tiny student may solve no task sometimes: then every candidate is kept, with a warning).
    counts = json.loads((run_dir / "curriculum" / "counts.json").read_text())
    assert counts["candidates"] == sum(counts["successes"].values()) > 0 and counts["kept"] > 0
    # Best-of-k: more samples never score worse, and the curve is drawn.
    curve = report["best_of_k"]["student_sft"]
    assert curve["2"]["hr_avg"] >= curve["1"]["hr_avg"]
    assert (run_dir / "best_of_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["compare", str(run_dir), "student_grpo-student_sft", "student_grpo-teacher"]) == 0
    assert len(json.loads((run_dir / "compare.json").read_text())["comparisons"]) == 2
    assert report["protocol"]["num_tasks"] == 12 and report["protocol"]["num_candidates"] == 5
    for metrics in methods.values():
        assert set(metrics) >= {"hr@1", "hr@3", "hr@5", "hr_avg", "ndcg@5", "mrr", "format_rate", "turn_format_rate"}
    # A random-init 4-layer model learns the tags within a minute, not yet to copy ids reliably:
    # the well-formed-turn rate is where the trained policy must beat the untrained one.
    base = methods["student_base"]["turn_format_rate"]
    assert methods["student_sft"]["turn_format_rate"] > base
    assert methods["student_grpo"]["turn_format_rate"] > base
    assert list((run_dir / "adapter").glob("*.safetensors")), "final checkpoint missing"  # full FT here
    assert list((run_dir / "wandb").glob("offline-run-*")), "W&B offline run missing"

    # A user's own candidate sets, scored with the same checkpoints.
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text(json.dumps({"user_id": "1", "candidate_item_ids": ["1", "2", "3", "4", "5"],
                                      "target_item_id": "3"}) + "\n")
    assert main(["eval", "--tasks", str(tasks_file), f"run_dir={run_dir}", *SMOKE,
                 "eval.methods=[pop,teacher,student_sft]"]) == 0
    report = json.loads((run_dir / "eval.tasks.json").read_text())
    assert report["protocol"]["num_tasks"] == 1 and set(report["methods"]) == {"pop", "teacher", "student_sft"}
    assert json.loads((run_dir / "eval.json").read_text())["protocol"]["num_tasks"] == 12  # kept
    assert main(["eval", f"run_dir={run_dir}", *SMOKE, "eval.methods=[pop,oracle]"]) == 1
    assert "unknown eval method(s) ['oracle']" in capsys.readouterr().err

    # More GRPO steps continue from the checkpoint instead of starting over.
    assert main(["train", f"run_dir={run_dir}", *SMOKE, "grpo.steps=3"]) == 0
    out = capsys.readouterr().out
    assert "resuming after step 2 of 3" in out and "[train] 1 GRPO steps" in out
    assert read_trainer_state(latest_checkpoint(run_dir / "grpo"))["step"] == 3
    assert main(["train", f"run_dir={run_dir}", *SMOKE, "grpo.steps=3"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert not (run_dir / "adapter" / "optimizer.pt").exists()  # the final adapter is only weights

    # The same GRPO on a group of two DeepSpeed ZeRO-2 learners (gloo), from the SFT adapter, each
    # colocated with a rollout worker in one bundle of the run's placement group, freed at the end.
    shutil.rmtree(run_dir / "grpo")
    group = ["learner.strategy=deepspeed", "learner.num_learners=2", "learner.zero_stage=2", "placement.mode=colocated"]
    assert main(["train", f"run_dir={run_dir}", *SMOKE, *group]) == 0
    states = [g["state"] for g in ray_local.util.placement_group_table().values()]
    assert states and all(state == "REMOVED" for state in states), states
    checkpoint = latest_checkpoint(run_dir / "grpo")
    assert read_trainer_state(checkpoint)["step"] == 2
    assert {"model.safetensors", "optimizer.pt", "optimizer-rank1.pt"} <= {p.name for p in checkpoint.iterdir()}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    group_rows = [r for r in rows if "reward/total" in r][-2:]
    assert all(math.isfinite(r["train/loss"]) and r["train/lr"] > 0 for r in group_rows)

    # PPO: a critic actor beside the learner, checkpointed with it and resumed with it.
    shutil.rmtree(run_dir / "grpo")
    ppo = ["grpo.advantage_estimator=gae", "grpo.critic_lr=0.0001"]
    assert main(["train", f"run_dir={run_dir}", *SMOKE, *ppo]) == 0
    capsys.readouterr()
    assert main(["train", f"run_dir={run_dir}", *SMOKE, *ppo, "grpo.steps=3"]) == 0
    assert "resuming after step 2 of 3" in capsys.readouterr().out
    critic = step_dir(run_dir / "grpo" / "critic", 3)
    assert {"value_head.safetensors", "optimizer.pt", "trainer_state.json"} <= {p.name for p in critic.iterdir()}
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ppo_rows = [r for r in rows if "critic/value_loss" in r]
    assert len(ppo_rows) == 3 and all(math.isfinite(r["critic/value_loss"]) and r["train/lr"] > 0 for r in ppo_rows)

    # Two policies from the CLI: a planner plays the first turn, a caller the rest, each with its own
    # learner and optimizer from the same SFT adapter; both are saved, and evaluated together.
    shutil.rmtree(run_dir / "grpo")
    two = ["rollout.policies=[planner,caller]", "rollout.engine=hf"]
    assert main(["train", f"run_dir={run_dir}", *SMOKE, *two]) == 0
    for role in ("planner", "caller"):
        assert read_trainer_state(latest_checkpoint(run_dir / "grpo" / role))["step"] == 2
        assert list((run_dir / "adapter" / role).glob("*.safetensors"))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("planner/train/loss" in r for r in [r for r in rows if "reward/total" in r][-2:])
    assert main(["eval", f"run_dir={run_dir}", *SMOKE, *two, "eval.methods=[student_grpo]"]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert len(report["ranks"]["student_grpo"]) == 12 and report["methods"]["student_grpo"]["turn_format_rate"] > 0
