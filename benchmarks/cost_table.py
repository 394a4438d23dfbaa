"""The cost replay's arithmetic, apart from the app so it is unit-tested with recorded inputs: the tenants,
reading `surge cost`'s printed table back into rows, the clients' token totals, the check that both agree,
and the scale-to-zero and always-on bills priced from replica-seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Tenant -> share of the replay's requests (a seeded draw assigns each request one).
TENANT_SHARES: dict[str, float] = {"acme": 0.5, "globex": 0.3, "initech": 0.2}


def tenant_keys() -> dict[str, str]:
    """API key -> tenant of the replay's principals (keys of a throwaway benchmark app)."""
    return {f"sk-cost-{tenant}": tenant for tenant in TENANT_SHARES}


def parse_cost_table(text: str) -> list[dict[str, Any]]:
    """The per-(model, version, tenant) rows of `surge cost`'s printed table.

    A row is seven cells: model, version, tenant, requests ('-' from Prometheus: -1), tokens_in,
    tokens_out, cost_usd; the header, the rule and the summary lines are not rows.
    """
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        cells = line.split()
        if len(cells) != 7 or cells[0] == "model":
            continue
        try:
            requests = -1 if cells[3] == "-" else int(cells[3])
            rows.append(
                {
                    "model": cells[0],
                    "version": cells[1],
                    "tenant": cells[2],
                    "requests": requests,
                    "tokens_in": int(cells[4]),
                    "tokens_out": int(cells[5]),
                    "cost_usd": float(cells[6]),
                }
            )
        except ValueError:
            continue
    return rows


def client_totals(outcomes: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Per tenant: answered requests and the tokens the responses' `usage` reported (failures count 0)."""
    totals: dict[str, dict[str, int]] = {}
    for outcome in outcomes:
        row = totals.setdefault(outcome["tenant"], {"requests": 0, "tokens_in": 0, "tokens_out": 0})
        if "error" in outcome:
            continue
        row["requests"] += 1
        row["tokens_in"] += int(outcome["prompt_tokens"])
        row["tokens_out"] += int(outcome["completion_tokens"])
    return totals


def check_tokens(
    rows: list[dict[str, Any]], clients: Mapping[str, Mapping[str, int]], model: str
) -> list[str]:
    """Where the table's tokens for `model` (all its versions) differ from the clients' per tenant; [] if
    they agree everywhere, a tenant missing from either side included."""
    table: dict[str, dict[str, int]] = {}
    for row in rows:
        if row["model"] != model:
            continue
        sums = table.setdefault(row["tenant"], {"tokens_in": 0, "tokens_out": 0})
        sums["tokens_in"] += row["tokens_in"]
        sums["tokens_out"] += row["tokens_out"]
    problems = []
    for tenant in sorted(set(table) | {t for t, c in clients.items() if c["requests"]}):
        got = table.get(tenant, {"tokens_in": 0, "tokens_out": 0})
        want = clients.get(tenant, {"tokens_in": 0, "tokens_out": 0})
        for key in ("tokens_in", "tokens_out"):
            if got[key] != want[key]:
                problems.append(
                    f"{model} tenant {tenant}: {key} {got[key]} in the table, {want[key]} received"
                )
    return problems


def priced_bill(
    replica_seconds: Mapping[str, float], usd_per_hour: Mapping[str, float], window_s: float
) -> dict[str, Any]:
    """Scale-to-zero and always-on bills of a window, per stage and in total.

    scale_to_zero = sum(replica_seconds[s] * usd_per_hour[s]) / 3600
    always_on     = sum(window_s * usd_per_hour[s]) / 3600 over every priced stage (one replica each)

    Worked example: window 50 s, gateway 50 s at 0.0111 USD/h and llm 20 s at 0.053 USD/h:
    scale-to-zero (50 * 0.0111 + 20 * 0.053) / 3600 = 0.000449 USD; always-on
    50 * (0.0111 + 0.053) / 3600 = 0.000890 USD.
    """
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    per_stage = {
        stage: {
            "replica_seconds": round(replica_seconds.get(stage, 0.0), 2),
            "usd_per_hour": price,
            "scale_to_zero_usd": round(replica_seconds.get(stage, 0.0) * price / 3600, 9),
            "always_on_usd": round(window_s * price / 3600, 9),
        }
        for stage, price in sorted(usd_per_hour.items())
    }
    return {
        "stages": per_stage,
        "scale_to_zero_usd": round(sum(s["scale_to_zero_usd"] for s in per_stage.values()), 9),
        "always_on_usd": round(sum(s["always_on_usd"] for s in per_stage.values()), 9),
        "window_s": round(window_s, 2),
    }
