"""Rank-GRPO and turn-level credit against plain GRPO on ml-100k: same SFT student, tasks and seeds.

For each credit (``episode``: plain GRPO, ``rank``, ``turn``), GRPO runs ``--steps`` steps from a
finished run's SFT adapter, in a copy of its folder (its data, signals and STAR curriculum reused,
so every arm trains on the same tasks with the same seeds); then each arm's student is scored greedily
on the same ``--tasks`` held-out users. Reported: each arm's training reward and hit rates on the
users, and the paired bootstrap interval of each arm minus plain GRPO (``rl.compare``).

    python bench/bench_credit.py --run-dir runs/quickstart --steps 8 --tasks 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from launch.cli import main as recrl  # noqa: E402
from launch.paths import RunPaths  # noqa: E402
from rl.compare import paired_bootstrap  # noqa: E402

CREDITS = ("episode", "rank", "turn")
KEPT = ("data", "signals", "teacher", "sft", "curriculum")
"""What each arm reuses from the run folder (GRPO, evaluation and logs start afresh)."""


def run_arm(run_dir: Path, work: Path, credit: str, args) -> dict:
    """GRPO with ``credit`` in a copy of ``run_dir``, then its student on the held-out sample. An arm
    folder left by an interrupted bench is reused: ``recrl train`` resumes from its last checkpoint."""
    arm = work / credit
    if not arm.is_dir():
        arm.mkdir(parents=True)
        for name in KEPT:
            if (run_dir / name).exists():
                shutil.copytree(run_dir / name, arm / name)
    overrides = [f"run_dir={arm}", f"grpo.credit={credit}", f"grpo.steps={args.steps}",
                 "eval.methods=[student_grpo]", f"eval.num_tasks={args.tasks}", "eval.best_of_k=[]"]
    config = str(RunPaths(run_dir).saved_config("quickstart", "curate"))
    began = time.perf_counter()
    if recrl(["train", "--config", config, *overrides]) != 0:
        raise RuntimeError(f"training with credit={credit} failed")
    trained = time.perf_counter() - began
    if recrl(["eval", "--config", config, *overrides]) != 0:
        raise RuntimeError(f"evaluating credit={credit} failed")
    rows = [json.loads(line) for line in (arm / "metrics.jsonl").read_text().splitlines()]
    rewards = [row["reward/total"] for row in rows if "reward/total" in row]
    report = json.loads((arm / "eval.json").read_text())
    return {"rewards": rewards, "ranks": report["ranks"]["student_grpo"], "task_ids": report["task_ids"],
            "metrics": report["methods"]["student_grpo"], "train_seconds": trained}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/quickstart", help="a finished run (SFT adapter and curriculum)")
    parser.add_argument("--credits", nargs="+", choices=CREDITS, default=list(CREDITS))
    parser.add_argument("--steps", type=int, default=8, help="GRPO steps per arm")
    parser.add_argument("--tasks", type=int, default=200, help="held-out users each student is scored on (0: all)")
    parser.add_argument("--work", help="a folder for the arms' runs, kept so that an interrupted bench resumes "
                                       "(default: a temporary folder, removed at the end)")
    parser.add_argument("--out", help="also write every arm's rewards, ranks and metrics to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    run_dir = Path(args.run_dir)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-credit-") as scratch:
        for credit in args.credits:
            results[credit] = run_arm(run_dir, Path(args.work or scratch), credit, args)
            print(f"[{credit}] {results[credit]['metrics']}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    base = results[args.credits[0]]
    print(f"\nGRPO from {run_dir}'s SFT adapter, {args.steps} steps each; {len(base['ranks'])} held-out users\n")
    print("| credit | reward, first step | reward, mean of last 3 | HR@1 | hr_avg | NDCG@5 | format | train (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for credit, result in results.items():
        metrics, rewards = result["metrics"], result["rewards"]
        print(f"| {credit} | {rewards[0]:.3f} | {sum(rewards[-3:]) / len(rewards[-3:]):.3f} | {metrics['hr@1']:.3f} | "
              f"{metrics['hr_avg']:.3f} | {metrics['ndcg@5']:.3f} | {metrics['format_rate']:.3f} | "
              f"{result['train_seconds']:.0f} |")
    compared = ("hr_avg", "hr@1", "ndcg@5")
    print(f"\n| arm minus {args.credits[0]} | " + " | ".join(f"{metric} diff [95% CI]" for metric in compared) +
          " | users ranked differently |\n|---|" + "---|" * (len(compared) + 1))
    for credit, result in list(results.items())[1:]:
        assert result["task_ids"] == base["task_ids"]
        pair = paired_bootstrap(result["ranks"], base["ranks"], metrics=compared)
        differ = sum(a != b for a, b in zip(result["ranks"], base["ranks"]))
        print(f"| {credit} | " + " | ".join(f"{pair[metric]['diff']:+.3f} [{pair[metric]['low']:+.3f}, "
                                           f"{pair[metric]['high']:+.3f}]" for metric in compared) + f" | {differ} |")


if __name__ == "__main__":
    main()
