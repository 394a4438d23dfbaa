"""Session fixtures: one local Ray instance (and Serve on a free loopback port) per test session."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """A local Ray instance on 127.0.0.1 for the whole session (Ray Data jobs and Serve share it).

    Logical CPUs are set above the 2 physical ones on purpose: replicas mostly wait on I/O, and if their
    CPU requests add up to more than the node has, a replica waits forever and `serve.run` blocks.
    """
    import ray

    ray.init(
        address="local",
        num_cpus=6,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_http_port(ray_session: None) -> Iterator[int]:
    """Serve started once per session, its HTTP proxy on a free 127.0.0.1 port."""
    from ray import serve

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
