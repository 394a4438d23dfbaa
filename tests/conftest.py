"""Test session set-up shared by every tier.

Unit tests (tests/unit) need no services. Integration tests (tests/integration) use session-scoped
fixtures that start real services once per session: Ray + Serve (fixtures_serve), the Kafka-protocol
broker (fixtures_kafka), PostgreSQL with pgvector (fixtures_postgres), helm (fixtures_helm).
"""

from __future__ import annotations

import os

# Keep Ray and all traffic on loopback, torch single-threaded, and nothing reaching for a model hub.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

pytest_plugins = [
    "tests.fixtures_serve",
    "tests.fixtures_kafka",
    "tests.fixtures_postgres",
    "tests.fixtures_helm",
]
