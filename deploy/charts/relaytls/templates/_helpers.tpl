{{/*
Helpers of the relaytls chart. Mode predicates return "true" or "" so that
they can be used in `if`.
*/}}

{{- define "relaytls.modes" -}}
insecure tls-self-signed tls-byo-server mtls-self-signed mtls-byo-ca mtls-byo-client
{{- end }}

{{/* selfSigned: cert-manager builds the PKI (modes 2 and 4). */}}
{{- define "relaytls.selfSigned" -}}
{{- if has .Values.mode (list "tls-self-signed" "mtls-self-signed") }}true{{ end }}
{{- end }}

{{/* byo: the user brings the server certificate (modes 3, 5 and 6). */}}
{{- define "relaytls.byo" -}}
{{- if has .Values.mode (list "tls-byo-server" "mtls-byo-ca" "mtls-byo-client") }}true{{ end }}
{{- end }}

{{/* autoClient: agents get client certificates through the relay (modes 4 and 5). */}}
{{- define "relaytls.autoClient" -}}
{{- if has .Values.mode (list "mtls-self-signed" "mtls-byo-ca") }}true{{ end }}
{{- end }}

{{/* token: the relay identity token is used (modes 2 to 5). */}}
{{- define "relaytls.token" -}}
{{- if has .Values.mode (list "tls-self-signed" "tls-byo-server" "mtls-self-signed" "mtls-byo-ca") }}true{{ end }}
{{- end }}

{{/* mgmt / workload: the role. */}}
{{- define "relaytls.mgmt" -}}
{{- if eq .Values.role "management" }}true{{ end }}
{{- end }}

{{/*
runIssuer: relay-issuer runs in the management cluster of modes 2 (it
generates the token), 4 and 5 (it signs), and in the workload cluster of
modes 4 and 5 (remote issuer).
*/}}
{{- define "relaytls.runIssuer" -}}
{{- if or (include "relaytls.autoClient" .) (and (include "relaytls.mgmt" .) (eq .Values.mode "tls-self-signed")) }}true{{ end }}
{{- end }}

{{/* serverSecret: the relay server certificate Secret of this mode. */}}
{{- define "relaytls.serverSecret" -}}
{{- if .Values.secrets.server }}{{ .Values.secrets.server }}{{ else if include "relaytls.byo" . }}relay-server-tls-secret-custom{{ else }}relay-server-tls-secret{{ end }}
{{- end }}

{{/* telemetrySecret: the telemetry gateway certificate Secret of this mode. */}}
{{- define "relaytls.telemetrySecret" -}}
{{- if .Values.secrets.telemetryGateway }}{{ .Values.secrets.telemetryGateway }}{{ else if include "relaytls.byo" . }}gloo-telemetry-gateway-tls-secret-custom{{ else }}gloo-telemetry-gateway-tls-secret{{ end }}
{{- end }}

{{- define "relaytls.labels" -}}
app.kubernetes.io/name: relaytls
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
relaytls.io/mode: {{ .Values.mode }}
relaytls.io/role: {{ .Values.role }}
{{- end }}

{{/*
crdLabels: the CRDs are shared by the whole cluster, so they carry no mode
or role.
*/}}
{{- define "relaytls.crdLabels" -}}
app.kubernetes.io/name: relaytls
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: crds
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "relaytls.selectorLabels" -}}
app.kubernetes.io/name: relay-issuer
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
wave renders the Argo CD sync wave annotation. Waves: -3 CRDs (profiles),
-2 identity and RBAC, -1 relay-issuer, 0 PKI issuers and root, 1
certificates, 2 RelayIssuer, 3 the workload relay-client Certificate.
Call it inside an annotations map with (list $ "wave").
*/}}
{{- define "relaytls.wave" -}}
{{- $root := index . 0 -}}
{{- if $root.Values.argocd.syncWaves }}
argocd.argoproj.io/sync-wave: {{ index . 1 | quote }}
{{- end }}
{{- end }}

{{- define "relaytls.image" -}}
{{- $tag := .image.tag | default .appVersion -}}
{{- $repo := .image.repository -}}
{{- with (get .image "registry") }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- if (get .image "digest") }}{{ $repo }}@{{ .image.digest }}{{ else }}{{ $repo }}:{{ $tag }}{{ end }}
{{- end }}

{{- define "relaytls.privateKey" -}}
privateKey:
  algorithm: {{ .Values.pki.privateKey.algorithm }}
  {{- if ne .Values.pki.privateKey.algorithm "Ed25519" }}
  size: {{ .Values.pki.privateKey.size }}
  {{- end }}
  rotationPolicy: Always
{{- end }}

{{/*
userSecrets lists, one per line as "name: what it must hold", the Secrets
the user brings in this mode and role.
*/}}
{{- define "relaytls.userSecrets" -}}
{{- $v := .Values -}}
{{- if include "relaytls.mgmt" . }}
{{- if eq $v.mode "tls-byo-server" }}
{{ include "relaytls.serverSecret" . }}: the relay server certificate (tls.crt, tls.key) from your PKI
{{ $v.secrets.token }}: the relay identity token (key token)
{{- else if eq $v.mode "mtls-byo-ca" }}
{{ $v.secrets.root }}: your root CA certificate (ca.crt)
{{ $v.secrets.signing }}: your intermediate CA (tls.crt, tls.key) that signs agent certificates
{{ include "relaytls.serverSecret" . }}: the relay server certificate (tls.crt, tls.key) from your PKI
{{ $v.secrets.token }}: the relay identity token (key token)
{{- else if eq $v.mode "mtls-byo-client" }}
{{ $v.secrets.root }}: your root CA certificate (ca.crt) that agent certificates chain to
{{ include "relaytls.serverSecret" . }}: the relay server certificate (tls.crt, tls.key) from your PKI
{{- end }}
{{- if and $v.telemetry.enabled (include "relaytls.byo" .) }}
{{ include "relaytls.telemetrySecret" . }}: the telemetry gateway certificate (the relay server's credentials)
{{- end }}
{{- else }}
{{- if include "relaytls.token" . }}
{{ $v.secrets.root }}: the management cluster's root CA certificate (ca.crt only; relayctl register copies it)
{{ $v.secrets.token }}: the relay identity token (key token; relayctl register copies it)
{{- else if eq $v.mode "mtls-byo-client" }}
{{ $v.secrets.root }}: your root CA certificate (ca.crt) that the server certificate chains to
{{ $v.secrets.byoClient }}: this agent's client certificate (tls.crt, tls.key) from your PKI
{{- end }}
{{- end }}
{{- if and $v.telemetry.enabled (ne $v.mode "insecure") (not (and (include "relaytls.mgmt" .) (include "relaytls.selfSigned" .))) }}
{{ $v.secrets.telemetryRoot }}: the root CA (ca.crt) telemetry collectors verify the gateway with
{{- end }}
{{- end }}
