{{/* Names, labels and the small lookups every template shares. */}}

{{- define "finpipe.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<worker>, e.g. finpipe-workers-agent. */}}
{{- define "finpipe.workerName" -}}
{{- printf "%s-%s" .root.Release.Name .worker | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "finpipe.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: finpipe
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* Selector labels of one worker; stable across upgrades (never add a version here). */}}
{{- define "finpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "finpipe.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .worker }}
{{- end -}}

{{- define "finpipe.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* A Settings field's env var name: FINPIPE_ + field upper-cased. */}}
{{- define "finpipe.envName" -}}
{{- printf "FINPIPE_%s" (upper .) -}}
{{- end -}}

{{/* A required Settings value from .Values.config. */}}
{{- define "finpipe.setting" -}}
{{- $v := index .root.Values.config .field -}}
{{- if kindIs "invalid" $v -}}
{{- fail (printf "config.%s must be set" .field) -}}
{{- end -}}
{{- $v -}}
{{- end -}}

{{/* One env entry per secret setting (field -> {name, key}), sorted by field. */}}
{{- define "finpipe.secretEnvEntries" -}}
{{- range $field, $ref := . }}
- name: {{ include "finpipe.envName" $field }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- end }}
{{- end -}}

{{/* One env entry per plain setting (field -> value), sorted by field. */}}
{{- define "finpipe.plainEnvEntries" -}}
{{- range $field, $value := . }}
- name: {{ include "finpipe.envName" $field }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/*
A worker container's environment: the shared ConfigMap, then the worker's own identity on
top (env wins over envFrom): its settings, its Secrets (over the chart-wide ones), its stable
worker id (the StatefulSet pod's name), its Kafka user, and extra variables.
*/}}
{{- define "finpipe.workerEnv" -}}
{{- $root := .root -}}
{{- $w := .w -}}
{{- $plain := deepCopy ($w.env | default dict) -}}
{{- $secret := merge (deepCopy ($w.secretEnv | default dict)) (deepCopy ($root.Values.secretEnv | default dict)) -}}
{{- if and $w.kafkaUser $w.kafkaUser.enabled -}}
{{- $_ := set $plain "kafka_sasl_username" $w.kafkaUser.name -}}
{{- $_ := set $secret "kafka_sasl_password" (dict "name" $w.kafkaUser.name "key" "password") -}}
{{- end -}}
envFrom:
  - configMapRef:
      name: {{ $root.Values.configMapName }}
env:
  - name: FINPIPE_WORKER_ID
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  {{- with include "finpipe.plainEnvEntries" $plain | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with include "finpipe.secretEnvEntries" $secret | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with $w.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* The migration init container's environment: the ConfigMap and the schema owner. */}}
{{- define "finpipe.migrateEnv" -}}
envFrom:
  - configMapRef:
      name: {{ .root.Values.configMapName }}
env:
  {{- with include "finpipe.plainEnvEntries" (.m.env | default dict) | trim }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- with include "finpipe.secretEnvEntries" (.m.secretEnv | default dict) | trim }}
  {{- . | nindent 2 }}
  {{- end }}
{{- end -}}

{{/* The Kafka CA volume's mount directory and file name, from config.kafka_ssl_ca_location. */}}
{{- define "finpipe.caDir" -}}
{{- dir (include "finpipe.setting" (dict "root" . "field" "kafka_ssl_ca_location")) -}}
{{- end -}}
{{- define "finpipe.caFile" -}}
{{- base (include "finpipe.setting" (dict "root" . "field" "kafka_ssl_ca_location")) -}}
{{- end -}}
