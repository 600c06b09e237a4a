#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kubectl, etcd) and the real
# Alertmanager (alertmanager, amtool) and a minimal OpenTelemetry Collector
# (otelcol: OTLP receiver, file and debug exporters; see otelcol/main.go) from
# source through the Go module proxy.
#
# Binaries land in $TRM_SRE_CACHE/bin/<component>-<version>/ (default cache:
# ~/.cache/trm-sre), so a version bump rebuilds and a warm run is a no-op.
# Nothing built here is ever committed.
#
# Usage: build.sh [kube|etcd|alertmanager|otelcol|all]   (default: all)
# Prints the directory of each component's binaries on stdout, one per line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${TRM_SRE_CACHE:-$HOME/.cache/trm-sre}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

log() { echo "[envtest-build] $*" >&2; }

build_kube() {
  local out="$cache/bin/kube-$K8S_VERSION"
  if [[ -x "$out/kube-apiserver" && -x "$out/kubectl" ]]; then echo "$out"; return; fi
  mkdir -p "$out.tmp"
  local minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  local start=$SECONDS
  log "building kube-apiserver $K8S_VERSION (the first build takes about 6 minutes on 2 cores)"
  (cd "$here/kube" && go build -trimpath -tags=selinux,notest -ldflags="$ld" -o "$out.tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver)
  log "building kubectl $K8S_VERSION"
  (cd "$here/kube" && go build -trimpath -ldflags="$ld" -o "$out.tmp/kubectl" k8s.io/kubernetes/cmd/kubectl)
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "kube built in $((SECONDS - start)) s"
  echo "$out"
}

build_etcd() {
  local out="$cache/bin/etcd-$ETCD_VERSION"
  if [[ -x "$out/etcd" ]]; then echo "$out"; return; fi
  mkdir -p "$out.tmp"
  local start=$SECONDS
  log "building etcd $ETCD_VERSION"
  (cd "$here/etcd" && go build -trimpath -ldflags="-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "etcd built in $((SECONDS - start)) s"
  echo "$out"
}

build_alertmanager() {
  local out="$cache/bin/alertmanager-$ALERTMANAGER_VERSION"
  if [[ -x "$out/alertmanager" && -x "$out/amtool" ]]; then echo "$out"; return; fi
  mkdir -p "$out.tmp"
  local start=$SECONDS
  log "building alertmanager and amtool $ALERTMANAGER_VERSION"
  (cd "$here/alertmanager" && go build -trimpath -ldflags="-s -w" -o "$out.tmp/alertmanager" github.com/prometheus/alertmanager/cmd/alertmanager)
  (cd "$here/alertmanager" && go build -trimpath -ldflags="-s -w" -o "$out.tmp/amtool" github.com/prometheus/alertmanager/cmd/amtool)
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "alertmanager built in $((SECONDS - start)) s"
  echo "$out"
}

build_otelcol() {
  local out="$cache/bin/otelcol-$OTELCOL_VERSION"
  if [[ -x "$out/otelcol" ]]; then echo "$out"; return; fi
  mkdir -p "$out.tmp"
  local start=$SECONDS
  log "building otelcol $OTELCOL_VERSION (about 2 minutes on 2 cores with a warm module cache)"
  (cd "$here/otelcol" && go build -trimpath -ldflags="-s -w" -o "$out.tmp/otelcol" .)
  rm -rf "$out"; mv "$out.tmp" "$out"
  log "otelcol built in $((SECONDS - start)) s"
  echo "$out"
}

case "${1:-all}" in
  kube) build_kube ;;
  etcd) build_etcd ;;
  alertmanager) build_alertmanager ;;
  otelcol) build_otelcol ;;
  all) build_etcd; build_kube; build_alertmanager; build_otelcol ;;
  *) echo "usage: $0 [kube|etcd|alertmanager|otelcol|all]" >&2; exit 2 ;;
esac
