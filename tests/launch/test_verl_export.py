"""``recrl export verl``: each exported piece here, then veRL's own code on them in veRL's environment."""

import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from launch import stages
from launch.config import load_config
from launch.verl_export import add_parser, export_verl, main
from launch.verl_export.bundle import load_bundle
from launch.verl_export.config import read_settings, to_overrides, verl_settings

REPO = Path(__file__).resolve().parents[2]
VERL_PYTHON = REPO / ".venv-verl" / "bin" / "python"
OVERRIDES = ["data.dataset=synthetic", "model.name=tiny-random", "eval.num_tasks=8", "grpo.steps=1",
             "logging.mode=disabled"]
COLUMNS = {"data_source", "prompt", "ability", "reward_model", "agent_name", "extra_info"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("verl")
    config = load_config(None, [f"run_dir={root / 'run'}", *OVERRIDES])
    return config, export_verl(config, root / "export")


def test_rows_hold_each_task_as_its_env_opens_it(run):
    config, exported = run
    catalog, train_tasks, eval_tasks = stages.stage_data(config)
    train = pq.read_table(exported.train_file).to_pylist()
    assert set(train[0]) == COLUMNS and len(train) == len(train_tasks) == exported.train_rows
    assert pq.read_metadata(exported.val_file).num_rows == exported.val_rows == 8
    spec = stages.env_spec(config, catalog, train_tasks, train_tasks=train_tasks)
    ours = spec.make()
    theirs = load_bundle(exported.bundle).make_env("train", count_tokens=ours.count_tokens)
    for row in (train[0], train[-1]):
        task = next(task for task in train_tasks if task.task_id == row["extra_info"]["task_id"])
        prompt, info = ours.reset(options={"task": task})
        assert row["prompt"] == [{"role": "system", "content": info["system_prompt"]},
                                 {"role": "user", "content": prompt}]
        assert row["data_source"] == "SequentialRec-v0" and row["agent_name"] == "recrl_episode"
        assert row["reward_model"] == {"style": "rule", "ground_truth": task.target_item_id}
        assert row["extra_info"]["candidate_item_ids"] == list(task.candidate_item_ids)
        assert row["extra_info"]["reward_weights"] == {"format": 1.0, "tiered_hit": 1.0}
        assert set(row["extra_info"]["tools_kwargs"]) == set(config.env.tools)
        # the bundle's env (what veRL's workers play) answers as our own env does
        theirs.reset(options={"task": task})
        action = '<tool_call>{"name": "user_cf", "arguments": {"user_id": "%s"}}</tool_call>' % task.user_id
        assert theirs.step(action)[0] == ours.step(action)[0] != ""


def test_no_held_out_target_reaches_the_validation_tools(run):
    config, exported = run
    val = load_bundle(exported.bundle).split("val")
    for task in val.tasks.values():
        assert task.target_item_id not in val.graph.user_items(task.user_id)
        assert task.target_item_id not in load_bundle(exported.bundle).toolbox("val", task.task_id).call(
            "user_history", {"user_id": task.user_id, "k": 20}).data


def test_tool_agent_and_trainer_configs(run):
    config, exported = run
    tools = OmegaConf.load(exported.tool_config).tools
    assert [tool.tool_schema.function.name for tool in tools] == list(config.env.tools)
    assert {tool.class_name for tool in tools} == {"launch.verl_export.tools.RecTool"}
    assert tools[0].config == {"type": "native", "bundle": str(exported.bundle)}
    loops = OmegaConf.load(exported.agent_loop_config)
    assert OmegaConf.to_container(loops) == [{"name": "recrl_episode", "bundle": str(exported.bundle),
                                              "_target_": "launch.verl_export.agent_loop.RecEpisodeAgentLoop",
                                              "max_new_tokens": config.grpo.max_new_tokens}]
    settings = read_settings(exported.settings)
    rollout = settings["actor_rollout_ref"]["rollout"]
    assert rollout["n"] == config.grpo.group_size and rollout["agent"]["agent_loop_config_path"] == str(
        exported.agent_loop_config)
    assert settings["data"]["train_batch_size"] == config.grpo.tasks_per_step
    assert settings["data"]["max_prompt_length"] % 64 == 0 and settings["trainer"]["logger"] == ["console"]
    assert settings["reward"]["custom_reward_function"]["path"].endswith("launch/verl_export/reward.py")
    script = (exported.folder / "train.sh").read_text()
    assert os.access(exported.folder / "train.sh", os.X_OK)
    assert script.count("\n    ") == len(to_overrides(settings)) + 1 and "verl.trainer.main_ppo" in script


@pytest.mark.parametrize("overrides, expected", [
    (["grpo.advantage_estimator=reinforce_pp"], {"algorithm.adv_estimator": "reinforce_plus_plus",
                                                "algorithm.use_kl_in_reward": True,
                                                "actor_rollout_ref.actor.use_kl_loss": False}),
    (["grpo.advantage_estimator=gae", "grpo.critic_lr=0.002"], {"algorithm.adv_estimator": "gae",
                                                                "critic.optim.lr": 0.002}),
    (["grpo.dynamic_sampling_rounds=2", "grpo.tis_cap=2.5"],
     {"algorithm.filter_groups.enable": True, "algorithm.filter_groups.max_num_gen_batches": 3,
      "algorithm.rollout_correction.rollout_is_threshold": 2.5}),
    (["grpo.advantage_estimator=gae", "grpo.micro_batch_tokens=4096"],
     {"actor_rollout_ref.actor.use_dynamic_bsz": True, "actor_rollout_ref.actor.ppo_max_token_len_per_gpu": 4096,
      "critic.use_dynamic_bsz": True, "critic.ppo_max_token_len_per_gpu": 4096}),
    (["model.lora_r=0", "grpo.loss_agg=seq-mean-token-sum"], {"actor_rollout_ref.model.lora_rank": 0,
                                                              "actor_rollout_ref.actor.loss_agg_mode":
                                                                  "seq-mean-token-sum"}),
])
def test_settings_follow_the_run_config(overrides, expected):
    settings = verl_settings(load_config(None, overrides), export_dir=Path("/x"), model_dir=Path("/m"),
                             adapter_dir=None, max_prompt_length=256, reward_file=Path("/r.py"))
    flat = dict(override.split("=", 1) for override in to_overrides(settings))
    for key, value in expected.items():
        assert OmegaConf.select(OmegaConf.create(settings), key) == value, key
        assert key in flat


def test_cli_refuses_what_verl_cannot_train(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="recrl")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["export", "verl", "--out", str(tmp_path / "x"), f"run_dir={tmp_path}", *OVERRIDES,
                              "grpo.credit=turn"])
    assert main(args) == 1
    assert "grpo.credit=turn (veRL assigns one advantage per episode: use episode)" in capsys.readouterr().err
    assert main(parser.parse_args(["export", "verl", "no_such.key=1"])) == 2
    assert not (tmp_path / "x").exists()


