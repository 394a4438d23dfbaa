{{/*
The serve config the RayService runs: files/serve_config.yaml (a byte-for-byte copy of
deployments/serve_config.yaml, which `serve run` uses locally; a test keeps them identical) with exactly
these documented cluster overrides, and nothing else:

  1. http_options.host = 0.0.0.0, http_options.port = rayCluster.servePort (reachable from the Service).
  2. llm: engine, model, served_model_name, max_model_len, dtype from model.*; with model.gpus > 0:
     device cuda, num_gpus = tensor_parallel_size = model.gpus, gpu_memory_utilization, and num_cpus 0
     (GPU workers advertise no CPUs, so no CPU-only replica can land on, and pin, a GPU node);
     with model.gpus = 0: device cpu, num_gpus 0, num_cpus = model.numCpus.
  3. <stage>.autoscaling: each key set under autoscaling.<stage> replaces the same key (camelCase mapped
     to Serve's snake_case names); other keys keep the serve config's values.
  4. retriever.store: embedded at vectorStore.embedded.path, or pgvector (DSN from env SURGE_PG_DSN).
  5. gateway.max_tokens_limit = gateway.maxTokensLimit; gateway.inference_log: enabled and Kafka settings
     and topic_prefix from kafka.* when gateway.inferenceLog; gateway.api_keys_file (the mounted
     principals Secret) when gateway.principalsSecret.name is set.
  6. guardrails.allow = guardrails.allow when set (the app checks the guardrails again when it builds).
*/}}
{{- define "surge.serveConfig" -}}
{{- $cfg := .Files.Get "files/serve_config.yaml" | fromYaml }}
{{- if not $cfg.applications }}
{{- fail "files/serve_config.yaml is missing or has no applications: copy deployments/serve_config.yaml into helm/surge/files/" }}
{{- end }}
{{- $_ := set $cfg.http_options "host" "0.0.0.0" }}
{{- $_ := set $cfg.http_options "port" (int .Values.rayCluster.servePort) }}
{{- $args := (index $cfg.applications 0).args }}
{{- /* 2. the LLM stage */}}
{{- $llm := $args.llm }}
{{- $gpus := int .Values.model.gpus }}
{{- $_ := set $llm "engine" .Values.model.engine }}
{{- $_ := set $llm "model" .Values.model.name }}
{{- $_ := set $llm "served_model_name" .Values.model.servedModelName }}
{{- $_ := set $llm "max_model_len" (int .Values.model.maxModelLen) }}
{{- $_ := set $llm "dtype" .Values.model.dtype }}
{{- if gt $gpus 0 }}
{{- $_ := set $llm "device" "cuda" }}
{{- $_ := set $llm "num_gpus" $gpus }}
{{- $_ := set $llm "tensor_parallel_size" $gpus }}
{{- $_ := set $llm "gpu_memory_utilization" .Values.model.gpuMemoryUtilization }}
{{- $_ := set $llm "num_cpus" 0 }}
{{- else }}
{{- $_ := set $llm "device" "cpu" }}
{{- $_ := set $llm "num_gpus" 0 }}
{{- $_ := set $llm "num_cpus" .Values.model.numCpus }}
{{- end }}
{{- /* 3. per-stage autoscaling */}}
{{- $keys := dict "minReplicas" "min_replicas" "maxReplicas" "max_replicas" "targetOngoingRequests" "target_ongoing_requests" "keepWarm" "keep_warm" "upscaleDelaySeconds" "upscale_delay_s" "downscaleDelaySeconds" "downscale_delay_s" "downscaleToZeroDelaySeconds" "downscale_to_zero_delay_s" }}
{{- range $stage, $overrides := .Values.autoscaling }}
{{- $stageArgs := index $args $stage }}
{{- if not (hasKey $stageArgs "autoscaling") }}{{- $_ := set $stageArgs "autoscaling" dict }}{{- end }}
{{- range $key, $value := $overrides }}
{{- $_ := set $stageArgs.autoscaling (get $keys $key) $value }}
{{- end }}
{{- end }}
{{- /* 4. the vector store */}}
{{- if eq .Values.vectorStore.backend "pgvector" }}
{{- $_ := set $args.retriever "store" (dict "backend" "pgvector" "dsn_env" "SURGE_PG_DSN" "table" .Values.vectorStore.pgvector.table "pool_size" (int .Values.vectorStore.pgvector.poolSize)) }}
{{- else }}
{{- $_ := set $args.retriever "store" (dict "backend" "embedded" "path" .Values.vectorStore.embedded.path) }}
{{- end }}
{{- /* 5. the gateway */}}
{{- $_ := set $args.gateway "max_tokens_limit" (int .Values.gateway.maxTokensLimit) }}
{{- with .Values.guardrails.allow }}
{{- $_ := set $args "guardrails" (dict "allow" .) }}
{{- end }}
{{- if .Values.gateway.principalsSecret.name }}
{{- $_ := set $args.gateway "api_keys_file" (printf "%s/%s" (include "surge.principalsDir" .) .Values.gateway.principalsSecret.key) }}
{{- end }}
{{- if .Values.gateway.inferenceLog }}
{{- $_ := set $args.gateway "inference_log" (dict "enabled" true "kafka" (include "surge.kafkaSettings" . | fromYaml) "topic_prefix" .Values.kafka.topicPrefix) }}
{{- else }}
{{- $_ := set $args.gateway "inference_log" (dict "enabled" false) }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}
