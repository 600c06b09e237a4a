#!/usr/bin/env bash
# Builds helm v3 from source through the Go module proxy, for the packaging
# tests (helm lint / helm template of deploy/helm/trm-sre).
#
# The version is the one tests/envtest/helm/go.mod requires, so bumping it
# there changes the cache key. The binary lands in
# $TRM_SRE_CACHE/bin/helm-<version>/helm (default cache: ~/.cache/trm-sre);
# a warm run is a no-op. Nothing built here is ever committed.
#
# Usage: build-helm.sh     Prints the directory holding `helm` on stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TRM_SRE_CACHE:-$HOME/.cache/trm-sre}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
[[ -x /usr/local/go/bin/go ]] && ! command -v go >/dev/null && export PATH="/usr/local/go/bin:$PATH"

log() { echo "[envtest-build] $*" >&2; }

mod="$here/helm/go.mod"
version=$(awk '$1 == "helm.sh/helm/v3" { print $2 }' "$mod" | head -1)
[[ -n "$version" ]] || { log "no helm.sh/helm/v3 requirement in $mod"; exit 1; }
out="$cache/bin/helm-$version"
if [[ -x "$out/helm" ]]; then echo "$out"; exit 0; fi

# Same flags as helm's own Makefile: the version shown by `helm version`, and
# the Kubernetes version helm assumes for `helm template` / `helm lint`
# (.Capabilities.KubeVersion, deprecation checks) taken from the client-go
# helm is built with (v0.X.Y -> 1.X), instead of the 1.20 default.
k8s=$(cd "$here/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
k8s_minor=$(echo "$k8s" | cut -d. -f2)
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ld="$ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done

rm -rf "$out.tmp"; mkdir -p "$out.tmp"
start=$SECONDS
log "building helm $version (Kubernetes 1.$k8s_minor client libraries)"
(cd "$here/helm" && go build -trimpath -ldflags="$ld" -o "$out.tmp/helm" helm.sh/helm/v3/cmd/helm)
rm -rf "$out"; mv "$out.tmp" "$out"
log "helm built in $((SECONDS - start)) s"
echo "$out"
