{{/* ---------------------------------------------------------------- names and labels */}}

{{- define "hymirec.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, at most 63 chars (DNS label). Component suffixes ("-serving", "-triton", ...) are
added by the callers, so the base is cut to 48 chars to leave room for them.
*/}}
{{- define "hymirec.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 48 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 48 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hymirec.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. Call with (dict "ctx" $ "component" "serving"). */}}
{{- define "hymirec.labels" -}}
helm.sh/chart: {{ include "hymirec.chart" .ctx }}
{{ include "hymirec.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: hymirec
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels. Call with (dict "ctx" $ "component" "serving"). */}}
{{- define "hymirec.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hymirec.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "hymirec.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hymirec.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- images */}}

{{/*
Image reference with the tag policy: the tag must be set and must not be "latest" (mutable tags make
rollbacks and audits lie). Call with (dict "image" .Values.image "path" "image").
*/}}
{{- define "hymirec.image" -}}
{{- $tag := toString (default "" .image.tag) | trim }}
{{- if not .image.repository }}
{{- fail (printf "%s.repository must be set" .path) }}
{{- end }}
{{- if or (eq $tag "") (eq $tag "<nil>") }}
{{- fail (printf "%s.tag must be set to an immutable version (an empty tag is not allowed)" .path) }}
{{- end }}
{{- if eq (lower $tag) "latest" }}
{{- fail (printf "%s.tag must not be 'latest': pin an immutable version" .path) }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- security contexts */}}

{{/* Pod security context: global merged with the component's. Call with (dict "ctx" $ "component" .Values.serving). */}}
{{- define "hymirec.podSecurityContext" -}}
{{- $merged := mergeOverwrite (deepCopy .ctx.Values.podSecurityContext) (default (dict) .component.podSecurityContext) }}
{{- toYaml $merged }}
{{- end }}

{{- define "hymirec.containerSecurityContext" -}}
{{- $merged := mergeOverwrite (deepCopy .ctx.Values.containerSecurityContext) (default (dict) .component.containerSecurityContext) }}
{{- toYaml $merged }}
{{- end }}

{{/* ---------------------------------------------------------------- wiring between components */}}

{{/* HYMIREC_TRITON_URL: gRPC host:port of Triton. */}}
{{- define "hymirec.tritonUrl" -}}
{{- if .Values.serving.tritonUrl }}
{{- .Values.serving.tritonUrl }}
{{- else if .Values.triton.enabled }}
{{- printf "%s-triton:%d" (include "hymirec.fullname" .) (int .Values.triton.ports.grpc) }}
{{- else }}
{{- fail "serving.tritonUrl must be set when triton.enabled is false" }}
{{- end }}
{{- end }}

{{/* The Triton repository target (training/export/triton_repo.py TARGETS): triton.modelRepository.target, or
production (GPU instance groups) when triton.gpus > 0 and local (CPU instance groups) otherwise. */}}
{{- define "hymirec.tritonTarget" -}}
{{- $target := .Values.triton.modelRepository.target }}
{{- if not $target }}
{{- $target = ternary "production" "local" (gt (int .Values.triton.gpus) 0) }}
{{- end }}
{{- if not (has $target (list "local" "production")) }}
{{- fail (printf "triton.modelRepository.target must be local, production or empty, not %q" $target) }}
{{- end }}
{{- if and (eq $target "production") (le (int .Values.triton.gpus) 0) }}
{{- fail "triton.modelRepository.target=production declares GPU instances (KIND_GPU): set triton.gpus > 0, or use target local (CPU)" }}
{{- end }}
{{- $target }}
{{- end }}

{{- define "hymirec.artifactsClaimName" -}}
{{- if .Values.artifacts.persistence.existingClaim }}
{{- .Values.artifacts.persistence.existingClaim }}
{{- else if .Values.artifacts.persistence.create }}
{{- printf "%s-artifacts" (include "hymirec.fullname" .) }}
{{- end }}
{{- end }}

{{/* Feast online_store connection string for Redis; the password comes from the environment at load time. */}}
{{- define "hymirec.redisConnectionString" -}}
{{- $r := .Values.externalRedis }}
{{- $parts := list }}
{{- if contains ":" (toString $r.host) }}
{{- $parts = append $parts (toString $r.host) }}
{{- else }}
{{- $parts = append $parts (printf "%s:%d" $r.host (int $r.port)) }}
{{- end }}
{{- if $r.ssl }}
{{- /* Verified TLS: the server's certificate against caSecret's CA (else the image's CAs) and its host name. */}}
{{- $parts = append $parts "ssl=true,ssl_cert_reqs=required,ssl_check_hostname=true" }}
{{- with $r.caSecret }}
{{- $parts = append $parts (printf "ssl_ca_certs=/etc/hymirec/redis-ca/%s" $r.caKey) }}
{{- end }}
{{- else if $r.caSecret }}
{{- fail "externalRedis.caSecret is set but externalRedis.ssl is false: a CA without TLS protects nothing" }}
{{- end }}
{{- if $r.existingSecret }}
{{- $parts = append $parts "password=${HYMIREC_REDIS_PASSWORD}" }}
{{- end }}
{{- /* redis-py options Feast passes through: a hung Redis fails a call instead of blocking the processor. */}}
{{- $parts = append $parts (printf "socket_timeout=%v" $r.socketTimeoutSeconds) }}
{{- $parts = append $parts (printf "socket_connect_timeout=%v" $r.connectTimeoutSeconds) }}
{{- join "," $parts }}
{{- end }}

{{/* The feature_store.yaml content. */}}
{{- define "hymirec.featureStoreYaml" -}}
{{- $f := .Values.feast }}
{{- $registry := $f.registry }}
{{- if not $registry }}
{{- $registry = dict "registry_type" "file" "path" (printf "%s/feast/registry.db" .Values.artifacts.mountPath) }}
{{- end }}
{{- $online := dict "type" $f.onlineStore.type }}
{{- if eq $f.onlineStore.type "redis" }}
{{- $_ := set $online "redis_type" .Values.externalRedis.redisType }}
{{- $_ := set $online "connection_string" (include "hymirec.redisConnectionString" .) }}
{{- else if eq $f.onlineStore.type "sqlite" }}
{{- $_ := set $online "path" $f.onlineStore.sqlitePath }}
{{- else }}
{{- fail (printf "feast.onlineStore.type must be redis or sqlite, not %q" $f.onlineStore.type) }}
{{- end }}
{{- $online = mergeOverwrite $online (default (dict) $f.onlineStore.extra) }}
{{- $config := dict "project" $f.project "provider" $f.provider "registry" $registry "online_store" $online "offline_store" $f.offlineStore "entity_key_serialization_version" (int $f.entityKeySerializationVersion) }}
{{- toYaml $config }}
{{- end }}

{{/* store.yaml: the online store as features.store.StoreConfig keys (read by serving and stream). */}}
{{- define "hymirec.storeConfigYaml" -}}
{{- $f := .Values.feast }}
{{- $config := dict "project" $f.project "registry_path" $f.localRegistryPath "type" $f.onlineStore.type }}
{{- if eq $f.onlineStore.type "redis" }}
{{- $_ := set $config "redis_url" (include "hymirec.redisConnectionString" .) }}
{{- else }}
{{- $_ := set $config "sqlite_path" $f.onlineStore.sqlitePath }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{- define "hymirec.artifactDir" -}}
{{- if .Values.artifacts.currentRun }}
{{- printf "%s/%s" (trimSuffix "/" .Values.artifacts.mountPath) .Values.artifacts.currentRun }}
{{- else }}
{{- .Values.artifacts.mountPath }}
{{- end }}
{{- end }}

{{/* Env shared by serving and stream: artifacts, the store config and the secrets it expands. */}}
{{- define "hymirec.commonEnv" -}}
- name: HYMIREC_ARTIFACT_DIR
  value: {{ include "hymirec.artifactDir" . | quote }}
# The artifact root whose registry.json names the current release (core/releases.py): serving and the stream
# processor follow its promotes and rollbacks without a restart.
- name: HYMIREC_RELEASE_ROOT
  value: {{ .Values.artifacts.mountPath | quote }}
- name: HYMIREC_FEAST_REPO
  value: {{ printf "%s/store.yaml" .Values.feast.mountPath | quote }}
- name: HOME
  value: /tmp
- name: PYTHONUNBUFFERED
  value: "1"
{{- if .Values.externalRedis.existingSecret }}
- name: HYMIREC_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.externalRedis.existingSecret }}
      key: {{ .Values.externalRedis.existingSecretPasswordKey }}
{{- end }}
{{- end }}

