{{/*
Names. fullname is "<release>-trm-sre", or the release name alone when it
already contains the chart name (helm install trm-sre ... gives "trm-sre",
the names deploy/base uses).
*/}}
{{- define "trm-sre.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "trm-sre.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "trm-sre.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "trm-sre.labels" -}}
helm.sh/chart: {{ include "trm-sre.chart" . }}
{{ include "trm-sre.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: trm-sre
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels: immutable once the Deployment exists. */}}
{{- define "trm-sre.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trm-sre.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "trm-sre.serviceAccountName" -}}
{{- include "trm-sre.fullname" . }}
{{- end }}

{{- define "trm-sre.tokenSecretName" -}}
{{- if .Values.webhookToken.existingSecret }}
{{- .Values.webhookToken.existingSecret }}
{{- else }}
{{- printf "%s-webhook-token" (include "trm-sre.fullname" .) }}
{{- end }}
{{- end }}

{{- define "trm-sre.stateClaimName" -}}
{{- if .Values.persistence.existingClaim }}
{{- .Values.persistence.existingClaim }}
{{- else }}
{{- printf "%s-state" (include "trm-sre.fullname" .) }}
{{- end }}
{{- end }}

{{/* The image: repository:tag (CUDA variant: tag + gpu.tagSuffix), or @digest. */}}
{{- define "trm-sre.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.gpu.enabled }}{{ $tag = printf "%s%s" $tag .Values.gpu.tagSuffix }}{{ end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* "true" when store.url names PostgreSQL (replicas share it), "" for SQLite. */}}
{{- define "trm-sre.postgres" -}}
{{- $url := .Values.store.url | default "" }}
{{- if or (hasPrefix "postgresql://" $url) (hasPrefix "postgres://" $url) }}true{{ end }}
{{- end }}
