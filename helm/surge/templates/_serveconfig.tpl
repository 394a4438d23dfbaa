{{/*
The serve config the RayService runs: files/serve_config.yaml (a byte-for-byte copy of
deployments/serve_config.yaml, which `serve run` uses locally; a test keeps them identical) with exactly
these documented cluster overrides, and nothing else:

  1. http_options.host = 0.0.0.0, http_options.port = rayCluster.servePort (reachable from the Service).
  2. models: one entry per item of `models` (surge.models), each starting from the serve config's first
     `models:` entry (its engine defaults) minus name, version and model: name, version, model, engine,
     max_model_len, dtype from the item; with gpus > 0: device cuda, num_gpus = tensor_parallel_size =
     gpus, gpu_memory_utilization, num_cpus 0 (GPU workers advertise no CPUs, so no CPU-only replica can
     land on, and pin, a GPU node) and ray_resources {surge_group_<group>: 1} (the version's GPU worker
     group, one replica per pod); with gpus = 0: device cpu, num_gpus 0, num_cpus = numCpus. Each key of
     the item's autoscaling replaces the same key (snake_case), and each key of `extra` replaces its own.
     aliases: `aliases` (weights, shadow, shadowFraction -> shadow_fraction) replaces the serve config's;
     system_prompts: `systemPrompts` when set.
  3. <stage>.autoscaling: each key set under autoscaling.<stage> replaces the same key (camelCase mapped
     to Serve's snake_case names); other keys keep the serve config's values. With
     autoscaling.embedder.backlogWarmer.enabled, embedder.autoscaling.policy.backlog is set (kept beside
     any other policy key of the serve config) to the ingestion consumer's Kafka settings, group and
     documents topic plus minLag -> min_lag, replicas, pollSeconds -> poll_s (templates/_backlogwarmer.tpl).
  4. retriever.store: embedded at vectorStore.embedded.path, or pgvector (DSN from env SURGE_PG_DSN).
  5. gateway.max_tokens_limit = gateway.maxTokensLimit; gateway.embed_queries = gateway.embedQueries and
     gateway.retrieve_queries = gateway.retrieveQueries (each when set); gateway.inference_log: enabled and
     Kafka settings and topic_prefix from kafka.* when gateway.inferenceLog; gateway.api_keys_file (the
     mounted principals Secret) when gateway.principalsSecret.name is set.
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
{{- $keys := dict "minReplicas" "min_replicas" "maxReplicas" "max_replicas" "targetOngoingRequests" "target_ongoing_requests" "keepWarm" "keep_warm" "upscaleDelaySeconds" "upscale_delay_s" "downscaleDelaySeconds" "downscale_delay_s" "downscaleToZeroDelaySeconds" "downscale_to_zero_delay_s" }}
{{- /* 2. the model registry */}}
{{- if not $args.models }}
{{- fail "files/serve_config.yaml has no `models:` list: the chart renders its `models` into it (copy deployments/serve_config.yaml into helm/surge/files/)" }}
{{- end }}
{{- $base := omit (index $args.models 0) "name" "version" "model" }}
{{- $models := list }}
{{- range include "surge.models" . | fromYamlArray }}
{{- $e := deepCopy $base }}
{{- $_ := set $e "name" .name }}
{{- $_ := set $e "version" .version }}
{{- $_ := set $e "model" .model }}
{{- $_ := set $e "engine" .engine }}
{{- $_ := set $e "max_model_len" (int .maxModelLen) }}
{{- $_ := set $e "dtype" .dtype }}
{{- if gt (int .gpus) 0 }}
{{- $_ := set $e "device" "cuda" }}
{{- $_ := set $e "num_gpus" (int .gpus) }}
{{- $_ := set $e "tensor_parallel_size" (int .gpus) }}
{{- $_ := set $e "gpu_memory_utilization" .gpuMemoryUtilization }}
{{- $_ := set $e "num_cpus" 0 }}
{{- $_ := set $e "ray_resources" (dict .rayResource 1) }}
{{- else }}
{{- $_ := set $e "device" "cpu" }}
{{- $_ := set $e "num_gpus" 0 }}
{{- $_ := set $e "num_cpus" .numCpus }}
{{- end }}
{{- $autoscaling := deepCopy ($e.autoscaling | default dict) }}
{{- range $key, $value := .autoscaling }}
{{- $_ := set $autoscaling (get $keys $key) $value }}
{{- end }}
{{- $_ := set $e "autoscaling" $autoscaling }}
{{- range $key, $value := .extra }}
{{- $_ := set $e $key (deepCopy $value) }}
{{- end }}
{{- $models = append $models $e }}
{{- end }}
{{- $_ := set $args "models" $models }}
{{- $aliases := dict }}
{{- range $name, $alias := .Values.aliases }}
{{- $a := dict "weights" $alias.weights }}
{{- with $alias.shadow }}{{- $_ := set $a "shadow" . }}{{- end }}
{{- if hasKey $alias "shadowFraction" }}{{- $_ := set $a "shadow_fraction" $alias.shadowFraction }}{{- end }}
{{- $_ := set $aliases $name $a }}
{{- end }}
{{- $_ := set $args "aliases" $aliases }}
{{- with .Values.systemPrompts }}{{- $_ := set $args "system_prompts" . }}{{- end }}
{{- /* 3. per-stage autoscaling */}}
{{- range $stage, $overrides := .Values.autoscaling }}
{{- $stageArgs := index $args $stage }}
{{- if not (hasKey $stageArgs "autoscaling") }}{{- $_ := set $stageArgs "autoscaling" dict }}{{- end }}
{{- range $key, $value := omit $overrides "backlogWarmer" }}
{{- $_ := set $stageArgs.autoscaling (get $keys $key) $value }}
{{- end }}
{{- end }}
{{- if include "surge.backlogWarmer" . }}
{{- $policy := deepCopy ($args.embedder.autoscaling.policy | default dict) }}
{{- $_ := set $policy "backlog" (include "surge.backlogWarmerSettings" . | fromYaml) }}
{{- $_ := set $args.embedder.autoscaling "policy" $policy }}
{{- end }}
{{- /* 4. the vector store */}}
{{- if eq .Values.vectorStore.backend "pgvector" }}
{{- $_ := set $args.retriever "store" (dict "backend" "pgvector" "dsn_env" "SURGE_PG_DSN" "table" .Values.vectorStore.pgvector.table "pool_size" (int .Values.vectorStore.pgvector.poolSize)) }}
{{- else }}
{{- $_ := set $args.retriever "store" (dict "backend" "embedded" "path" .Values.vectorStore.embedded.path) }}
{{- end }}
{{- /* 5. the gateway */}}
{{- $_ := set $args.gateway "max_tokens_limit" (int .Values.gateway.maxTokensLimit) }}
{{- with .Values.gateway.embedQueries }}{{- $_ := set $args.gateway "embed_queries" . }}{{- end }}
{{- with .Values.gateway.retrieveQueries }}{{- $_ := set $args.gateway "retrieve_queries" . }}{{- end }}
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
