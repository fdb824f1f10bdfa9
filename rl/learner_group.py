"""LearnerGroup: several Learner actors in one torch.distributed group, driven like one Learner.

The driver calls the group as it would a single ``rl.learner.Learner`` (``update``, ``sft_step``,
``trainable_state``, ``save_checkpoint``...). Each call runs on every learner at once, since each is a
collective: rows of a batch are split into equal contiguous shards (padded with rows that have no
policy tokens, so every learner runs the same passes), each learner computes its share of the
step's token-mean loss, and DDP or DeepSpeed ZeRO reduces the gradients. The learners are placed by
a Ray placement group, one bundle each, rank 0 on the bundle whose node hosts the group's master.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rl.batch import TokenBatch
from rl.learner import Learner
from rl.strategy import LearnerConfig, free_port
from rollout.actors import Remote, init_ray, release, spawn


def master_address() -> tuple[str, int]:
    """This node's address and a free port on it."""
    import ray

    return ray.util.get_node_ip_address(), free_port()


def pad_rows(batch: TokenBatch, multiple: int) -> TokenBatch:
    """``batch`` with copies of its first row, without policy tokens, appended until its rows are a
    multiple of ``multiple``: they run through the model but weigh nothing in the loss."""
    missing = -len(batch) % multiple
    if not missing:
        return batch
    padded = batch.rows(torch.cat([torch.arange(len(batch)), torch.zeros(missing, dtype=torch.long)]))
    loss_mask = padded.loss_mask.clone()
    loss_mask[len(batch):] = 0
    return dataclasses.replace(padded, loss_mask=loss_mask)


def group_metrics(results: Sequence[dict[str, float]], *, throughput: str) -> dict[str, float]:
    """The learners' metrics as one: the mean of each (every learner's loss share is already scaled
    to the group), except ``throughput``, which adds up."""
    metrics = {key: sum(r[key] for r in results) / len(results) for key in results[0]}
    metrics[throughput] = sum(r[throughput] for r in results)
    return metrics


class LearnerGroup:
    """``config.num_learners`` Learner actors (``ddp`` or ``deepspeed``) used like one Learner.

    Args:
        learners: the group's actors, rank 0 first.
        placement: the Ray placement group the group made for them (removed by ``close``); None
            when they run in a run's own (``launch.placement``).
    """

    def __init__(self, learners: Sequence[Remote], placement: Any = None):
        if not learners:
            raise ValueError("a learner group needs at least one learner")
        self.learners = list(learners)
        self.placement = placement

    @classmethod
    def spawn(cls, config: LearnerConfig, *, num_cpus: float = 1, num_gpus: float = 0,
              slots: Sequence[Mapping[str, Any]] | None = None, **learner_kwargs: Any) -> LearnerGroup:
        """Starts the group: a placement group of one bundle per learner (packed onto as few nodes
        as possible), the master's address taken on rank 0's node, then one Learner per bundle.

        Args:
            config: the learner group's settings (``num_learners``, strategy...).
            num_cpus: CPUs each learner reserves.
            num_gpus: GPUs each learner reserves (a fraction shares one GPU with other roles).
            slots: each rank's ``num_gpus`` and ``placement`` in a run's colocated placement group
                (``launch.placement``), which the group then uses instead of making its own.
            learner_kwargs: the Learner's other arguments (model, lora, lr, seed, device...).
        """
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        init_ray()
        group = None
        if slots is None:
            bundle = {"CPU": num_cpus, **({"GPU": num_gpus} if num_gpus else {})}
            group = placement_group([bundle] * config.num_learners, strategy="PACK")
            ray.get(group.ready(), timeout=600)
            slots = [{"num_gpus": num_gpus, "placement": (group, rank)} for rank in range(config.num_learners)]
        if len(slots) != config.num_learners:
            raise ValueError(f"{config.num_learners} learners need as many slots, got {len(slots)}")
        rank_zero_group, rank_zero_bundle = slots[0]["placement"]
        on_rank_zero = PlacementGroupSchedulingStrategy(rank_zero_group, placement_group_bundle_index=rank_zero_bundle)
        master = ray.get(ray.remote(num_cpus=0)(master_address).options(scheduling_strategy=on_rank_zero).remote())
        learners = [spawn(Learner, 1, num_cpus=num_cpus, **slot, rank=rank, master=master, config=config,
                          **learner_kwargs)[0]
                    for rank, slot in enumerate(slots)]
        return cls(learners, group)

    def close(self) -> None:
        """Ends the learners and frees their placement group."""
        import ray

        release(self.learners)
        if self.placement is not None:
            ray.util.remove_placement_group(self.placement)
            self.placement = None

    def _all(self, method, per_learner: Sequence[tuple] | None = None, **kwargs: Any) -> list[Any]:
        """Runs ``method`` on every learner at once (``per_learner[i]`` are learner i's positional
        arguments) and returns their results, rank 0 first."""
        import ray

        per_learner = per_learner or [()] * len(self.learners)
        return ray.get([learner.submit(method, *args, **kwargs) for learner, args in zip(self.learners, per_learner)])

    def _shards(self, batch: TokenBatch) -> list[tuple[TokenBatch]]:
        batch = pad_rows(batch, len(self.learners))
        return [(part,) for part in batch.split(len(batch) // len(self.learners))]

    def update(self, batch: TokenBatch, **kwargs: Any) -> dict[str, float]:
        """``Learner.update`` on the whole batch: each learner takes a shard of its rows. Metrics
        are the learners' mean (each one's share of the token-mean loss is already scaled to the
        group), throughput their sum."""
        return group_metrics(self._all(Learner.update, self._shards(batch), **kwargs),
                             throughput="perf/learner_tokens_per_s")

    def sft_step(self, sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[int]]) -> dict[str, float]:
        """``Learner.sft_step`` on every sequence, sharded over the learners (padded like ``update``)."""
        count = len(self.learners)
        missing = -len(sequences) % count
        sequences = [*sequences, *[sequences[0]] * missing]
        masks = [*masks, *[[0] * len(sequences[0])] * missing]
        size = len(sequences) // count
        results = self._all(Learner.sft_step, [(sequences[i * size:(i + 1) * size], masks[i * size:(i + 1) * size])
                                               for i in range(count)])
        return group_metrics(results, throughput="perf/tokens_per_s")

    def logprobs(self, batch: TokenBatch, **kwargs: Any) -> torch.Tensor:
        """``Learner.logprobs`` of the whole batch, computed in shards."""
        return torch.cat(self._all(Learner.logprobs, self._shards(batch), **kwargs))[: len(batch)]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self._all(Learner.trainable_state)[0]

    def pad_token_id(self) -> int:
        return self.learners[0].pad_token_id()

    def save(self, path: str | Path, *, with_optimizer: bool = False) -> str:
        return self._all(Learner.save, [(path,)] * len(self.learners), with_optimizer=with_optimizer)[0]

    def save_checkpoint(self, root: str | Path, step: int, trainer_state: dict, *, keep_last: int) -> str:
        arguments = [(root, step, trainer_state)] * len(self.learners)
        return self._all(Learner.save_checkpoint, arguments, keep_last=keep_last)[0]

    def load_optimizer(self, path: str | Path) -> None:
        self._all(Learner.load_optimizer, [(path,)] * len(self.learners))
