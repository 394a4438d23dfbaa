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
{{- $models := include "surge.models" . | fromYamlArray }}
{{- if not $models }}
{{- fail "models is empty: list at least one model version (name, version, model)." }}
{{- end }}
{{- $keys := dict }}
{{- range $i, $m := $models }}
{{- if hasKey $keys $m.key }}
{{- fail (printf "models[%d]: %s is listed twice (name@version must be unique)." $i $m.key) }}
{{- end }}
{{- $_ := set $keys $m.key true }}
{{- if and $m.accelerator (eq (int $m.gpus) 0) }}
{{- fail (printf "models[%d] (%s): accelerator %s with gpus 0; a CPU version runs on the CPU workers: clear accelerator or set gpus >= 1." $i $m.key $m.accelerator) }}
{{- end }}
{{- if and $m.accelerator (not (hasKey $.Values.rayCluster.gpuAccelerators $m.accelerator)) }}
{{- fail (printf "models[%d] (%s): accelerator %s is not a key of rayCluster.gpuAccelerators (known: %v)." $i $m.key $m.accelerator (keys $.Values.rayCluster.gpuAccelerators | sortAlpha)) }}
{{- end }}
{{- if and (eq (int $m.gpus) 0) (eq $m.dtype "float16") }}
{{- fail (printf "models[%d] (%s): dtype float16 with gpus 0: CPUs run float32 (or bfloat16 with AVX-512); set dtype float32." $i $m.key) }}
{{- end }}
{{- if ge (int $.Values.gateway.maxTokensLimit) (int $m.maxModelLen) }}
{{- fail (printf "gateway.maxTokensLimit (%d) must be smaller than models[%d].maxModelLen (%d, %s) so a prompt still fits." (int $.Values.gateway.maxTokensLimit) $i (int $m.maxModelLen) $m.key) }}
{{- end }}
{{- $as := $m.autoscaling }}
{{- $min := int ($as.minReplicas | default 0) }}{{- if $as.keepWarm }}{{- $min = max $min 1 }}{{- end }}
{{- if and (hasKey $as "maxReplicas") (gt $min (int $as.maxReplicas)) }}
{{- fail (printf "models[%d].autoscaling (%s): maxReplicas (%d) must be >= minReplicas (%d, keepWarm included)." $i $m.key (int $as.maxReplicas) $min) }}
{{- end }}
{{- end }}
{{- range $alias, $spec := .Values.aliases }}
{{- range $version, $weight := $spec.weights }}
{{- if not (hasKey $keys $version) }}
{{- fail (printf "aliases.%s.weights: %s is not a version in models (registered: %v); a version an alias still weights cannot be removed." $alias $version (keys $keys | sortAlpha)) }}
{{- end }}
{{- end }}
{{- if and $spec.shadow (not (hasKey $keys $spec.shadow)) }}
{{- fail (printf "aliases.%s.shadow: %s is not a version in models (registered: %v)." $alias $spec.shadow (keys $keys | sortAlpha)) }}
{{- end }}
{{- range $models }}
{{- if eq .name $alias }}
{{- fail (printf "aliases.%s: an alias may not have the name of a model." $alias) }}
{{- end }}
{{- end }}
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
{{- range $i, $m := $models }}
{{- if not (hasPrefix (printf "%s/" (trimSuffix "/" $mc.mountPath)) $m.model) }}
{{- fail (printf "modelCache.type %s mounts the weights at %s, but models[%d].model (%s) is not a folder under it: set it to e.g. %s/<model>." $mc.type $mc.mountPath $i $m.model (trimSuffix "/" $mc.mountPath)) }}
{{- end }}
{{- end }}
{{- if and (eq $mc.type "pvc") (not $mc.pvc.existingClaim) }}
{{- fail "modelCache.type pvc needs modelCache.pvc.existingClaim: the PersistentVolumeClaim (created by you) holding the weights." }}
{{- end }}
{{- if and (eq $mc.type "pvc") $mc.init.enabled $mc.pvc.readOnly }}
{{- fail "modelCache.init.enabled writes into the claim: set modelCache.pvc.readOnly=false (a ReadWriteMany claim), or fill the claim once yourself and turn the init container off." }}
{{- end }}
{{- if and (eq $mc.type "ephemeral") (not $mc.init.enabled) }}
{{- fail "modelCache.type ephemeral starts empty in every pod: turn modelCache.init.enabled on (with models[].hfRepo or modelCache.init.command)." }}
{{- end }}
{{- end }}
{{- $repos := list }}{{- range $models }}{{- with .hfRepo }}{{- $repos = append $repos . }}{{- end }}{{- end }}
{{- if and $mc.init.enabled (not $repos) (not $mc.init.command) }}
{{- fail "modelCache.init.enabled needs a models[].hfRepo (a Hugging Face repo to download) or modelCache.init.command." }}
{{- end }}
{{- $p := .Values.vectorStore.embedded.persistence }}
{{- if and (eq .Values.vectorStore.backend "embedded") $p.enabled (not $p.existingClaim) (not (has "ReadWriteMany" $p.accessModes)) (gt (int .Values.rayCluster.cpuWorkers.maxReplicas) 1) }}
{{- fail (printf "vectorStore.embedded.persistence.accessModes %v cannot be mounted by %d CPU worker pods on different nodes: use [ReadWriteMany] (a storage class that offers it), set rayCluster.cpuWorkers.maxReplicas=1, or use vectorStore.backend=pgvector." $p.accessModes (int .Values.rayCluster.cpuWorkers.maxReplicas)) }}
{{- end }}
{{- if and .Values.rayCluster.gcsFaultTolerance.enabled (not .Values.rayCluster.gcsFaultTolerance.redisAddress) }}
{{- fail "rayCluster.gcsFaultTolerance.enabled needs rayCluster.gcsFaultTolerance.redisAddress: host:port of your Redis." }}
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
`models` as a YAML list with every default filled in (Helm replaces a values list whole, so an entry a user
writes carries only its own keys): engine vllm, gpus 1, accelerator "", maxModelLen 2048, dtype auto,
gpuMemoryUtilization 0.9, numCpus 1, hfRepo "", revision main, autoscaling {}, extra {}; plus key
(name@version), group (its GPU worker group: gpu-<gpus> or gpu-<accelerator>-<gpus>; "" for CPU versions)
and rayResource (surge_group_<group>, the Ray resource its replicas request and its group's pods offer).
*/}}
{{- define "surge.models" -}}
{{- $out := list }}
{{- range .Values.models }}
{{- $m := dict "name" (toString .name) "version" (toString .version) "model" (toString .model) }}
{{- $defaults := dict "engine" "vllm" "gpus" 1 "accelerator" "" "maxModelLen" 2048 "dtype" "auto" "gpuMemoryUtilization" 0.9 "numCpus" 1 "hfRepo" "" "revision" "main" "autoscaling" dict "extra" dict }}
{{- $item := . }}
{{- range $key, $value := $defaults }}
{{- if hasKey $item $key }}{{- $_ := set $m $key (get $item $key) }}{{- else }}{{- $_ := set $m $key $value }}{{- end }}
{{- end }}
{{- $_ := set $m "gpus" (int $m.gpus) }}
{{- $_ := set $m "key" (printf "%s@%s" $m.name $m.version) }}
{{- $group := "" }}
{{- if gt $m.gpus 0 }}
{{- $group = ternary (printf "gpu-%d" $m.gpus) (printf "gpu-%s-%d" $m.accelerator $m.gpus) (eq $m.accelerator "") }}
{{- end }}
{{- $_ := set $m "group" $group }}
{{- $_ := set $m "rayResource" (printf "surge_group_%s" ($group | replace "-" "_")) }}
{{- $out = append $out $m }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
The GPU worker groups as a YAML list, one per distinct GPU shape of `models` (surge.models' group), in the
order the models list them: rayCluster.gpuWorkers, then for `gpu-<accelerator>-<n>` each key of
rayCluster.gpuAccelerators.<accelerator> (replacing gpuWorkers' whole value); gpusPerPod = n; maxReplicas
= min(gpuWorkers.maxReplicas, the sum of its versions' maxReplicas, keepWarm counting as at least 1);
rayResource: the resource its pods offer, one per pod, so each pod holds exactly one replica of the shape.
*/}}
{{- define "surge.gpuWorkerGroups" -}}
{{- $rc := .Values.rayCluster }}
{{- $groups := dict }}
{{- $order := list }}
{{- range include "surge.models" . | fromYamlArray }}
{{- if .group }}
{{- $max := int (.autoscaling.maxReplicas | default 1) }}
{{- if not (hasKey $groups .group) }}
{{- $g := deepCopy $rc.gpuWorkers }}
{{- if .accelerator }}
{{- range $key, $value := (get $rc.gpuAccelerators .accelerator | default dict) }}{{- $_ := set $g $key (deepCopy $value) }}{{- end }}
{{- end }}
{{- $_ := set $g "name" .group }}
{{- $_ := set $g "gpusPerPod" .gpus }}
{{- $_ := set $g "accelerator" .accelerator }}
{{- $_ := set $g "rayResource" .rayResource }}
{{- $_ := set $g "modelReplicas" 0 }}
{{- $_ := set $groups .group $g }}
{{- $order = append $order .group }}
{{- end }}
{{- $g := get $groups .group }}
{{- $_ := set $g "modelReplicas" (add $g.modelReplicas $max) }}
{{- end }}
{{- end }}
{{- $out := list }}
{{- range $order }}
{{- $g := get $groups . }}
{{- $_ := set $g "maxReplicas" (min (int $g.maxReplicas) (int $g.modelReplicas)) }}
{{- $out = append $out (omit $g "modelReplicas") }}
{{- end }}
{{- toYaml $out }}
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
