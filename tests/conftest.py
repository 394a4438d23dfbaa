"""Test session set-up shared by every tier.

Unit tests (tests/unit) need no services. Integration tests (tests/integration) use session-scoped
fixtures that start real services once per session: Ray + Serve (fixtures_serve), the Kafka-protocol
broker (fixtures_kafka), PostgreSQL with pgvector (fixtures_postgres), helm (fixtures_helm).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from surge_core.local_ray import ensure_auth_token

# Keep Ray and all traffic on loopback, torch single-threaded, and nothing reaching for a model hub.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Ray's auth token comes from the checkout's .run/ (never ~/.ray): a new machine must pass too.
ensure_auth_token()
HOME_RAY_TOKEN = Path.home() / ".ray" / "auth_token"
HOME_RAY_TOKEN_EXISTED = HOME_RAY_TOKEN.exists()

pytest_plugins = [
    "tests.fixtures_serve",
    "tests.fixtures_kafka",
    "tests.fixtures_postgres",
    "tests.fixtures_helm",
    "tests.fixtures_prometheus",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`first_contact` tests run first: they start the README's stack on its fixed ports before the session's
    own Ray and app take the machine's two cores."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("first_contact") else 1)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if anything in it wrote a Ray token into HOME: on a new machine that token would be
    missing, and a test relying on it would pass here and fail there."""
    if not HOME_RAY_TOKEN_EXISTED and HOME_RAY_TOKEN.exists():
        print(f"\nERROR: the test session created {HOME_RAY_TOKEN}; Ray must use .run/ray-auth-token instead")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
