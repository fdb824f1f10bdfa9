"""Config: typed defaults, YAML and key=value overrides, unknown keys named in the error."""

import os
from pathlib import Path

import pytest

from launch.cli import configs_dir, main
from launch.config import ConfigError, RunConfig, load_config

CONFIGS = sorted(Path(configs_dir()).rglob("*.yaml"))


def test_there_are_configs():
    assert any(p.name == "quickstart.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_yaml_loads_into_run_config(path):
    config = load_config(path)
    assert isinstance(config, RunConfig)


def test_overrides_win_and_keep_types():
    config = load_config(configs_dir() / "quickstart.yaml", ["grpo.steps=7", "env.tools=[item_cf]", "seed=3"])
    assert config.grpo.steps == 7 and config.env.tools == ["item_cf"] and config.seed == 3
    assert config.run_dir == "runs/quickstart"  # from the YAML
    assert config.sft.batch_size == RunConfig().sft.batch_size  # a default the YAML does not touch


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["grpo.stepz=3"], "unknown config key 'grpo.stepz'"),
        (["nonsense=1"], "unknown config key 'nonsense'"),
        (["grpo.steps=many"], "bad value for 'grpo.steps'"),
        (["grpo.steps"], "must look like key=value"),
        (["model.device=tpu"], "bad value for 'model.device': 'tpu'"),
        (["rollout.engine=sglang"], "unknown rollout.engine 'sglang'; use one of auto, hf, vllm"),
        (["grpo.micro_batch_tokens=-1"], "grpo.micro_batch_tokens >= 0"),
    ],
)
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_unknown_key_in_a_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("teacher:\n  tols: [item_cf]\n")
    with pytest.raises(ConfigError, match=rf"unknown config key 'teacher.tols' in {path}"):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_cli_reports_config_errors_without_a_traceback(capsys):
    assert main(["data", "grpo.stepz=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'grpo.stepz'" in err and "Traceback" not in err


def test_cli_reports_missing_inputs_clearly(tmp_path, capsys):
    assert main(["train", f"run_dir={tmp_path}", "data.dataset=synthetic", "logging.mode=disabled"]) == 1
    assert "run `recrl sft` first" in capsys.readouterr().err


def test_help_lists_the_stages(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("data", "teach", "sft", "train", "eval", "quickstart"):
        assert command in out


def test_tasks_are_reused_only_with_the_settings_they_were_built_with(tmp_path, capsys):
    run_dir = f"run_dir={tmp_path}"
    assert main(["data", run_dir, "data.dataset=synthetic", "logging.mode=disabled"]) == 0
    first = (tmp_path / "data" / "eval_tasks.jsonl").read_text()
    assert main(["data", run_dir, "data.dataset=synthetic", "logging.mode=disabled"]) == 0
    assert (tmp_path / "data" / "eval_tasks.jsonl").read_text() == first
    assert main(["data", run_dir, "data.dataset=synthetic", "data.num_negatives=9", "logging.mode=disabled"]) == 1
    assert "built with data settings" in capsys.readouterr().err


def test_the_cli_takes_the_wandb_mode_without_changing_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert main(["data", f"run_dir={tmp_path / 'a'}", "data.dataset=synthetic", "logging.mode=disabled"]) == 0
    assert "WANDB_MODE" not in os.environ  # a later command (or test) still gets its own config's mode
    assert not (tmp_path / "a" / "wandb").exists()  # disabled: no W&B files
    assert main(["data", f"run_dir={tmp_path / 'b'}", "data.dataset=synthetic", "logging.mode=offline"]) == 0
    assert list((tmp_path / "b" / "wandb").glob("offline-run-*"))
    assert "WANDB_MODE" not in os.environ
