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

{{/*
The number of shards, or nothing for a single server. With replicaCount > 1 each pod is a
shard (README.md, "Shards"): its own claim from the volumeClaimTemplate (or its own emptyDir),
identity and Service. With persistence.existingClaim every pod would mount the same claim, so
the pods are not shards but replicas of one server, as before shards existed (NOTES.txt says so).
*/}}
{{- define "nfs-server-provisioner.shards" -}}
{{- $n := int .Values.replicaCount }}
{{- if and (gt $n 1) (not (and .Values.persistence.enabled .Values.persistence.existingClaim)) }}
{{- $n }}
{{- end }}
{{- end }}

{{/*
The Service ports, for the main Service and for each shard's own. Called with
(dict "root" $ "nodePorts" BOOL): the service.*NodePort values only when nodePorts is true.
*/}}
{{- define "nfs-server-provisioner.servicePorts" -}}
{{- $service := .root.Values.service }}
{{- $nodePorts := .nodePorts -}}
- name: nfs
  port: {{ $service.nfsPort }}
  targetPort: nfs
  protocol: TCP
  {{- if and $nodePorts $service.nfsNodePort }}
  nodePort: {{ $service.nfsNodePort }}
  {{- end }}
- name: mountd
  port: {{ $service.mountdPort }}
  targetPort: mountd
  protocol: TCP
  {{- if and $nodePorts $service.mountdNodePort }}
  nodePort: {{ $service.mountdNodePort }}
  {{- end }}
- name: rpcbind
  port: {{ $service.rpcbindPort }}
  targetPort: rpcbind
  protocol: TCP
  {{- if and $nodePorts $service.rpcbindNodePort }}
  nodePort: {{ $service.rpcbindNodePort }}
  {{- end }}
{{- range $name, $key := dict "nlockmgr" "nlockmgr" "statd" "statd" }}
{{- range $proto := list "TCP" "UDP" }}
- name: {{ $name }}{{ if eq $proto "UDP" }}-udp{{ end }}
  port: {{ index $service (printf "%sPort" $key) }}
  targetPort: {{ $name }}{{ if eq $proto "UDP" }}-udp{{ end }}
  protocol: {{ $proto }}
  {{- $nodePort := index $service (printf "%sNodePort" $key) }}
  {{- if and $nodePorts $nodePort }}
  nodePort: {{ $nodePort }}
  {{- end }}
{{- end }}
{{- end }}
- name: http
  port: {{ .root.Values.metrics.servicePort }}
  targetPort: http
  protocol: TCP
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

{{/*
Scale-down guard (templates/scale-down-guard.yaml). On an upgrade that lowers replicaCount
below the replicas of the live StatefulSet, when that StatefulSet runs shards (SHARDS=true),
it fails if a shard being removed (ordinal >= the new replicaCount) still owns
PersistentVolumes: those of our provisioner, not being deleted, whose
nfs-server-provisioner/server-pod names it (no annotation: the -0 pod, as the binary counts
them). Their volumes would lose their server. Renders nothing otherwise.
*/}}
{{- define "nfs-server-provisioner.scaleDownGuard" -}}
{{- if .Release.IsUpgrade }}
{{- $fullname := include "nfs-server-provisioner.fullname" . }}
{{- $want := int .Values.replicaCount }}
{{- $sts := lookup "apps/v1" "StatefulSet" .Release.Namespace $fullname | default dict }}
{{- $have := int (dig "spec" "replicas" 1 $sts) }}
{{- $sharded := false }}
{{- range $c := dig "spec" "template" "spec" "containers" list $sts }}
{{- range $e := get $c "env" | default list }}
{{- if and (eq (get $e "name") "SHARDS") (eq (get $e "value" | toString) "true") }}
{{- $sharded = true }}
{{- end }}
{{- end }}
{{- end }}
{{- if and $sharded (lt $want $have) }}
{{- $provisioner := include "nfs-server-provisioner.provisionerName" . }}
{{- $prefix := printf "%s-" $fullname }}
{{- $owned := dict }}
{{- $total := 0 }}
{{- $keep := $want }}
{{- $pvs := lookup "v1" "PersistentVolume" "" "" | default dict }}
{{- range $pv := dig "items" list $pvs }}
{{- $ann := dig "metadata" "annotations" dict $pv }}
{{- $pod := get $ann "nfs-server-provisioner/server-pod" | default (printf "%s0" $prefix) }}
{{- $ordinal := trimPrefix $prefix $pod }}
{{- if and (eq (get $ann "pv.kubernetes.io/provisioned-by") $provisioner) (not (dig "metadata" "deletionTimestamp" "" $pv)) (hasPrefix $prefix $pod) (regexMatch "^[0-9]+$" $ordinal) }}
{{- if ge (atoi $ordinal) $want }}
{{- $_ := set $owned $pod (add1 (get $owned $pod | default 0)) }}
{{- $total = add1 $total }}
{{- $keep = max $keep (add1 (atoi $ordinal)) }}
{{- end }}
{{- end }}
{{- end }}
{{- if $owned }}
{{- $list := list }}
{{- range $pod := keys $owned | sortAlpha }}
{{- $n := int (get $owned $pod) }}
{{- $list = append $list (printf "%s (%d %s)" $pod $n (ternary "volume" "volumes" (eq $n 1))) }}
{{- end }}
{{- fail (printf "replicaCount %d would remove shards that still own PersistentVolumes: %s; %d in all would lose their server. Scale-down is refused while a removed shard owns volumes: keep replicaCount: %d or more (the StatefulSet runs %d now). To remove those shards, drain them first (delete or migrate their claims, as the chart's README.md, section \"Shards\", describes), then upgrade with replicaCount: %d again." $want (join ", " $list) (int $total) (int $keep) $have $want) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
