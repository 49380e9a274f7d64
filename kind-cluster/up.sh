#!/usr/bin/env bash
# Brings up the FAPI guard demo on a local kind cluster:
#   kind cluster + local registry (localhost:5001), Istio (minimal profile), HAPI FHIR with two
#   synthetic patients, the demo issuer's JWKS served in-cluster, the three filters built,
#   packaged and pushed as Wasm OCI images, the generated WasmPlugins applied, then a smoke test
#   from a client pod: allowed read 200, missing DPoP 401, other patient's record 403.
# Needs: docker, kind, kubectl, istioctl, cargo (with wasm32-wasip1), python3.
# Safe to run again. Tear down with ./down.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CLUSTER=${CLUSTER:-fapi-guard}
REG_NAME=${REG_NAME:-kind-registry}
REG_PORT=${REG_PORT:-5001}
TAG=${TAG:-0.1.0}
RUN="$ROOT/run/kind"
FHIR_BASE=http://hapi-fhir.fhir.svc.cluster.local:8080/fhir

say() { printf '\n== %s\n' "$*"; }
die() { printf 'up.sh: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl istioctl cargo python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (see kind-cluster/README.md, prerequisites)"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"
mkdir -p "$RUN"

say "local registry $REG_NAME on 127.0.0.1:$REG_PORT"
if [ "$(docker inspect -f '{{.State.Running}}' "$REG_NAME" 2>/dev/null || true)" != "true" ]; then
  docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
  docker run -d --restart=always -p "127.0.0.1:$REG_PORT:5000" --name "$REG_NAME" registry:2 >/dev/null
fi

say "kind cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REG_NAME")" = "null" ]; then
  docker network connect kind "$REG_NAME"
fi
REG_IP=$(docker inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' "$REG_NAME")
[ -n "$REG_IP" ] || die "could not find $REG_NAME's address on the kind network"
sed "s/192\.0\.2\.1/$REG_IP/" "$HERE/manifests/registry-service.yaml" | kubectl apply -f -

say "Istio (minimal profile; Wasm custom stats exported; plain-HTTP pulls from the local registry)"
if ! kubectl get deploy istiod -n istio-system >/dev/null 2>&1; then
  istioctl install -y --set profile=minimal \
    --set 'meshConfig.defaultConfig.proxyMetadata.WASM_INSECURE_REGISTRIES=kind-registry.kube-system.svc.cluster.local:5000' \
    --set 'meshConfig.defaultConfig.proxyStatsMatcher.inclusionPrefixes[0]=wasmcustom.fapi_guard' \
    --set 'meshConfig.defaultConfig.proxyStatsMatcher.inclusionPrefixes[1]=wasm'
fi
kubectl apply -f "$HERE/manifests/namespaces.yaml"

say "build, package and push the filters (reproducible: same source, same digests)"
python3 "$ROOT/tools/package_wasm.py" --build --tag "$TAG" --out "$RUN/wasm-oci" --push "localhost:$REG_PORT/fapi-guard"
python3 "$ROOT/tools/gen_wasmplugins.py" --root "$HERE/policies" --lock "$RUN/wasm-oci/digests.json" --out "$RUN/wasmplugins"

say "demo issuer: keys on this machine, JWKS in the cluster"
PY="$ROOT/.venv/bin/python"
if ! "$PY" -c 'import cryptography' >/dev/null 2>&1; then
  bash "$ROOT/scripts/bootstrap.sh"
fi
[ -f "$RUN/issuer/jwks.json" ] || "$PY" "$HERE/demo_issuer.py" keygen "$RUN/issuer"
kubectl create configmap guard-issuer-jwks -n guard-issuer --from-file=jwks.json="$RUN/issuer/jwks.json" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f "$HERE/manifests/guard-issuer.yaml"
kubectl rollout restart deploy/guard-issuer -n guard-issuer >/dev/null
kubectl rollout status deploy/guard-issuer -n guard-issuer --timeout=180s

say "HAPI FHIR (first start takes a few minutes)"
kubectl apply -f "$HERE/manifests/hapi-fhir.yaml"
kubectl rollout status deploy/hapi-fhir -n fhir --timeout=600s

say "synthetic data: patients pat-alice and pat-bob"
if kubectl get wasmplugin -n fhir -l fapi-guard/api=fhir-demo -o name 2>/dev/null | grep -q .; then
  echo "WasmPlugins already applied: data was loaded before them (FORCE_SEED=1 reloads)"
  if [ "${FORCE_SEED:-0}" = 1 ]; then
    kubectl delete wasmplugin -n fhir -l fapi-guard/api=fhir-demo
  fi
fi
if ! kubectl get wasmplugin -n fhir -l fapi-guard/api=fhir-demo -o name 2>/dev/null | grep -q .; then
  kubectl delete job fhir-seed -n fhir --ignore-not-found
  kubectl apply -f "$HERE/manifests/fhir-seed.yaml"
  kubectl wait --for=condition=complete job/fhir-seed -n fhir --timeout=600s
fi

say "WasmPlugins (phase AUTHN: token > dpop > fhir-scope, FAIL_CLOSE)"
kubectl apply -f "$RUN/wasmplugins/"
kubectl apply -f "$HERE/manifests/client.yaml"
kubectl rollout status deploy/fhir-client -n client --timeout=180s

curl_in_client() {
  kubectl exec -n client deploy/fhir-client -c curl -- curl -s -o /dev/null -w '%{http_code}' "$@"
}

say "waiting for the filters to load (a protected read without a token must be refused)"
for _ in $(seq 1 60); do
  code=$(curl_in_client "$FHIR_BASE/Patient/pat-alice" || true)
  [ "$code" = 401 ] && break
  sleep 5
done

say "smoke test"
failures=0
check() { # name expected actual
  if [ "$2" = "$3" ]; then echo "PASS $1 ($3)"; else echo "FAIL $1: expected $2, got $3"; failures=$((failures + 1)); fi
}
alice_url="$FHIR_BASE/Patient/pat-alice"
bob_url="$FHIR_BASE/Patient/pat-bob"
at=$("$PY" "$HERE/demo_issuer.py" token "$RUN/issuer" --patient pat-alice --scope 'patient/*.rs')
proof=$("$PY" "$HERE/demo_issuer.py" proof "$RUN/issuer" --htm GET --htu "$alice_url" --token "$at")
check "allowed read of own Patient" 200 "$(curl_in_client -H "Authorization: DPoP $at" -H "DPoP: $proof" "$alice_url")"
check "missing DPoP proof" 401 "$(curl_in_client -H "Authorization: DPoP $at" "$alice_url")"
proof=$("$PY" "$HERE/demo_issuer.py" proof "$RUN/issuer" --htm GET --htu "$bob_url" --token "$at")
check "other patient's record" 403 "$(curl_in_client -H "Authorization: DPoP $at" -H "DPoP: $proof" "$bob_url")"

say "filter counters on the FHIR server's sidecar"
kubectl exec -n fhir deploy/hapi-fhir -c istio-proxy -- pilot-agent request GET stats 2>/dev/null \
  | grep 'wasmcustom.fapi_guard' || echo "(no fapi_guard counters yet)"

if [ "$failures" -ne 0 ]; then
  die "$failures smoke check(s) failed; see kind-cluster/README.md, 'When something fails'"
fi
echo
echo "All smoke checks passed. Tear down with kind-cluster/down.sh"
