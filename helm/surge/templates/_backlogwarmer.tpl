{{/*
The Embedder's backlog warmer (autoscaling.embedder.backlogWarmer; deployments/autoscaling/backlog.py).

It is an autoscaling policy, so Serve's controller runs it, and the controller always runs on the head pod
(Ray 2.60 asserts "Controller must be on the head node"). Everything it needs therefore goes to the head:
  - its settings, in the serve config's embedder.autoscaling.policy.backlog (BacklogWarmerSettings): the
    ingestion consumer's own Kafka settings, group and topic, taken from surge.consumerSettings "ingest",
    so the warmer reads exactly the group KEDA scales the consumer on (one source, nothing written twice);
  - the SASL credentials KafkaSettings reads from the environment (secretKeyRef only) and the Kafka CA;
  - egress to the brokers (templates/networkpolicy.yaml, the same ports and peers as the consumers).
*/}}

{{/* Is the backlog warmer on? Prints "true" or nothing. */}}
{{- define "surge.backlogWarmer" -}}
{{- $w := .Values.autoscaling.embedder.backlogWarmer | default dict }}
{{- if $w.enabled }}true{{ end }}
{{- end }}

{{/* BacklogWarmerSettings as YAML (fails naming the values to change when the warmer cannot work). */}}
{{- define "surge.backlogWarmerSettings" -}}
{{- $w := .Values.autoscaling.embedder.backlogWarmer }}
{{- if not .Values.consumers.ingest.enabled }}
{{- fail "autoscaling.embedder.backlogWarmer.enabled reads the ingestion consumer's lag, but consumers.ingest.enabled is false: with no consumer the backlog never drains and the warmer would hold the Embedder up for good. Enable consumers.ingest or turn the warmer off." }}
{{- end }}
{{- $replicas := int ($w.replicas | default 1) }}
{{- if gt $replicas (int .Values.autoscaling.embedder.maxReplicas) }}
{{- fail (printf "autoscaling.embedder.backlogWarmer.replicas (%d) must be <= autoscaling.embedder.maxReplicas (%d)." $replicas (int .Values.autoscaling.embedder.maxReplicas)) }}
{{- end }}
{{- $ingest := include "surge.consumerSettings" (list . "ingest") | fromYaml }}
{{- $settings := dict "kafka" $ingest.kafka "topic" (printf "%sdocuments" ($ingest.topic_prefix | default "")) "group_id" $ingest.group_id "min_lag" (int ($w.minLag | default 1)) "replicas" $replicas "poll_s" (float64 ($w.pollSeconds | default 5)) }}
{{- toYaml $settings }}
{{- end }}

{{/* The head's env: the learned warmers' state dir and, with the backlog warmer, the Kafka SASL credentials. */}}
{{- define "surge.headEnv" -}}
{{ include "surge.autoscalingStateEnv" . }}
{{- if include "surge.backlogWarmer" . }}
{{- include "surge.kafkaSaslEnv" . }}
{{- end }}
{{- end }}
