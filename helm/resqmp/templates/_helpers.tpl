{{/* Chart name, truncated to leave room for suffixes such as "-scheduler". */}}
{{- define "resqmp.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart, or the release name when it already holds the chart name. Kept to 40
characters: the operator derives pod and service names from the DaskCluster name, which is this
plus "-" and a 10 character launch id.
*/}}
{{- define "resqmp.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "resqmp.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels; pass (dict "ctx" $ "component" "worker"). */}}
{{- define "resqmp.selectorLabels" -}}
app.kubernetes.io/name: {{ include "resqmp.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels; pass (dict "ctx" $ "component" "worker"). */}}
{{- define "resqmp.labels" -}}
helm.sh/chart: {{ include "resqmp.chart" .ctx }}
{{ include "resqmp.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: resqmp
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "resqmp.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{- define "resqmp.claimName" -}}
{{- default (printf "%s-shared" (include "resqmp.fullname" .)) .Values.storage.existingClaim }}
{{- end }}

{{- define "resqmp.serviceAccountName" -}}
{{- default (printf "%s-launcher" (include "resqmp.fullname" .)) .Values.serviceAccount.name }}
{{- end }}

{{- define "resqmp.schedulerAddress" -}}
{{- default (printf "tcp://%s-scheduler:%d" (include "resqmp.fullname" .) (int .Values.cluster.schedulerPort)) .Values.cluster.address }}
{{- end }}

{{- define "resqmp.tasksDirectory" -}}
{{- default (printf "%s/resqmp-tasks" (trimSuffix "/" .Values.storage.mountPath)) .Values.storage.tasksDirectory }}
{{- end }}

{{/* The batch file the Job runs: the example's, else batch.content's, else batch.file. */}}
{{- define "resqmp.batchPath" -}}
{{- if .Values.example.enabled -}}
{{- printf "%s/batch.yaml" (trimSuffix "/" .Values.example.directory) }}
{{- else if .Values.batch.content -}}
/etc/resqmp/job/batch.yaml
{{- else -}}
{{- .Values.batch.file }}
{{- end }}
{{- end }}

{{/* Pod-level security context: non-root, RuntimeDefault seccomp; ids from values. */}}
{{- define "resqmp.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context: fixed, every container of the chart. */}}
{{- define "resqmp.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/* The worker environment (resqmp.worker_env defaults + image numba cache) and extra env. */}}
{{- define "resqmp.env" -}}
{{- range $k, $v := merge (deepCopy .Values.env) .Values.workerEnv }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{- define "resqmp.volumes" -}}
- name: tmp
  emptyDir: {{ if .Values.tmpSizeLimit }}{sizeLimit: {{ .Values.tmpSizeLimit | quote }}}{{ else }}{}{{ end }}
- name: shared
  persistentVolumeClaim:
    claimName: {{ include "resqmp.claimName" . }}
{{- end }}

{{- define "resqmp.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: shared
  mountPath: {{ .Values.storage.mountPath }}
{{- end }}

{{- define "resqmp.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "resqmp.imagePullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}
