{{/* Names and labels, as `helm create` shapes them. */}}
{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluice.fullname" -}}
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

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ include "sluice.chart" . }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector of the gateway pods (the monitor and the Job carry another component). */}}
{{- define "sluice.gatewaySelector" -}}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "sluice.secretName" -}}
{{- default (printf "%s-env" (include "sluice.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "sluice.hasSecret" -}}
{{- if or .Values.secrets.existingSecret .Values.secrets.env }}true{{- end }}
{{- end }}

{{/*
sluice.yaml: .Values.config with what the chart decides: the ports it serves, the drain
deadline the pod's grace period is computed from, and migrate_on_start off when the Job migrates.
*/}}
{{- define "sluice.config" -}}
{{- $cfg := deepCopy .Values.config }}
{{- $server := default dict (get $cfg "server") }}
{{- range $key, $value := dict "ops_port" "server.opsPort" "shutdown_timeout_s" "server.shutdownTimeoutSeconds" "workers" "server.workers" }}
{{- if hasKey $server $key }}
{{- fail (printf "config.server.%s: set %s instead (the chart derives ports, probes and the grace period from it)" $key $value) }}
{{- end }}
{{- end }}
{{- $_ := set $server "shutdown_timeout_s" .Values.server.shutdownTimeoutSeconds }}
{{- $_ := set $server "workers" .Values.server.workers }}
{{- if .Values.server.opsPort }}{{- $_ := set $server "ops_port" .Values.server.opsPort }}{{- end }}
{{- $_ := set $cfg "server" $server }}
{{- if .Values.migrations.enabled }}
{{- $tel := default dict (get $cfg "telemetry") }}
{{- $_ := set $tel "migrate_on_start" false }}
{{- $_ := set $cfg "telemetry" $tel }}
{{- end }}
{{- if not (get $cfg "data_dir") }}{{- $_ := set $cfg "data_dir" "/var/lib/sluice" }}{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* Environment of every Sluice container: the Secret's keys, then extraEnv. */}}
{{- define "sluice.env" -}}
- name: SLUICE_CONFIG
  value: /etc/sluice/sluice.yaml
- name: SLUICE_DATA_DIR
  value: /var/lib/sluice
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "sluice.envFrom" -}}
{{- if include "sluice.hasSecret" . }}
envFrom:
  - secretRef:
      name: {{ include "sluice.secretName" . }}
{{- end }}
{{- end }}

{{/* The read-only root's writable paths and the config. */}}
{{- define "sluice.volumeMounts" -}}
- {name: config, mountPath: /etc/sluice, readOnly: true}
- {name: data, mountPath: /var/lib/sluice}
- {name: tmp, mountPath: /tmp}
{{- end }}

{{- define "sluice.volumes" -}}
- name: config
  configMap:
    name: {{ .configMap }}
- name: data
  emptyDir: {sizeLimit: {{ .root.Values.volumes.dataSizeLimit }}}
- name: tmp
  emptyDir: {sizeLimit: {{ .root.Values.volumes.tmpSizeLimit }}}
{{- end }}

{{/* Pod-level scheduling and security shared by the gateway, the monitor and the Job. */}}
{{- define "sluice.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
