"""LoRA adapter states as engines receive them: checked against the model, then merged into plain weights.

Every engine merges an update as ``W0 + (alpha / r) * B @ A`` from a pristine copy ``W0`` of each
adapted weight. Merging into and unmerging from the live weights instead (peft's ``merge_adapter`` /
``unmerge_adapter``) rounds them on every update, and the base model drifts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from rollout.policy import LoraSettings

LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<factor>[AB])\.weight$")
"""A peft adapter weight, as ``get_peft_model_state_dict`` and ``adapter_model.safetensors`` name it:
``base_model.model.<module>.lora_A.weight`` or ``...lora_B.weight``."""

Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""``(A, B)`` of each adapted module, by module name."""


def is_lora_state(state: Mapping[str, torch.Tensor]) -> bool:
    """A LoRA adapter's state, or ``{}`` (no adapter: the base model); otherwise every weight of a model."""
    return not state or any(".lora_" in key for key in state)


def lora_factors(state: Mapping[str, torch.Tensor], linear_shapes: Mapping[str, torch.Size],
                 lora: LoraSettings | None) -> Factors:
    """``(A, B)`` of each adapted module, after checking that they fit the model.

    Args:
        state: a peft adapter state (``...q_proj.lora_A.weight``...).
        linear_shapes: the weight shape of each linear layer of the model, by module name.
        lora: the adapter shape the engine was built for.

    Raises:
        ValueError: a key that is no LoRA weight, a factor without its partner, a module that is
            not a LoRA target of the model, or factors of the wrong rank or shape.
    """
    if state and lora is None:
        raise ValueError("got LoRA adapter weights, but this engine was built without lora=LoraSettings(...)")
    keys: dict[str, dict[str, str]] = {}
    for key in state:
        match = LORA_KEY.match(key)
        if match is None:
            raise ValueError(f"'{key}' is not a LoRA weight ('<module>.lora_A.weight' or '.lora_B.weight'); "
                             "a state holds either a LoRA adapter or every weight of the model")
        keys.setdefault(match["module"], {})[match["factor"]] = key
    factors = {}
    for name, pair in keys.items():
        if len(pair) < 2:
            raise ValueError(f"'{next(iter(pair.values()))}' comes without its LoRA partner "
                             f"(lora_A and lora_B go together)")
        key_a, key_b = pair["A"], pair["B"]
        shape = linear_shapes.get(name)
        if shape is None or len(shape) != 2:
            raise ValueError(f"'{key_a}': the model has no linear layer '{name}'")
        if not any(name == t or name.endswith("." + t) for t in lora.target_modules):
            raise ValueError(f"'{key_a}': '{name}' is not among the LoRA target modules {lora.target_modules}")
        lora_a, lora_b = state[key_a], state[key_b]
        if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[0] != lora.r or lora_b.shape[1] != lora.r:
            raise ValueError(f"'{key_a}' {tuple(lora_a.shape)} and '{key_b}' {tuple(lora_b.shape)} are not rank "
                             f"r={lora.r} LoRA factors")
        if (lora_b.shape[0], lora_a.shape[1]) != tuple(shape):
            raise ValueError(f"'{key_a}' and '{key_b}' make a {lora_b.shape[0]}x{lora_a.shape[1]} update, "
                             f"but '{name}.weight' is {tuple(shape)}")
        factors[name] = (lora_a, lora_b)
    return factors


def merged_weight(base: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor,
                  lora: LoraSettings) -> torch.Tensor:
    """``W0 + (alpha / r) * B @ A`` in fp32, on ``base``'s device."""
    delta = lora_b.to(base.device, torch.float32) @ lora_a.to(base.device, torch.float32)
    return base.float() + (lora.alpha / lora.r) * delta
