{{/* FeatureJobSettings for the feature job (pipelines/feature_job.py), as YAML. */}}
{{- define "surge.featureJobSettings" -}}
kafka:
  {{- include "surge.kafkaSettings" . | nindent 2 }}
topic: {{ printf "%sevents" .Values.kafka.topicPrefix | quote }}
offline_path: /var/lib/surge/features/offline
embed_text: {{ .Values.featureJob.embedText }}
progress_group: {{ .Values.featureJob.progressGroup | quote }}
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
added by the Ray autoscaler as Ray Data tasks need them). HTTPMode: the operator submits the job to the
head's dashboard, so there is no extra submitter pod; the head declares the dashboard port for that.
Deletion (featureJob.deletion): "trigger" = the cluster goes when the job ends (shutdownAfterJobFinishes)
and the CronJob's trigger deletes the RayJob ttlSecondsAfterFinished later; "deletionRules" = KubeRay
(>= 1.6) deletes the cluster at once and the RayJob after the TTL.
*/}}
{{- define "surge.featureRayJob" -}}
{{- $fj := .Values.featureJob }}
{{- $name := include "surge.componentName" (list . "feature-job") }}
{{- $env := "" }}
{{- $env = include "surge.kafkaSaslEnv" . }}
{{- if eq $fj.onlineStore.backend "postgres" }}
{{- $env = printf "%s\n- name: SURGE_FEATURES_PG_DSN\n  valueFrom:\n    secretKeyRef:\n      name: %s\n      key: %s" $env $fj.onlineStore.dsnSecret.name $fj.onlineStore.dsnSecret.key }}
{{- end }}
{{- $storageMounts := "- {name: settings, mountPath: /etc/surge, readOnly: true}\n- {name: features, mountPath: /var/lib/surge/features}" }}
{{- $storageVolumes := printf "- name: settings\n  configMap:\n    name: %s\n    items:\n      - {key: feature-job.json, path: feature-job.json}" $name }}
{{- $claim := default (include "surge.componentName" (list . "features")) $fj.existingClaim }}
{{- $storageVolumes = printf "%s\n- name: features\n  persistentVolumeClaim:\n    claimName: %s" $storageVolumes $claim }}
{{- $head := dict "resources" $fj.headResources "shmSizeLimit" $fj.shmSizeLimit }}
{{- $worker := dict "resources" $fj.workers.resources "shmSizeLimit" $fj.shmSizeLimit }}
apiVersion: ray.io/v1
kind: RayJob
metadata:
  generateName: {{ $name }}-
  labels:
    {{- include "surge.rayPodLabels" (list . "feature-job") | nindent 4 }}
spec:
  entrypoint: {{ printf "%s --settings /etc/surge/feature-job.json" $fj.entrypoint | quote }}
  submissionMode: HTTPMode
  {{- if eq $fj.deletion "deletionRules" }}
  deletionStrategy:
    deletionRules:
      {{- range list "SUCCEEDED" "FAILED" }}
      - {policy: DeleteCluster, condition: {jobStatus: {{ . }}, ttlSeconds: 0}}
      - {policy: DeleteSelf, condition: {jobStatus: {{ . }}, ttlSeconds: {{ int $fj.ttlSecondsAfterFinished }}}}
      {{- end }}
  {{- else }}
  shutdownAfterJobFinishes: true
  # The job's Ray cluster goes after this; the RayJob itself is deleted by the trigger (featureJob.deletion).
  ttlSecondsAfterFinished: {{ int $fj.ttlSecondsAfterFinished }}
  {{- end }}
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
            {{- include "surge.rayPodLabels" (list . "feature-job") | nindent 12 }}
            surge.io/ray-node: head
        spec:
          {{- include "surge.rayPodSpec" (dict "root" . "group" $head "name" "ray-head" "image" (include "surge.image" .) "env" $env "head" true "kafka" true "extraMounts" $storageMounts "extraVolumes" $storageVolumes) | trim | nindent 10 }}
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
              {{- include "surge.rayPodLabels" (list . "feature-job") | nindent 14 }}
              surge.io/ray-node: cpu-worker
          spec:
            {{- include "surge.rayPodSpec" (dict "root" . "group" $worker "name" "ray-worker" "image" (include "surge.image" .) "env" $env "kafka" true) | trim | nindent 12 }}
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
