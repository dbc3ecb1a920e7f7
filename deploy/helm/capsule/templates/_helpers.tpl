{{/* The release's full name: <release>, or <release>-capsule when the release name lacks "capsule". */}}
{{- define "capsule.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "capsule.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "capsule.labels" -}}
{{ include "capsule.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "capsule.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "capsule.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: name the existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "capsule.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces the scanner serves, comma-separated: scanner.namespaces, else the release's. */}}
{{- define "capsule.namespaces" -}}
{{- if .Values.scanner.namespaces -}}
{{- join "," .Values.scanner.namespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* Checks of values that no template would otherwise catch. */}}
{{- define "capsule.validate" -}}
{{- if not (has .Values.rbac.mode (list "scanner" "operator")) -}}
{{- fail (printf "rbac.mode: %q is neither scanner nor operator" .Values.rbac.mode) -}}
{{- end -}}
{{- if not (has .Values.staging.type (list "emptyDir" "ephemeral" "existingClaim")) -}}
{{- fail (printf "staging.type: %q is not emptyDir, ephemeral or existingClaim" .Values.staging.type) -}}
{{- end -}}
{{- if and (eq .Values.staging.type "existingClaim") (not .Values.staging.existingClaim) -}}
{{- fail "staging.existingClaim: name the PersistentVolumeClaim when staging.type is existingClaim" -}}
{{- end -}}
{{- if and .Values.scanner.allNamespaces .Values.scanner.namespaces -}}
{{- fail "scanner.namespaces: leave it empty with scanner.allNamespaces, or list the namespaces and turn allNamespaces off" -}}
{{- end -}}
{{- if and (not .Values.scanner.enabled) (not .Values.bucket) -}}
{{- fail "bucket: without the scanner the workers serve only this bucket: set it (s3://BUCKET/PREFIX?region=…)" -}}
{{- end -}}
{{- if .Values.config.bucket -}}
{{- fail "config.bucket: set the top-level value bucket instead (it becomes CAPSULE_BUCKET)" -}}
{{- end -}}
{{- end -}}
