"""Every ci/ scenario lints with `helm lint --strict`, renders, and validates offline.

Core kinds: kubernetes-validate --strict against the oldest (1.31) and newest (1.37) Kubernetes minors it
ships. Custom resources: the vendored CRD schemas (unknown fields rejected; CEL rules not evaluated).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import kubernetes_validate
import pytest

from tests.fixtures_helm import CHART_DIR, KUBERNETES_VERSIONS, SCENARIOS, CrdValidators, Rendered

pytestmark = pytest.mark.integration

CORE_GROUPS = {
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
}
CUSTOM_KINDS = {"RayService", "RayJob", "ScaledObject", "ServiceMonitor"}
# Rendered but not schema-checked: KEDA's TriggerAuthentication and the Gateway API's HTTPRoute CRDs are
# not vendored (only ScaledObject is); behaviour tests check their fields. A PrometheusRule's spec is the
# rules file, checked by promtool (test_prometheus_rules_pass_promtool).
UNVALIDATED_KINDS = {"TriggerAuthentication", "HTTPRoute", "PrometheusRule"}


def test_every_scenario_is_covered() -> None:
    assert set(SCENARIOS) >= {"default", "gpu", "pgvector", "no-monitoring", "external-kafka-sasl"}
    # Issue 12: the model cache, Kafka TLS, and each production option have a scenario that turns them on.
    assert set(SCENARIOS) >= {
        "model-pvc", "model-download", "kafka-tls-ca", "ha", "gateway-routes", "multi-gpu-groups",
    }  # fmt: skip


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_strict_passes_for_scenario(helm_bin: Path, scenario: str) -> None:
    result = subprocess.run(
        [str(helm_bin), "lint", "--strict", str(CHART_DIR), "--values", str(SCENARIOS[scenario])],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_core_kinds_validate_strictly_for_scenario(scenarios: dict[str, Rendered], scenario: str) -> None:
    docs = scenarios[scenario].docs
    kinds = {d["kind"] for d in docs}
    unknown = (
        kinds - {d["kind"] for d in docs if d["apiVersion"] in CORE_GROUPS} - CUSTOM_KINDS - UNVALIDATED_KINDS
    )
    assert not unknown, f"kinds with no validation path: {unknown}"
    failures = []
    for version in KUBERNETES_VERSIONS:
        for doc in docs:
            if doc["apiVersion"] not in CORE_GROUPS:
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                failures.append(f"{version} {doc['kind']}/{doc['metadata']['name']}: {path}: {e.message}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_custom_resources_validate_against_crds_for_scenario(
    scenarios: dict[str, Rendered], crd_validators: CrdValidators, scenario: str
) -> None:
    rendered = scenarios[scenario]
    docs = [d for d in rendered.docs if d["kind"] in CUSTOM_KINDS]
    job = rendered.feature_rayjob()
    if job is not None:
        docs.append(job)
    assert any(d["kind"] == "RayService" for d in docs)
    errors = [e for d in docs for e in crd_validators.errors(d)]
    assert not errors, "\n".join(errors)


def test_crd_validation_rejects_a_misspelt_field(
    scenarios: dict[str, Rendered], crd_validators: CrdValidators
) -> None:
    """Guards the validator itself: a typo in a RayService must not pass as an unknown, ignored field."""
    service = scenarios["default"].one("RayService")
    broken = {**service, "spec": {**service["spec"], "upgradeStrategie": {"type": "NewCluster"}}}
    assert any("upgradeStrategie" in e for e in crd_validators.errors(broken))


def test_trigger_authentication_is_rendered_only_when_sasl_is_on(scenarios: dict[str, Rendered]) -> None:
    for name, rendered in scenarios.items():
        auths = rendered.of_kind("TriggerAuthentication")
        if name == "kafka-tls-ca":
            assert [r["parameter"] for r in auths[0]["spec"]["secretTargetRef"]] == ["ca"]
        elif name == "external-kafka-sasl":
            assert len(auths) == 1
            refs = auths[0]["spec"]["secretTargetRef"]
            assert {r["parameter"] for r in refs} == {"username", "password"}
            assert {r["name"] for r in refs} == {"surge-kafka-credentials"}
            for so in rendered.of_kind("ScaledObject"):
                trigger = so["spec"]["triggers"][0]
                assert trigger["authenticationRef"]["name"] == auths[0]["metadata"]["name"]
                assert trigger["metadata"]["sasl"] == "scram_sha512"
                assert trigger["metadata"]["tls"] == "enable"
        else:
            assert auths == [], f"{name}: TriggerAuthentication without SASL"
