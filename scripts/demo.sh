#!/usr/bin/env bash
# Runs the FAPI guard filters in real Envoy in front of a sample FHIR API, with a local
# token issuer, and prints ready-to-paste requests (one allowed, some denied).
#
#   scripts/demo.sh                                  # demo policy, demo keys
#   scripts/demo.sh --policy my-policy.json --jwks my-jwks.json   # your policy and keys
#   scripts/demo.sh --gateway                        # two proxies: edge gateway -> sidecar
#
# With --policy, every `jwks_uri` of the policy is served from 127.0.0.1:8082 with the
# JWKS file (--jwks, or the demo JWKS), so any client can test with its own keys.
# Ports: Envoy 10000 (admin 9901), FHIR API 8080, JWKS 8082. Ctrl-C stops everything.
# --gateway adds the edge gateway envoy/gateway-edge.yaml on 8443 (admin 9902; TLS with
# client certificates from tools/dev_pki.py in run/pki) in front of the sidecar, which then
# runs policies/demo-fhir-api-gateway.json (or --policy) and trusts the gateway's XFCC.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

POLICY=""
JWKS=""
GATEWAY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --policy) POLICY=$2; shift 2 ;;
    --jwks) JWKS=$2; shift 2 ;;
    --gateway) GATEWAY=1; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$POLICY" ]; then
  if [ "$GATEWAY" = 1 ]; then POLICY=policies/demo-fhir-api-gateway.json; else POLICY=policies/demo-fhir-api.json; fi
fi
[ -f "$POLICY" ] || { echo "demo.sh: --policy $POLICY: no such file" >&2; exit 2; }

bash scripts/bootstrap.sh
echo "[demo] building the filters (wasm32-wasip1) and the local issuer"
bash scripts/build-wasm.sh --quiet
cargo build --release -p fapi-guard-issuer --quiet
ISSUER=target/release/guard-issuer

RUN=run/demo
mkdir -p "$RUN"
"$ISSUER" demo-setup --dir "$RUN" >/dev/null
if [ -n "$JWKS" ]; then cp "$JWKS" "$RUN/jwks.json"; fi

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

wait_port() {
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "[demo] nothing listens on 127.0.0.1:$1" >&2; return 1
}

.venv/bin/python -m http.server 8082 --bind 127.0.0.1 --directory "$RUN" >"$RUN/jwks-server.log" 2>&1 &
PIDS+=($!)
.venv/bin/python tests/fhir_upstream/server.py --port 8080 >"$RUN/fhir-api.log" 2>&1 &
PIDS+=($!)
wait_port 8082; wait_port 8080

# Behind the gateway the sidecar takes the client certificate from the gateway's XFCC; on this
# plain-HTTP loopback hop that needs ALWAYS_FORWARD_ONLY (in Istio the hop is mesh mTLS and
# the sidecar's APPEND_FORWARD keeps it). docs/platform-guide.md, "Local two-proxy topology".
SIDECAR_ARGS=()
if [ "$GATEWAY" = 1 ]; then SIDECAR_ARGS=(--forward-client-cert ALWAYS_FORWARD_ONLY); fi
.venv/bin/python envoy/render.py --policy "$POLICY" --listen-port 10000 --upstream-port 8080 \
  --admin-port 9901 --jwks-address 127.0.0.1:8082 ${SIDECAR_ARGS[@]+"${SIDECAR_ARGS[@]}"} --out "$RUN/envoy.yaml"
.venv/bin/envoy -c "$RUN/envoy.yaml" --use-dynamic-base-id -l warning --component-log-level wasm:info \
  >"$RUN/envoy.log" 2>&1 &
PIDS+=($!)
wait_port 10000

if [ "$GATEWAY" = 1 ]; then
  # The committed gateway config as it is (it reads its certificates from run/pki).
  X5T=$(.venv/bin/python tools/dev_pki.py --dir run/pki)
  .venv/bin/envoy -c envoy/gateway-edge.yaml --use-dynamic-base-id -l warning >"$RUN/gateway.log" 2>&1 &
  PIDS+=($!)
  wait_port 8443
fi

ISS=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["issuers"][0]["issuer"])' "$POLICY")
AUD=$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["api"]["audience"])' "$POLICY")
"$ISSUER" token --key "$RUN/signing-key.json" --iss "$ISS" --aud "$AUD" --sub demo-user --client-id demo-app \
  --scope "openid launch/patient patient/*.rs" --claim patient=pat-anna --dpop-key "$RUN/dpop-key.json" \
  --ttl 3600 --out "$RUN/token"

