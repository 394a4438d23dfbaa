{{/* Chart name, truncated to 63 characters (the DNS label limit). */}}
{{- define "surge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to 63 characters. If the release name already contains the chart name
it is used as is (release "surge" -> "surge", not "surge-surge").
*/}}
{{- define "surge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A component's resource name: "<fullname>-<component>", still within 63 characters. */}}
{{- define "surge.componentName" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
{{- printf "%s-%s" (include "surge.fullname" $root | trunc (int (sub 62 (len $component)))) $component | trimSuffix "-" }}
{{- end }}

{{- define "surge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: immutable once a Deployment exists, so nothing version-like goes here. */}}
{{- define "surge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "surge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Common labels: selector labels plus version and ownership metadata. */}}
{{- define "surge.labels" -}}
helm.sh/chart: {{ include "surge.chart" . }}
{{ include "surge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: surge
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the pods inside Ray cluster specs: (list $ "component"). No helm.sh/chart and no
app.kubernetes.io/version: KubeRay hashes the cluster spec, and a label that changes with every chart
release would start a new Ray cluster (and an empty embedded index) on every `helm upgrade`.
*/}}
{{- define "surge.rayPodLabels" -}}
{{ include "surge.componentSelectorLabels" . }}
app.kubernetes.io/part-of: surge
{{- with (index . 0).Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (list $ "component"). */}}
{{- define "surge.componentSelectorLabels" -}}
{{ include "surge.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Labels of one component: (list $ "component"). */}}
{{- define "surge.componentLabels" -}}
{{ include "surge.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Images: a digest pins beyond the tag. No public image exists: image.repository is required. */}}
{{- define "surge.repository" -}}
{{- required "image.repository is required: no public surge image is published. Build the CPU and GPU variants from the repository's Dockerfile (docker build -t REGISTRY/surge:TAG . and docker build --build-arg VARIANT=gpu -t REGISTRY/surge:TAG-gpu .), push them, and set image.repository=REGISTRY/surge (see helm/surge/README.md, \"The image\")." .Values.image.repository }}
{{- end }}

{{- define "surge.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" (include "surge.repository" .) .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" (include "surge.repository" .) $tag }}
{{- end }}
{{- end }}

{{- define "surge.gpuImage" -}}
{{- $tag := default (printf "%s-gpu" (default .Chart.AppVersion .Values.image.tag)) .Values.image.gpuTag }}
{{- if .Values.image.gpuDigest }}
{{- printf "%s@%s" (include "surge.repository" .) .Values.image.gpuDigest }}
{{- else }}
{{- printf "%s:%s" (include "surge.repository" .) $tag }}
{{- end }}
{{- end }}

{{/*
Pod Security Standards "restricted": non-root, seccomp RuntimeDefault at pod level; the container level
below drops every capability, forbids privilege escalation and makes the root filesystem read-only (the
image's non-root user is uid 1000, as in rayproject/ray).
*/}}
{{- define "surge.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 100
fsGroup: 100
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "surge.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Is Kafka SASL on? Prints "true" or nothing. */}}
{{- define "surge.kafkaSasl" -}}
{{- if hasPrefix "SASL" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/* Does Kafka use TLS (SSL or SASL_SSL)? Prints "true" or nothing. */}}
{{- define "surge.kafkaTls" -}}
{{- if hasSuffix "SSL" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/* Is a Kafka CA Secret mounted (TLS with kafka.caSecret.name)? Prints "true" or nothing. */}}
{{- define "surge.kafkaCa" -}}
{{- if and (include "surge.kafkaTls" .) .Values.kafka.caSecret.name }}true{{ end }}
{{- end }}

{{/* The Kafka CA volume and its mount (KafkaSettings.ssl_cafile points at it). */}}
{{- define "surge.kafkaCaVolume" -}}
{{- if include "surge.kafkaCa" . }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.caSecret.name }}
    items:
      - {key: {{ .Values.kafka.caSecret.key }}, path: ca.crt}
{{- end }}
{{- end }}

{{- define "surge.kafkaCaMount" -}}
{{- if include "surge.kafkaCa" . }}
- {name: kafka-ca, mountPath: /etc/surge/kafka-ca, readOnly: true}
{{- end }}
{{- end }}

{{/*
Kafka SASL credentials, only from the Secret: surge_core.kafka_settings.KafkaSettings reads the env vars named by
sasl_username_env / sasl_password_env (KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD by default).
*/}}
{{- define "surge.kafkaSaslEnv" -}}
{{- if include "surge.kafkaSasl" . }}
- name: KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.saslSecret.name }}
      key: {{ .Values.kafka.saslSecret.usernameKey }}
- name: KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.saslSecret.name }}
      key: {{ .Values.kafka.saslSecret.passwordKey }}
{{- end }}
{{- end }}

{{/* KafkaSettings (surge_core/kafka_settings.py) as a dict, for the settings files the pipelines read. */}}
{{- define "surge.kafkaSettings" -}}
bootstrap_servers: {{ .Values.kafka.bootstrapServers | quote }}
security_protocol: {{ .Values.kafka.securityProtocol }}
{{- if include "surge.kafkaSasl" . }}
sasl_mechanism: {{ .Values.kafka.saslMechanism }}
{{- end }}
{{- if include "surge.kafkaCa" . }}
ssl_cafile: /etc/surge/kafka-ca/ca.crt
{{- end }}
client_id: {{ include "surge.fullname" . }}
{{- end }}

{{/*
Cross-field checks that values.schema.json cannot express. Each message names the keys to change.
*/}}
{{- define "surge.validate" -}}
{{- $gpus := int .Values.model.gpus }}
{{- if and .Values.rayCluster.gpuWorkers.enabled (eq $gpus 0) }}
{{- fail "rayCluster.gpuWorkers.enabled is true but model.gpus is 0: a GPU worker group would never be used. Set model.gpus >= 1 (GPU serving) or rayCluster.gpuWorkers.enabled=false (LLM on CPU workers)." }}
{{- end }}
{{- if and (gt $gpus 0) (not .Values.rayCluster.gpuWorkers.enabled) }}
{{- fail (printf "model.gpus is %d but rayCluster.gpuWorkers.enabled is false: no worker has a GPU, so the LLM replica could never be placed. Enable rayCluster.gpuWorkers or set model.gpus=0." $gpus) }}
{{- end }}
{{- if and .Values.rayCluster.gpuWorkers.enabled (gt $gpus (int .Values.rayCluster.gpuWorkers.gpusPerPod)) }}
{{- fail (printf "model.gpus (%d) is larger than rayCluster.gpuWorkers.gpusPerPod (%d): one LLM replica must fit in one GPU worker pod." $gpus (int .Values.rayCluster.gpuWorkers.gpusPerPod)) }}
{{- end }}
{{- if and (eq $gpus 0) (eq .Values.model.dtype "float16") }}
{{- fail "model.dtype float16 with model.gpus 0: CPUs run float32 (or bfloat16 with AVX-512); set model.dtype=float32." }}
{{- end }}
{{- if ge (int .Values.gateway.maxTokensLimit) (int .Values.model.maxModelLen) }}
{{- fail (printf "gateway.maxTokensLimit (%d) must be smaller than model.maxModelLen (%d) so a prompt still fits." (int .Values.gateway.maxTokensLimit) (int .Values.model.maxModelLen)) }}
{{- end }}
{{- if and (eq .Values.vectorStore.backend "embedded") (gt (int .Values.autoscaling.retriever.maxReplicas) 1) }}
{{- fail "vectorStore.backend embedded keeps the index in one process: autoscaling.retriever.maxReplicas must be 1 (use vectorStore.backend=pgvector to scale the retriever out)." }}
{{- end }}
{{- if and (eq .Values.vectorStore.backend "pgvector") (not .Values.vectorStore.pgvector.dsnSecret.name) }}
{{- fail "vectorStore.backend pgvector needs vectorStore.pgvector.dsnSecret.name: the Secret (created by you) holding the PostgreSQL connection string." }}
{{- end }}
{{- if include "surge.kafkaSasl" . }}
{{- if not .Values.kafka.saslMechanism }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.saslMechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)." .Values.kafka.securityProtocol) }}
{{- end }}
{{- if not .Values.kafka.saslSecret.name }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.saslSecret.name: the Secret (created by you) with the SASL username and password." .Values.kafka.securityProtocol) }}
{{- end }}
{{- else if .Values.kafka.saslMechanism }}
{{- fail (printf "kafka.saslMechanism is set but kafka.securityProtocol is %s: use SASL_PLAINTEXT or SASL_SSL, or clear kafka.saslMechanism." .Values.kafka.securityProtocol) }}
{{- end }}
{{- $mc := .Values.modelCache }}
{{- if ne $mc.type "none" }}
{{- if not (hasPrefix (printf "%s/" (trimSuffix "/" $mc.mountPath)) .Values.model.name) }}
{{- fail (printf "modelCache.type %s mounts the weights at %s, but model.name (%s) is not a folder under it: set model.name to e.g. %s/<model>." $mc.type $mc.mountPath .Values.model.name (trimSuffix "/" $mc.mountPath)) }}
{{- end }}
{{- if and (eq $mc.type "pvc") (not $mc.pvc.existingClaim) }}
{{- fail "modelCache.type pvc needs modelCache.pvc.existingClaim: the PersistentVolumeClaim (created by you) holding the weights." }}
{{- end }}
{{- if and (eq $mc.type "pvc") $mc.init.enabled $mc.pvc.readOnly }}
{{- fail "modelCache.init.enabled writes into the claim: set modelCache.pvc.readOnly=false (a ReadWriteMany claim), or fill the claim once yourself and turn the init container off." }}
{{- end }}
{{- if and (eq $mc.type "ephemeral") (not $mc.init.enabled) }}
{{- fail "modelCache.type ephemeral starts empty in every pod: turn modelCache.init.enabled on (with modelCache.init.hfRepo or modelCache.init.command)." }}
{{- end }}
{{- end }}
{{- if and $mc.init.enabled (not $mc.init.hfRepo) (not $mc.init.command) }}
{{- fail "modelCache.init.enabled needs modelCache.init.hfRepo (a Hugging Face repo to download) or modelCache.init.command." }}
{{- end }}
{{- $p := .Values.vectorStore.embedded.persistence }}
{{- if and (eq .Values.vectorStore.backend "embedded") $p.enabled (not $p.existingClaim) (not (has "ReadWriteMany" $p.accessModes)) (gt (int .Values.rayCluster.cpuWorkers.maxReplicas) 1) }}
{{- fail (printf "vectorStore.embedded.persistence.accessModes %v cannot be mounted by %d CPU worker pods on different nodes: use [ReadWriteMany] (a storage class that offers it), set rayCluster.cpuWorkers.maxReplicas=1, or use vectorStore.backend=pgvector." $p.accessModes (int .Values.rayCluster.cpuWorkers.maxReplicas)) }}
{{- end }}
{{- if and .Values.rayCluster.gcsFaultTolerance.enabled (not .Values.rayCluster.gcsFaultTolerance.redisAddress) }}
{{- fail "rayCluster.gcsFaultTolerance.enabled needs rayCluster.gcsFaultTolerance.redisAddress: host:port of your Redis." }}
{{- end }}
{{- $names := dict "cpu" true }}
{{- range $rc := list .Values.rayCluster }}
{{- range $i, $g := $rc.extraGpuWorkerGroups }}
{{- if not $g.name }}
{{- fail (printf "rayCluster.extraGpuWorkerGroups[%d] needs a name (its Ray worker group name)." $i) }}
{{- end }}
{{- if or (hasKey $names $g.name) (eq $g.name "gpu") }}
{{- fail (printf "rayCluster.extraGpuWorkerGroups[%d].name %s is already used by another worker group." $i $g.name) }}
{{- end }}
{{- $_ := set $names $g.name true }}
{{- end }}
{{- if and $rc.extraGpuWorkerGroups (not $rc.gpuWorkers.enabled) }}
{{- fail "rayCluster.extraGpuWorkerGroups needs rayCluster.gpuWorkers.enabled (its groups take their defaults from gpuWorkers)." }}
{{- end }}
{{- end }}
{{- range include "surge.gpuWorkerGroups" . | fromYamlArray }}
{{- if gt $gpus (int .gpusPerPod) }}
{{- fail (printf "model.gpus (%d) is larger than the gpusPerPod (%d) of GPU worker group %s: one LLM replica must fit in one pod of every GPU group." $gpus (int .gpusPerPod) .name) }}
{{- end }}
{{- end }}
{{- if and .Values.httpRoute.enabled (not .Values.httpRoute.parentRefs) }}
{{- fail "httpRoute.enabled needs httpRoute.parentRefs: the Gateway(s) the route attaches to." }}
{{- end }}
{{- range $stage, $as := .Values.autoscaling }}
{{- $min := int $as.minReplicas }}{{- if $as.keepWarm }}{{- $min = max $min 1 }}{{- end }}
{{- if gt $min (int $as.maxReplicas) }}
{{- fail (printf "autoscaling.%s: maxReplicas (%d) must be >= minReplicas (%d, keepWarm included)." $stage (int $as.maxReplicas) $min) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The GPU worker groups as a YAML list: gpuWorkers (name "gpu") when enabled, then each of
rayCluster.extraGpuWorkerGroups over gpuWorkers (each key it sets replaces gpuWorkers' whole value).
*/}}
{{- define "surge.gpuWorkerGroups" -}}
{{- $rc := .Values.rayCluster }}
{{- $groups := list }}
{{- if $rc.gpuWorkers.enabled }}
{{- $base := omit (deepCopy $rc.gpuWorkers) "enabled" }}
{{- $groups = append $groups (merge (dict "name" "gpu") $base) }}
{{- range $rc.extraGpuWorkerGroups }}
{{- /* Key by key: a key set on the group replaces gpuWorkers' value whole (no merging of nodeSelector). */}}
{{- $group := deepCopy $base }}
{{- range $key, $value := . }}{{- $_ := set $group $key (deepCopy $value) }}{{- end }}
{{- $groups = append $groups $group }}
{{- end }}
{{- end }}
{{- toYaml $groups }}
{{- end }}

{{/*
KubeRay version floor (1.5.1: authOptions). Where Helm can look CRDs up (install / upgrade against a
cluster), fail when the RayService / RayJob CRDs lack a field this chart renders. `helm template` and
client dry runs get an empty lookup and skip the check.
*/}}
{{- define "surge.checkKuberay" -}}
{{- if .Values.kuberay.checkCRDs }}
{{- $service := list "spec.upgradeStrategy" "spec.rayClusterDeletionDelaySeconds" "spec.excludeHeadPodFromServeSvc" "spec.rayClusterConfig.authOptions" "spec.rayClusterConfig.autoscalerOptions.idleTimeoutSeconds" }}
{{- if .Values.rayCluster.gcsFaultTolerance.enabled }}
{{- $service = append $service "spec.rayClusterConfig.gcsFaultToleranceOptions" }}
{{- end }}
{{- include "surge.checkCrd" (dict "crd" (lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "rayservices.ray.io") "name" "rayservices.ray.io" "fields" $service) }}
{{- if .Values.featureJob.enabled }}
{{- $job := list "spec.submissionMode" "spec.rayClusterSpec.authOptions" "spec.activeDeadlineSeconds" }}
{{- if eq .Values.featureJob.deletion "deletionRules" }}
{{- $job = append $job "spec.deletionStrategy.deletionRules" }}
{{- end }}
{{- include "surge.checkCrd" (dict "crd" (lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "rayjobs.ray.io") "name" "rayjobs.ray.io" "fields" $job) }}
{{- end }}
{{- end }}
{{- end }}

{{/* (dict "crd" CRD-or-empty "name" crdName "fields" (list "spec.a.b" ...)): fail naming missing fields. */}}
{{- define "surge.checkCrd" -}}
{{- if .crd }}
{{- $schema := dict }}
{{- range .crd.spec.versions }}{{- if eq .name "v1" }}{{- $schema = .schema.openAPIV3Schema }}{{- end }}{{- end }}
{{- $missing := list }}
{{- range .fields }}
{{- $node := $schema }}
{{- range splitList "." . }}
{{- $node = get (get $node "properties" | default dict) . | default dict }}
{{- end }}
{{- if not $node }}{{- $missing = append $missing . }}{{- end }}
{{- end }}
{{- if $missing }}
{{- fail (printf "the KubeRay CRD %s on this cluster has no %s: this chart needs KubeRay operator >= 1.5.1 (>= 1.6.0 for featureJob.deletion=deletionRules). Upgrade the kuberay-operator chart and its CRDs (helm upgrade does not update CRDs: kubectl apply --server-side -k \"github.com/ray-project/kuberay/ray-operator/config/crd?ref=v1.5.1\"), or set kuberay.checkCRDs=false." .name (join ", " $missing)) }}
{{- end }}
{{- end }}
{{- end }}
