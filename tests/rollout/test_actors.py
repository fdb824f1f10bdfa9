"""Spreading work over Ray actors, and surviving a dead one."""

import os

import pytest

from rollout.actors import Remote, broadcast, map_actors, shard, spawn


def make_doubler_class():
    """Defined in a function so Ray ships the class by value (test modules are not importable there)."""

    class Doubler:
        def __init__(self, *, die_on_first_call: bool = False):
            self.die = die_on_first_call

        def double(self, items):
            if self.die:
                os._exit(1)  # a worker lost mid-task (OOM kill, node loss)
            return [2 * i for i in items]

        def pid(self):
            return os.getpid()

    return Doubler


Doubler = make_doubler_class()


def test_shard_is_contiguous_and_balanced():
    assert shard(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert shard([1], 3) == [[1], [], []]


def test_plain_objects_work_without_ray():
    workers = [Doubler(), Doubler()]
    assert map_actors(workers, Doubler.double, [1, 2, 3]) == [2, 4, 6]


@pytest.mark.integration
def test_actors_run_in_their_own_processes(ray_local):
    doubler = make_doubler_class()
    workers = spawn(doubler, 2)
    assert all(isinstance(w, Remote) for w in workers)
    pids = {w.pid() for w in workers}  # called like the plain object, run in the actor
    assert len(pids) == 2 and os.getpid() not in pids
    assert workers[0].double([5]) == [10]
    assert map_actors(workers, doubler.double, list(range(5))) == [0, 2, 4, 6, 8]
    with pytest.raises(AttributeError, match="no method 'tripl'"):
        workers[0].tripl([1])
    with pytest.raises(TypeError, match="not a method of"):
        workers[0].submit(Doubler.double, [1])  # another class's function


@pytest.mark.integration
def test_a_dead_worker_loses_no_results(ray_local):
    doubler = make_doubler_class()
    healthy = spawn(doubler, 1)[0]
    doomed = spawn(doubler, 1, die_on_first_call=True)[0]
    assert map_actors([doomed, healthy], doubler.double, [1, 2, 3, 4]) == [2, 4, 6, 8]
    with pytest.raises(RuntimeError, match="every double worker died"):
        map_actors(spawn(doubler, 1, die_on_first_call=True), doubler.double, [1])


def test_broadcast_reaches_plain_objects():
    workers = [Doubler(), Doubler()]
    assert broadcast(workers, Doubler.double, [1]) == workers


@pytest.mark.integration
def test_broadcast_drops_a_dead_worker_and_goes_on(ray_local, caplog):
    doubler = make_doubler_class()
    healthy = spawn(doubler, 1)[0]
    doomed = spawn(doubler, 1, die_on_first_call=True)[0]
    assert broadcast([doomed, healthy], doubler.double, [1, 2]) == [healthy]
    assert "going on without it" in caplog.text
    with pytest.raises(RuntimeError, match="every double worker died"):
        broadcast(spawn(doubler, 1, die_on_first_call=True), doubler.double, [1])


def test_methods_are_named_by_the_function_and_dispatch_to_overrides():
    class Tripler(Doubler):
        def double(self, items):
            return [3 * i for i in items]

    assert map_actors([Tripler()], Doubler.double, [1, 2]) == [3, 6]  # the override runs
    with pytest.raises(TypeError, match="not a method of Doubler"):
        map_actors([Doubler()], Tripler.double, [1])


def kill(worker: Remote) -> None:
    """Kills a Ray actor and waits until calls to it fail: ``ray.kill`` only asks for the kill, and a
    call made at once can still reach the live process."""
    import time

    import ray
    from ray.exceptions import RayActorError

    ray.kill(worker.handle)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            worker.pid()
        except RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers after 60 s")


@pytest.mark.integration
def test_a_killed_actor_is_restarted_with_its_spawn_arguments(ray_local):
    doubler = make_doubler_class()
    workers = spawn(doubler, 2)
    before = workers[0].pid()
    kill(workers[0])
    revived = []
    assert map_actors(workers, doubler.double, [1, 2, 3, 4], revive=revived.append) == [2, 4, 6, 8]
    assert revived == [workers[0]] and workers[0].restarts == 1 and workers[0].pid() != before
    kill(workers[1])
    assert broadcast(workers, doubler.double, [1], restart=True) == workers  # restarted, then called
    assert workers[1].restarts == 1 and workers[1].double([3]) == [6]
    with pytest.raises(RuntimeError, match="cannot be restarted"):
        Remote(workers[0].handle, doubler).restart()
