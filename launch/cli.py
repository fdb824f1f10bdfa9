"""`recrl`: the command line. Each stage is a subcommand; `quickstart` runs them all; `compare` reads eval.json."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from typing import TYPE_CHECKING

from launch import report, slurm, submit, verl_export

if TYPE_CHECKING:
    from launch.config import RunConfig

DEFAULT_CONFIGS = {"quickstart": "quickstart.yaml"}
STAGES = ("data", "teach", "sft", "curate", "train", "eval", "quickstart")


def configs_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "configs"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recrl", description="Train LLM recommender agents with RL (SFT, GRPO) on CPU or GPU.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    helps = {
        "data": "build the training and held-out ranking tasks",
        "teach": "roll out the teacher and write the SFT dataset",
        "sft": "supervised fine-tuning of the student (LoRA)",
        "curate": "STAR's RL data: tasks the SFT student solves sometimes, binned and mixed",
        "train": "GRPO of the student from its SFT adapter",
        "eval": "score baselines, teacher and students on the same tasks -> eval.json",
        "quickstart": "data, teach, sft, curate, train and eval with configs/quickstart.yaml",
    }
    for name in STAGES:
        command = sub.add_parser(name, help=helps[name], description=helps[name])
        command.add_argument("--config", help="YAML file overriding the defaults")
        command.add_argument("overrides", nargs="*", help="key=value overrides, e.g. grpo.steps=5")
        if name == "eval":
            command.add_argument("--tasks", help="JSONL of tasks: user_id, candidate_item_ids, target_item_id")
    compare_help = "paired bootstrap intervals of metric differences between methods in eval.json"
    compare = sub.add_parser("compare", help=compare_help, description=compare_help + " -> compare.json",
                             epilog="example: recrl compare runs/quickstart student_grpo-student_sft")
    compare.add_argument("eval_json", metavar="RUN_DIR_OR_EVAL_JSON",
                         help="a run folder (its eval.json) or an eval*.json file")
    compare.add_argument("pairs", metavar="A-B", nargs="+", help="methods to compare, A minus B")
    compare.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    compare.add_argument("--seed", type=int, default=0, help="seed of the resampling (default 0)")
    compare.add_argument("--metric", action="append", dest="metrics", metavar="METRIC",
                         help="a metric to compare, e.g. hr@1; repeat for several (default: all)")
    compare.add_argument("--markdown", action="store_true",
                         help="also write compare.md: every method's metrics and the pairs, as Markdown tables")
    critic_help = "the learned critic reward: score episodes into records, then fit the regressor on them"
    critic = sub.add_parser("critic", help=critic_help, description=critic_help,
                            epilog="example: recrl critic label runs/quickstart/teacher/dataset --out records.jsonl"
                                   " && recrl critic train records.jsonl --out runs/critic")
    actions = critic.add_subparsers(dest="action", required=True, metavar="action")
    label = actions.add_parser("label", help="score episodes by their outcome, or by an LLM judge -> JSONL records")
    label.add_argument("trajectories", help="a trajectory dataset folder (e.g. RUN_DIR/teacher/dataset)")
    label.add_argument("--out", required=True, help="the JSON-lines file of {text, score} records to write")
    label.add_argument("--reward", default="", help="score by this reward component (default: the total reward)")
    label.add_argument("--judge", metavar="MODEL", help="score with this model as an LLM judge instead")
    label.add_argument("--device", default="cpu", help="where the judge runs (default cpu)")
    fit = actions.add_parser("train", help="fit the regressor on {text, score} records -> critic.safetensors")
    fit.add_argument("records", help="a JSON-lines file of {text, score} records")
    fit.add_argument("--out", required=True, help="the folder to save the critic in")
    fit.add_argument("--epochs", type=int, default=200, help="full-batch epochs (default 200)")
    fit.add_argument("--hidden", type=int, default=128, help="hidden units of the head (default 128)")
    fit.add_argument("--held-out", type=float, default=0.2, help="fraction of records held out (default 0.2)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the split and the head (default 0)")
    serve_help = "serve a model at an OpenAI-compatible endpoint (/v1/chat/completions, /v1/models)"
    server = sub.add_parser("serve", help=serve_help, description=serve_help,
                            epilog="example: recrl serve --model smollm2-135m-instruct --port 8000")
    server.add_argument("--model", default="smollm2-135m-instruct",
                        help="a model name or folder (default smollm2-135m-instruct)")
    server.add_argument("--engine", default="auto", choices=("auto", "hf", "vllm"),
                        help="auto: vLLM where installed, else HF (default auto)")
    server.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    server.add_argument("--port", type=int, default=8000, help="the port to listen on (default 8000)")
    server.add_argument("--max-batch", type=int, default=16, help="conversations per generate call (default 16)")
    server.add_argument("--kv-cache-gib", type=float, default=4.0,
                        help="vLLM's KV cache in GiB (default 4): the shared prefixes of the conversations in flight")
    submit.add_parser(sub)
    report.add_parser(sub)
    slurm.add_parser(sub)
    verl_export.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "critic":  # its own files: no config, no run
        try:
            return critic(args)
        except (FileNotFoundError, ValueError) as error:
            print(f"recrl critic {args.action}: error: {error}", file=sys.stderr)
            return 1
    if args.command == "serve":  # a server until interrupted: no config, no run
        from launch.serve import serve

        try:
            serve(args.model, engine=args.engine, host=args.host, port=args.port, max_batch=args.max_batch,
                  kv_cache_gib=args.kv_cache_gib)
        except (FileNotFoundError, ValueError) as error:
            print(f"recrl serve: error: {error}", file=sys.stderr)
            return 1
        return 0
    if args.command == "submit":  # talks to a cluster's job server: no config, no run here
        try:
            return submit.main(args)
        except (FileNotFoundError, ValueError) as error:
            print(f"recrl submit: error: {error}", file=sys.stderr)
            return 1
    if args.command == "export":  # its own config loading: a folder for another trainer
        return verl_export.main(args)
    if args.command == "slurm":  # writes (and submits) a batch script: the run happens in the job
        return slurm.main(args)
    if args.command == "report":  # reads a run folder only: no config, no run
        return report.main(args)
    if args.command == "compare":  # reads eval.json only: no config, no run
        try:
            return compare(args.eval_json, args.pairs, num_resamples=args.resamples, seed=args.seed,
                           metrics=args.metrics, markdown=args.markdown)
        except (FileNotFoundError, ValueError) as error:
            print(f"recrl compare: error: {error}", file=sys.stderr)
            return 1
    from launch.config import ConfigError, load_config  # after parsing: `recrl --help` stays instant

    config_path = args.config
    if config_path is None and args.command in DEFAULT_CONFIGS:
        config_path = configs_dir() / DEFAULT_CONFIGS[args.command]
    try:
        config = load_config(config_path, args.overrides)
    except ConfigError as error:
        print(f"recrl: config error: {error}", file=sys.stderr)
        return 2
    try:
        return run(args.command, config, tasks_file=getattr(args, "tasks", None))
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"recrl {args.command}: error: {error}", file=sys.stderr)
        return 1


def run(command: str, config: "RunConfig", *, tasks_file: str | None = None) -> int:
    """Runs one stage (or all of them) with a W&B run that spans the whole command."""
    from launch import evaluation, stages
    from launch.config import to_yaml
    from rl.evaluate import format_table
    from rl.tracking import Tracker

    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    stages.RunPaths(run_dir).config(command).write_text(to_yaml(config))
    started = time.perf_counter()
    step = 0

    def log(metrics: dict, local_step: int) -> None:
        tracker.log(metrics, step=offset + local_step)

    def log_with_checkpoint(metrics: dict, local_step: int) -> None:
        """GRPO's log with ``logging.checkpoint_artifacts=all``: the step's metrics, then the checkpoint
        each policy saved at that step (``train_grpo`` saves a step before logging it)."""
        from rl.checkpoints import step_dir
        from rl.grpo import policy_root

        log(metrics, local_step)
        roles, root = config.rollout.policies, stages.RunPaths(run_dir).grpo_checkpoints
        for role in roles:
            folder = step_dir(policy_root(root, role, len(roles)), local_step)
            suffix = f"-{role}" if len(roles) > 1 else ""
            if folder.is_dir():
                tracker.artifact(folder, name=f"{run_dir.name}-grpo-checkpoint{suffix}", type="model",
                                 aliases=[folder.name], metadata={"step": local_step})

    def reused(stage: str) -> bool:
        """In a quickstart, a stage that finished before with the same settings is not run again."""
        if stages.is_done(config, stage):
            print(f"[{stage}] reusing its output in {run_dir} (same settings; run `recrl {stage}` to redo it)")
            return True
        return False

    # WANDB_MODE in the environment beats the config; the process environment is never changed.
    if command == "train" and config.backend == "verl":  # veRL trains, in its own environment
        return verl_export.train_with_verl(config)
    mode = os.environ.get("WANDB_MODE") or config.logging.mode
    if command in stages.TURN_BUDGETS:
        for warning in stages.turn_budget_warnings(config, command):
            print(f"[{command}] warning: {warning}")
    with Tracker(project=config.logging.project, run_dir=run_dir, config=asdict(config),
                 name=f"{run_dir.name}-{command}", mode=mode) as tracker:
        if command in ("data", "quickstart"):
            _, train_tasks, eval_tasks = stages.stage_data(config)
            print(f"[data] {len(train_tasks)} training tasks, {len(eval_tasks)} held-out tasks")
        if command == "teach" or (command == "quickstart" and not reused("teach")):
            card = stages.stage_teach(config)
            figures = {name: value for name, value in card.items() if isinstance(value, (int, float))}
            tracker.summary({f"teacher/{name}": value for name, value in figures.items()})
            print(f"[teach] {json.dumps(figures)}")
        if command == "sft" or (command == "quickstart" and not reused("sft")):
            offset = step
            losses = stages.stage_sft(config, log=log)
            step += len(losses)
            print(f"[sft] {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        if command == "curate" or (command == "quickstart" and config.curriculum.enabled and not reused("curate")):
            counts = stages.stage_curate(config)
            tracker.summary({f"curriculum/{k}": v for k, v in counts.items() if not isinstance(v, dict)})
            print(f"[curate] {json.dumps(counts)}")
        if command in ("train", "quickstart"):
            offset = step
            artifacts = config.logging.checkpoint_artifacts
            history = stages.stage_train(config, log=log_with_checkpoint if artifacts == "all" else log)
            if artifacts != "none":
                tracker.artifact(stages.RunPaths(run_dir).final_adapter, name=f"{run_dir.name}-grpo-adapter",
                                 type="model", aliases=["final"], metadata={"step": config.grpo.steps})
            step += config.grpo.steps  # GRPO logs its own step numbers, also when it resumes
            if history:
                uniform = sum(h["rollout/uniform_group_frac"] for h in history) / len(history)
                print(f"[train] {len(history)} GRPO steps, reward {history[0]['reward/total']:.3f} -> "
                      f"{history[-1]['reward/total']:.3f}, uniform groups {uniform:.2f} on average")
            else:
                print(f"[train] nothing to do: {stages.RunPaths(run_dir).grpo_checkpoints} already holds "
                      f"grpo.steps={config.grpo.steps} from this SFT adapter (delete it to train again)")
        if command in ("eval", "quickstart"):
            eval_step = step + 1
            report = evaluation.stage_eval(
                config, tasks_file=tasks_file,
                log_samples=lambda method, rows: tracker.table(f"eval/samples_{method}", rows, step=eval_step))
            methods = report["methods"]
            final = next((m for m in ("student_grpo", "student_sft", "student_base") if m in methods), None)
            flat = {f"eval/{name}/{k}": v for name, metrics in methods.items() for k, v in metrics.items()}
            if final:
                flat.update({f"eval/{k}": v for k, v in methods[final].items()})
            tracker.log(flat, step=eval_step)
            print(format_table(methods))
            for method, reason in report["protocol"]["skipped"].items():
                print(f"(skipped {method}: {reason})")
            print(f"[eval] wrote {report['path']}")
    print(f"[{command}] done in {time.perf_counter() - started:.0f}s; outputs in {run_dir}")
    return 0


def compare(eval_json: str, pairs: list[str], *, num_resamples: int, seed: int,
            metrics: list[str] | None = None, markdown: bool = False) -> int:
    """Prints paired bootstrap comparisons of method pairs and writes them next to eval.json.

    ``eval.json`` gives ``compare.json`` (and ``compare.md`` with ``markdown``); ``eval.<tasks>.json``
    gives ``compare.<tasks>.json``.
    """
    from rl.compare import compare_report, format_comparison, markdown_report, parse_pair

    method_pairs = [parse_pair(pair) for pair in pairs]
    path = Path(eval_json)
    if path.is_dir():
        path = path / "eval.json"
    if not path.is_file():
        raise FileNotFoundError(f"no evaluation report at {path}; run `recrl eval` first, or pass a run "
                                f"folder or an eval*.json file.")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); re-run `recrl eval`.") from None
    result = compare_report(report, method_pairs, num_resamples=num_resamples,
                            seed=seed, metrics=metrics)
    result["eval_json"] = str(path)
    out_name = "compare.json" if path.name == "eval.json" else f"compare.{path.stem.removeprefix('eval.')}.json"
    out_path = path.with_name(out_name)
    out_path.write_text(json.dumps(result, indent=2))
    print(format_comparison(result))
    print(f"[compare] wrote {out_path}")
    if markdown:
        out_path.with_suffix(".md").write_text(markdown_report(report, result) + "\n")
        print(f"[compare] wrote {out_path.with_suffix('.md')}")
    return 0


def critic(args: argparse.Namespace) -> int:
    """``recrl critic label`` writes {text, score} records; ``recrl critic train`` fits the critic on them."""
    if args.action == "train":
        from rewards.critic_reward import read_records, train_critic

        texts, scores = read_records(args.records)
        metrics = train_critic(texts, scores, args.out, hidden=args.hidden, epochs=args.epochs,
                               held_out=args.held_out, seed=args.seed)
        print(f"[critic] {json.dumps(metrics)}")
        print(f"[critic] wrote {Path(args.out) / 'critic.safetensors'}")
        return 0
    from rewards.judge import dialogue_text, judge_records, outcome_records
    from teachers.pipeline import read_dataset

    trajectories = read_dataset(args.trajectories)
    if args.judge:
        from rollout.generate import chat_generator

        records, unscored = judge_records([dialogue_text(t) for t in trajectories],
                                          chat_generator(args.judge, device=args.device))
        print(f"[critic] the judge scored {len(records)} of {len(trajectories)} episodes ({unscored} replies held "
              "no score)")
    else:
        records = outcome_records(trajectories, reward=args.reward)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(record) + "\n" for record in records))
    print(f"[critic] wrote {len(records)} records to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
