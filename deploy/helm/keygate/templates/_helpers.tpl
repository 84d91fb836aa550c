{{/*
Helpers shared by the templates. Component-scoped helpers take a dict:
  (dict "root" $ "component" "gateway")
where component is one of: all-in-one, gateway, orchestrator, delivery (or migrate for the Job).
*/}}

{{- define "keygate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keygate.fullname" -}}
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

{{- define "keygate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The image tag in effect (the chart's appVersion unless image.tag is set). */}}
{{- define "keygate.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "keygate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "keygate.imageTag" .) }}
{{- end }}
{{- end }}

{{- define "keygate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keygate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object the chart makes. */}}
{{- define "keygate.labels" -}}
helm.sh/chart: {{ include "keygate.chart" . }}
{{ include "keygate.selectorLabels" . }}
app.kubernetes.io/version: {{ include "keygate.imageTag" . | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/part-of: keygate
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "keygate.componentSelectorLabels" -}}
{{ include "keygate.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "keygate.componentLabels" -}}
{{ include "keygate.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The components (Deployments) of the selected mode, space separated. Fails on an unknown mode.
*/}}
{{- define "keygate.components" -}}
{{- if eq .Values.mode "allInOne" -}}
all-in-one
{{- else if eq .Values.mode "split" -}}
gateway orchestrator delivery
{{- else -}}
{{- fail (printf "mode must be \"allInOne\" or \"split\", not %q" (toString .Values.mode)) -}}
{{- end -}}
{{- end }}

{{/* The values block of a component: allInOne, gateway, orchestrator or delivery. */}}
{{- define "keygate.valuesKey" -}}
{{- if eq . "all-in-one" }}allInOne{{ else }}{{ . }}{{ end }}
{{- end }}

{{/* The value of KEYGATE_ROLES for a component. */}}
{{- define "keygate.roles" -}}
{{- if eq . "all-in-one" }}gateway,orchestrator,delivery{{ else }}{{ . }}{{ end }}
{{- end }}

{{/* "true" when the component's pods run the gateway role, i.e. serve gRPC. */}}
{{- define "keygate.servesGrpc" -}}
{{- if or (eq . "all-in-one") (eq . "gateway") }}true{{ end }}
{{- end }}

{{/*
Object name of a component's Deployment, HPA and PDB: the fullname for all-in-one, else
fullname-component.
*/}}
{{- define "keygate.componentName" -}}
{{- if eq .component "all-in-one" }}
{{- include "keygate.fullname" .root }}
{{- else }}
{{- printf "%s-%s" (include "keygate.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}
{{- end }}

{{/*
Service name of a component. The pods that serve gRPC (all-in-one or gateway) sit behind the
Service named after the release, so the API address does not change with the mode.
*/}}
{{- define "keygate.serviceName" -}}
{{- if include "keygate.servesGrpc" .component }}
{{- include "keygate.fullname" .root }}
{{- else }}
{{- include "keygate.componentName" . }}
{{- end }}
{{- end }}

{{- define "keygate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keygate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* KEYGATE_DATABASE_URL from its Secret; shared by the Deployments and the migration Job. */}}
{{- define "keygate.databaseUrlEnv" -}}
- name: KEYGATE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.databaseUrl.secretName is required: Keygate on Kubernetes needs PostgreSQL" .Values.secrets.databaseUrl.secretName }}
      key: {{ required "secrets.databaseUrl.key is required" .Values.secrets.databaseUrl.key }}
{{- end }}

{{/* The connection settings taken from Secrets. */}}
{{- define "keygate.secretEnv" -}}
{{ include "keygate.databaseUrlEnv" . }}
{{- with .Values.secrets.redisUrl }}
{{- if .secretName }}
- name: KEYGATE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ required "secrets.redisUrl.key is required" .key }}
{{- end }}
{{- end }}
{{- with .Values.secrets.adminToken }}
{{- if .secretName }}
- name: KEYGATE_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ required "secrets.adminToken.key is required" .key }}
{{- end }}
{{- end }}
- name: KEYGATE_INSTANT_KEY_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.instantKeySecret.secretName is required: with PostgreSQL every replica needs the same Instant Key secret" .Values.secrets.instantKeySecret.secretName }}
      key: {{ required "secrets.instantKeySecret.key is required" .Values.secrets.instantKeySecret.key }}
- name: KEYGATE_PAGE_TOKEN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.pageTokenKey.secretName is required: with PostgreSQL every replica needs the same page-token key" .Values.secrets.pageTokenKey.secretName }}
      key: {{ required "secrets.pageTokenKey.key is required" .Values.secrets.pageTokenKey.key }}
{{- with .Values.secrets.cacheKey }}
{{- if .secretName }}
- name: KEYGATE_CACHE_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ required "secrets.cacheKey.key is required" .key }}
{{- end }}
{{- end }}
{{- with .Values.secrets.credentialsKey }}
{{- if .secretName }}
- name: KEYGATE_CREDENTIALS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ required "secrets.credentialsKey.key is required" .key }}
      optional: true
{{- end }}
{{- end }}
{{- end }}

{{/*
The Instant Key senders' secrets (SMTP URL, SMS API auth token), for the components that
read them: the delivery role sends, and the gateway decides from the same settings which
channels DeliverInstantKey accepts. The orchestrator never uses them. `optional: true`: a key
missing from the Secret leaves the variable unset (no sender for that channel).
*/}}
{{- define "keygate.senderSecretEnv" -}}
{{- with .Values.secrets.smtpUrl }}
{{- if .secretName }}
- name: KEYGATE_SMTP_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ required "secrets.smtpUrl.key is required" .key }}
      optional: true
{{- end }}
{{- end }}
{{- with .Values.secrets.smsAuthToken }}
{{- if .secretName }}
- name: KEYGATE_SMS_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ required "secrets.smsAuthToken.key is required" .key }}
      optional: true
{{- end }}
{{- end }}
{{- end }}

