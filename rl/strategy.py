"""How a learner turns losses into weight updates: plain torch, torch DDP, or DeepSpeed ZeRO.

The learner runs forward passes through ``strategy.module`` and calls ``strategy.backward(loss)``
for each micro-batch and ``strategy.step()`` once per optimizer step. The strategy owns the
optimizer, the learning-rate schedule, gradient clipping and, in a process group of several
learners, the reduction of gradients (DDP all-reduces them; ZeRO also partitions optimizer state,
gradients (stage 2) and weights (stage 3) across the group). The same learner code runs on one CPU
process with gloo and on GPUs with NCCL.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

STRATEGIES = ("torch", "ddp", "deepspeed")
OPTIMIZERS = ("torch_adam", "fused_adam", "cpu_adam")
LR_SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class LearnerConfig:
    """The learner group: how many learners, how they share the work, and how they step."""

    strategy: str = "torch"
    """``torch`` (one learner), ``ddp`` (torch DistributedDataParallel) or ``deepspeed`` (ZeRO)."""
    num_learners: int = 1
    """Learner actors in one torch.distributed group; each takes an equal share of a batch's rows."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage: 0 (data parallel), 1 (optimizer state), 2 (+ gradients), 3 (+ weights)."""
    offload: bool = False
    """ZeRO-Offload: optimizer state (and, at stage 3, weights) in CPU memory (needs cpu_adam)."""
    optimizer: str = "torch_adam"
    """``torch_adam`` (torch AdamW, builds nothing), ``fused_adam`` (DeepSpeed's CUDA kernel, JIT-built; it
    fails to build where TORCH_CUDA_ARCH_LIST has an arch like 9.0a) or ``cpu_adam`` (DeepSpeed's, for offload)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (0: off)."""
    lr_schedule: str = "constant"
    """Learning rate after warmup: ``constant``, ``linear`` or ``cosine`` decay to ``min_lr_ratio``."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup from 0."""
    min_lr_ratio: float = 0.0
    """Final learning rate of a decaying schedule, as a fraction of the peak."""
    backend: str = "auto"
    """torch.distributed backend: ``auto`` (nccl on GPU, gloo on CPU), ``gloo`` or ``nccl``."""
    gradient_checkpointing: bool = False
    """Recompute each layer's activations in the backward pass instead of keeping them: a long
    batch's activation memory falls to about one layer's, for about a third more compute."""

    def __post_init__(self):
        checks = {"strategy": (self.strategy, STRATEGIES), "optimizer": (self.optimizer, OPTIMIZERS),
                  "lr_schedule": (self.lr_schedule, LR_SCHEDULES), "backend": (self.backend, ("auto", "gloo", "nccl"))}
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"unknown learner.{name} '{value}'; use one of {', '.join(allowed)}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ValueError(f"learner.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.num_learners < 1:
            raise ValueError(f"learner.num_learners must be at least 1, got {self.num_learners}")
        if self.num_learners > 1 and self.strategy == "torch":
            raise ValueError("several learners need learner.strategy=ddp or deepspeed (torch trains one learner)")
        if self.offload and (self.strategy != "deepspeed" or self.optimizer != "cpu_adam"):
            raise ValueError("learner.offload needs learner.strategy=deepspeed and learner.optimizer=cpu_adam")
        if self.optimizer != "torch_adam" and self.strategy != "deepspeed":
            raise ValueError(f"learner.optimizer={self.optimizer} is DeepSpeed's: set learner.strategy=deepspeed")


def lr_factor(step: int, *, schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """The learning rate of optimizer step ``step`` (0-based) as a fraction of the peak.

    Linear warmup over ``warmup_steps``, then ``constant``, or ``linear``/``cosine`` decay to
    ``min_lr_ratio`` at ``total_steps``.

    >>> [round(lr_factor(s, schedule="linear", warmup_steps=2, total_steps=6), 2) for s in range(7)]
    [0.5, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
    >>> round(lr_factor(3, schedule="cosine", warmup_steps=0, total_steps=6, min_lr_ratio=0.1), 2)
    0.55
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend != "auto":
        return backend
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(*, rank: int, world_size: int, address: str, port: int, backend: str) -> None:
    """Joins this process to the learners' torch.distributed group (through DeepSpeed's
    communication layer, which wraps torch's and which ZeRO uses)."""
    import deepspeed

    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK="0" if backend == "gloo" else os.environ.get("LOCAL_RANK", "0"))
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False,
                               rank=rank, world_size=world_size)