def test_launch_names_the_missing_verl_environment(run, monkeypatch):
    from launch.verl_export.launch import launch, trainer_command

    _, exported = run
    command = trainer_command(exported.folder, python="py", extra=["trainer.n_gpus_per_node=8"])
    assert command[:3] == ["py", "-m", "verl.trainer.main_ppo"] and command[-1] == "trainer.n_gpus_per_node=8"
    monkeypatch.setenv("RECRL_VERL_PYTHON", str(exported.folder / "no-python"))
    with pytest.raises(FileNotFoundError, match=r"build it with `make setup`"):
        launch(exported.folder)


def test_train_with_backend_verl_exports_then_starts_verls_trainer(tmp_path, monkeypatch):
    """``recrl train backend=verl``: the export lands in ``<run_dir>/verl`` and veRL's trainer is started
    on it (the start itself is stood in for: veRL trains only on GPUs, see tests/verl_env/test_trainer_gpu.py)."""
    from launch import cli
    from launch.verl_export import launch as verl_launch

    started = []
    monkeypatch.setattr(verl_launch, "launch", lambda folder, **kwargs: started.append((Path(folder), kwargs)) or 7)
    assert cli.main(["train", "backend=verl", f"run_dir={tmp_path}", *OVERRIDES]) == 7
    assert started and started[0][0] == tmp_path / "verl"
    assert (tmp_path / "verl" / "data" / "train.parquet").is_file() and (tmp_path / "verl" / "train.sh").is_file()


@pytest.mark.integration
@pytest.mark.slow
def test_verl_loads_trains_and_scores_the_export_with_its_own_code(run):
    """tests/verl_env in veRL's environment: its dataset class, tool loader, agent-loop worker, reward
    manager and config schema on this export."""
    if not VERL_PYTHON.is_file():
        message = f"no veRL environment at {VERL_PYTHON}: build it with `bash launch/setup_verl_env.sh` (make setup)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    _, exported = run
    result = subprocess.run([str(VERL_PYTHON), "-m", "pytest", "tests/verl_env", "-q", "-x"], cwd=REPO,
                            env={**os.environ, "RECRL_VERL_EXPORT": str(exported.folder)},
                            capture_output=True, text=True, timeout=900)
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout and " failed" not in result.stdout, report
