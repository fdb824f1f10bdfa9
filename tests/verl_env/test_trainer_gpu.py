"""veRL's trainer runs one step on the export: ``python -m verl.trainer.main_ppo`` with the generated
settings, our agent loop rolling out through vLLM. Needs a CUDA GPU and a veRL environment with
vLLM (``RECRL_VERL_EXTRA=vllm bash launch/setup_verl_env.sh`` on the GPU machine)."""

import importlib.util
import re

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.integration, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="needs vLLM in veRL's environment: RECRL_VERL_EXTRA=vllm bash "
                                        "launch/setup_verl_env.sh")]


def test_verl_trainer_trains_one_step_on_the_export(export_dir, tmp_path, capfd):
    from launch.verl_export.launch import launch

    code = launch(export_dir, extra=["trainer.total_training_steps=1", "trainer.logger=[console]",
                                     "trainer.save_freq=-1", "actor_rollout_ref.rollout.gpu_memory_utilization=0.4",
                                     "actor_rollout_ref.rollout.agent.num_workers=1"])
    out, err = capfd.readouterr()
    assert code == 0, (out + err)[-5000:]
    step = re.search(r"step:1 .*", out)
    assert step, out[-5000:]
    assert re.search(r"critic/rewards/mean:\s*-?[0-9.]+", step.group(0)), step.group(0)
