"""veRL's config schema accepts the generated trainer config."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from launch.verl_export.config import read_settings
from launch.verl_export.launch import SETTINGS_FILE


def test_hydra_composes_our_settings_into_ppo_trainer(verl_config, export_dir):
    settings = read_settings(export_dir / SETTINGS_FILE)
    assert verl_config.data.train_files == settings["data"]["train_files"]
    assert verl_config.actor_rollout_ref.rollout.n == settings["actor_rollout_ref"]["rollout"]["n"] > 1
    assert verl_config.actor_rollout_ref.actor.optim.lr == settings["actor_rollout_ref"]["actor"]["optim"]["lr"]
    assert verl_config.algorithm.adv_estimator == "grpo"
    assert verl_config.actor_rollout_ref.rollout.prompt_length == settings["data"]["max_prompt_length"]
    assert verl_config.reward.custom_reward_function.name == "compute_score"


def test_unknown_keys_are_rejected_by_verls_schema(export_dir):
    """The check above means something: a key ppo_trainer lacks does not compose."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    import verl
    from launch.verl_export.launch import trainer_command

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        with pytest.raises(ConfigCompositionException):
            compose(config_name="ppo_trainer", overrides=[*trainer_command(export_dir)[3:], "trainer.no_such_key=1"])


def test_verls_validation_and_dataclasses_accept_it(verl_config):
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    # validate_config imports vLLM to round a LoRA rank up to one vLLM serves; vLLM cannot run on
    # CPU, so that one check is made here against vLLM's ranks and the rest by veRL.
    lora_rank = verl_config.actor_rollout_ref.model.lora_rank
    assert 0 < lora_rank <= 512
    checked = OmegaConf.create(OmegaConf.to_container(verl_config))
    checked.actor_rollout_ref.model.lora_rank = 0
    assert need_reference_policy(verl_config) and not need_critic(verl_config)
    validate_config(checked, use_reference_policy=True, use_critic=False)

    actor = omega_conf_to_dataclass(verl_config.actor_rollout_ref.actor)
    actor.validate(verl_config.trainer.n_gpus_per_node, verl_config.data.train_batch_size,
                   verl_config.actor_rollout_ref.model)
    assert actor.use_kl_loss and actor.kl_loss_type == "k3" and actor.loss_agg_mode == "token-mean"
    rollout = omega_conf_to_dataclass(verl_config.actor_rollout_ref.rollout)
    assert rollout.agent.default_agent_loop == "recrl_episode" and rollout.multi_turn.enable
    model = omega_conf_to_dataclass(verl_config.actor_rollout_ref.model)
    assert model.hf_config.model_type == "llama" and model.lora_rank == 16
    algorithm = omega_conf_to_dataclass(verl_config.algorithm)
    assert algorithm.norm_adv_by_std_in_grpo and not algorithm.use_kl_in_reward