{{/* "true" when the component's pods read the Instant Key senders' settings. */}}
{{- define "keygate.readsSenderSecrets" -}}
{{- if ne . "orchestrator" }}true{{ end }}
{{- end }}

{{/* A config value as a string ("" when unset). */}}
{{- define "keygate.config" -}}
{{- $v := index .root.Values.config .key }}
{{- if kindIs "invalid" $v }}{{ else }}{{ toString $v }}{{ end }}
{{- end }}

{{/*
Checks that span several values; rendered (to nothing) by the Deployment template, so that
`helm template`, `install` and `upgrade` all refuse an unsafe combination.
*/}}
{{- define "keygate.validate" -}}
{{- $drain := include "keygate.config" (dict "root" . "key" "KEYGATE_DRAIN_SECS") | default "20" | int }}
{{- $preStop := int .Values.preStopSleepSeconds }}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- if le $grace (add $preStop $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds (%d) + KEYGATE_DRAIN_SECS (%d), or pods are killed mid-drain" $grace $preStop $drain) }}
{{- end }}
{{- if not .Values.secrets.redisUrl.secretName }}
{{- range $component := include "keygate.components" . | splitList " " }}
{{- $v := index $.Values (include "keygate.valuesKey" $component) }}
{{- if or (eq $.Values.mode "split") $v.autoscaling.enabled (gt (int $v.replicas) 1) }}
{{- fail "secrets.redisUrl is required with more than one replica or in split mode: the in-process cache and event bus are not shared between pods" }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key := list "KEYGATE_ROLES" "KEYGATE_DATABASE_URL" "KEYGATE_REDIS_URL" "KEYGATE_ADMIN_TOKEN" "KEYGATE_SMTP_URL" "KEYGATE_SMS_AUTH_TOKEN" }}
{{- if hasKey $.Values.config $key }}
{{- fail (printf "config.%s cannot be set: the chart sets KEYGATE_ROLES per Deployment, and connection settings and credentials come from `secrets`" $key) }}
{{- end }}
{{- end }}
{{- if and .Values.networkPolicy.enabled .Values.metrics.serviceMonitor.enabled .Values.networkPolicy.ingress.from (not .Values.networkPolicy.ingress.metricsFrom) }}
{{- fail "networkPolicy.ingress.from is narrowed and metrics.serviceMonitor is enabled: set networkPolicy.ingress.metricsFrom to the peers of your Prometheus, or the NetworkPolicy blocks its scrapes of /metrics on port 8080" }}
{{- end }}
{{- end }}

{{/*
topologySpreadConstraints with the component's selector added where none is given.
*/}}
{{- define "keygate.topologySpreadConstraints" -}}
{{- $ctx := . }}
{{- range $c := .root.Values.topologySpreadConstraints }}
{{- $c := deepCopy $c }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" (include "keygate.componentSelectorLabels" $ctx | fromYaml)) }}
{{- end }}
- {{ toYaml $c | nindent 2 | trim }}
{{- end }}
{{- end }}

{{/* Egress rules for DNS and PostgreSQL, shared by both NetworkPolicies. */}}
{{- define "keygate.egressDnsPostgres" -}}
{{- $egress := .Values.networkPolicy.egress }}
# DNS
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with $egress.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# PostgreSQL
- ports:
    - port: {{ $egress.postgres.port }}
      protocol: TCP
  {{- with $egress.postgres.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
