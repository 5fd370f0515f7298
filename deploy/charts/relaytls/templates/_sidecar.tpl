{{/*
relaytls.sidecar renders the relay-sidecar native sidecar (an init container
with restartPolicy Always, so it starts before and stops after the
application) and the Secret volumes to add to your own management server
(role management) or agent (role workload) Deployment in this mode.
NOTES.txt prints it. Where relay-issuer publishes relay-cluster-list
(management cluster of modes 2, 4 and 5), the server sidecar mounts it and
passes --cluster-list, so a revoked cluster is cut within one reload
interval and token generations enter the cluster tokens (SPEC section 8).
*/}}
{{- define "relaytls.sidecar" -}}
{{- $v := .Values -}}
{{- $mgmt := include "relaytls.mgmt" . -}}
{{- $mode := "insecure" -}}
{{- if has $v.mode (list "tls-self-signed" "tls-byo-server") }}{{ $mode = "tls" }}{{ end -}}
{{- if has $v.mode (list "mtls-self-signed" "mtls-byo-ca" "mtls-byo-client") }}{{ $mode = "mtls" }}{{ end -}}
{{- $volumes := dict -}}
initContainers:
- name: relay-sidecar
  restartPolicy: Always
  image: {{ include "relaytls.image" (dict "image" $v.sidecar.image "appVersion" .Chart.AppVersion) }}
  args:
  - --role={{ if $mgmt }}server{{ else }}agent{{ end }}
  - --mode={{ $mode }}
  - --health-listen=:9090
  {{- if $mgmt }}
  - --listen={{ $v.sidecar.listen | default ":9000" }}
  - --upstream={{ $v.sidecar.upstream }}
  {{- if ne $mode "insecure" }}
  - --cert-dir=/var/run/relaytls/server
  {{- $_ := set $volumes "server" (include "relaytls.serverSecret" .) }}
  {{- end }}
  {{- if eq $mode "tls" }}
  - --token-file=/var/run/relaytls/token/token
  {{- $_ := set $volumes "token" $v.secrets.token }}
  {{- end }}
  {{- if eq $mode "mtls" }}
  {{- if include "relaytls.runIssuer" . }}
  {{- /* relay-issuer's trust bundle: during a root rotation it holds the old
  and the new root, so agents on either keep connecting. */}}
  - --trust-bundle=/var/run/relaytls/trust-bundle/ca.crt
  {{- $_ := set $volumes "trust-bundle" $v.secrets.trustBundle }}
  {{- else }}
  - --trust-bundle=/var/run/relaytls/root/ca.crt
  {{- $_ := set $volumes "root" $v.secrets.root }}
  {{- end }}
  {{- end }}
  {{- if include "relaytls.runIssuer" . }}
  - --cluster-list=/var/run/relaytls/cluster-list/clusters.json
  {{- $_ := set $volumes "cluster-list" "relay-cluster-list" }}
  {{- end }}
  {{- else }}
  - --listen={{ $v.sidecar.listen | default "127.0.0.1:9900" }}
  - --server-addr={{ $v.sidecar.serverAddress }}
  {{- if $v.workload.cluster }}
  - --cluster={{ $v.workload.cluster }}
  {{- end }}
  {{- if ne $mode "insecure" }}
  - --trust-bundle=/var/run/relaytls/root/ca.crt
  {{- $_ := set $volumes "root" $v.secrets.root }}
  {{- end }}
  {{- if eq $mode "tls" }}
  - --token-file=/var/run/relaytls/token/token
  {{- $_ := set $volumes "token" $v.secrets.token }}
  {{- end }}
  {{- if eq $mode "mtls" }}
  - --cert-dir=/var/run/relaytls/client
  {{- $_ := set $volumes "client" (ternary $v.secrets.byoClient $v.secrets.client (eq $v.mode "mtls-byo-client")) }}
  {{- end }}
  {{- end }}
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    runAsNonRoot: true
    capabilities:
      drop: ["ALL"]
  readinessProbe:
    httpGet:
      path: /readyz
      port: 9090
  {{- if $volumes }}
  volumeMounts:
  {{- range $name, $secret := $volumes }}
  - name: relaytls-{{ $name }}
    mountPath: /var/run/relaytls/{{ $name }}
    readOnly: true
  {{- end }}
volumes:
{{- range $name, $secret := $volumes }}
- name: relaytls-{{ $name }}
  secret:
    secretName: {{ $secret }}
{{- end }}
{{- end }}
{{- end }}
