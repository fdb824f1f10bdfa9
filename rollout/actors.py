"""The one place where roles become Ray actors, and work is spread over them.

A role (``RolloutWorker``, ``Learner``, ``ReferenceModel``, ``TeacherWorker``) is a plain class.
``spawn`` starts it as Ray actors and returns ``Remote`` proxies that the driver calls like the
plain objects (``learner.update(batch, ...)``); ``map_actors`` and ``broadcast`` take the role's
method itself (``RolloutWorker.rollout``), never its name in a string, and work on plain objects
and proxies alike.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger(__name__)


def init_ray(*, address: str | None = None) -> None:
    """Starts (or joins) Ray once. A cluster is joined at ``address``, else at ``RAY_ADDRESS`` (which
    Ray sets for a submitted job's driver and which SLURM scripts export). Locally, logical CPUs are
    at least 16 so the rollout workers, a group of learners and the reference all fit on a 2-core
    laptop (each actor reserves one); they take turns, so they do not oversubscribe in practice."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=max(os.cpu_count() or 1, 16), include_dashboard=False, log_to_driver=True)


class Remote:
    """A Ray actor of a role class, used like a plain instance: ``remote.method(...)`` runs in the
    actor and returns its result; ``submit`` returns the Ray object ref instead, for parallel calls.
    ``start`` (from ``spawn``) starts a fresh actor of the same role: ``restart`` replaces a dead one."""

    def __init__(self, handle: Any, cls: type, start: Callable[[], Any] | None = None):
        self.handle = handle
        self.cls = cls
        self.start = start
        self.restarts = 0

    def restart(self) -> None:
        """Replaces this actor by a fresh one, built with the arguments it was spawned with (so it
        holds their state, e.g. its starting weights, not what it was given since)."""
        if self.start is None:
            raise RuntimeError(f"this {self.cls.__name__} actor was not spawned here and cannot be restarted")
        import ray

        ray.kill(self.handle)  # in case it is only unreachable
        self.handle = self.start()
        self.restarts += 1

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(self.cls, name, None)):
            raise AttributeError(f"{self.cls.__name__} has no method {name!r}")

        def call(*args: Any, **kwargs: Any) -> Any:
            import ray

            return ray.get(getattr(self.handle, name).remote(*args, **kwargs))

        return call

    def submit(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Starts ``method`` (a function of the role class) in the actor; returns its object ref."""
        if not any(vars(klass).get(method.__name__) is method for klass in self.cls.__mro__):
            raise TypeError(f"{method.__qualname__} is not a method of {self.cls.__name__}")
        return getattr(self.handle, method.__name__).remote(*args, **kwargs)


def _bound(actor: Any, method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` as ``actor`` has it (a subclass's override wins), checked like ``Remote.submit``."""
    if not any(vars(klass).get(method.__name__) is method for klass in type(actor).__mro__):
        raise TypeError(f"{method.__qualname__} is not a method of {type(actor).__name__}")
    return getattr(actor, method.__name__)


def spawn(cls: type, count: int, *args: Any, num_cpus: float = 1, num_gpus: float = 0,
          placement: tuple[Any, int] | None = None, **kwargs: Any) -> list[Remote]:
    """Starts ``count`` actors of a plain role class (which stays usable without Ray); ``num_gpus``
    may be a fraction, so several roles share one GPU. ``placement`` (a Ray placement group and a
    bundle index) pins them to that bundle's node and resources."""
    import ray

    init_ray()
    options: dict[str, Any] = {}
    if placement is not None:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group, bundle = placement
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=bundle)
    remote_cls = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0)(cls).options(**options)

    def start() -> Any:
        return remote_cls.remote(*args, **kwargs)

    return [Remote(start(), cls, start) for _ in range(count)]


def shard(items: Sequence[Any], count: int) -> list[list[Any]]:
    """Splits items into ``count`` contiguous, near-equal shards (some may be empty)."""
    size, extra = divmod(len(items), count)
    shards, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        shards.append(list(items[start:end]))
        start = end
    return shards


