{{/*
Env of the pods that run the CPU Serve replicas (gateway, embedder, retriever; the CPU model versions,
gpus 0): every credential comes from a Secret the user created, by secretKeyRef.
*/}}
{{- define "surge.servingEnv" -}}
- name: SURGE_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.gateway.apiKeysSecret.name }}
      key: {{ .Values.gateway.apiKeysSecret.key }}
{{- if eq .Values.vectorStore.backend "pgvector" }}
- name: SURGE_PG_DSN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.vectorStore.pgvector.dsnSecret.name }}
      key: {{ .Values.vectorStore.pgvector.dsnSecret.key }}
{{- end }}
{{- if .Values.gateway.inferenceLog }}
{{- include "surge.kafkaSaslEnv" . }}
{{- end }}
{{- end }}

{{/* HF_TOKEN from the Secret named by hfTokenSecret (nothing when unset). */}}
{{- define "surge.hfTokenEnv" -}}
{{- if .Values.hfTokenSecret.name }}
- name: HF_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.hfTokenSecret.name }}
      key: {{ .Values.hfTokenSecret.key }}
{{- end }}
{{- end }}

{{/* The model cache volume (modelCache.type pvc / ephemeral). */}}
{{- define "surge.modelCacheVolume" -}}
{{- $mc := .Values.modelCache }}
{{- if eq $mc.type "pvc" }}
- name: model-cache
  persistentVolumeClaim:
    claimName: {{ $mc.pvc.existingClaim }}
    readOnly: {{ $mc.pvc.readOnly }}
{{- else if eq $mc.type "ephemeral" }}
- name: model-cache
  ephemeral:
    volumeClaimTemplate:
      spec:
        accessModes: [ReadWriteOnce]
        {{- with $mc.ephemeral.storageClassName }}
        storageClassName: {{ . }}
        {{- end }}
        resources:
          requests:
            storage: {{ $mc.ephemeral.size }}
{{- end }}
{{- end }}

