"""Cost replay: `surge cost` over a time-compressed slice of the Azure conversation trace, sent by tenants.

Replays arrivals and (scaled-down) token counts of `AzureLLMInferenceTrace_conv.csv` (benchmarks/data/,
CC-BY 4.0) as RAG chat completions through the real app, every stage but the gateway allowed to scale
to zero, each request sent with the API key of one of three tenants (acme, globex, initech: 50/30/20 by
a seeded draw). The gateway publishes one record per request to the real `usage` topic of a local
broker; then the real `surge cost --since <replay window>` CLI prints its table from that topic, and the
benchmark stores the printed table and its parsed rows.

The table is checked, loudly: per tenant, its tokens in and out must equal what the replay's clients were
told in each response's `usage`, or the benchmark fails (exit code 1, the mismatch printed).

Headline: what the replay window cost with scale to zero / what always-on would have cost, both priced
with the app's price table (`surge_core.cost`, the defaults unless the serve config sets `cost.prices`):

    scale-to-zero USD = sum over stages of measured replica-seconds x stage USD/h / 3600
    always-on USD     = sum over stages of window seconds x stage USD/h / 3600 (one replica each)

Replica-seconds are Serve's replica counts (starting, running and stopping all paid for) polled every
0.5 s. Worked example: a 50 s window in which the LLM (0.053 USD/h) was up 20 s and the gateway, embedder
and retriever (0.0111 + 0.0132 + 0.0132 USD/h) were up 50, 25 and 25 s costs 0.000632 USD against
0.00126 USD always-on: 0.50.

    python -m benchmarks.cost_replay [--quick] [--time-scale 0.25] [--on-s 10 --off-s 20]
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import _harness as h
from benchmarks import _surge
from benchmarks.cost_table import (
    TENANT_SHARES,
    check_tokens,
    client_totals,
    parse_cost_table,
    priced_bill,
    tenant_keys,
)
from benchmarks.trace_slices import ReplayPlan, ReplayRequest, carve, prompt, replica_seconds
from benchmarks.traces import DEFAULT_TRACE, load_trace

NAME = "cost_replay"
# Serve deployment -> the stage name the price table and usage records use.
STAGE_OF = {"Gateway": "gateway", "Embedder": "embedder", "Retriever": "retriever", "LLMServer": "llm"}


def main(argv: list[str] | None = None) -> Path:
    parser = h.common_parser(__doc__ or NAME)
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Azure trace CSV")
    parser.add_argument("--time-scale", type=float, default=0.25, help="replay time = trace time x this")
    parser.add_argument("--start-s", type=float, default=0.0, help="where in the trace to start")
    parser.add_argument("--duration-s", type=float, default=None, help="replay seconds")
    parser.add_argument("--on-s", type=float, default=10.0, help="seconds of traffic per on/off cycle")
    parser.add_argument("--off-s", type=float, default=20.0, help="seconds of silence per cycle")
    parser.add_argument("--keep-every", type=int, default=None, help="keep every n-th request")
    parser.add_argument("--max-tokens-cap", type=int, default=16)
    parser.add_argument(
        "--no-prometheus",
        action="store_true",
        help="skip the local Prometheus (surge cost from the topic only)",
    )
    _surge.add_app_arguments(parser)
    args = parser.parse_args(argv)
    if args.base_url:
        parser.error(
            "cost_replay starts its own app and broker (the usage topic): --base-url is not supported"
        )
    plan = ReplayPlan(
        start_s=args.start_s,
        duration_s=args.duration_s or (50.0 if args.quick else 180.0),
        time_scale=args.time_scale,
        on_s=args.on_s,
        off_s=args.off_s,
        keep_every=args.keep_every or (4 if args.quick else 2),
        token_scale=0.125,
        max_tokens_cap=8 if args.quick else args.max_tokens_cap,
    )
    schedule = carve(load_trace(args.trace), plan)
    rng = random.Random(args.seed)
    tenants = rng.choices(list(TENANT_SHARES), weights=list(TENANT_SHARES.values()), k=len(schedule))
    started = time.time()
    machine = h.machine_info()
    from pipelines.broker import LocalBroker

    prometheus: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="surge-bench-cost-") as tmp:
        broker = LocalBroker(data_dir=Path(tmp) / "broker", port=h.free_port())
        broker.start()
        try:
            with h.local_serve() as port, contextlib.ExitStack() as stack:
                settings = app_settings(args, Path(tmp), broker.bootstrap_servers)
                target = _surge.deploy(port, settings)
                stack.callback(_surge.undeploy)
                prometheus_url = start_prometheus(stack, prometheus, args.no_prometheus)
                _surge.wait_ready(target, 600)
                seeded_at = time.time()
                for key in tenant_keys():
                    _surge.seed_documents(h.ServeTarget(target.base_url, key, True), 3, seed=args.seed)
                _surge.wait_for_zero(target, ("Embedder", "Retriever", "LLMServer"), 120)
                run = replay(target, schedule, tenants)
                if prometheus_url:
                    # Ray reports replicas' metrics every few seconds, Prometheus scrapes every second.
                    prometheus["table"] = surge_cost(
                        broker.bootstrap_servers, seeded_at, prometheus=prometheus_url
                    )
            table = surge_cost(broker.bootstrap_servers, seeded_at)
        finally:
            broker.stop()
    return report(args, plan, schedule, settings, run, table, prometheus, started, machine)


def app_settings(args: Any, tmp: Path, bootstrap_servers: str) -> Any:
    """The benchmark app with its usage topic on `bootstrap_servers` and the tenants' keys file."""
    keys = tmp / "api-keys.yaml"
    import yaml

    keys.write_text(
        yaml.safe_dump(
            {
                "principals": [
                    {
                        "name": f"{tenant}-app",
                        "tenant": tenant,
                        "scopes": ["inference", "documents:read", "documents:write"],
                        "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
                    }
                    for key, tenant in tenant_keys().items()
                ]
            }
        )
    )
    stage = {"autoscaling": _surge.FAST_ZERO}
    return _surge.bench_settings(
        args,
        tmp / "index",
        embedder=stage,
        llm=stage,
        retriever={"autoscaling": dict(_surge.FAST_ZERO)},
        gateway={
            "api_keys_file": str(keys),
            "inference_log": {"enabled": True, "kafka": {"bootstrap_servers": bootstrap_servers}},
        },
    )


