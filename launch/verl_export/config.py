"""veRL's trainer config generated from ours: the settings of ``verl/trainer/config/ppo_trainer.yaml``
that a run config decides, as nested values and as the ``key=value`` overrides veRL's Hydra entry
point (``python -m verl.trainer.main_ppo``) takes. Everything else keeps veRL's defaults.

Our GRPO maps onto veRL's: ``grpo.tasks_per_step`` prompts of ``grpo.group_size`` samples a step,
the KL to the reference as a loss term (``grpo``) or a per-token reward penalty (``reinforce_pp``,
``gae``), the same loss aggregation names, DAPO's group filtering for ``dynamic_sampling_rounds``
and truncated importance sampling for ``tis_cap``. What veRL has no counterpart for (per-turn or
per-rank credit, several policies, model-based rewards) is refused with the setting to change.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

ADVANTAGE_ESTIMATORS = {"grpo": "grpo", "reinforce_pp": "reinforce_plus_plus", "gae": "gae"}
"""Our ``grpo.advantage_estimator`` to veRL's ``algorithm.adv_estimator``."""

LR_SCHEDULES = {"constant": "constant", "cosine": "cosine"}
"""Our ``learner.lr_schedule`` to veRL's ``optim.lr_scheduler_type`` (veRL has no linear decay)."""


def unsupported_settings(config) -> list[str]:
    """The settings of ``config`` veRL cannot reproduce, each with the value that it can.

    >>> from launch.config import RunConfig
    >>> unsupported_settings(RunConfig())
    []
    """
    grpo, problems = config.grpo, []
    if grpo.credit != "episode":
        problems.append(f"grpo.credit={grpo.credit} (veRL assigns one advantage per episode: use episode)")
    if grpo.one_step_off_policy:
        problems.append("grpo.one_step_off_policy=true (use false; veRL's own async trainer modes are "
                        "trainer.v1.trainer_mode)")
    if len(config.rollout.policies) > 1:
        problems.append(f"rollout.policies={list(config.rollout.policies)} (veRL trains one policy)")
    model_rewards = sorted({"critic"} & set(config.reward.weights))
    if model_rewards:
        problems.append(f"reward.weights has model-based rewards {model_rewards} (score them with rule "
                        "rewards, or serve the critic as veRL's reward model)")
    if config.learner.lr_schedule not in LR_SCHEDULES:
        problems.append(f"learner.lr_schedule={config.learner.lr_schedule} (use {' or '.join(LR_SCHEDULES)})")
    return problems


