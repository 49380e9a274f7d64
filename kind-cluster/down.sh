#!/usr/bin/env bash
# Removes what up.sh made: the kind cluster, the local registry container and run/kind/
# (the demo issuer's keys). KEEP_REGISTRY=1 keeps the registry and its images.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CLUSTER=${CLUSTER:-fapi-guard}
REG_NAME=${REG_NAME:-kind-registry}

if command -v kind >/dev/null 2>&1 && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "no kind cluster named $CLUSTER"
fi
if [ "${KEEP_REGISTRY:-0}" != 1 ] && command -v docker >/dev/null 2>&1; then
  if docker rm -f "$REG_NAME" >/dev/null 2>&1; then
    echo "removed registry container $REG_NAME"
  fi
fi
rm -rf "$ROOT/run/kind"
echo "done"
