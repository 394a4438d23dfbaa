{{/* FeatureJobSettings for the feature job (pipelines/feature_job.py), as YAML. */}}
{{- define "surge.featureJobSettings" -}}
kafka:
  {{- include "surge.kafkaSettings" . | nindent 2 }}
topic: {{ printf "%sevents" .Values.kafka.topicPrefix | quote }}
offline_path: /var/lib/surge/features/offline
embed_text: {{ .Values.featureJob.embedText }}
online:
{{- if eq .Values.featureJob.onlineStore.backend "postgres" }}
  backend: postgres
  dsn_env: SURGE_FEATURES_PG_DSN
{{- else }}
  backend: sqlite
  path: /var/lib/surge/features/online.sqlite
{{- end }}
{{- end }}

{{/*
The RayJob for one feature-job run: its own Ray cluster (head runs the driver; CPU workers from zero,
added by the Ray autoscaler as Ray Data tasks need them), deleted after the job finishes.
HTTPMode: the operator submits the job to the head's dashboard, so there is no extra submitter pod.
*/}}
{{- define "surge.featureRayJob" -}}
{{- $fj := .Values.featureJob }}
{{- $name := include "surge.componentName" (list . "feature-job") }}
{{- $storage := dict "name" "features" "mountPath" "/var/lib/surge/features" "claim" $fj.existingClaim }}
{{- $env := "" }}
{{- $env = include "surge.kafkaSaslEnv" . }}
{{- if eq $fj.onlineStore.backend "postgres" }}
{{- $env = printf "%s\n- name: SURGE_FEATURES_PG_DSN\n  valueFrom:\n    secretKeyRef:\n      name: %s\n      key: %s" $env $fj.onlineStore.dsnSecret.name $fj.onlineStore.dsnSecret.key }}
{{- end }}
apiVersion: ray.io/v1
kind: RayJob
metadata:
  generateName: {{ $name }}-
  labels:
    {{- include "surge.componentLabels" (list . "feature-job") | nindent 4 }}
spec:
  entrypoint: {{ printf "%s --settings /etc/surge/feature-job.json%s" $fj.entrypoint (ternary (printf " --min-lag %d" (int $fj.minLag)) "" (gt (int $fj.minLag) 0)) | quote }}
  submissionMode: HTTPMode
  shutdownAfterJobFinishes: true
  ttlSecondsAfterFinished: {{ int $fj.ttlSecondsAfterFinished }}
  activeDeadlineSeconds: {{ int $fj.activeDeadlineSeconds }}
  rayClusterSpec:
    rayVersion: {{ .Values.rayCluster.rayVersion | quote }}
    authOptions:
      mode: token
    enableInTreeAutoscaling: true
    autoscalerOptions:
      idleTimeoutSeconds: 60
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      resources:
        {{- toYaml .Values.rayCluster.autoscaler.resources | nindent 8 }}
      securityContext:
        {{- include "surge.containerSecurityContext" . | nindent 8 }}
      volumeMounts:
        - name: tmp
          mountPath: /tmp
    headGroupSpec:
      rayStartParams:
        # The driver runs on the head; Ray Data tasks go to the workers.
        num-cpus: "0"
        dashboard-host: "0.0.0.0"
        metrics-export-port: {{ .Values.rayCluster.metricsPort | quote }}
      template:
        metadata:
          labels:
            {{- include "surge.componentLabels" (list . "feature-job") | nindent 12 }}
            surge.io/ray-node: head
        spec:
          {{- include "surge.jobPodSpec" (dict "root" . "name" "ray-head" "resources" $fj.headResources "env" $env "storage" $storage) | trim | nindent 10 }}
    workerGroupSpecs:
      - groupName: cpu
        replicas: {{ int $fj.workers.minReplicas }}
        minReplicas: {{ int $fj.workers.minReplicas }}
        maxReplicas: {{ int $fj.workers.maxReplicas }}
        rayStartParams:
          metrics-export-port: {{ .Values.rayCluster.metricsPort | quote }}
        template:
          metadata:
            labels:
              {{- include "surge.componentLabels" (list . "feature-job") | nindent 14 }}
              surge.io/ray-node: cpu-worker
          spec:
            {{- include "surge.jobPodSpec" (dict "root" . "name" "ray-worker" "resources" $fj.workers.resources "env" $env "storage" dict) | trim | nindent 12 }}
{{- end }}

{{/* Pod spec of the feature job's Ray pods (same hardening as the RayService's). */}}
{{- define "surge.jobPodSpec" -}}
{{- $root := .root }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "surge.componentName" (list $root "ray") }}
{{- if ne .name "ray-head" }}
automountServiceAccountToken: false
{{- end }}
securityContext:
  {{- include "surge.podSecurityContext" $root | nindent 2 }}
containers:
  - name: {{ .name }}
    image: {{ include "surge.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    env:
      - name: HF_HUB_OFFLINE
        value: "1"
      {{- with (trim .env) }}
      {{- . | nindent 6 }}
      {{- end }}
    ports:
      - {name: metrics, containerPort: {{ int $root.Values.rayCluster.metricsPort }}}
    resources:
      {{- toYaml .resources | nindent 6 }}
    securityContext:
      {{- include "surge.containerSecurityContext" $root | nindent 6 }}
    volumeMounts:
      - {name: tmp, mountPath: /tmp}
      - {name: ray-logs, mountPath: /tmp/ray}
      - {name: shm, mountPath: /dev/shm}
      {{- if .storage }}
      - {name: settings, mountPath: /etc/surge, readOnly: true}
      - {name: {{ .storage.name }}, mountPath: {{ .storage.mountPath }}}
      {{- end }}
volumes:
  - {name: tmp, emptyDir: {}}
  - {name: ray-logs, emptyDir: {}}
  - {name: shm, emptyDir: {medium: Memory}}
  {{- if .storage }}
  - name: settings
    configMap:
      name: {{ include "surge.componentName" (list $root "feature-job") }}
      items:
        - {key: feature-job.json, path: feature-job.json}
  {{- if .storage.claim }}
  - name: {{ .storage.name }}
    persistentVolumeClaim:
      claimName: {{ .storage.claim }}
  {{- else }}
  - {name: {{ .storage.name }}, emptyDir: {}}
  {{- end }}
  {{- end }}
{{- end }}

{{/*
Settings files of the consumers, as YAML: (list $ "ingest") -> pipelines.ingestion.IngestionSettings,
(list $ "drift-monitor") -> pipelines.drift.DriftMonitorSettings. /metrics binds 0.0.0.0 so Prometheus and
the probes reach it; values' `settings` are merged on top.
*/}}
{{- define "surge.consumerSettings" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
{{- $v := ternary $root.Values.consumers.ingest $root.Values.consumers.driftMonitor (eq $component "ingest") }}
{{- $base := dict "kafka" (include "surge.kafkaSettings" $root | fromYaml) "topic_prefix" $root.Values.kafka.topicPrefix "group_id" $v.consumerGroup "metrics_port" (int $v.metricsPort) "metrics_host" "0.0.0.0" }}
{{- if eq $component "ingest" }}
{{- $url := printf "http://%s:%d" (include "surge.componentName" (list $root "serve")) (int $root.Values.rayCluster.servePort) }}
{{- $_ := set $base "sink" (dict "kind" "http" "url" $url "api_key_env" "SURGE_API_KEY") }}
{{- else }}
{{- $_ := set $base "state_path" "/var/lib/surge/drift/state.json" }}
{{- end }}
{{- toYaml (mustMergeOverwrite $base (deepCopy ($v.settings | default dict))) }}
{{- end }}
