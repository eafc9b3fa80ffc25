{{/* Names, labels and the cluster's member list, shared by every template. */}}

{{- define "tessera.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tessera.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selects every node pod of the release (all sites). */}}
{{- define "tessera.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{/* The StatefulSet (and client Service) name of a site: call with (list $ site). */}}
{{- define "tessera.siteName" -}}
{{- $root := index . 0 -}}{{- $site := index . 1 -}}
{{- printf "%s-%s" (include "tessera.fullname" $root) $site.name | trunc 56 | trimSuffix "-" -}}
{{- end -}}

{{- define "tessera.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "tessera.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "tessera.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* The Secret of pod ORDINAL of the site StatefulSet NAME: its node certificate, key and the CA
     certificate (tls.crt, tls.key, ca.crt), from cert-manager or made outside. */}}
{{- define "tessera.podCertSecret" -}}
{{- printf "%s-%d-tls" (index . 0) (int (index . 1)) -}}
{{- end -}}

{{/* Every Raft member, ID=SITE@FQDN:PORT: this release's pods, then the external ones. */}}
{{- define "tessera.members" -}}
{{- $root := . -}}
{{- $members := list -}}
{{- range $site := .Values.sites -}}
{{- $name := include "tessera.siteName" (list $root $site) -}}
{{- range $i := until (int $site.replicas) -}}
{{- $members = append $members (printf "%d=%s@%s-%d.%s-hl.%s.svc.cluster.local:%d" (add $site.idBase $i) $site.name $name $i $name $root.Release.Namespace (int $root.Values.raft.port)) -}}
{{- end -}}
{{- end -}}
{{- concat $members $root.Values.externalMembers | toJson -}}
{{- end -}}

{{/* Members in the whole cluster: this release's pods and the external members. */}}
{{- define "tessera.members.count" -}}
{{- $n := len .Values.externalMembers -}}
{{- range .Values.sites -}}{{- $n = add $n .replicas -}}{{- end -}}
{{- $n -}}
{{- end -}}

{{/* Voters in the whole cluster with the default voter policy: at most 5, an odd number; the
     other members are learners (`tessera cluster voters`). */}}
{{- define "tessera.voters" -}}
{{- $v := min 5 (int (include "tessera.members.count" .)) -}}
{{- if eq (mod $v 2) 0 }}{{ $v = sub $v 1 }}{{ end -}}
{{- $v -}}
{{- end -}}

{{/* The environment variable that carries librdkafka setting . from kafka.existingSecret
(sasl.password -> TESSERA_KAFKA_SASL_PASSWORD). */}}
{{- define "tessera.kafkaSecretVar" -}}
{{- printf "TESSERA_KAFKA_%s" (. | upper | replace "." "_" | replace "-" "_") -}}
{{- end }}
