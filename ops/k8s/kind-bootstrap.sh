#!/usr/bin/env bash
# Bootstrap Leviathan on a local kind cluster. Idempotent: run it again at any time.
#
#   1. loads ~/.leviathan/env (GITHUB_TOKEN, LEVIATHAN_CLAUDE_API_KEY, LEVIATHAN_CLAUDE_MODEL)
#   2. generates the control-plane token once (~/.leviathan/control-plane-token, mode 0600)
#   3. validates tools and variables
#   4. creates the kind cluster `leviathan` if it is missing
#   5. builds the image (tagged leviathan-worker:local and leviathan-control-plane:local) and loads it
#   6. creates or updates the namespace, the secret (values never printed or put on a command
#      line) and the target ConfigMap (LEVIATHAN_TARGET_CONFIG, default: the base's example)
#   7. applies ops/k8s/overlays/kind, waits for the rollout
#   8. smoke-tests /healthz and an authenticated ingest
set -euo pipefail

CLUSTER="${LEVIATHAN_KIND_CLUSTER:-leviathan}"
NAMESPACE=leviathan
STATE_DIR="${LEVIATHAN_HOME:-$HOME/.leviathan}"
ENV_FILE="$STATE_DIR/env"
TOKEN_FILE="$STATE_DIR/control-plane-token"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET_CONFIG="${LEVIATHAN_TARGET_CONFIG:-$ROOT/ops/k8s/base/target.yaml}"
LOCAL_PORT="${LEVIATHAN_SMOKE_PORT:-18000}"

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# 1. environment
if [ -f "$ENV_FILE" ]; then
  say "Loading $ENV_FILE"
  # shellcheck source=/dev/null
  . "$ENV_FILE"
else
  die "$ENV_FILE not found. Create it with GITHUB_TOKEN, LEVIATHAN_CLAUDE_API_KEY and LEVIATHAN_CLAUDE_MODEL (export lines)."
fi

# 2. control-plane token, generated once
umask 077
mkdir -p "$STATE_DIR"
chmod 700 "$STATE_DIR"
if [ ! -s "$TOKEN_FILE" ]; then
  say "Generating the control-plane token in $TOKEN_FILE"
  od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > "$TOKEN_FILE.tmp"
  mv "$TOKEN_FILE.tmp" "$TOKEN_FILE"
fi
chmod 600 "$TOKEN_FILE"

# 3. validation
missing=()
for var in GITHUB_TOKEN LEVIATHAN_CLAUDE_API_KEY LEVIATHAN_CLAUDE_MODEL; do
  [ -n "${!var:-}" ] || missing+=("$var")
done
[ "${#missing[@]}" -eq 0 ] || die "missing variables in $ENV_FILE: ${missing[*]}"
for tool in kind kubectl docker curl; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done
[ -f "$TARGET_CONFIG" ] || die "target config $TARGET_CONFIG not found"

# 4. cluster
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "kind cluster $CLUSTER exists"
else
  say "Creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER"
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

# 5. image
say "Building the image"
docker build -f "$ROOT/ops/Dockerfile" -t leviathan-worker:local -t leviathan-control-plane:local "$ROOT"
for image in leviathan-worker:local leviathan-control-plane:local; do
  kind load docker-image "$image" --name "$CLUSTER"
done

# 6. namespace, secret and target config
kubectl apply -f "$ROOT/ops/k8s/base/namespace.yaml" >/dev/null
secrets="$(mktemp -d)"
cleanup() {
  rm -rf "$secrets"
  if [ -n "${forward_pid:-}" ]; then kill "$forward_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
cp "$TOKEN_FILE" "$secrets/control-plane-token"
printf '%s' "$GITHUB_TOKEN" > "$secrets/github-token"
printf '%s' "$LEVIATHAN_CLAUDE_API_KEY" > "$secrets/claude-api-key"
printf '%s' "$LEVIATHAN_CLAUDE_MODEL" > "$secrets/claude-model"
say "Creating or updating secret leviathan-secrets (values not shown)"
kubectl -n "$NAMESPACE" create secret generic leviathan-secrets \
  --from-file=control-plane-token="$secrets/control-plane-token" \
  --from-file=github-token="$secrets/github-token" \
  --from-file=claude-api-key="$secrets/claude-api-key" \
  --from-file=claude-model="$secrets/claude-model" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null

# 7. workloads
say "Applying ops/k8s/overlays/kind"
kubectl apply -k "$ROOT/ops/k8s/overlays/kind"
kubectl -n "$NAMESPACE" create configmap leviathan-target --from-file=target.yaml="$TARGET_CONFIG" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NAMESPACE" rollout status deployment/leviathan-control-plane --timeout=180s
kubectl -n "$NAMESPACE" rollout status deployment/leviathan-scheduler --timeout=180s

# 8. smoke tests
say "Smoke-testing the control plane"
kubectl -n "$NAMESPACE" port-forward svc/leviathan-control-plane "$LOCAL_PORT:8000" >/dev/null 2>&1 &
forward_pid=$!
for _ in $(seq 1 30); do
  curl -fsS "http://127.0.0.1:$LOCAL_PORT/healthz" >/dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$LOCAL_PORT/healthz" >/dev/null || die "/healthz did not answer"
printf 'Authorization: Bearer %s\n' "$(cat "$TOKEN_FILE")" > "$secrets/auth-header"
bundle='{"target":"bootstrap","bundle_id":"bundle-kind-bootstrap-smoke","artifacts":[],"events":[{"event_id":"kind-bootstrap-smoke","event_type":"bootstrap.smoke","timestamp":"2026-01-01T00:00:00Z","actor_id":"kind-bootstrap","payload":{"check":"authenticated ingest"}}]}'
curl -fsS -X POST "http://127.0.0.1:$LOCAL_PORT/v1/events/ingest" \
  -H @"$secrets/auth-header" -H 'Content-Type: application/json' --data "$bundle" >/dev/null \
  || die "authenticated ingest failed"
say "Control plane healthy; authenticated ingest accepted"
say "Done. The token is in $TOKEN_FILE; edit the target config and re-run to enable autonomy."
