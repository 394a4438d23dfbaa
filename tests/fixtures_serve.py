"""Session fixtures: one local Ray instance (and Serve on a free loopback port) per test session."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


TEST_API_KEY = "sk-surge-test-key"
# Principals of the keys file the test app reads (tenants other than the default; see deployments.api_keys).
TENANT_KEYS: dict[str, dict[str, Any]] = {
    "sk-acme-all": {
        "name": "acme-all",
        "tenant": "acme",
        "scopes": ["inference", "embeddings", "documents:read", "documents:write"],
    },
    "sk-globex-all": {
        "name": "globex-all",
        "tenant": "globex",
        "scopes": ["inference", "embeddings", "documents:read", "documents:write"],
    },
    "sk-acme-nothing": {"name": "acme-models-only", "tenant": "acme", "scopes": ["documents:read"]},
    "sk-limited": {"name": "limited", "tenant": "limited", "scopes": ["inference", "embeddings"]},
}
# The `limited` tenant: 10 requests/s (600 per minute), a one-second bucket.
LIMITED_RPS = 10


def write_keys_file(path: Path) -> Path:
    import hashlib

    import yaml

    principals = [
        {**spec, "key_sha256": hashlib.sha256(key.encode()).hexdigest()} for key, spec in TENANT_KEYS.items()
    ]
    path.write_text(yaml.safe_dump({"principals": principals}), encoding="utf-8")
    return path


# Short enough that the scale-to-zero test sees zero within a minute, long enough that back-to-back tests
# find the stages warm instead of paying a cold start each.
SCALE_FAST = {
    "min_replicas": 0,
    "max_replicas": 1,
    "target_ongoing_requests": 4,
    "upscale_delay_s": 0,
    "downscale_delay_s": 15,
    "downscale_to_zero_delay_s": 15,
    "look_back_period_s": 2,
    "metrics_interval_s": 0.5,
}


@dataclass(frozen=True)
class SurgeApp:
    base_url: str
    api_key: str
    settings: Any

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def app_settings_for_tests(data_dir: Path, llm_model_dir: Path, bootstrap_servers: str | None = None) -> Any:
    """The app as tests run it: tiny random Llama on vLLM, MiniLM, embedded index, fast scale to zero,
    and (with `bootstrap_servers`) one inference-log record per request."""
    from deployments.settings import AppSettings

    inference_log = (
        {"enabled": True, "kafka": {"bootstrap_servers": bootstrap_servers}}
        if bootstrap_servers
        else {"enabled": False}
    )
    return AppSettings.model_validate(
        {
            "gateway": {
                "inference_log": inference_log,
                "online_features": {"backend": "sqlite", "path": str(data_dir / "features.sqlite")},
                "env": {"SURGE_API_KEYS": f"{TEST_API_KEY},sk-second-key"},
                "api_keys_file": str(write_keys_file(data_dir / "api-keys.yaml")),
                "api_keys_reload_s": 1,
                "rate_limits": {
                    "tenants": {
                        "limited": {
                            "requests_per_minute": LIMITED_RPS * 60,
                            "burst_s": 1,
                            "max_concurrent": 50,
                        }
                    }
                },
                "stream_idle_timeout_s": 15,
                "stage_timeout_s": 120,
                "autoscaling": {"min_replicas": 1, "max_replicas": 1},
                "max_ongoing_requests": 6,
                "max_queued_requests": 4,
                "retry_after_s": 2,
                "max_body_bytes": 64 * 1024,
                "cold_start_timeout_s": 180,
                "max_tokens_limit": 256,
                "chunk_chars": 300,
                "chunk_overlap_chars": 30,
            },
            "embedder": {
                "autoscaling": SCALE_FAST,
                "num_cpus": 0.5,
                # Follows `surge reembed` (embedding versions); no catalog, no change.
                "versions_store": {"backend": "embedded", "path": str(data_dir / "index")},
            },
            "retriever": {
                "store": {"backend": "embedded", "path": str(data_dir / "index")},
                "num_cpus": 0.25,
            },
            "llm": {
                "model": str(llm_model_dir),
                "served_model_name": "tiny-llama",
                "max_model_len": 512,
                "num_cpus": 1,
                # The LLM runs surge's SLO-aware policy (as in the serve config), so every test exercises it.
                "autoscaling": {**SCALE_FAST, "policy": {"replica_policy": "slo", "ttft_slo_s": 2}},
            },
        }
    )


@pytest.fixture(scope="session")
def tiny_llm_dir() -> Path:
    from surge_core.model_assets import build_tiny_llama, cache_dir

    return build_tiny_llama(cache_dir() / "models" / "tiny-llama")


@pytest.fixture(scope="session")
def app_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A broker of the app's own (the gateway's inference log): tests may stop and restart it."""
    from pipelines.broker import LocalBroker

    broker = LocalBroker(data_dir=tmp_path_factory.mktemp("app-kafka"), port=free_port())
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def surge_app(
    serve_http_port: int, tiny_llm_dir: Path, app_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SurgeApp]:
    """The whole surge application, served for real once per session."""
    import httpx
    from ray import serve

    from deployments.app import build_app

    settings = app_settings_for_tests(
        tmp_path_factory.mktemp("surge-data"), tiny_llm_dir, bootstrap_servers=app_broker.bootstrap_servers
    )
    serve.run(build_app(settings), name="surge", route_prefix="/")
    base_url = f"http://127.0.0.1:{serve_http_port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        raise RuntimeError("the surge app did not answer /healthz within 300 s")
    yield SurgeApp(base_url=base_url, api_key=TEST_API_KEY, settings=settings)
    serve.delete("surge")


def replicas_running(deployment: str, app: str = "surge") -> int:
    from ray import serve

    states = serve.status().applications[app].deployments[deployment].replica_states
    return int(states.get("RUNNING", 0))


def wait_for_replicas(deployment: str, predicate: Callable[[int], bool], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        count = replicas_running(deployment)
        if predicate(count) or time.monotonic() > deadline:
            return count
        time.sleep(0.5)
