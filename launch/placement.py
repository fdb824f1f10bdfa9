"""Where the roles' Ray actors run (``placement.*``): how much of a GPU each reserves and, when
colocated, which GPU.

``separate``: every rollout worker, learner, the reference and PPO's critic reserves an equal share
of the Ray cluster's GPUs, wherever Ray finds room. ``colocated``: one Ray placement group of
bundles, one GPU each (OpenRLHF's and veRL's colocation); each actor goes to the least-loaded
bundle, so with as many rollout workers and learners as GPUs, worker i and learner i share GPU i,
and each actor reserves an equal slice of its bundle's GPU. Roles take turns within a step
(rollouts, then the reference, then the update), so the slices bound memory, not speed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MODES = ("separate", "colocated")
ROLES = ("rollout", "learner", "reference", "critic")
"""The roles placed, in the order their actors are assigned bundles."""


@dataclass(frozen=True)
class PlacementConfig:
    """Where the roles' actors run on the Ray cluster."""

    mode: str = "separate"
    """``separate`` (an equal share of the cluster's GPUs each) or ``colocated`` (one placement group
    of one-GPU bundles, each shared by a rollout worker, a learner...)."""
    bundles: int = 0
    """Bundles of a colocated placement: 0 gives one per GPU of the cluster (on CPU, one per
    rollout worker or learner, whichever are more)."""

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown placement.mode '{self.mode}'; use one of {', '.join(MODES)}")
        if self.bundles < 0:
            raise ValueError(f"placement.bundles must be >= 0, got {self.bundles}")


@dataclass(frozen=True)
class Slot:
    """One actor's place: its bundle in the placement group (None: anywhere) and the GPUs it reserves."""

    bundle: int | None
    gpus: float


def plan(counts: Mapping[str, int], *, gpus: float, mode: str, bundles: int = 0) -> dict[str, list[Slot]]:
    """Each role's actors' slots (``counts``: actors per role, in ``ROLES`` order).

    >>> plan({"rollout": 2, "learner": 2, "reference": 1}, gpus=4, mode="separate")["rollout"]
    [Slot(bundle=None, gpus=0.8), Slot(bundle=None, gpus=0.8)]
    >>> slots = plan({"rollout": 2, "learner": 2, "reference": 1}, gpus=2, mode="colocated")
    >>> [(s.bundle, round(s.gpus, 3)) for role in ROLES for s in slots.get(role, [])]
    [(0, 0.333), (1, 0.333), (0, 0.333), (1, 0.333), (0, 0.333)]
    """
    unknown = set(counts) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}; placed roles are {', '.join(ROLES)}")
    total = sum(counts.values())
    if mode == "separate":
        share = min(1.0, gpus / total) if gpus and total else 0.0
        return {role: [Slot(None, share)] * count for role, count in counts.items()}
    if mode != "colocated":
        raise ValueError(f"unknown placement mode '{mode}'; use one of {', '.join(MODES)}")
    size = bundles or int(gpus) or max(counts.get("rollout", 0), counts.get("learner", 0), 1)
    if gpus and size > gpus:
        raise ValueError(f"a colocated placement of {size} one-GPU bundles needs {size} GPUs; the cluster has {gpus}")
    load = [0] * size
    bundle_of: dict[str, list[int]] = {}
    for role in ROLES:
        for _ in range(counts.get(role, 0)):
            least = min(range(size), key=load.__getitem__)
            load[least] += 1
            bundle_of.setdefault(role, []).append(least)
    share = 1.0 / max(load) if gpus else 0.0
    return {role: [Slot(bundle, share) for bundle in bundle_of.get(role, [])] for role in counts}


class Placement:
    """The slots of one run's actors and, when colocated, the Ray placement group holding them;
    ``take(role)`` hands out the role's next slot as ``spawn`` options."""

    def __init__(self, slots: dict[str, list[Slot]], group: Any = None):
        self.slots = {role: list(role_slots) for role, role_slots in slots.items()}
        self.group = group

    @classmethod
    def create(cls, config: PlacementConfig, counts: Mapping[str, int], *, gpus: float) -> Placement:
        """Plans the slots and, when colocated, reserves the placement group (one bundle per GPU,
        with a CPU for each actor it holds) and waits for it."""
        slots = plan(counts, gpus=gpus, mode=config.mode, bundles=config.bundles)
        if config.mode == "separate":
            return cls(slots)
        import ray
        from ray.util.placement_group import placement_group

        size = 1 + max(slot.bundle for role_slots in slots.values() for slot in role_slots)
        cpus = [sum(slot.bundle == index for role_slots in slots.values() for slot in role_slots)
                for index in range(size)]
        group = placement_group([{"CPU": cpu, **({"GPU": 1} if gpus else {})} for cpu in cpus], strategy="PACK")
        ray.get(group.ready(), timeout=600)
        return cls(slots, group)

    def take(self, role: str) -> dict[str, Any]:
        """``spawn``'s ``num_gpus`` and ``placement`` for the role's next actor."""
        if not self.slots.get(role):
            raise RuntimeError(f"no slot left for another '{role}' actor: the placement planned "
                               f"{', '.join(f'{r} {len(s)}' for r, s in self.slots.items())} more")
        slot = self.slots[role].pop(0)
        placement = None if slot.bundle is None else (self.group, slot.bundle)
        return {"num_gpus": slot.gpus, "placement": placement}

    def close(self) -> None:
        """Frees the placement group (after its actors are released)."""
        if self.group is not None:
            import ray

            ray.util.remove_placement_group(self.group)
            self.group = None
