"""Principals with tenants and scopes on a cluster: the keys file is a Secret, mounted read-only where the
gateway runs, and the serve config points the gateway at it (it re-reads the file when the Secret changes)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.fixtures_helm import SCENARIOS, Rendered, Renderer

pytestmark = pytest.mark.integration

DEFAULT = SCENARIOS["default"]


def _cpu_worker(rendered: Rendered) -> dict[str, Any]:
    groups = rendered.one("RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    spec: dict[str, Any] = next(g for g in groups if g["groupName"] == "cpu")["template"]["spec"]
    return spec


def _gateway_args(rendered: Rendered) -> dict[str, Any]:
    config = yaml.safe_load(rendered.one("RayService")["spec"]["serveConfigV2"])
    args: dict[str, Any] = config["applications"][0]["args"]["gateway"]
    return args


def test_the_principals_secret_is_mounted_where_the_gateway_runs_and_named_in_the_serve_config(
    render_chart: Renderer,
) -> None:
    rendered = render_chart(DEFAULT, sets=("gateway.principalsSecret.name=surge-principals",))
    pod = _cpu_worker(rendered)
    volume = next(v for v in pod["volumes"] if v["name"] == "principals")
    assert volume["secret"]["secretName"] == "surge-principals"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "principals")
    assert mount["readOnly"] is True
    assert _gateway_args(rendered)["api_keys_file"] == f"{mount['mountPath']}/principals.yaml"
    # The simple keys stay too (admins of the default tenant).
    assert any(e["name"] == "SURGE_API_KEYS" for e in pod["containers"][0]["env"])


def test_without_a_principals_secret_nothing_is_mounted_and_the_gateway_uses_the_simple_keys(
    render_chart: Renderer,
) -> None:
    rendered = render_chart(DEFAULT)
    assert not [v for v in _cpu_worker(rendered)["volumes"] if v["name"] == "principals"]
    assert "api_keys_file" not in _gateway_args(rendered)