{{/* The init container that fills the model cache (modelCache.init). Argument: (list $ image). */}}
{{- define "surge.modelCacheInit" -}}
{{- $root := index . 0 }}
{{- $mc := $root.Values.modelCache }}
- name: model-cache
  image: {{ default (index . 1) $mc.init.image }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  {{- if $mc.init.command }}
  command:
    {{- toYaml $mc.init.command | nindent 4 }}
  {{- else }}
  # Download each models[].hfRepo into its model folder; files already there (a warm PVC) are not fetched again.
  command:
    - python
    - -c
    - |
      import json, os
      from huggingface_hub import snapshot_download
      for repo, revision, folder in json.loads(os.environ["SURGE_MODEL_DOWNLOADS"]):
          snapshot_download(repo, revision=revision, local_dir=folder)
  {{- end }}
  env:
    - {name: HOME, value: /tmp}
    - {name: HF_HUB_OFFLINE, value: "0"}
    - {name: HF_HOME, value: /tmp/.cache/huggingface}
    {{- $downloads := list }}
    {{- range include "surge.models" $root | fromYamlArray }}
    {{- if .hfRepo }}{{- $downloads = append $downloads (list .hfRepo .revision .model) }}{{- end }}
    {{- end }}
    - {name: SURGE_MODEL_DOWNLOADS, value: {{ $downloads | toJson | quote }}}
    {{- with include "surge.hfTokenEnv" $root | trim }}
    {{- . | nindent 4 }}
    {{- end }}
  resources:
    {{- toYaml $mc.init.resources | nindent 4 }}
  securityContext:
    {{- include "surge.containerSecurityContext" $root | nindent 4 }}
  volumeMounts:
    - {name: tmp, mountPath: /tmp}
    - {name: model-cache, mountPath: {{ $mc.mountPath }}}
    {{- with $mc.init.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
Pod spec shared by the Ray head and worker groups. Arguments (a dict): root, name (container name), image,
group (the group's values: resources, nodeSelector, tolerations, affinity, topologySpreadConstraints,
priorityClassName, runtimeClassName, shmSizeLimit, extraEnv, envFrom, extraVolumes, extraVolumeMounts),
resources (overrides group.resources), env (rendered env list or ""), index (mount the embedded index),
model (mount the model cache), head (declare the head's ports).
Ray writes only to /tmp, /tmp/ray (sessions, logs, spilled objects) and /dev/shm (object store), so the
root filesystem stays read-only; HOME is /tmp because FlashInfer's and CUDA's caches ignore XDG. The volume
at /tmp/ray is named "ray-logs", the name KubeRay's autoscaler sidecar mounts, so both share one log dir.
*/}}
{{- define "surge.rayPodSpec" -}}
{{- $root := .root }}
{{- $g := .group }}
{{- $mc := $root.Values.modelCache }}
{{- $model := and .model (ne $mc.type "none") }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "surge.componentName" (list $root "ray") }}
{{- if not .head }}
# Workers never call the Kubernetes API; only the head's autoscaler sidecar does (KubeRay's own RBAC).
automountServiceAccountToken: false
{{- end }}
{{- with $g.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $g.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
securityContext:
  {{- include "surge.podSecurityContext" $root | nindent 2 }}
{{- with $g.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $g.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and $model $mc.init.enabled }}
initContainers:
  {{- include "surge.modelCacheInit" (list $root .image) | trim | nindent 2 }}
{{- end }}
containers:
  - name: {{ .name }}
    image: {{ .image }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    env:
      - name: HOME
        value: /tmp
      - name: HF_HUB_OFFLINE
        value: "1"
      - name: OMP_NUM_THREADS
        value: "1"
      {{- with (trim .env) }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- if $model }}
      {{- with include "surge.hfTokenEnv" $root | trim }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- end }}
      {{- with $root.Values.tracing.env }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
      {{- with $g.extraEnv }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with $g.envFrom }}
    envFrom:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    ports:
      {{- if .head }}
      # KubeRay builds the head Service from these: without dashboard (8265) no job can be submitted.
      - {name: gcs-server, containerPort: 6379}
      - {name: dashboard, containerPort: 8265}
      - {name: client, containerPort: 10001}
      {{- end }}
      {{- if .serve }}
      - {name: serve, containerPort: {{ int $root.Values.rayCluster.servePort }}}
      {{- end }}
      - {name: metrics, containerPort: {{ int $root.Values.rayCluster.metricsPort }}}
    resources:
      {{- toYaml (.resources | default $g.resources) | nindent 6 }}
    securityContext:
      {{- include "surge.containerSecurityContext" $root | nindent 6 }}
    volumeMounts:
      - {name: tmp, mountPath: /tmp}
      - {name: ray-logs, mountPath: /tmp/ray}
      - {name: shm, mountPath: /dev/shm}
      {{- if .index }}
      - {name: surge-index, mountPath: {{ $root.Values.vectorStore.embedded.path }}}
      {{- end }}
      {{- if $model }}
      - {name: model-cache, mountPath: {{ $mc.mountPath }}, readOnly: {{ and (eq $mc.type "pvc") $mc.pvc.readOnly }}}
      {{- end }}
      {{- if .kafka }}
      {{- with include "surge.kafkaCaMount" $root | trim }}{{- . | nindent 6 }}{{- end }}
      {{- end }}
      {{- with .extraMounts }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- with $g.extraVolumeMounts }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
volumes:
  - {name: tmp, emptyDir: {}}
  - {name: ray-logs, emptyDir: {}}
  # Ray's object store lives in shared memory; the container runtime's default /dev/shm is 64 MiB. The
  # sizeLimit counts against the pod's memory: keep it >= Ray's object store (30% of memory by default).
  - name: shm
    emptyDir:
      medium: Memory
      sizeLimit: {{ $g.shmSizeLimit }}
  {{- if .index }}
  {{- $p := $root.Values.vectorStore.embedded.persistence }}
  - name: surge-index
    {{- if $p.enabled }}
    persistentVolumeClaim:
      claimName: {{ include "surge.indexClaimName" $root }}
    {{- else }}
    emptyDir:
      sizeLimit: {{ $root.Values.vectorStore.embedded.sizeLimit }}
    {{- end }}
  {{- end }}
  {{- if $model }}
  {{- with include "surge.modelCacheVolume" $root | trim }}{{- . | nindent 2 }}{{- end }}
  {{- end }}
  {{- if .kafka }}
  {{- with include "surge.kafkaCaVolume" $root | trim }}{{- . | nindent 2 }}{{- end }}
  {{- end }}
  {{- with .extraVolumes }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with $g.extraVolumes }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* The learned warmers' state claim: rayCluster.head.autoscalingState.persistence.existingClaim or the chart's. */}}
{{- define "surge.autoscalingStateClaimName" -}}
{{- default (include "surge.componentName" (list . "autoscaling-state")) .Values.rayCluster.head.autoscalingState.persistence.existingClaim }}
{{- end }}