def replay(target: h.ServeTarget, schedule: list[ReplayRequest], tenants: list[str]) -> dict[str, Any]:
    """Send `schedule` open-loop, each request with its tenant's key; poll replica counts meanwhile."""
    model = "rag/" + _surge.llm_name(target)
    keys = {tenant: key for key, tenant in tenant_keys().items()}
    polls: list[tuple[float, dict[str, int]]] = []
    stop = threading.Event()
    t0 = time.monotonic()

    def poll() -> None:
        from ray import serve

        while not stop.is_set():
            with contextlib.suppress(Exception):  # a missed poll is a gap, not a failure
                status = serve.status().applications[_surge.BENCH_APP]
                counts = {n: sum(d.replica_states.values()) for n, d in status.deployments.items()}
                polls.append((time.monotonic() - t0, counts))
            stop.wait(0.5)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        outcomes = asyncio.run(_send_all(target, model, schedule, tenants, keys, t0))
    finally:
        stop.set()
        poller.join(5)
    return {"outcomes": outcomes, "polls": polls, "duration_s": time.monotonic() - t0}


async def _send_all(
    target: h.ServeTarget,
    model: str,
    schedule: list[ReplayRequest],
    tenants: list[str],
    keys: dict[str, str],
    t0: float,
) -> list[dict[str, Any]]:
    import httpx

    bar = h.progress_bar("cost replay", len(schedule))
    async with httpx.AsyncClient(timeout=900, limits=httpx.Limits(max_connections=256)) as client:

        async def one(request: ReplayRequest, tenant: str) -> dict[str, Any]:
            await asyncio.sleep(max(0.0, request.t_s - (time.monotonic() - t0)))
            outcome: dict[str, Any] = {"t_s": request.t_s, "tenant": tenant}
            started = time.perf_counter()
            try:
                response = await client.post(
                    f"{target.base_url}/v1/chat/completions",
                    json={
                        "model": model,
                        "messages": [{"role": "user", "content": prompt(request)}],
                        "max_tokens": request.max_tokens,
                        "temperature": 0,
                    },
                    headers={"Authorization": f"Bearer {keys[tenant]}"},
                )
                h.check_status(response)
                usage = response.json()["usage"]
                outcome.update(
                    prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"]
                )
            except Exception as exc:
                outcome["error"] = f"{type(exc).__name__}: {str(exc)[:100]}"
            outcome["latency_s"] = time.perf_counter() - started
            bar.update(1)
            return outcome

        outcomes = await asyncio.gather(*(one(r, t) for r, t in zip(schedule, tenants, strict=True)))
    bar.close()
    return list(outcomes)