def verl_settings(config, *, export_dir: Path, model_dir: Path, adapter_dir: Path | None,
                  max_prompt_length: int, reward_file: Path) -> dict[str, Any]:
    """veRL's settings for ``config`` (a ``launch.config.RunConfig``) and an export in ``export_dir``.

    Args:
        config: Our run config.
        export_dir: The export (its ``data/``, ``tool_config.yaml`` and ``agent_loop.yaml``).
        model_dir: The base model's HF folder.
        adapter_dir: A LoRA adapter to start from (our SFT stage's), or None.
        max_prompt_length: The longest exported prompt, in the policy's tokens.
        reward_file: The file holding veRL's ``compute_score``.

    Raises:
        ValueError: If ``config`` has settings veRL cannot reproduce (``unsupported_settings``).
    """
    problems = unsupported_settings(config)
    if problems:
        raise ValueError("veRL cannot train this config: " + "; ".join(problems))
    grpo, learner, model, env = config.grpo, config.learner, config.model, config.env
    kl_as_loss = grpo.advantage_estimator == "grpo" and grpo.kl_coef > 0
    kl_in_reward = grpo.advantage_estimator != "grpo" and grpo.kl_coef > 0
    optim = {"lr": grpo.lr, "weight_decay": learner.weight_decay, "clip_grad": learner.max_grad_norm,
             "lr_warmup_steps": learner.warmup_steps or -1, "min_lr_ratio": learner.min_lr_ratio,
             "lr_scheduler_type": LR_SCHEDULES[learner.lr_schedule]}
    micro_batch = {"log_prob_micro_batch_size_per_gpu": grpo.micro_batch_size}
    # veRL packs micro-batches by tokens (its rollout and reference log-probs follow the actor's setting)
    dynamic_batch = ({"use_dynamic_bsz": True, "ppo_max_token_len_per_gpu": grpo.micro_batch_tokens}
                     if grpo.micro_batch_tokens else {})
    settings: dict[str, Any] = {
        "data": {
            "train_files": str(export_dir / "data" / "train.parquet"),
            "val_files": str(export_dir / "data" / "val.parquet"),
            "prompt_key": "prompt",
            "max_prompt_length": max_prompt_length,
            "max_response_length": env.max_episode_tokens,
            "train_batch_size": grpo.tasks_per_step,
            "return_raw_chat": True,
            "filter_overlong_prompts": False,
            "seed": config.seed,
        },
        "actor_rollout_ref": {
            "model": {"path": str(model_dir), "lora_rank": max(model.lora_r, 0), "lora_alpha": model.lora_alpha,
                      "enable_gradient_checkpointing": learner.gradient_checkpointing,
                      **({"lora_adapter_path": str(adapter_dir)} if adapter_dir else {})},
            "actor": {
                "optim": optim,
                "ppo_mini_batch_size": max(grpo.tasks_per_step // max(grpo.mini_batches, 1), 1),
                "ppo_micro_batch_size_per_gpu": grpo.micro_batch_size,
                **dynamic_batch,
                "ppo_epochs": grpo.epochs,
                "clip_ratio": grpo.clip_eps,
                "loss_agg_mode": grpo.loss_agg,
                "use_kl_loss": kl_as_loss,
                "kl_loss_coef": grpo.kl_coef,
                "kl_loss_type": grpo.kl_estimator,
            },
            "ref": micro_batch,
            "rollout": {
                "name": "vllm",
                "n": grpo.group_size,
                "temperature": grpo.temperature,
                "top_p": 1.0,
                "tensor_model_parallel_size": 1,
                "dtype": config.rollout.vllm_dtype,
                "enable_prefix_caching": config.rollout.prefix_caching,
                **micro_batch,
                "multi_turn": {"enable": True, "format": "hermes", "max_assistant_turns": env.max_turns,
                               "tool_config_path": str(export_dir / "tool_config.yaml")},
                "agent": {"default_agent_loop": "recrl_episode",
                          "agent_loop_config_path": str(export_dir / "agent_loop.yaml")},
            },
        },
        "algorithm": {
            "adv_estimator": ADVANTAGE_ESTIMATORS[grpo.advantage_estimator],
            "norm_adv_by_std_in_grpo": grpo.scale_by_std,
            "gamma": grpo.gamma,
            "lam": grpo.lam,
            "use_kl_in_reward": kl_in_reward,
            "kl_penalty": "k1",
            "kl_ctrl": {"kl_coef": grpo.kl_coef},
        },
        "reward": {"custom_reward_function": {"path": str(reward_file), "name": "compute_score"}},
        "trainer": {
            "total_training_steps": grpo.steps,
            "project_name": config.logging.project,
            "experiment_name": f"{Path(config.run_dir).name}-verl",
            "logger": ["console"] if config.logging.mode == "disabled" else ["console", "wandb"],
            "default_local_dir": str(export_dir / "checkpoints"),
            "save_freq": grpo.save_every,
            "max_actor_ckpt_to_keep": grpo.keep_last,
            "test_freq": -1,
            "val_before_train": False,
            "nnodes": 1,
            "n_gpus_per_node": 1,
        },
    }
    if grpo.dynamic_sampling_rounds > 0:
        settings["algorithm"]["filter_groups"] = {"enable": True, "metric": "reward",
                                                  "max_num_gen_batches": grpo.dynamic_sampling_rounds + 1}
    if grpo.tis_cap is not None:
        settings["algorithm"]["rollout_correction"] = {"rollout_is": "token", "rollout_is_threshold": grpo.tis_cap}
    if grpo.advantage_estimator == "gae":
        settings["critic"] = {"optim": {"lr": grpo.critic_lr}, "model": {"path": str(model_dir)},
                              "ppo_micro_batch_size_per_gpu": grpo.micro_batch_size, **dynamic_batch,
                              "cliprange_value": grpo.value_clip if grpo.value_clip is not None else 1e9}
    return settings


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys.

    >>> flatten({"a": {"b": 1, "c": [1, 2]}, "d": None})
    {'a.b': 1, 'a.c': [1, 2], 'd': None}
    """
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


_PLAIN = re.compile(r"[A-Za-z0-9_./:~+\-]*")


def override_value(value: Any) -> str:
    """A value in Hydra's override grammar.

    >>> [override_value(v) for v in (True, None, 0.5, "/a/b.parquet", ["console", "wandb"], "it's")]
    ['true', 'null', '0.5', '/a/b.parquet', '[console,wandb]', "'it\\\\'s'"]
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(item) for item in value) + "]"
    text = str(value)
    if text and _PLAIN.fullmatch(text) and text not in ("true", "false", "null"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_overrides(settings: Mapping[str, Any]) -> list[str]:
    """``key=value`` overrides of veRL's ``ppo_trainer`` config (each key must exist there).

    >>> to_overrides({"trainer": {"total_training_steps": 2, "logger": ["console"]}})
    ['trainer.total_training_steps=2', 'trainer.logger=[console]']
    """
    return [f"{key}={override_value(value)}" for key, value in flatten(settings).items()]


def write_settings(settings: Mapping[str, Any], path: Path) -> Path:
    """Writes the settings as YAML (what ``launch.verl_export.launch`` reads back)."""
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(dict(settings))))
    return path


def read_settings(path: Path) -> dict[str, Any]:
    """The settings ``write_settings`` wrote."""
    if not path.is_file():
        raise FileNotFoundError(f"no veRL settings at {path}: export them with `recrl export verl --out DIR`")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)
