{{/*
Names. They match the 1.x chart's, so an upgrade in place keeps the same StatefulSet,
Service (and so its ClusterIP, which every PV names) and provisioner name.
*/}}
{{- define "nfs-server-provisioner.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nfs-server-provisioner.fullname" -}}
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

{{- define "nfs-server-provisioner.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "nfs-server-provisioner.provisionerName" -}}
{{- if .Values.storageClass.provisionerName }}
{{- .Values.storageClass.provisionerName }}
{{- else }}
{{- printf "cluster.local/%s" (include "nfs-server-provisioner.fullname" .) }}
{{- end }}
{{- end }}

{{/* The 1.x selector labels; a StatefulSet's selector cannot change. */}}
{{- define "nfs-server-provisioner.selectorLabels" -}}
app: {{ include "nfs-server-provisioner.name" . }}
release: {{ .Release.Name }}
{{- end }}

{{- define "nfs-server-provisioner.labels" -}}
{{ include "nfs-server-provisioner.selectorLabels" . }}
chart: {{ include "nfs-server-provisioner.chart" . }}
heritage: {{ .Release.Service }}
app.kubernetes.io/name: {{ include "nfs-server-provisioner.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "nfs-server-provisioner.serviceAccountName" -}}
{{- if .Values.rbac.create }}
{{- include "nfs-server-provisioner.fullname" . }}
{{- else }}
{{- .Values.rbac.serviceAccountName | default "default" }}
{{- end }}
{{- end }}

{{/*
True when image.repository names the old Go + NFS-Ganesha image, which cannot run with this
chart's arguments: the chart's own image is used instead (NOTES.txt says so).
*/}}
{{- define "nfs-server-provisioner.oldImage" -}}
{{- if regexMatch "(^|/)nfs-provisioner$" (.Values.image.repository | default "") }}true{{ end }}
{{- end }}

{{/*
True when image.tag is a tag of the old image (v1.x.y to v4.x.y, e.g. v2.3.0 from a 1.x
values.yaml, with a -k8s1.NN suffix on some): this image is tagged with the plain version
(0.1.0), so the chart's appVersion is used instead.
*/}}
{{- define "nfs-server-provisioner.oldTag" -}}
{{- if regexMatch "^v[1-4]\\.[0-9]+\\.[0-9]+(-k8s[0-9.]+)?$" (.Values.image.tag | default "" | toString) }}true{{ end }}
{{- end }}

{{/*
The image. An old repository is replaced by this chart's default one, and an old tag by the
appVersion: the old chart's tag is never combined with this image.
*/}}
{{- define "nfs-server-provisioner.image" -}}
{{- if include "nfs-server-provisioner.oldImage" . }}
{{- printf "nfs-server-provisioner:%s" .Chart.AppVersion }}
{{- else if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else if include "nfs-server-provisioner.oldTag" . }}
{{- printf "%s:%s" .Values.image.repository .Chart.AppVersion }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}
{{- end }}

{{/*
Capabilities the server needs, and nothing more:
  DAC_READ_SEARCH   open_by_handle_at, which makes file handles survive restarts
  SETUID, SETGID    act as each client's uid, gid and groups (setfsuid, setfsgid, setgroups)
  CHOWN, DAC_OVERRIDE, FOWNER, FSETID
                    give a client acting as root (no root squash) root's powers on its volume
  MKNOD             MKNOD of device nodes requested by clients
  NET_BIND_SERVICE  ports 111 and 2049 are below 1024
*/}}
{{- define "nfs-server-provisioner.capabilities" -}}
{{- list "CHOWN" "DAC_OVERRIDE" "DAC_READ_SEARCH" "FOWNER" "FSETID" "MKNOD" "NET_BIND_SERVICE" "SETGID" "SETUID" | toJson }}
{{- end }}

{{/* The container security context: the user's values merged over ours. */}}
{{- define "nfs-server-provisioner.securityContext" -}}
{{- $user := deepCopy (.Values.securityContext | default dict) }}
{{- $caps := get $user "capabilities" | default dict }}
{{- $add := concat (include "nfs-server-provisioner.capabilities" . | fromJsonArray) (get $caps "add" | default list) | uniq }}
{{- $_ := set $user "capabilities" (dict "drop" (list "ALL") "add" $add) }}
{{- $ours := dict "runAsUser" 0 "runAsNonRoot" false "allowPrivilegeEscalation" false "readOnlyRootFilesystem" true }}
{{- /* The API server rejects allowPrivilegeEscalation: false beside these two. */}}
{{- if or (get $user "privileged") (has "SYS_ADMIN" $add) (has "CAP_SYS_ADMIN" $add) }}
{{- $_ := unset $ours "allowPrivilegeEscalation" }}
{{- end }}
{{- toYaml (merge $user $ours) }}
{{- end }}
