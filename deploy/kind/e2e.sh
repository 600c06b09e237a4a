#!/usr/bin/env bash
# End-to-end test on a kind cluster, for machines with Docker:
#
#   1. build the image from the repository's Dockerfile (CPU variant);
#   2. create a kind cluster (deploy/kind/kind-config.yaml) and load the image;
#   3. apply the CRD, deploy/kind/overlay (deploy/base + a capture sink), the
#      webhook token Secret and the sample policy deploy/samples/pods.yaml;
#   4. POST a KubePodCrashLooping Alertmanager payload
#      (tests/fixtures/alerts/crashloop.json) to /alertmanager;
#   5. wait for an io.homelab.agent-sre.lambda.trigger CloudEvent asking for
#      pod-restart of shop/cart-7f9c6d5b8-x2k4q to reach the sink.
#
# Needs: docker (with a running daemon), kind, kubectl, curl, python3.
# Environment:
#   CLUSTER=trm-sre-e2e      kind cluster name (an existing one is reused and kept,
#                            but its trm-sre namespace is deleted first)
#   KEEP_CLUSTER=1           keep a cluster this script created (default: delete it)
#   SKIP_BUILD=1             reuse an existing trm-sre:e2e image
#   BUILD_ARGS="..."         extra `docker build` arguments
#   KIND_NODE_IMAGE=...      node image for `kind create cluster`
#   LOCAL_PORT=18080         local port for `kubectl port-forward`
#
# Exit status 0 and a final "PASS" line when the trigger arrived.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

CLUSTER="${CLUSTER:-trm-sre-e2e}"
IMAGE="trm-sre:e2e"          # the name deploy/kind/overlay expects
NS="trm-sre"
LOCAL_PORT="${LOCAL_PORT:-18080}"
PAYLOAD="tests/fixtures/alerts/crashloop.json"
TRIGGER_TYPE="io.homelab.agent-sre.lambda.trigger"   # checked by deploy/kind/check-trigger.py
CTX="kind-$CLUSTER"

log() { echo "[e2e $(date -u +%H:%M:%S)] $*" >&2; }
die() { log "FAIL: $*"; exit 1; }
k() { kubectl --context "$CTX" "$@"; }

for tool in docker kind kubectl curl python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
docker info >/dev/null 2>&1 || die "the Docker daemon is not reachable (docker info failed)"

created_cluster=0
port_forward_pid=""
ok=0
response="$(mktemp)"
sink_log="$(mktemp)"

diagnostics() {
  log "--- diagnostics ---"
  k -n "$NS" get pods,pvc,remediationpolicies -o wide || true
  k -n "$NS" describe deployment/trm-sre || true
  k -n "$NS" logs deployment/trm-sre --tail=200 || true
  k -n "$NS" logs deployment/trm-sre-sink --tail=50 || true
  k -n "$NS" get events --sort-by=.lastTimestamp | tail -30 || true
}

cleanup() {
  local rc=$?
  if [[ -n "$port_forward_pid" ]]; then kill "$port_forward_pid" 2>/dev/null || true; fi
  rm -f "$response" "$sink_log"
  if [[ $ok -ne 1 ]]; then diagnostics; fi
  if [[ $created_cluster -eq 1 && "${KEEP_CLUSTER:-0}" != "1" ]]; then
    log "deleting kind cluster $CLUSTER (KEEP_CLUSTER=1 keeps it)"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# --- 1. image ----------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" == "1" ]]; then
  docker image inspect "$IMAGE" >/dev/null || die "SKIP_BUILD=1 but there is no image $IMAGE"
  log "reusing image $IMAGE"
else
  log "building $IMAGE (CPU variant; the first build downloads torch and takes a while)"
  # shellcheck disable=SC2086  # BUILD_ARGS is a list of words on purpose
  docker build -t "$IMAGE" ${BUILD_ARGS:-} .
fi

# --- 2. cluster --------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "reusing kind cluster $CLUSTER; deleting namespace $NS for a fresh start"
  # The state store remembers incidents and cooldowns: the same alert would
  # not trigger twice, so a rerun starts from an empty store.
  k delete namespace "$NS" --ignore-not-found --wait --timeout=180s
else
  log "creating kind cluster $CLUSTER"
  node_image=()
  [[ -n "${KIND_NODE_IMAGE:-}" ]] && node_image=(--image "$KIND_NODE_IMAGE")
  # ${a[@]+...}: an empty array is "unbound" under set -u in bash < 4.4 (macOS).
  kind create cluster --name "$CLUSTER" --config deploy/kind/kind-config.yaml \
    ${node_image[@]+"${node_image[@]}"} --wait 180s
  created_cluster=1
fi
log "loading $IMAGE into the kind node(s)"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# --- 3. manifests ------------------------------------------------------------
log "applying the CRD"
k apply --server-side -f crds/remediationpolicy.yaml
k wait --for=condition=Established --timeout=60s crd/remediationpolicies.remediation.homelab.io

log "applying deploy/kind/overlay (deploy/base + capture sink)"
k apply --server-side -k deploy/kind/overlay

# The Deployment waits for this Secret.
log "creating the webhook token Secret"
token="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
k -n "$NS" create secret generic trm-sre-webhook-token --from-literal=token="$token"

log "applying the sample policy deploy/samples/pods.yaml"
k -n "$NS" apply -f deploy/samples/pods.yaml

log "waiting for the sink and the controller to be ready"
k -n "$NS" rollout status deployment/trm-sre-sink --timeout=180s
k -n "$NS" rollout status deployment/trm-sre --timeout=420s

# --- 4. the alert ------------------------------------------------------------
log "port-forwarding svc/trm-sre to 127.0.0.1:$LOCAL_PORT"
k -n "$NS" port-forward svc/trm-sre "$LOCAL_PORT:8080" >/dev/null 2>&1 &
port_forward_pid=$!
for _ in $(seq 1 30); do
  curl -fsS "http://127.0.0.1:$LOCAL_PORT/readyz" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$LOCAL_PORT/readyz" >/dev/null || die "the controller does not answer /readyz through the port-forward"

log "posting $PAYLOAD to /alertmanager"
status=$(curl -sS -o "$response" -w '%{http_code}' \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  --data-binary @"$PAYLOAD" "http://127.0.0.1:$LOCAL_PORT/alertmanager")
[[ "$status" == "200" ]] || die "POST /alertmanager answered $status: $(cat "$response")"
log "accepted: $(cat "$response")"

# --- 5. the trigger ----------------------------------------------------------
log "waiting for a $TRIGGER_TYPE event at the sink"
rc=2
for _ in $(seq 1 60); do
  rc=0
  k -n "$NS" logs deployment/trm-sre-sink >"$sink_log" 2>/dev/null || true
  python3 deploy/kind/check-trigger.py <"$sink_log" || rc=$?
  [[ $rc -ne 2 ]] && break
  sleep 2
done
[[ $rc -ne 2 ]] || die "no $TRIGGER_TYPE event reached the sink within 120 s"
[[ $rc -eq 0 ]] || die "the trigger that arrived is not the expected one"

ok=1
log "PASS"
echo "PASS"
