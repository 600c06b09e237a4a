#!/usr/bin/env bash
# Builds prometheus-am-executor, the peer of the side-by-side benchmark
# (issue #14: a tool a user might pick instead of trm-sre), from source
# through the Go module proxy.
#
# The version is the one bench/peer/go.mod requires, so bumping it there
# changes the cache key. The binary lands in
# $TRM_SRE_CACHE/bin/am-executor-<version>/prometheus-am-executor (default
# cache: ~/.cache/trm-sre); a warm run is a no-op. Nothing built here is ever
# committed. The benchmark runs without it and says why when it cannot build.
#
# Usage: build.sh     Prints the directory holding `prometheus-am-executor` on stdout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TRM_SRE_CACHE:-$HOME/.cache/trm-sre}"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
[[ -x /usr/local/go/bin/go ]] && ! command -v go >/dev/null && export PATH="/usr/local/go/bin:$PATH"

log() { echo "[bench-peer-build] $*" >&2; }

command -v go >/dev/null || { log "no Go toolchain on PATH (or in /usr/local/go/bin)"; exit 1; }
pkg=github.com/imgix/prometheus-am-executor
version=$(awk -v p="$pkg" '$1 == p { print $2 }' "$here/go.mod" | head -1)
[[ -n "$version" ]] || { log "no $pkg requirement in $here/go.mod"; exit 1; }
out="$cache/bin/am-executor-$version"
if [[ -x "$out/prometheus-am-executor" ]]; then echo "$out"; exit 0; fi

rm -rf "$out.tmp"; mkdir -p "$out.tmp"
start=$SECONDS
log "building prometheus-am-executor $version (about 20 s with a warm module cache)"
(cd "$here" && go build -trimpath -ldflags="-s -w" -o "$out.tmp/prometheus-am-executor" "$pkg")
rm -rf "$out"; mv "$out.tmp" "$out"
log "prometheus-am-executor built in $((SECONDS - start)) s"
echo "$out"
