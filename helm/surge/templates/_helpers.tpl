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

{{/* Images: a digest pins beyond the tag. */}}
{{- define "surge.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "surge.gpuImage" -}}
{{- $tag := default (printf "%s-gpu" (default .Chart.AppVersion .Values.image.tag)) .Values.image.gpuTag }}
{{- if .Values.image.gpuDigest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.gpuDigest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
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

{{/*
Kafka SASL credentials, only from the Secret: pipelines.settings.KafkaSettings reads the env vars named by
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

{{/* KafkaSettings (pipelines/settings.py) as a dict, for the settings files the pipelines read. */}}
{{- define "surge.kafkaSettings" -}}
bootstrap_servers: {{ .Values.kafka.bootstrapServers | quote }}
security_protocol: {{ .Values.kafka.securityProtocol }}
{{- if include "surge.kafkaSasl" . }}
sasl_mechanism: {{ .Values.kafka.saslMechanism }}
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
{{- range $stage, $as := .Values.autoscaling }}
{{- $min := int $as.minReplicas }}{{- if $as.keepWarm }}{{- $min = max $min 1 }}{{- end }}
{{- if gt $min (int $as.maxReplicas) }}
{{- fail (printf "autoscaling.%s: maxReplicas (%d) must be >= minReplicas (%d, keepWarm included)." $stage (int $as.maxReplicas) $min) }}
{{- end }}
{{- end }}
{{- end }}
