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
