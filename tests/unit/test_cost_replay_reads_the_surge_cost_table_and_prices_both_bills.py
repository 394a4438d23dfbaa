"""The cost replay's arithmetic (benchmarks.cost_table) on recorded inputs: `surge cost`'s printed table read
back into rows, the clients' token totals, the check that both agree, and the two bills."""

from __future__ import annotations

import pytest

from benchmarks.cost_table import check_tokens, client_totals, parse_cost_table, priced_bill, tenant_keys

# Printed by `surge cost --since 80s` after a quick replay (two rows per tenant: LLM and the seeding).
TABLE = """surge cost, last 80s to 2026-12-01 23:30 UTC, from topic usage
model                        version  tenant           requests  tokens_in tokens_out     cost_usd
-----------------------------------------------------------------------------------------------------
all-MiniLM-L6-v2             1        acme                    1        120          0     0.000001
tiny-llama                   1        acme                   12       2400         90     0.000310
tiny-llama                   1        globex                  7       1400         52     0.000180
all-MiniLM-L6-v2@1: charged 0.000001 USD over 0.0222222 h; always-on (one replica of each stage for 0.0222222 h) would have cost 0.0005 USD
tiny-llama@1: charged 0.000490 USD over 0.0222222 h; always-on (one replica of each stage for 0.0222222 h) would have cost 0.0020 USD
"""


def outcomes() -> list[dict[str, object]]:
    acme = [{"tenant": "acme", "prompt_tokens": 200, "completion_tokens": 8} for _ in range(11)]
    acme.append({"tenant": "acme", "prompt_tokens": 200, "completion_tokens": 2})
    globex = [{"tenant": "globex", "prompt_tokens": 200, "completion_tokens": 8} for _ in range(6)]
    globex.append({"tenant": "globex", "prompt_tokens": 200, "completion_tokens": 4})
    failed = [{"tenant": "initech", "error": "HTTP 503"}]
    return [*acme, *globex, *failed]


def test_the_printed_table_reads_back_into_its_rows_only() -> None:
    rows = parse_cost_table(TABLE)
    assert [(r["model"], r["tenant"], r["requests"]) for r in rows] == [
        ("all-MiniLM-L6-v2", "acme", 1),
        ("tiny-llama", "acme", 12),
        ("tiny-llama", "globex", 7),
    ]
    assert rows[1]["tokens_in"] == 2400 and rows[1]["tokens_out"] == 90
    assert rows[1]["cost_usd"] == pytest.approx(0.00031)


def test_a_prometheus_table_reads_its_unknown_request_count_as_minus_one() -> None:
    (row,) = parse_cost_table("tiny-llama  1  acme  -  10  2  0.000100")
    assert row["requests"] == -1 and row["tokens_in"] == 10


def test_client_totals_count_answered_requests_and_their_tokens_per_tenant() -> None:
    totals = client_totals(outcomes())
    assert totals["acme"] == {"requests": 12, "tokens_in": 2400, "tokens_out": 90}
    assert totals["globex"] == {"requests": 7, "tokens_in": 1400, "tokens_out": 52}
    assert totals["initech"] == {"requests": 0, "tokens_in": 0, "tokens_out": 0}


def test_tokens_that_agree_per_tenant_pass_the_check() -> None:
    assert check_tokens(parse_cost_table(TABLE), client_totals(outcomes()), "tiny-llama") == []


def test_a_token_missing_from_the_table_fails_the_check_naming_tenant_and_direction() -> None:
    received = client_totals(outcomes())
    received["globex"]["tokens_out"] += 1
    assert check_tokens(parse_cost_table(TABLE), received, "tiny-llama") == [
        "tiny-llama tenant globex: tokens_out 52 in the table, 53 received"
    ]


def test_a_tenant_the_table_lacks_or_invents_fails_the_check() -> None:
    rows = [r for r in parse_cost_table(TABLE) if r["tenant"] != "globex"]
    assert check_tokens(rows, client_totals(outcomes()), "tiny-llama") == [
        "tiny-llama tenant globex: tokens_in 0 in the table, 1400 received",
        "tiny-llama tenant globex: tokens_out 0 in the table, 52 received",
    ]
    only_acme = {"acme": client_totals(outcomes())["acme"]}
    assert check_tokens(parse_cost_table(TABLE), only_acme, "tiny-llama")[0].startswith(
        "tiny-llama tenant globex: tokens_in 1400 in the table, 0 received"
    )


def test_the_bills_follow_the_docstrings_worked_example() -> None:
    bill = priced_bill({"gateway": 50.0, "llm": 20.0}, {"gateway": 0.0111, "llm": 0.053}, 50.0)
    assert bill["scale_to_zero_usd"] == pytest.approx(0.000449, abs=1e-6)
    assert bill["always_on_usd"] == pytest.approx(0.000890, abs=1e-6)
    assert bill["stages"]["llm"]["replica_seconds"] == 20.0


def test_a_stage_never_up_costs_nothing_with_scale_to_zero_and_a_full_window_always_on() -> None:
    bill = priced_bill({}, {"embedder": 0.036}, 100.0)
    assert bill["scale_to_zero_usd"] == 0 and bill["always_on_usd"] == pytest.approx(0.001)
    with pytest.raises(ValueError, match="window_s"):
        priced_bill({}, {"embedder": 0.036}, 0)


def test_every_tenant_has_its_own_key() -> None:
    assert sorted(tenant_keys().values()) == ["acme", "globex", "initech"]
