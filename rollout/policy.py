"""Loading the policy (base model, optionally LoRA-wrapped) and moving its adapter weights around."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
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
    ``adapter_dir`` if given, else freshly initialised, which leaves outputs unchanged). Without
    ``lora`` the whole model is the policy, and ``adapter_dir`` may hold full fine-tuned weights."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per weight load and worker drowns our own progress
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
    elif adapter_dir is not None:
        set_trainable_state(model, load_checkpoint_state(adapter_dir))
    if not trainable:
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    return model, tokenizer


DEVICES = ("auto", "cpu", "cuda")
"""Where a policy may run (``cuda:N`` names one GPU)."""
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors")
"""What a Learner checkpoint keeps its weights in: a LoRA adapter, or the full model."""


def resolve_device(device: str) -> str:
    """``auto`` is ``cuda`` when a GPU is visible, else ``cpu``; anything else is checked and kept.

    >>> resolve_device("cpu")
    'cpu'
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was asked for, but torch sees no CUDA GPU; use device=cpu")
    return check_device(device)


def check_device(device: str) -> str:
    """``device`` when it is one of ``DEVICES`` (or ``cuda:N``), else a ValueError; nothing is resolved.

    >>> check_device("cuda:1")
    'cuda:1'
    """
    if device.split(":")[0] not in DEVICES:
        raise ValueError(f"unknown device '{device}'; use auto, cpu or cuda")
    return device


def bf16_supported(device: str) -> bool:
    """Whether bfloat16 matmuls run natively on ``device`` (``cpu``, ``cuda`` or ``cuda:N``), so that
    bf16 autocast makes them faster, not slower: a setting of ``auto`` resolves to this.

    CUDA: the GPU computes in bf16 (Ampere or newer; older GPUs only emulate it). CPU: oneDNN's
    bf16 kernels are usable and, on x86, the CPU has bf16 dot products (AVX512_BF16 or AMX-BF16).
    oneDNN also runs bf16 on AVX-512 CPUs without them, by conversion: a matmul then takes 2.2-2.6x
    its fp32 time instead of 0.4-0.5x (bench/RESULTS.md).
    """
    target = torch.device(device)
    if target.type == "cuda":
        if not torch.cuda.is_available():
            return False
        with torch.cuda.device(target):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if target.type != "cpu":
        return False
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    capabilities = torch.cpu.get_capabilities()
    if "avx512_bf16" in capabilities:  # x86 (its feature keys are there, true or false)
        return bool(capabilities["avx512_bf16"] or capabilities.get("amx_bf16"))
    return True  # Arm: oneDNN's check already asks for the CPU's bf16 instructions


def is_lora(model) -> bool:
    return hasattr(model, "disable_adapter")


def is_checkpoint(path: str | Path) -> bool:
    """A folder saved by a Learner: a LoRA adapter or a full model."""
    return (Path(path) / "adapter_config.json").is_file() or (Path(path) / "config.json").is_file()


def trainable_state(model) -> dict[str, torch.Tensor]:
    """What the learner trains, detached on CPU: the LoRA weights (a few MB) or, for full
    fine-tuning, every weight. This is what travels to the rollout workers."""
    if is_lora(model):
        from peft import get_peft_model_state_dict

        state = get_peft_model_state_dict(model)
    else:
        state = model.state_dict()
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def check_full_state(expected: Mapping[str, torch.Size], state: Mapping[str, torch.Tensor], *,
                     optional: Collection[str] = ()) -> None:
    """Checks that ``state`` holds every weight of a model whose weight shapes are ``expected``
    (``optional`` ones, such as a tied output layer, may be left out): a ValueError names missing,
    unexpected or wrongly shaped keys."""
    missing = [key for key in expected if key not in state and key not in optional]
    unexpected = [key for key in state if key not in expected]
    mismatched = [key for key in state if key in expected and state[key].shape != expected[key]]
    if missing or unexpected or mismatched:
        raise ValueError(f"weights do not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                         f"wrong shape {mismatched[:3]}")


def load_full_state(model, state: dict[str, torch.Tensor]) -> None:
    """Loads every weight of a plain model, after checking that ``state`` fits it (``check_full_state``;
    a weight tied to a loaded one may be left out); on a mismatch the model is left as it was."""
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(params[key]) for key in state if key in params}
    tied = {name for name, param in params.items() if id(param) in loaded}  # shares a loaded weight
    check_full_state({key: value.shape for key, value in model.state_dict().items()}, state, optional=tied)
    model.load_state_dict(state, strict=False)


def set_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    if not is_lora(model):
        load_full_state(model, state)
        return
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(model, state)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter weights do not fit this policy: unexpected keys {unexpected[:3]}")


def role_checkpoints(folder: str | Path, roles: Sequence[str]) -> dict[str, Path]:
    """Each policy role's checkpoint in ``folder``: its own subfolder (``<folder>/<role>``) where a
    run trained several policies and saved each, else ``folder`` itself for every role (one
    policy, or several starting from one SFT adapter)."""
    folder = Path(folder)
    own = {role: folder / role for role in roles}
    if len(roles) > 1 and all(is_checkpoint(path) for path in own.values()):
        return own
    return dict.fromkeys(roles, folder)


def weights_file(checkpoint_dir: str | Path) -> Path:
    """The weights file of a Learner checkpoint folder (LoRA adapter or full model)."""
    folder = Path(checkpoint_dir)
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no checkpoint weights in {folder} ({' or '.join(WEIGHT_FILES)})")


def checkpoint_fingerprint(checkpoint_dir: str | Path) -> str:
    """SHA-256 of a checkpoint's weights file: tells whether two runs started from the same weights."""
    import hashlib

    digest = hashlib.sha256()
    with weights_file(checkpoint_dir).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint_state(checkpoint_dir: str | Path) -> dict[str, torch.Tensor]:
    """The trainable state saved in a Learner checkpoint folder (LoRA adapter or full model)."""
    from safetensors.torch import load_file

    return load_file(weights_file(checkpoint_dir))