def free_port() -> int:
    """A TCP port free on this node (for a process group's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class Strategy:
    """One learner's optimizer, schedule and gradient reduction (see the module docstring).

    Args:
        module: what forward passes run through (gradients flow to ``parameters``).
        parameters: the trainable parameters.
        lr: peak learning rate.
        config: the learner group's settings.
        total_steps: optimizer steps the schedule spans (0: no decay).
        device: where the module lives.
    """

    def __init__(self, module: nn.Module, parameters: list[nn.Parameter], *, lr: float, config: LearnerConfig,
                 total_steps: int, device: torch.device):
        self.config = config
        self.parameters = parameters
        self.steps = 0
        schedule = dict(schedule=config.lr_schedule, warmup_steps=config.warmup_steps, total_steps=total_steps,
                        min_lr_ratio=config.min_lr_ratio)

        def scheduler(optimizer):
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, **schedule))

        if config.strategy == "deepspeed":
            import deepspeed

            self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=module, model_parameters=parameters, config=deepspeed_config(config, lr=lr, device=device),
                lr_scheduler=scheduler)
            self.module = self.engine
            return
        self.engine = None
        self.optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=config.weight_decay)
        self.scheduler = scheduler(self.optimizer)
        if config.strategy == "ddp":
            device_ids = [device.index or 0] if device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
        self.module = module

    @property
    def world_size(self) -> int:
        return torch.distributed.get_world_size() if distributed() else 1

    def no_sync(self, skip: bool) -> contextlib.AbstractContextManager:
        """DDP: skip the all-reduce of this backward (gradients accumulate locally until the last
        micro-batch of a step). Other strategies reduce when they step."""
        if skip and isinstance(self.module, nn.parallel.DistributedDataParallel):
            return self.module.no_sync()
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulates the gradient of ``loss`` (already scaled to its share of the step)."""
        if self.engine is not None:
            self.engine.backward(loss, scale_wrt_gas=False)
        else:
            loss.backward()

    def step(self) -> float:
        """Reduces gradients across the group, clips, takes one optimizer step, advances the
        schedule and zeroes the gradients; returns the global gradient norm before clipping."""
        self.steps += 1
        if self.engine is not None:
            self.engine.step()
            norm = self.engine.get_global_grad_norm()
            return float(norm) if norm is not None else float("nan")
        # An infinite bound only measures the norm (clipping off).
        norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm or math.inf))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    @contextlib.contextmanager
    def gathered(self) -> Iterator[None]:
        """Inside, every trainable weight is whole on every learner (ZeRO-3 partitions them): read
        or save them here. All learners of the group must enter together."""
        if self.engine is not None and self.config.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(self.parameters, modifier_rank=None):
                yield
        else:
            yield

    def optimizer_state(self) -> dict:
        """This learner's optimizer and schedule state (its ZeRO partition under DeepSpeed), as
        tensors and plain containers only, so that loading it unpickles no code: objects (ZeRO's
        loss scaler) are left out and taken from the live optimizer on load."""
        optimizer = {key: value for key, value in self.optimizer.state_dict().items() if plain(value)}
        return {"optimizer": optimizer, "scheduler": self.scheduler.state_dict(), "steps": self.steps}

    def load_optimizer_state(self, states: list[dict], rank: int) -> None:
        """Restores ``optimizer_state()``; ``states`` holds every learner's, by rank (ZeRO reads all of
        them: each holds one partition). A bare optimizer state (as older single-learner checkpoints
        hold) keeps the schedule at its start."""
        state = states[rank]
        if "optimizer" not in state:
            self.optimizer.load_state_dict(state)
            return
        live = {key: value for key, value in self.optimizer.state_dict().items() if not plain(value)}
        if self.engine is not None and self.config.zero_stage > 0:
            self.optimizer.load_state_dict([{**live, **s["optimizer"]} for s in states])
        else:
            self.optimizer.load_state_dict({**live, **state["optimizer"]})
        self.scheduler.load_state_dict(state["scheduler"])
        self.steps = state["steps"]


def plain(value) -> bool:
    """Whether ``torch.load(..., weights_only=True)`` reads ``value`` back: tensors, numbers, strings
    and containers of them.

    >>> plain({"a": [1, torch.zeros(1)]}), plain(object())
    (True, False)
    """
    if isinstance(value, torch.Tensor) or type(value) in (int, float, bool, str, type(None)):
        return True  # exact types: an IntEnum is an int, but pickles as its class
    if type(value) in (list, tuple):
        return all(plain(item) for item in value)
    if type(value) is dict:
        return all(plain(key) and plain(item) for key, item in value.items())
    return False


def deepspeed_config(config: LearnerConfig, *, lr: float, device: torch.device) -> dict:
    """DeepSpeed's config for one learner: one row per micro-batch, gradient accumulation owned by
    the learner (it calls ``step()`` at each step's end), the chosen optimizer and ZeRO stage;
    bf16 weights and NCCL on GPU, fp32 on CPU (where the learner autocasts matmuls to bf16)."""
    zero: dict = {"stage": config.zero_stage}
    if config.offload:
        zero["offload_optimizer"] = {"device": "cpu"}
        if config.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    if config.zero_stage in (1, 2):
        zero["overlap_comm"] = False  # the learner owns accumulation boundaries: no overlapped reduction
    optimizer = {"type": "AdamW", "params": {"lr": lr, "weight_decay": config.weight_decay,
                                             "torch_adam": config.optimizer == "torch_adam",
                                             "adam_w_mode": True}}
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "managed_gradient_accumulation": False,
        "gradient_clipping": config.max_grad_norm,
        "optimizer": optimizer,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": config.offload,
        "bf16": {"enabled": device.type == "cuda"},
        "steps_per_print": None,  # DeepSpeed logs nothing of its own; the learner returns metrics
        "wall_clock_breakdown": False,
    }