{{/* Volumes shared by serving and stream. */}}
{{- define "hymirec.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: feast-repo
  configMap:
    name: {{ include "hymirec.fullname" . }}-feast
- name: artifacts
{{- $claim := include "hymirec.artifactsClaimName" . }}
{{- if $claim }}
  persistentVolumeClaim:
    claimName: {{ $claim }}
    readOnly: true
{{- else }}
  emptyDir: {}
{{- end }}
{{- if and .Values.externalRedis.ssl .Values.externalRedis.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.externalRedis.caSecret }}
    defaultMode: 0444
{{- end }}
{{- end }}

{{- define "hymirec.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: feast-repo
  mountPath: {{ .Values.feast.mountPath }}
  readOnly: true
- name: artifacts
  mountPath: {{ .Values.artifacts.mountPath }}
  readOnly: true
{{- if and .Values.externalRedis.ssl .Values.externalRedis.caSecret }}
- name: redis-ca
  mountPath: /etc/hymirec/redis-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* An httpGet probe. Call with (dict "probe" .Values.serving.probes.liveness "port" "http"). */}}
{{- define "hymirec.httpProbe" -}}
httpGet:
  path: {{ .probe.path }}
  port: {{ .port }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- with .probe.initialDelaySeconds }}
initialDelaySeconds: {{ . }}
{{- end }}
{{- end }}

{{/* Exec probe of the stream processor: its /metrics answers on the pod's loopback only. */}}
{{- define "hymirec.streamProbe" -}}
exec:
  command:
    - python
    - -c
    - "import urllib.request; urllib.request.urlopen('http://127.0.0.1:{{ .port }}{{ .path }}', timeout=3).read(1)"
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}

