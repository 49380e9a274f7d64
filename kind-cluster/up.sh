#!/usr/bin/env bash
# Brings up the FAPI guard demo on a local kind cluster:
#   kind cluster + local registry (localhost:5001), Istio (minimal profile), HAPI FHIR with two
#   synthetic patients, the demo issuer's JWKS served in-cluster, the guard (the one module
#   fapi_guard.wasm) built, packaged and pushed as ONE Wasm OCI image, the generated WasmPlugin
#   (one per API: the chain plugin) applied, then a smoke test
#   from a client pod: allowed read 200, missing DPoP 401, other patient's record 403, update of
#   own Observation 200 (read before write), moving the other patient's Observation 403.
# Needs: docker, kind >= 0.27, kubectl, istioctl 1.28.x, cargo (with wasm32-wasip1), python3, node/npm.
# Safe to run again. Tear down with ./down.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
CLUSTER=${CLUSTER:-fapi-guard}
REG_NAME=${REG_NAME:-kind-registry}
REG_PORT=${REG_PORT:-5001}
TAG=${TAG:-0.1.0}
RUN="$ROOT/run/kind"
# Pinned, compatible versions (kind-cluster/README.md; tests/mesh/test_kind_recipe.py checks them
# against Istio's minimum Kubernetes version per release):
KIND_MIN_VERSION=0.27.0              # its node images include the one below
KIND_NODE_IMAGE=kindest/node:v1.32.2 # Kubernetes 1.32
ISTIO_MINOR=1.28                     # istioctl 1.28.x: needs Kubernetes >= 1.29
FHIR_BASE=http://hapi-fhir.fhir.svc.cluster.local:8080/fhir

say() { printf '\n== %s\n' "$*"; }
die() { printf 'up.sh: %s\n' "$*" >&2; exit 1; }

for tool in docker kind kubectl istioctl cargo python3 npm; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH (see kind-cluster/README.md, prerequisites)"
done
docker info >/dev/null 2>&1 || die "the Docker engine is not reachable"
kind_version=$(kind version | sed -n 's/^kind v\([0-9.]*\).*/\1/p')
[ "$(printf '%s\n%s\n' "$KIND_MIN_VERSION" "$kind_version" | sort -V | head -n1)" = "$KIND_MIN_VERSION" ] \
  || die "kind $kind_version is too old: need >= $KIND_MIN_VERSION"
istio_version=$(istioctl version --remote=false 2>/dev/null | grep -o '[0-9][0-9]*\.[0-9][0-9]*\.[0-9][0-9]*' | head -n1 || true)
case "$istio_version" in
  "$ISTIO_MINOR".*) ;;
  *) die "istioctl $istio_version: this recipe is pinned to Istio $ISTIO_MINOR.x (see kind-cluster/README.md)" ;;
esac
mkdir -p "$RUN"
PY="$ROOT/.venv/bin/python"
if ! "$PY" -c 'import cryptography, yaml' >/dev/null 2>&1; then
  bash "$ROOT/scripts/bootstrap.sh"
fi

say "local registry $REG_NAME on 127.0.0.1:$REG_PORT"
if [ "$(docker inspect -f '{{.State.Running}}' "$REG_NAME" 2>/dev/null || true)" != "true" ]; then
  docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
  docker run -d --restart=always -p "127.0.0.1:$REG_PORT:5000" --name "$REG_NAME" registry:2 >/dev/null
fi

say "kind cluster $CLUSTER"
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --image "$KIND_NODE_IMAGE" --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null
if [ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REG_NAME")" = "null" ]; then
  docker network connect kind "$REG_NAME"
fi
REG_IP=$(docker inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' "$REG_NAME")
[ -n "$REG_IP" ] || die "could not find $REG_NAME's address on the kind network"
sed "s/192\.0\.2\.1/$REG_IP/" "$HERE/manifests/registry-service.yaml" | kubectl apply -f -

say "Istio (istio-operator.yaml: minimal profile, pathNormalization DECODE_AND_MERGE_SLASHES, Wasm stats, local registry)"
if ! kubectl get deploy istiod -n istio-system >/dev/null 2>&1; then
  istioctl install -y -f "$HERE/istio-operator.yaml"
fi
"$PY" "$ROOT/tools/gen_wasmplugins.py" --check-mesh <(kubectl get configmap istio -n istio-system -o yaml) \
  || die "the mesh config is not what the guard expects (see above)"
kubectl apply -f "$HERE/manifests/namespaces.yaml"

say "build, package and push the guard's one image (reproducible: same source, same digest)"
python3 "$ROOT/tools/package_wasm.py" --build --tag "$TAG" --out "$RUN/wasm-oci" --push "localhost:$REG_PORT/fapi-guard"
python3 "$ROOT/tools/gen_wasmplugins.py" --root "$HERE/policies" --lock "$RUN/wasm-oci/digests.json" --out "$RUN/wasmplugins"

say "demo issuer: keys on this machine, JWKS in the cluster"
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

say "WasmPlugin (phase AUTHN, the chain plugin fapi_guard: token -> dpop -> fhir_scope, FAIL_CLOSE)"
kubectl apply -f "$RUN/wasmplugins/"
# The stream timeouts the guard relies on (docs/platform-guide.md, "Mesh settings the guard needs").
kubectl apply -f "$RUN/wasmplugins/mesh/fhir-demo.yaml"
# A cluster from an earlier version has one WasmPlugin per filter: removed once the chain
# plugin is applied (in between both enforce, fail closed).
kubectl delete wasmplugin -n fhir -l 'fapi-guard/api=fhir-demo,fapi-guard/filter!=guard' --ignore-not-found
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

# Writes by id under a patient grant: the FHIR scope filter reads the stored resource first
# (fhir.read_before_write_cluster, the loopback cluster the generated EnvoyFilter adds).
obs() { # id patient
  printf '{"resourceType":"Observation","id":"%s","status":"amended","code":{"coding":[{"system":"http://loinc.org","code":"8867-4"}]},"subject":{"reference":"Patient/%s"},"valueQuantity":{"value":65,"unit":"beats/minute","system":"http://unitsofmeasure.org","code":"/min"}}' "$1" "$2"
}
wat=$("$PY" "$HERE/demo_issuer.py" token "$RUN/issuer" --patient pat-alice --scope 'patient/*.rs patient/Observation.u')
put_obs() { # id patient
  local url="$FHIR_BASE/Observation/$1" p
  p=$("$PY" "$HERE/demo_issuer.py" proof "$RUN/issuer" --htm PUT --htu "$url" --token "$wat")
  curl_in_client -X PUT -H "Authorization: DPoP $wat" -H "DPoP: $p" -H 'Content-Type: application/fhir+json' \
    --data-binary "$(obs "$1" "$2")" "$url"
}
check "update of own Observation (read before write)" 200 "$(put_obs obs-alice-1 pat-alice)"
check "update of other patient's Observation into own compartment" 403 "$(put_obs obs-bob-1 pat-alice)"

say "filter counters on the FHIR server's sidecar"
kubectl exec -n fhir deploy/hapi-fhir -c istio-proxy -- pilot-agent request GET stats 2>/dev/null \
  | grep 'wasmcustom.fapi_guard' || echo "(no fapi_guard counters yet)"

if [ "$failures" -ne 0 ]; then
  die "$failures smoke check(s) failed; see kind-cluster/README.md, 'When something fails'"
fi
echo
echo "All smoke checks passed. Tear down with kind-cluster/down.sh"
