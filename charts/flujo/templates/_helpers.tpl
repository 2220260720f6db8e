{{/*
The chart name, overridable.
*/}}
{{- define "flujo.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name prefix of every object: <release>-<chart>, or the release name
when it already contains the chart name; 63 characters at most.
*/}}
{{- define "flujo.fullname" -}}
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

{{- define "flujo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object the chart renders.
*/}}
{{- define "flujo.labels" -}}
helm.sh/chart: {{ include "flujo.chart" . }}
app.kubernetes.io/name: {{ include "flujo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flujo
{{- end }}

{{/*
Selector labels of the operator pods. Step pods carry
app.kubernetes.io/component: step and are never selected by these.
*/}}
{{- define "flujo.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "flujo.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "flujo.operatorLabels" -}}
{{ include "flujo.labels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels of the step-runner pods, as the operator sets them (flujo_operator.builders).
*/}}
{{- define "flujo.stepSelectorLabels" -}}
app.kubernetes.io/component: step
app.kubernetes.io/managed-by: flujo-operator
{{- end }}

{{- define "flujo.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flujo.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference: repository@digest, or repository:tag.
Call with (dict "repository" ... "tag" ... "digest" ...).
*/}}
{{- define "flujo.imageRef" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{- define "flujo.image" -}}
{{- include "flujo.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag) "digest" .Values.image.digest) }}
{{- end }}

{{/*
The step-runner image: steps.image where set, else the operator's image.
*/}}
{{- define "flujo.stepImage" -}}
{{- $s := .Values.steps.image }}
{{- if or $s.repository $s.tag $s.digest }}
{{- include "flujo.imageRef" (dict "repository" (default .Values.image.repository $s.repository) "tag" (default (default .Chart.AppVersion .Values.image.tag) $s.tag) "digest" $s.digest) }}
{{- else }}
{{- include "flujo.image" . }}
{{- end }}
{{- end }}

{{/*
The watched namespaces as a JSON list; [] means all namespaces.
*/}}
{{- define "flujo.watchNamespaces" -}}
{{- if .Values.singleNamespace }}
{{- list .Release.Namespace | toJson }}
{{- else }}
{{- .Values.watchNamespaces | default list | uniq | toJson }}
{{- end }}
{{- end }}

{{/*
"true" in namespaced mode (Roles instead of ClusterRoles), else "".
*/}}
{{- define "flujo.namespaced" -}}
{{- if include "flujo.watchNamespaces" . | fromJsonArray }}true{{ end }}
{{- end }}

{{/*
Namespaces that get the step-pod NetworkPolicy, as a JSON list.
*/}}
{{- define "flujo.stepNamespaces" -}}
{{- $watched := include "flujo.watchNamespaces" . | fromJsonArray }}
{{- if $watched }}
{{- $watched | toJson }}
{{- else }}
{{- .Values.networkPolicy.steps.namespaces | default (list .Release.Namespace) | uniq | toJson }}
{{- end }}
{{- end }}

{{/*
kopf peering is on with more than one replica.
*/}}
{{- define "flujo.peering" -}}
{{- if gt (int .Values.operator.replicas) 1 }}true{{ end }}
{{- end }}

{{/*
Egress to the cluster DNS (UDP and TCP), shared by the operator and step policies.
*/}}
{{- define "flujo.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.namespaceSelector | nindent 10 }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podSelector | nindent 10 }}
  ports:
    {{- range .Values.networkPolicy.dns.ports }}
    - port: {{ . }}
      protocol: UDP
    - port: {{ . }}
      protocol: TCP
    {{- end }}
{{- end }}

{{/*
Checks across values that values.schema.json cannot express; each fails with
a message naming the values.
*/}}
{{- define "flujo.validate" -}}
{{- if and .Values.singleNamespace .Values.watchNamespaces }}
{{- fail "values: set singleNamespace or watchNamespaces, not both" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "values: metrics.serviceMonitor.enabled needs metrics.enabled=true" }}
{{- end }}
{{- if and .Values.metrics.prometheusRule.enabled (not .Values.metrics.enabled) }}
{{- fail "values: metrics.prometheusRule.enabled needs metrics.enabled=true" }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.operator.healthPort)) }}
{{- fail "values: metrics.port must differ from operator.healthPort" }}
{{- end }}
{{- if and (include "flujo.peering" .) (ge (int .Values.operator.pdbMinAvailable) (int .Values.operator.replicas)) }}
{{- fail "values: operator.pdbMinAvailable must be lower than operator.replicas, or no node could ever be drained" }}
{{- end }}
{{- end }}

{{- define "flujo.peeringName" -}}
{{- default (include "flujo.fullname" .) .Values.operator.peering.name }}
{{- end }}
