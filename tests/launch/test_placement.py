"""Where the roles' actors go: the plan (pure), and a colocated placement group on a Ray cluster
that declares GPUs."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from launch.config import ConfigError, load_config
from launch.placement import Placement, Slot, plan


def test_separate_actors_share_the_gpus_equally_up_to_one_each():
    slots = plan({"rollout": 7, "learner": 8, "reference": 1}, gpus=16, mode="separate")
    assert slots["rollout"] == [Slot(None, 1.0)] * 7 and slots["reference"] == [Slot(None, 1.0)]
    assert plan({"rollout": 2, "learner": 1, "reference": 1}, gpus=1, mode="separate")["learner"] == [Slot(None, 0.25)]
    assert plan({"rollout": 2, "learner": 2}, gpus=8, mode="separate")["rollout"] == [Slot(None, 1.0)] * 2
    assert plan({"rollout": 2}, gpus=0, mode="separate")["rollout"] == [Slot(None, 0.0)] * 2


def test_colocated_worker_i_and_learner_i_share_bundle_i_and_singletons_go_to_the_least_loaded():
    slots = plan({"rollout": 8, "learner": 8, "reference": 1, "critic": 1}, gpus=8, mode="colocated")
    assert [s.bundle for s in slots["rollout"]] == list(range(8)) == [s.bundle for s in slots["learner"]]
    assert [s.bundle for s in slots["reference"]] == [0] and [s.bundle for s in slots["critic"]] == [1]
    # Bundles 0 and 1 hold three actors, so every actor reserves a third of a GPU.
    assert {s.gpus for role in slots.values() for s in role} == {1 / 3}
    # More learners than workers: the spare learners go where no worker is.
    slots = plan({"rollout": 2, "learner": 4}, gpus=4, mode="colocated")
    assert [s.bundle for s in slots["learner"]] == [2, 3, 0, 1] and slots["learner"][0].gpus == 0.5
    # On CPU: one bundle per worker or learner, no GPU.
    slots = plan({"rollout": 2, "learner": 1, "reference": 1}, gpus=0, mode="colocated")
    assert [(s.bundle, s.gpus) for role in slots.values() for s in role] == [(0, 0.0), (1, 0.0), (0, 0.0), (1, 0.0)]


def test_a_plan_that_cannot_be_placed_is_refused():
    with pytest.raises(ValueError, match="needs 4 GPUs; the cluster has 2"):
        plan({"rollout": 4}, gpus=2, mode="colocated", bundles=4)
    with pytest.raises(ValueError, match="unknown roles"):
        plan({"judge": 1}, gpus=1, mode="separate")
    with pytest.raises(ConfigError, match="unknown placement.mode 'hybrid'"):
        load_config(None, ["placement.mode=hybrid"])
    placement = Placement(plan({"rollout": 1}, gpus=0, mode="separate"))
    assert placement.take("rollout") == {"num_gpus": 0.0, "placement": None}
    with pytest.raises(RuntimeError, match="no slot left for another 'rollout' actor"):
        placement.take("rollout")


PROBE = textwrap.dedent('''
    import json, ray
    from launch.placement import Placement, PlacementConfig
    from rollout.actors import spawn

    class Probe:
        def where(self):
            return [int(i) for i in ray.get_gpu_ids()], ray.get_runtime_context().get_assigned_resources()

    ray.init(num_cpus=8, num_gpus=2, include_dashboard=False)
    placement = Placement.create(PlacementConfig(mode="colocated"), {"rollout": 2, "learner": 2, "reference": 1}, gpus=2)
    actors = {role: [spawn(Probe, 1, **placement.take(role))[0] for _ in range(n)]
              for role, n in (("rollout", 2), ("learner", 2), ("reference", 1))}
    print(json.dumps({role: [a.where() for a in group] for role, group in actors.items()}))
''')


@pytest.mark.integration
def test_a_colocated_placement_puts_worker_i_and_learner_i_on_the_same_gpu():
    """Ray hands each actor a GPU of its bundle (the cluster declares 2 GPUs; no CUDA is used)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": os.getcwd()}
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    where = json.loads(result.stdout.strip().splitlines()[-1])
    gpu = {role: [ids for ids, _ in actors] for role, actors in where.items()}
    assert all(len(ids) == 1 for ids in (*gpu["rollout"], *gpu["learner"], *gpu["reference"]))
    assert gpu["rollout"] == gpu["learner"] and gpu["rollout"][0] != gpu["rollout"][1]
    assert gpu["reference"] == [gpu["rollout"][0]]
    shares = [sum(v for k, v in resources.items() if k.startswith("GPU")) for actors in where.values()
              for _, resources in actors]
    assert shares == pytest.approx([1 / 3] * 5, abs=1e-3)  # Ray keeps 4 decimals