{{/* ---------------------------------------------------------------- validation (fails the render) */}}
{{- define "hymirec.validate" -}}
{{- if or .Values.serving.enabled .Values.stream.enabled }}
{{- $_ := include "hymirec.image" (dict "image" .Values.image "path" "image") }}
{{- end }}
{{- if not (has .Values.externalKafka.security.protocol (list "PLAINTEXT" "SSL" "SASL_PLAINTEXT" "SASL_SSL")) }}
{{- fail (printf "externalKafka.security.protocol must be PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, not %q" .Values.externalKafka.security.protocol) }}
{{- end }}
{{- if .Values.triton.enabled }}
{{- $_ := include "hymirec.image" (dict "image" .Values.triton.image "path" "triton.image") }}
{{- if eq .Values.triton.modelRepository.source "initContainer" }}
{{- $_ := include "hymirec.image" (dict "image" .Values.triton.modelRepository.initContainer.image "path" "triton.modelRepository.initContainer.image") }}
{{- else if ne .Values.triton.modelRepository.source "pvc" }}
{{- fail (printf "triton.modelRepository.source must be pvc or initContainer, not %q" .Values.triton.modelRepository.source) }}
{{- end }}
{{- $_ := include "hymirec.tritonTarget" . }}
{{- if not (has .Values.triton.modelControlMode (list "explicit" "none" "poll")) }}
{{- fail (printf "triton.modelControlMode must be explicit, none or poll, not %q" .Values.triton.modelControlMode) }}
{{- end }}
{{- if and (gt (int .Values.triton.replicaCount) 1) (eq .Values.triton.modelControlMode "explicit") }}
{{- fail "triton.replicaCount > 1 needs triton.modelControlMode=poll: a promote's load/unload call through the Service reaches one replica only; in poll mode every replica follows the version pinned in config.pbtxt (give the pipeline HYMIREC_TRITON_POLL_S = triton.repositoryPollSeconds)" }}
{{- end }}
{{- if and (eq .Values.triton.modelControlMode "poll") (eq .Values.triton.modelRepository.source "initContainer") }}
{{- fail "triton.modelControlMode=poll needs triton.modelRepository.source=pvc: with initContainer every replica polls its own copy, which no promote changes" }}
{{- end }}
{{- if and (eq .Values.triton.modelControlMode "poll") (lt (int .Values.triton.repositoryPollSeconds) 1) }}
{{- fail "triton.repositoryPollSeconds must be >= 1 in poll mode" }}
{{- end }}
{{- end }}
{{- if .Values.stream.enabled }}
{{- $partitions := int .Values.externalKafka.topicPartitions }}
{{- $replicas := int .Values.stream.replicaCount }}
{{- if lt $partitions 1 }}
{{- fail "externalKafka.topicPartitions must be >= 1 (the number of partitions of externalKafka.topic)" }}
{{- end }}
{{- if gt $replicas $partitions }}
{{- fail (printf "stream.replicaCount (%d) must be <= externalKafka.topicPartitions (%d): consumers beyond the partition count get no partition and sit idle" $replicas $partitions) }}
{{- end }}
{{- if not .Values.externalKafka.bootstrapServers }}
{{- fail "externalKafka.bootstrapServers must be set" }}
{{- end }}
{{- end }}
{{- if .Values.serving.enabled }}
{{- $auth := .Values.serving.auth }}
{{- if not (has $auth.mode (list "required" "off")) }}
{{- fail (printf "serving.auth.mode must be required or off, not %q" $auth.mode) }}
{{- end }}
{{- if and (eq $auth.mode "required") (not $auth.existingSecret) }}
{{- fail "serving.auth.existingSecret must name the Secret with the API keys (one a line) while serving.auth.mode is required; set serving.auth.mode=off only behind something else that authenticates" }}
{{- end }}
{{- if not .Values.externalMilvus.uri }}
{{- fail "externalMilvus.uri must be set" }}
{{- end }}
{{- if .Values.serving.autoscaling.enabled }}
{{- if gt (int .Values.serving.autoscaling.minReplicas) (int .Values.serving.autoscaling.maxReplicas) }}
{{- fail "serving.autoscaling.minReplicas must be <= serving.autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The distinct ports of externalKafka.bootstrapServers (host:port,...; 9092 where a server names none), as a
JSON list: the stream processor's Kafka egress. */}}
{{- define "hymirec.kafkaPorts" -}}
{{- $ports := list }}
{{- range splitList "," .Values.externalKafka.bootstrapServers }}
{{- $server := trim . }}
{{- $port := 9092 }}
{{- if contains ":" $server }}
{{- $port = int (last (splitList ":" $server)) }}
{{- end }}
{{- if lt $port 1 }}
{{- fail (printf "externalKafka.bootstrapServers: %q has no valid port" $server) }}
{{- end }}
{{- $ports = append $ports $port }}
{{- end }}
{{- toJson (uniq $ports) }}
{{- end }}
