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

{{/*
The worker environment (resqmp.worker_env defaults + image numba cache) and extra env, under
resqmp's rule: $NAME / ${NAME} expand to the container's own variable (empty when unset), nothing
else is interpreted. Pod env holds the values without references, each $ doubled so that
Kubernetes' own $(VAR) syntax interprets nothing; resqmp.envArgs exports the others.
*/}}
{{- define "resqmp.env" -}}
{{- range $k, $v := merge (deepCopy .Values.env) .Values.workerEnv }}
{{- if not (regexMatch "\\$(\\{[A-Za-z_][A-Za-z0-9_]*\\}|[A-Za-z_])" (toString $v)) }}
- name: {{ $k }}
  value: {{ toString $v | replace "$" "$$" | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Args prefix of a container with resqmp.env: `sh -c 'export NAME=WORD...; exec "$@"'` for the
values with $NAME / ${NAME} references, each WORD single-quoted but for "${NAME}" (no splitting,
globbing, $(...) or backticks). Runs after the image entrypoint, before the container's process.
A value referring to another variable of this environment is refused, as resqmp does.
*/}}
{{- define "resqmp.envArgs" -}}
{{- $env := merge (deepCopy .Values.env) .Values.workerEnv }}
{{- $exports := list }}
{{- range $k, $v := $env }}
{{- $s := toString $v }}
{{- $refs := regexFindAll "\\$(\\{[A-Za-z_][A-Za-z0-9_]*\\}|[A-Za-z_][A-Za-z0-9_]*)" $s -1 }}
{{- range $refs }}
{{- $ref := trimPrefix "$" . | trimPrefix "{" | trimSuffix "}" }}
{{- if and (ne $ref $k) (hasKey $env $ref) }}
{{- fail (printf "env %s=%q refers to %s, which workerEnv/env also sets: write %s's value out in full" $k $s $ref $k) }}
{{- end }}
{{- end }}
{{- if $refs }}
{{- $quoted := printf "'%s'" (replace "'" "'\"'\"'" $s) }}
{{- $word := regexReplaceAll "\\$\\{([A-Za-z_][A-Za-z0-9_]*)\\}|\\$([A-Za-z_][A-Za-z0-9_]*)" $quoted "'\"$${${1}${2}}\"'" }}
{{- $exports = append $exports (printf "export %s=%s" $k $word) }}
{{- end }}
{{- end }}
{{- if $exports }}
- sh
- -c
- {{ printf "%s; exec \"$@\"" (join "; " $exports) | toJson }}
- resqmp-env
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
