"""Guardrails on the deploy config: rules as data (`deployments/guardrails.yaml`), checked when the app is
built and by a CLI; the chart checks the same file's rules when it renders (`templates/_guardrails.tpl`).

A rule names a `check` from `CHECKS` (one small function per condition, registered by name, mirrored in
the chart's template) and carries its `params` and `message`. `enforce` raises on any violated rule whose
id is not in `guardrails.allow`, naming every one; an allowed violation is logged as a warning, so an
override is never silent. Example: `allow_unauthenticated: true` with `http_options.host: 0.0.0.0` ->
"guardrail gateway-auth: gateway.allow_unauthenticated is on while ..."; with `allow: [gateway-auth]` the
app builds and the log says "guardrail gateway-auth overridden by guardrails.allow".

    python -m deployments.guardrails check deployments/serve_config.yaml [--allow RULE_ID ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from deployments.model_registry import SurgeAppSettings
from deployments.settings import AutoscalingSettings

logger = logging.getLogger("ray.serve")
RULES_FILE = Path(__file__).with_name("guardrails.yaml")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class DeployFacts:
    """What the rules look at: the app's settings and the host its HTTP proxy binds (None: unknown, which
    no rule treats as loopback)."""

    settings: SurgeAppSettings
    http_host: str | None


def _stages(settings: SurgeAppSettings) -> dict[str, tuple[float, AutoscalingSettings]]:
    """Stage name -> (GPUs per replica, autoscaling); every model version is a stage of its own."""
    stages = {
        name: (stage.num_gpus, stage.autoscaling)
        for name, stage in (
            ("gateway", settings.gateway),
            ("embedder", settings.embedder),
            ("retriever", settings.retriever),
        )
    }
    for version in settings.model_versions():
        stages[f"llm {version.key}"] = (version.num_gpus, version.autoscaling)
    return stages


def _unauthenticated_gateway_off_loopback(facts: DeployFacts, params: dict[str, Any]) -> list[str]:
    if facts.settings.gateway.allow_unauthenticated and facts.http_host not in LOOPBACK_HOSTS:
        return [f"http host {facts.http_host or 'unknown'}"]
    return []


def _max_replicas_within_budget(facts: DeployFacts, params: dict[str, Any]) -> list[str]:
    total = sum(a.max_replicas for _, a in _stages(facts.settings).values())
    budget = int(params["budget"])
    return [f"{total} replicas at most, budget {budget}"] if total > budget else []


def _gpu_stage_idles_to_zero_or_keeps_warm(facts: DeployFacts, params: dict[str, Any]) -> list[str]:
    return [
        f"{name}: {gpus:g} GPU(s), min_replicas {a.min_replicas}, downscale_to_zero_delay_s "
        f"{a.downscale_to_zero_delay_s}"
        for name, (gpus, a) in _stages(facts.settings).items()
        if gpus > 0 and not a.keep_warm and (a.min_replicas > 0 or a.downscale_to_zero_delay_s is None)
    ]


def _logged_prompts_are_redacted(facts: DeployFacts, params: dict[str, Any]) -> list[str]:
    log = facts.settings.gateway.inference_log
    return ["include_prompt on, redact_prompt off"] if log.include_prompt and not log.redact_prompt else []


Check = Callable[[DeployFacts, dict[str, Any]], list[str]]
#: check name -> condition; each returns the details of its violations (empty: the rule holds).
CHECKS: dict[str, Check] = {
    "unauthenticated_gateway_off_loopback": _unauthenticated_gateway_off_loopback,
    "max_replicas_within_budget": _max_replicas_within_budget,
    "gpu_stage_idles_to_zero_or_keeps_warm": _gpu_stage_idles_to_zero_or_keeps_warm,
    "logged_prompts_are_redacted": _logged_prompts_are_redacted,
}


class GuardrailRule(BaseModel):
    """One rule of guardrails.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9-]{1,62}$", description="Stable id, used by `allow`.")
    description: str = Field(min_length=1, description="What the rule keeps true.")
    check: str = Field(description="Name of the condition in CHECKS (and in the chart's template).")
    params: dict[str, Any] = Field(default_factory=dict, description="The condition's numbers.")
    message: str = Field(min_length=1, description="What is wrong and how to fix it.")

    def model_post_init(self, context: Any) -> None:
        if self.check not in CHECKS:
            raise ValueError(f"rule {self.id}: unknown check {self.check!r}; known: {sorted(CHECKS)}")


class GuardrailRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: tuple[GuardrailRule, ...] = Field(min_length=1, description="The rules, in order.")


@dataclass(frozen=True)
class Violation:
    rule: GuardrailRule
    details: tuple[str, ...]

    def __str__(self) -> str:
        return f"guardrail {self.rule.id}: {self.rule.message} ({'; '.join(self.details)})"


@cache
def load_rules(path: Path = RULES_FILE) -> tuple[GuardrailRule, ...]:
    return GuardrailRules.model_validate(yaml.safe_load(path.read_text())).rules


def evaluate(facts: DeployFacts, rules: Iterable[GuardrailRule] | None = None) -> list[Violation]:
    return [
        Violation(rule, tuple(details))
        for rule in (load_rules() if rules is None else rules)
        if (details := CHECKS[rule.check](facts, rule.params))
    ]


def enforce(facts: DeployFacts, allow: Sequence[str] = ()) -> list[Violation]:
    """Raise ValueError naming each violated rule not in `allow`; log each allowed one. Returns the
    allowed violations."""
    rules = load_rules()
    unknown = sorted(set(allow) - {r.id for r in rules})
    if unknown:
        raise ValueError(f"guardrails.allow: unknown rule id(s) {unknown}; known: {[r.id for r in rules]}")
    violations = evaluate(facts, rules)
    refused = [v for v in violations if v.rule.id not in allow]
    if refused:
        raise ValueError("\n".join(str(v) for v in refused))
    for v in violations:
        logger.warning("guardrail %s overridden by guardrails.allow: %s", v.rule.id, "; ".join(v.details))
    return violations


def serve_http_host() -> str | None:
    """The host the running Serve instance's HTTP proxy binds (its http_options), or None when no Serve
    instance is reachable (a plain import, local testing mode): then no rule treats the host as loopback.

    Only asked when Ray is already initialised (the `serve run` driver, Serve's build task, a test session):
    Serve's client would otherwise start a local Ray just to answer, on a plain `import deployments.app`.
    """
    import ray

    if not ray.is_initialized():
        return None
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
        return None if client is None else str(client.http_config.host)
    except Exception:
        return None


def check_serve_config(path: Path, allow: Sequence[str] = ()) -> list[Violation]:
    """Every application of a serve config file, with its http_options.host and its own allow list."""
    config = yaml.safe_load(path.read_text()) or {}
    host = (config.get("http_options") or {}).get("host", "127.0.0.1")  # Serve's default host
    allowed: list[Violation] = []
    for app in config.get("applications", []):
        settings = SurgeAppSettings.model_validate(app.get("args") or {})
        allowed += enforce(DeployFacts(settings, host), [*settings.guardrails.allow, *allow])
    return allowed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.guardrails")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="Check a serve config against the guardrails.")
    check.add_argument("config", type=Path, help="Serve config YAML (e.g. deployments/serve_config.yaml).")
    check.add_argument("--allow", action="append", default=[], metavar="RULE_ID", help="Override a rule.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        allowed = check_serve_config(args.config, args.allow)
    except ValueError as error:
        print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    print(f"{args.config}: guardrails hold ({len(allowed)} overridden)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
