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

{{/* The container environment: the ConfigMap, then each secret setting via secretKeyRef. */}}
{{- define "finpipe.envFrom" -}}
envFrom:
  - configMapRef:
      name: {{ .Values.configMapName }}
{{- with .Values.secretEnv }}
env:
  {{- range $field, $ref := . }}
  - name: {{ include "finpipe.envName" $field }}
    valueFrom:
      secretKeyRef:
        name: {{ $ref.name }}
        key: {{ $ref.key }}
  {{- end }}
{{- end }}
{{- end -}}
