"""Acting on a Kubernetes cluster with the `kubernetes` Python client: feature-job RayJobs, RayService status.

- `feature_rayjob_body(spec)` builds a RayJob (ray.io/v1) that runs `python -m pipelines.feature_job run`
  on a short-lived Ray cluster of its own (tests validate it against the KubeRay CRD schema).
- `trigger_feature_job(api, spec, lag, policy)` creates that RayJob when the events topic's lag passes the
  policy's threshold and no feature-job RayJob is still running (runs are idempotent, but two at once would
  only race for the same range). Lag is measured against the offsets the feature job commits to its
  progress consumer group (`feature_job_lag`), so standard Kafka tools and KEDA see the same number.
- `summarise_rayservice(obj)` / `read_rayservice_status(api, name, namespace)` turn a RayService's status
  into a small summary: service status, upgrade state, per-application and per-deployment Serve status,
  and worker replicas of the active (and pending) Ray cluster. KubeRay's status reports each Serve
  deployment's state (HEALTHY, UPDATING, UPSCALING, DOWNSCALING, UNHEALTHY), not its replica count; the
  replica counts in the summary are the Ray cluster's worker pods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from surge_core.kafka_settings import KafkaSettings

GROUP, VERSION, RAYJOB_PLURAL, RAYSERVICE_PLURAL = "ray.io", "v1", "rayjobs", "rayservices"
COMPONENT_LABEL = "app.kubernetes.io/component"
FEATURE_JOB_COMPONENT = "feature-job"
# RayJob deployment states after which the job no longer holds a cluster (KubeRay's JobDeploymentStatus).
FINISHED_JOB_STATES = frozenset({"Complete", "Failed", "ValidationFailed"})

Resources = dict[str, dict[str, str]]


class FeatureRayJobSpec(BaseModel):
    """What the feature-job RayJob looks like: image, namespace, resources, where the settings file lives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field("default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Namespace.")
    name_prefix: str = Field(
        "surge-feature-job-",
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?-$",
        max_length=50,
        description="generateName of the RayJob (the API server appends a random suffix).",
    )
    image: str = Field(min_length=1, description="Container image with surge installed.")
    ray_version: str = Field("2.60.0", description="Ray version in the image.")
    entrypoint: str = Field(
        "python -m pipelines.feature_job run", min_length=1, description="Command the job runs."
    )
    settings_configmap: str | None = Field(
        None, description="ConfigMap with key feature-job.json (FeatureJobSettings), mounted at /etc/surge."
    )
    storage_claim: str | None = Field(
        None, description="PersistentVolumeClaim mounted at /var/lib/surge/features (None: emptyDir)."
    )
    service_account: str | None = Field(None, description="Service account of the Ray pods.")
    pg_dsn_secret: str | None = Field(
        None, description="Secret (key 'dsn') exposed as SURGE_FEATURES_PG_DSN for the postgres online store."
    )
    head_resources: Resources = Field(
        default_factory=lambda: {
            "requests": {"cpu": "1", "memory": "2Gi"},
            "limits": {"cpu": "1", "memory": "2Gi"},
        },
        description="Resources of the head pod (runs the driver).",
    )
    worker_resources: Resources = Field(
        default_factory=lambda: {
            "requests": {"cpu": "2", "memory": "4Gi"},
            "limits": {"cpu": "2", "memory": "4Gi"},
        },
        description="Resources of each worker pod.",
    )
    env: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict,
        description="Extra environment of the Ray pods: the trigger passes its own OTEL_* on (tracing).",
    )
    min_workers: int = Field(0, ge=0, le=1000, description="Worker pods kept (0: the autoscaler adds them).")
    max_workers: int = Field(4, ge=1, le=1000, description="Most worker pods.")
    active_deadline_s: int = Field(3600, ge=60, description="Seconds before KubeRay stops the job.")
    ttl_after_finished_s: int = Field(600, ge=0, description="Seconds the finished RayJob is kept.")

    @model_validator(mode="after")
    def _worker_bounds(self) -> FeatureRayJobSpec:
        if self.max_workers < self.min_workers:
            raise ValueError(f"max_workers ({self.max_workers}) must be >= min_workers ({self.min_workers})")
        return self