def start_prometheus(stack: contextlib.ExitStack, facts: dict[str, Any], skip: bool) -> str | None:
    """A local Prometheus scraping Ray's export port (its URL), or None with the reason in `facts`."""
    if skip:
        facts["skipped"] = "--no-prometheus"
        return None
    from benchmarks._prometheus import local_prometheus, ray_metrics_export_port

    try:
        url = stack.enter_context(local_prometheus(ray_metrics_export_port()))
    except Exception as error:  # no apt, no binary: the topic table still runs
        facts["skipped"] = f"{type(error).__name__}: {str(error)[:200]}"
        return None
    facts["url"] = url
    return url


def surge_cost(
    bootstrap_servers: str, since_epoch: float, settle_s: float = 60.0, prometheus: str | None = None
) -> str:
    """The real `surge cost --since <window>` CLI's output, from the topic or from `prometheus` (records are
    sent, and metrics reported, in the background: the call is repeated until two readings agree, at most
    `settle_s`). The window reaches back to `since_epoch` (the seeding) from the moment of each call: a
    window sized by the replay's length alone ended before the replay once undeploying and Prometheus's
    reading took longer than its margin (the topic table came out empty)."""
    if prometheus:
        time.sleep(10)  # at least one report of Ray's metrics agent and a scrape after the last request
    deadline = time.monotonic() + settle_s
    # One window for every reading (so that two readings can agree), still reaching back past the seeding
    # at the last one.
    since = f"{math.ceil(time.time() - since_epoch + settle_s) + 10}s"
    command = [sys.executable, "-m", "pipelines.cli", "cost", "--since", since]
    command += ["--bootstrap-servers", bootstrap_servers]
    command += ["--prometheus", prometheus] if prometheus else []
    last = ""
    while True:
        done = subprocess.run(command, cwd=h.REPO_ROOT, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"surge cost failed ({done.returncode}): {done.stderr[-500:]}")
        # Drop the first line (its timestamp changes) when comparing readings.
        body = done.stdout.split("\n", 1)[-1]
        if body == last or time.monotonic() > deadline:
            return done.stdout
        last = body
        time.sleep(3)


