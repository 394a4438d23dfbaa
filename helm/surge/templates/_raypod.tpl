{{/*
Env of the pods that run the CPU Serve replicas (gateway, embedder, retriever; the LLM when model.gpus is
0): every credential comes from a Secret the user created, by secretKeyRef.
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

{{/*
Pod spec shared by the Ray head and worker groups. Arguments (a dict): root, name (container name), image,
resources, nodeSelector, tolerations, env (rendered env list or ""), index (mount the embedded index dir).
Ray writes only to /tmp, /tmp/ray (sessions, logs, spilled objects) and /dev/shm (object store), so the
root filesystem stays read-only. The volume at /tmp/ray is named "ray-logs", the name KubeRay's autoscaler
sidecar mounts, so both containers share one log directory.
*/}}
{{- define "surge.rayPodSpec" -}}
{{- $root := .root }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
serviceAccountName: {{ include "surge.componentName" (list $root "ray") }}
{{- if ne .name "ray-head" }}
# Workers never call the Kubernetes API; only the head's autoscaler sidecar does (KubeRay's own RBAC).
automountServiceAccountToken: false
{{- end }}
securityContext:
  {{- include "surge.podSecurityContext" $root | nindent 2 }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: {{ .name }}
    image: {{ .image }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    env:
      - name: HF_HUB_OFFLINE
        value: "1"
      - name: OMP_NUM_THREADS
        value: "1"
      {{- with (trim .env) }}
      {{- . | nindent 6 }}
      {{- end }}
    ports:
      {{- if eq .name "ray-head" }}
      - {name: gcs-server, containerPort: 6379}
      - {name: dashboard, containerPort: 8265}
      - {name: client, containerPort: 10001}
      {{- end }}
      - {name: serve, containerPort: {{ int $root.Values.rayCluster.servePort }}}
      - {name: metrics, containerPort: {{ int $root.Values.rayCluster.metricsPort }}}
    resources:
      {{- toYaml .resources | nindent 6 }}
    securityContext:
      {{- include "surge.containerSecurityContext" $root | nindent 6 }}
    volumeMounts:
      - {name: tmp, mountPath: /tmp}
      - {name: ray-logs, mountPath: /tmp/ray}
      - {name: shm, mountPath: /dev/shm}
      {{- if .index }}
      - {name: surge-index, mountPath: {{ $root.Values.vectorStore.embedded.path }}}
      {{- end }}
volumes:
  - {name: tmp, emptyDir: {}}
  - {name: ray-logs, emptyDir: {}}
  # Ray's object store lives in shared memory; the container runtime's default /dev/shm is 64 MiB.
  - {name: shm, emptyDir: {medium: Memory}}
  {{- if .index }}
  - name: surge-index
    emptyDir:
      sizeLimit: {{ $root.Values.vectorStore.embedded.sizeLimit }}
  {{- end }}
{{- end }}