def _pod_template(spec: FeatureRayJobSpec, name: str, resources: Resources, head: bool) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": "HF_HUB_OFFLINE", "value": "1"}]
    env += [{"name": name, "value": value} for name, value in sorted(spec.env.items())]
    if spec.pg_dsn_secret:
        env.append(
            {
                "name": "SURGE_FEATURES_PG_DSN",
                "valueFrom": {"secretKeyRef": {"name": spec.pg_dsn_secret, "key": "dsn"}},
            }
        )
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    if head:
        # The driver runs on the head and writes the stores there.
        mounts.append({"name": "features", "mountPath": "/var/lib/surge/features"})
        volumes.append(
            {"name": "features", "persistentVolumeClaim": {"claimName": spec.storage_claim}}
            if spec.storage_claim
            else {"name": "features", "emptyDir": {}}
        )
        if spec.settings_configmap:
            mounts.append({"name": "settings", "mountPath": "/etc/surge", "readOnly": True})
            volumes.append(
                {
                    "name": "settings",
                    "configMap": {
                        "name": spec.settings_configmap,
                        "items": [{"key": "feature-job.json", "path": "feature-job.json"}],
                    },
                }
            )
    pod: dict[str, Any] = {
        "containers": [
            {
                "name": name,
                "image": spec.image,
                "env": env,
                "resources": resources,
                "volumeMounts": mounts,
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
        "volumes": volumes,
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if spec.service_account:
        pod["serviceAccountName"] = spec.service_account
    labels = {COMPONENT_LABEL: FEATURE_JOB_COMPONENT, "surge.io/ray-node": "head" if head else "cpu-worker"}
    return {"metadata": {"labels": labels}, "spec": pod}


def feature_rayjob_body(spec: FeatureRayJobSpec, extra_args: str = "") -> dict[str, Any]:
    """The RayJob custom object for one feature-job run (pass to `create_namespaced_custom_object`)."""
    entrypoint = spec.entrypoint
    if spec.settings_configmap:
        entrypoint += " --settings /etc/surge/feature-job.json"
    if extra_args:
        entrypoint += f" {extra_args}"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayJob",
        "metadata": {
            "generateName": spec.name_prefix,
            "namespace": spec.namespace,
            "labels": {COMPONENT_LABEL: FEATURE_JOB_COMPONENT, "app.kubernetes.io/name": "surge"},
        },
        "spec": {
            "entrypoint": entrypoint,
            # The operator submits to the head's dashboard: no extra submitter pod.
            "submissionMode": "HTTPMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": spec.ttl_after_finished_s,
            "activeDeadlineSeconds": spec.active_deadline_s,
            "rayClusterSpec": {
                "rayVersion": spec.ray_version,
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    # No tasks on the head: Ray Data's work goes to the autoscaled workers.
                    "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
                    "template": _pod_template(spec, "ray-head", spec.head_resources, head=True),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "cpu",
                        "replicas": spec.min_workers,
                        "minReplicas": spec.min_workers,
                        "maxReplicas": spec.max_workers,
                        "rayStartParams": {},
                        "template": _pod_template(spec, "ray-worker", spec.worker_resources, head=False),
                    }
                ],
            },
        },
    }


# -------------------------------------------------------------------------------------------- trigger