def map_actors(actors: Sequence[Any], method: Callable[..., list], items: Sequence[Any], *,
               revive: Callable[[Remote], None] | None = None, **kwargs: Any) -> list[Any]:
    """Calls ``actor.method(shard, **kwargs)`` on every actor and concatenates the results in order.

    Plain objects are called one after another. For Ray actors, a shard whose actor died is run
    again, so one lost worker costs time, not results: with ``revive`` the actor is restarted,
    ``revive(actor)`` brings it up to date (e.g. gives it the weights the others hold) and it
    re-runs its shard; without, the shard goes to a live actor. If no actor is left, or a restarted
    one dies too, a RuntimeError says so.
    """
    shards = shard(items, len(actors))
    if not any(isinstance(a, Remote) for a in actors):
        return [item for actor, part in zip(actors, shards) for item in _bound(actor, method)(part, **kwargs)]
    import ray
    from ray.exceptions import RayActorError

    refs = [actor.submit(method, part, **kwargs) for actor, part in zip(actors, shards)]
    results: list[list[Any]] = []
    dead: set[int] = set()
    for index, ref in enumerate(refs):
        try:
            results.append(ray.get(ref))
        except RayActorError as error:
            if revive is not None and actors[index].start is not None:
                log.warning("worker %d died during %s (%s); restarting it to re-run its shard", index,
                            method.__name__, error)
                actors[index].restart()
                try:
                    revive(actors[index])
                    results.append(ray.get(actors[index].submit(method, shards[index], **kwargs)))
                except RayActorError as again:
                    raise RuntimeError(f"worker {index} died again after a restart: {again}") from again
                continue
            dead.add(index)
            live = [a for i, a in enumerate(actors) if i not in dead]
            if not live:
                raise RuntimeError(f"every {method.__name__} worker died; last error: {error}") from error
            log.warning("worker %d died during %s (%s); retrying its shard on another", index, method.__name__, error)
            results.append(ray.get(live[0].submit(method, shards[index], **kwargs)))
    return [item for part in results for item in part]


def broadcast(actors: Sequence[Any], method: Callable[..., Any], *args: Any, restart: bool = False,
              **kwargs: Any) -> list[Any]:
    """Calls ``actor.method(*args, **kwargs)`` on every actor (e.g. to push new weights) and returns
    the actors still alive: a dead Ray actor is restarted and called again with ``restart`` (and
    one spawned here), else dropped with a warning, so the run goes on with the rest; if none is
    left, a RuntimeError says so. Arguments are stored once, not once per actor."""
    if not any(isinstance(a, Remote) for a in actors):
        for actor in actors:
            _bound(actor, method)(*args, **kwargs)
        return list(actors)
    import ray
    from ray.exceptions import RayActorError

    args = tuple(ray.put(arg) for arg in args)
    refs = [actor.submit(method, *args, **kwargs) for actor in actors]
    live, last_error = [], None
    for index, (actor, ref) in enumerate(zip(actors, refs)):
        try:
            ray.get(ref)
            live.append(actor)
        except RayActorError as error:
            last_error = error
            if restart and actor.start is not None:
                log.warning("worker %d died during %s (%s); restarting it", index, method.__name__, error)
                actor.restart()
                ray.get(actor.submit(method, *args, **kwargs))
                live.append(actor)
                continue
            log.warning("worker %d died during %s (%s); going on without it", index, method.__name__, error)
    if not live:
        raise RuntimeError(f"every {method.__name__} worker died; last error: {last_error}") from last_error
    return live


def map_actors_chunked(actors: Sequence[Any], method: Callable[..., list], items: Sequence[Any], *, chunk_size: int,
                       desc: str, **kwargs: Any) -> list[Any]:
    """``map_actors`` over consecutive chunks of ``items``, with a progress bar."""
    from tqdm import tqdm

    results: list[Any] = []
    for start in tqdm(range(0, len(items), chunk_size), desc=desc, unit="chunk"):
        results += map_actors(actors, method, list(items[start : start + chunk_size]), **kwargs)
    return results


def release(actors: Sequence[Any]) -> None:
    """Ends a stage's actors: Ray actors are killed (their memory returns at once, not when the
    handles are collected); plain objects with a ``close`` method are closed."""
    for actor in actors:
        if isinstance(actor, Remote):
            import ray

            ray.kill(actor.handle)
        elif callable(getattr(actor, "close", None)):
            actor.close()
