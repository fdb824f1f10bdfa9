"""Loading the policy (base model, optionally LoRA-wrapped) and moving its adapter weights around."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from rollout.models import load_tokenizer, resolve_model


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter shape (peft)."""

    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Scaling numerator (scale = alpha / r)."""
    dropout: float = 0.0
    """Dropout on the adapter input."""
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    )
    """Linear layers that get adapters."""


def load_policy(model_name: str, *, lora: LoraSettings | None, adapter_dir: str | Path | None = None,
                trainable: bool = False, device: str = "cpu"):
    """Returns ``(model, tokenizer)``; with ``lora`` the model is a peft model (adapter from
    ``adapter_dir`` if given, else freshly initialised, which leaves outputs unchanged)."""
    from transformers import AutoModelForCausalLM

    model_dir = resolve_model(model_name)
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
    if lora is not None:
        from peft import LoraConfig, PeftModel, get_peft_model

        if adapter_dir is not None:
            adapter_dir = Path(adapter_dir)
            if not (adapter_dir / "adapter_config.json").is_file():
                raise FileNotFoundError(f"no LoRA adapter in {adapter_dir} (adapter_config.json missing)")
            model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=trainable)
        else:
            config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
            model = get_peft_model(model, config)
    if not trainable:
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    return model, tokenizer


def adapter_state(model) -> dict[str, torch.Tensor]:
    """The LoRA weights only (a few MB), detached on CPU: what the learner sends to rollout workers."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def set_adapter_state(model, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter weights do not fit this policy: unexpected keys {unexpected[:3]}")


def load_adapter_file(adapter_dir: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(adapter_dir) / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no LoRA adapter weights at {path}")
    return load_file(path)