{{/* The head's env, mount and volume for the learned warmers' state (the Serve controller runs there). */}}
{{- define "surge.autoscalingStateEnv" -}}
- {name: SURGE_AUTOSCALING_STATE_DIR, value: {{ .Values.rayCluster.head.autoscalingState.mountPath | quote }}}
{{- end }}
{{- define "surge.autoscalingStateMount" -}}
- {name: autoscaling-state, mountPath: {{ .Values.rayCluster.head.autoscalingState.mountPath | quote }}}
{{- end }}
{{- define "surge.autoscalingStateVolume" -}}
- name: autoscaling-state
  {{- if .Values.rayCluster.head.autoscalingState.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ include "surge.autoscalingStateClaimName" . }}
  {{- else }}
  emptyDir:
    sizeLimit: 64Mi
  {{- end }}
{{- end }}

{{/* The embedded index's claim: vectorStore.embedded.persistence.existingClaim or the chart's own. */}}
{{- define "surge.indexClaimName" -}}
{{- default (include "surge.componentName" (list . "index")) .Values.vectorStore.embedded.persistence.existingClaim }}
{{- end }}

{{/* One GPU worker-group entry: (dict "root" $ "group" one item of surge.gpuWorkerGroups). */}}
{{- define "surge.gpuWorkerGroup" -}}
{{- $root := .root }}
{{- $g := .group }}
- groupName: {{ $g.name }}
  replicas: {{ int $g.minReplicas }}
  minReplicas: {{ int $g.minReplicas }}
  maxReplicas: {{ int $g.maxReplicas }}
  idleTimeoutSeconds: {{ int $root.Values.rayCluster.autoscaler.idleTimeoutSeconds }}
  rayStartParams:
    # No logical CPUs: only GPU-requesting replicas (the LLM, num_cpus 0 in the serve config) fit,
    # so a CPU-only replica can never keep a GPU node alive.
    num-cpus: "0"
    num-gpus: {{ $g.gpusPerPod | quote }}
    # One slot of this GPU shape per pod: the versions of this shape request it (ray_resources in the
    # serve config), so each lands on its own group and the autoscaler knows which group to grow.
    resources: {{ printf "\"{\\\"%s\\\": 1}\"" $g.rayResource | quote }}
    metrics-export-port: {{ $root.Values.rayCluster.metricsPort | quote }}
  template:
    metadata:
      labels:
        {{- include "surge.rayPodLabels" (list $root "ray") | nindent 8 }}
        surge.io/ray-node: gpu-worker
        surge.io/gpu-shape: {{ $g.name }}
      {{- with $g.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      {{- $gpuResources := deepCopy $g.resources }}
      {{- $_ := set $gpuResources.limits "nvidia.com/gpu" (int $g.gpusPerPod) }}
      {{- include "surge.rayPodSpec" (dict "root" $root "group" $g "resources" $gpuResources "name" "ray-worker" "image" (include "surge.gpuImage" $root) "env" "" "index" false "model" true "serve" true) | trim | nindent 6 }}
{{- end }}

{{/* Where the principals Secret (gateway.principalsSecret) is mounted in the pods that run the gateway. */}}
{{- define "surge.principalsDir" -}}
/etc/surge/principals
{{- end }}

{{/* Its volume mount and volume (nothing when gateway.principalsSecret.name is empty). */}}
{{- define "surge.principalsMount" -}}
{{- if .Values.gateway.principalsSecret.name }}
- {name: principals, mountPath: {{ include "surge.principalsDir" . }}, readOnly: true}
{{- end }}
{{- end }}
{{- define "surge.principalsVolume" -}}
{{- if .Values.gateway.principalsSecret.name }}
- name: principals
  secret:
    secretName: {{ .Values.gateway.principalsSecret.name }}
    items:
      - {key: {{ .Values.gateway.principalsSecret.key }}, path: {{ .Values.gateway.principalsSecret.key }}}
{{- end }}
{{- end }}