def report(
    args: Any,
    plan: ReplayPlan,
    schedule: list[ReplayRequest],
    settings: Any,
    run: dict[str, Any],
    table: str,
    prometheus: dict[str, Any],
    started: float,
    machine: dict[str, Any],
) -> Path:
    from deployments.usage_recording import stage_costs

    model = _surge.served_name(_surge.llm_model(args))
    rows = parse_cost_table(table)
    clients = client_totals(run["outcomes"])
    mismatches = check_tokens(rows, clients, model)
    print(table)
    if "table" in prometheus:
        print(prometheus["table"])
        prometheus["rows"] = parse_cost_table(prometheus["table"])
        # Not fatal: Prometheus's increase() extrapolates to the window's edges (measured: 0-2 % more tokens
        # than the clients received); the topic is the exact ledger.
        prometheus["token_differences_vs_clients"] = check_tokens(prometheus["rows"], clients, model)
    prices = {stage: cost.usd_per_hour for stage, cost in stage_costs(settings).items()}
    seconds = replica_seconds(run["polls"], run["duration_s"])
    stage_seconds = {STAGE_OF[name]: s for name, s in seconds.items() if name in STAGE_OF}
    bill = priced_bill(stage_seconds, prices, run["duration_s"])
    errors = [o["error"] for o in run["outcomes"] if "error" in o]
    charged = round(sum(r["cost_usd"] for r in rows), 6)
    headline = h.Headline.ratio(
        "replay cost, scale-to-zero / always-on (USD, replica-seconds x price table)",
        bill["scale_to_zero_usd"],
        bill["always_on_usd"],
        goal=1.0,
        better="lower",
        baseline="the same window with one replica of every stage always on, same price table",
    )
    results = h.Results(
        headline=headline,
        name=NAME,
        description="`surge cost` from the usage topic after replaying a time-compressed slice of the "
        "Azure conversation trace through the real app as three tenants.",
        parameters={
            "trace": str(args.trace),
            "plan": plan.describe(),
            "requests": len(schedule),
            "tenant_shares": TENANT_SHARES,
            "llm_model": model,
            "policy_scale_to_zero": _surge.FAST_ZERO,
            "price_table": settings.cost.prices.model_dump(),
            "stage_usd_per_hour": prices,
            "request": "RAG chat completion (rag/<model>), not streamed",
        },
        figures={
            "surge_cost_stdout": table,
            "surge_cost_prometheus": prometheus,
            "surge_cost_rows": rows,
            "client_tokens_by_tenant": clients,
            "token_check": mismatches or "tokens in the table equal the clients' usage",
            "replica_seconds": stage_seconds,
            "bill": bill,
            "surge_cost_charged_usd": charged,
            "errors": len(errors),
            "error_samples": sorted(set(errors))[:3],
            "latency_s": h.summarize([o["latency_s"] for o in run["outcomes"] if "error" not in o]),
            "window_s": round(run["duration_s"], 1),
        },
        table_headers=["model", "version", "tenant", "requests", "tokens_in", "tokens_out", "cost_usd"],
        table_rows=[
            [
                r["model"],
                r["version"],
                r["tenant"],
                r["requests"],
                r["tokens_in"],
                r["tokens_out"],
                r["cost_usd"],
            ]
            for r in rows
        ],
        notes=[
            f"Trace {args.trace.name}: replay time = trace time x {plan.time_scale}, on {plan.on_s} s / off "
            f"{plan.off_s} s, every {plan.keep_every}th request kept, max_tokens = min({plan.max_tokens_cap}, "
            f"generated x {plan.token_scale}).",
            f"Scale-to-zero bill {bill['scale_to_zero_usd']:.6f} USD vs always-on {bill['always_on_usd']:.6f} "
            f"USD over {run['duration_s']:.0f} s (default price table: "
            f"{settings.cost.prices.cpu_usd_per_hour} USD/vCPU-h, "
            f"{settings.cost.prices.memory_usd_per_gib_hour} USD/GiB-h; CPU stages here).",
            f"`surge cost`'s charged total ({charged:.6f} USD) prices each request's stage seconds (its whole "
            "life at the gateway, cold-start waits included) as one slot of each replica "
            "(max_ongoing_requests): here "
            f"{h.ratio(charged, bill['scale_to_zero_usd'], 3)}x the replica-second bill; the rest of the bill "
            "is capacity no request used (idle warm seconds, empty slots). Before slots, each request paid "
            "for whole replicas and the charges came to 26x the bill.",
            "Rows with the embedding model are the seeding's /v1/documents writes, not replay requests.",
            "The table above is `surge cost` from the usage topic (exact, checked); "
            + (
                "`surge cost --prometheus` over a local Prometheus scraping Ray's export port every second is "
                "in figures.surge_cost_prometheus, with its token differences from the clients' (increase() "
                "extrapolates to the window's edges)."
                if "table" in prometheus
                else f"Prometheus was not used ({prometheus.get('skipped')})."
            ),
        ],
    )
    path = h.write_results(results, args.out, started, machine)
    if mismatches:
        print("\nTOKEN CHECK FAILED: surge cost's table disagrees with what the clients received:")
        for line in mismatches:
            print("  " + line)
        raise SystemExit(1)
    return path


if __name__ == "__main__":
    main()
