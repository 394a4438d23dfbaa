{{/*
Guardrails on the deploy config, checked when the chart renders (`helm template` / `helm install` fail with
the rule's message). The rules are data: files/guardrails.yaml, a byte-for-byte copy of
deployments/guardrails.yaml, which the app checks again when it is built (deployments/guardrails.py). Each
rule's `check` is implemented below on the serve config the RayService will run (surge.serveConfig, the
chart's overrides applied), with the same meaning as the Python function of that name. A rule whose id is
in guardrails.allow is let through; NOTES.txt lists every override, and the app logs it when it builds.
*/}}
{{- define "surge.guardrails" -}}
{{- $rules := (.Files.Get "files/guardrails.yaml" | fromYaml).rules }}
{{- if not $rules }}
{{- fail "files/guardrails.yaml is missing or has no rules: copy deployments/guardrails.yaml into helm/surge/files/" }}
{{- end }}
{{- $cfg := include "surge.serveConfig" . | fromYaml }}
{{- $args := (index $cfg.applications 0).args }}
{{- $host := toString $cfg.http_options.host }}
{{- $allow := .Values.guardrails.allow | default list }}
{{- range $rule := $rules }}
{{- $violated := "" }}
{{- if eq $rule.check "unauthenticated_gateway_off_loopback" }}
  {{- if and $args.gateway.allow_unauthenticated (not (has $host (list "127.0.0.1" "localhost" "::1"))) }}
  {{- $violated = printf "http host %s" $host }}
  {{- end }}
{{- else if eq $rule.check "max_replicas_within_budget" }}
  {{- $total := 0 }}
  {{- range $stage := list "gateway" "embedder" "retriever" }}
  {{- $total = add $total (((index $args $stage).autoscaling | default dict).max_replicas | default 1) }}
  {{- end }}
  {{- range $args.models }}
  {{- $total = add $total ((.autoscaling | default dict).max_replicas | default 1) }}
  {{- end }}
  {{- if gt (int $total) (int $rule.params.budget) }}
  {{- $violated = printf "%d replicas at most, budget %d" (int $total) (int $rule.params.budget) }}
  {{- end }}
{{- else if eq $rule.check "gpu_stage_idles_to_zero_or_keeps_warm" }}
  {{- $stages := dict "gateway" $args.gateway "embedder" $args.embedder "retriever" $args.retriever }}
  {{- range $args.models }}{{- $_ := set $stages (printf "llm %s@%s" .name .version) . }}{{- end }}
  {{- range $stage, $s := $stages }}
  {{- $a := $s.autoscaling | default dict }}
  {{- $noDelay := and (hasKey $a "downscale_to_zero_delay_s") (eq $a.downscale_to_zero_delay_s nil) }}
  {{- if and (gt (float64 ($s.num_gpus | default 0)) 0.0) (not $a.keep_warm) (or (gt (int ($a.min_replicas | default 0)) 0) $noDelay) }}
  {{- $violated = printf "%s: %v GPU(s), min_replicas %v" $stage $s.num_gpus ($a.min_replicas | default 0) }}
  {{- end }}
  {{- end }}
{{- else if eq $rule.check "logged_prompts_are_redacted" }}
  {{- $log := $args.gateway.inference_log | default dict }}
  {{- if and $log.include_prompt (hasKey $log "redact_prompt") (not $log.redact_prompt) }}
  {{- $violated = "include_prompt on, redact_prompt off" }}
  {{- end }}
{{- else }}
  {{- fail (printf "guardrail %s: the chart has no check %q (update templates/_guardrails.tpl)" $rule.id $rule.check) }}
{{- end }}
{{- if and $violated (not (has $rule.id $allow)) }}
{{- fail (printf "guardrail %s: %s (%s); to override on purpose: --set guardrails.allow={%s}" $rule.id (trim $rule.message) $violated $rule.id) }}
{{- end }}
{{- end }}
{{- end }}