if [ "$GATEWAY" = 1 ]; then
  # RFC 8705 §3 + RFC 9449 §6: bound to the DPoP key and to the client certificate.
  "$ISSUER" token --key "$RUN/signing-key.json" --iss "$ISS" --aud "$AUD" --sub demo-user --client-id demo-app \
    --scope "openid launch/patient patient/*.rs" --claim patient=pat-anna --dpop-key "$RUN/dpop-key.json" \
    --x5t-s256 "$X5T" --ttl 3600 --out "$RUN/token-mtls"
  G=https://127.0.0.1:8443/api/fhir
  TLS="--cacert run/pki/ca.pem"
  CERT="--cert run/pki/client.pem --key run/pki/client-key.pem"
  T=$RUN/token-mtls
  cat <<TXT

FAPI guard demo (two proxies) is running:
  client --TLS + client cert--> edge gateway :8443 (envoy/gateway-edge.yaml: strips /api, internal :authority, XFCC)
         --> sidecar :10000 (token -> DPoP -> FHIR scope) --> FHIR API :8080
Policy: $POLICY   Logs: $RUN/envoy.log $RUN/gateway.log   Stats: curl -s localhost:9901/stats | grep fapi_guard
PKI: run/pki (tools/dev_pki.py); client certificate x5t#S256 $X5T
A token for patient pat-anna bound to the DPoP key and the client certificate (1 h) is in $T.
Proofs name the public URI ($G/...), not the one the sidecar sees. Each request makes a fresh proof.

# allowed: pat-anna reads her own record through the gateway, with her client certificate (200)
curl -i $TLS $CERT -H "Authorization: DPoP \$(cat $T)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $G/Patient/pat-anna --token \$(cat $T))" \\
  $G/Patient/pat-anna

# denied: the same without the client certificate (401 mtls_cert_missing)
curl -i $TLS -H "Authorization: DPoP \$(cat $T)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $G/Patient/pat-anna --token \$(cat $T))" \\
  $G/Patient/pat-anna

# denied: another patient's record (403)
curl -i $TLS $CERT -H "Authorization: DPoP \$(cat $T)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $G/Patient/pat-bjorn --token \$(cat $T))" \\
  $G/Patient/pat-bjorn

# denied: another patient's Observation by id, decided on the response body (403, body withheld)
curl -i $TLS $CERT -H "Authorization: DPoP \$(cat $T)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $G/Observation/obs-bjorn-hb --token \$(cat $T))" \\
  $G/Observation/obs-bjorn-hb

# denied: a proof for the internal URI the sidecar sees, not the public one (401 dpop_htu_mismatch)
curl -i $TLS $CERT -H "Authorization: DPoP \$(cat $T)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu http://fhir-api.fhir.svc.cluster.local:8080/fhir/Patient/pat-anna --token \$(cat $T))" \\
  $G/Patient/pat-anna

# public: the CapabilityStatement through the gateway (200)
curl -s $TLS $G/metadata | head -c 200; echo

Press Ctrl-C to stop.
TXT
  wait
  exit 0
fi

U=http://127.0.0.1:10000/fhir
cat <<TXT

FAPI guard demo is running: Envoy :10000 -> token -> DPoP -> FHIR scope -> FHIR API :8080
Policy: $POLICY   Logs: $RUN/envoy.log   Stats: curl -s localhost:9901/stats | grep fapi_guard
A DPoP-bound token for patient pat-anna (1 h) is in $RUN/token. Each request makes a fresh proof.

# allowed: pat-anna reads her own record (200)
curl -i -H "Authorization: DPoP \$(cat $RUN/token)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $U/Patient/pat-anna --token \$(cat $RUN/token))" \\
  $U/Patient/pat-anna

# denied: no DPoP proof (401 invalid_dpop_proof)
curl -i -H "Authorization: DPoP \$(cat $RUN/token)" $U/Patient/pat-anna

# denied: another patient's record (403)
curl -i -H "Authorization: DPoP \$(cat $RUN/token)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $U/Patient/pat-bjorn --token \$(cat $RUN/token))" \\
  $U/Patient/pat-bjorn

# denied: another patient's Observation by id, decided on the response body (403, body withheld)
curl -i -H "Authorization: DPoP \$(cat $RUN/token)" \\
  -H "DPoP: \$($ISSUER dpop --key $RUN/dpop-key.json --htm GET --htu $U/Observation/obs-bjorn-hb --token \$(cat $RUN/token))" \\
  $U/Observation/obs-bjorn-hb

# denied: no token at all (401 with a challenge); public: the CapabilityStatement (200)
curl -i $U/Patient/pat-anna
curl -s $U/metadata | head -c 200; echo

Press Ctrl-C to stop.
TXT
wait