class LagTriggerPolicy(BaseModel):
    """When to start a feature-job run: `lag >= min_lag` and fewer than `max_active` runs still going.

    Example: min_lag 10,000, max_active 1; lag 12,500 with no running RayJob -> create one; lag 12,500
    with one RayJob in state Running -> wait; lag 800 -> wait.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_lag: int = Field(10_000, ge=1, description="Records waiting (end offset - committed) to start a run.")
    max_active: int = Field(1, ge=1, le=10, description="Feature-job RayJobs allowed to run at once.")


@dataclass(frozen=True)
class TriggerDecision:
    create: bool
    reason: str
    lag: int
    active_jobs: tuple[str, ...] = ()
    created: str | None = None


def decide_trigger(lag: int, active_jobs: list[str], policy: LagTriggerPolicy) -> TriggerDecision:
    """Pure decision (see `LagTriggerPolicy`)."""
    if lag < policy.min_lag:
        return TriggerDecision(False, f"lag {lag} < min_lag {policy.min_lag}", lag, tuple(active_jobs))
    if len(active_jobs) >= policy.max_active:
        return TriggerDecision(
            False,
            f"{len(active_jobs)} feature job(s) still running: {', '.join(active_jobs)}",
            lag,
            tuple(active_jobs),
        )
    return TriggerDecision(True, f"lag {lag} >= min_lag {policy.min_lag}", lag, tuple(active_jobs))


def active_rayjobs(rayjob_list: dict[str, Any]) -> list[str]:
    """Names of the RayJobs in a list response that have not finished."""
    names = []
    for item in rayjob_list.get("items", []):
        state = (item.get("status") or {}).get("jobDeploymentStatus", "")
        if state not in FINISHED_JOB_STATES:
            names.append(item["metadata"]["name"])
    return sorted(names)


def trigger_feature_job(
    api: Any, spec: FeatureRayJobSpec, lag: int, policy: LagTriggerPolicy, extra_args: str = ""
) -> TriggerDecision:
    """Create the feature-job RayJob if `decide_trigger` says so. `api`: a `kubernetes.client.CustomObjectsApi`.

    Needs RBAC `list` and `create` on rayjobs.ray.io in the namespace.
    """
    listed = api.list_namespaced_custom_object(
        GROUP,
        VERSION,
        spec.namespace,
        RAYJOB_PLURAL,
        label_selector=f"{COMPONENT_LABEL}={FEATURE_JOB_COMPONENT}",
    )
    decision = decide_trigger(lag, active_rayjobs(listed), policy)
    if not decision.create:
        return decision
    created = api.create_namespaced_custom_object(
        GROUP, VERSION, spec.namespace, RAYJOB_PLURAL, feature_rayjob_body(spec, extra_args)
    )
    return TriggerDecision(True, decision.reason, lag, decision.active_jobs, created["metadata"]["name"])


def expired_rayjobs(rayjob_list: dict[str, Any], now: datetime, keep_finished_s: int) -> list[str]:
    """Names of the finished RayJobs in a list response whose `status.endTime` is more than
    `keep_finished_s` seconds before `now` (the TTL KubeRay applies to the job's cluster, not to the RayJob)."""
    names = []
    for item in rayjob_list.get("items", []):
        status = item.get("status") or {}
        end = status.get("endTime")
        if status.get("jobDeploymentStatus") not in FINISHED_JOB_STATES or not end:
            continue
        ended = datetime.fromisoformat(str(end).replace("Z", "+00:00"))
        if (now - ended).total_seconds() > keep_finished_s:
            names.append(item["metadata"]["name"])
    return sorted(names)


def run_feature_job_trigger(
    api: Any,
    namespace: str,
    body: dict[str, Any],
    lag: int,
    policy: LagTriggerPolicy,
    label_selector: str = f"{COMPONENT_LABEL}={FEATURE_JOB_COMPONENT}",
    keep_finished_s: int = 600,
    now: datetime | None = None,
) -> TriggerDecision:
    """One tick of the chart's CronJob: delete expired feature-job RayJobs, then create `body` (a complete
    RayJob, e.g. the chart's rayjob.yaml) if `decide_trigger` says so. Needs RBAC list, create and delete
    on rayjobs.ray.io in the namespace."""
    listed = api.list_namespaced_custom_object(
        GROUP, VERSION, namespace, RAYJOB_PLURAL, label_selector=label_selector
    )
    for name in expired_rayjobs(listed, now or datetime.now(UTC), keep_finished_s):
        api.delete_namespaced_custom_object(GROUP, VERSION, namespace, RAYJOB_PLURAL, name)
    decision = decide_trigger(lag, active_rayjobs(listed), policy)
    if not decision.create:
        return decision
    created = api.create_namespaced_custom_object(GROUP, VERSION, namespace, RAYJOB_PLURAL, body)
    return TriggerDecision(True, decision.reason, lag, decision.active_jobs, created["metadata"]["name"])


def _feature_job_trigger_command(argv: list[str]) -> int:
    """`python -m pipelines.cluster feature-job-trigger ...`: what the chart's CronJob runs."""
    import argparse
    import json
    from dataclasses import asdict
    from pathlib import Path

    import yaml

    parser = argparse.ArgumentParser(prog="python -m pipelines.cluster feature-job-trigger")
    parser.add_argument("--rayjob", required=True, help="The RayJob manifest to create (YAML).")
    parser.add_argument("--settings", required=True, help="feature-job.json (FeatureJobSettings).")
    parser.add_argument("--namespace", required=True, help="Namespace of the RayJobs.")
    parser.add_argument("--selector", default=f"{COMPONENT_LABEL}={FEATURE_JOB_COMPONENT}")
    parser.add_argument("--min-lag", type=int, default=1, help="Records waiting that start a run.")
    parser.add_argument("--keep-finished-s", type=int, default=600, help="Seconds finished RayJobs stay.")
    args = parser.parse_args(argv)
    settings = json.loads(Path(args.settings).read_text())
    kafka = KafkaSettings.model_validate(settings.get("kafka", {}))
    if not settings.get("progress_group"):
        parser.error(f"{args.settings} has no progress_group: the lag cannot be measured")
    lag = feature_job_lag(kafka, settings.get("topic", "events"), settings["progress_group"])
    body = yaml.safe_load(Path(args.rayjob).read_text())
    decision = run_feature_job_trigger(
        kubernetes_api(),
        args.namespace,
        body,
        lag,
        LagTriggerPolicy(min_lag=max(1, args.min_lag)),
        label_selector=args.selector,
        keep_finished_s=args.keep_finished_s,
    )
    print(json.dumps(asdict(decision)))
    return 0


def feature_job_lag(kafka: KafkaSettings, topic: str, group_id: str) -> int:
    """Records of `topic` past the offsets the feature job committed to its progress group."""
    from kafka import KafkaConsumer, TopicPartition

    # A consumer of the group that never subscribes: it only reads the group's committed offsets.
    consumer = KafkaConsumer(**kafka.kafka_python_config(), group_id=group_id, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        committed = {tp: consumer.committed(tp) or 0 for tp in tps}
        return sum(max(0, ends[tp] - max(committed[tp], begins[tp])) for tp in tps)
    finally:
        consumer.close(autocommit=False)


def kubernetes_api() -> Any:
    """A CustomObjectsApi from the in-cluster service account, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


# ---------------------------------------------------------------------------------- RayService status


@dataclass(frozen=True)
class ClusterReplicas:
    """Worker pods of one Ray cluster behind the RayService."""

    name: str
    state: str
    desired: int
    available: int
    ready: int
    minimum: int
    maximum: int


@dataclass(frozen=True)
class RayServiceSummary:
    """A RayService's status in a few fields: is it ready, is it upgrading, how are the deployments."""

    name: str
    service_status: str
    ready: bool
    upgrade_in_progress: bool
    serve_endpoints: int
    applications: dict[str, str]
    deployments: dict[str, dict[str, str]]  # application -> deployment -> status
    unhealthy: list[str]  # "app/deployment: message"
    active_cluster: ClusterReplicas | None
    pending_cluster: ClusterReplicas | None
    traffic_routed_percent: int | None = None
    messages: list[str] = field(default_factory=list)

    def line(self) -> str:
        """One human line, e.g. for `surge status`."""
        upgrade = " (upgrading)" if self.upgrade_in_progress else ""
        cluster = self.active_cluster
        workers = f", workers {cluster.ready}/{cluster.desired} ready" if cluster else ""
        deployments = sum(len(d) for d in self.deployments.values())
        return (
            f"{self.name}: {'ready' if self.ready else 'not ready'}{upgrade}, {len(self.applications)} app(s), "
            f"{deployments} deployment(s), {len(self.unhealthy)} unhealthy{workers}"
        )


def _condition(status: dict[str, Any], kind: str) -> bool | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return condition.get("status") == "True"
    return None


def _cluster(service_status: dict[str, Any] | None) -> ClusterReplicas | None:
    if not service_status or not service_status.get("rayClusterName"):
        return None
    cluster = service_status.get("rayClusterStatus") or {}
    return ClusterReplicas(
        name=service_status["rayClusterName"],
        state=cluster.get("state", ""),
        desired=int(cluster.get("desiredWorkerReplicas", 0)),
        available=int(cluster.get("availableWorkerReplicas", 0)),
        ready=int(cluster.get("readyWorkerReplicas", 0)),
        minimum=int(cluster.get("minWorkerReplicas", 0)),
        maximum=int(cluster.get("maxWorkerReplicas", 0)),
    )


def summarise_rayservice(obj: dict[str, Any]) -> RayServiceSummary:
    """Summarise a RayService custom object (as returned by `get_namespaced_custom_object`)."""
    status = obj.get("status") or {}
    active = status.get("activeServiceStatus") or {}
    pending = status.get("pendingServiceStatus") or {}
    applications: dict[str, str] = {}
    deployments: dict[str, dict[str, str]] = {}
    unhealthy: list[str] = []
    for app, app_status in sorted((active.get("applicationStatuses") or {}).items()):
        applications[app] = app_status.get("status", "")
        per_deployment = app_status.get("serveDeploymentStatuses") or {}
        deployments[app] = {name: d.get("status", "") for name, d in sorted(per_deployment.items())}
        for name, d in sorted(per_deployment.items()):
            if d.get("status") not in ("HEALTHY", "UPSCALING", "DOWNSCALING"):
                unhealthy.append(f"{app}/{name}: {d.get('status', '?')} {d.get('message', '')}".strip())
    ready_condition = _condition(status, "Ready")
    upgrading_condition = _condition(status, "UpgradeInProgress")
    ready = ready_condition if ready_condition is not None else status.get("serviceStatus") == "Running"
    upgrading = (
        upgrading_condition if upgrading_condition is not None else bool(pending.get("rayClusterName"))
    )
    messages = [
        f"{c.get('type')}: {c.get('message')}" for c in status.get("conditions") or [] if c.get("message")
    ]
    return RayServiceSummary(
        name=(obj.get("metadata") or {}).get("name", ""),
        service_status=status.get("serviceStatus", ""),
        ready=bool(ready),
        upgrade_in_progress=bool(upgrading),
        serve_endpoints=int(status.get("numServeEndpoints", 0)),
        applications=applications,
        deployments=deployments,
        unhealthy=unhealthy,
        active_cluster=_cluster(active),
        pending_cluster=_cluster(pending),
        traffic_routed_percent=pending.get("trafficRoutedPercent")
        if pending
        else active.get("trafficRoutedPercent"),
        messages=messages,
    )


def read_rayservice_status(api: Any, name: str, namespace: str) -> RayServiceSummary:
    """Read a RayService through a `kubernetes.client.CustomObjectsApi` and summarise it."""
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, RAYSERVICE_PLURAL, name)
    return summarise_rayservice(obj)


# ------------------------------------------------------------------------------------------------- CLI


def register_cli(subparsers: Any) -> None:
    """Adds `rayservice status` (for `pipelines.cli`, or `python -m pipelines.cluster status ...`)."""
    parser = subparsers.add_parser("rayservice", help="Read a RayService's status from the cluster.")
    commands = parser.add_subparsers(dest="rayservice_command", required=True)
    status = commands.add_parser("status", help="Summarise a RayService: readiness, upgrade, deployments.")
    status.add_argument("--name", default="surge", help="RayService name.")
    status.add_argument("--namespace", default="default", help="Namespace.")
    status.add_argument(
        "--from-file", help="Summarise a saved object (`kubectl get rayservice NAME -o json`) instead."
    )
    status.add_argument("--json", action="store_true", help="Print the whole summary as JSON.")
    status.set_defaults(handler=_status_command)


def _status_command(args: Any) -> int:
    import json
    from dataclasses import asdict
    from pathlib import Path

    if args.from_file:
        summary = summarise_rayservice(json.loads(Path(args.from_file).read_text()))
    else:
        summary = read_rayservice_status(kubernetes_api(), args.name, args.namespace)
    print(json.dumps(asdict(summary), indent=2) if args.json else summary.line())
    return 0 if summary.ready and not summary.unhealthy else 1


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["feature-job-trigger"]:
        return _feature_job_trigger_command(arguments[1:])
    parser = argparse.ArgumentParser(prog="python -m pipelines.cluster")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["rayservice", *arguments])
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
