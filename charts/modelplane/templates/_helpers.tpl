{{/* Chart name, truncated to the 63 characters a label value may hold. */}}
{{- define "modelplane.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Resource name prefix: RELEASE-modelplane, or RELEASE when it already names the chart. */}}
{{- define "modelplane.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's resources: "modelplane.component" (dict "root" $ "component" "router"). */}}
{{- define "modelplane.componentName" -}}
{{- printf "%s-%s" (include "modelplane.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelplane.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every resource. */}}
{{- define "modelplane.labels" -}}
helm.sh/chart: {{ include "modelplane.chart" . }}
app.kubernetes.io/name: {{ include "modelplane.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelplane
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of one component (never change across upgrades: selectors are immutable). */}}
{{- define "modelplane.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelplane.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's resources. */}}
{{- define "modelplane.componentLabels" -}}
{{ include "modelplane.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The control image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "modelplane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "modelplane.runtimeImage" -}}
{{- printf "%s:%s" .Values.operator.runtimeImage.repository (default .Chart.AppVersion .Values.operator.runtimeImage.tag) -}}
{{- end -}}

{{/* Secret with the registry's bootstrap admin token. */}}
{{- define "modelplane.registryTokenSecret" -}}
{{- default (include "modelplane.componentName" (dict "root" . "component" "registry-token")) .Values.registry.auth.existingSecret -}}
{{- end -}}

{{/* The registry's in-cluster URL. */}}
{{- define "modelplane.registryServiceUrl" -}}
{{- printf "http://%s.%s.svc:%v" (include "modelplane.componentName" (dict "root" . "component" "registry")) .Release.Namespace .Values.registry.service.port -}}
{{- end -}}

{{- define "modelplane.registryUrl" -}}
{{- default (include "modelplane.registryServiceUrl" .) .Values.operator.registryUrl -}}
{{- end -}}

{{/* Pod-level fields every pod shares: security context, pull secrets. */}}
{{- define "modelplane.podCommon" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Scheduling fields of one component: "modelplane.scheduling" (dict "root" $ "values" .Values.router "component" "router"). */}}
{{- define "modelplane.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if gt (int .values.replicas) 1 }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "modelplane.selectorLabels" (dict "root" .root "component" .component) | nindent 14 }}
{{- end }}
{{- end -}}

{{/* The env var every server binds its listening address to: the pod's own IP. */}}
{{- define "modelplane.podIPEnv" -}}
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end -}}

{{/* A writable /tmp under the read-only root filesystem. */}}
{{- define "modelplane.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}
